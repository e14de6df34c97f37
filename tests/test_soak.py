"""A bounded soak: `posecast run --loop` live-paced for several minutes with a subscriber.

Checks that nothing grows or drifts: the resident memory of every posecast process after warm-up
stays flat, and the capture-to-publish latency and the message rate in the last minute match the
first minute's. These are stability ratios within one run, not speed targets. Speed is measured
by `posecast bench` (docs/performance.md).

About 3.5 minutes. POSECAST_SOAK_S changes the length; `-m "not soak"` leaves it out of a quick
local run. CI runs it.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import msgpack
import numpy as np
import psutil
import pytest
import zmq

SOAK_S = float(os.environ.get("POSECAST_SOAK_S", "180"))
WARMUP_S = 20.0
MINUTE = min(60.0, (SOAK_S - WARMUP_S) / 3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mb(root: psutil.Process) -> float:
    procs = [root, *root.children(recursive=True)]
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total / 1e6


@pytest.mark.soak
def test_live_soak_memory_flat_latency_steady(posecast, clip90: Path) -> None:
    port = _free_port()
    err = posecast.cwd / "soak-stderr.txt"
    proc = posecast.start(["run", clip90, "--loop", "--port", port, "--min-score", "0", "--no-progress"],
                          start_new_session=True, stderr=open(err, "w"))
    sub = zmq.Context().socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"pose.")
    sub.connect(f"tcp://127.0.0.1:{port}")
    root = psutil.Process(proc.pid)
    samples: list[tuple[float, float, int]] = []        # (t, latency ms, seq)
    memory: list[tuple[float, float]] = []               # (t, MB)
    t0 = time.monotonic()
    next_mem = t0
    try:
        while (now := time.monotonic()) - t0 < SOAK_S:
            assert proc.poll() is None, err.read_text()
            if now >= next_mem:
                memory.append((now - t0, _rss_mb(root)))
                next_mem = now + 5.0
            if sub.poll(100):
                _, payload = sub.recv_multipart()
                msg = msgpack.unpackb(payload)
                samples.append((now - t0, (msg["t_publish"] - msg["t_capture"]) * 1000.0, msg["seq"]))
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except Exception:
            os.killpg(proc.pid, signal.SIGKILL)     # leave no pipeline running after a failed test
            proc.wait(timeout=30)
            raise
        finally:
            sub.close(linger=0)
    text = err.read_text()
    assert proc.returncode == 130, text
    assert "Traceback" not in text

    t = np.array([s[0] for s in samples])
    lat = np.array([s[1] for s in samples])
    first = (t >= WARMUP_S) & (t < WARMUP_S + MINUTE)
    last = t >= SOAK_S - MINUTE
    assert first.sum() > 0.8 * 30 * MINUTE and last.sum() > 0.8 * 30 * MINUTE, (first.sum(), last.sum())
    # Pace and latency steady: the last minute looks like the first.
    assert last.sum() >= 0.9 * first.sum(), (first.sum(), last.sum())
    p50_first, p50_last = np.median(lat[first]), np.median(lat[last])
    p95_first, p95_last = np.percentile(lat[first], 95), np.percentile(lat[last], 95)
    # Drift (a queue building up) would add hundreds of ms; a busy neighbour on a shared machine
    # moves a minute's p95 by tens (73.7 ms against 27.6 was seen), so the bounds are loose.
    assert p50_last <= 1.5 * p50_first + 10.0, (p50_first, p50_last)
    assert p95_last <= 2.0 * p95_first + 30.0, (p95_first, p95_last)
    # Memory flat after warm-up: allocator noise, not growth with the number of frames.
    mem = np.array(memory)
    after = mem[mem[:, 0] >= WARMUP_S, 1]
    growth = after[-1] - after[0]
    assert growth < 25.0, f"resident memory grew {growth:.1f} MB over {SOAK_S - WARMUP_S:.0f} s: {after}"
    print(f"\nsoak {SOAK_S:.0f} s: {len(samples)} messages; latency p50 {p50_first:.1f} -> {p50_last:.1f} ms, "
          f"p95 {p95_first:.1f} -> {p95_last:.1f} ms; memory {after[0]:.0f} -> {after[-1]:.0f} MB")
