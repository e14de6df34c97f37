"""Command-line parsing whose errors are the project's one line."""

from __future__ import annotations

import argparse
from typing import NoReturn


class OneLineParser(argparse.ArgumentParser):
    """argparse, except that a bad argument is one line, `PROG: error: ... (see `PROG --help`)`,
    and exit code 2, as every other failure is said: argparse prints its usage block first, up to
    14 lines in which the error line is the last. Subcommands' parsers are made of this class too."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")
