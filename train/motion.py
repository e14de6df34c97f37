"""The motion bank: 3D poses of real people moving, that drive the rendering of synthetic people.

Three sources, all mapped onto the H36M17 skeleton (`engines.skeleton.H36M17`, the one source of
truth for joint names and order) and into one world convention: metres, z up, right-handed.

* Human3.6M (`h36m_poses/h36m_train_poses_10hz.npz` in the shared data folder): 10 Hz poses of
  S1, S5, S6, S7, S8 and their 4 calibrated cameras each (`H36MCamera`).
* CMU walking clips (`cmu_walk_bvh/*.bvh`, 120 Hz): read by the small BVH parser and forward
  kinematics here, scaled to metres and turned from y up to z up.
* DeepMimic clips (`humanoid3d_*.txt`), shipped in the PyPI package `pybullet` (`pybullet_data`):
  read from the installed package or from a wheel / sdist / folder the user names; never stored in
  this repository. Absent, `load_deepmimic` returns None and logs why.

The shared data folder is read in place: `default_data_root()` is `$POSECAST_DATA` or
`../shared/datasets` beside the repository root.

Conventions, checked on the data (see tests/test_motion.py):

* H36M cameras map a world point X (metres here) to `R @ (X - T)`: x right, y down, z forward
  (det R = +1, the subject is at z > 0, heads project above feet); then `u = f * x / z + c` with
  the H36M radial (k1..k3) / tangential (p1, p2) distortion (`H36MCamera.project`). Image sizes:
  cameras 54138969 and 60457274 are 1000 wide x 1002 high, 55011271 and 58860488 1000 x 1000.
* BVH: each joint's rotation is the product of its rotation channels in the order they are
  listed (`Zrotation Yrotation Xrotation` -> Rz @ Ry @ Rx, degrees, column vectors); a joint sits
  at `parent_pos + parent_rot @ (offset + translation channels)`.
* y up -> z up: (x, y, z) -> (x, -z, y), a proper rotation (+90 degrees about x), so left stays left.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
import sys
import tarfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.skeleton import H36M17
from train.config import default_data_root

log = logging.getLogger(__name__)

H36M_FILE = "h36m_poses/h36m_train_poses_10hz.npz"
CMU_DIR = "cmu_walk_bvh"

# CMU mocap lengths are in units of 1/0.45 inch (the ASF "units: length 0.45"): the database's
# FAQ gives (1.0 / 0.45) * 2.54 / 100 = 0.056444 m.
CMU_UNIT_M = 0.0254 / 0.45

SOURCES = ("h36m", "cmu", "deepmimic")

# The default held-out (validation) part, as sequence-name prefixes (see `split`):
# * H36M: all of subject S8 (the usual protocol holds S9/S11 out; those are not in the set).
# * CMU: all clips of subject 07 (07_01 07_02 07_03 07_06 07_07 07_08 07_09 07_10 07_11: 9 of the
#   96 files, 9.4 %, 267 of 5021 poses as they are short): a whole subject number, so its
#   skeleton is not seen in training (the prefix "cmu/07_" does not match e.g. "cmu/107_01").
# * DeepMimic: `humanoid3d_run` (locomotion) and `humanoid3d_dance_b` (everything else).
HELD_OUT: tuple[str, ...] = (
    "h36m/S8/",
    "cmu/07_",
    "deepmimic/humanoid3d_run",
    "deepmimic/humanoid3d_dance_b",
)


# --------------------------------------------------------------------------------------------
# The bank


@dataclass(frozen=True, eq=False)
class MotionBank:
    """Poses of one or more sources, in H36M17 order, metres, world frame with z up."""

    joints: np.ndarray    # (N, 17, 3) float32
    sequence: np.ndarray  # (N,) str, e.g. "h36m/S1/Walking 1", "cmu/02_01", "deepmimic/humanoid3d_walk"
    source: np.ndarray    # (N,) str: "h36m" | "cmu" | "deepmimic"

    def __post_init__(self) -> None:
        joints = np.asarray(self.joints, np.float32)
        if joints.ndim != 3 or joints.shape[1:] != (H36M17.num_joints, 3):
            raise ValueError(f"joints must be (N, {H36M17.num_joints}, 3), got {joints.shape}")
        sequence = np.asarray(self.sequence, dtype=str).reshape(-1)
        source = np.asarray(self.source, dtype=str).reshape(-1)
        if not len(joints) == len(sequence) == len(source):
            raise ValueError("joints, sequence and source differ in length")
        object.__setattr__(self, "joints", joints)
        object.__setattr__(self, "sequence", sequence)
        object.__setattr__(self, "source", source)

    def __len__(self) -> int:
        return len(self.joints)

    def __repr__(self) -> str:
        counts = ", ".join(f"{s}: {n}" for s, n in self.counts().items())
        return f"MotionBank({len(self)} poses, {len(self.sequences())} sequences; {counts})"

    def select(self, mask: np.ndarray) -> MotionBank:
        """The poses where `mask` (a boolean array or indices) says so."""
        return MotionBank(self.joints[mask], self.sequence[mask], self.source[mask])

    def sequences(self) -> list[str]:
        """Sequence names in order of first appearance."""
        _, first = np.unique(self.sequence, return_index=True)
        return [str(self.sequence[i]) for i in sorted(first)]

    def counts(self) -> dict[str, int]:
        """Poses per source."""
        return {s: int((self.source == s).sum()) for s in SOURCES if (self.source == s).any()}

    @staticmethod
    def concat(banks: Iterable[MotionBank]) -> MotionBank:
        banks = list(banks)
        if not banks:
            return MotionBank(np.zeros((0, H36M17.num_joints, 3), np.float32), np.array([], str), np.array([], str))
        return MotionBank(
            np.concatenate([b.joints for b in banks]),
            np.concatenate([b.sequence for b in banks]),
            np.concatenate([b.source for b in banks]),
        )


def _bank(joints: np.ndarray, sequence: str, source: str) -> MotionBank:
    n = len(joints)
    return MotionBank(joints, np.full(n, sequence), np.full(n, source))


def split(bank: MotionBank, held_out: Sequence[str] = HELD_OUT) -> tuple[MotionBank, MotionBank]:
    """(train, val) by sequence: a pose is held out when its sequence name starts with one of the
    `held_out` prefixes (so whole sequences go one way or the other)."""
    prefixes = tuple(held_out)
    val = np.char.startswith(bank.sequence, prefixes[0]) if prefixes else np.zeros(len(bank), bool)
    for p in prefixes[1:]:
        val |= np.char.startswith(bank.sequence, p)
    return bank.select(~val), bank.select(val)


def bone_lengths(joints: np.ndarray) -> np.ndarray:
    """(..., 16) lengths of the H36M17 bones (in `H36M17.bones` order) of (..., 17, 3) poses."""
    parents, children = np.array(H36M17.bones).T
    return np.linalg.norm(joints[..., children, :] - joints[..., parents, :], axis=-1)


def bone_length_stats(bank: MotionBank) -> dict[str, dict[str, float]]:
    """Mean length (metres) of each H36M17 bone ("parent-child") per source, plus
    "height": the mean head_top z above the lower ankle, to compare the sources at a glance."""
    names = [f"{H36M17.joint_names[p]}-{H36M17.joint_names[c]}" for p, c in H36M17.bones]
    lengths = bone_lengths(bank.joints.astype(np.float64))
    top = H36M17.index("head_top")
    ankles = list(H36M17.indices(("r_ankle", "l_ankle")))
    height = bank.joints[:, top, 2] - bank.joints[:, ankles, 2].min(axis=1)
    out: dict[str, dict[str, float]] = {}
    for s in np.unique(bank.source):
        m = bank.source == s
        stats = {n: float(v) for n, v in zip(names, lengths[m].mean(axis=0))}
        stats["height"] = float(height[m].mean())
        out[str(s)] = stats
    return out


def format_bone_length_stats(stats: dict[str, dict[str, float]]) -> str:
    """A plain-text table of `bone_length_stats` (millimetres), one column per source."""
    sources = list(stats)
    rows = list(next(iter(stats.values()))) if stats else []
    width = max((len(r) for r in rows), default=4)
    lines = [" " * width + "".join(f"{s:>11}" for s in sources)]
    for r in rows:
        lines.append(f"{r:<{width}}" + "".join(f"{1000 * stats[s][r]:>9.0f}mm" for s in sources))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Rotations (numpy, vectorised)


def axis_rotation(axis: str, angle: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotations by `angle` (radians) about the x, y or z axis."""
    c, s = np.cos(angle), np.sin(angle)
    o, z = np.ones_like(angle), np.zeros_like(angle)
    rows = {
        "x": ((o, z, z), (z, c, -s), (z, s, c)),
        "y": ((c, z, s), (z, o, z), (-s, z, c)),
        "z": ((c, -s, z), (s, c, z), (z, z, o)),
    }[axis.lower()]
    return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotations of (..., 4) quaternions (w, x, y, z); normalised first."""
    q = np.asarray(q, np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


# y up -> z up: (x, y, z) -> (x, -z, y), +90 degrees about x.
Y_UP_TO_Z_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


def y_up_to_z_up(points: np.ndarray) -> np.ndarray:
    return points @ Y_UP_TO_Z_UP.T


# --------------------------------------------------------------------------------------------
# BVH


@dataclass(frozen=True, eq=False)
class BvhSkeleton:
    """A BVH hierarchy. End sites are joints too, named "<parent>_End", with no channels."""

    names: tuple[str, ...]
    parents: tuple[int, ...]                 # -1 for the root; parents precede children
    offsets: np.ndarray                      # (J, 3) in file units
    channels: tuple[tuple[str, ...], ...]    # per joint, e.g. ("Zrotation", "Yrotation", "Xrotation")

    @property
    def channel_start(self) -> np.ndarray:
        """Each joint's first column in a motion row."""
        return np.cumsum([0] + [len(c) for c in self.channels])[:-1]

    @property
    def num_channels(self) -> int:
        return sum(len(c) for c in self.channels)

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise ValueError(f"BVH has no joint '{name}' (it has: {', '.join(self.names)})") from None


