"""BVH track files: the skeleton, the rotations that rebuild every pose, and the writer's rules."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from engines.errors import InputError
from engines.skeleton import H36M17, Skeleton
from streamer.axes import axes_meta, axes_spec, convert_points
from streamer.bvh import CAMERA_TO_BVH, bvh_text
from streamer.bvh_solve import best_rotation, euler_degrees, rotating_joints, smallest_rotation
from streamer.protocol import PersonPose, PoseFrame, meta_message
from streamer.tracks import open_track_writer
from train.motion import axis_rotation, bvh_forward_kinematics, parse_bvh

J = H36M17.num_joints
# A person's bones in camera axes (x right, y down, z forward), metres: hips and shoulders out to
# the sides, legs down, spine and neck up, the nose ahead of the thorax.
BONES = np.array([[0, 0, 0], [-.13, .02, 0], [0, .45, 0], [0, .44, 0], [.13, .02, 0], [0, .45, 0], [0, .44, 0],
                  [0, -.23, .02], [0, -.25, 0], [0, -.12, -.08], [0, -.11, 0], [.15, 0, 0], [.28, 0, 0],
                  [.25, 0, 0], [-.15, 0, 0], [-.28, 0, 0], [-.25, 0, 0]])


def rigid_poses(rng: np.random.Generator, n: int, spread: float = 0.5) -> np.ndarray:
    """(n, J, 3) camera-axes poses of one rigid body, each joint turned at random."""
    pos = np.zeros((n, J, 3))
    rot = np.zeros((n, J, 3, 3))
    for j, p in enumerate(H36M17.parents):
        local = Rotation.from_rotvec(rng.normal(0.0, spread, (n, 3))).as_matrix()
        if p < 0:
            rot[:, j] = local
        else:
            rot[:, j] = rot[:, p] @ local
            pos[:, j] = pos[:, p] + np.einsum("nij,j->ni", rot[:, p], BONES[j])
    return pos


def joints_from_bvh(text: str) -> tuple[np.ndarray, float, np.ndarray]:
    """(F, J, 3) the H36M17 joints a BVH file puts where (its units and axes), its frame time,
    and its motion rows; end sites stand for the leaves."""
    clip = parse_bvh(text)
    fk = bvh_forward_kinematics(clip.skeleton, clip.motion)
    names = clip.skeleton.names
    idx = [names.index(n) if n in names else names.index(H36M17.joint_names[H36M17.parents[j]] + "_End")
           for j, n in enumerate(H36M17.joint_names)]
    return fk[:, idx], clip.frame_time, clip.motion


def levelling(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """(3, 3) the one rotation R with got ~ R want over every joint of every frame: the levelling
    a BVH applies to a whole track (identity where it keeps the camera's axes)."""
    return best_rotation(want.reshape(-1, 3), got.reshape(1, -1, 3))[0]


def turned_by_deg(r: np.ndarray) -> float:
    return math.degrees(math.acos(min(1.0, max(-1.0, (np.trace(r) - 1.0) / 2.0))))


def frame(seq: int, joints: np.ndarray | None, root: np.ndarray | None = None) -> PoseFrame:
    people = []
    if joints is not None:
        people.append(PersonPose(0, 0.9, (0.0, 0.0, 10.0, 10.0), joints.astype(np.float32),
                                 np.zeros((J, 2), np.float32), np.ones(J, np.float32), root))
    return PoseFrame(seq, 1000.0 + seq / 30, seq / 30, (640, 480), people)


def write_bvh(path: Path, frames: list[PoseFrame], fps: float | None = 30.0, axes: str = "camera") -> str:
    meta = meta_message(H36M17, "clip.mp4", (640, 480), fps, {}, axes=axes_meta(axes_spec(axes)))
    with open_track_writer(path, meta) as w:
        for f in frames:
            w.write(f)
    return path.read_text()


# --- geometry --------------------------------------------------------------------------------

@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), spread=st.floats(0.05, 1.5))
def test_a_rigid_body_is_rebuilt_exactly(seed: int, spread: float) -> None:
    rng = np.random.default_rng(seed)
    poses = rigid_poses(rng, 30, spread) @ CAMERA_TO_BVH.T
    root = np.cumsum(rng.normal(0.0, 5.0, (30, 3)), axis=0)
    got, _, _ = joints_from_bvh(bvh_text(H36M17, poses, root, 1 / 30))
    rel = got - got[:, :1]
    level = levelling(rel, poses)                            # one turn for the whole track, if any
    assert turned_by_deg(level) <= 30.0
    assert np.abs(rel - poses @ level.T).max() < 0.01        # centimetres: only the text's rounding
    # The pelvis follows the root from where it first was, turned likewise; the ground is where
    # the lower ankle's median height is 8 cm.
    assert np.allclose(got[:, 0] - got[0, 0], (root - root[0]) @ level.T, atol=1e-3)
    assert got[0, 0, [0, 2]] == pytest.approx([0.0, 0.0], abs=1e-3)
    assert np.median(got[:, [3, 6], 1].min(axis=1)) == pytest.approx(8.0, abs=0.01)


