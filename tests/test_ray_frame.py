"""The person's ray frame (engines/ray_frame.py): its geometry, the training labels put in it
(train.datasets.to_ray_frame) and the pipeline's turn back into the camera's frame
(streamer/stages/align.py), which must undo each other."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engines.config import ConfigError
from engines.crop import CropTransform
from engines.ray_frame import fit_pinhole, off_axis_degrees, person_rotations, ray_rotations
from engines.model_file import default_model_config
from engines.rootpos import camera_intrinsics
from streamer.config import load_pipeline_config
from streamer.packets import FramePacket, ResultPacket
from streamer.stages.align import AlignStage
from train.datasets import to_ray_frame

rays = st.tuples(st.floats(-3.0, 3.0), st.floats(-3.0, 3.0), st.floats(0.05, 3.0))
MIRROR = np.diag([-1.0, 1.0, 1.0])


@given(rays)
def test_the_rotation_is_proper_and_points_its_z_axis_along_the_ray(ray: tuple[float, float, float]) -> None:
    d = np.array(ray)
    r = ray_rotations(d)
    np.testing.assert_allclose(r.T @ r, np.eye(3), atol=1e-12)
    assert np.linalg.det(r) == pytest.approx(1.0)
    np.testing.assert_allclose(r[:, 2], d / np.linalg.norm(d), atol=1e-12)
    # The smallest turn: the axis is perpendicular to both the optical axis and the ray.
    axis = np.cross([0.0, 0.0, 1.0], d)
    np.testing.assert_allclose(r @ axis, axis, atol=1e-9)


@given(rays)
def test_the_rotation_commutes_with_mirroring(ray: tuple[float, float, float]) -> None:
    """A mirrored view's ray frame is the mirror of the view's: training's flip and test-time
    mirroring (x -> -x in the ray frame) stay exact."""
    d = np.array(ray)
    np.testing.assert_allclose(MIRROR @ ray_rotations(d) @ MIRROR, ray_rotations(MIRROR @ d), atol=1e-12)


def test_a_person_centred_on_the_principal_point_keeps_the_camera_frame() -> None:
    joints = np.array([[300.0, 100.0], [340.0, 380.0], [320.0, 240.0]])
    np.testing.assert_allclose(person_rotations(joints, 500.0, np.array([320.0, 240.0])), np.eye(3), atol=1e-15)


def test_off_axis_degrees_and_the_evaluation_bins() -> None:
    from train.evaluate import by_off_axis

    joints = np.array([[[320.0, 240.0]], [[820.0, 240.0]], [[320.0, 240.0 + 500 * np.tan(np.radians(15))]]])
    rots = person_rotations(joints, 500.0, np.array([320.0, 240.0]))
    np.testing.assert_allclose(off_axis_degrees(rots), [0.0, 45.0, 15.0], atol=1e-9)
    gt = np.zeros((3, 17, 3))
    pred = gt + np.array([0.0, 0.0, 0.01])                       # 10 mm off everywhere
    bins = by_off_axis(pred, gt, off_axis_degrees(rots))
    assert {k: v["samples"] for k, v in bins.items()} == {"0-10": 1, "10-20": 1, "20+": 1}
    assert bins["20+"]["mpjpe_mm"] == pytest.approx(10.0)


def test_rays_must_point_forward() -> None:
    with pytest.raises(ValueError, match="forward"):
        ray_rotations(np.array([0.0, 0.0, -1.0]))


def test_batched_rotations_match_single_ones() -> None:
    rng = np.random.default_rng(0)
    joints = rng.uniform(0, 640, (5, 17, 2))
    batch = person_rotations(joints, 400.0, np.array([320.0, 240.0]))
    for j, r in zip(joints, batch):
        np.testing.assert_allclose(r, person_rotations(j, 400.0, np.array([320.0, 240.0])), atol=1e-15)


def _person(rng: np.random.Generator, at: np.ndarray) -> np.ndarray:
    """17 camera-frame points spread like a person (about 1.7 m tall) around `at`."""
    return at + rng.normal(0.0, [0.25, 0.45, 0.15], (17, 3))


def test_fit_pinhole_recovers_the_camera_that_made_the_labels() -> None:
    rng = np.random.default_rng(1)
    joints = _person(rng, np.array([0.8, -0.3, 4.0]))
    f, c = 731.5, np.array([40.0, 212.0])
    uv = joints[:, :2] / joints[:, 2:] * f + c
    focal, principal = fit_pinhole(uv.astype(np.float32), joints.astype(np.float32))
    assert focal == pytest.approx(f, rel=1e-4)
    np.testing.assert_allclose(principal, c, atol=0.05)


@pytest.mark.parametrize("frame", ["ray", "camera"])
def test_the_pipeline_turns_ray_frame_labels_back_into_the_camera_frame(frame: str) -> None:
    """A person off the optical axis of a 640x480 camera: the labels training would give them
    (to_ray_frame, on a crop cut anywhere around them), fed as the network's offsets, come out
    of the align stage as the camera-frame pose; a camera-frame model's offsets pass through
    unturned."""
    rng = np.random.default_rng(2)
    pipeline = load_pipeline_config()
    k = camera_intrinsics(640, 480, pipeline.coordinates.focal_px, pipeline.coordinates.hfov_deg)
    joints = _person(rng, np.array([1.6, 0.4, 3.5]))                  # about 25 degrees to the right
    uv = joints[:, :2] / joints[:, 2:] * k.fx + np.array([k.cx, k.cy])
    size = 128
    lo, hi = uv.min(axis=0), uv.max(axis=0)
    crop = CropTransform.from_box(lo[0] + 30.0, hi[1] - 20.0, float((hi - lo).max() * 2.0), size)   # off-centre
    labels = to_ray_frame(crop.to_crop(uv), joints.astype(np.float32)) if frame == "ray" else joints
    cfg = replace(default_model_config(), offsets_frame=frame)
    roots = np.array(cfg.root_indices)
    offsets = (labels[None, :, :] - labels[roots][:, None, :]).astype(np.float32)

    stage = AlignStage(cfg, pipeline, "", "", control=None, reporter=None)   # type: ignore[arg-type]
    packet = ResultPacket(FramePacket(0, 0, 480, 640, 0.0, 0.0, 1.0), True, 0.9, uv.astype(np.float32),
                          np.ones(17, np.float32), offsets)
    (result,) = stage.align(packet.to_dict()) + stage.flush()
    out = ResultPacket.from_dict(result, 17, len(cfg.roots))
    pelvis = cfg.skeleton.index("pelvis")
    np.testing.assert_allclose(out.joints_3d, joints - joints[pelvis], atol=2e-4)
    # ... and root placement then finds the person where they are.
    np.testing.assert_allclose(out.root_3d, joints[pelvis], atol=0.02)
    if frame == "ray":
        # The turn is not negligible here: unturned, the pose is tens of centimetres off.
        assert np.abs(labels - labels[pelvis] - (joints - joints[pelvis])).max() > 0.1


def test_offsets_frame_is_checked() -> None:
    from engines.config import from_dict, to_dict
    from engines.model_config import ModelConfig

    data = to_dict(default_model_config())
    data["offsets_frame"] = "world"
    with pytest.raises(ConfigError, match="model.yaml: 'offsets_frame' must be one of 'camera', 'ray' \\(got 'world'\\)"):
        from_dict(ModelConfig, data, source="model.yaml")


def test_model_files_say_which_frame_their_offsets_are_in() -> None:
    """The frame travels in a model file's metadata (so ONNX and TensorRT runs turn the pose as
    the checkpoint's would); files written before it existed read as camera-frame models."""
    from engines.model_file import ModelInfo

    ray = ModelInfo(replace(default_model_config(), offsets_frame="ray"), "test", True)
    meta = ray.metadata()
    assert "turned onto the person's ray" in meta["outputs"]["offsets_3d"]
    assert ModelInfo.from_metadata(meta, "m.onnx").config.offsets_frame == "ray"
    del meta["model_config"]["offsets_frame"]
    assert ModelInfo.from_metadata(meta, "old.onnx").config.offsets_frame == "camera"
    camera = ModelInfo(default_model_config(), "test", True).metadata()
    assert camera["outputs"]["offsets_3d"].endswith("camera axes")


def test_exact_2d_is_refused_where_it_cannot_run(small_model_config, tmp_path) -> None:
    """`python -m train.evaluate --exact-2d`: an ONNX graph decodes its own 2D, and a model without
    a lifter has nothing to feed; each says so in one line."""
    from engines.errors import InputError
    from engines.model_file import ModelInfo, export_onnx, save_checkpoint
    from engines.network import build_network
    from train.evaluate import load_predictor

    net = build_network(small_model_config).eval()
    info = ModelInfo(small_model_config, weights="test", trained=True)
    export_onnx(net, info, tmp_path / "m.onnx")
    save_checkpoint(tmp_path / "m.pt", net, info)
    with pytest.raises(InputError, match="--exact-2d needs the .pt checkpoint"):
        load_predictor(tmp_path / "m.onnx", exact_2d=True)
    with pytest.raises(InputError, match="--exact-2d feeds the lifter, and this model has none"):
        load_predictor(tmp_path / "m.pt", exact_2d=True)