@dataclass(frozen=True, eq=False)
class BvhClip:
    skeleton: BvhSkeleton
    motion: np.ndarray   # (F, C) channel values (degrees, file units), F after any frame_step
    frame_time: float    # seconds between the rows of `motion` (after any frame_step)


_CHANNELS = {"Xposition", "Yposition", "Zposition", "Xrotation", "Yrotation", "Zrotation"}


def parse_bvh(text: str, frame_step: int = 1) -> BvhClip:
    """Parse a BVH file's text; keep every `frame_step`-th frame from the first (only those rows
    are converted to numbers, which makes subsampling a long clip cheap)."""
    head, sep, body = text.partition("MOTION")
    if not sep:
        raise ValueError("BVH: no MOTION section")
    tokens = head.split()
    names: list[str] = []
    parents: list[int] = []
    offsets: list[list[float]] = []
    channels: list[tuple[str, ...]] = []
    stack: list[int] = []
    pending: int | None = None  # the joint whose "{" comes next
    i = 0
    while i < len(tokens):
        t = tokens[i]
        if t in ("ROOT", "JOINT"):
            names.append(tokens[i + 1])
            parents.append(stack[-1] if stack else -1)
            if t == "ROOT" and stack:
                raise ValueError("BVH: ROOT inside a joint")
            offsets.append([0.0, 0.0, 0.0])
            channels.append(())
            pending = len(names) - 1
            i += 2
        elif t == "End":
            if tokens[i + 1] != "Site" or not stack:
                raise ValueError("BVH: stray 'End'")
            names.append(f"{names[stack[-1]]}_End")
            parents.append(stack[-1])
            offsets.append([0.0, 0.0, 0.0])
            channels.append(())
            pending = len(names) - 1
            i += 2
        elif t == "{":
            if pending is None:
                raise ValueError("BVH: '{' without a joint")
            stack.append(pending)
            pending = None
            i += 1
        elif t == "}":
            stack.pop()
            i += 1
        elif t == "OFFSET":
            offsets[stack[-1]] = [float(v) for v in tokens[i + 1:i + 4]]
            i += 4
        elif t == "CHANNELS":
            n = int(tokens[i + 1])
            ch = tuple(tokens[i + 2:i + 2 + n])
            if not set(ch) <= _CHANNELS:
                raise ValueError(f"BVH: unknown channels {ch}")
            channels[stack[-1]] = ch
            i += 2 + n
        elif t == "HIERARCHY":
            i += 1
        else:
            raise ValueError(f"BVH: unexpected token '{t}'")
    if stack or not names:
        raise ValueError("BVH: unbalanced or empty hierarchy")
    skeleton = BvhSkeleton(tuple(names), tuple(parents), np.array(offsets, np.float64), tuple(channels))

    lines = body.strip().splitlines()
    frames = frame_time = None
    start = 0
    for start, line in enumerate(lines):
        key, _, value = line.partition(":")
        if key.strip() == "Frames":
            frames = int(value)
        elif key.strip() == "Frame Time":
            frame_time = float(value)
            start += 1
            break
    if frames is None or frame_time is None:
        raise ValueError("BVH: no 'Frames:' / 'Frame Time:' lines")
    rows = [r for r in lines[start:start + frames] if r.strip()][::frame_step]
    motion = np.array(" ".join(rows).split(), np.float64).reshape(len(rows), -1)
    if motion.shape[1] != skeleton.num_channels:
        raise ValueError(f"BVH: {motion.shape[1]} values a frame, the hierarchy has {skeleton.num_channels} channels")
    return BvhClip(skeleton, motion, frame_time * frame_step)


