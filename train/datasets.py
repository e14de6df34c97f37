"""Training datasets: synthetic crops with 3D labels, real photos with 2D labels, and their mix.

Every sample is a dict:

- `image`     uint8 tensor (S, S, 3), BGR (what `PoseNet.forward_logits` takes)
- `joints_2d` float32 (17, 2) crop pixels, continuous coordinates (pixel i covers [i, i + 1))
- `mask_2d`   float32 (17,): 1 where a 2D label exists and lies inside the crop [0, S)
- `edge_2d`   float32 (17,): 1 where a 2D label exists and lies outside the crop (a person cut off
              by the frame's edge; trained with `loss.w_edge` on the border cell nearest the label)
- `joints_3d` float32 (17, 3) metres, camera frame (x right, y down, z forward); 0 for real photos
- `has_3d`    float32 scalar: 1 synthetic, 0 real
- `source`    int: 0 synthetic, 1 real, 2 negative (a person-free crop: train/negatives.py)

Augmentation is drawn from a `numpy.random.Generator` passed to `get(i, rng)`. The mixed loader
(`make_loader`) gives each draw its own generator, seeded from (seed, position in the stream): a
batch is the same whatever the number of workers, and a run restarted at `start_step` sees exactly
the batches the uninterrupted run would have seen. Plain `dataset[i]` uses a per-process generator
(per DataLoader worker, seeded from the worker's torch seed).
"""

from __future__ import annotations

import bisect
import functools
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from engines.errors import PosecastError
from engines.ray_frame import OFFSETS_FRAMES, fit_pinhole, person_rotations
from engines.skeleton import H36M17
from train.real2d import RealRecord, default_data_root
from train.real_cutouts import RealBackdrops, read_photo
from train.shards import ShardSet

__all__ = [
    "SOURCE_NEGATIVE",
    "SOURCE_REAL",
    "SOURCE_SYNTH",
    "MixedBatchSampler",
    "MixedDataset",
    "RealDataset",
    "SyntheticDataset",
    "colour_jitter",
    "CutView",
    "cut_box",
    "default_data_root",
    "flip_image",
    "flip_joints_2d",
    "flip_joints_3d",
    "make_loader",
    "real_crop_transform",
    "sample_rng",
    "warp_matrix",
]

SOURCE_SYNTH = 0
SOURCE_REAL = 1
SOURCE_NEGATIVE = 2
FLIP = np.array(H36M17.flip_permutation, dtype=np.int64)


# --- geometry ----------------------------------------------------------------------------------

def flip_image(image: np.ndarray) -> np.ndarray:
    """Horizontal mirror."""
    return np.ascontiguousarray(image[:, ::-1])


def flip_joints_2d(joints_2d: np.ndarray, size: int) -> np.ndarray:
    """Crop pixels after a horizontal mirror of the crop: x -> S - x, and left/right swap."""
    out = np.array(joints_2d, dtype=np.float32)[FLIP]
    out[:, 0] = size - out[:, 0]
    return out


def flip_joints_3d(joints_3d: np.ndarray) -> np.ndarray:
    """Camera-frame joints after the mirror: x -> -x, and left/right swap. Consistent with the
    image flip when the crop's principal point is at its centre (S/2, S/2). (..., 17, 3); float64
    stays float64, anything else becomes float32."""
    joints_3d = np.asarray(joints_3d)
    out = np.array(joints_3d, dtype=np.result_type(joints_3d.dtype, np.float32))[..., FLIP, :]
    out[..., 0] = -out[..., 0]
    return out


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1] (got {value})")


def inside_crop(joints_2d: np.ndarray, size: int) -> np.ndarray:
    j = np.asarray(joints_2d)
    return np.all((j >= 0.0) & (j < size), axis=-1) & np.all(np.isfinite(j), axis=-1)


