"""Cut a square region out of a video, scale it up and write it as H.264: the close-up clips of
docs/results.md ("Real footage") are made from Debian's opencv-doc vtest.avi with

    python scripts/vtest_crop.py /usr/share/doc/opencv-doc/examples/data/vtest.avi vcrop.mp4 \
        --box 260 150 200 --size 512 --frames 250 450
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import numpy as np

from engines.files import unwritable_reason
from train.command import run_command
from train.h264 import NoFrames, not_a_video_name, write_h264


def _cannot_write(out: Path) -> str | None:
    not_video = not_a_video_name(out)
    if not_video is not None:
        return not_video
    reason = unwritable_reason(out)
    return None if reason is None else f"cannot write '{out}': {reason}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--box", nargs=3, type=int, metavar=("X0", "Y0", "SIDE"), required=True,
                   help="the square's top-left corner and side, input pixels")
    p.add_argument("--size", type=int, default=512, help="output side, pixels")
    p.add_argument("--frames", nargs=2, type=int, metavar=("FIRST", "LAST"), default=(0, 10**9))
    p.add_argument("--fps", type=int, default=10)
    args = p.parse_args(argv)
    x0, y0, side = args.box
    problem = (f"--size must be even (H.264 in yuv420p) and between 16 and 4096 (got {args.size})"
               if args.size % 2 or not 16 <= args.size <= 4096 else
               f"--fps must be between 1 and 240 (got {args.fps})" if not 1 <= args.fps <= 240 else
               f"--frames {args.frames[0]} {args.frames[1]}: give FIRST <= LAST, both >= 0"
               if not 0 <= args.frames[0] <= args.frames[1] else
               "the output is the input: give another name" if Path(args.output).resolve() == Path(args.input).resolve()
               else _cannot_write(Path(args.output)))
    if problem is not None:
        print(f"vtest_crop: error: {problem}", file=sys.stderr)
        return 2
    try:
        src = av.open(args.input)
    except (OSError, av.FFmpegError) as exc:
        print(f"vtest_crop: error: cannot open {args.input}: {exc}", file=sys.stderr)
        return 2
    w, h = src.streams.video[0].width, src.streams.video[0].height
    if x0 < 0 or y0 < 0 or side < 1 or x0 + side > w or y0 + side > h:
        src.close()
        print(f"vtest_crop: error: --box {x0} {y0} {side} is not inside the {w}x{h} frames", file=sys.stderr)
        return 2

    def frames() -> Iterator[np.ndarray]:
        for i, frame in enumerate(src.decode(video=0)):
            if i < args.frames[0]:
                continue
            if i > args.frames[1]:
                break
            image = frame.to_ndarray(format="bgr24")[y0:y0 + side, x0:x0 + side]
            yield cv2.resize(image, (args.size, args.size), interpolation=cv2.INTER_CUBIC)

    with src:
        try:
            written = write_h264(args.output, frames(), args.size, args.fps)
        except NoFrames:
            print(f"vtest_crop: error: {args.input} has no frame in --frames {args.frames[0]} {args.frames[1]}; "
                  f"nothing was written", file=sys.stderr)
            return 2
        except av.FFmpegError as exc:
            print(f"vtest_crop: error: {args.input} could not be read or the crop encoded ({exc}); nothing was "
                  f"written", file=sys.stderr)
            return 2
    print(f"vtest_crop: wrote {written} frames to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_command("vtest_crop", main, "nothing was written"))