def bvh_forward_kinematics(skeleton: BvhSkeleton, motion: np.ndarray, return_rotations: bool = False):
    """(F, J, 3) world positions (file units and axes) of every joint, end sites included; with
    `return_rotations`, also the (F, J, 3, 3) world rotations of the joints' frames."""
    motion = np.asarray(motion, np.float64)
    n = len(motion)
    pos = np.zeros((n, len(skeleton.names), 3))
    rot = np.zeros((n, len(skeleton.names), 3, 3))
    for j, (parent, chans, col) in enumerate(zip(skeleton.parents, skeleton.channels, skeleton.channel_start)):
        local_t = np.broadcast_to(skeleton.offsets[j], (n, 3)).copy()
        local_r = np.broadcast_to(np.eye(3), (n, 3, 3))
        for k, ch in enumerate(chans):
            value = motion[:, col + k]
            axis = "xyz".index(ch[0].lower())
            if ch.endswith("position"):
                local_t[:, axis] += value
            else:
                local_r = local_r @ axis_rotation(ch[0], np.radians(value))
        if parent < 0:
            pos[:, j] = local_t
            rot[:, j] = local_r
        else:
            pos[:, j] = pos[:, parent] + np.einsum("nij,nj->ni", rot[:, parent], local_t)
            rot[:, j] = rot[:, parent] @ local_r
    return (pos, rot) if return_rotations else pos


