"""The rotations of a BVH rig that put its bones where a pose's joints are (streamer/bvh.py).

The rig is the skeleton's joints with a link joint (no offset) before each child of a joint
with several, as motion-capture rigs have hip and collar joints; its rest pose is a T-pose
facing +Z (Y up, left on +X). Each joint's rotation comes from the bones around it: a joint
with several branches (pelvis, thorax) from all of them at once (least squares, Kabsch), held
to the frame before where its left-right span collapses; a hip or shoulder from its bone and
the plane the knee or elbow below bends in, so that knees and elbows turn about one axis, as
hinges; the others from the smallest turn from their parent. docs/bvh.md has the measurements.
"""

from __future__ import annotations

import math

import numpy as np

from engines.skeleton import Skeleton

STRAIGHT_LIMB_DEG = 20.0     # a knee or elbow bent less takes its hinge axis partly from the frame before
SPAN_SHARE = 0.5             # a left-right span under this share of its median: the frame before is blended in

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


def unit(v: np.ndarray) -> np.ndarray:
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
        ax = unit(ax)
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
    x = unit(primary)
    y = unit(secondary - np.einsum("ni,ni->n", secondary, x)[:, None] * x)
    return np.stack([x, y, np.cross(x, y)], axis=-1)


def _branches(rig: Skeleton, joint: int) -> list[int]:
    """The bones a joint with several links holds together: each link's child."""
    return [children(rig, link)[0] for link in children(rig, joint)]


def _sides(rig: Skeleton, joint: int) -> tuple[int, int, int]:
    """Which of a branching joint's branches is the left one, the right one and the middle one
    (the hips and the spine; the shoulders and the neck), as places in `_branches`."""
    branches = _branches(rig, joint)
    left = next(i for i, k in enumerate(branches) if rig.is_left(k))
    right = next(i for i, k in enumerate(branches) if rig.is_right(k))
    middle = next(i for i, k in enumerate(branches) if not (rig.is_left(k) or rig.is_right(k)))
    return left, right, middle


def _cluster_frame(rig: Skeleton, joint: int, offsets: np.ndarray) -> np.ndarray:
    """(N, 3, 3) the frame a joint with several links has in each frame, from its branches'
    offsets (N, K, 3): x from the right one to the left one (hips, shoulders), y up along the
    middle one (spine, neck), as the T-pose has them."""
    left, right, middle = _sides(rig, joint)
    return _frame(offsets[:, left] - offsets[:, right], offsets[:, middle])


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


