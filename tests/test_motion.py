"""The motion bank (train/motion.py): BVH parsing and forward kinematics, the DeepMimic humanoid,
the H36M / CMU loaders on the shared data, the split and the bone-length report."""

from __future__ import annotations

import json
import logging
import tarfile
import zipfile
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engines.skeleton import H36M17
from train import motion
from train.motion import (
    HELD_OUT,
    MotionBank,
    axis_rotation,
    bone_length_stats,
    bvh_forward_kinematics,
    parse_bvh,
    quat_to_matrix,
    split,
    y_up_to_z_up,
)

DATA = motion.default_data_root()
needs_h36m = pytest.mark.skipif(not (DATA / motion.H36M_FILE).exists(),
                                reason=f"shared data not found: {DATA / motion.H36M_FILE} (set POSECAST_DATA)")
needs_cmu = pytest.mark.skipif(not (DATA / motion.CMU_DIR).is_dir(),
                               reason=f"shared data not found: {DATA / motion.CMU_DIR} (set POSECAST_DATA)")
J = H36M17.index

# A root with translation channels, a child rotated Z-Y-X, a grandchild rotated Z-X-Y (channel
# lines unindented, as in the CMU files), an end site; 3 frames.
TINY_BVH = """HIERARCHY
ROOT Hips
{
  OFFSET 1.0 2.0 3.0
  CHANNELS 6 Xposition Yposition Zposition Zrotation Yrotation Xrotation
  JOINT Knee
  {
    OFFSET 0.0 -2.0 0.0
    CHANNELS 3 Zrotation Yrotation Xrotation
    JOINT Ankle
    {
OFFSET 0 -1 0
CHANNELS 3 Zrotation Xrotation Yrotation
      End Site
      {
        OFFSET 0.0 0.0 0.5
      }
    }
  }
}
MOTION
Frames: 3
Frame Time: 0.0083333
0 0 0  0 0 0  0 0 0  0 0 0
10 20 30  90 0 0  0 0 0  0 0 0
0 0 0  0 0 0  0 0 90  90 0 0
"""


def test_bvh_parser_reads_hierarchy_and_frames():
    clip = parse_bvh(TINY_BVH)
    sk = clip.skeleton
    assert sk.names == ("Hips", "Knee", "Ankle", "Ankle_End")
    assert sk.parents == (-1, 0, 1, 2)
    assert sk.channels[2] == ("Zrotation", "Xrotation", "Yrotation")
    assert sk.channels[3] == ()
    np.testing.assert_allclose(sk.offsets[3], [0, 0, 0.5])
    assert clip.motion.shape == (3, 12) and clip.frame_time == pytest.approx(0.0083333)
    sub = parse_bvh(TINY_BVH, frame_step=2)
    np.testing.assert_array_equal(sub.motion, clip.motion[::2])
    assert sub.frame_time == pytest.approx(2 * 0.0083333)


def test_bvh_forward_kinematics_known_positions():
    clip = parse_bvh(TINY_BVH)
    pos = bvh_forward_kinematics(clip.skeleton, clip.motion)
    # Frame 0, rest pose: offsets add up (the root offset plus its translation channels).
    np.testing.assert_allclose(pos[0], [[1, 2, 3], [1, 0, 3], [1, -1, 3], [1, -1, 3.5]], atol=1e-12)
    # Frame 1: root moved by (10, 20, 30), turned 90 degrees about z: the leg, along -y, turns to +x.
    np.testing.assert_allclose(pos[1], [[11, 22, 33], [13, 22, 33], [14, 22, 33], [14, 22, 33.5]], atol=1e-12)
    # Frame 2: Knee rotated 90 about x: (0, -1, 0) -> (0, 0, -1); Ankle 90 about z adds to the
    # end site's frame: Rx(90) @ Rz(90) @ (0, 0, 0.5) = Rx(90) @ (0, 0, 0.5) = (0, -0.5, 0).
    np.testing.assert_allclose(pos[2], [[1, 2, 3], [1, 0, 3], [1, 0, 2], [1, -0.5, 2]], atol=1e-12)