def test_the_rest_pose_is_a_t_pose_facing_forward() -> None:
    rng = np.random.default_rng(1)
    text = bvh_text(H36M17, rigid_poses(rng, 5) @ CAMERA_TO_BVH.T, np.zeros((5, 3)), 1 / 30)
    clip = parse_bvh(text)
    rest = bvh_forward_kinematics(clip.skeleton, np.zeros((1, clip.skeleton.num_channels)))[0]
    at = {n: rest[i] for i, n in enumerate(clip.skeleton.names)}
    assert at["l_elbow"][0] > at["l_shoulder"][0] > at["thorax"][0] > at["r_shoulder"][0] > at["r_elbow"][0]
    assert at["l_elbow_End"][1] == pytest.approx(at["l_shoulder"][1])        # arms level
    assert at["r_knee_End"][1] < at["r_knee"][1] < at["r_hip"][1]           # legs down
    assert at["r_knee_End"][0] == pytest.approx(at["r_hip"][0])
    assert at["neck_nose_End"][1] > at["thorax"][1] > at["spine"][1] > at["pelvis"][1]
    assert clip.skeleton.names[0] == "pelvis" and set(H36M17.joint_names[j] for j in rotating_joints(H36M17)) \
        <= set(clip.skeleton.names)


@pytest.mark.parametrize("limb", [("r_hip", "r_knee", "r_ankle", -1.0), ("l_shoulder", "l_elbow", "l_wrist", 1.0)])
def test_a_bent_knee_or_elbow_turns_about_one_axis(limb: tuple[str, str, str, float]) -> None:
    # The limb swung and turned at random, its hinge bent 20 to 120 degrees the way it bends.
    top, mid, end, forward = limb
    rng = np.random.default_rng(2)
    poses = np.repeat(rigid_poses(rng, 1, 0.0), 40, axis=0) @ CAMERA_TO_BVH.T
    i, k, e = (H36M17.index(n) for n in limb[:3])
    upper = poses[0, k] - poses[0, i]
    lower_len = np.linalg.norm(poses[0, e] - poses[0, k])
    bends = np.radians(np.linspace(20, 120, 40))      # from STRAIGHT_LIMB_DEG: the hinge plane is all seen
    for f, bend in enumerate(bends):
        turn = Rotation.from_rotvec(rng.normal(0, 0.3, 3)).as_matrix()
        u = turn @ upper
        # Knees bend back (-z), elbows forward (+z) in the T-pose; the same bend, turned.
        way = turn @ np.array([0.0, 0.0, forward])
        poses[f, k] = poses[f, i] + u
        poses[f, e] = poses[f, k] + lower_len * (math.cos(bend) * u / np.linalg.norm(u) + math.sin(bend) * way)
    text = bvh_text(H36M17, poses, np.zeros((40, 3)), 1 / 30)
    got, _, motion = joints_from_bvh(text)
    rel = got - got[:, :1]
    assert np.abs(rel - poses @ levelling(rel, poses).T).max() < 0.01
    rig = parse_bvh(text).skeleton
    col = int(rig.channel_start[rig.index(mid)])
    # A hinge: the knee (a T-pose's leg points down) turns about x, its last channel of Z Y X;
    # the elbow (the arm points along x, the forearm swings forward) about y, the last of Z X Y.
    # The other two angles stay zero, bent past 90 degrees too.
    angles = motion[:, col:col + 3]
    axis = 2
    assert np.allclose(np.abs(angles[:, axis]), np.degrees(bends), atol=0.01)
    assert np.abs(np.delete(angles, axis, axis=1)).max() < 0.01


