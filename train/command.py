"""How a training tool ends: one line and an exit code, whatever stops it.

`python -m train.X` tools share the pipeline's rule: a failure the user can act on (a
`PosecastError`) is its one-line message and its exit code (2 for bad input), and Ctrl-C is one
line and 130, not Python's traceback through whatever the tool was doing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from engines.errors import PosecastError


def run_command(prog: str, main: Callable[[], int], interrupted: str = "nothing was written") -> int:
    """`main()`'s exit code; `interrupted` says what a Ctrl-C leaves."""
    try:
        return main()
    except PosecastError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; {interrupted}", file=sys.stderr)
        return 130
