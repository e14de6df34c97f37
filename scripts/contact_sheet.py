"""Every Nth frame of a video as one labelled grid image: the overlay figures of
docs/training.md ("Real footage") are made from `posecast track ... --overlay t.mp4` with

    python scripts/contact_sheet.py t.mp4 docs/images/vtest_full_frame.jpg --first 20 --every 40 \
        --count 20 --columns 5 --width 320
"""

from __future__ import annotations

import argparse
import sys

import av
import cv2
import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Every Nth frame of a video as one labelled grid image.")
    p.add_argument("input")
    p.add_argument("output", help="an image file (.jpg, .png)")
    p.add_argument("--first", type=int, default=0, help="first frame index")
    p.add_argument("--every", type=int, default=20, help="frames between tiles")
    p.add_argument("--count", type=int, default=8, help="tiles at most")
    p.add_argument("--columns", type=int, default=4)
    p.add_argument("--width", type=int, default=256, help="tile width, pixels")
    args = p.parse_args(argv)
    if args.first < 0 or args.every < 1 or args.count < 1 or args.columns < 1 or args.width < 16:
        print("contact_sheet: error: --first >= 0, --every/--count/--columns >= 1, --width >= 16", file=sys.stderr)
        return 2
    wanted = {args.first + k * args.every for k in range(args.count)}
    tiles: list[np.ndarray] = []
    try:
        with av.open(args.input) as src:
            for index, frame in enumerate(src.decode(video=0)):
                if index in wanted:
                    img = frame.to_ndarray(format="bgr24")
                    h = round(img.shape[0] * args.width / img.shape[1])
                    tile = cv2.resize(img, (args.width, h), interpolation=cv2.INTER_AREA)
                    cv2.putText(tile, str(index), (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 3, cv2.LINE_AA)
                    cv2.putText(tile, str(index), (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1,
                                cv2.LINE_AA)
                    tiles.append(tile)
                if len(tiles) == len(wanted) or index >= max(wanted):
                    break
    except (OSError, av.FFmpegError) as exc:
        print(f"contact_sheet: error: cannot read {args.input}: {exc}", file=sys.stderr)
        return 2
    if not tiles:
        print(f"contact_sheet: error: {args.input} has no frame {args.first}", file=sys.stderr)
        return 2
    blank = np.zeros_like(tiles[0])
    rows = [tiles[i:i + args.columns] for i in range(0, len(tiles), args.columns)]
    rows[-1] = rows[-1] + [blank] * (args.columns - len(rows[-1]))
    sheet = np.vstack([np.hstack(r) for r in rows])
    try:
        written = cv2.imwrite(args.output, sheet, [cv2.IMWRITE_JPEG_QUALITY, 85])
    except cv2.error:                   # no writer for that extension
        written = False
    if not written:
        print(f"contact_sheet: error: cannot write {args.output} (a .jpg or .png in an existing folder)",
              file=sys.stderr)
        return 2
    print(f"contact_sheet: {len(tiles)} frames -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