def test_bvh_rotation_order_follows_channels():
    """Zrotation Yrotation Xrotation means R = Rz @ Ry @ Rx; a different order gives another pose."""
    text = TINY_BVH.replace("0 0 0  0 0 0  0 0 90  90 0 0", "0 0 0  0 0 0  30 40 50  0 0 0")
    clip = parse_bvh(text)
    pos, rot = bvh_forward_kinematics(clip.skeleton, clip.motion, return_rotations=True)
    a = np.radians([30.0, 40.0, 50.0])
    expected = axis_rotation("z", a[0]) @ axis_rotation("y", a[1]) @ axis_rotation("x", a[2])
    np.testing.assert_allclose(rot[2, 1], expected, atol=1e-12)
    np.testing.assert_allclose(pos[2, 2], pos[2, 1] + expected @ [0, -1, 0], atol=1e-12)


def test_bvh_errors_are_reported():
    with pytest.raises(ValueError, match="MOTION"):
        parse_bvh("HIERARCHY ROOT a { OFFSET 0 0 0 }")
    with pytest.raises(ValueError, match="channels"):
        parse_bvh(TINY_BVH.replace("0 0 0  0 0 0  0 0 0  0 0 0", "0 0 0"))


def test_rotation_helpers():
    q = np.array([np.cos(np.pi / 4), 0, 0, np.sin(np.pi / 4)])  # 90 degrees about z, (w, x, y, z)
    np.testing.assert_allclose(quat_to_matrix(q), axis_rotation("z", np.pi / 2), atol=1e-12)
    np.testing.assert_allclose(y_up_to_z_up(np.array([1.0, 2.0, 3.0])), [1, -3, 2])
    assert np.linalg.det(motion.Y_UP_TO_Z_UP) == pytest.approx(1.0)  # a rotation: left stays left


def _deepmimic_frame(root=(0.0, 0.9, 0.0), right_knee=0.0, left_elbow=0.0, duration=0.0333) -> list[float]:
    ident = [1.0, 0.0, 0.0, 0.0]
    frame = [duration, *root]
    for name, size in motion.DEEPMIMIC_LAYOUT:
        frame += ident if size == 4 else [{"right_knee": right_knee, "left_elbow": left_elbow}.get(name, 0.0)]
    assert len(frame) == motion.DEEPMIMIC_FRAME_SIZE == 44
    return frame


def test_deepmimic_forward_kinematics_known_pose():
    frames = np.array([_deepmimic_frame(), _deepmimic_frame(right_knee=-np.pi / 2, left_elbow=np.pi / 2)])
    joints = motion.deepmimic_to_h36m17(frames)  # z up; the humanoid faces +x, its right is -y
    pelvis, r_hip, r_knee, r_ankle = (joints[:, J(n)] for n in ("pelvis", "r_hip", "r_knee", "r_ankle"))
    np.testing.assert_allclose(pelvis[0], [0, 0, 0.9], atol=1e-6)
    np.testing.assert_allclose(r_hip[0], [0, -0.25 * 0.339548, 0.9], atol=1e-6)
    np.testing.assert_allclose(r_knee[0], r_hip[0] - [0, 0, 0.25 * 1.686184], atol=1e-6)
    np.testing.assert_allclose(r_ankle[0], r_knee[0] - [0, 0, 0.25 * 1.639480], atol=1e-6)
    # The knee bends backwards (-x), the elbow forwards (+x), by their joint limits' signs.
    np.testing.assert_allclose(r_ankle[1], r_knee[1] + [-0.25 * 1.639480, 0, 0], atol=1e-6)
    l_elbow, l_wrist = joints[1, J("l_elbow")], joints[1, J("l_wrist")]
    np.testing.assert_allclose(l_wrist, l_elbow + [0.25 * 1.035788, 0, 0], atol=1e-6)
    assert joints[0, J("l_hip"), 1] > 0 > joints[0, J("r_hip"), 1]  # left is +y when facing +x
    assert joints[0, J("head_top"), 2] > joints[0, J("neck_nose"), 2] > joints[0, J("thorax"), 2]


