"""A Ctrl-C while a command is still importing, said in one line.

`python -m train.X` imports torch (seconds) before its own code can take the stop signals over
(engines/stop_signals.py, `run_command`): a Ctrl-C then ended it with a traceback of the import.
Nothing is written by then, so nothing is lost: only the traceback goes, and the process still
ends by SIGINT as Python ends it (130 in a shell). The `posecast` command has a light entry point
instead (streamer/entry.py).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from types import TracebackType


def module_run(orig_argv: Sequence[str]) -> str:
    """`python -m train.X` for a process started so (sys.orig_argv), else `python -m train`."""
    args = list(orig_argv)
    if "-m" in args[:-1]:
        return f"python -m {args[args.index('-m') + 1]}"
    return "python -m train"


def say_interrupts_in_one_line(prog: str) -> None:
    """A KeyboardInterrupt that nothing caught prints `PROG: interrupted` instead of its traceback;
    every other exception is printed as before."""
    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        if issubclass(kind, KeyboardInterrupt):
            print(f"{prog}: interrupted", file=sys.stderr)
        else:
            previous(kind, value, tb)

    sys.excepthook = hook