# --------------------------------------------------------------------------------------------
# Human3.6M


@dataclass(frozen=True, eq=False)
class H36MCamera:
    """A calibrated H36M camera: world point X (metres, z up) -> `R @ (X - T)` in a camera frame
    with x right, y down, z forward -> pinhole `f * xy / z + c` with H36M's distortion."""

    subject: str
    name: str
    R: np.ndarray       # (3, 3) world -> camera rotation
    T: np.ndarray       # (3,) camera centre, world metres
    f: np.ndarray       # (2,) focal lengths, pixels
    c: np.ndarray       # (2,) principal point, pixels
    k: np.ndarray       # (3,) radial distortion
    p: np.ndarray       # (2,) tangential distortion
    width: int = 1000
    height: int = 1000  # 1002 for cameras 54138969 and 60457274

    def world_to_camera(self, points: np.ndarray) -> np.ndarray:
        """(..., 3) world metres -> (..., 3) camera frame metres."""
        return (np.asarray(points, np.float64) - self.T) @ self.R.T

    def project(self, points: np.ndarray, distort: bool = True) -> np.ndarray:
        """(..., 3) world metres -> (..., 2) pixels (H36M's `project_point_radial`)."""
        cam = self.world_to_camera(points)
        xy = cam[..., :2] / cam[..., 2:3]
        if distort:
            r2 = (xy ** 2).sum(-1, keepdims=True)
            radial = 1 + self.k[0] * r2 + self.k[1] * r2 ** 2 + self.k[2] * r2 ** 3
            tan = self.p[0] * xy[..., 1:2] + self.p[1] * xy[..., 0:1]
            xy = xy * (radial + tan) + r2 * self.p[::-1]
        return self.f * xy + self.c


# Image sizes (width, height) of the four H36M cameras (the dataset's video metadata).
H36M_IMAGE_SIZE = {"54138969": (1000, 1002), "55011271": (1000, 1000),
                   "58860488": (1000, 1000), "60457274": (1000, 1002)}


def load_h36m(data_dir: str | Path | None = None) -> tuple[MotionBank, list[H36MCamera]]:
    """The H36M poses (10 Hz) as a bank ("h36m/<subject>/<action>") and the 20 cameras."""
    path = Path(data_dir or default_data_root()) / H36M_FILE
    if not path.is_file():
        raise FileNotFoundError(f"the Human3.6M poses are not at {path}: give --data the datasets folder (the one "
                                f"holding h36m_poses/ and cmu_walk_bvh/), or set POSECAST_DATA to it")
    with np.load(path) as d:
        names = tuple(str(n) for n in d["h36m17_names"])
        if names != H36M17.joint_names:
            raise ValueError(f"{path}: h36m17_names {names} differ from H36M17 {H36M17.joint_names}")
        joints = d["joints_world_mm"][:, d["h36m17_index"]] / np.float32(1000.0)
        sequence = np.char.add(np.char.add(np.char.add("h36m/", d["subject"]), "/"), d["action"])
        cameras = [
            H36MCamera(
                subject=str(s), name=str(n), R=np.asarray(R, np.float64), T=np.asarray(T, np.float64) / 1000.0,
                f=np.asarray(f, np.float64), c=np.asarray(c, np.float64), k=np.asarray(k, np.float64),
                p=np.asarray(p, np.float64), width=H36M_IMAGE_SIZE.get(str(n), (1000, 1000))[0],
                height=H36M_IMAGE_SIZE.get(str(n), (1000, 1000))[1],
            )
            for s, n, R, T, f, c, k, p in zip(d["camera_subject"], d["camera_camera"], d["camera_R"], d["camera_T"],
                                              d["camera_f"], d["camera_c"], d["camera_k"], d["camera_p"])
        ]
    return MotionBank(joints, sequence, np.full(len(joints), "h36m")), cameras


# --------------------------------------------------------------------------------------------
# CMU (BVH)