@pytest.mark.parametrize("kind", ["folder", "zip", "tar"])
def test_deepmimic_reads_a_folder_or_archive(tmp_path: Path, kind: str):
    clip = {"Loop": "wrap", "Frames": [_deepmimic_frame(root=(0.1 * i, 0.9, 0.0), duration=0.05) for i in range(31)]}
    rel = "pybullet_data/data/motions/humanoid3d_test.txt"
    folder = tmp_path / "tree"
    (folder / rel).parent.mkdir(parents=True)
    (folder / rel).write_text(json.dumps(clip))
    (folder / "pybullet_data/data/motions/laikago_walk.txt").write_text("{}")  # not a humanoid clip
    if kind == "folder":
        source = folder
    elif kind == "zip":
        source = tmp_path / "pybullet-0-py3-none-any.whl"
        with zipfile.ZipFile(source, "w") as z:
            z.write(folder / rel, rel)
    else:
        source = tmp_path / "pybullet-0.tar.gz"
        with tarfile.open(source, "w:gz") as t:
            t.add(folder / rel, "pybullet-0/examples/pybullet/gym/" + rel)
    bank = motion.load_deepmimic(hz=10.0, source=source)
    assert bank is not None and set(bank.sequence) == {"deepmimic/humanoid3d_test"}
    assert set(bank.source) == {"deepmimic"}
    # 31 frames 0.05 s apart (1.5 s), sampled at 10 Hz -> 16 poses, every other frame.
    assert len(bank) == 16
    np.testing.assert_allclose(np.diff(bank.joints[:, J("pelvis"), 0]), 0.2, atol=1e-5)


def test_deepmimic_unavailable_is_none_with_a_reason(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING, logger="train.motion"):
        assert motion.load_deepmimic(source=tmp_path / "missing.whl") is None
        assert motion.load_deepmimic(source=tmp_path) is None  # a folder with no clips
    assert "does not exist" in caplog.text and "no motions/humanoid3d_" in caplog.text


def test_deepmimic_matches_pybullet():
    """Where pybullet is installed: the URDF offsets and our FK agree with pybullet's own."""
    p = pytest.importorskip("pybullet", reason="pybullet is not installed (optional)")
    import pybullet_data

    urdf = motion.read_archive_texts(pybullet_data.getDataPath(), r"^(humanoid/humanoid\.urdf)$")
    root = ElementTree.fromstring(urdf["humanoid/humanoid.urdf"].rstrip("\x00\r\n"))  # the file ends in a NUL
    checked = set()
    for joint in root.iter("joint"):
        child = joint.find("child").get("link")
        if child in motion._DM_URDF_OFFSETS:
            checked.add(child)
            parent, xyz = motion._DM_URDF_OFFSETS[child]
            assert joint.find("parent").get("link") == parent
            np.testing.assert_allclose([float(v) for v in joint.find("origin").get("xyz").split()], xyz)
            assert joint.find("origin").get("rpy").split() == ["0", "0", "0"]
    assert checked == set(motion._DM_URDF_OFFSETS)
    frames = np.array(json.loads(motion.read_archive_texts(
        pybullet_data.getDataPath(), r"motions/(humanoid3d_cartwheel)\.txt$")["humanoid3d_cartwheel"])["Frames"])[::10]
    ours = motion.deepmimic_forward_kinematics(frames)
    cid = p.connect(p.DIRECT)
    try:
        body = p.loadURDF(str(Path(pybullet_data.getDataPath()) / "humanoid/humanoid.urdf"), [0, 0.85, 0],
                          globalScaling=motion.DEEPMIMIC_SCALE, useFixedBase=True,
                          flags=p.URDF_MAINTAIN_LINK_ORDER, physicsClientId=cid)
        joints = {p.getJointInfo(body, j, physicsClientId=cid)[1].decode(): j
                  for j in range(p.getNumJoints(body, physicsClientId=cid))}
        for f, fr in enumerate(frames):
            w, x, y, z = fr[4:8]
            p.resetBasePositionAndOrientation(body, fr[1:4], [x, y, z, w], physicsClientId=cid)
            col = 8
            for name, size in motion.DEEPMIMIC_LAYOUT[1:]:
                v = fr[col:col + size]
                col += size
                target = [v[1], v[2], v[3], v[0]] if size == 4 else [v[0]]
                p.resetJointStateMultiDof(body, joints[name], target, physicsClientId=cid)
            for name, j in joints.items():
                theirs = p.getLinkState(body, j, computeForwardKinematics=True, physicsClientId=cid)[4]
                np.testing.assert_allclose(ours[name][f], theirs, atol=1e-4, err_msg=name)
    finally:
        p.disconnect(cid)


