"""The `posecast` command's entry point, kept light: a Ctrl-C in the command's first few tenths
of a second came while Python was still importing the command line (numpy, the configs), before
any handler of ours was in place, and printed a traceback of the import instead of one line."""

from __future__ import annotations

import sys

PROG = "posecast"
EXIT_INTERRUPTED = 130      # 128 + SIGINT, as every other Ctrl-C of the command ends


def main() -> int:
    try:
        from streamer.cli import main as command_line

        return command_line()       # which says itself how a Ctrl-C once its command has begun ended
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
