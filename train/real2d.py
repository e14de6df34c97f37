"""Real photographs with 2D keypoints (COCO format), mapped onto the H36M17 skeleton.

`real2d_fashion/keypoints.json` is a COCO keypoint file converted from Label Studio: `images`
({id, file_name, width, height}), `annotations` ({image_id, keypoints: 17 x [x, y, v], bbox, ...},
one person per image) and one category whose `keypoints` names the 17 COCO joints: Nose, Left Eye,
Right Eye, Left Ear, Right Ear, Left Shoulder, Right Shoulder, Left Elbow, Right Elbow, Left Wrist,
Right Wrist, Left Hip, Right Hip, Left Knee, Right Knee, Left Ankle, Right Ankle.

COCO's "Left" is the person's left, as is our `l_` (frontal photos show it on the image's right).
Coordinates are taken as continuous image coordinates (Label Studio stores percentages of the
image size), the project's convention: pixel i covers [i, i + 1).

Mapping: shoulders, elbows, wrists, hips, knees and ankles directly; pelvis = the midpoint of the
hips; spine, thorax, neck_nose and head_top have no label. The face keypoints (nose, eyes, ears)
have no H36M17 joint but are kept in `box_points`, to size crops around the whole person as the
tracker does (its box includes the head top).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engines.skeleton import H36M17
from train.config import default_data_root

REAL2D_DIR = "real2d_fashion"

COCO_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
    "right_knee", "left_ankle", "right_ankle",
)

# H36M17 joint -> COCO keypoint index, for the joints labelled directly.
COCO_TO_H36M: dict[str, int] = {
    "l_shoulder": 5, "r_shoulder": 6, "l_elbow": 7, "r_elbow": 8, "l_wrist": 9, "r_wrist": 10,
    "l_hip": 11, "r_hip": 12, "l_knee": 13, "r_knee": 14, "l_ankle": 15, "r_ankle": 16,
}
COCO_L_HIP, COCO_R_HIP = 11, 12

# Photos stored twice under two names (the same stock photo re-encoded: 32x32 grey correlation
# >= 0.999, labels within 1% of the person's size). `split_real` keeps each group on one side,
# the training one, so that no held-out photo has a copy among the training photos. Found by
# comparing every cross-split pair (2026-12-06).
NEAR_DUPLICATES: tuple[tuple[str, ...], ...] = (
    ("f7b63295-fashion-photo-young-magnificent-woman-girl-posing_222877-618.jpg",
     "de49b9cf-fashion-photo-young-magnificent-woman-girl-posing-studio-photo_222877-21398.jpg"),
    ("988e3fe1-girl-green-cargo-pants-beige-hoodie-isolated-white_158023-2511.jpg",
     "ff71214d-girl-green-cargo-pants-beige-hoodie-isolated-white_158023-2342.jpg"),
    ("766bb754-woman-bathrobe-isolated-white-background-with-smile-her-face_259162-3095.jpg",
     "3389f0e6-woman-bathrobe-isolated-white-background-with-smile-her-face_259162-2786.jpg"),
)


@dataclass
class RealRecord:
    path: Path                 # the image (load with cv2: BGR)
    joints_2d: np.ndarray      # (17, 2) float32 image pixels (0 where unlabelled)
    mask: np.ndarray           # (17,) bool: the joint has a label
    box_points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    # (K, 2) float32: every labelled COCO keypoint, face included (crop sizing)
    width: int = 0
    height: int = 0


def coco_to_h36m(keypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """COCO (17, 3) [x, y, v] -> H36M17 joints (17, 2) float32 and mask (17,) bool."""
    kp = np.asarray(keypoints, np.float64).reshape(17, 3)
    labelled = kp[:, 2] > 0
    joints = np.zeros((H36M17.num_joints, 2), np.float64)
    mask = np.zeros(H36M17.num_joints, bool)
    for name, c in COCO_TO_H36M.items():
        j = H36M17.index(name)
        if labelled[c]:
            joints[j] = kp[c, :2]
            mask[j] = True
    if labelled[COCO_L_HIP] and labelled[COCO_R_HIP]:
        p = H36M17.index("pelvis")
        joints[p] = (kp[COCO_L_HIP, :2] + kp[COCO_R_HIP, :2]) / 2.0
        mask[p] = True
    return joints.astype(np.float32), mask


def suspicious_labels(record: RealRecord) -> bool:
    """True where the labels are evidently broken: a knee or ankle above both shoulders.

    In this set (upright studio photos) that happens only where leg points were dropped in the
    background or scrambled: about 2 % of the records (21 of 1,000). Subtler errors (left/right
    legs swapped or crossed) are not caught. Filter after `split_real`, so the split stays put.
    """
    j, m = record.joints_2d, record.mask
    shoulders = [H36M17.index(n) for n in ("l_shoulder", "r_shoulder")]
    legs = [H36M17.index(n) for n in ("l_knee", "r_knee", "l_ankle", "r_ankle")]
    if not m[shoulders].all():
        return False
    top = float(j[shoulders, 1].min())
    return bool(((j[legs, 1] < top) & m[legs]).any())


class _WrongOrder(ValueError):
    """A COCO file whose keypoints are named in another order: said as such, not as damage."""


def load_real2d(data_dir: Path | str | None = None) -> list[RealRecord]:
    """The records of `data_dir` (the folder holding keypoints.json and images/; default
    `default_data_root() / "real2d_fashion"`), one per annotated person, sorted by file name."""
    data_dir = Path(data_dir) if data_dir is not None else default_data_root() / REAL2D_DIR
    path = data_dir / "keypoints.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found (set POSECAST_DATA or pass the folder)")
    try:
        with open(path, encoding="utf-8") as f:
            coco = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    if not (data_dir / "images").is_dir():
        raise FileNotFoundError(f"{data_dir} has no images/ folder beside its keypoints.json")
    try:
        names = [n.lower().replace(" ", "_") for n in coco["categories"][0]["keypoints"]]
        if tuple(names) != COCO_NAMES:
            raise _WrongOrder(f"{path}: unexpected keypoint order {names}")
        images = {im["id"]: im for im in coco["images"]}
        records = []
        for ann in coco["annotations"]:
            if ann.get("iscrowd", 0):
                continue
            im = images[ann["image_id"]]
            kp = np.asarray(ann["keypoints"], np.float64).reshape(17, 3)
            joints, mask = coco_to_h36m(kp)
            if mask.sum() < 2:
                continue
            records.append(RealRecord(
                path=data_dir / "images" / str(im["file_name"]), joints_2d=joints, mask=mask,
                box_points=kp[kp[:, 2] > 0, :2].astype(np.float32),
                width=int(im.get("width") or 0), height=int(im.get("height") or 0),
            ))
    except _WrongOrder:
        raise
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
        # A JSON file of another kind, or a COCO file cut or edited wrong.
        raise ValueError(f"{path} is not a COCO keypoints file as expected ({type(exc).__name__}: {exc})") from None
    records.sort(key=lambda r: (r.path.name, float(r.joints_2d[0, 0])))
    return records


def split_real(records: list[RealRecord], val_fraction: float = 0.1, seed: int = 0
               ) -> tuple[list[RealRecord], list[RealRecord]]:
    """(train, val), split by image: a seeded permutation of the distinct image names; the
    result does not depend on the order of `records`. A held-out photo with a copy in the
    training part (`NEAR_DUPLICATES`) goes to the training part with it."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1) (got {val_fraction})")
    names = sorted({r.path.name for r in records})
    order = np.random.default_rng(seed).permutation(len(names))
    n_val = round(len(names) * val_fraction)
    val_names = {names[i] for i in order[:n_val]}
    present = set(names)
    for group in NEAR_DUPLICATES:
        members = set(group) & present
        if members - val_names:          # a copy trains: none of the group is held out
            val_names -= members
    ordered = sorted(records, key=lambda r: (r.path.name, float(r.joints_2d[0, 0])))
    train = [r for r in ordered if r.path.name not in val_names]
    val = [r for r in ordered if r.path.name in val_names]
    return train, val
