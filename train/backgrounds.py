"""The background photographs' split: which of `$POSECAST_DATA/backgrounds` training may use.

Held-out photos (by file name) appear only in the synthetic validation set and the validation
negatives, so both measure generalisation to scenes training never saw. Kept apart from the
renderer so that the training loader can read it without importing the body model.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

# Chosen to span indoor, outdoor and texture.
VAL_BACKGROUNDS = ("kde_Autumn.jpg", "kde_Kite.jpg", "kde_Path.jpg", "opencv_building.jpg",
                   "opencv_home.jpg", "opencv_fruits.jpg", "opencv_board.jpg")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def split_backgrounds(folder: Path, split_name: str) -> list[Path]:
    """The photos of `folder` in split "train" or "val", sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"background folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no background images in {folder}")
    held = [p for p in files if p.name in VAL_BACKGROUNDS]
    return held if split_name == "val" else [p for p in files if p.name not in VAL_BACKGROUNDS]


def load_backgrounds(paths: list[Path]) -> list[tuple[str, np.ndarray]]:
    """(file name, BGR image) of each photo; a file OpenCV cannot read is a ValueError naming it."""
    out = []
    for p in paths:
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"background {p} is not an image OpenCV can read")
        out.append((Path(p).name, img))
    return out