# H36M17 joint -> CMU BVH joint, or ("lerp", a, b, t): the point a + t * (b - a), or
# ("local", joint, (x, y, z)): a point fixed in the joint's frame (file units; +z is forward, +y
# up in the BVH rest pose). Chosen by comparing with H36M's skeleton in a torso frame (H36M
# walking: spine halfway up pelvis -> thorax; thorax ~5 cm above the shoulders; neck_nose ~8 cm
# above and ~8 cm in front of the thorax; head_top ~18 cm above it):
# * pelvis: the midpoint of the hips, as in H36M (the CMU root sits ~10 cm above the hip joints).
# * spine = Chest (halfway up hips -> Neck); thorax = Neck (3 cm above the shoulders; Chest2,
#   where the collar bones start, is 6 cm below them).
# * neck_nose = Head (the top of the neck, 9 cm above Neck) moved forward in the head's frame to
#   H36M's chin / nose position; head_top = the Head end site (19 cm above Neck).
# * wrists: these BVH files drop the ASF "wrist" bone (the distal forearm: `lhand` sits at
#   `LeftWrist` with a zero offset), so `LeftWrist` is only ~2/3 down the forearm (18 cm from the
#   elbow against H36M's 25 cm). The wrist is extended along the forearm line by 1.4x, which gives
#   H36M's forearm / upper-arm ratio (0.89) and about the ASF's radius + wrist length (1.5x).
CMU_TO_H36M17: dict[str, str | tuple] = {
    "pelvis": ("lerp", "LeftHip", "RightHip", 0.5),
    "r_hip": "RightHip", "r_knee": "RightKnee", "r_ankle": "RightAnkle",
    "l_hip": "LeftHip", "l_knee": "LeftKnee", "l_ankle": "LeftAnkle",
    "spine": "Chest",
    "thorax": "Neck",
    "neck_nose": ("local", "Head", (0.0, 0.0, 1.4)),
    "head_top": "Head_End",
    "l_shoulder": "LeftShoulder", "l_elbow": "LeftElbow", "l_wrist": ("lerp", "LeftElbow", "LeftWrist", 1.4),
    "r_shoulder": "RightShoulder", "r_elbow": "RightElbow", "r_wrist": ("lerp", "RightElbow", "RightWrist", 1.4),
}


def map_joints(positions: np.ndarray, rotations: np.ndarray | None, names: Sequence[str], table: dict) -> np.ndarray:
    """(F, 17, 3) H36M17 joints of (F, J, 3) `positions` (and (F, J, 3, 3) `rotations`, needed by
    "local" entries) of the joints `names`, by a mapping table like `CMU_TO_H36M17`."""
    index = {n: i for i, n in enumerate(names)}
    out = np.empty((len(positions), H36M17.num_joints, 3), positions.dtype)
    for j, name in enumerate(H36M17.joint_names):
        spec = table[name]
        if isinstance(spec, str):
            out[:, j] = positions[:, index[spec]]
        elif spec[0] == "lerp":
            _, a, b, t = spec
            out[:, j] = (1 - t) * positions[:, index[a]] + t * positions[:, index[b]]
        elif spec[0] == "local":
            _, a, xyz = spec
            out[:, j] = positions[:, index[a]] + rotations[:, index[a]] @ np.asarray(xyz, np.float64)
        else:
            raise ValueError(f"bad mapping entry for {name}: {spec}")
    return out


def cmu_clip_to_h36m17(clip: BvhClip) -> np.ndarray:
    """(F, 17, 3) metres, z up, of a CMU BVH clip."""
    pos, rot = bvh_forward_kinematics(clip.skeleton, clip.motion, return_rotations=True)
    joints = map_joints(pos, rot, clip.skeleton.names, CMU_TO_H36M17) * CMU_UNIT_M
    return y_up_to_z_up(joints).astype(np.float32)


def load_cmu(data_dir: str | Path | None = None, hz: float = 10.0) -> MotionBank:
    """The CMU walking clips at about `hz` (every round(120 / hz)-th frame): "cmu/<clip>"."""
    files = sorted(glob.glob(str(Path(data_dir or default_data_root()) / CMU_DIR / "*.bvh")))
    if not files:
        raise FileNotFoundError(f"no BVH files in {Path(data_dir or default_data_root()) / CMU_DIR}: give --data the "
                                f"datasets folder, or set POSECAST_DATA to it")
    banks = []
    for f in files:
        text = Path(f).read_text()
        m = re.search(r"Frame Time:\s*([0-9.eE+-]+)", text)
        step = max(1, round(1.0 / (float(m.group(1)) * hz))) if m else 1
        clip = parse_bvh(text, step)
        banks.append(_bank(cmu_clip_to_h36m17(clip), f"cmu/{Path(f).stem}", "cmu"))
    return MotionBank.concat(banks)


# --------------------------------------------------------------------------------------------
# DeepMimic (pybullet_data)

