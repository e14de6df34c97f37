"""Square crops of the input image and the transform back to image pixels.

A crop maps image pixel p to crop pixel s p + t (a uniform scale and a shift: the network sees
an upright, undistorted square). Crops are cut with one `cv2.warpAffine` straight from the frame
in shared memory into the network's input buffer, which is the only pixel copy after capture.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class CropTransform:
    """crop = scale * image + (tx, ty)."""

    scale: float
    tx: float
    ty: float
    size: int

    @classmethod
    def from_box(cls, cx: float, cy: float, side: float, size: int) -> "CropTransform":
        """The square of `side` image pixels centred on (cx, cy), resampled to size x size."""
        scale = size / side
        return cls(scale, size / 2.0 - scale * cx, size / 2.0 - scale * cy, size)

    @classmethod
    def full_frame(cls, width: int, height: int, size: int) -> "CropTransform":
        """The whole image, letterboxed into the crop (used to search for a person)."""
        return cls.from_box(width / 2.0, height / 2.0, float(max(width, height)), size)

    @classmethod
    def tiles(cls, width: int, height: int, per_axis: int, size: int) -> list["CropTransform"]:
        """`per_axis` x `per_axis` overlapping squares covering the image (side 1.5 / per_axis of
        its longer side, at most its shorter side): a person too small for the full-frame crop
        is larger in one of them."""
        if per_axis <= 1:
            return []
        side = min(1.5 * max(width, height) / per_axis, float(min(width, height)))

        def centres(extent: int) -> np.ndarray:
            return np.linspace(side / 2.0, extent - side / 2.0, per_axis)

        return [cls.from_box(float(cx), float(cy), side, size) for cy in centres(height) for cx in centres(width)]

    def matrix(self) -> np.ndarray:
        return np.array([[self.scale, 0.0, self.tx], [0.0, self.scale, self.ty]], dtype=np.float64)

    def to_image(self, points: np.ndarray) -> np.ndarray:
        """Crop pixels (..., 2) -> image pixels."""
        offset = np.array([self.tx, self.ty])
        return ((np.asarray(points, dtype=np.float64) - offset) / self.scale).astype(np.float32)

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        offset = np.array([self.tx, self.ty])
        return (np.asarray(points, dtype=np.float64) * self.scale + offset).astype(np.float32)

    def box(self) -> tuple[float, float, float, float]:
        """The crop's square in image pixels: x0, y0, x1, y1."""
        x0, y0 = self.to_image(np.array([0.0, 0.0]))
        return float(x0), float(y0), float(x0 + self.size / self.scale), float(y0 + self.size / self.scale)

    def cut(self, image: np.ndarray, out: np.ndarray) -> None:
        """Resample `image` into `out` (size x size x 3), black outside the image."""
        # Pixel centres: cv2 maps integer coordinates to integer coordinates; our transform is
        # defined on continuous coordinates whose pixel centres sit at +0.5.
        m = self.matrix()
        m[:, 2] += 0.5 * self.scale - 0.5
        cv2.warpAffine(image, m, (self.size, self.size), dst=out, flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def box_around(points: np.ndarray, conf: np.ndarray, margin: float, min_side: float,
               min_conf: float = 0.05, centre_joints: tuple[int, ...] = ()) -> tuple[float, float, float]:
    """The square (cx, cy, side) around the confident 2D joints, `margin` times their extent.

    With `centre_joints` (the torso), cx is their confidence-weighted mean instead of the middle
    of the extent: an arm or leg drawn out to someone beside the person then does not pull the
    next crop towards them, which would show the network both people, centred between them.
    """
    use = conf >= min_conf
    pts = points[use] if use.sum() >= 2 else points
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    cx, cy = (lo + hi) / 2.0
    if centre_joints:
        idx = np.asarray(centre_joints)
        w = np.where(conf[idx] >= min_conf, conf[idx], 0.0)
        if w.sum() > 0:
            cx = float(w @ points[idx, 0]) / float(w.sum())
    side = max(float((hi - lo).max()) * margin, min_side)
    return float(cx), float(cy), side


def points_bbox(points: np.ndarray) -> tuple[float, float, float, float]:
    lo, hi = points.min(axis=0), points.max(axis=0)
    return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])