def warp_matrix(a: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The cv2.warpAffine matrix of the continuous map p -> a p + t (pixel centres at +0.5),
    as in engines.crop.CropTransform.cut."""
    m = np.zeros((2, 3), np.float64)
    m[:, :2] = a
    m[:, 2] = t + a @ np.array([0.5, 0.5]) - 0.5
    return m


@functools.lru_cache(maxsize=1)
def tracker_margin() -> float:
    """The margin the tracker puts around a person (configs/pipeline.yaml, `tracking.roi_margin`),
    which an unaugmented crop of a real photo copies. Read once: the config is parsed from YAML."""
    from streamer.config import load_pipeline_config

    return load_pipeline_config().tracking.roi_margin


def real_crop_transform(box_points: np.ndarray, size: int, rng: np.random.Generator | None,
                        augment: bool) -> tuple[np.ndarray, np.ndarray, bool, int]:
    """The crop of a real photo: (a (2, 2), t (2,), flipped, cv2 border mode), with
    crop = a @ image + t in continuous pixel coordinates.

    A square of side extent x m around the keypoints' box (extent: its longer side), as the
    tracker crops: m = the tracker's margin (`tracking.roi_margin`, 1.35), centred,
    upright without augmentation. With it: m ~ U(1.2, 1.6)
    (with probability 0.2 a far larger box, m ~ U(1.8, 4), the person small as in the full-frame
    search), a shift of up to 10 % of the side, a rotation of up to 25 degrees, a mirror (p 0.5),
    and a black (p 0.5) or replicated border.
    """
    pts = np.asarray(box_points, np.float64).reshape(-1, 2)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    centre = (lo + hi) / 2.0
    extent = max(float((hi - lo).max()), 1.0)
    flipped, border, angle = False, cv2.BORDER_CONSTANT, 0.0
    if augment:
        assert rng is not None
        m = rng.uniform(1.8, 4.0) if rng.random() < 0.2 else rng.uniform(1.2, 1.6)
        side = extent * m
        centre = centre + rng.uniform(-0.1, 0.1, size=2) * side
        angle = np.deg2rad(rng.uniform(-25.0, 25.0))
        flipped = bool(rng.random() < 0.5)
        border = cv2.BORDER_CONSTANT if rng.random() < 0.5 else cv2.BORDER_REPLICATE
    else:
        side = extent * tracker_margin()
    a, t = square_transform(centre, side, size, angle, flipped)
    return a, t, flipped, border


def square_transform(centre: np.ndarray, side: float, size: int, angle: float = 0.0,
                     flipped: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(a, t) of the crop = a @ image + t that maps the square (centre, side), turned by `angle`,
    onto the S x S crop, mirrored after with `flipped`."""
    c, s = np.cos(angle), np.sin(angle)
    a = (size / side) * np.array([[c, -s], [s, c]])
    t = size / 2.0 - a @ np.asarray(centre, np.float64)
    if flipped:
        a = np.diag([-1.0, 1.0]) @ a
        t = np.array([size - t[0], t[1]])
    return a, t


# --- people cut off by the frame (a webcam at a desk) ---------------------------------------------

# The frame's lower edge cuts an upright person between the hips (0) and the knees (1), as a
# webcam on a desk or a phone at arm's length shows them. Without these, every training crop holds
# the whole person, and on held-out real photos cut halfway between hips and knees stage 14 squeezed
# the whole body into the crop: 17.9% PCK@0.2 of the joints in it, against 84.6% uncut
# (`python -m train.evaluate --cut`; docs/results.md, "Stage 21").
CUT_LEVEL = (0.15, 0.85)
CUT_MARGIN = (1.1, 1.4)          # the square's side over the extent of what is left above the cut
CUT_SHIFT = 0.05                 # sideways jitter, a fraction of the side
CUT_HELD_OUT = (0.5, 1.25)       # level and margin without augmentation: the held-out measure
# The pipeline's region of interest reaches past the frame by its margin, and its crop is black
# there (engines/crop.py): half the cut views end in a black band, up to this share of their side.
CUT_BAND = (0.5, 0.3)
TRACKING_EXTENT = 0.58           # a rendered image whose joints span less of its side is search-like
UPRIGHT_COS = 0.7                # shoulders to hips within about 45 degrees of the image's down
_HIPS = H36M17.indices(("l_hip", "r_hip"))
_KNEES = H36M17.indices(("l_knee", "r_knee"))
_SHOULDERS = H36M17.indices(("l_shoulder", "r_shoulder"))


@dataclass(frozen=True)
class CutView:
    """A square crop (centre, side, image pixels) of a person the frame ends on at image row `cut_y`:
    the crop's lower edge, or above it, the rest of the crop black, as the pipeline's crop is past a
    frame's edge."""

    centre: np.ndarray
    side: float
    cut_y: float

    def transform(self, size: int, flipped: bool = False) -> tuple[np.ndarray, np.ndarray]:
        return square_transform(self.centre, self.side, size, flipped=flipped)

    def blank_below_cut(self, crop: np.ndarray, a: np.ndarray, t: np.ndarray) -> None:
        """Blacks out, in place, the crop's rows whose pixel centres lie below the cut."""
        row = float(a[1, 1] * self.cut_y + t[1])
        first = max(int(np.ceil(row - 0.5)), 0)
        crop[first:] = 0


def cut_box(joints_2d: np.ndarray, labelled: np.ndarray, rng: np.random.Generator | None,
            extra_points: np.ndarray | None = None) -> CutView | None:
    """The view of the person cut between hips and knees: a square around what is left above the
    cut (with `extra_points`, a real photo's face keypoints, too) whose lower edge is the cut, or
    with probability CUT_BAND[0] a black band of up to CUT_BAND[1] of the side below it. None for a
    person not upright in the image or without labelled hips and shoulders. Without `rng`, the
    middle of the ranges (CUT_HELD_OUT), centred, without a band."""
    j = np.asarray(joints_2d, np.float64)
    lab = np.asarray(labelled, bool)
    if not (lab[list(_HIPS)].all() and lab[list(_SHOULDERS)].all()):
        return None
    hips, shoulders = j[list(_HIPS)].mean(axis=0), j[list(_SHOULDERS)].mean(axis=0)
    torso = hips - shoulders
    length = float(np.hypot(*torso))
    if length < 1e-6 or torso[1] < UPRIGHT_COS * length:
        return None
    knee_y = hips[1] + length                          # no labelled knees: a thigh about a torso long
    if lab[list(_KNEES)].all():
        knee_y = max(float(j[list(_KNEES), 1].mean()), hips[1] + 0.3 * length)   # sitting: knees near the hips
    level, margin = CUT_HELD_OUT if rng is None else (rng.uniform(*CUT_LEVEL), rng.uniform(*CUT_MARGIN))
    cut_y = hips[1] + level * (knee_y - hips[1])
    points = j[lab]
    if extra_points is not None and len(extra_points):
        points = np.concatenate([points, np.asarray(extra_points, np.float64).reshape(-1, 2)])
    above = points[points[:, 1] < cut_y]
    lo, hi = above.min(axis=0), above.max(axis=0)
    side = max(float(hi[0] - lo[0]), float(cut_y - lo[1])) * margin
    cx = (lo[0] + hi[0]) / 2.0 + (0.0 if rng is None else rng.uniform(-CUT_SHIFT, CUT_SHIFT) * side)
    top = cut_y - side
    if rng is not None and rng.random() < CUT_BAND[0]:
        side *= 1.0 + rng.uniform(0.0, CUT_BAND[1])
    return CutView(np.array([cx, top + side / 2.0]), side, float(cut_y))


# --- photometric -------------------------------------------------------------------------------

def colour_jitter(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mild colour changes (p 0.8: brightness, contrast, saturation, hue), grayscale (p 0.05),
    a small gaussian blur (p 0.1). BGR uint8 in and out."""
    out = image
    if rng.random() < 0.8:
        brightness = rng.uniform(0.75, 1.25)
        contrast = rng.uniform(0.75, 1.25)
        saturation = rng.uniform(0.7, 1.3)
        hue = rng.uniform(-8.0, 8.0)                       # OpenCV hue units: 2 degrees
        hsv = cv2.cvtColor(out, cv2.COLOR_BGR2HSV).astype(np.float32)
        hsv[..., 0] = np.mod(hsv[..., 0] + hue, 180.0)
        hsv[..., 1] = np.clip(hsv[..., 1] * saturation, 0, 255)
        hsv[..., 2] = np.clip(hsv[..., 2] * brightness, 0, 255)
        bgr = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR).astype(np.float32)
        mean = float(bgr.mean())
        out = np.clip((bgr - mean) * contrast + mean, 0, 255).astype(np.uint8)
    if rng.random() < 0.05:
        gray = cv2.cvtColor(out, cv2.COLOR_BGR2GRAY)
        out = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    if rng.random() < 0.1:
        out = cv2.GaussianBlur(out, (0, 0), sigmaX=rng.uniform(0.5, 1.5))
    return np.ascontiguousarray(out)


# --- datasets ----------------------------------------------------------------------------------

def sample_rng(seed: int, position: int) -> np.random.Generator:
    """The augmentation generator of draw `position` of a seeded stream."""
    return np.random.default_rng([int(seed), 1, int(position)])


def _pack(image: np.ndarray, joints_2d: np.ndarray, mask: np.ndarray, joints_3d: np.ndarray,
          has_3d: float, source: int, edge: np.ndarray | None = None) -> dict[str, Any]:
    return {
        "image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.uint8)),
        "joints_2d": torch.from_numpy(np.ascontiguousarray(joints_2d, dtype=np.float32)),
        "mask_2d": torch.from_numpy(np.asarray(mask, dtype=np.float32)),
        "edge_2d": torch.from_numpy(np.zeros(len(mask), np.float32) if edge is None else np.asarray(edge, np.float32)),
        "joints_3d": torch.from_numpy(np.ascontiguousarray(joints_3d, dtype=np.float32)),
        "has_3d": torch.tensor(float(has_3d), dtype=torch.float32),
        "source": int(source),
    }


class _Augmented(Dataset):
    """`get(i, rng)` does the work; `dataset[i]` draws from a per-process generator."""

    seed: int

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self._rng: np.random.Generator | None = None
        self._rng_pid = -1

    def _process_rng(self) -> np.random.Generator:
        pid = os.getpid()
        if self._rng is None or self._rng_pid != pid:
            info = torch.utils.data.get_worker_info()
            key = [self.seed, 2] if info is None else [self.seed, 3, info.id, torch.initial_seed() % 2**63]
            self._rng, self._rng_pid = np.random.default_rng(key), pid
        return self._rng

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.get(int(i), self._process_rng())

    def get(self, i: int, rng: np.random.Generator) -> dict[str, Any]:
        raise NotImplementedError


def label_rotation(joints_2d: np.ndarray, joints_3d: np.ndarray) -> np.ndarray:
    """The person's ray rotation (engines/ray_frame.py) of a rendered sample, from its labels:
    camera-frame joints (J, 3) and their pixels (J, 2), which fix the camera that made them."""
    focal, principal = fit_pinhole(joints_2d, joints_3d)
    return person_rotations(joints_2d, focal, principal)


def to_ray_frame(joints_2d: np.ndarray, joints_3d: np.ndarray) -> np.ndarray:
    """Camera-frame joints (J, 3) of a rendered sample -> the person's ray frame."""
    rot = label_rotation(joints_2d, joints_3d)
    return (joints_3d.astype(np.float64) @ rot).astype(np.float32)         # rows: R.T @ x


class SyntheticDataset(_Augmented):
    """Rendered crops from shard directories (`train/shards.py`). Augmentation: a mirror (p 0.5)
    and colour jitter; no other geometric change (the renderer varies scale and position).
    `mask_2d` is 1 for every joint inside the crop, occluded or not. `joints_3d` is in the
    camera's frame, or with `offsets_frame="ray"` in the person's ray frame (engines/ray_frame.py;
    the shards do not store the camera, so it is fitted to each sample's 2D and 3D labels, which
    it made)."""

    def __init__(self, shard_dirs: Sequence[Path] | Path, input_size: int = 256, augment: bool = True,
                 seed: int = 0, offsets_frame: str = "camera", cut_fraction: float = 0.0) -> None:
        super().__init__(seed)
        if offsets_frame not in OFFSETS_FRAMES:
            raise ValueError(f"offsets_frame must be one of {', '.join(OFFSETS_FRAMES)} (got {offsets_frame!r})")
        _check_fraction("cut_fraction", cut_fraction)
        self.shards = ShardSet(shard_dirs if isinstance(shard_dirs, (list, tuple)) else [shard_dirs])
        self.input_size = int(input_size)
        self.augment = augment
        self.offsets_frame = offsets_frame
        self.cut_fraction = float(cut_fraction)

    def __len__(self) -> int:
        return len(self.shards)

    def get(self, i: int, rng: np.random.Generator) -> dict[str, Any]:
        s = self.shards.get(i)
        image, j2, j3 = s["image"], s["joints_2d"].astype(np.float32), s["joints_3d"].astype(np.float32)
        size = self.input_size
        h, w = image.shape[:2]
        if h != w:
            raise ValueError(f"synthetic sample {i}: image {w}x{h} is not square")
        if self.offsets_frame == "ray":
            j3 = to_ray_frame(j2, j3)        # from the whole image's labels: a cut does not turn the ray
        view = self._cut(j2, w, rng)
        if view is not None:
            a, t = view.transform(size)
            image = cv2.warpAffine(image, warp_matrix(a, t), (size, size), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REPLICATE)
            view.blank_below_cut(image, a, t)
            j2 = (j2.astype(np.float64) @ a.T + t).astype(np.float32)
        elif w != size:
            # cv2.resize samples at pixel centres: continuous coordinates scale exactly.
            image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if w > size else cv2.INTER_LINEAR)
            j2 = j2 * (size / w)
        if self.augment:
            if rng.random() < 0.5:
                image, j2, j3 = flip_image(image), flip_joints_2d(j2, size), flip_joints_3d(j3)
            image = colour_jitter(image, rng)
        inside = inside_crop(j2, size)
        return _pack(image, j2, inside, j3, 1.0, SOURCE_SYNTH, edge=~inside)

    def _cut(self, j2: np.ndarray, width: int, rng: np.random.Generator) -> CutView | None:
        """With probability `cut_fraction`, the square of a cut-off view of a tracking-like image
        (`cut_box`); a search-like one (a small person) stays whole. Draws nothing at 0, so older
        recipes see the stream they always saw."""
        if self.cut_fraction <= 0.0 or rng.random() >= self.cut_fraction:
            return None
        if float((j2.max(axis=0) - j2.min(axis=0)).max()) < TRACKING_EXTENT * width:
            return None
        return cut_box(j2, np.ones(len(j2), bool), rng if self.augment else None)


class RealDataset(_Augmented):
    """Real photos with 2D labels, cropped around the person like the tracker does (see
    `real_crop_transform`), with colour jitter when augmenting; with `cut_fraction`, that share
    cut off between hips and knees instead (`cut_box`). Joints without a label or outside the crop have
    `mask_2d` 0 (and their `joints_2d` is left where the warp put them, or 0); labelled ones outside
    have `edge_2d` 1."""

    def __init__(self, records: Sequence[RealRecord], input_size: int = 256, augment: bool = True,
                 seed: int = 0, cut_fraction: float = 0.0, backdrops: RealBackdrops | None = None) -> None:
        super().__init__(seed)
        _check_fraction("cut_fraction", cut_fraction)
        self.records = list(records)
        self.input_size = int(input_size)
        self.augment = augment
        self.cut_fraction = float(cut_fraction)
        self.backdrops = backdrops                     # people cut out and put before other scenes
        self._bytes: dict[int, np.ndarray] = {}        # the JPEG files (decoded per sample)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if self.augment:
            return super().__getitem__(i)
        # Unaugmented (evaluation): photo i gets the same draws (its backdrop) in any order.
        return self.get(int(i), sample_rng(self.seed, int(i)))

    def load_image(self, i: int) -> np.ndarray:
        return read_photo(self.records[i].path, self._bytes, i)

    def get(self, i: int, rng: np.random.Generator) -> dict[str, Any]:
        rec = self.records[i]
        size = self.input_size
        box = rec.box_points if len(rec.box_points) >= 2 else rec.joints_2d[rec.mask]
        cut = None
        if self.cut_fraction > 0.0 and rng.random() < self.cut_fraction:
            cut = cut_box(rec.joints_2d, rec.mask, rng if self.augment else None, rec.box_points)
        if cut is not None:
            flipped = self.augment and bool(rng.random() < 0.5)
            border = cv2.BORDER_REPLICATE
            a, t = cut.transform(size, flipped)
        else:
            a, t, flipped, border = real_crop_transform(box, size, rng, self.augment)
        image = self.load_image(i)
        warp = warp_matrix(a, t)
        crop = cv2.warpAffine(image, warp, (size, size), flags=cv2.INTER_LINEAR,
                              borderMode=border, borderValue=(0, 0, 0))
        if self.backdrops is not None:
            crop = self.backdrops.apply(crop, warp, rec.path.name, rng)
        if cut is not None:
            cut.blank_below_cut(crop, a, t)
        j2 = (rec.joints_2d.astype(np.float64) @ a.T + t).astype(np.float32)
        mask = rec.mask.copy()
        j2[~mask] = 0.0
        if flipped:
            j2, mask = j2[FLIP], mask[FLIP]
        if self.augment:
            crop = colour_jitter(crop, rng)
        inside = inside_crop(j2, size)
        return _pack(crop, j2, mask & inside, np.zeros((H36M17.num_joints, 3), np.float32), 0.0, SOURCE_REAL,
                     edge=mask & ~inside)


# --- the mix -----------------------------------------------------------------------------------

class MixedDataset(ConcatDataset):
    """Synthetic, then real, then negative samples. Indexed by (flat index, stream position), it
    augments with `sample_rng(seed, position)`; by a plain int, like any ConcatDataset."""

    def __init__(self, synth: Dataset | None, real: Dataset | None, seed: int = 0,
                 negative: Dataset | None = None) -> None:
        self.n_synth = len(synth) if synth is not None else 0
        self.n_real = len(real) if real is not None else 0
        self.n_negative = len(negative) if negative is not None else 0
        parts = [d for d in (synth, real, negative) if d is not None and len(d) > 0]
        if not parts:
            raise ValueError("MixedDataset: every dataset is empty")
        super().__init__(parts)
        self.seed = int(seed)

    def __getitem__(self, key):
        if not isinstance(key, tuple):
            return super().__getitem__(key)
        idx, position = key
        d = bisect.bisect_right(self.cumulative_sizes, idx)
        local = idx - (self.cumulative_sizes[d - 1] if d > 0 else 0)
        return self.datasets[d].get(int(local), sample_rng(self.seed, position))


class MixedBatchSampler:
    """Batches for steps [start_step, steps): each element is real with probability
    `real_fraction`, else synthetic, then uniform within its source (with replacement); then,
    with probability `negative_fraction`, a negative instead. Batch k depends only on (seed, k):
    restarting at `start_step` continues the same stream. (Without negatives the stream is the
    one the sampler drew before negatives existed.)"""

    def __init__(self, n_synth: int, n_real: int, real_fraction: float, batch_size: int, seed: int,
                 steps: int, start_step: int = 0, n_negative: int = 0, negative_fraction: float = 0.0) -> None:
        if not 0.0 <= real_fraction <= 1.0:
            raise ValueError(f"real_fraction must be in [0, 1] (got {real_fraction})")
        if not 0.0 <= negative_fraction < 1.0:
            raise ValueError(f"negative_fraction must be in [0, 1) (got {negative_fraction})")
        if negative_fraction > 0 and n_negative == 0:
            raise ValueError("negative_fraction > 0 but there are no negatives")
        if real_fraction > 0 and n_real == 0:
            raise ValueError("real_fraction > 0 but the real dataset is empty")
        if real_fraction < 1 and n_synth == 0:
            raise ValueError("real_fraction < 1 but the synthetic dataset is empty")
        if batch_size < 1 or not 0 <= start_step <= steps:
            raise ValueError(f"bad batch_size {batch_size} or steps {start_step}..{steps}")
        self.n_synth, self.n_real = int(n_synth), int(n_real)
        self.real_fraction, self.batch_size = float(real_fraction), int(batch_size)
        self.seed, self.steps, self.start_step = int(seed), int(steps), int(start_step)
        self.n_negative, self.negative_fraction = int(n_negative), float(negative_fraction)

    def __len__(self) -> int:
        return self.steps - self.start_step

    def batch(self, step: int) -> list[tuple[int, int]]:
        rng = np.random.default_rng([self.seed, 0, int(step)])
        b = self.batch_size
        real = rng.random(b) < self.real_fraction
        synth_idx = rng.integers(0, max(self.n_synth, 1), size=b)
        real_idx = self.n_synth + rng.integers(0, max(self.n_real, 1), size=b)
        idx = np.where(real, real_idx, synth_idx)
        if self.negative_fraction > 0:
            negative = rng.random(b) < self.negative_fraction
            neg_idx = self.n_synth + self.n_real + rng.integers(0, self.n_negative, size=b)
            idx = np.where(negative, neg_idx, idx)
        return [(int(idx[k]), step * b + k) for k in range(b)]

    def __iter__(self):
        for step in range(self.start_step, self.steps):
            yield self.batch(step)


def _seed_worker(worker_id: int) -> None:
    """Seeds a worker's global generators from its torch seed (the loader's base seed +
    worker_id). Leaves OpenCV's threads alone: `cv2.setNumThreads` in a forked worker tears down
    a thread pool copied from the parent mid-state and can hang for ever (seen here); OpenCV's
    calls themselves work in the fork, on the calling thread.

    A worker leaves the training process's group for one of its own. Ctrl-C and SIGTERM sent to
    the whole group (a terminal, `timeout`) killed it first, and the training process failed on
    its dead worker, anywhere in a step, before reading its own stop flag: the steps since the
    last checkpoint were lost. Now only the training process hears them; it stops its workers
    itself (which signal them by their own pid), and a worker whose parent died ends by itself.
    (Ignoring the signals instead left workers that the interpreter's exit waits for in vain.)"""
    try:
        os.setpgid(0, 0)
    except OSError:
        pass                                # already a group or session leader: nothing to leave
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


def make_loader(synth_ds: Dataset | None, real_ds: Dataset | None, real_fraction: float,
                batch_size: int, num_workers: int, seed: int, steps: int, start_step: int = 0,
                pin_memory: bool = False, negative_ds: Dataset | None = None,
                negative_fraction: float = 0.0) -> DataLoader:
    """A DataLoader of `steps - start_step` batches (one per training step) drawn from the
    datasets; see `MixedBatchSampler` and `MixedDataset`. Deterministic given `seed`, whatever
    `num_workers`."""
    mixed = MixedDataset(synth_ds, real_ds, seed=seed, negative=negative_ds)
    sampler = MixedBatchSampler(mixed.n_synth, mixed.n_real, real_fraction, batch_size, seed, steps, start_step,
                                n_negative=mixed.n_negative, negative_fraction=negative_fraction)
    gen = torch.Generator()
    gen.manual_seed(int(seed) * 1_000_003 + int(start_step))
    return _Loader(mixed, batch_sampler=sampler, num_workers=num_workers,
                   worker_init_fn=_seed_worker, generator=gen, pin_memory=pin_memory,
                   persistent_workers=False)


class _Loader(DataLoader):
    """A DataLoader whose workers' Posecast errors (a damaged shard) reach the user as the one line
    they were raised with: torch re-raises them with the worker's whole traceback as their message."""

    def __iter__(self):  # type: ignore[override]
        batches = super().__iter__()
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except PosecastError as exc:
                raise type(exc)(raised_message(exc)) from None
            yield batch


def raised_message(exc: BaseException) -> str:
    """The message an exception had where it was raised: for one re-raised by a DataLoader, the
    last line of the worker's traceback, less its type's name."""
    text = str(exc)
    if not text.startswith("Caught ") or "\n" not in text:
        return text
    last = text.rstrip().rsplit("\n", 1)[-1]
    name = f"{type(exc).__module__}.{type(exc).__qualname__}: "
    return last[len(name):] if last.startswith(name) else last