def _bank(sequences: list[str], per: int = 3) -> MotionBank:
    seq = np.repeat(sequences, per)
    src = np.array([s.split("/")[0] for s in seq])
    return MotionBank(np.zeros((len(seq), 17, 3), np.float32), seq, src)


def test_split_by_sequence_prefix():
    bank = _bank(["h36m/S1/Walking", "h36m/S8/Walking", "h36m/S8/Eating 1", "cmu/07_01", "cmu/107_01",
                  "cmu/02_01", "deepmimic/humanoid3d_run", "deepmimic/humanoid3d_walk"])
    train, val = split(bank)
    assert set(val.sequence) == {"h36m/S8/Walking", "h36m/S8/Eating 1", "cmu/07_01", "deepmimic/humanoid3d_run"}
    assert not set(train.sequence) & set(val.sequence)
    assert len(train) + len(val) == len(bank)
    train2, val2 = split(bank, held_out=())
    assert len(train2) == len(bank) and len(val2) == 0


def test_bank_validates_and_concatenates():
    with pytest.raises(ValueError):
        MotionBank(np.zeros((2, 16, 3)), np.array(["a", "a"]), np.array(["cmu", "cmu"]))
    with pytest.raises(ValueError):
        MotionBank(np.zeros((2, 17, 3)), np.array(["a"]), np.array(["cmu", "cmu"]))
    both = MotionBank.concat([_bank(["cmu/a"]), _bank(["h36m/S1/b"], per=2)])
    assert len(both) == 5 and both.joints.dtype == np.float32 and both.sequences() == ["cmu/a", "h36m/S1/b"]
    assert both.counts() == {"h36m": 2, "cmu": 3}


def test_bone_length_stats_on_known_bones():
    joints = np.zeros((2, 17, 3), np.float32)
    joints[:, J("r_hip")] = [0.1, 0, 0]
    joints[:, J("r_knee")] = [0.1, 0, -0.4]
    joints[:, J("head_top")] = [0, 0, 1.0]
    joints[:, J("r_ankle")] = [0, 0, -0.5]
    stats = bone_length_stats(MotionBank(joints, np.array(["cmu/x"] * 2), np.array(["cmu"] * 2)))
    assert set(stats) == {"cmu"}
    assert stats["cmu"]["pelvis-r_hip"] == pytest.approx(0.1)
    assert stats["cmu"]["r_hip-r_knee"] == pytest.approx(0.4)
    assert stats["cmu"]["height"] == pytest.approx(1.5)
    assert len(stats["cmu"]) == len(H36M17.bones) + 1
    assert "pelvis-r_hip" in motion.format_bone_length_stats(stats)


# ---- on the shared data


@pytest.fixture(scope="module")
def h36m():
    return motion.load_h36m(DATA)


@pytest.fixture(scope="module")
def cmu():
    return motion.load_cmu(DATA)


@needs_h36m
def test_h36m_loader_and_cameras(h36m):
    bank, cameras = h36m
    assert bank.joints.shape == (73279, 17, 3) and bank.joints.dtype == np.float32
    assert set(bank.source) == {"h36m"} and str(bank.sequence[0]).startswith("h36m/S1/")
    assert len(cameras) == 20 and {c.subject for c in cameras} == {"S1", "S5", "S6", "S7", "S8"}
    subject = np.array([s.split("/")[1] for s in bank.sequence])
    walking = np.char.find(bank.sequence, "/Walking") >= 0
    for cam in cameras:
        assert np.linalg.det(cam.R) == pytest.approx(1.0)
        assert (cam.width, cam.height) in ((1000, 1000), (1000, 1002))
        poses = bank.joints[subject == cam.subject][::50]
        cam_xyz = cam.world_to_camera(poses)
        assert (cam_xyz[..., 2] > 1.0).all()                       # z forward: in front, > 1 m away
        uv = cam.project(poses[:, J("pelvis")])
        assert ((uv >= 0) & (uv <= [cam.width, cam.height])).all()  # the pelvis is in the image
        # y down: a walking person's head projects above (smaller v than) the ankles.
        walk = cam.project(bank.joints[(subject == cam.subject) & walking][::20])
        assert (walk[:, J("head_top"), 1] < walk[:, [J("r_ankle"), J("l_ankle")], 1].min(axis=1)).all()
    # z up, metres: standing H36M people are 1.3-1.8 m from ankle to head_top.
    walking_poses = bank.joints[walking]
    height = walking_poses[:, J("head_top"), 2] - walking_poses[:, [J("r_ankle"), J("l_ankle")], 2].min(axis=1)
    assert 1.3 < np.median(height) < 1.8


