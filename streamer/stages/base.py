"""What every stage shares: the run's control flags and its report line to the parent."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event, Semaphore
from typing import Any

from streamer.packets import StageTimings, StepStats

POLL_MS = 100


@dataclass
class Control:
    """`stop`: finish what is in flight and end (Ctrl-C, a graceful request).
    `abort`: end now (another stage failed).
    `ready`: released once by each stage after the capture when it is ready for frames (the
    network loaded, the outputs open). Every source starts reading once all are: a live one so
    that the frames it drops are the ones the stages could not keep up with, not those of their
    start (and a file played live loses none of its first frames); a file so that the run's clock
    (the output stage's) holds every frame's whole way through."""

    stop: Event
    abort: Event
    ready: Semaphore | None = None

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