def test_angles_never_jump_a_whole_turn() -> None:
    # The person spins round twice: the pelvis's yaw keeps going rather than wrapping at 180.
    n = 120
    base = rigid_poses(np.random.default_rng(3), 1, 0.0)[0] @ CAMERA_TO_BVH.T
    spin = Rotation.from_euler("y", np.linspace(0, 720, n)[:, None], degrees=True).as_matrix()
    poses = np.einsum("nij,kj->nki", spin, base)
    _, _, motion = joints_from_bvh(bvh_text(H36M17, poses, np.zeros((n, 3)), 1 / 30))
    assert np.abs(np.diff(motion[:, 3:], axis=0)).max() < 10.0
    assert np.ptp(motion[:, 5]) == pytest.approx(720.0, abs=1.0)        # Y, the yaw


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["ZXY", "ZYX"]), st.floats(-180, 180), st.sampled_from([-90.0, 90.0, None]),
       st.floats(-90, 90), st.floats(-180, 180))
def test_euler_angles_rebuild_the_rotation(order: str, a: float, lock: float | None, b: float, c: float) -> None:
    b = lock if lock is not None else b                       # the gimbal's lock, drawn often
    r = (axis_rotation(order[0], math.radians(a)) @ axis_rotation(order[1], math.radians(b))
         @ axis_rotation(order[2], math.radians(c)))
    angles = euler_degrees(r, tuple(f"{axis}rotation" for axis in order))
    back = np.eye(3)
    for axis, angle in zip(order, angles):
        back = back @ axis_rotation(axis, math.radians(angle))
    assert np.allclose(back, r, atol=1e-6)


def test_smallest_rotation_and_best_rotation() -> None:
    rng = np.random.default_rng(4)
    a = rng.normal(size=(50, 3))
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b = rng.normal(size=(50, 3))
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    b[0] = -a[0]                                          # opposite: a half turn
    b[1] = a[1]
    r = smallest_rotation(a, b)
    assert np.allclose(np.einsum("nij,nj->ni", r, a), b, atol=1e-9)
    assert np.allclose(np.linalg.det(r), 1.0)
    assert np.allclose(r[1], np.eye(3))
    # Kabsch: a true rotation found again, and a mirror image answered with a rotation.
    rest = rng.normal(size=(3, 3))
    truth = Rotation.random(10, random_state=5).as_matrix()
    assert np.allclose(best_rotation(rest, np.einsum("nij,kj->nki", truth, rest)), truth, atol=1e-9)
    assert np.allclose(np.linalg.det(best_rotation(rest, -rest[None])), 1.0)


# --- the writer ------------------------------------------------------------------------------

