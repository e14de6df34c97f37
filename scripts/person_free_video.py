"""A video with nobody in it, to count the pipeline's false detections (docs/results.md):

    python scripts/person_free_video.py ../shared/datasets/backgrounds pfree.mp4
    posecast track pfree.mp4 -o pf.jsonl --stats      # "person found in N" frames of 430

Every photo of the folder (the background photos have no people), `--crops` random square crops
each (a side of 40-100% of the photo's shorter one), each crop held for `--frames` frames, scaled
to `--size` pixels; seeded. A crop held still is a scene a camera watches: the tracker searches
it, and once it takes something for a person it tracks it until the crop changes.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from train.backgrounds import IMAGE_SUFFIXES
from engines.files import input_overwritten, unwritable_reason
from train.command import run_command
from train.h264 import not_a_video_name, write_h264


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("photos", type=Path, help="a folder of photos without people")
    p.add_argument("output", type=Path)
    p.add_argument("--crops", type=int, default=2, help="random crops per photo")
    p.add_argument("--frames", type=int, default=5, help="frames per crop")
    p.add_argument("--size", type=int, default=480, help="side of the square frames, pixels (even)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.crops < 1 or args.frames < 1 or args.size < 16 or args.size % 2 or args.size > 4096 or args.seed < 0:
        p.error("--crops and --frames must be at least 1, --size even and 16 to 4096, --seed at least 0")
    cannot = unwritable_reason(args.output)
    if cannot is not None:
        print(f"person_free_video: error: cannot write '{args.output}': {cannot}", file=sys.stderr)
        return 2
    not_video = not_a_video_name(args.output)
    if not_video is not None:
        print(f"person_free_video: error: {not_video}", file=sys.stderr)
        return 2
    photos = sorted(f for f in args.photos.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES) \
        if args.photos.is_dir() else []
    if not photos:
        print(f"person_free_video: error: no .jpg or .png photos in {args.photos}", file=sys.stderr)
        return 2
    same = input_overwritten(args.output, {f"the photo {p.name}": p for p in photos})
    if same is not None:
        print(f"person_free_video: error: the output '{args.output}' is {same}; give another name", file=sys.stderr)
        return 2
    rng = np.random.default_rng(args.seed)

    def frames() -> Iterator[np.ndarray]:
        for photo in photos:
            image = cv2.imread(str(photo))
            if image is None:
                raise ValueError(f"cannot read {photo}")
            h, w = image.shape[:2]
            for _ in range(args.crops):
                side = int(rng.uniform(0.4, 1.0) * min(h, w))
                x, y = rng.integers(0, w - side + 1), rng.integers(0, h - side + 1)
                crop = cv2.resize(image[y:y + side, x:x + side], (args.size, args.size), interpolation=cv2.INTER_AREA)
                for _ in range(args.frames):
                    yield crop

    try:
        written = write_h264(args.output, frames(), args.size, 25, {"crf": "18"})
    except ValueError as exc:
        print(f"person_free_video: error: {exc}", file=sys.stderr)
        return 2
    print(f"person_free_video: wrote {written} frames of {len(photos)} photos to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_command("person_free_video", main, "nothing was written"))
