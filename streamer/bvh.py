"""BVH track files: the tracked person's motion as an animated skeleton for animation tools.

A `.bvh` track holds one skeleton, the H36M17 joints with their bone lengths (the median over the
frames where the person was found), and one motion row per input frame: the pelvis's position and
every joint's rotation. Blender, MotionBuilder, Maya and most game engines' importers read it.

Conventions (the common ones of BVH files, e.g. the CMU motion-capture library's):
* Y up, right-handed, centimetres. The camera is at the origin looking down -Z, so a person
  facing the camera faces +Z; their left is +X. (In camera axes, x right, y down, z forward:
  BVH = 100 * (x, -y, -z), a rotation, so left stays left.) In Blender, import with Scale 0.01
  for metres.
* The rest pose is a T-pose: legs straight down, spine straight up, arms out along X. Link
  joints (no offset) stand where the pelvis and the thorax branch, one per branch, as
  motion-capture rigs' hip and collar joints do; the branches keep the person's median shape
  there, and the head its median tilt.
* Rotation channels in degrees, `Zrotation Yrotation Xrotation` (Rz @ Ry @ Rx) for the hips and
  knees and `Zrotation Xrotation Yrotation` for the other joints, so that no joint's usual
  bending lands on the middle angle. Angles are made continuous over time (an Euler filter, as
  animation tools have), so no channel jumps by a half or whole turn.
* The pelvis's position: where the person was in the first frame they were found is the origin
  on the ground, the pelvis at the legs' height above it; after that it follows `root_3d` (the
  person's place in the camera frame). A model without `root_3d` keeps the pelvis there.
* Frames with nobody found, and frames a live source left out (gaps in `seq`), hold the last
  pose (the first one, before the person is first found), so row i is frame i at 1/fps seconds
  (1/30 s where the source has no frame rate, e.g. an image folder).

Each joint's rotation comes from the bones around it: the pelvis and the thorax from all their
branches at once (least squares, Kabsch); the hips and shoulders from the bone and the plane the
knee or elbow bends in (so that the knee and elbow turn about one axis, as hinges), blending into
the frame before's twist where the limb is nearly straight; the others from the smallest turn
from the parent. A BVH skeleton is rigid: where the network's bone lengths vary from frame to
frame, the joints land where the median bone lengths put them. docs/bvh.md has the measurements.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from engines.errors import InputError
from engines.files import replaced_when_done
from engines.skeleton import H36M17, Skeleton
from streamer.axes import axes_spec
from streamer.protocol import PoseFrame
from streamer.tracks import TrackWriter, track_write_error

DEFAULT_FRAME_TIME_S = 1.0 / 30.0
CAMERA_TO_BVH = np.diag([100.0, -100.0, -100.0])    # camera metres -> BVH centimetres, Y up
MAX_HELD_ROWS = 108_000     # the most rows one gap in `seq` is held for: an hour at 30 fps
STRAIGHT_LIMB_DEG = 20.0     # a knee or elbow bent less takes its hinge axis partly from the frame before

_LEFT, _RIGHT, _UP, _DOWN = (1.0, 0.0, 0.0), (-1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, -1.0, 0.0)
_FORWARD, _BACK = (0.0, 0.0, 1.0), (0.0, 0.0, -1.0)


def rest_direction(name: str) -> tuple[float, float, float]:
    """The T-pose direction of the bone from `name`'s parent to `name` (person facing +Z)."""
    if name.endswith(("hip", "shoulder", "elbow", "wrist")):
        return _LEFT if name.startswith("l_") else _RIGHT
    if name.endswith(("knee", "ankle")):
        return _DOWN
    return _UP


def bend_direction(name: str) -> tuple[float, float, float] | None:
    """Where the bone below a hinge joint swings when the hinge bends: a knee's shin goes back, an
    elbow's forearm forward. None for the joints that are not hinges."""
    if name.endswith("knee"):
        return _BACK
    if name.endswith("elbow"):
        return _FORWARD
    return None


