"""How well a track file follows people, without ground truth: the two proxies of
docs/performance.md ("File batch size") and docs/results.md (Real footage).

    python scripts/track_stats.py t.jsonl [more.jsonl ...]

- **spread**: frames without a person, or whose 2D joints span a box wider than it is tall, or
  taller than `--max-height` pixels. On footage of people walking upright (vtest.avi's are
  60-200 px tall) such a skeleton is spread over several people or objects. The three kinds are
  counted apart: a wide skeleton spans people side by side, a tall one a post or a sign and what
  stands below it (docs/results.md, "Stages 19 and 20").
- **still windows**: windows of `--window` seconds (starting every quarter window) in which the
  centre of the tracked joints moves less than `--still-px` pixels: the track sits on an object,
  as people in a street walk.
- the mean track score (0 for frames without a person).
- **tracks**: how many tracks (person ids) the file holds: one, and one more each time the person
  is found anew after a frame with nobody, or a search finds someone else (`tracking.new_track_iou`).
  Track files written before 2026-12-04 number every person 0.

Both assume walking people seen upright; they are proxies to compare runs on the same clip, not
accuracy.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.errors import PosecastError
from streamer.tracks import read_track


@dataclass
class TrackStats:
    frames: int
    found: int
    still_windows: int
    windows: int
    mean_score: float
    missing: int           # frames without a person
    wide: int              # skeletons wider than tall
    tall: int              # skeletons taller than --max-height (and not wider than tall)
    tracks: int = 0        # tracks started (the person id changing)

    @property
    def spread(self) -> int:
        """Frames without a person or with a spread skeleton."""
        return self.missing + self.wide + self.tall


def track_stats(poses: list[dict], fps: float, window_s: float = 4.0, still_px: float = 15.0,
                max_height_px: float = 260.0) -> TrackStats:
    """The proxies over a track's pose messages (the first person of each)."""
    centres = np.full((len(poses), 2), np.nan)
    found = wide = tall = tracks = 0
    last_id = None
    scores = np.zeros(len(poses))
    for k, msg in enumerate(poses):
        people = msg.get("people") or []
        if not people:
            continue
        joints = np.asarray(people[0]["joints_2d"], dtype=float)
        found += 1
        person_id = people[0].get("id")
        after_nobody = k == 0 or np.isnan(centres[k - 1, 0])
        tracks += bool(after_nobody or person_id != last_id)
        last_id = person_id
        scores[k] = float(people[0]["score"])
        centres[k] = joints.mean(axis=0)
        width, height = np.ptp(joints, axis=0)
        wide += bool(width > height)
        tall += bool(height > max_height_px and width <= height)
    window = max(2, round(window_s * fps))
    still = total = 0
    for start in range(0, len(poses) - window + 1, max(1, window // 4)):
        c = centres[start:start + window]
        c = c[~np.isnan(c[:, 0])]
        if len(c) < 2:
            continue
        total += 1
        still += bool(np.ptp(c, axis=0).max() < still_px)
    return TrackStats(len(poses), found, still, total, float(scores.mean()) if len(poses) else 0.0,
                      len(poses) - found, wide, tall, tracks)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="track_stats.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("tracks", nargs="+", type=Path, help="JSONL track files (posecast track -o t.jsonl)")
    ap.add_argument("--window", type=float, default=4.0, help="still-window length in seconds (default 4)")
    ap.add_argument("--still-px", type=float, default=15.0, help="a window is still below this motion (px)")
    ap.add_argument("--max-height", type=float, default=260.0, help="a skeleton taller than this is spread (px)")
    ap.add_argument("--fps", type=float, default=None, help="frame rate (default: the track's meta, else 30)")
    ap.add_argument("--total", action="store_true", help="also a last line with the sums over every track")
    args = ap.parse_args(argv)
    if args.window <= 0 or args.still_px <= 0 or args.max_height <= 0 or (args.fps is not None and args.fps <= 0):
        print("track_stats.py: error: --window, --still-px, --max-height and --fps must be positive", file=sys.stderr)
        return 2
    every: list[TrackStats] = []
    for path in args.tracks:
        try:
            meta, poses = read_track(path)
        except PosecastError as exc:
            print(f"track_stats.py: error: {exc}", file=sys.stderr)
            return 1
        fps = args.fps or float(meta.get("fps") or 30.0)
        every.append(track_stats(poses, fps, args.window, args.still_px, args.max_height))
        print(f"{path}: {describe(every[-1])}")
    if args.total:
        print(f"total of {len(every)} files: {describe(total(every))}")
    return 0


def total(stats: list[TrackStats]) -> TrackStats:
    """The sums over several tracks (the mean score weighted by frames)."""
    frames = sum(s.frames for s in stats)
    score = sum(s.mean_score * s.frames for s in stats) / frames if frames else 0.0
    return TrackStats(frames, sum(s.found for s in stats), sum(s.still_windows for s in stats),
                      sum(s.windows for s in stats), score, sum(s.missing for s in stats),
                      sum(s.wide for s in stats), sum(s.tall for s in stats), sum(s.tracks for s in stats))


def describe(s: TrackStats) -> str:
    share = s.spread / s.frames if s.frames else 0.0
    return (f"{s.frames} frames, person in {s.found}; spread {share:.1%} ({s.spread}: {s.missing} without a "
            f"person, {s.wide} wider than tall, {s.tall} too tall); "
            f"still windows {s.still_windows} of {s.windows}; mean score {s.mean_score:.3f}; "
            f"{s.tracks} track{'' if s.tracks == 1 else 's'}")


if __name__ == "__main__":
    sys.exit(main())
