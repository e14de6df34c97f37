"""The evaluation's breakdown by what an image shows (train/breakdown.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engines.skeleton import H36M17
from train import breakdown as bd

# A person facing the camera: their right (r_hip, joint 1) at -x, y down, z away from the camera.
STAND = np.array([
    [0.0, 0.0, 0.0], [-0.12, 0.0, 0.0], [-0.12, 0.42, 0.0], [-0.12, 0.84, 0.0], [0.12, 0.0, 0.0],
    [0.12, 0.42, 0.0], [0.12, 0.84, 0.0], [0.0, -0.24, 0.0], [0.0, -0.48, 0.0], [0.0, -0.58, -0.05],
    [0.0, -0.72, 0.0], [0.18, -0.46, 0.0], [0.2, -0.2, 0.0], [0.2, 0.04, 0.0], [-0.18, -0.46, 0.0],
    [-0.2, -0.2, 0.0], [-0.2, 0.04, 0.0],
])
FLIP = np.array([H36M17.index(n.replace("l_", "#").replace("r_", "l_").replace("#", "r_"))
                 for n in H36M17.joint_names])


def _turned(pose: np.ndarray, yaw_deg: float, pitch_deg: float = 0.0, at=(0.0, 0.0, 4.0)) -> np.ndarray:
    """`pose` turned about its own up (y) by yaw, then tipped towards the camera about x by
    pitch (the camera then sees it from above by pitch), placed at `at`."""
    y, p = np.radians(yaw_deg), np.radians(pitch_deg)
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    # Tipping the top (-y) towards the camera (-z) is what a camera above would see.
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    return (pose @ ry.T) @ rx.T + np.asarray(at)


@given(st.floats(-179.0, 179.0), st.floats(-60.0, 60.0))
def test_facing_is_the_turn_about_the_persons_up(yaw: float, pitch: float) -> None:
    pose = _turned(STAND, yaw, pitch)
    assert bd.facing_degrees(pose[None], H36M17)[0] == pytest.approx(abs(yaw), abs=1e-6)


@given(st.floats(-179.0, 179.0), st.floats(-80.0, 80.0))
def test_camera_height_is_the_tilt_towards_the_camera(yaw: float, pitch: float) -> None:
    pose = _turned(STAND, yaw, pitch)
    assert bd.camera_height_degrees(pose[None], H36M17)[0] == pytest.approx(pitch, abs=1e-6)


@given(st.floats(-179.0, 179.0), st.floats(-3.0, 3.0), st.floats(-2.0, 2.0), st.floats(1.0, 9.0))
def test_the_viewpoint_survives_a_mirror_image_and_does_not_depend_on_the_frame(
        yaw: float, x: float, y: float, z: float) -> None:
    """Mirroring (x -> -x, left and right exchanged) keeps the view; so does turning the whole
    scene, camera included (the ray frame), since only angles between body and camera count."""
    pose = _turned(STAND, yaw, 10.0, (x, y, z))
    mirrored = pose[FLIP] * np.array([-1.0, 1.0, 1.0])
    angle = np.radians(25.0)
    turn = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    for other in (mirrored, pose @ turn.T):
        assert bd.facing_degrees(other[None], H36M17)[0] == pytest.approx(
            bd.facing_degrees(pose[None], H36M17)[0], abs=1e-6)
        assert bd.camera_height_degrees(other[None], H36M17)[0] == pytest.approx(
            bd.camera_height_degrees(pose[None], H36M17)[0], abs=1e-6)


def test_the_bins_of_a_front_a_side_and_a_back_view() -> None:
    poses = np.stack([_turned(STAND, a) for a in (10.0, 90.0, 170.0, -100.0)])
    labels = bd.bin_numeric(bd.facing_degrees(poses, H36M17), bd.FACING_BINS)
    assert labels.tolist() == ["front, 0-45°", "side, 45-135°", "back, 135-180°", "side, 45-135°"]
    heights = bd.bin_numeric(np.array([-5.0, 0.0, 14.9, 15.0, 45.0, 95.0]), bd.CAMERA_HEIGHT_BINS)
    assert heights.tolist() == ["from below, under 0°", "level, 0-15°", "level, 0-15°", "above, 15-30°",
                                "high above, over 30°", ""]


def test_pose_groups_of_the_motion_names() -> None:
    names = ["h36m/S8/Sitting 1", "h36m/S8/SittingDown", "h36m/S8/Walking 1", "h36m/S8/WalkDog",
             "cmu/07_03", "h36m/S8/Phoning", "deepmimic/humanoid3d_run", "deepmimic/humanoid3d_dance_b",
             "deepmimic/humanoid3d_cartwheel", "fake/walk"]
    assert bd.pose_groups(names).tolist() == ["sitting", "sitting", "walking", "walking", "walking",
                                              "standing actions", "running", "dancing", "acrobatics", "other"]


def test_real_views_from_the_2d_labels() -> None:
    front = STAND[:, :2] * 100 + 200                      # projected: the person's left at image right
    back = front[FLIP]                                    # the same points, left and right exchanged
    side = front.copy()
    side[:, 0] = 200 + 0.2 * (side[:, 0] - 200)           # shoulders and hips nearly on one line
    labelled = np.ones((4, 17), bool)
    labelled[3, H36M17.index("l_hip")] = False
    views = bd.real_views(np.stack([front, back, side, front]), labelled, H36M17)
    assert views.tolist() == ["front", "back", "side", ""]


def test_summarise_averages_per_bin_and_counts_pck_over_labelled_joints() -> None:
    errors = bd.SampleErrors(mpjpe_mm=np.array([10.0, 30.0, np.nan, 50.0]),
                             pa_mpjpe_mm=np.array([1.0, 3.0, np.nan, 5.0]),
                             hits=np.array([17, 7, 3, 0]), labelled=np.array([17, 10, 3, 0]))
    labels = np.array(["b", "b", "a", ""], dtype=object)
    out = bd.summarise(labels, errors, ["a", "b"])
    assert list(out) == ["a", "b"]
    assert out["b"] == {"samples": 2, "mpjpe_mm": 20.0, "pa_mpjpe_mm": 2.0, "pck": 24 / 27}
    assert out["a"]["samples"] == 1 and np.isnan(out["a"]["mpjpe_mm"]) and out["a"]["pck"] == 1.0
    assert list(bd.summarise(np.array(["z", "b", "", ""], dtype=object), errors, ["b"])) == ["b", "z"]