# A joint with several children turns them all together; a BVH rig gives each child a joint of its
# own there (motion-capture rigs' collar and hip joints), so that a shrug, a nod or a bend of the
# back moves only its own bone.
LINK_NAMES = {"r_hip": "r_pelvis", "l_hip": "l_pelvis", "spine": "lower_back",
              "neck_nose": "neck", "l_shoulder": "l_clavicle", "r_shoulder": "r_clavicle"}


def bvh_rig(skeleton: Skeleton) -> tuple[Skeleton, tuple[int, ...]]:
    """The BVH's joints: `skeleton`'s, with a link joint (no offset, at the parent's place)
    before each child of a joint with several; and for each, the `skeleton` joint it stands at."""
    names: list[str] = []
    parents: list[int] = []
    source: list[int] = []
    new_index: dict[int, int] = {}
    for j, parent in enumerate(skeleton.parents):
        name = skeleton.joint_names[j]
        up = -1 if parent < 0 else new_index[parent]
        if parent >= 0 and len(children(skeleton, parent)) > 1:
            names.append(LINK_NAMES.get(name, f"{skeleton.joint_names[parent]}_{name}"))
            parents.append(up)
            source.append(parent)
            up = len(names) - 1
        new_index[j] = len(names)
        names.append(name)
        parents.append(up)
        source.append(j)
    rig = Skeleton(f"{skeleton.name}_bvh", tuple(names), tuple(parents), torso=(skeleton.origin,),
                   origin=skeleton.origin)
    return rig, tuple(source)


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.maximum(n, 1e-12)


def _skew(v: np.ndarray) -> np.ndarray:
    z = np.zeros(v.shape[:-1])
    return np.stack([np.stack([z, -v[..., 2], v[..., 1]], -1),
                     np.stack([v[..., 2], z, -v[..., 0]], -1),
                     np.stack([-v[..., 1], v[..., 0], z], -1)], -2)


def smallest_rotation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 3, 3) rotations turning unit vectors a (N, 3) onto unit vectors b (N, 3) about the
    axis normal to both (Rodrigues); a half turn about any normal where they are opposite."""
    v = np.cross(a, b)
    c = np.einsum("ni,ni->n", a, b)
    k = _skew(v)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.eye(3) + k + (k @ k) / (1.0 + c)[:, None, None]
    opposite = c < -1.0 + 1e-9
    if opposite.any():
        # Any axis normal to a: a x X, or a x Y where a is along X.
        ax = np.cross(a[opposite], np.array([1.0, 0.0, 0.0]))
        small = np.linalg.norm(ax, axis=-1) < 1e-6
        ax[small] = np.cross(a[opposite][small], np.array([0.0, 1.0, 0.0]))
        ax = _unit(ax)
        r[opposite] = 2.0 * np.einsum("ni,nj->nij", ax, ax) - np.eye(3)
    return r


def best_rotation(rest: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """(N, 3, 3) rotations R minimising sum |R rest_i - seen_i|^2 over the K vectors of each
    frame: rest (K, 3), seen (N, K, 3) (Kabsch, never a mirror)."""
    h = np.einsum("ki,nkj->nij", rest, seen)          # sum over k of rest_k seen_k^T
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(np.transpose(vt, (0, 2, 1)) @ np.transpose(u, (0, 2, 1))))
    d[d == 0] = 1.0
    fix = np.broadcast_to(np.eye(3), h.shape).copy()
    fix[:, 2, 2] = d
    return np.transpose(vt, (0, 2, 1)) @ fix @ np.transpose(u, (0, 2, 1))


def _frame(primary: np.ndarray, secondary: np.ndarray) -> np.ndarray:
    """(N, 3, 3) orthonormal frames with columns: primary, secondary made normal to it, their cross."""
    x = _unit(primary)
    y = _unit(secondary - np.einsum("ni,ni->n", secondary, x)[:, None] * x)
    return np.stack([x, y, np.cross(x, y)], axis=-1)


def _branches(rig: Skeleton, joint: int) -> list[int]:
    """The bones a joint with several links holds together: each link's child."""
    return [children(rig, link)[0] for link in children(rig, joint)]


