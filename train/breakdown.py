"""Where the model fails: the evaluation's errors split by what each held-out image shows.

The issue asks where the model fails by pose, viewpoint, clothing and scale. The rendered
validation images carry what is needed for most of that: the 3D joints in the camera's frame
(which fix the viewpoint), the motion each pose comes from, and which joints are hidden. So
`train.evaluate` splits its synthetic errors by these factors, and its real-photo PCK by the view
that the 2D labels show:

- **facing**: the angle between the way the person's chest faces and the direction to the camera,
  both in the plane across the person's up (pelvis to thorax): 0° is a front view, 180° a back view.
- **camera height**: the angle of the direction to the camera above the plane across the person's
  up: positive when the camera looks down on them.
- **pose**: the motion's kind, from its name (`POSE_GROUPS`).
- **hidden joints**: joints behind the body, under an occluder or outside the crop, of 17.
- **scale**: the person's 2D extent as a share of the crop's side (the renderer's search crops
  show people at 0.12–0.55 of it, its tracking crops at 0.59 and over).
- **view on real photos**: from the labelled shoulders and hips, which have no 3D: their left
  joints to the image's right of their right ones is a front view (`REAL_VIEW_SIDE`).

Clothing is not recorded with the images, so it is not split here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engines.skeleton import Skeleton

FACING_BINS: tuple[tuple[str, float, float], ...] = (
    ("front, 0-45°", 0.0, 45.0), ("side, 45-135°", 45.0, 135.0), ("back, 135-180°", 135.0, 181.0))
CAMERA_HEIGHT_BINS: tuple[tuple[str, float, float], ...] = (
    ("from below, under 0°", -91.0, 0.0), ("level, 0-15°", 0.0, 15.0), ("above, 15-30°", 15.0, 30.0),
    ("high above, over 30°", 30.0, 91.0))
HIDDEN_BINS: tuple[tuple[str, float, float], ...] = (
    ("0-2 of 17", 0.0, 3.0), ("3-5 of 17", 3.0, 6.0), ("6 or more of 17", 6.0, 18.0))
SCALE_BINS: tuple[tuple[str, float, float], ...] = (
    ("under 0.25 of the crop", 0.0, 0.25), ("0.25-0.45", 0.25, 0.45), ("0.45-0.57", 0.45, 0.57),
    ("0.57 and over (tracking)", 0.57, np.inf))
# The kind of motion, by the first pattern its name matches (names as train.motion gives them:
# "h36m/S8/Walking 1", "cmu/07_03", "deepmimic/humanoid3d_run").
POSE_GROUPS: tuple[tuple[str, str], ...] = (
    ("sitting", r"^h36m/[^/]+/Sitting"),
    ("walking", r"^h36m/[^/]+/Walk|^cmu/"),
    ("standing actions", r"^h36m/"),
    ("running", r"^deepmimic/.*run"),
    ("dancing", r"^deepmimic/.*dance"),
    ("acrobatics", r"^deepmimic/"),
)
OTHER_POSE = "other"
# Real photos: (left - right) x of shoulders plus hips, over the torso diagonal. A front view
# gives about +1, a back view about -1; within +-REAL_VIEW_SIDE the person is seen side-on.
REAL_VIEW_SIDE = 0.3
REAL_VIEWS = ("front", "side", "back")


@dataclass(frozen=True)
class SampleErrors:
    """Per-sample errors that bins average: 3D in mm (None for a set without 3D; NaN where a
    sample has none), and the 2D hits and labelled joints behind PCK."""
    mpjpe_mm: np.ndarray | None      # (N,)
    pa_mpjpe_mm: np.ndarray | None   # (N,)
    hits: np.ndarray          # (N,) joints within the PCK radius
    labelled: np.ndarray      # (N,) joints that count for PCK


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def _body_axes(joints_3d: np.ndarray, skeleton: Skeleton) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pose: the unit up (pelvis to thorax), the chest's facing direction across it, and the
    unit direction from the pelvis to the camera (the camera's frame has the camera at 0)."""
    j = np.asarray(joints_3d, dtype=np.float64)
    pelvis, thorax = (j[:, skeleton.index(n)] for n in ("pelvis", "thorax"))
    right = (j[:, skeleton.index("r_hip")] - j[:, skeleton.index("l_hip")]
             + j[:, skeleton.index("r_shoulder")] - j[:, skeleton.index("l_shoulder")])
    up = _unit(thorax - pelvis)
    # In a right-handed frame up x right points out of the chest.
    forward = _unit(np.cross(up, right))
    forward = _unit(forward - np.sum(forward * up, axis=-1, keepdims=True) * up)
    return up, forward, _unit(-pelvis)


