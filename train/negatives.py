"""Person-free training crops ("negatives"): what the network must not call a person.

Without them every crop the network ever saw held a person, so its 2D confidence (the mass
around each joint's peak, `engines.grid.decode`) never learned to mean "a person is here": on a
street clip it scored posts, cones and signs at 0.5-0.9, and the tracker followed them. A
negative is a square crop of a background photograph (the training split of
`train.backgrounds`), at a random scale, often with street-like clutter drawn on it (poles,
cones, signs, boxes, blobs), colour-jittered and sometimes noisy. Its 2D target is the uniform
distribution over the grid (train/losses.py `loss_negative`); it has no 3D target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from engines.skeleton import H36M17
from train.backgrounds import load_backgrounds
from train.datasets import SOURCE_NEGATIVE, _Augmented, _pack, colour_jitter, flip_image, sample_rng

__all__ = ["NegativeDataset", "NegativeOptions", "draw_clutter", "negative_crop"]


@dataclass(frozen=True)
class NegativeOptions:
    side: tuple[float, float] = (0.08, 1.0)       # crop side, fraction of the photo's shorter side
    clutter_probability: float = 0.6
    clutter_count: tuple[int, int] = (1, 4)
    noise_probability: float = 0.3


def _colour(rng: np.random.Generator) -> tuple[float, float, float]:
    if rng.random() < 0.5:                          # greys, dark to light, like posts and bins
        v = rng.uniform(10, 240)
        return (v, v, v)
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(80, 255), rng.uniform(60, 255)]]], np.uint8)
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return (float(b), float(g), float(r))


def draw_clutter(image: np.ndarray, rng: np.random.Generator) -> None:
    """Draws one upright, person-sized shape in place: a pole (with a sign on it half the time),
    a cone, a box or a blob."""
    s = image.shape[0]
    kind = rng.integers(4)
    cx, cy = rng.uniform(0.1, 0.9) * s, rng.uniform(0.2, 0.9) * s
    colour = _colour(rng)
    if kind == 0:                                   # pole, maybe with a sign
        w, h = rng.uniform(0.02, 0.12) * s, rng.uniform(0.4, 1.1) * s
        angle = rng.normal(0.0, 6.0)
        pts = cv2.boxPoints(((cx, cy), (w, h), angle))
        cv2.fillPoly(image, [np.round(pts).astype(np.int32)], colour, lineType=cv2.LINE_AA)
        if rng.random() < 0.5:
            top = (cx, cy - h / 2)
            r = rng.uniform(0.06, 0.18) * s
            if rng.random() < 0.5:
                cv2.circle(image, (int(top[0]), int(top[1] + r)), int(r), _colour(rng), -1, cv2.LINE_AA)
            else:
                cv2.rectangle(image, (int(top[0] - r), int(top[1])), (int(top[0] + r), int(top[1] + 1.4 * r)),
                              _colour(rng), -1, cv2.LINE_AA)
    elif kind == 1:                                 # cone
        w, h = rng.uniform(0.1, 0.35) * s, rng.uniform(0.2, 0.6) * s
        pts = np.array([[cx, cy - h / 2], [cx - w / 2, cy + h / 2], [cx + w / 2, cy + h / 2]])
        cv2.fillPoly(image, [np.round(pts).astype(np.int32)], colour, lineType=cv2.LINE_AA)
        if rng.random() < 0.5:                      # a reflective band
            y = cy + rng.uniform(-0.1, 0.2) * h
            cv2.line(image, (int(cx - w / 4), int(y)), (int(cx + w / 4), int(y)), (235, 235, 235),
                     max(1, int(0.06 * h)), cv2.LINE_AA)
    elif kind == 2:                                 # box (a bin, a cabinet, a door)
        w, h = rng.uniform(0.1, 0.5) * s, rng.uniform(0.15, 0.8) * s
        cv2.rectangle(image, (int(cx - w / 2), int(cy - h / 2)), (int(cx + w / 2), int(cy + h / 2)), colour, -1,
                      cv2.LINE_AA)
    else:                                           # blob (a bush, a bag, a scrap of paper)
        axes = (int(rng.uniform(0.03, 0.25) * s), int(rng.uniform(0.03, 0.35) * s))
        cv2.ellipse(image, (int(cx), int(cy)), axes, rng.uniform(0, 180), 0, 360, colour, -1, cv2.LINE_AA)


def negative_crop(photo: np.ndarray, size: int, rng: np.random.Generator,
                  opts: NegativeOptions = NegativeOptions()) -> np.ndarray:
    """A (size, size, 3) uint8 BGR crop of `photo` with clutter, jitter and noise drawn from `rng`."""
    h, w = photo.shape[:2]
    side = max(8, int(rng.uniform(*opts.side) * min(h, w)))
    y0, x0 = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    crop = cv2.resize(photo[y0:y0 + side, x0:x0 + side], (size, size),
                      interpolation=cv2.INTER_AREA if side > size else cv2.INTER_LINEAR)
    crop = flip_image(crop) if rng.random() < 0.5 else np.ascontiguousarray(crop)
    if rng.random() < opts.clutter_probability:
        for _ in range(int(rng.integers(opts.clutter_count[0], opts.clutter_count[1] + 1))):
            draw_clutter(crop, rng)
    crop = colour_jitter(crop, rng)
    if rng.random() < opts.noise_probability:
        noisy = crop.astype(np.float32) + rng.normal(0.0, rng.uniform(1.0, 7.0), crop.shape)
        crop = np.clip(noisy, 0, 255).astype(np.uint8)
    return crop


class NegativeDataset(_Augmented):
    """Negatives drawn from a list of photos, read at once (so that an unreadable file is an error
    before training starts, not in a loader worker). Item i comes from photo i % len(photos);
    every draw is a new crop (the loader's `sample_rng`). `length` only sets how many items the
    dataset claims (the evaluation's fixed count; the training sampler draws with replacement)."""

    def __init__(self, photos: Sequence[Path], input_size: int = 128, seed: int = 0, length: int | None = None,
                 opts: NegativeOptions = NegativeOptions()) -> None:
        super().__init__(seed)
        if not photos:
            raise ValueError("no background photos for negatives")
        self.paths = [Path(p) for p in photos]
        self.photos = [img for _, img in load_backgrounds(self.paths)]
        self.input_size = int(input_size)
        self.length = int(length) if length is not None else len(self.paths)
        self.opts = opts

    def __len__(self) -> int:
        return self.length

    def photo_of(self, i: int) -> int:
        """Which photo item i is cut from."""
        return i % len(self.photos)

    def get(self, i: int, rng: np.random.Generator) -> dict[str, Any]:
        crop = negative_crop(self.photos[self.photo_of(i)], self.input_size, rng, self.opts)
        n = H36M17.num_joints
        zeros2, zeros3 = np.zeros((n, 2), np.float32), np.zeros((n, 3), np.float32)
        return _pack(crop, zeros2, np.zeros(n, np.float32), zeros3, 0.0, SOURCE_NEGATIVE)

    def __getitem__(self, i: int) -> dict[str, Any]:
        # Evaluation reads dataset[i]: the same crop for the same i, whatever the process.
        return self.get(int(i), sample_rng(self.seed, int(i)))