@needs_cmu
def test_cmu_bank_is_plausible(cmu):
    assert cmu.joints.dtype == np.float32 and set(cmu.source) == {"cmu"}
    assert len(cmu.sequences()) == len(list((DATA / motion.CMU_DIR).glob("*.bvh")))
    assert all(s.startswith("cmu/") for s in cmu.sequences())
    j = cmu.joints
    # z up: the head is above the pelvis, the pelvis above the ankles, in every pose.
    assert (j[:, J("head_top"), 2] > j[:, J("pelvis"), 2]).all()
    assert (j[:, J("pelvis"), 2] > j[:, [J("r_ankle"), J("l_ankle")], 2].max(axis=1)).all()
    # Metres: head_top above the lower ankle. CMU's skeletons (scaled by the database's
    # 0.056444 m a unit) are smaller than H36M's: per clip the median is 1.2-1.5 m (H36M walking ~1.47).
    height = j[:, J("head_top"), 2] - j[:, [J("r_ankle"), J("l_ankle")], 2].min(axis=1)
    for seq in cmu.sequences():
        assert 1.15 < np.median(height[cmu.sequence == seq]) < 2.1, seq
    # ~10 Hz: walking covers about 0.1-0.2 m between poses.
    step = np.linalg.norm(np.diff(j[cmu.sequence == "cmu/02_01", J("pelvis"), :2], axis=0), axis=1)
    assert 0.05 < np.median(step) < 0.25
    # Left is left: walking goes forward, where forward = left x up of the hips and torso.
    seq = j[cmu.sequence == "cmu/02_01"].astype(np.float64)
    left = seq[:, J("l_hip")] - seq[:, J("r_hip")]
    up = seq[:, J("thorax")] - seq[:, J("pelvis")]
    forward = np.cross(left, up)
    assert (np.einsum("ni,ni->n", np.diff(seq[:, J("pelvis")], axis=0), forward[:-1]) > 0).mean() > 0.9


@needs_h36m
@needs_cmu
def test_split_of_the_real_bank_leaves_no_held_out_sequence_in_train(h36m, cmu):
    bank = MotionBank.concat([h36m[0], cmu])
    train, val = split(bank)
    assert not set(train.sequence) & set(val.sequence)
    assert not any(s.startswith(HELD_OUT) for s in set(train.sequence))
    assert {s.split("/")[1] for s in val.sequences() if s.startswith("h36m/")} == {"S8"}
    held_cmu = [s for s in val.sequences() if s.startswith("cmu/")]
    assert 0.05 < len(held_cmu) / len(cmu.sequences()) < 0.15
    # Bone lengths of the sources agree roughly (within 35 %: different people, same skeleton).
    stats = bone_length_stats(bank)
    for bone, length in stats["h36m"].items():
        assert abs(stats["cmu"][bone] / length - 1) < 0.35, bone


# ---- motion packs (what a GPU machine renders from, scripts/gpu_pack.sh)


def _camera(subject: str, name: str, seed: int) -> motion.H36MCamera:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    return motion.H36MCamera(subject=subject, name=name, R=q * np.sign(np.linalg.det(q)), T=rng.normal(size=3),
                             f=rng.uniform(1000, 1200, 2), c=rng.uniform(480, 520, 2), k=rng.normal(size=3) * 0.1,
                             p=rng.normal(size=2) * 0.01, width=1000, height=1002)


