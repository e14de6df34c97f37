"""How a training tool ends: one line and an exit code, whatever stops it.

`python -m train.X` tools share the pipeline's rule (engines/stop_signals.py, `run_command`): a
failure the user can act on (a `PosecastError`) is its one-line message and its exit code (2 for
bad input); Ctrl-C, SIGTERM and SIGHUP are one line and 128 + the signal, not Python's traceback
through whatever the tool was doing (and whatever a Ctrl-C cleans up, a `kill` cleans up too: a
child process, a temporary folder); and a reader that stops reading (`| head`) ends the tool
quietly.
"""

from engines.stop_signals import run_command

__all__ = ["run_command"]
