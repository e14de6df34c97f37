"""How a training tool ends: one line and an exit code, whatever stops it.

`python -m train.X` tools share the pipeline's rule: a failure the user can act on (a
`PosecastError`) is its one-line message and its exit code (2 for bad input); Ctrl-C, SIGTERM
and SIGHUP are one line and 128 + the signal, not Python's traceback through whatever the tool
was doing (and whatever a Ctrl-C cleans up, a `kill` cleans up too: a child process, a
temporary folder); and a reader that stops reading (`| head`) ends the tool quietly.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from engines.errors import PosecastError
from engines.stop_signals import describe, exit_code, reader_gone, stop_signals_interrupt


def run_command(prog: str, main: Callable[[], int], interrupted: str = "nothing was written") -> int:
    """`main()`'s exit code; `interrupted` says what a Ctrl-C leaves."""
    try:
        with stop_signals_interrupt():
            code = main()
            sys.stdout.flush()          # here, where a closed stdout is caught, not at exit
            return code
    except PosecastError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        print(f"{prog}: {describe(exc)}; {interrupted}", file=sys.stderr)
        return exit_code(exc)
    except BrokenPipeError:
        return reader_gone()
