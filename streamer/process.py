"""Running a stage in its own process: signals, logging, and reporting how it ended."""

from __future__ import annotations

import logging
import signal
import sys
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from engines.errors import PosecastError
from streamer.stages.base import Control, Reporter


def stage_main(stage_name: str, factory: Callable[..., Any], kwargs: dict[str, Any], control: Control,
               conn: Connection, log_level: int) -> None:
    """Process entry point: build the stage, run it, tell the parent how it ended."""
    # Ctrl-C reaches every process of the terminal's group; only the parent decides what it means.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=log_level, format=f"posecast[{stage_name}]: %(levelname)s: %(message)s",
                        stream=sys.stderr)
    reporter = Reporter(stage_name, conn)
    code = 0
    try:
        factory(control=control, reporter=reporter, **kwargs).run()
    except PosecastError as exc:
        reporter.send("error", {"message": str(exc), "exit_code": exc.exit_code, "traceback": None})
        code = exc.exit_code
    except BaseException as exc:  # a bug: keep its traceback for the parent to show
        reporter.send("error", {"message": f"{type(exc).__name__}: {exc}", "exit_code": 1,
                                "traceback": traceback.format_exc()})
        code = 1
    finally:
        conn.close()
    sys.exit(code)
