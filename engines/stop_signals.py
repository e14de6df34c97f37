"""SIGTERM and SIGHUP ending a command as Ctrl-C does.

A command that leaves nothing half-written after a Ctrl-C (a temporary file removed, a child
process stopped) does the same after `kill` or a closed terminal, instead of dying with the
file or the child left behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where Ctrl-C raises KeyboardInterrupt."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_code(exc: KeyboardInterrupt) -> int:
    """128 + the signal's number, as shells report a process a signal ended: 130 for Ctrl-C."""
    return 128 + int(exc.signum if isinstance(exc, Stopped) else signal.SIGINT)


def describe(exc: KeyboardInterrupt) -> str:
    return f"stopped by {signal.Signals(exc.signum).name}" if isinstance(exc, Stopped) else "interrupted"


@contextlib.contextmanager
def stop_signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP raise `Stopped` while the command runs. Commands with an orderly stop
    of their own (the pipeline, `listen`) put their handlers in place over these and
    restore them. A signal that is ignored already stays ignored: `nohup posecast ...` must
    outlive its terminal."""
    def stop(signum: int, _frame: Any) -> None:
        raise Stopped(signum)

    if threading.current_thread() is not threading.main_thread():
        yield                   # only the main thread may set handlers (a command run from a thread)
        return
    old = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)
           if signal.getsignal(sig) is not signal.SIG_IGN}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def reader_gone() -> int:
    """The exit code of a command whose stdout's reader went away (`posecast ... | head`), once
    stdout points at nothing: Python would otherwise fail again flushing it at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):     # stdout is no file (replaced in-process)
        pass
    return 128 + int(signal.SIGPIPE)