def _cluster_frame(rig: Skeleton, joint: int, offsets: np.ndarray) -> np.ndarray:
    """(N, 3, 3) the frame a joint with several links has in each frame, from its branches'
    offsets (N, K, 3): x from the right one to the left one (hips, shoulders), y up along the
    middle one (spine, neck), as the T-pose has them."""
    names = [rig.joint_names[k] for k in _branches(rig, joint)]
    left = [i for i, n in enumerate(names) if n.startswith("l_")]
    right = [i for i, n in enumerate(names) if n.startswith("r_")]
    middle = [i for i, n in enumerate(names) if not n.startswith(("l_", "r_"))]
    across = offsets[:, left[0]] - offsets[:, right[0]]
    up = offsets[:, middle[0]]
    return _frame(across, up)


def children(skeleton: Skeleton, joint: int) -> list[int]:
    return [c for c, p in enumerate(skeleton.parents) if p == joint]


def rest_offsets(rig: Skeleton, joints: np.ndarray) -> np.ndarray:
    """(J, 3) each rig joint's offset from its parent in the T-pose, in the units of `joints`
    (N, J, 3, BVH axes): median bone lengths along the T-pose's directions (none for a link),
    and for the branches of a joint with several links (the hips and spine, the neck and
    shoulders), their median offsets in that joint's own frame, so that the pelvis and the thorax
    keep the person's shape."""
    offsets = np.zeros((rig.num_joints, 3))
    for child, parent in enumerate(rig.parents):
        if parent >= 0:
            length = np.median(np.linalg.norm(joints[:, child] - joints[:, parent], axis=-1))
            offsets[child] = length * np.asarray(rest_direction(rig.joint_names[child]))
    for joint in range(rig.num_joints):
        if len(children(rig, joint)) < 2:
            continue
        branches = _branches(rig, joint)
        seen = joints[:, branches] - joints[:, joint:joint + 1]
        local = np.einsum("nji,nkj->nki", _cluster_frame(rig, joint, seen), seen)
        offsets[branches] = np.median(local, axis=0)
    return offsets


