"""What every stage shares: the run's control flags and its report line to the parent."""

from __future__ import annotations

import ctypes
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.synchronize import Semaphore
from typing import Any, Protocol

from streamer.packets import StageTimings, StepStats

POLL_MS = 100


class Flag(Protocol):
    """What the stages ask of `stop` and `abort`: a SharedFlag, or a threading.Event in tests."""

    def set(self) -> None: ...

    def is_set(self) -> bool: ...


class SharedFlag:
    """A flag every process of a run can set and read, holding no lock while it does.

    multiprocessing's Event takes a lock shared by all processes in `is_set` and `set`: a stage
    killed inside one (SIGKILL, the OOM killer) left it held for good, and the parent's next
    `is_set` blocked forever, its Ctrl-C handler too; a run whose stage was killed then never
    ended. A byte in shared memory is written and read whole, so no lock is needed; the stages
    poll their flags and never wait on them."""

    def __init__(self, ctx: BaseContext) -> None:
        self._value = ctx.RawValue(ctypes.c_bool, False)

    def set(self) -> None:
        self._value.value = True

    def is_set(self) -> bool:
        return bool(self._value.value)


@dataclass
class Control:
    """`stop`: finish what is in flight and end (Ctrl-C, a graceful request).
    `abort`: end now (another stage failed).
    `ready`: released once by each stage after the capture when it is ready for frames (the
    network loaded, the outputs open). Every source starts reading once all are: a live one so
    that the frames it drops are the ones the stages could not keep up with, not those of their
    start (and a file played live loses none of its first frames); a file so that the run's clock
    (the output stage's) holds every frame's whole way through."""

    stop: Flag
    abort: Flag
    ready: Semaphore | None = None

    @classmethod
    def shared(cls, ctx: BaseContext) -> Control:
        """A run's control, shared by the processes `ctx` starts (a semaphore, unlike a lock, is
        not left held by a process killed while it waits on it)."""
        return cls(stop=SharedFlag(ctx), abort=SharedFlag(ctx), ready=ctx.Semaphore(0))

    def mark_ready(self) -> None:
        if self.ready is not None:
            self.ready.release()


class Reporter:
    """Sends (kind, stage, payload) tuples to the parent over a pipe."""

    def __init__(self, stage: str, conn: Connection | None) -> None:
        self.stage = stage
        self.conn = conn

    def send(self, kind: str, payload: Any) -> None:
        if self.conn is not None:
            try:
                self.conn.send((kind, self.stage, payload))
            except (BrokenPipeError, OSError):
                pass  # the parent is gone; nothing left to tell


class StageTimer:
    """Per-frame milliseconds for one named step, kept for the run's summary: the most recent
    `keep` samples of each step, so a live run of days holds a bounded amount."""

    def __init__(self, keep: int = 100_000) -> None:
        self.keep = keep
        self.samples: dict[str, deque[float]] = {}

    def add(self, name: str, ms: float) -> None:
        if name not in self.samples:
            self.samples[name] = deque(maxlen=self.keep)
        self.samples[name].append(ms)

    def since(self, name: str, t0: float) -> float:
        ms = (time.perf_counter() - t0) * 1000.0
        self.add(name, ms)
        return ms

    def summary(self) -> StageTimings:
        import numpy as np

        out = {}
        for name, values in self.samples.items():
            a = np.asarray(values)
            out[name] = StepStats(int(a.size), float(a.mean()), float(np.percentile(a, 50)), float(np.percentile(a, 95)))
        return out
