"""Every Nth frame of a video as one labelled grid image: the overlay figures of
docs/results.md ("Real footage") are made from `posecast track IN -o t.jsonl --overlay t.mp4` with

    python scripts/contact_sheet.py t.mp4 docs/images/vtest_full_frame.jpg --first 20 --every 40 \
        --count 20 --columns 5 --width 240 --zoom t.jsonl

`--zoom` cuts each tile around the tracked person (the track file's first person's box, twice
its size and at least 96 px) so that the skeleton can be judged; a tile without a person shows
the whole frame, marked "none". Each tile is labelled with its frame index and the track's score.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import av
import cv2
import numpy as np


def read_boxes(path: Path) -> dict[int, tuple[list[float], float]]:
    """seq -> (first person's bbox [x0, y0, x1, y1], score) of a JSONL track file."""
    boxes: dict[int, tuple[list[float], float]] = {}
    with open(path) as f:
        for line in f:
            msg = json.loads(line)
            if msg.get("type") == "pose" and msg.get("people"):
                person = msg["people"][0]
                boxes[int(msg["seq"])] = (person["bbox"], float(person["score"]))
    return boxes


def zoom(img: np.ndarray, bbox: list[float]) -> np.ndarray:
    """A square around the box, twice its longer side (at least 96 px), inside the frame."""
    h, w = img.shape[:2]
    x0, y0, x1, y1 = bbox
    side = int(min(max(2 * max(x1 - x0, y1 - y0), 96), h, w))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = int(np.clip(round(cx - side / 2), 0, w - side))
    top = int(np.clip(round(cy - side / 2), 0, h - side))
    return img[top:top + side, left:left + side]


def label(tile: np.ndarray, text: str) -> None:
    cv2.putText(tile, text, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(tile, text, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Every Nth frame of a video as one labelled grid image.")
    p.add_argument("input")
    p.add_argument("output", help="an image file (.jpg, .png)")
    p.add_argument("--first", type=int, default=0, help="first frame index")
    p.add_argument("--every", type=int, default=20, help="frames between tiles")
    p.add_argument("--count", type=int, default=8, help="tiles at most")
    p.add_argument("--columns", type=int, default=4)
    p.add_argument("--width", type=int, default=256, help="tile width, pixels")
    p.add_argument("--zoom", type=Path, metavar="TRACK.jsonl", help="cut each tile around the tracked person")
    args = p.parse_args(argv)
    if args.first < 0 or args.every < 1 or args.count < 1 or args.columns < 1 or args.width < 16:
        print("contact_sheet: error: --first >= 0, --every/--count/--columns >= 1, --width >= 16", file=sys.stderr)
        return 2
    boxes = None
    if args.zoom is not None:
        try:
            boxes = read_boxes(args.zoom)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"contact_sheet: error: cannot read the track file {args.zoom}: {exc}", file=sys.stderr)
            return 2
        if not boxes:
            # An empty file, another JSONL, or a track that found nobody: said, not left to the tiles.
            print(f"contact_sheet: note: {args.zoom} holds no pose with a person; every tile is the whole frame",
                  file=sys.stderr)
    wanted = {args.first + k * args.every for k in range(args.count)}
    tiles: list[np.ndarray] = []
    try:
        with av.open(args.input) as src:
            for index, frame in enumerate(src.decode(video=0)):
                if index in wanted:
                    img = frame.to_ndarray(format="bgr24")
                    text = str(index)
                    if boxes is not None:
                        found = boxes.get(index)
                        if found is not None:
                            img = zoom(img, found[0])
                            text += f"  {found[1]:.2f}"
                        else:
                            text += "  none"
                    h = round(img.shape[0] * args.width / img.shape[1])
                    tile = cv2.resize(img, (args.width, h),
                                      interpolation=cv2.INTER_AREA if img.shape[1] > args.width else cv2.INTER_LINEAR)
                    label(tile, text)
                    tiles.append(tile)
                if len(tiles) == len(wanted) or index >= max(wanted):
                    break
    except (OSError, av.FFmpegError) as exc:
        print(f"contact_sheet: error: cannot read {args.input}: {exc}", file=sys.stderr)
        return 2
    if not tiles:
        print(f"contact_sheet: error: {args.input} has no frame {args.first}", file=sys.stderr)
        return 2
    height = max(t.shape[0] for t in tiles)
    tiles = [np.pad(t, ((0, height - t.shape[0]), (0, 0), (0, 0))) for t in tiles]     # zoomed and whole frames mix
    blank = np.zeros_like(tiles[0])
    rows = [tiles[i:i + args.columns] for i in range(0, len(tiles), args.columns)]
    rows[-1] = rows[-1] + [blank] * (args.columns - len(rows[-1]))
    sheet = np.vstack([np.hstack(r) for r in rows])
    try:
        jpeg = Path(args.output).suffix.lower() in (".jpg", ".jpeg")
        written = cv2.imwrite(args.output, sheet, [cv2.IMWRITE_JPEG_QUALITY, 85] if jpeg else [])
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