# The DeepMimic humanoid (pybullet_data/humanoid/humanoid.urdf, loaded with globalScaling=0.25 by
# pybullet's deep_mimic env): y up, facing +x, right side +z. Joint origins in the parent's frame,
# metres (URDF value x 0.25). Knees and elbows are revolute about z; the rest spherical.
DEEPMIMIC_SCALE = 0.25
_DM_URDF_OFFSETS = {  # child: (parent, URDF xyz)
    "chest": ("root", (0.0, 0.944604, 0.0)),
    "neck": ("chest", (0.0, 0.895576, 0.0)),
    "right_hip": ("root", (0.0, 0.0, 0.339548)),
    "right_knee": ("right_hip", (0.0, -1.686184, 0.0)),
    "right_ankle": ("right_knee", (0.0, -1.639480, 0.0)),
    "right_shoulder": ("chest", (-0.096200, 0.974000, 0.732440)),
    "right_elbow": ("right_shoulder", (0.0, -1.099152, 0.0)),
    "right_wrist": ("right_elbow", (0.0, -1.035788, 0.0)),
    "left_hip": ("root", (0.0, 0.0, -0.339548)),
    "left_knee": ("left_hip", (0.0, -1.686184, 0.0)),
    "left_ankle": ("left_knee", (0.0, -1.639480, 0.0)),
    "left_shoulder": ("chest", (-0.096200, 0.974000, -0.732440)),
    "left_elbow": ("left_shoulder", (0.0, -1.099152, 0.0)),
    "left_wrist": ("left_elbow", (0.0, -1.035788, 0.0)),
}
# A motion frame (pybullet_envs/deep_mimic/env/humanoid_pose_interpolator.py): duration, root
# position (3), then per joint a quaternion (w, x, y, z) or, for knees and elbows, one angle.
DEEPMIMIC_LAYOUT = (
    ("root", 4), ("chest", 4), ("neck", 4), ("right_hip", 4), ("right_knee", 1), ("right_ankle", 4),
    ("right_shoulder", 4), ("right_elbow", 1), ("left_hip", 4), ("left_knee", 1), ("left_ankle", 4),
    ("left_shoulder", 4), ("left_elbow", 1),
)
DEEPMIMIC_FRAME_SIZE = 4 + sum(n for _, n in DEEPMIMIC_LAYOUT)  # 44
# Points with no joint, fixed in a link's frame (metres; x forward, y up), placed like H36M's
# (compared in a torso frame): the neck joint sits 2 cm *above* the shoulders where H36M's thorax
# is 5 cm above them, so thorax is 4.5 cm above the neck joint (in the chest's frame). The head
# sphere is centred 0.175 m above the neck joint, radius 0.1025: neck_nose at the chin / nose
# (12 cm up, 6 cm forward), head_top 11 cm above that and a little behind (H36M's head_top is
# not the crown either).
_DM_POINTS = {
    "thorax": ("chest", (0.0, DEEPMIMIC_SCALE * 0.895576 + 0.045, 0.0)),
    "neck_nose": ("neck", (0.06, 0.12, 0.0)),
    "head_top": ("neck", (0.02, 0.235, 0.0)),
}
DEEPMIMIC_TO_H36M17 = {
    "pelvis": "root", "r_hip": "right_hip", "r_knee": "right_knee", "r_ankle": "right_ankle",
    "l_hip": "left_hip", "l_knee": "left_knee", "l_ankle": "left_ankle",
    "spine": "chest", "thorax": "thorax", "neck_nose": "neck_nose", "head_top": "head_top",
    "l_shoulder": "left_shoulder", "l_elbow": "left_elbow", "l_wrist": "left_wrist",
    "r_shoulder": "right_shoulder", "r_elbow": "right_elbow", "r_wrist": "right_wrist",
}


def deepmimic_forward_kinematics(frames: np.ndarray) -> dict[str, np.ndarray]:
    """Joint positions, (F, 3) each, metres, y up, of (F, 44) DeepMimic motion frames."""
    frames = np.asarray(frames, np.float64)
    if frames.ndim != 2 or frames.shape[1] != DEEPMIMIC_FRAME_SIZE:
        raise ValueError(f"DeepMimic frames must be (F, {DEEPMIMIC_FRAME_SIZE}), got {frames.shape}")
    local: dict[str, np.ndarray] = {}
    col = 4
    for name, size in DEEPMIMIC_LAYOUT:
        v = frames[:, col:col + size]
        local[name] = quat_to_matrix(v) if size == 4 else axis_rotation("z", v[:, 0])
        col += size
    pos = {"root": frames[:, 1:4]}
    rot = {"root": local["root"]}
    for child, (parent, xyz) in _DM_URDF_OFFSETS.items():
        offset = DEEPMIMIC_SCALE * np.asarray(xyz)
        pos[child] = pos[parent] + rot[parent] @ offset
        rot[child] = rot[parent] @ local[child] if child in local else rot[parent]
    for name, (link, xyz) in _DM_POINTS.items():
        pos[name] = pos[link] + rot[link] @ np.asarray(xyz)
    return pos


def deepmimic_to_h36m17(frames: np.ndarray) -> np.ndarray:
    """(F, 17, 3) metres, z up, of (F, 44) DeepMimic frames."""
    pos = deepmimic_forward_kinematics(frames)
    out = np.stack([pos[DEEPMIMIC_TO_H36M17[n]] for n in H36M17.joint_names], axis=1)
    return y_up_to_z_up(out).astype(np.float32)


