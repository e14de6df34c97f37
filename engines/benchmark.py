"""Timing the network alone (used by `posecast bench-network`)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from engines.backends.base import Backend


@dataclass(frozen=True)
class NetworkTiming:
    batch: int
    p50_ms: float      # per call
    p99_ms: float
    mean_ms: float

    @property
    def frames_per_s(self) -> float:
        """From the median call, as ms per frame is: one outlier moves neither."""
        return 1000.0 * self.batch / self.p50_ms


def bench_network(backend: Backend, input_size: int, batch: int, iters: int, warmup: int) -> NetworkTiming:
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, size=(batch, input_size, input_size, 3), dtype=np.uint8)
    for _ in range(warmup):
        backend.infer(crops)
    times = np.empty(iters)
    for i in range(iters):
        t0 = time.perf_counter()
        backend.infer(crops)
        times[i] = time.perf_counter() - t0
    p50 = float(np.percentile(times, 50)) * 1000.0
    return NetworkTiming(batch, p50, float(np.percentile(times, 99)) * 1000.0, float(times.mean()) * 1000.0)
