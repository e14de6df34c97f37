"""User-facing errors.

A `PosecastError` carries a message written for the person at the terminal (what went wrong and
how to fix it) and the process exit code. The command line prints the message on one line and
exits with the code; anything else escaping is a bug and keeps its traceback.
"""

from __future__ import annotations


class PosecastError(Exception):
    """An error the user can act on. `str(err)` is the whole one-line message."""

    exit_code: int = 1
    # Said by its exit code alone: set where standard output's reader went away (`| head`), as
    # for any program in a shell pipeline, and no file was cut short beside it.
    quiet: bool = False


class ConfigError(PosecastError):
    """A YAML config that is missing, unparsable or invalid."""

    exit_code = 2


class ModelFileError(PosecastError):
    """A model file that is missing or is not a Posecast model."""

    exit_code = 2


class BackendUnavailableError(PosecastError):
    """An inference backend that was asked for but cannot run on this machine."""

    exit_code = 2


class UsageError(PosecastError):
    """Bad arguments that argparse cannot check: exit code 2, like every other bad input."""

    exit_code = 2


class InputError(PosecastError):
    """An input (file, camera, URL, folder) that cannot be opened or read."""

    exit_code = 2


class ReaderGoneError(InputError):
    """The program reading an output (a named pipe) went away: 141, as for a shell pipeline's
    writer whose reader closed (128 + SIGPIPE)."""

    exit_code = 141


class OutputLostError(InputError):
    """Output files deleted, or their folder removed, while the run wrote them: what was written
    went into files that no name reaches any more. One error names them all (`paths`), since a
    folder removed with several outputs in it is one mistake, to be said in one line."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = list(paths)
        named = ", ".join(f"'{p}'" for p in self.paths[:-1])
        named = f"{named} and '{self.paths[-1]}'" if named else f"'{self.paths[-1]}'"
        if len(self.paths) == 1:
            said = f"output {named} was deleted, or its folder removed, during the run: what was written to it"
        else:
            said = f"outputs {named} were deleted, or their folder removed, during the run: what was written to them"
        super().__init__(f"{said} is lost (keep the outputs and their folders until the run ends, then run again)")
