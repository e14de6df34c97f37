"""The name a stage process shows in ps, top and htop: `posecast[infer]`, not `python`.

Two names are set, each where it can be, and a run goes on with the default name where neither
can (macOS, no libc, anything else that goes wrong): a name is a convenience, never a reason for a
run to fail.
- The kernel's comm (`ps -o comm`, `top`, `pgrep`), through prctl(PR_SET_NAME): Linux only, no
  dependency, 15 bytes at most.
- The command line (`ps aux`, `htop`, `top -c`), through the `setproctitle` package where it is
  installed: the whole title.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import sys
from collections.abc import Callable, Iterator

from engines.environment import environ_default

log = logging.getLogger(__name__)

COMM_BYTES = 15     # the kernel's TASK_COMM_LEN (16) less its terminating NUL
PR_SET_NAME = 15    # <linux/prctl.h>


def stage_title(stage: str) -> str:
    """A stage process's name: the same prefix as its log lines (streamer/process.py)."""
    return f"posecast[{stage}]"


def comm_name(title: str) -> bytes:
    """`title` as the kernel's comm holds it: its first 15 bytes, so `posecast[capture]` shows as
    `posecast[captur` (each stage still its own), never cut inside a UTF-8 character."""
    return title.encode("utf-8")[:COMM_BYTES].decode("utf-8", "ignore").encode("utf-8")


def set_comm(title: str) -> bool:
    """Sets the calling thread's comm (the process's, called from its main thread; threads it
    starts later inherit it); False where that cannot be done."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_NAME, ctypes.c_char_p(comm_name(title)), 0, 0, 0) == 0
    except (OSError, AttributeError):      # no libc to load, or one without prctl
        return False


def set_cmdline(title: str) -> bool:
    """Sets the command line where `setproctitle` is installed; False where it is not."""
    try:
        from setproctitle import setproctitle
    except ImportError:
        return False
    with keeping_environ():
        setproctitle(title)
    return True


@contextlib.contextmanager
def keeping_environ() -> Iterator[None]:
    """setproctitle's first call, on Linux, writes a title longer than the command line over the
    memory /proc/PID/environ is read from: tools (and the tests, which find a run's processes by
    a variable in it) would no longer see this process's environment. SPT_NOENV, read at that first
    call, keeps the title to the command line's length (the spawn command line is far longer than
    any stage's title). Only this process's copy of the environment is touched, and it is put back."""
    with environ_default("SPT_NOENV", "1"):
        yield


def name_process(title: str, setters: tuple[Callable[[str], bool], ...] = (set_cmdline, set_comm)) -> bool:
    """Names this process `title` by each of `setters` that works (the comm last, so that it is
    always this module's truncation); True if any did. Never raises."""
    named = False
    for setter in setters:
        try:
            named = setter(title) or named
        except Exception as exc:            # noqa: BLE001 - a run must never fail for its name
            log.debug("could not name the process %r (%s: %s)", title, type(exc).__name__, exc)
    return named