def rig_pose(rig: Skeleton, joints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rig's rest offsets (J, 3) for `joints` (N, J, 3, BVH axes; `rest_offsets`), with each
    free end (a leaf not at the end of a limb: the head) pointing, in the T-pose, where it points
    on average from its joint's parent, and each joint's rotations (N, J, 3, 3) from that T-pose
    (`global_rotations`). H36M's head top is above and behind its nose, and a rest pose with it
    straight above would turn the head's joint by about 90 degrees in every frame, where an
    Euler triple has its blind spot. A free end's offset moves only its own joint's rotation (a
    leaf's joint has nothing below it), so the rotations are worked out once, and that joint's
    again."""
    offsets = rest_offsets(rig, joints)
    rot = global_rotations(rig, joints, offsets)
    ends = [c for c in range(rig.num_joints) if not children(rig, c) and rig.parents[c] >= 0
            and bend_direction(rig.joint_names[rig.parents[c]]) is None]
    for c in ends:
        j = rig.parents[c]
        parent_rot = rot[:, rig.parents[j]] if rig.parents[j] >= 0 else np.broadcast_to(np.eye(3), rot[:, j].shape)
        bone = unit(joints[:, c] - joints[:, j])
        seen = np.einsum("nji,nj->ni", parent_rot, bone)
        offsets[c] = np.linalg.norm(offsets[c]) * unit(np.median(seen, axis=0))
        rot[:, j] = rot[:, c] = _swing(parent_rot, unit(offsets[c]), bone)
    return offsets, rot


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
            rot[:, j] = _steady_cluster(skeleton, j, offsets[branches], joints[:, branches] - joints[:, j:j + 1])
        else:
            child = kids[0]
            bone = unit(joints[:, child] - joints[:, j])
            rest_bone = unit(offsets[child])
            bend = bend_direction(names[child])
            grandkids = children(skeleton, child)
            if bend is None or len(grandkids) != 1:
                rot[:, j] = _swing(parent_rot, rest_bone, bone)
                continue
            rot[:, j] = _hinge_rotation(bone, rest_bone, unit(joints[:, grandkids[0]] - joints[:, child]),
                                        np.asarray(bend), parent_rot)
    return rot


def _swing(parent_rot: np.ndarray, rest_bone: np.ndarray, bone: np.ndarray) -> np.ndarray:
    """(N, 3, 3) the parent's rotation turned by the smallest turn that puts the unit rest
    direction `rest_bone` (3,) onto `bone` (N, 3): no twist of its own."""
    return smallest_rotation(unit(parent_rot @ rest_bone), bone) @ parent_rot


def _steady_cluster(rig: Skeleton, joint: int, rest: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """(N, 3, 3) a branching joint's rotations: its branches' rest offsets `rest` (K, 3) onto
    `seen` (N, K, 3), least squares. Where its left-right span (the hips, the shoulders) is under
    SPAN_SHARE of its median, as when a person stands side-on and the network puts both hips on
    one spot, the span no longer tells which way the body faces: the frame before's rotation is
    blended in, as the branches it would give, with a say that grows to theirs as the span
    vanishes. Without it the pelvis turned half round within a frame (docs/bvh.md)."""
    rot = best_rotation(rest, seen)
    left, right, _ = _sides(rig, joint)
    span = np.linalg.norm(seen[:, left] - seen[:, right], axis=-1)
    typical = float(np.median(span))
    if typical <= 0.0:
        return rot
    weak = np.clip(1.0 - span / (SPAN_SHARE * typical), 0.0, 1.0)
    both = np.concatenate([rest, rest])
    for t in np.flatnonzero(weak[1:] > 0.0) + 1:          # in order: each frame holds to the one before
        prior = weak[t] * (rest @ rot[t - 1].T)
        rot[t] = best_rotation(both, np.concatenate([seen[t], prior])[None])[0]
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
        # bent backwards is seldom right (measured in docs/bvh.md), a limb turned round is.
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


def local_angles(rig: Skeleton, rot: np.ndarray) -> np.ndarray:
    """(N, 3 * R) each rotating joint's local angles, in its channels' order, made continuous
    over the frames, from the joints' rotations `rot` (N, J, 3, 3; `rig_pose`): a BVH's motion
    rows after the root's position."""
    angles = []
    for j in rotating_joints(rig):
        parent = rig.parents[j]
        local = rot[:, j] if parent < 0 else np.transpose(rot[:, parent], (0, 2, 1)) @ rot[:, j]
        angles.append(centred(euler_filter(euler_degrees(local, rotation_channels(rig.joint_names[j])))))
    return np.concatenate(angles, axis=1)


def other_triples(angles: np.ndarray) -> np.ndarray:
    """(N, 3) each Euler triple's other one, the same rotation: (a + 180, 180 - b, c + 180)."""
    return np.stack([angles[:, 0] + 180.0, 180.0 - angles[:, 1], angles[:, 2] + 180.0], axis=1)


def euler_filter(angles: np.ndarray) -> np.ndarray:
    """(N, 3) Euler angles (degrees, outer, middle, inner) made continuous over the frames, as
    animation tools' Euler filters do: each frame takes, of its two equal triples (a, b, c) and
    (a + 180, 180 - b, c + 180), each shifted by whole turns, the one nearest the frame before.
    A turn through the middle angle's +-90 degrees then goes on past it rather than flipping the
    other two angles by half a turn. Which triple is nearest depends only on which the frame
    before took, so the four distances are worked out for all frames at once, the choices made
    in a loop over small integers, and the whole turns added by `np.unwrap`."""
    n = len(angles)
    triples = np.stack([angles, other_triples(angles)])              # (2, N, 3)
    # distance[j, k, t - 1]: from triple j at frame t - 1 to triple k at frame t, turns aside.
    step = triples[None, :, 1:] - triples[:, None, :-1]
    distance = np.abs((step + 180.0) % 360.0 - 180.0).sum(axis=-1).tolist()
    chosen = [0] * n
    for t in range(1, n):
        before = chosen[t - 1]
        chosen[t] = 1 if distance[before][1][t - 1] < distance[before][0][t - 1] else 0
    return np.unwrap(triples[chosen, np.arange(n)], period=360.0, axis=0)


def centred(angles: np.ndarray) -> np.ndarray:
    """(N, 3) a continuous Euler curve (outer, middle, inner, degrees) as near zero as it can be
    put whole: the other triple of every frame, (a + 180, 180 - b, c + 180), is as continuous as
    the curve, and so is the curve turned by whole turns, channel by channel. Of those, the one
    whose channels' medians are smallest: a joint near its rest pose reads near 0 in a curve
    editor, rather than near 180 in all three channels, or wound up several turns, where one
    early flip sent the Euler filter (docs/bvh.md)."""
    best, best_cost = angles, math.inf
    for curve in (angles, other_triples(angles)):
        curve = curve - 360.0 * np.round(np.median(curve, axis=0) / 360.0)
        cost = float(np.abs(np.median(curve, axis=0)).sum())
        if cost < best_cost:
            best, best_cost = curve, cost
    return best


def rotating_joints(skeleton: Skeleton) -> list[int]:
    """The joints with rotation channels (all but the leaves, which are end sites), in the
    order a BVH's hierarchy lists them, depth first, which its motion columns follow."""
    order: list[int] = []

    def visit(j: int) -> None:
        if children(skeleton, j):
            order.append(j)
            for k in children(skeleton, j):
                visit(k)

    visit(skeleton.parents.index(-1))
    return order


