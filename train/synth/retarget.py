"""Pose a body with motion-capture joints: directions from the motion, lengths from the body.

Every bone of the 17-joint skeleton keeps the body's own length and takes the motion's direction,
so the labels are the body's joints and the mesh follows them. Each rigid part of the mesh
(`body.PARTS`) gets a rotation about its proximal joint: the pelvis and the chest take full frames
(from the hip and shoulder axes and the spine), the abdomen the frame halfway between them, and
every limb, the neck and the head the smallest rotation that turns its bone, as carried by its
parent, onto the target direction (twist follows the parent: Human3.6M's 17 joints do not say it).
A head turn (`head_turn`) twists the neck and the head about their own bones, half each: people
look over their shoulders, and no joint moves, since each part's pivot and child lie on its axis.
The mesh is then linear-blend skinned with the parts' merged weights.
"""

from __future__ import annotations

import numpy as np

from engines.skeleton import H36M17
from train.synth.body import PARTS

_J = H36M17.index
# part -> (pivot joint, child joint whose direction it follows, parent part); None for frames.
_CHAINS: dict[str, tuple[str, str, str]] = {
    "neck": ("thorax", "neck_nose", "chest"),
    "head": ("neck_nose", "head_top", "neck"),
    "l_thigh": ("l_hip", "l_knee", "pelvis"),
    "l_shin": ("l_knee", "l_ankle", "l_thigh"),
    "r_thigh": ("r_hip", "r_knee", "pelvis"),
    "r_shin": ("r_knee", "r_ankle", "r_thigh"),
    "l_upper_arm": ("l_shoulder", "l_elbow", "chest"),
    "l_forearm": ("l_elbow", "l_wrist", "l_upper_arm"),
    "r_upper_arm": ("r_shoulder", "r_elbow", "chest"),
    "r_forearm": ("r_elbow", "r_wrist", "r_upper_arm"),
}
_PIVOT = {"pelvis": "pelvis", "abdomen": "spine", "chest": "thorax", **{k: v[0] for k, v in _CHAINS.items()}}


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-9)


def _frame(lateral: np.ndarray, up: np.ndarray) -> np.ndarray:
    """Orthonormal columns (lateral, forward, up) with `up` kept exactly."""
    z = _unit(up)
    x = _unit(lateral - np.dot(lateral, z) * z)
    return np.stack([x, np.cross(z, x), z], axis=1)


def swing(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotation taking direction a onto direction b."""
    a, b = _unit(a), _unit(b)
    v = np.cross(a, b)
    c = float(np.dot(a, b))
    if c < -0.999999:
        axis = _unit(np.cross(a, [1.0, 0.0, 0.0] if abs(a[0]) < 0.9 else [0.0, 1.0, 0.0]))
        return 2.0 * np.outer(axis, axis) - np.eye(3)
    k = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + k + k @ k / (1.0 + c)


def retarget_joints(rest: np.ndarray, motion: np.ndarray) -> np.ndarray:
    """(17,3) joints with the body's bone lengths (from `rest`) along the motion's bone directions,
    the pelvis where the motion's is."""
    return retarget_joints_batch(np.asarray(rest)[None], np.asarray(motion)[None])[0]


def retarget_joints_batch(rest: np.ndarray, motion: np.ndarray) -> np.ndarray:
    """`retarget_joints` for (N, 17, 3) rest joints and motion poses at once (the lifter's
    pretraining draws millions)."""
    out = np.zeros(np.broadcast_shapes(np.shape(rest), np.shape(motion)), dtype=np.float64)
    out[:, 0] = motion[:, 0]
    for child, parent in enumerate(H36M17.parents):
        if parent < 0:
            continue
        length = np.linalg.norm(rest[:, child] - rest[:, parent], axis=-1, keepdims=True)
        d = motion[:, child] - motion[:, parent]
        out[:, child] = out[:, parent] + length * d / np.maximum(np.linalg.norm(d, axis=-1, keepdims=True), 1e-9)
    return out


def twist(axis: np.ndarray, angle: float) -> np.ndarray:
    """The rotation by `angle` (radians, right-handed) about direction `axis`."""
    a = _unit(axis)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1.0 - np.cos(angle)) * k @ k


def part_transforms(rest: np.ndarray, posed: np.ndarray, head_turn: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Per part: rotation (P,3,3) and translation (P,3) with posed = R @ rest + t for its vertices;
    `head_turn` (radians) turns the head about the neck, towards the person's left when positive."""
    rot: dict[str, np.ndarray] = {}

    def torso_frame(j: np.ndarray, top: str, bottom: str, left: str, right: str) -> np.ndarray:
        return _frame(j[_J(left)] - j[_J(right)], j[_J(top)] - j[_J(bottom)])

    for part, joints in (("pelvis", ("spine", "pelvis", "l_hip", "r_hip")),
                         ("chest", ("thorax", "spine", "l_shoulder", "r_shoulder"))):
        rot[part] = torso_frame(posed, *joints) @ torso_frame(rest, *joints).T
    # The abdomen: halfway between the pelvis and the chest (the rotation's square root, via
    # its axis-angle form).
    rel = rot["chest"] @ rot["pelvis"].T
    angle = np.arccos(np.clip((np.trace(rel) - 1.0) / 2.0, -1.0, 1.0))
    if angle < 1e-6:
        half = np.eye(3)
    else:
        half = twist(np.array([rel[2, 1] - rel[1, 2], rel[0, 2] - rel[2, 0], rel[1, 0] - rel[0, 1]]), angle / 2)
    rot["abdomen"] = half @ rot["pelvis"]
    for part, (pivot, child, parent) in _CHAINS.items():
        carried = rot[parent] @ (rest[_J(child)] - rest[_J(pivot)])
        bone = posed[_J(child)] - posed[_J(pivot)]
        rot[part] = swing(carried, bone) @ rot[parent]
        if head_turn and part in ("neck", "head"):
            # Up the bone (z up), a positive twist turns the face (-y) towards the left (+x).
            rot[part] = twist(bone, head_turn / 2) @ rot[part]
    rs = np.stack([rot[p] for p in PARTS])
    pivots_rest = np.stack([rest[_J(_PIVOT[p])] for p in PARTS])
    pivots_posed = np.stack([posed[_J(_PIVOT[p])] for p in PARTS])
    ts = pivots_posed - np.einsum("pij,pj->pi", rs, pivots_rest)
    return rs.astype(np.float32), ts.astype(np.float32)


def skin(vertices: np.ndarray, weights: np.ndarray, rs: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Linear blend skinning: (V,3) rest vertices -> posed, with (V,P) weights."""
    # Blend the transforms, not the transformed copies: one (V,P)x(P,12) product.
    blended = weights @ np.concatenate([rs.reshape(-1, 9), ts], axis=1)      # (V, 12)
    m = blended[:, :9].reshape(-1, 3, 3)
    return (m @ vertices[:, :, None])[:, :, 0] + blended[:, 9:]


def pose_body(rest_vertices: np.ndarray, rest_joints: np.ndarray, weights: np.ndarray,
              motion_joints: np.ndarray, head_turn: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(posed vertices (V,3), posed joints (17,3)) for one body and one motion pose (both metres,
    z up), the head turned by `head_turn` radians (part_transforms)."""
    posed = retarget_joints(rest_joints.astype(np.float64), motion_joints.astype(np.float64))
    rs, ts = part_transforms(rest_joints.astype(np.float64), posed, head_turn)
    return skin(rest_vertices, weights, rs, ts).astype(np.float32), posed.astype(np.float32)
