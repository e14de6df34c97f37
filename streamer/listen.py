"""`posecast listen`: subscribe to a pose stream, show it, or record it to a track file.

Shows, about once a second: the message rate, the pipeline latency (t_publish - t_capture, from
the publisher's clock), the delivery delay (receive time - t_publish; meaningful when both ends
share a clock, i.e. on one machine), the people count and a small text drawing of the 2D skeleton.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import zmq

from engines.errors import InputError
from streamer.publish import decode


@dataclass
class StreamStats:
    """Rolling figures over the last `window` pose messages."""

    window: int = 120
    arrivals: deque = field(init=False)
    pipeline_ms: deque = field(init=False)
    delivery_ms: deque = field(init=False)
    received: int = 0
    gaps: int = 0                       # seq numbers skipped: messages this subscriber lost
    last_seq: int | None = None

    def __post_init__(self) -> None:
        self.arrivals = deque(maxlen=self.window)
        self.pipeline_ms = deque(maxlen=self.window)
        self.delivery_ms = deque(maxlen=self.window)

    def add(self, msg: dict[str, Any], t_recv: float) -> None:
        self.received += 1
        self.arrivals.append(t_recv)
        if msg.get("t_publish") is not None:
            self.pipeline_ms.append((msg["t_publish"] - msg["t_capture"]) * 1000.0)
            self.delivery_ms.append((t_recv - msg["t_publish"]) * 1000.0)
        seq = msg.get("seq")
        if self.last_seq is not None and seq is not None and seq > self.last_seq + 1:
            self.gaps += seq - self.last_seq - 1
        self.last_seq = seq

    def rate(self) -> float:
        if len(self.arrivals) < 2:
            return 0.0
        span = self.arrivals[-1] - self.arrivals[0]
        return (len(self.arrivals) - 1) / span if span > 0 else 0.0

    def line(self) -> str:
        def p50(d: deque) -> str:
            return f"{np.median(d):.1f}" if d else "-"

        return (f"{self.received} msgs  {self.rate():5.1f}/s  pipeline p50 {p50(self.pipeline_ms)} ms  "
                f"delivery p50 {p50(self.delivery_ms)} ms  lost {self.gaps}")


def text_skeleton(msg: dict[str, Any], parents: list[int], cols: int = 40, rows: int = 16) -> str:
    """The first person's 2D joints drawn in a cols x rows character box."""
    people = msg.get("people") or []
    if not people:
        return "(nobody)"
    pts = np.asarray(people[0]["joints_2d"], dtype=np.float64)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    span = np.maximum(hi - lo, 1e-6)
    scale = min((cols - 1) / span[0], (rows - 1) * 2.0 / span[1])   # characters are ~2x tall
    grid = [[" "] * cols for _ in range(rows)]
    cells = np.round((pts - lo) * np.array([scale, scale / 2.0])).astype(int)
    cells = np.clip(cells, 0, [cols - 1, rows - 1])
    for j, p in enumerate(parents):
        if p < 0:
            continue
        for t in np.linspace(0.0, 1.0, 8):
            x, y = np.round(cells[p] + t * (cells[j] - cells[p])).astype(int)
            if grid[y][x] == " ":
                grid[y][x] = "."
    for x, y in cells:
        grid[y][x] = "o"
    return "\n".join("".join(r).rstrip() for r in grid)


def listen(endpoint: str, topic: str, record: Path | None, count: int | None, timeout_s: float,
           show_skeleton: bool, out: TextIO = sys.stdout) -> int:
    """Subscribe and show (or record) until `count` poses, `timeout_s` of silence, or Ctrl-C."""
    from streamer.tracks import open_track_writer

    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(endpoint)
    except zmq.ZMQError as exc:
        sock.close()
        ctx.term()
        raise InputError(f"cannot connect to '{endpoint}': {exc} (use tcp://HOST:PORT)") from None
    # meta is always wanted: it says what the pose messages mean (and subscribing asks for it).
    sock.setsockopt(zmq.SUBSCRIBE, b"meta.")
    sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
    stats = StreamStats()
    meta: dict[str, Any] | None = None
    writer = None
    pending: list[dict[str, Any]] = []
    last_shown = 0.0
    last_msg = time.monotonic()
    try:
        while count is None or stats.received < count:
            if not sock.poll(200):
                if time.monotonic() - last_msg > timeout_s:
                    if stats.received == 0:
                        raise InputError(f"no pose messages from '{endpoint}' in {timeout_s:g} s "
                                         f"(is `posecast run` publishing there?)")
                    break
                continue
            _, payload = sock.recv_multipart()
            t_recv = time.time()
            last_msg = time.monotonic()
            msg = decode(payload)
            if msg.get("type") == "meta":
                if meta is None:
                    meta = msg
                    print(f"stream '{msg.get('source')}': {len(msg['joint_names'])} joints, "
                          f"axes {msg.get('axes')}, model trained: {msg.get('model', {}).get('trained')}", file=out)
                    if record is not None:
                        writer = open_track_writer(record, msg)
                continue
            stats.add(msg, t_recv)
            if record is not None:
                if writer is None:
                    pending.append(msg)      # poses that came before the meta: kept, written after it
                    continue
                for early in pending:
                    writer.write_message(early)
                pending.clear()
                writer.write_message(msg)
            if time.monotonic() - last_shown >= 1.0:
                last_shown = time.monotonic()
                print(stats.line(), file=out)
                if show_skeleton and meta is not None:
                    print(text_skeleton(msg, meta["parents"]), file=out)
    except KeyboardInterrupt:
        pass
    finally:
        if writer is not None:
            writer.close()
        sock.close()
        ctx.term()
    print(stats.line(), file=out)
    if record is not None and writer is None:
        raise InputError(f"nothing recorded: no meta message arrived from '{endpoint}'")
    return 0


def replay_clock(poses: list[dict]) -> str:
    """The field that gives a recording's pace. A video file's track was made as fast as the
    pipeline ran, so its `t_capture` is the processing's pace; its `t_media`, the video's own
    time, is the original one. Cameras and streams have no `t_media`, and a looped file's goes
    back at each loop: those are played by `t_capture`, when their frames were read."""
    media = [p.get("t_media") for p in poses]
    if media and all(isinstance(t, (int, float)) for t in media) and all(b >= a for a, b in zip(media, media[1:])):
        return "t_media"
    return "t_capture"


def replay(track: Path, endpoint: str, encoding: str, speed: float, hwm: int = 64) -> int:
    """Publish a recorded track again, at its original pace (`replay_clock`) times `speed`."""
    from streamer.publish import Publisher
    from streamer.tracks import read_track

    meta, poses = read_track(track)
    pub = Publisher(endpoint, encoding, hwm)
    try:
        pub.start(meta.get("source", track.stem), meta)
        time.sleep(0.3)    # let subscribers that connect at start-up see the first messages
        if not poses:
            return 0
        clock = replay_clock(poses)
        t0_track, t0 = poses[0][clock], time.monotonic()
        for msg in poses:
            due = t0 + (msg[clock] - t0_track) / speed
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            msg.pop("t_publish", None)
            pub.publish(msg)
    finally:
        pub.close()
    return 0