def facing_degrees(joints_3d: np.ndarray, skeleton: Skeleton) -> np.ndarray:
    """(N,) degrees between the chest's direction and the camera's, across the person's up: 0 is
    a front view, 90 side-on, 180 a back view."""
    up, forward, to_camera = _body_axes(joints_3d, skeleton)
    across = _unit(to_camera - np.sum(to_camera * up, axis=-1, keepdims=True) * up)
    # atan2 of sine and cosine: arccos of the cosine alone loses precision near 0 and 180 degrees.
    sine = np.linalg.norm(np.cross(forward, across), axis=-1)
    return np.degrees(np.arctan2(sine, np.sum(forward * across, axis=-1)))


def camera_height_degrees(joints_3d: np.ndarray, skeleton: Skeleton) -> np.ndarray:
    """(N,) degrees of the direction to the camera above the plane across the person's up."""
    up, _, to_camera = _body_axes(joints_3d, skeleton)
    return np.degrees(np.arcsin(np.clip(np.sum(to_camera * up, axis=-1), -1.0, 1.0)))


def pose_groups(motions: Sequence[str]) -> np.ndarray:
    """(N,) the kind of each motion name (`POSE_GROUPS`; `OTHER_POSE` when none matches)."""
    patterns = [(group, re.compile(p)) for group, p in POSE_GROUPS]
    return np.array([next((g for g, p in patterns if p.search(m)), OTHER_POSE) for m in motions], dtype=object)


def extent_share(joints_2d: np.ndarray, size: int) -> np.ndarray:
    """(N,) the joints' larger 2D extent over the crop's side."""
    j = np.asarray(joints_2d, dtype=np.float64)
    return (j.max(axis=1) - j.min(axis=1)).max(axis=-1) / float(size)


def real_views(joints_2d: np.ndarray, labelled: np.ndarray, skeleton: Skeleton) -> np.ndarray:
    """(N,) "front", "side", "back" or "" (shoulders or hips unlabelled) from 2D labels alone."""
    idx = {n: skeleton.index(n) for n in ("l_shoulder", "r_shoulder", "l_hip", "r_hip")}
    j = np.asarray(joints_2d, dtype=np.float64)
    spread = (j[:, idx["l_shoulder"], 0] - j[:, idx["r_shoulder"], 0]
              + j[:, idx["l_hip"], 0] - j[:, idx["r_hip"], 0])
    torso = np.linalg.norm(j[:, idx["l_shoulder"]] - j[:, idx["r_hip"]], axis=-1)
    s = spread / np.maximum(torso, 1e-9)
    out = np.where(s > REAL_VIEW_SIDE, "front", np.where(s < -REAL_VIEW_SIDE, "back", "side")).astype(object)
    out[~np.all(labelled[:, list(idx.values())], axis=1) | (torso <= 1e-9)] = ""
    return out


def bin_numeric(values: np.ndarray, bins: Sequence[tuple[str, float, float]]) -> np.ndarray:
    """(N,) each value's bin label ("" when it falls in none)."""
    out = np.full(len(values), "", dtype=object)
    for label, lo, hi in bins:
        out[(values >= lo) & (values < hi)] = label
    return out


def summarise(labels: np.ndarray, errors: SampleErrors, order: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per bin, in `order` (labels not in it follow, sorted): samples, mean MPJPE and PA-MPJPE
    (mm, over the samples with 3D; left out for a set without 3D) and PCK (over the bin's
    labelled joints). Empty bins are left out."""
    present = set(labels.tolist()) - {""}
    out: dict[str, dict[str, float]] = {}
    for label in [b for b in order if b in present] + sorted(present - set(order)):
        keep = labels == label
        labelled = int(errors.labelled[keep].sum())
        row: dict[str, float] = {"samples": int(keep.sum())}
        if errors.mpjpe_mm is not None and errors.pa_mpjpe_mm is not None:
            has3d = keep & np.isfinite(errors.mpjpe_mm)
            row["mpjpe_mm"] = float(errors.mpjpe_mm[has3d].mean()) if has3d.any() else float("nan")
            row["pa_mpjpe_mm"] = float(errors.pa_mpjpe_mm[has3d].mean()) if has3d.any() else float("nan")
        row["pck"] = float(errors.hits[keep].sum() / labelled) if labelled else float("nan")
        out[label] = row
    return out
