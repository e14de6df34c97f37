"""The run's stop and abort flags (streamer/stages/base.py) outlive any process killed while it
reads them: a stage killed by SIGKILL (the OOM killer) must not leave the parent unable to end
the run."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time

from streamer.stages.base import Control


def _read_flags_forever(control: Control, started) -> None:
    started.release()
    while True:
        control.abort.is_set()
        control.stop.is_set()


def _returns_in_time(call, timeout: float = 10.0) -> bool:
    done = threading.Event()

    def run() -> None:
        call()
        done.set()

    threading.Thread(target=run, daemon=True).start()
    return done.wait(timeout)


def test_a_process_stopped_or_killed_while_reading_the_flags_leaves_them_usable() -> None:
    """With multiprocessing's Event, whose `is_set` holds a lock shared by every process, a
    process killed inside it left the lock held: the parent's next `set` or `is_set` blocked
    forever (a run whose stage was killed hung until the CI's time ran out). A reader is frozen
    (SIGSTOP) at hundreds of moments of its reading, which almost surely catches it inside a read
    if a read holds anything, and at last killed. (Each check is a plain bool: on a failure
    pytest's message would read the blocked flag again.)"""
    ctx = mp.get_context("spawn")
    control = Control.shared(ctx)
    started = ctx.Semaphore(0)
    reader = ctx.Process(target=_read_flags_forever, args=(control, started), daemon=True)
    reader.start()
    try:
        assert started.acquire(timeout=60), "the reader did not start"
        for _ in range(300):
            time.sleep(0.001)
            os.kill(reader.pid, signal.SIGSTOP)
            try:
                readable = _returns_in_time(control.stop.is_set, timeout=2.0)
            finally:
                os.kill(reader.pid, signal.SIGCONT)
            assert readable, "reading the stop flag waited on a frozen process that was reading it"
        os.kill(reader.pid, signal.SIGKILL)
    finally:
        reader.kill()
        reader.join(10)
    settable = _returns_in_time(control.abort.set)
    assert settable, "setting the abort flag blocked after a process reading it was killed"
    assert control.abort.is_set() and not control.stop.is_set()


def _set_abort(control: Control) -> None:
    control.abort.set()


def test_a_flag_set_in_one_process_is_seen_in_another() -> None:
    ctx = mp.get_context("spawn")
    control = Control.shared(ctx)
    p = ctx.Process(target=_set_abort, args=(control,))
    p.start()
    p.join(60)
    assert p.exitcode == 0
    assert control.abort.is_set() and not control.stop.is_set()
