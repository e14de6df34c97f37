"""Webcam views of rendered clips: the same people, cut off by the frame between hips and knees.

    python -m train.synth.cut_clips --clips ../data/clips_report --out ../data/clips_webcam_report

A webcam on a desk shows a person from the head to somewhere between the hips and the knees; the
rendered clips (`train.synth.clip`) show every joint of every frame. Each clip here is one of
those seen through a fixed square window of its frames: the window `train.datasets.cut_box` puts
around the person at its held-out middle (cut halfway between hips and knees, side 1.25 times what
is left above the cut), the median over the clip's frames, moved inside the frame where it reaches
past it, and scaled back to the clip's size. The window does not follow the person: one who walks
out of it is out of view, as out of a webcam's. The labels move with the pixels: `joints_2d` and
the intrinsics in the new frame, `visible` false for every joint outside it; `joints_3d` is
unchanged (the camera is the same; only its image is cropped). A clip whose person is upright in
under half of its frames has no such view and is skipped, with a line saying so.

Written per clip, as `train.synth.clip` writes them: `clip_NNN.mp4` and `clip_NNN.npz` (its
`.npz` last, so an interrupted run resumes at the first clip without one). `python -m
train.video_eval --clips OUT` scores the pipeline on them.
"""

from __future__ import annotations

import json
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.arguments import OneLineParser
from engines.files import replaced_when_done
from train.datasets import cut_box
from train.synth.clip import VIEWS_SOURCE, rendered_split
from train.synth.generate import run_resumable


@dataclass(frozen=True)
class Window:
    """A square of a clip's frames: top-left corner (x0, y0) and side, in the clip's pixels."""

    x0: float
    y0: float
    side: float

    def to_view(self, points: np.ndarray, size: int) -> np.ndarray:
        """Pixel coordinates in the window's frame, scaled to `size` pixels."""
        return (np.asarray(points, np.float64) - (self.x0, self.y0)) * (size / self.side)

    def warp(self, size: int) -> np.ndarray:
        """The 2x3 matrix cv2.warpAffine takes to cut the window out, scaled to `size`: pixel
        centres sit at integer indices there and at +0.5 in the labels."""
        s = size / self.side
        return np.array([[s, 0.0, s * (0.5 - self.x0) - 0.5], [0.0, s, s * (0.5 - self.y0) - 0.5]])


def webcam_window(joints_2d: np.ndarray, size: int) -> Window | None:
    """The fixed window of a clip (`joints_2d` (T, 17, 2) in a `size` x `size` frame): the median
    of cut_box's held-out views over the frames where the person is upright, moved inside the
    frame; None where the person is upright in under half of the frames."""
    views = [cut_box(frame, np.ones(len(frame), bool), None) for frame in np.asarray(joints_2d)]
    upright = [v for v in views if v is not None]
    if 2 * len(upright) < len(views) or not upright:
        return None
    side = min(float(np.median([v.side for v in upright])), float(size))
    centre = np.median(np.stack([v.centre for v in upright]), axis=0)
    x0, y0 = np.clip(centre - side / 2.0, 0.0, size - side)
    return Window(float(x0), float(y0), side)


def cut_labels(labels: dict[str, np.ndarray], window: Window) -> dict[str, np.ndarray]:
    """The clip's labels seen through `window`, scaled back to the clip's size."""
    size = int(labels["size"])
    s = size / window.side
    out = dict(labels)
    joints = window.to_view(labels["joints_2d"], size)
    inside = np.all((joints >= 0.0) & (joints < size), axis=-1)
    out["joints_2d"] = joints.astype(np.asarray(labels["joints_2d"]).dtype)
    out["visible"] = np.asarray(labels["visible"], bool) & inside
    fx, fy, cx, cy = np.asarray(labels["intrinsics"], np.float64)
    out["intrinsics"] = np.array([fx * s, fy * s, (cx - window.x0) * s, (cy - window.y0) * s])
    out["focal"] = np.float64(float(labels["focal"]) * s)
    return out


