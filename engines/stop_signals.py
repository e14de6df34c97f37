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
from collections.abc import Callable, Iterator
from typing import Any

from engines.errors import PosecastError


# The signals that end a command in order: Ctrl-C, `kill` (and `timeout`, systemd, docker stop),
# and a closed terminal.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


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
    old = {sig: signal.signal(sig, stop) for sig in STOP_SIGNALS
           if sig != signal.SIGINT and signal.getsignal(sig) is not signal.SIG_IGN}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def reader_gone() -> int:
    """The exit code of a command whose stdout's reader went away (`posecast ... | head`), once
    stdout points at nothing: Python would otherwise fail again flushing it at exit."""
    _stdout_to_devnull()
    return 128 + int(signal.SIGPIPE)


def _stdout_to_devnull() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):     # stdout is no file (replaced in-process)
        pass



def run_command(prog: str, main: Callable[[], int], interrupted: str | None = "nothing was written") -> int:
    """`main()`'s exit code, however it ends: a failure the user can act on (a `PosecastError`) is
    its one line and its exit code, as is a path the user may not reach (a `PermissionError`: 2);
    Ctrl-C, SIGTERM and SIGHUP are one line ("; `interrupted`",
    what a stop leaves, where given) and 128 + the signal; a reader that stops reading (`| head`)
    ends it quietly. `posecast` and the `python -m train.X` tools end this way."""
    try:
        with stop_signals_interrupt(), _stdout_marked():
            code = main()
            if sys.stdout is not None:  # None: started with it closed (`>&-`), and print() drops all
                sys.stdout.flush()      # here, where a closed stdout is caught, not at exit
            return code
    except PosecastError as exc:
        if not exc.quiet:
            print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        print(f"{prog}: {describe(exc)}" + (f"; {interrupted}" if interrupted else ""), file=sys.stderr)
        return exit_code(exc)
    except BrokenPipeError:
        return reader_gone()
    except PermissionError as exc:
        if exc.filename is None:
            raise
        # A path given inside a folder the user may not enter (`chmod -x`): Python's Path.exists(),
        # is_file() and is_dir(), which every input and output check starts with, raise this
        # before any check can say what is wrong. It is the user's to fix, so it is one line.
        print(f"{prog}: error: {permission_denied(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:
        if not _stdout_failed(exc):
            raise
        from engines.files import write_hint

        print(f"{prog}: error: cannot write to standard output: {exc.strerror or exc} ({write_hint(exc)})",
              file=sys.stderr)
        _stdout_to_devnull()        # what its buffer still holds would fail again, with a traceback, at exit
        return 2


def _stdout_failed(exc: OSError) -> bool:
    """Whether `exc` came from writing standard output (`> /dev/full`, a full disk under `> out.txt`)."""
    return getattr(exc, _STDOUT_MARK, False)


_STDOUT_MARK = "posecast_standard_output"


class _MarkedStdout:
    """Standard output, whose failed writes say so: an OSError from a write names no file, so a
    full disk under `> out.txt` could not be told from any other failure."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._marked(self._stream.write, text)

    def flush(self) -> None:
        self._marked(self._stream.flush)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    @staticmethod
    def _marked(call: Callable[..., Any], *args: Any) -> Any:
        try:
            return call(*args)
        except OSError as exc:
            setattr(exc, _STDOUT_MARK, True)
            raise


@contextlib.contextmanager
def _stdout_marked() -> Iterator[None]:
    stream = sys.stdout
    if stream is None:
        yield
        return
    sys.stdout = _MarkedStdout(stream)
    try:
        yield
    finally:
        sys.stdout = stream


def permission_denied(exc: PermissionError) -> str:
    """The one line of a path the user may not reach."""
    return (f"permission denied: '{exc.filename}' (check that you may read it or write in its folder, and enter "
            f"every folder on its path)")


class StopSignals:
    """Ctrl-C, SIGTERM (`timeout`, systemd, docker stop) and SIGHUP (the terminal closed) all end
    a command (`listen`, `replay`) the same orderly way: the handler only notes the signal, the loop sees it within
    one poll, and the recording is written and closed. An NPZ recording exists only once it is
    closed, so the default actions (KeyboardInterrupt anywhere, or death) could lose all of it.
    Later signals are ignored: stopping the close half-way would lose the recording too.
    The exit code is then 128 + the signal's number, as `posecast track` gives. A signal that
    was ignored already stays ignored: `nohup posecast listen` must outlive its terminal."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}
        self._raising = False

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():    # only it may set handlers
            for sig in STOP_SIGNALS:
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self._old[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
        if self._raising:
            raise _interrupt(signum)

    @contextlib.contextmanager
    def raising(self) -> Iterator[None]:
        """Inside it, a stop (noted already, or coming) also raises KeyboardInterrupt (`Stopped`
        for SIGTERM, SIGHUP): for a call that may wait as long as another program likes, a write
        into a pipe whose reader stopped reading. Python resumes such a write after a handler that
        only notes, so nothing else could end it; only calls a KeyboardInterrupt leaves whole
        belong inside."""
        self._raising = True
        try:
            if self.signum is not None:
                raise _interrupt(self.signum)
            yield
        finally:
            self._raising = False

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""


def _interrupt(signum: int) -> KeyboardInterrupt:
    return KeyboardInterrupt() if signum == signal.SIGINT else Stopped(signum)