def deepmimic_source(source: str | Path | None = None) -> tuple[Path | None, str]:
    """Where the DeepMimic files are: `source`, else `$POSECAST_DEEPMIMIC`, else the installed
    `pybullet_data` folder; (None, why not) when there is none."""
    if source is None:
        source = os.environ.get("POSECAST_DEEPMIMIC") or None
    if source is None:
        try:
            import pybullet_data  # type: ignore[import-not-found]
        except ImportError:
            return None, ("pybullet is not installed (pip install pybullet) and no source was given "
                          "(load_deepmimic(source=...) or $POSECAST_DEEPMIMIC: a pybullet wheel, sdist or folder)")
        source = pybullet_data.getDataPath()
    source = Path(source)
    if not source.exists():
        return None, f"{source} does not exist"
    return source, str(source)


def read_archive_texts(source: str | Path, pattern: str) -> dict[str, str]:
    """{first group of `pattern`: text} of the files in a folder, zip / wheel or tar(.gz) archive
    whose path (with "/") matches the regular expression `pattern` (searched, not anchored)."""
    source = Path(source)
    regex = re.compile(pattern)
    texts: dict[str, str] = {}
    if source.is_dir():
        for f in sorted(source.rglob("*")):
            m = regex.search(f.relative_to(source).as_posix())
            if m and f.is_file():
                texts.setdefault(m.group(1), f.read_text())
    elif zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as z:
            for name in sorted(z.namelist()):
                m = regex.search(name)
                if m:
                    texts.setdefault(m.group(1), z.read(name).decode())
    elif tarfile.is_tarfile(source):
        with tarfile.open(source) as t:
            for member in t:
                m = regex.search(member.name)
                if m and member.isfile():
                    texts.setdefault(m.group(1), t.extractfile(member).read().decode())
    else:
        raise ValueError(f"{source}: not a folder, zip / wheel or tar archive")
    return dict(sorted(texts.items()))


DEEPMIMIC_MOTION_PATTERN = r"(?:^|/)motions/(humanoid3d_\w+)\.txt$"


def resample_times(durations: np.ndarray, hz: float) -> np.ndarray:
    """Indices of the frames nearest to times 0, 1/hz, 2/hz, ... of frames lasting `durations`."""
    starts = np.concatenate([[0.0], np.cumsum(durations[:-1])])
    times = np.arange(0.0, starts[-1] + 1e-9, 1.0 / hz)
    return np.unique(np.abs(starts[None, :] - times[:, None]).argmin(axis=1))


def load_deepmimic(hz: float = 10.0, source: str | Path | None = None) -> MotionBank | None:
    """The DeepMimic humanoid3d clips at `hz` ("deepmimic/<clip>"), from `source` (a pybullet
    wheel / sdist / folder), else `$POSECAST_DEEPMIMIC`, else the installed `pybullet_data`.
    None (with the reason logged as a warning) when none of those has them."""
    path, where = deepmimic_source(source)
    texts = read_archive_texts(path, DEEPMIMIC_MOTION_PATTERN) if path is not None else {}
    if path is not None and not texts:
        where = f"{path}: no motions/humanoid3d_*.txt in it"
    if not texts:
        log.warning("DeepMimic motions unavailable: %s", where)
        return None
    banks = []
    for name, text in texts.items():
        frames = np.asarray(json.loads(text)["Frames"], np.float64)
        frames = frames[resample_times(frames[:, 0], hz)]
        banks.append(_bank(deepmimic_to_h36m17(frames), f"deepmimic/{name}", "deepmimic"))
    log.info("DeepMimic: %d clips from %s", len(banks), where)
    return MotionBank.concat(banks)


# --------------------------------------------------------------------------------------------


def load_all(data_dir: str | Path | None = None, hz: float = 10.0,
             deepmimic_source: str | Path | None = None) -> tuple[MotionBank, list[H36MCamera]]:
    """H36M + CMU (+ DeepMimic when available) in one bank, and the H36M cameras (read once)."""
    h36m, cameras = load_h36m(data_dir)
    banks = [h36m, load_cmu(data_dir, hz)]
    dm = load_deepmimic(hz, deepmimic_source)
    if dm is not None:
        banks.append(dm)
    return MotionBank.concat(banks), cameras


# --------------------------------------------------------------------------------------------
# Motion packs: the loaded bank and cameras in one file, for a machine without the datasets

PACK_FORMAT = 2          # 2: joints stored by `_pack_joints`; 1 (still read): joints as they are
_CAMERA_FIELDS = ("R", "T", "f", "c", "k", "p")


def _pack_joints(joints: np.ndarray) -> np.ndarray:
    """(N, J, 3) float32 -> (4, N * J * 3) uint8, losslessly: each pose's bit patterns minus the
    previous pose's (motion moves little from frame to frame), then the bytes grouped by their
    place in the number. Deflate then packs the poses into a fifth less, which keeps a GPU
    machine's carried pack under the device call's limit."""
    joints = np.ascontiguousarray(joints, np.float32)
    bits = joints.view(np.int32).reshape(joints.shape[0], int(np.prod(joints.shape[1:])))
    steps = np.diff(bits, axis=0, prepend=np.zeros((1, bits.shape[1]), np.int32))   # wraps, as it must
    return np.ascontiguousarray(steps.reshape(-1).view(np.uint8).reshape(-1, 4).T)