def cut_video(src: Path, dst: Path, window: Window, size: int, fps: float) -> int:
    """Writes `src`'s frames seen through `window` to `dst` (H.264, CRF 18, as the clips are);
    returns the number of frames."""
    import av
    import cv2

    from train.h264 import write_h264

    matrix = window.warp(size)
    try:
        with av.open(str(src)) as inp:
            views = (cv2.warpAffine(frame.to_ndarray(format="bgr24"), matrix, (size, size),
                                    flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                     for frame in inp.decode(video=0))
            return write_h264(dst, views, size, round(fps), {"crf": "18", "preset": "veryfast"})
    except av.FFmpegError as exc:
        raise RuntimeError(f"cannot cut {src} into {dst}: {exc}") from None


def _check_source(out: Path, clips: Path) -> None:
    """Ties `out` to `clips` once it holds a view; a later run with other clips is refused (it
    would say done while `out` kept the first clips' views). The record also keeps the clips'
    split, so that `train.temporal` can tell views of held-out clips."""
    path = out / VIEWS_SOURCE
    here = str(clips.resolve())
    if path.exists() and any(out.glob("clip_*.npz")):
        try:
            before = json.loads(path.read_text()).get("clips")
        except (OSError, ValueError, AttributeError) as exc:
            raise ValueError(f"{path} is damaged ({exc}); give a new --out") from None
        if before != here:
            raise ValueError(f"{out} holds the webcam views of the clips in {before} (its {VIEWS_SOURCE} says so), not "
                             f"{here}; give another --out, or the same --clips to resume")
        return
    with replaced_when_done(path) as tmp:
        tmp.write_text(json.dumps({"clips": here, "split": rendered_split(clips)}) + "\n")


def cut_clips(clips: Path, out: Path) -> int:
    """Writes the webcam view of every clip in `clips` that `out` lacks; returns how many."""
    if not clips.is_dir():
        raise ValueError(f"no clip folder {clips} (make one with python -m train.synth.clip)")
    sources = sorted(clips.glob("clip_*.npz"))
    if not sources:
        raise ValueError(f"no clip_*.npz in {clips} (make them with python -m train.synth.clip)")
    out.mkdir(parents=True, exist_ok=True)
    _check_source(out, clips)
    from tqdm import tqdm

    made = 0
    for labels_path in tqdm(sources, desc="cutting clips", unit="clip"):
        video = labels_path.with_suffix(".mp4")
        if (out / labels_path.name).exists():
            continue
        if not video.exists():
            raise FileNotFoundError(f"{video} is missing (its labels {labels_path.name} are there)")
        try:
            with np.load(labels_path, allow_pickle=False) as data:
                labels = dict(data)
            size, fps = int(labels["size"]), float(labels["fps"])
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
            raise ValueError(f"cannot read the clip labels {labels_path} ({type(exc).__name__}: {exc}); "
                             "make it again with python -m train.synth.clip") from None
        window = webcam_window(labels["joints_2d"], size)
        if window is None:
            tqdm.write(f"{labels_path.stem} ({labels['motion']}): not upright in half of its frames, skipped",
                       file=sys.stderr)
            continue
        frames = cut_video(video, out / video.name, window, size, fps)
        if frames != len(labels["joints_2d"]):
            raise ValueError(f"{video} has {frames} frames, its labels {len(labels['joints_2d'])}")
        with replaced_when_done(out / labels_path.name) as tmp, open(tmp, "wb") as f:
            np.savez(f, **cut_labels(labels, window))
        made += 1
    return made


def main(argv: list[str] | None = None) -> int:
    ap = OneLineParser(prog="python -m train.synth.cut_clips", description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=Path, required=True, help="folder of python -m train.synth.clip's clips")
    ap.add_argument("--out", type=Path, required=True, help="folder for their webcam views (created; resumed)")
    args = ap.parse_args(argv)
    if args.out.resolve() == args.clips.resolve():
        ap.error("--out must differ from --clips: the views would replace the clips")
    return run_resumable(lambda: cut_clips(args.clips, args.out), "clips")


if __name__ == "__main__":
    raise SystemExit(main())
