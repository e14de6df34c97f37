"""`posecast replay`: publish a recorded track again, at its original pace."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engines.stop_signals import StopSignals
from streamer.protocol import END_FAILED, END_OF_INPUT, END_STOPPED

if TYPE_CHECKING:
    from streamer.publish import Publisher

LONE_POSE_GAP_S = 1.0      # a looped recording of one pose has no gap of its own: one a second


def replay_clock(poses: list[dict]) -> str:
    """The field that gives a recording's pace. A video file's track was made as fast as the
    pipeline ran, so its `t_capture` is the processing's pace; its `t_media`, the video's own
    time, is the original one, and a network stream's is its sender's. Cameras have no
    `t_media`; a recording whose `t_media` is missing anywhere or goes back is played by
    `t_capture`, when its frames were read."""
    media = [p.get("t_media") for p in poses]
    if media and all(isinstance(t, (int, float)) for t in media) and all(b >= a for a, b in zip(media, media[1:])):
        return "t_media"
    return "t_capture"


@dataclass
class ReplayPart:
    """A stretch of a recording with one clock: a whole run of its publisher, or the part of one
    between two loops of a file (where `t_media` starts again)."""
    poses: list[dict[str, Any]]
    offsets: list[float]            # seconds after the recording's first message, at speed 1
    restarts: bool                  # the publisher started again here (`seq` went back): a meta first


def replay_parts(poses: list[dict[str, Any]]) -> list[ReplayPart]:
    """The recording cut where `seq` or `t_media` goes back: a recording of several runs of a
    publisher (`listen --record` records on when the same stream starts again), or a looped
    file. Each part is paced by its own clock (`replay_clock`) and follows the one before after
    that one's usual gap between messages: one clock for all would send a part whose times go
    back at once, as a burst."""
    parts: list[ReplayPart] = []
    start = 0
    for i in range(1, len(poses) + 1):
        if i < len(poses) and not _starts_again(poses[i - 1], poses[i]):
            continue
        chunk = poses[start:i]
        clock = replay_clock(chunk)
        times = [float(m[clock]) for m in chunk]
        origin = 0.0
        if parts:
            before = parts[-1].offsets
            origin = before[-1] + (statistics.median(b - a for a, b in zip(before, before[1:]))
                                   if len(before) > 1 else 0.0)
        parts.append(ReplayPart(chunk, [origin + t - times[0] for t in times],
                                restarts=bool(parts) and chunk[0]["seq"] <= poses[start - 1]["seq"]))
        start = i
    return parts


def _starts_again(previous: dict[str, Any], pose: dict[str, Any]) -> bool:
    if pose["seq"] <= previous["seq"]:
        return True
    a, b = previous.get("t_media"), pose.get("t_media")
    return isinstance(a, (int, float)) and isinstance(b, (int, float)) and b < a


def replay(track: Path, endpoint: str, encoding: str, speed: float, hwm: int, meta_interval_s: float,
           announce: Callable[[str], None], loop: bool = False) -> int:
    """Publish a recorded track again, at its original pace (`replay_parts`) times `speed`; with
    `loop`, again from its start after its end until a signal, each time announced by its meta as
    a restarted publisher's run is (`seq` starts again).
    `announce` is told the lines a user should see (where it publishes; how a signal ended it).
    Every line is checked before anything is published. A signal ends it as it ends `listen`
    (`StopSignals`): the messages sent so far go out, and the exit code is 128 + its number."""
    from streamer.publish import Publisher
    from streamer.track_check import read_checked_track

    with StopSignals() as stop:
        meta, poses, _ = read_checked_track(track, "replay", lambda m: announce(f"warning: {m}"))
        sent = 0
        pub = Publisher(endpoint, encoding, hwm, meta_interval_s)
        # Said once the track is known good and the port is ours: a bad one is its one error line.
        announce(f"replaying {track} on {pub.endpoint}")
        source, replayed = meta.get("source", track.stem), {**meta, "replay": True}
        ending = END_FAILED
        try:
            pub.start(source, replayed)
            parts = replay_parts(poses)
            between_passes_s = _usual_gap(parts) / speed if loop else 0.0
            # let subscribers that connect at start-up see the first messages
            if _sleep_until(pub.joined_by, stop, pub):
                t0 = time.monotonic()
                while True:
                    for part in parts:
                        if part.restarts:
                            # As the publisher did when it started again: subscribers (`listen --record`)
                            # hold a restarted stream's poses until its meta says it is the same stream.
                            pub.start(source, replayed)
                        for msg, offset in zip(part.poses, part.offsets):
                            if not _sleep_until(t0 + offset / speed, stop, pub):
                                break
                            pub.publish(msg)
                            sent += 1
                        if stop.signum is not None:
                            break
                    if not loop or stop.signum is not None:
                        break
                    t0 = time.monotonic() + between_passes_s
                    pub.start(source, replayed)      # the next pass, announced as a restarted publisher's run is
            ending = END_OF_INPUT if stop.signum is None else END_STOPPED
        finally:
            pub.end(ending)
            pub.close()
    if stop.signum is None:
        announce(f"published all {sent} pose messages of {track}")
        return 0
    with contextlib.suppress(OSError):      # SIGHUP: the terminal may be gone
        of = f"(the recording's {len(poses)}, looped)" if loop else f"of {len(poses)}"
        announce(f"interrupted ({stop.name}) after publishing {sent} {of} pose messages")
    return 128 + stop.signum


def _usual_gap(parts: list[ReplayPart]) -> float:
    """The recording's median gap between messages, after which a loop starts again (positive: a
    recording of one pose, or of poses all at one time, would otherwise be sent without a pause)."""
    gaps = [b - a for part in parts for a, b in zip(part.offsets, part.offsets[1:]) if b > a]
    return statistics.median(gaps) if gaps else LONE_POSE_GAP_S


def _sleep_until(due: float, stop: StopSignals, pub: Publisher) -> bool:
    """Wait for the monotonic time `due`, keeping the publisher's meta going (a long pause in the
    recording); False if a stop signal came first. Python resumes a sleep after a signal's
    handler, so it sleeps in short steps to notice one."""
    while stop.signum is None:
        left = due - time.monotonic()
        if left <= 0:
            return True
        time.sleep(min(left, 0.1))
        pub.tick()
    return False