def settle_free_ends(rig: Skeleton, joints: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """`offsets` with each free end (a leaf not at the end of a limb: the head) pointing, in the
    T-pose, where it points on average from its joint's parent: H36M's head top is above and
    behind its nose, and a rest pose with it straight above would turn the head's joint by
    about 90 degrees in every frame, where an Euler triple has its blind spot."""
    ends = [c for c in range(rig.num_joints) if not children(rig, c) and rig.parents[c] >= 0
            and bend_direction(rig.joint_names[rig.parents[c]]) is None]
    if not ends:
        return offsets
    rot = global_rotations(rig, joints, offsets)
    settled = offsets.copy()
    for c in ends:
        j = rig.parents[c]
        frame = rot[:, rig.parents[j]] if rig.parents[j] >= 0 else np.broadcast_to(np.eye(3), rot[:, j].shape)
        seen = np.einsum("nji,nj->ni", frame, _unit(joints[:, c] - joints[:, j]))
        settled[c] = np.linalg.norm(offsets[c]) * _unit(np.median(seen, axis=0))
    return settled


def global_rotations(skeleton: Skeleton, joints: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(N, J, 3, 3) each joint's rotation from the T-pose (identity) to its frame in `joints`
    (N, J, 3); leaves (which carry no rotation in a BVH) get their parent's."""
    n, num = len(joints), skeleton.num_joints
    rot = np.zeros((n, num, 3, 3))
    names = skeleton.joint_names
    for j in range(num):
        parent = skeleton.parents[j]
        parent_rot = np.broadcast_to(np.eye(3), (n, 3, 3)) if parent < 0 else rot[:, parent]
        kids = children(skeleton, j)
        if not kids:
            rot[:, j] = parent_rot
        elif len(kids) > 1:
            branches = _branches(skeleton, j)
            rot[:, j] = best_rotation(offsets[branches], joints[:, branches] - joints[:, j:j + 1])
        else:
            child = kids[0]
            bone = _unit(joints[:, child] - joints[:, j])
            rest_bone = _unit(offsets[child])
            swung = smallest_rotation(_unit(parent_rot @ rest_bone), bone) @ parent_rot
            bend = bend_direction(names[child])
            grandkids = children(skeleton, child)
            if bend is None or len(grandkids) != 1:
                rot[:, j] = swung
                continue
            rot[:, j] = _hinge_rotation(bone, rest_bone, _unit(joints[:, grandkids[0]] - joints[:, child]),
                                        np.asarray(bend), parent_rot)
    return rot


def _hinge_rotation(bone: np.ndarray, rest_bone: np.ndarray, next_bone: np.ndarray, bend: np.ndarray,
                    parent_rot: np.ndarray) -> np.ndarray:
    """A hip's or shoulder's rotation: the bone onto `bone`, turned about it so that the knee or
    elbow below bends in its own plane (the T-pose's bend direction onto where `next_bone` goes)."""
    rest_normal = np.cross(rest_bone, bend)
    normal = np.cross(bone, next_bone)
    sin_bend = np.linalg.norm(normal, axis=-1)
    # In the parent's frame, where a limb that keeps its turn keeps its axis as the body turns.
    to_parent = np.transpose(parent_rot, (0, 2, 1))
    local_normal = np.einsum("nij,nj->ni", to_parent, normal / np.maximum(sin_bend, 1e-12)[:, None])
    local_bone = np.einsum("nij,nj->ni", to_parent, bone)
    secondary = np.einsum("nij,nj->ni", parent_rot, _hinge_normals(local_bone, local_normal, sin_bend, rest_normal))
    rest = _frame(rest_bone[None], rest_normal[None])[0]
    return _frame(bone, secondary) @ rest.T


def _hinge_normals(bone: np.ndarray, normal: np.ndarray, sin_bend: np.ndarray, first: np.ndarray) -> np.ndarray:
    """(N, 3) the axis each frame's knee or elbow bends about, all in the parent's frame. Where
    the limb is bent at least STRAIGHT_LIMB_DEG it is the plane the limb makes; nearer straight,
    where that plane is lost in the noise, it blends into the last frame's axis (the T-pose's,
    `first`, before any), carried onto the bone: the limb keeps its turn rather than spinning
    about itself."""
    full = math.sin(math.radians(STRAIGHT_LIMB_DEG))
    out = np.empty_like(bone)
    ref = [float(v) for v in first]
    # Frame by frame, in floats: each frame's axis depends on the one before.
    for t, (b, n, s) in enumerate(zip(bone.tolist(), normal.tolist(), sin_bend.tolist())):
        ref = _normal_to(ref, b) or _any_normal(b)
        # The bend's own side, even where the last frame's axis is the other way: a knee or elbow
        # bent backwards is seldom right (measured in docs/tracks.md), a limb turned round is.
        w = min(s / full, 1.0)
        mixed = [w * n[k] + (1.0 - w) * ref[k] for k in range(3)]
        ref = _normal_to(mixed, b) or ref
        out[t] = ref
    return out


def _normal_to(v: list[float], b: list[float]) -> list[float] | None:
    """v made normal to the unit vector b, of unit length; None where v lies along b."""
    d = v[0] * b[0] + v[1] * b[1] + v[2] * b[2]
    w = [v[0] - d * b[0], v[1] - d * b[1], v[2] - d * b[2]]
    n = math.sqrt(w[0] * w[0] + w[1] * w[1] + w[2] * w[2])
    return None if n < 1e-6 else [w[0] / n, w[1] / n, w[2] / n]


def _any_normal(b: list[float]) -> list[float]:
    return _normal_to([1.0, 0.0, 0.0], b) or _normal_to([0.0, 1.0, 0.0], b)  # type: ignore[return-value]


def rotation_channels(name: str) -> tuple[str, str, str]:
    """A joint's rotation channels, outermost first. The middle angle of an Euler triple only
    spans +-90 degrees, so it is the axis each joint turns least about: a leg's twist (Y, along
    the T-pose's leg), so that a hip or knee bends past 90 degrees about X; elsewhere X, so that
    the body turns round about Y and an elbow (a T-pose's arm lies along X) bends about Y."""
    if name.endswith(("hip", "knee")):
        return ("Zrotation", "Yrotation", "Xrotation")
    return ("Zrotation", "Xrotation", "Yrotation")


def euler_degrees(rot: np.ndarray, channels: tuple[str, str, str]) -> np.ndarray:
    """(..., 3) angles in degrees, in `channels`' order, with rot = R1 @ R2 @ R3 (ZXY or ZYX)."""
    if channels == ("Zrotation", "Xrotation", "Yrotation"):
        # Rz(a) Rx(b) Ry(c): b from m21, c from row 2, a from column 1.
        middle = np.arcsin(np.clip(rot[..., 2, 1], -1.0, 1.0))
        outer = np.arctan2(-rot[..., 0, 1], rot[..., 1, 1])
        inner = np.arctan2(-rot[..., 2, 0], rot[..., 2, 2])
        locked_outer = np.arctan2(rot[..., 1, 0], rot[..., 0, 0])
        locked = np.abs(rot[..., 2, 1]) > 1.0 - 1e-9
    elif channels == ("Zrotation", "Yrotation", "Xrotation"):
        # Rz(a) Ry(b) Rx(c): b from m20, c from row 2, a from column 0.
        middle = np.arcsin(np.clip(-rot[..., 2, 0], -1.0, 1.0))
        outer = np.arctan2(rot[..., 1, 0], rot[..., 0, 0])
        inner = np.arctan2(rot[..., 2, 1], rot[..., 2, 2])
        locked_outer = np.arctan2(-rot[..., 0, 1], rot[..., 1, 1])
        locked = np.abs(rot[..., 2, 0]) > 1.0 - 1e-9
    else:
        raise ValueError(f"unsupported rotation order {channels}")
    # Where the middle angle is +-90 degrees only outer +- inner is defined: inner = 0.
    outer = np.where(locked, locked_outer, outer)
    inner = np.where(locked, 0.0, inner)
    return np.degrees(np.stack([outer, middle, inner], axis=-1))


def motion_rows(skeleton: Skeleton, joints: np.ndarray, root: np.ndarray,
                offsets: np.ndarray) -> np.ndarray:
    """(N, 6 + 3 * R) BVH motion rows: the root's position (N, 3), then each rotating joint's
    local angles in its channels' order, unwrapped over the frames."""
    rot = global_rotations(skeleton, joints, offsets)
    angles = []
    for j in rotating_joints(skeleton):
        parent = skeleton.parents[j]
        local = rot[:, j] if parent < 0 else np.transpose(rot[:, parent], (0, 2, 1)) @ rot[:, j]
        channels = rotation_channels(skeleton.joint_names[j])
        angles.append(euler_filter(euler_degrees(local, channels)))
    return np.concatenate([root] + angles, axis=1)


def euler_filter(angles: np.ndarray) -> np.ndarray:
    """(N, 3) Euler angles (degrees, outer, middle, inner) made continuous over the frames, as
    animation tools' Euler filters do: each frame takes, of its two equal triples (a, b, c) and
    (a + 180, 180 - b, c + 180), each shifted by whole turns, the one nearest the frame before.
    A turn through the middle angle's +-90 degrees then goes on past it rather than flipping the
    other two angles by half a turn."""
    out = np.empty_like(angles)
    prev = angles[0].tolist()
    alt = np.stack([angles[:, 0] + 180.0, 180.0 - angles[:, 1], angles[:, 2] + 180.0], axis=1)
    for t, (one, two) in enumerate(zip(angles.tolist(), alt.tolist())):
        best, cost = prev, math.inf
        for cand in (one, two):
            near = [v + 360.0 * round((p - v) / 360.0) for v, p in zip(cand, prev)]
            c = abs(near[0] - prev[0]) + abs(near[1] - prev[1]) + abs(near[2] - prev[2])
            if c < cost:
                best, cost = near, c
        out[t] = best
        prev = best
    return out


def rotating_joints(skeleton: Skeleton) -> list[int]:
    """The joints with rotation channels: all but the leaves, which are end sites."""
    return [j for j in range(skeleton.num_joints) if children(skeleton, j)]


def hierarchy_text(skeleton: Skeleton, offsets: np.ndarray) -> str:
    out = ["HIERARCHY"]

    def joint(j: int, depth: int) -> None:
        pad = "\t" * depth
        kids = children(skeleton, j)
        head = "ROOT" if skeleton.parents[j] < 0 else "JOINT"
        out.append(f"{pad}{head} {skeleton.joint_names[j]}")
        out.append(f"{pad}{{")
        out.append(f"{pad}\tOFFSET " + " ".join(f"{v:.4f}" for v in offsets[j]))
        position = "Xposition Yposition Zposition " if skeleton.parents[j] < 0 else ""
        count = 6 if position else 3
        rotations = " ".join(rotation_channels(skeleton.joint_names[j]))
        out.append(f"{pad}\tCHANNELS {count} {position}{rotations}")
        for k in kids:
            if children(skeleton, k):
                joint(k, depth + 1)
            else:
                out.append(f"{pad}\tEnd Site")
                out.append(f"{pad}\t{{")
                out.append(f"{pad}\t\tOFFSET " + " ".join(f"{v:.4f}" for v in offsets[k]))
                out.append(f"{pad}\t}}")
        out.append(f"{pad}}}")

    joint(skeleton.parents.index(-1), 0)
    return "\n".join(out) + "\n"


class BvhTrackWriter(TrackWriter):
    """Keeps each frame's pose (in memory: about 250 bytes a frame) and writes the file on
    `close`, through a temporary file and a rename, as the .npz writer does: a BVH's header holds
    the skeleton and the frame count, known only at the end. `close` may be called from a signal
    handler: a row counts once it is complete."""

    _FIRST_CAPACITY = 256

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        path = Path(path)
        names = [str(n) for n in meta.get("joint_names", [])]
        if names != list(H36M17.joint_names) or list(meta.get("parents", [])) != list(H36M17.parents):
            raise InputError(f"cannot write '{path}': a BVH track needs the {H36M17.name} skeleton, "
                             f"and this stream has {meta.get('skeleton')!r} (use .jsonl, .csv or .npz)")
        self.skeleton = H36M17
        frame_name = (meta.get("axes") or {}).get("frame", "camera")
        try:
            spec = axes_spec(str(frame_name))
        except ValueError as err:
            raise InputError(f"cannot write '{path}': {err}") from None
        # Points arrive as scale * M @ camera (M orthogonal): back to camera, then to BVH (as
        # row vectors: p @ M / scale is the camera point).
        self._to_bvh = (spec.matrix / spec.scale) @ CAMERA_TO_BVH.T
        fps = meta.get("fps")
        ok_fps = isinstance(fps, (int, float)) and not isinstance(fps, bool) and math.isfinite(fps) and fps > 0
        self.frame_time = 1.0 / float(fps) if ok_fps else DEFAULT_FRAME_TIME_S
        super().__init__(path, streamed=False)
        self._closed = False
        self._count = 0
        self._last_seq: int | None = None
        j = self.skeleton.num_joints
        self._joints = np.full((self._FIRST_CAPACITY, j, 3), np.nan, np.float32)
        self._root = np.full((self._FIRST_CAPACITY, 3), np.nan, np.float32)

    def _reserve(self, rows: int) -> None:
        capacity = len(self._joints)
        if self._count + rows <= capacity:
            return
        while capacity < self._count + rows:
            capacity *= 2
        for name in ("_joints", "_root"):
            old = getattr(self, name)
            new = np.full((capacity, *old.shape[1:]), np.nan, np.float32)
            new[:self._count] = old[:self._count]
            setattr(self, name, new)

    def write(self, frame: PoseFrame, message: dict[str, Any] | None = None) -> None:
        if self._closed:
            raise ValueError(f"track file '{self.path}' is already closed")
        # Frames a live source left out hold the pose before them, so each row keeps its time.
        skipped = 0 if self._last_seq is None else min(max(0, frame.seq - self._last_seq - 1), MAX_HELD_ROWS)
        self._reserve(skipped + 1)
        i = self._count + skipped
        self._joints[self._count:i + 1] = np.nan
        self._root[self._count:i + 1] = np.nan
        if frame.people:
            person = frame.people[0]
            joints = np.asarray(person.joints_3d, np.float64)
            if joints.shape != (self.skeleton.num_joints, 3) or not np.isfinite(joints).all():
                raise ValueError(f"frame {frame.seq}: the pose is not {self.skeleton.num_joints} finite 3D joints")
            self._joints[i] = joints @ self._to_bvh
            if person.root_3d is not None and np.isfinite(person.root_3d).all():
                self._root[i] = np.asarray(person.root_3d, np.float64) @ self._to_bvh
        self._last_seq = frame.seq
        self._count = i + 1          # last: the rows only count once they are complete
        self.frames_written += 1

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        n = self._count
        if n == 0:
            return      # as every format: no frame, no file, and one already at that path is kept
        found = np.isfinite(self._joints[:n, 0, 0])
        if not found.any():
            raise InputError(f"'{self.path}' was not written: nobody was found in any of the {n} frames, and a "
                             f"BVH needs a pose (the .jsonl, .csv and .npz formats record frames without one)")
        text = bvh_text(self.skeleton, self._joints[:n].astype(np.float64), self._root[:n].astype(np.float64),
                        self.frame_time)
        try:
            with replaced_when_done(self.path) as tmp, open(tmp, "w", encoding="ascii", newline="\n") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
        except OSError as err:
            raise track_write_error(self.path, err) from None


def hold_poses(joints: np.ndarray, root: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows where nobody was found (NaN) take the last found pose, or the first before it; the
    root likewise, from the rows that have one (all zero where none has)."""
    def held(values: np.ndarray, have: np.ndarray) -> np.ndarray:
        if not have.any():
            return np.zeros_like(values)
        idx = np.where(have, np.arange(len(have)), -1)
        idx = np.maximum.accumulate(idx)
        idx[idx < 0] = int(np.flatnonzero(have)[0])
        return values[idx]

    return held(joints, np.isfinite(joints[:, 0, 0])), held(root, np.isfinite(root[:, 0]))


def bvh_text(skeleton: Skeleton, joints: np.ndarray, root: np.ndarray, frame_time: float) -> str:
    """The whole BVH file for `skeleton`'s joints (N, J, 3) relative to the origin joint and root
    positions (N, 3), both in BVH axes and centimetres, NaN where not known (see `hold_poses`)."""
    joints, root = hold_poses(joints, root)
    skeleton, source = bvh_rig(skeleton)
    joints = joints[:, source]
    offsets = settle_free_ends(skeleton, joints, rest_offsets(skeleton, joints))
    origin = skeleton.parents.index(-1)
    # The legs' length: the T-pose stands with its ankles on the ground (y = 0).
    height = -min(float(sum(offsets[k][1] for k in _chain_to(skeleton, j))) for j in range(skeleton.num_joints))
    place = root - root[0] + np.array([0.0, height, 0.0])
    # Joints are measured from the origin joint; the root's place comes from `root_3d` alone.
    posed = joints - joints[:, origin:origin + 1]
    rows = motion_rows(skeleton, posed, place, offsets)
    buf = io.StringIO()
    buf.write(hierarchy_text(skeleton, offsets))
    buf.write(f"MOTION\nFrames: {len(rows)}\nFrame Time: {frame_time:.8f}\n")
    np.savetxt(buf, rows, fmt="%.4f", delimiter=" ")
    return buf.getvalue()


def _chain_to(skeleton: Skeleton, joint: int) -> list[int]:
    """The joints from the origin's first child down to `joint` (whose offsets sum to its place)."""
    chain = []
    while skeleton.parents[joint] >= 0:
        chain.append(joint)
        joint = skeleton.parents[joint]
    return chain
