"""Running a stage in its own process: signals, logging, and reporting how it ended."""

from __future__ import annotations

import logging
import multiprocessing
import shutil
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from engines.errors import PosecastError
from engines.stop_signals import STOP_SIGNALS
from streamer.proctitle import name_process, stage_title
from streamer.stages.base import Control, Reporter


def stage_main(stage_name: str, factory: Callable[..., Any], kwargs: dict[str, Any], control: Control,
               conn: Connection, log_level: int, ipc_dir: Path | None = None) -> None:
    """Process entry point: build the stage, run it, tell the parent how it ended. `ipc_dir`:
    the run's socket folder, which the parent removes at the end, or this stage if it cannot."""
    # Ctrl-C and a closed terminal reach every process of the group, and so does SIGTERM from
    # `timeout`, systemd or docker: only the parent decides what they mean (finish the frames in
    # flight, then end), and kills (SIGKILL) any stage that does not end in time.
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    # The parent starts stages with these blocked (Pipeline.run): any that came while this process
    # was importing are pending, and ignoring them has dropped them.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    logging.basicConfig(level=log_level, format=f"{stage_title(stage_name)}: %(levelname)s: %(message)s",
                        stream=sys.stderr)
    # In ps, top and htop each stage was `python ... spawn_main(...)`, all alike: say which it is.
    name_process(stage_title(stage_name))
    reporter = Reporter(stage_name, conn)
    _abort_if_parent_dies(control)
    code = 0
    try:
        factory(control=control, reporter=reporter, **kwargs).run()
    except PosecastError as exc:
        reporter.send("error", {"message": str(exc), "exit_code": exc.exit_code, "traceback": None,
                                "drained": bool(getattr(exc, "drained", False)),
                                "quiet": exc.quiet,
                                "also": bool(getattr(exc, "also", False))})
        code = exc.exit_code
    except MemoryError as exc:
        # Not a bug but the machine: no traceback, and what to do about it.
        reporter.send("error", {"message": f"the {stage_name} stage ran out of memory; the run was stopped (free "
                                           "memory: close other programs, or give a smaller input)",
                                "exit_code": 1, "traceback": None,
                                "drained": bool(getattr(exc, "drained", False))})
        code = 1
    except BaseException as exc:  # a bug: keep its traceback for the parent to show
        reporter.send("error", {"message": bug_message(stage_name, exc), "exit_code": 1,
                                "traceback": traceback.format_exc(),
                                "drained": bool(getattr(exc, "drained", False))})
        code = 1
    finally:
        conn.close()
        remove_if_orphaned(ipc_dir)
    sys.exit(code)


BUG_SAID_CHARS = 300     # of an exception's own words in the one line; the traceback above has them all


def bug_message(stage_name: str, exc: BaseException) -> str:
    """The one line for an exception no one foresaw in a stage: which stage, what it was (on one
    line: a runtime's message may hold several), and what to do."""
    said = " ".join(str(exc).split())
    if len(said) > BUG_SAID_CHARS:
        said = said[:BUG_SAID_CHARS] + "..."
    what = f"{type(exc).__name__}: {said}" if said else type(exc).__name__
    return (f"the {stage_name} stage failed ({what}); the run was stopped. Posecast did not foresee this error: "
            "please report it with the traceback above")


def remove_if_orphaned(ipc_dir: Path | None) -> None:
    """A parent that was killed outright cannot remove the run's socket folder
    (Pipeline._shutdown), so each stage that outlives it does as it exits. Never while the
    parent lives: it owns the folder, and its other stages may still bind sockets there. Once
    gone the folder stays gone (nothing makes it again), so which stage removes it, and how
    many try, does not matter."""
    parent = multiprocessing.parent_process()
    if ipc_dir is None or parent is None or parent.is_alive():
        return
    shutil.rmtree(ipc_dir, ignore_errors=True)


def _abort_if_parent_dies(control: Control) -> None:
    """A parent that is killed outright (SIGKILL, the OOM killer) can no longer end the run: the
    stages would go on alone, to the end of a file or forever on a camera or stream. Its death
    closes our end of the spawn pipe; a watcher thread then aborts the run."""
    parent = multiprocessing.parent_process()
    if parent is None or parent.sentinel is None:
        return

    def watch() -> None:
        wait([parent.sentinel])
        control.abort.set()

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