def test_motion_pack_round_trips_bank_and_cameras(tmp_path: Path):
    rng = np.random.default_rng(0)
    bank = MotionBank(rng.normal(size=(5, 17, 3)).astype(np.float32),
                      ["h36m/S1/Walking 1"] * 2 + ["cmu/02_01", "deepmimic/humanoid3d_walk", "h36m/S8/Sitting"],
                      ["h36m", "h36m", "cmu", "deepmimic", "h36m"])
    cameras = [_camera("S1", "54138969", 1), _camera("S8", "60457274", 2)]
    motion.save_pack(tmp_path / "m.npz", bank, cameras)
    back, cams = motion.load_pack(tmp_path / "m.npz")
    np.testing.assert_array_equal(back.joints, bank.joints)
    assert list(back.sequence) == list(bank.sequence) and list(back.source) == list(bank.source)
    assert len(cams) == 2
    for a, b in zip(cams, cameras):
        assert (a.subject, a.name, a.width, a.height) == (b.subject, b.name, b.width, b.height)
        point = np.array([[0.3, -0.2, 4.0]])
        np.testing.assert_array_equal(a.project(point), b.project(point))
    assert [str(s) for s in split(back)[1].sequence] == ["h36m/S8/Sitting"]   # the split by sequence still holds


@settings(max_examples=60)
@given(st.integers(1, 6), st.integers(1, 4),
       st.lists(st.floats(width=32, allow_nan=True, allow_infinity=True), min_size=1, max_size=72))
def test_packed_joints_come_back_bit_for_bit(frames: int, joints: int, values: list[float]) -> None:
    """Every bit pattern (NaN payloads, -0.0, infinities, the largest floats) survives the pack."""
    count = frames * joints * 3
    poses = np.resize(np.array(values, np.float32), count).reshape(frames, joints, 3)
    back = motion._unpack_joints(motion._pack_joints(poses), poses.shape)
    assert back.dtype == np.float32 and back.shape == poses.shape
    assert back.view(np.int32).tobytes() == poses.view(np.int32).tobytes()


def test_a_format_1_pack_is_still_read_and_a_later_one_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    bank = MotionBank(rng.normal(size=(4, 17, 3)).astype(np.float32), ["cmu/02_01"] * 4, ["cmu"] * 4)
    motion.save_pack(tmp_path / "m.npz", bank, [_camera("S1", "54138969", 1)])
    with np.load(tmp_path / "m.npz") as d:
        arrays = {k: d[k] for k in d.files if k not in ("joints_packed", "joints_shape", "format")}
    np.savez(tmp_path / "old.npz", format=np.array(1), joints=bank.joints, **arrays)
    back, cams = motion.load_pack(tmp_path / "old.npz")
    np.testing.assert_array_equal(back.joints, bank.joints)
    assert len(cams) == 1
    np.savez(tmp_path / "new.npz", format=np.array(motion.PACK_FORMAT + 1), **arrays)
    with pytest.raises(ValueError, match="motion pack format 3, this Posecast reads 1 and 2"):
        motion.load_pack(tmp_path / "new.npz")


@pytest.mark.parametrize("content", [b"not a zip", None])
def test_motion_pack_refuses_other_files(tmp_path: Path, content: bytes | None):
    path = tmp_path / "m.npz"
    if content is None:
        np.savez(path, joints=np.zeros((1, 17, 3), np.float32))      # an npz, but not a pack
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match="not a motion pack"):
        motion.load_pack(path)


@needs_h36m
@needs_cmu
def test_motion_pack_of_the_shared_data_equals_load_all(tmp_path: Path):
    bank, cameras = motion.load_all(DATA)
    assert motion.main([str(DATA), "--pack", str(tmp_path / "m.npz")]) == 0
    back, cams = motion.load_pack(tmp_path / "m.npz")
    np.testing.assert_array_equal(back.joints, bank.joints)
    assert (back.sequence == bank.sequence).all() and (back.source == bank.source).all()
    assert [(c.subject, c.name) for c in cams] == [(c.subject, c.name) for c in cameras]
    for a, b in zip(cams, cameras):
        for field in ("R", "T", "f", "c", "k", "p"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_motion_command_refuses_missing_data_and_unwritable_packs(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert motion.main([str(tmp_path / "nowhere"), "--pack", str(tmp_path / "m.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("python -m train.motion: error:") and "POSECAST_DATA" in err
    assert not (tmp_path / "m.npz").exists()


@needs_h36m
@needs_cmu
def test_motion_command_refuses_an_unwritable_pack(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    (tmp_path / "file").write_text("x")                     # a file where the pack's folder should be
    assert motion.main([str(DATA), "--pack", str(tmp_path / "file" / "m.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot write the pack" in err