def _unpack_joints(packed: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    steps = np.ascontiguousarray(packed.T).view(np.int32).reshape(shape[0], int(np.prod(shape[1:])))
    bits = np.cumsum(steps, axis=0, dtype=np.int64).astype(np.int32)      # modulo 2**32, as diff wrapped
    return bits.view(np.float32).reshape(shape)


def save_pack(path: str | Path, bank: MotionBank, cameras: Sequence[H36MCamera]) -> None:
    """Write the bank and cameras to one compressed npz (no pickles), atomically. A GPU machine
    that cannot hold the datasets folder (and has no pybullet for DeepMimic) renders from it with
    `python -m train.synth.generate --motions PACK`."""
    import io

    from engines.model_file import atomic_write_bytes

    arrays: dict[str, np.ndarray] = {
        "format": np.array(PACK_FORMAT), "joints_packed": _pack_joints(bank.joints),
        "joints_shape": np.array(bank.joints.shape, np.int64), "sequence": bank.sequence, "source": bank.source,
        "camera_subject": np.array([c.subject for c in cameras], dtype=str),
        "camera_name": np.array([c.name for c in cameras], dtype=str),
        "camera_size": np.array([(c.width, c.height) for c in cameras], np.int64).reshape(-1, 2),
    }
    for name in _CAMERA_FIELDS:
        arrays[f"camera_{name}"] = np.array([getattr(c, name) for c in cameras], np.float64)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(Path(path), buf.getvalue())


def load_pack(path: str | Path) -> tuple[MotionBank, list[H36MCamera]]:
    """A file from `save_pack` -> (bank, cameras), equal to what `load_all` gave when it was written."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as d:
            version = int(d["format"])
            if version not in (1, PACK_FORMAT):
                raise _OtherFormat(version)
            joints = (d["joints"] if version == 1 else
                      _unpack_joints(d["joints_packed"], tuple(int(n) for n in d["joints_shape"])))
            bank = MotionBank(joints, d["sequence"], d["source"])
            cameras = [
                H36MCamera(subject=str(s), name=str(n), width=int(size[0]), height=int(size[1]),
                           **{f: np.asarray(d[f"camera_{f}"][i], np.float64) for f in _CAMERA_FIELDS})
                for i, (s, n, size) in enumerate(zip(d["camera_subject"], d["camera_name"], d["camera_size"]))
            ]
    except _OtherFormat as exc:
        raise ValueError(f"{path}: motion pack format {exc.version}, this Posecast reads 1 and {PACK_FORMAT}; "
                         "write it again with python -m train.motion --pack") from None
    except (KeyError, ValueError, TypeError, zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"{path}: not a motion pack ({exc}); write one with python -m train.motion --pack") from None
    return bank, cameras


class _OtherFormat(Exception):
    def __init__(self, version: int) -> None:
        super().__init__(version)
        self.version = version


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m train.motion [DATA_DIR] [--deepmimic SOURCE] [--pack OUT.npz]`: counts, split and bone
    lengths; with --pack, also the loaded motions and cameras in one file (`save_pack`). A missing
    or broken dataset, or a pack that cannot be written, is one error line and exit code 2."""
    from engines.arguments import OneLineParser
    import time

    ap = OneLineParser(prog="python -m train.motion", description=main.__doc__)
    ap.add_argument("data_dir", nargs="?", default=None)
    # As the other training tools name it (and as the messages of load_all say).
    ap.add_argument("--data", dest="data_opt", default=None, metavar="DIR", help="the datasets folder (or DATA_DIR)")
    ap.add_argument("--deepmimic", default=None, help="a pybullet wheel / sdist / folder")
    ap.add_argument("--pack", type=Path, default=None, metavar="OUT",
                    help="also write the motions and cameras to this .npz (for generate --motions)")
    args = ap.parse_args(argv)
    if args.data_dir is not None and args.data_opt is not None and args.data_dir != args.data_opt:
        ap.error("give the datasets folder once (DATA_DIR or --data)")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    t0 = time.perf_counter()
    try:
        bank, cameras = load_all(args.data_dir or args.data_opt, deepmimic_source=args.deepmimic)
    except (OSError, ValueError, KeyError) as exc:
        print(f"python -m train.motion: error: {exc} (or set POSECAST_DATA)", file=sys.stderr)
        return 2
    print(f"{bank} loaded in {time.perf_counter() - t0:.1f} s")
    if args.pack is not None:
        try:
            save_pack(args.pack, bank, cameras)
        except OSError as exc:
            print(f"python -m train.motion: error: cannot write the pack {args.pack}: {exc.strerror or exc}",
                  file=sys.stderr)
            return 2
        print(f"motion pack: {args.pack} ({args.pack.stat().st_size / 1e6:.1f} MB)")
    train, val = split(bank)
    print(f"train: {train}\nval:   {val}")
    print(format_bone_length_stats(bone_length_stats(bank)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
