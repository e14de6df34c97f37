"""How the stage processes are started: forked from one server process that has imported them.

Spawning made each stage a new interpreter that imported numpy, ZeroMQ, PyAV, ONNX Runtime and
the stage's modules before its first frame: about 0.7 s of CPU for each of the four, at every
input, on cores the run needed, and an interpreter's teardown at every exit. multiprocessing's
forkserver imports them once, in a server process started with the first run of a command, and
forks each stage from it: a batch of inputs pays the imports once (docs/performance.md, "Several
inputs").

What the stages inherit comes from the server, as it was when the first run started it: the
environment (one BLAS thread, see `streamer.pipeline.one_blas_thread`), the signal mask (the stop
signals blocked until `stage_main` ignores them), stdout and stderr. The server imports nothing
that starts a thread or a GPU context: a process forked from one that holds either is not safe.
Where forkserver is not available (Windows), the stages are spawned as before.

The server is multiprocessing's one forkserver of the process. A program that runs the pipeline
in-process more than once (the tests do) gets the first run's environment, stderr and blocked
stop signals in every later run's stages, and its own forkserver processes, if it has any, start
with those signals blocked too. The `posecast` command runs one pipeline after another with the
same settings, so this is the same for each of its inputs.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Iterator
from multiprocessing.context import BaseContext

from engines.environment import environ_default
from streamer.proctitle import name_process

SERVER_TITLE = "posecast[stages]"

# Imported by the server before it forks any stage. An import that fails there is skipped (the
# stage imports it itself, or says why it cannot). Left to the stage that asks for them:
# onnxruntime, whose import starts a native thread (a lock it held at the fork would be held for
# good in the child; it costs the infer stage a few hundredths of a second), and TensorRT and
# torch, which are slow to import and must not set CUDA up before a fork.
PRELOAD = (
    __name__,                                   # names the server in ps (below)
    "streamer.process",
    "streamer.stages.capture",
    "streamer.stages.infer",
    "streamer.stages.align",
    "streamer.stages.output",
    "streamer.sources",
    "streamer.tracks",
    "streamer.overlay",
    "engines.backends.onnxruntime_backend",
    "tqdm",
)


def stage_context() -> BaseContext:
    """The multiprocessing context the pipeline starts its stages with."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(list(PRELOAD))   # taken when the server starts, the first run's first stage
    return ctx


@contextlib.contextmanager
def current_folder_off_the_server_path() -> Iterator[None]:
    """The server is `python -c ...`, which puts the current folder first on its sys.path (Python
    3.11's forkserver does not use the parent's), and it imports PRELOAD from there: run in a
    folder holding a `tqdm.py`, or another checkout's `streamer/`, every stage ran that code instead
    of the installed one, and one that failed to import killed the server with a traceback.
    PYTHONSAFEPATH, read by the server as it starts, keeps the folder off; the stages still get the
    parent's sys.path from multiprocessing before anything of theirs is unpickled."""
    with environ_default("PYTHONSAFEPATH", "1"):
        yield


def _is_the_server() -> bool:
    """The forkserver runs `python -c "from multiprocessing.forkserver import main; main(...)"`, and
    imports PRELOAD before it forks anything: a module imported there, with no __main__ file,
    is being imported by the server itself."""
    main = sys.modules.get("__main__")
    return (sys.argv[:1] == ["-c"] and "multiprocessing.forkserver" in sys.modules
            and getattr(main, "__file__", None) is None and mp.parent_process() is None)


if _is_the_server():
    # Shown in ps, top and htop beside the stages it forks, instead of a long `python -c ...`.
    name_process(SERVER_TITLE)


ORPHAN_EXIT_CODE = 255      # what multiprocessing says of a stage whose server died before it
DEATH_WAIT_S = 1.0          # a server's sockets close as it dies, a moment before it can be waited for


def server_death(wait_s: float = 0.0) -> int | None:
    """The signal that killed this process's stage server, 0 where it died of something else, and
    None where it lives (after `wait_s`), was never started, or this cannot be told. Stages forked
    from a server that died are orphans whose exit codes no one reports: multiprocessing gives
    each ORPHAN_EXIT_CODE, which would blame a stage for what happened to the server.

    The server is left waitable (WNOWAIT): multiprocessing reaps it itself, and starts another
    for the next run of a batch."""
    from multiprocessing import forkserver

    pid = getattr(getattr(forkserver, "_forkserver", None), "_forkserver_pid", None)
    if not isinstance(pid, int) or not hasattr(os, "waitid"):
        return None
    deadline = time.monotonic() + wait_s
    while True:
        try:
            died = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return None
        if died is not None:
            return died.si_status if died.si_code in (os.CLD_KILLED, os.CLD_DUMPED) else 0
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.01)