def test_writer_holds_poses_through_missing_frames_and_gaps(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    # Lying down (no levelling, no planted feet): the rows follow root_3d as given.
    poses = rigid_poses(rng, 4) @ Rotation.from_euler("x", 90, degrees=True).as_matrix().T
    roots = np.array([[0.0, 0.0, 3.0], [0.1, 0.0, 3.0], [0.2, 0.0, 3.5], [0.3, 0.0, 3.0]], np.float32)
    frames = [frame(0, None), frame(1, poses[0], roots[0]), frame(2, poses[1], roots[1]), frame(3, None),
              frame(6, poses[2], roots[2]), frame(7, poses[3], None)]      # 4, 5 left out by a live source
    text = write_bvh(tmp_path / "t.bvh", frames, fps=30.0)
    got, frame_time, motion = joints_from_bvh(text)
    assert frame_time == pytest.approx(1 / 30)
    assert len(got) == 8                                  # one row per frame, the gap's included
    want = [0, 0, 1, 1, 1, 1, 2, 3]                       # the pose each row shows
    bvh = poses @ CAMERA_TO_BVH.T
    rel = got - got[:, :1]
    level = levelling(rel, bvh[want])
    assert np.abs(rel - bvh[want] @ level.T).max() < 0.01
    assert all(np.array_equal(motion[i], motion[j]) for i, j in [(0, 1), (2, 3), (2, 4), (2, 5)])
    # The root: the first found place is the origin; camera z forward is BVH -z; held where missing.
    pelvis = (got[:, 0] - got[0, 0]) @ level                 # back in the camera's axes
    assert np.allclose(pelvis[:, 0], [0, 0, 10, 10, 10, 10, 20, 20], atol=1e-3)
    assert np.allclose(pelvis[:, 2], [0, 0, 0, 0, 0, 0, -50, -50], atol=1e-3)


@pytest.mark.parametrize("axes", ["unity", "unreal", "godot", "blender"])
def test_every_axes_choice_gives_the_same_bvh(tmp_path: Path, axes: str) -> None:
    rng = np.random.default_rng(7)
    poses = rigid_poses(rng, 3)
    roots = rng.normal(0.0, 1.0, (3, 3))
    camera = write_bvh(tmp_path / "c.bvh", [frame(i, poses[i], roots[i]) for i in range(3)])
    spec = axes_spec(axes)
    other = write_bvh(tmp_path / "o.bvh", [frame(i, convert_points(poses[i], spec), convert_points(roots[i], spec))
                                           for i in range(3)], axes=axes)
    a, _, _ = joints_from_bvh(camera)
    b, _, _ = joints_from_bvh(other)
    assert np.abs(a - b).max() < 0.01


def test_no_frame_rate_means_thirty_a_second(tmp_path: Path) -> None:
    pose = rigid_poses(np.random.default_rng(8), 1)[0]
    _, frame_time, _ = joints_from_bvh(write_bvh(tmp_path / "t.bvh", [frame(0, pose)], fps=None))
    assert frame_time == pytest.approx(1 / 30)


def test_nobody_found_is_said_and_no_file_is_made(tmp_path: Path) -> None:
    path = tmp_path / "t.bvh"
    path.write_text("kept")
    with pytest.raises(InputError, match=r"nobody was found in any of the 3 frames"):
        write_bvh(path, [frame(i, None) for i in range(3)])
    assert path.read_text() == "kept"
    write_bvh(path, [])                                   # no frame at all: as every format, nothing
    assert path.read_text() == "kept"


def test_another_skeleton_is_refused_at_once(tmp_path: Path) -> None:
    tiny = Skeleton("tiny", ("pelvis", "head"), (-1, 0), torso=("pelvis",), origin="pelvis")
    meta = meta_message(tiny, "x", (10, 10), 30.0, {})
    with pytest.raises(InputError, match=r"a BVH track needs the h36m17 skeleton, and this stream has 'tiny'"):
        open_track_writer(tmp_path / "t.bvh", meta)
    assert not (tmp_path / "t.bvh").exists()


def test_a_non_finite_pose_is_refused_and_not_counted(tmp_path: Path) -> None:
    meta = meta_message(H36M17, "x", (10, 10), 30.0, {})
    pose = rigid_poses(np.random.default_rng(9), 1)[0]
    bad = pose.copy()
    bad[3, 1] = np.nan
    with open_track_writer(tmp_path / "t.bvh", meta) as w:
        w.write(frame(0, pose))
        with pytest.raises(ValueError, match="finite"):
            w.write(frame(1, bad))
        assert w.frames_written == 1
    got, _, _ = joints_from_bvh((tmp_path / "t.bvh").read_text())
    assert len(got) == 1


def test_collapsed_poses_still_give_finite_numbers() -> None:
    # A network can put every joint on one spot (a frame it could not read): no NaN may reach the file.
    joints = np.random.default_rng(10).normal(size=(5, J, 3))
    joints[2] = joints[2, 0]
    for poses in (np.zeros((3, J, 3)), joints):
        motion = parse_bvh(bvh_text(H36M17, poses, np.zeros((len(poses), 3)), 1 / 30)).motion
        assert np.isfinite(motion).all()


def walking_in_place(n: int = 60) -> np.ndarray:
    """(n, J, 3) BVH-axes poses of a person standing upright and swinging their limbs a little."""
    rng = np.random.default_rng(11)
    return rigid_poses(rng, n, 0.08) @ CAMERA_TO_BVH.T


@pytest.mark.parametrize("pitch, roll", [(15.0, 0.0), (-20.0, 5.0), (0.0, 0.0)])
def test_a_pitched_or_rolled_camera_is_levelled(pitch: float, roll: float) -> None:
    # The same upright person seen by a tilted camera: the BVH stands them up again, and the
    # ground under their ankles is level.
    upright = walking_in_place()
    tilt = Rotation.from_euler("xz", [pitch, roll], degrees=True).as_matrix()
    root = np.stack([np.linspace(0, 300, 60), np.zeros(60), np.zeros(60)], axis=1)   # walking along X
    tilted = upright @ tilt.T
    got, _, _ = joints_from_bvh(bvh_text(H36M17, tilted, root @ tilt.T, 1 / 30))
    turn = levelling(got - got[:, :1], tilted)
    up = turn @ tilt @ np.array([0.0, 1.0, 0.0])              # the true up, in the file
    assert math.degrees(math.acos(up[1])) < 3.0
    lower = got[np.arange(60), np.where(got[:, 3, 1] < got[:, 6, 1], 3, 6)]     # the lower ankle
    slope = np.polyfit(np.hypot(lower[:, 0], lower[:, 2]), lower[:, 1], 1)[0]
    assert abs(math.degrees(math.atan(slope))) < 1.0        # the ground under the walk: level


def test_a_person_lying_down_keeps_the_cameras_axes() -> None:
    # Stretched out on the floor, the body is straight but not up: no levelling (30 degrees at most).
    lying = Rotation.from_euler("x", 90, degrees=True).as_matrix()
    poses = walking_in_place() @ lying.T
    got, _, _ = joints_from_bvh(bvh_text(H36M17, poses, np.zeros((60, 3)), 1 / 30))
    assert turned_by_deg(levelling(got - got[:, :1], poses)) < 0.1


def test_a_side_on_pelvis_does_not_turn_half_round_in_a_frame() -> None:
    # The network puts both hips on one spot for a few frames (a person side-on), and the sign of
    # their tiny left-right vector flips: the pelvis holds its turn instead of spinning.
    poses = walking_in_place(40)
    hips = [H36M17.index("l_hip"), H36M17.index("r_hip")]
    for t in range(15, 22):
        mid = poses[t, hips].mean(axis=0)
        side = 0.005 if t % 2 else -0.005                    # 1 cm apart, one way then the other
        poses[t, hips[0]] = mid + [100 * side, 0, 0]
        poses[t, hips[1]] = mid - [100 * side, 0, 0]
    _, _, motion = joints_from_bvh(bvh_text(H36M17, poses, np.zeros((40, 3)), 1 / 30))
    pelvis = motion[:, 3:6]
    assert np.abs(np.diff(pelvis, axis=0)).max() < 20.0


def test_a_change_of_person_is_said(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    poses = walking_in_place(6) @ CAMERA_TO_BVH.T / 1e4          # back to camera metres
    frames = [frame(i, poses[i]) for i in range(6)]
    for f in frames[3:]:
        f.people[0].id = 1                                       # another person from row 3
    write_bvh(tmp_path / "t.bvh", frames)
    assert "the person id changed 1 time(s)" in caplog.text and "(at row 3)" in caplog.text
    caplog.clear()
    write_bvh(tmp_path / "u.bvh", [frame(i, poses[i]) for i in range(6)])
    assert "person id changed" not in caplog.text


def walk(n: int = 90, fps: float = 30.0, speed: float = 100.0) -> tuple[np.ndarray, np.ndarray]:
    """A person walking along +Z at `speed` cm/s, BVH axes: (n, J, 3) pelvis-relative poses and
    (n, 3) the pelvis's true path. Each foot stands still for half a second, then swings ahead;
    the knees bend so that thigh and shin keep 45 cm."""
    rest = rigid_poses(np.random.default_rng(0), 1, 0.0)[0] @ CAMERA_TO_BVH.T
    t = np.arange(n) / fps
    pelvis = np.stack([np.zeros(n), np.full(n, 88.0), speed * t], axis=1)
    step = 0.5                                                  # seconds each foot stands
    poses = np.repeat(rest[None], n, axis=0)
    for side, (hip_i, knee_i, ankle_i), phase in (("r", (1, 2, 3), 0.0), ("l", (4, 5, 6), step)):
        k = np.floor((t + phase) / (2 * step))                  # which stride
        u = (t + phase) / (2 * step) - k                         # 0..0.5 standing, 0.5..1 swinging
        # Where this stride's foot stands: half its stance ahead of the pelvis when set down.
        plant = speed * 2 * step * k - speed * phase + speed * step / 2
        z = np.where(u < 0.5, plant, plant + (u - 0.5) * 2 * speed * 2 * step)
        lift = np.where(u < 0.5, 0.0, 10.0 * np.sin((u - 0.5) * 2 * np.pi))
        hip = pelvis + rest[hip_i]
        ankle = np.stack([hip[:, 0], 0.0 + lift, z], axis=1)
        mid, half = (hip + ankle) / 2, np.linalg.norm(ankle - hip, axis=1, keepdims=True) / 2
        axis = (ankle - hip) / (2 * half)
        ahead = np.cross(axis, [1.0, 0.0, 0.0])                  # in the walking plane, forward
        ahead *= np.sign(ahead[:, 2:3])
        knee = mid + ahead * np.sqrt(np.maximum(45.0 ** 2 - half ** 2, 0.0))
        poses[:, knee_i], poses[:, ankle_i] = knee - pelvis, ankle - pelvis
        poses[:, hip_i] = hip - pelvis
    return poses, pelvis


def test_a_walk_seen_by_a_pitched_camera_is_levelled() -> None:
    # Walking, the leg stood on leans forward and back about the vertical: its median is upright.
    poses, pelvis = walk()
    for pitch in (0.0, 20.0):
        tilt = Rotation.from_euler("x", pitch, degrees=True).as_matrix()
        tilted = poses @ tilt.T
        got, _, _ = joints_from_bvh(bvh_text(H36M17, tilted, pelvis @ tilt.T, 1 / 30))
        up = levelling(got - got[:, :1], tilted) @ tilt @ np.array([0.0, 1.0, 0.0])
        assert math.degrees(math.acos(up[1])) < 2.0, pitch


def test_a_live_sources_rows_keep_its_time(tmp_path: Path) -> None:
    # A camera (no t_media) whose stale frames were left out: seq has no gaps, but t_capture does.
    # Each frame goes in the row of its time, at the stream's 30 fps, so the animation is not fast.
    pose = walking_in_place(1)[0] @ CAMERA_TO_BVH.T / 1e4               # camera metres
    times = [0.0, 1 / 30, 4 / 30, 5 / 30, 10 / 30]
    frames = [PoseFrame(i, 1000.0 + t, None, (640, 480), frame(i, pose).people) for i, t in enumerate(times)]
    _, _, motion = joints_from_bvh(write_bvh(tmp_path / "live.bvh", frames))
    assert len(motion) == 11
    # An image folder's images have no time of their own: one a row, whenever they were read.
    stills = [dataclasses.replace(f, image=f"{i}.jpg") for i, f in enumerate(frames)]
    _, _, motion = joints_from_bvh(write_bvh(tmp_path / "stills.bvh", stills, fps=None))
    assert len(motion) == 5


def test_motion_columns_follow_the_hierarchys_depth_first_order() -> None:
    # A skeleton whose joint order is not depth first: the columns must follow the hierarchy.
    odd = Skeleton("odd", ("root", "a", "b", "a2", "b2", "a3"), (-1, 0, 0, 1, 2, 3), torso=("root",), origin="root")
    assert rotating_joints(odd) == [0, 1, 3, 2]


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(["ZXY", "ZYX"]), st.integers(-3, 3), st.integers(-3, 3), st.booleans())
def test_a_curve_is_put_near_zero_whole(order: str, turns_a: int, turns_c: int, swapped: bool) -> None:
    # A joint near rest, stored on the other triple and wound by whole turns (as one early flip can
    # leave the Euler filter): put back near 0, the same rotations, the curve as continuous.
    from streamer.bvh_solve import centred

    t = np.linspace(0, 1, 50)
    rest = np.stack([10 * np.sin(6 * t), 8 * np.cos(5 * t), -12 * t], axis=1)
    stored = rest + [360.0 * turns_a, 0.0, 360.0 * turns_c]
    if swapped:
        stored = np.stack([stored[:, 0] + 180.0, 180.0 - stored[:, 1], stored[:, 2] + 180.0], axis=1)
    got = centred(stored)
    assert np.abs(got).max() < 20.0
    assert np.abs(np.diff(got, axis=0)).max() <= np.abs(np.diff(stored, axis=0)).max() + 1e-9

    def matrix(row: np.ndarray) -> np.ndarray:
        m = np.eye(3)
        for axis, angle in zip(order, row):
            m = m @ axis_rotation(axis, math.radians(angle))
        return m

    for i in (0, 25, 49):
        assert np.allclose(matrix(got[i]), matrix(stored[i]), atol=1e-9)
