"""MediaPipe Pose on images or a video, for `scripts/compare_mediapipe.sh` (a comparison, never a
dependency of Posecast).

Runs in its own virtual environment (mediapipe 0.10.14 needs numpy<2 and protobuf<5), so it
imports nothing of Posecast:

    python scripts/mediapipe_poses.py images LIST.txt OUT.npz   # a line: path [cx cy side]
    python scripts/mediapipe_poses.py video CLIP.mp4 OUT.npz

The legacy `mp.solutions.pose` API is used because its wheel carries its models
(`pose_detection.tflite`, `pose_landmark_full.tflite`): nothing is downloaded. The model is
BlazePose GHUM 3D "full" (`model_complexity=1`); "heavy" is fetched at run time and cannot run
offline. A list line with `cx cy side` gives MediaPipe the square of that side about that centre
(black outside the image), as `train.evaluate` crops a real photo; its landmarks are mapped back to
the photo's pixels. Images run in static mode (the detector on every image); a video runs in
tracking mode (the detector only where the landmarks lost the person), as MediaPipe runs on video.

OUT.npz: `landmarks_2d` (N, 33, 2) pixels (continuous: pixel i covers [i, i + 1)), `visibility`
(N, 33), `world` (N, 33, 3) metres about the hips' midpoint (MediaPipe's axes: x and y as the
image's, z towards the camera negative), `found` (N,), `seconds` (N,) MediaPipe's own time per
image or frame, NaN where nobody was found.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

try:
    import mediapipe as mp
except ImportError:
    # Posecast's own environment must never hold mediapipe (it pins numpy<2 and protobuf<5).
    print("mediapipe_poses: error: mediapipe is not installed in this Python: run it with "
          ".venv-mediapipe/bin/python (bash scripts/compare_mediapipe.sh makes that environment)", file=sys.stderr)
    sys.exit(2)

LANDMARKS = 33
CROP_SIZE = 512       # a given square is resampled to this side; the landmark model reads 256


def crop_square(image: np.ndarray, cx: float, cy: float, side: float) -> tuple[np.ndarray, float, np.ndarray]:
    """The square (CROP_SIZE pixels) of `side` image pixels about (cx, cy), and (a, t) with
    crop = a * image + t in continuous pixel coordinates."""
    a = CROP_SIZE / side
    t = np.array([CROP_SIZE / 2.0 - a * cx, CROP_SIZE / 2.0 - a * cy])
    # cv2 maps pixel centres: continuous x maps to x - 0.5 in its grid on both sides.
    m = np.array([[a, 0.0, t[0] + 0.5 * a - 0.5], [0.0, a, t[1] + 0.5 * a - 0.5]])
    crop = cv2.warpAffine(image, m, (CROP_SIZE, CROP_SIZE), flags=cv2.INTER_AREA if a < 1 else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return crop, a, t


def run(pose: mp.solutions.pose.Pose, frames, n_hint: int = 0) -> dict[str, np.ndarray]:
    out: dict[str, list] = {"landmarks_2d": [], "visibility": [], "world": [], "found": [], "seconds": []}
    for k, (bgr, a, t) in enumerate(frames):
        h, w = bgr.shape[:2]
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        start = time.perf_counter()
        res = pose.process(rgb)
        out["seconds"].append(time.perf_counter() - start)
        pts = np.full((LANDMARKS, 2), np.nan)
        vis = np.full(LANDMARKS, np.nan)
        world = np.full((LANDMARKS, 3), np.nan)
        if res.pose_landmarks is not None:
            lm = res.pose_landmarks.landmark
            # MediaPipe's normalised x, y are continuous coordinates over the image's width and height.
            pts = np.array([[p.x * w, p.y * h] for p in lm])
            vis = np.array([p.visibility for p in lm])
            pts = (pts - t) / a
            world = np.array([[p.x, p.y, p.z] for p in res.pose_world_landmarks.landmark])
        out["landmarks_2d"].append(pts)
        out["visibility"].append(vis)
        out["world"].append(world)
        out["found"].append(res.pose_landmarks is not None)
        if n_hint and (k + 1) % 100 == 0:
            print(f"  {k + 1}/{n_hint}", file=sys.stderr, flush=True)
    return {k: np.asarray(v) for k, v in out.items()}


def image_frames(listing: Path):
    for line in listing.read_text().splitlines():
        parts = line.split()
        if not parts:
            continue
        image = cv2.imread(parts[0], cv2.IMREAD_COLOR)
        if image is None:
            raise SystemExit(f"mediapipe_poses: cannot read {parts[0]}")
        if len(parts) == 4:
            yield crop_square(image, *map(float, parts[1:]))
        else:
            yield image, 1.0, np.zeros(2)


def video_frames(path: Path):
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise SystemExit(f"mediapipe_poses: cannot open {path}")
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        yield frame, 1.0, np.zeros(2)
    cap.release()


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in ("images", "video"):
        print(__doc__, file=sys.stderr)
        return 2
    mode, source, out = argv[0], Path(argv[1]), Path(argv[2])
    static = mode == "images"
    # Checked before MediaPipe runs over a whole clip (imports nothing of Posecast: its own venv).
    if not source.is_file():
        print(f"mediapipe_poses: error: no {'list' if static else 'video'} file {source}", file=sys.stderr)
        return 2
    if out.suffix != ".npz" or out.is_dir() or not out.parent.is_dir() or not os.access(out.parent, os.W_OK):
        print(f"mediapipe_poses: error: cannot write {out}: give a .npz file in a folder that exists and "
              f"can be written", file=sys.stderr)
        return 2
    n = sum(1 for line in source.read_text().splitlines() if line.strip()) if static else 0
    with mp.solutions.pose.Pose(static_image_mode=static, model_complexity=1, enable_segmentation=False,
                                min_detection_confidence=0.5, min_tracking_confidence=0.5) as pose:
        result = run(pose, image_frames(source) if static else video_frames(source), n)
    np.savez_compressed(out, **result)
    found = result["found"]
    print(f"mediapipe_poses: {source.name}: a person in {int(found.sum())} of {len(found)}; "
          f"{np.median(result['seconds']) * 1000:.1f} ms per {'image' if static else 'frame'} (median)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
