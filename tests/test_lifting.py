"""The lifter: its in-graph 2D decoding, its input normalisation, the pose sampler that pretrains
it on projected motion capture, its files, and the network and training recipe that carry it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from engines.grid import decode
from engines.network import Lifter, build_network, decode_grid
from engines.skeleton import H36M17
from train.lifting import (
    LIMBS,
    NoiseModel,
    PoseSampler,
    PretrainOptions,
    lift_loss,
    load_into,
    load_lifter_file,
    pretrain,
    save_lifter,
)
from train.motion import H36MCamera, MotionBank
from train.synth.retarget import retarget_joints, retarget_joints_batch
from train.synth.scene import SceneOptions, look_at, look_at_batch

ROOTS = ("pelvis", "thorax", "r_hip")
ROOT_IDX = tuple(H36M17.indices(ROOTS))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), grid=st.sampled_from([4, 8, 16]), sharp=st.floats(0.0, 6.0))
def test_decode_grid_matches_the_runtime_decoder(seed: int, grid: int, sharp: float) -> None:
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1, (2, 17, grid * grid)) * sharp
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs = (probs / probs.sum(-1, keepdims=True)).reshape(2, 17, grid, grid).astype(np.float32)
    size = grid * 8
    want_pts, want_conf = decode(probs, size)
    got_pts, got_conf = decode_grid(torch.from_numpy(probs), size)
    np.testing.assert_allclose(got_pts.numpy(), want_pts, atol=1e-3)
    np.testing.assert_allclose(got_conf.numpy(), want_conf, atol=1e-5)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), scale=st.floats(0.05, 20.0), shift=st.floats(-500, 500))
def test_lifter_input_ignores_position_and_scale(seed: int, scale: float, shift: float) -> None:
    pts = torch.from_numpy(np.random.default_rng(seed).normal(0, 30, (3, 17, 2)).astype(np.float32))
    a = Lifter.normalise(pts)
    b = Lifter.normalise(pts * scale + shift)
    torch.testing.assert_close(a, b, atol=2e-4, rtol=1e-3)


def test_retarget_and_look_at_batches_match_the_renderers() -> None:
    rng = np.random.default_rng(0)
    bodies = rng.normal(0, 0.3, (5, 17, 3))
    motion = rng.normal(0, 0.3, (5, 17, 3))
    got = retarget_joints_batch(bodies, motion)
    for i in range(5):
        np.testing.assert_allclose(got[i], retarget_joints(bodies[i], motion[i]), atol=1e-12)
    centre, target, roll = rng.normal(0, 3, (5, 3)), rng.normal(0, 1, (5, 3)), rng.normal(0, 0.1, 5)
    rot = look_at_batch(centre, target, roll)
    for i in range(5):
        np.testing.assert_allclose(rot[i], look_at(centre[i], target[i], roll[i]), atol=1e-12)


def _bank(rng: np.random.Generator, n: int) -> MotionBank:
    stand = np.zeros((17, 3))
    for child, parent in enumerate(H36M17.parents):
        if parent >= 0:
            stand[child] = stand[parent] + rng.normal(0, 0.2, 3)
    poses = stand[None] + rng.normal(0, 0.05, (n, 17, 3))
    poses[:, :, 2] += 1.0
    return MotionBank(poses.astype(np.float32), np.full(n, "h36m/S1/x"), np.full(n, "h36m"))


def _sampler(seed: int = 0, cameras: list[H36MCamera] | None = None, **noise: float) -> PoseSampler:
    rng = np.random.default_rng(seed)
    return PoseSampler(_bank(rng, 50), _bank(rng, 4).joints, cameras or [], NoiseModel(**noise))


def test_sampled_poses_are_in_front_of_the_camera_with_the_bodies_bone_lengths() -> None:
    sampler = _sampler()
    cam = sampler.camera_joints(np.random.default_rng(1), 64)
    assert cam.shape == (64, 17, 3) and (cam[:, :, 2] > 0.2).all()
    lengths = lambda j: np.linalg.norm(j[:, 1:] - j[:, H36M17.parents[1:]], axis=-1)  # noqa: E731
    flip = np.array(H36M17.flip_permutation)
    body_lengths = np.concatenate([lengths(sampler.bodies), lengths(sampler.bodies[:, flip])])
    got = lengths(cam)
    # Every sampled skeleton has the bone lengths of one of the bodies or of its mirror image
    # (rotations keep lengths; half the samples are mirrored).
    assert all(np.abs(body_lengths - g).max(axis=1).min() < 1e-9 for g in got)


def test_human36m_poses_are_seen_through_their_own_subjects_cameras() -> None:
    rng = np.random.default_rng(4)
    base = _bank(rng, 40)
    joints = base.joints.copy()
    joints[1::2, :, 2] += 20.0                      # S5's poses stand 20 m higher than S1's
    bank = MotionBank(joints, np.array([f"h36m/S{1 + (i % 2) * 4}/x" for i in range(40)]), base.source)

    def camera(subject: str, distance: float) -> H36MCamera:
        # Looking along world +y: rows right (+x), down (-z), forward (+y).
        rot = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
        return H36MCamera(subject, f"{subject}cam", rot, np.array([0.0, -distance, 0.0]), np.ones(2), np.zeros(2),
                          np.zeros(3), np.zeros(2))

    sampler = PoseSampler(bank, base.joints[:2], [camera("S1", 5.0), camera("S5", 50.0)],
                          camera=SceneOptions(h36m_camera_fraction=1.0))
    cam = sampler.camera_joints(rng, 100)
    high = cam[:, :, 1].mean(axis=1) < -10.0        # y down: S5's poses
    depth = cam[:, :, 2].mean(axis=1)
    assert high.any() and (~high).any()
    assert (np.abs(depth[high] - 50.0) < 3.0).all() and (np.abs(depth[~high] - 5.0) < 3.0).all()


def test_clean_corruption_keeps_points_and_swaps_exchange_limbs() -> None:
    rng = np.random.default_rng(2)
    pts = rng.normal(0, 1, (200, 17, 2))
    clean = _sampler(clean_fraction=1.0)
    got, conf = clean.corrupt(rng, pts)
    np.testing.assert_array_equal(got, pts)
    assert (conf >= 0.9).all()
    swapping = _sampler(sigma_min=0.0, sigma_max=0.0, outlier_probability=0.0, swap_probability=1.0,
                        clean_fraction=0.0)
    got, _ = swapping.corrupt(rng, pts)
    for i in range(len(pts)):
        swapped = [np.array_equal(got[i, left], pts[i, right]) and np.array_equal(got[i, right], pts[i, left])
                   for left, right in LIMBS]
        assert sum(swapped) == 1
        untouched = np.setdiff1d(np.arange(17), np.concatenate(LIMBS[int(np.argmax(swapped))]))
        np.testing.assert_array_equal(got[i, untouched], pts[i, untouched])


def test_ray_frame_targets_are_the_camera_frame_turned_onto_the_persons_ray() -> None:
    """--offsets-frame ray: each pose turned by the ray through the mean of its 2D joints; a pose
    centred on the optical axis keeps the camera's frame."""
    from engines.ray_frame import ray_rotations
    from train.lifting import in_frame

    rng = np.random.default_rng(4)
    cam = _sampler().camera_joints(rng, 16)
    exact = cam[:, :, :2] / cam[:, :, 2:3]
    turned = in_frame(cam, exact, "ray")
    assert in_frame(cam, exact, "camera") is cam
    centre = exact.mean(axis=1)
    rot = ray_rotations(np.concatenate([centre, np.ones((16, 1))], axis=1))
    np.testing.assert_allclose(np.einsum("nij,nkj->nki", rot, turned), cam, atol=1e-12)      # R @ x_crop
    dist = lambda p: np.linalg.norm(p[:, :, None] - p[:, None], axis=-1)                     # noqa: E731
    np.testing.assert_allclose(dist(turned), dist(cam), atol=1e-12)
    on_axis = cam - np.concatenate([centre, np.zeros((16, 1))], axis=1)[:, None] * cam[:, :, 2:3]
    # Shifting each point sideways in proportion to its depth moves the 2D mean to 0 exactly.
    ex = on_axis[:, :, :2] / on_axis[:, :, 2:3]
    np.testing.assert_allclose(in_frame(on_axis, ex, "ray"), on_axis, atol=1e-12)
    # The sampler gives the same draws in either frame, turned.
    _, _, j_cam = _sampler().sample(np.random.default_rng(5), 8)
    _, _, j_crop = _sampler().sample(np.random.default_rng(5), 8, "ray")
    np.testing.assert_allclose(dist(j_crop.astype(np.float64)), dist(j_cam.astype(np.float64)), atol=1e-5)
    assert np.abs(j_crop - j_cam).max() > 1e-3


def test_lifter_learns_and_its_file_round_trips(tmp_path: Path) -> None:
    sampler = _sampler()
    rng = np.random.default_rng(3)
    torch.manual_seed(0)
    lifter = Lifter(17, len(ROOTS), 64, 1)
    opt = torch.optim.Adam(lifter.parameters(), lr=3e-3)
    pts, conf, j3 = (torch.from_numpy(x) for x in sampler.sample(rng, 128))
    first = lift_loss(lifter, pts, conf, j3, ROOT_IDX).item()
    for _ in range(150):
        loss = lift_loss(lifter, pts, conf, j3, ROOT_IDX)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first

    opts = PretrainOptions(width=64, blocks=1, roots=ROOTS)
    path = tmp_path / "lifter.pt"
    save_lifter(path, lifter, opts, step=150)
    blob = load_lifter_file(path)
    other = Lifter(17, len(ROOTS), 64, 1)
    load_into(other, blob, ROOTS, "test")
    torch.testing.assert_close(other(pts, conf), lifter(pts, conf))
    with pytest.raises(Exception, match="roots"):
        load_into(other, blob, ("pelvis",), "test")
    with pytest.raises(Exception, match="shape"):
        load_into(Lifter(17, len(ROOTS), 32, 1), blob, ROOTS, "test")
    # The frame its targets were in travels with it: a ray-frame model refuses a camera-frame lifter.
    load_into(other, blob, ROOTS, "test", "camera")
    with pytest.raises(Exception, match="trained in the camera frame, the model's offsets_frame is ray"):
        load_into(other, blob, ROOTS, "test", "ray")
    save_lifter(tmp_path / "ray.pt", lifter, dataclasses.replace(opts, offsets_frame="ray"), step=150)
    load_into(other, load_lifter_file(tmp_path / "ray.pt"), ROOTS, "test", "ray")
    (tmp_path / "junk.pt").write_bytes(b"not a lifter")
    for bad in (tmp_path / "junk.pt", tmp_path / "missing.pt"):
        with pytest.raises(Exception, match="lifter"):
            load_lifter_file(bad)


def test_network_with_a_lifter(small_model_config) -> None:
    cfg = dataclasses.replace(small_model_config, lift_width=32, lift_blocks=1)
    cfg.check()
    net = build_network(cfg).eval()
    images = torch.randint(0, 256, (2, cfg.input_size, cfg.input_size, 3), dtype=torch.uint8)
    probs, offsets = net(images)
    assert offsets.shape == (2, len(cfg.roots), 17, 3)
    own = offsets[:, torch.arange(len(cfg.roots)), torch.tensor(cfg.root_indices)]
    assert torch.count_nonzero(own) == 0
    # The regressor starts as a zero correction: at initialisation the 3D is the lifter's.
    pts, conf = decode_grid(probs, cfg.input_size)
    lifted = net.lifter(pts, conf).reshape(offsets.shape) * net.own_root_mask
    torch.testing.assert_close(offsets, lifted)
    with pytest.raises(ValueError, match="lift_width"):
        dataclasses.replace(small_model_config, lift_width=8).check()


def test_lifted_network_exports_to_onnx_with_parity(small_model_config, tmp_path: Path) -> None:
    import onnx

    from engines.backends.onnxruntime_backend import OnnxRuntimeBackend
    from engines.backends.tensorrt_build import unsupported_ops
    from engines.model_file import ModelInfo, export_onnx

    cfg = dataclasses.replace(small_model_config, lift_width=32, lift_blocks=1)
    net = build_network(cfg).eval()
    path = export_onnx(net, ModelInfo(cfg, weights="test", trained=False), tmp_path / "m.onnx")
    assert unsupported_ops(onnx.load(str(path))) == []
    images = np.random.default_rng(0).integers(0, 256, (3, cfg.input_size, cfg.input_size, 3), dtype=np.uint8)
    out = OnnxRuntimeBackend(path, "cpu", 1).infer(images)
    with torch.no_grad():
        probs, offsets = net(torch.from_numpy(images))
    np.testing.assert_allclose(out.probs_2d, probs.numpy(), atol=1e-5)
    np.testing.assert_allclose(out.offsets_3d, offsets.numpy(), atol=1e-4)


def test_pretrain_resumes_where_it_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """A short pretraining on a stand-in motion bank: the file holds the step, a second call with
    more steps continues from it, and the result equals an uninterrupted run's."""
    import train.lifting as lifting

    rng = np.random.default_rng(5)
    bank = _bank(rng, 60)
    val_bank = MotionBank(bank.joints, np.full(len(bank), "h36m/S8/x"), bank.source)
    bodies = _bank(rng, 12).joints

    class Bodies:
        joints = bodies
        num_bodies = len(bodies)

    monkeypatch.setattr("train.synth.body.BodyBank.load", staticmethod(lambda path: Bodies()))
    monkeypatch.setattr("train.motion.load_all", lambda data_dir=None: (MotionBank.concat([bank, val_bank]), []))
    opts = PretrainOptions(width=32, blocks=1, roots=ROOTS, steps=6, batch_size=16, val_samples=32,
                           checkpoint_every=3, log_every=3, threads=1)
    whole = tmp_path / "whole.pt"
    # The log of a run stopped before its first checkpoint: the new run starts it again.
    whole.with_suffix(".log.jsonl").write_text('{"step": 3, "loss": 9.0}\n{"step": 6, "loss": 9.0}\n')
    pretrain(opts, whole, "bodies.npz", progress=False, say=lambda m: None)
    logged = [json.loads(line) for line in whole.with_suffix(".log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "loss" in r] == [3, 6] and all(r.get("loss") != 9.0 for r in logged)
    part = tmp_path / "part.pt"
    pretrain(opts, part, "bodies.npz", progress=False, say=lambda m: None, stop_after=3)
    assert load_lifter_file(part)["step"] == 3
    notes: list[str] = []
    pretrain(opts, part, "bodies.npz", progress=False, say=notes.append)
    assert any("resuming" in n for n in notes)
    a, b = load_lifter_file(whole), load_lifter_file(part)
    assert b["step"] == 6
    for k in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][k], b["state_dict"][k])

    # A Ctrl-C or SIGTERM between checkpoints: the step in flight finishes and is kept, the run
    # says where it stopped and ends with 128 + the signal, and the next run resumes from there.
    import os
    import signal

    from train.train import TrainingInterrupted

    real_loss, calls = lifting.lift_loss, {"n": 0, "at": 5}

    def loss_then_signal(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == calls["at"]:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(lifting, "lift_loss", loss_then_signal)
    stopped = tmp_path / "stopped.pt"
    with pytest.raises(TrainingInterrupted, match=r"interrupted at step 5 of 6; .*stopped.pt holds step 5") as err:
        pretrain(opts, stopped, "bodies.npz", progress=False, say=lambda m: None)
    assert err.value.exit_code == 143 and load_lifter_file(stopped)["step"] == 5
    assert signal.getsignal(signal.SIGTERM) is not None and calls["n"] == 5
    pretrain(opts, stopped, "bodies.npz", progress=False, say=lambda m: None)
    c = load_lifter_file(stopped)
    for k in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][k], c["state_dict"][k])
    steps = [json.loads(line)["step"] for line in stopped.with_suffix(".log.jsonl").read_text().splitlines()
             if "loss" in line]
    assert steps == [3, 6]
    # A signal during the last step: the run has finished, and is not called interrupted.
    calls.update(n=0, at=6)
    finished = pretrain(opts, tmp_path / "finished.pt", "bodies.npz", progress=False, say=lambda m: None)
    assert load_lifter_file(tmp_path / "finished.pt")["step"] == 6 and "val_noisy_mm" in finished
    for bad in (["--attach-to", "m.pt"], ["--steps", "0"], ["--width", "8"], ["--lr", "inf"], ["--lr", "nan"]):
        assert lifting.main(["--out", str(tmp_path / "x.pt"), "--bodies", "b.npz", *bad]) == 2
    assert not (tmp_path / "x.pt").exists()
    # A folder as --out: said so, not "lifter file not found (make one with ... --out <that folder>)".
    (tmp_path / "folder.pt").mkdir()
    assert lifting.main(["--out", str(tmp_path / "folder.pt"), "--bodies", "b.npz"]) == 2
    assert "is a folder; give the lifter file's name" in capsys.readouterr().err


def test_attach_lifter_gives_the_lifters_3d_from_the_models_2d(small_model_config, tmp_path: Path) -> None:
    from engines.model_file import ModelInfo, load_checkpoint, save_checkpoint
    from train.lifting import attach_lifter

    net = build_network(small_model_config).eval()
    with torch.no_grad():                # not the seeded weights a fresh network would have anyway
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    save_checkpoint(tmp_path / "m.pt", net, ModelInfo(small_model_config, weights="test", trained=True))
    lifter = Lifter(17, len(small_model_config.roots), 32, 1)
    save_lifter(tmp_path / "l.pt", lifter, PretrainOptions(width=32, blocks=1, roots=small_model_config.roots), 1)
    out = attach_lifter(tmp_path / "m.pt", load_lifter_file(tmp_path / "l.pt"), tmp_path / "both.pt", "test")
    both, info = load_checkpoint(out)
    assert info.config.lift_width == 32 and info.config.offsets_frame == "camera"
    # A ray-frame lifter makes a ray-frame model (the pipeline then turns its poses).
    save_lifter(tmp_path / "lr.pt", lifter, PretrainOptions(width=32, blocks=1, roots=small_model_config.roots,
                                                            offsets_frame="ray"), 1)
    ray = attach_lifter(tmp_path / "m.pt", load_lifter_file(tmp_path / "lr.pt"), tmp_path / "ray.pt", "test")
    assert load_checkpoint(ray)[1].config.offsets_frame == "ray"
    images = torch.randint(0, 256, (2, small_model_config.input_size, small_model_config.input_size, 3),
                           dtype=torch.uint8)
    with torch.no_grad():
        probs, offsets = both(images)
        want_probs, _ = net(images)
        pts, conf = decode_grid(probs, small_model_config.input_size)
        lifted = lifter(pts, conf).reshape(offsets.shape) * both.own_root_mask
    torch.testing.assert_close(probs, want_probs)
    torch.testing.assert_close(offsets, lifted)
    # A model that has a lifter already takes one of another width (its own goes with its 3D branch).
    wider = Lifter(17, len(small_model_config.roots), 48, 1)
    save_lifter(tmp_path / "w.pt", wider, PretrainOptions(width=48, blocks=1, roots=small_model_config.roots), 1)
    again = attach_lifter(out, load_lifter_file(tmp_path / "w.pt"), tmp_path / "again.pt", "test")
    assert load_checkpoint(again)[1].config.lift_width == 48
    from engines.errors import InputError
    from train.lifting import network_for_lifter

    with pytest.raises(InputError, match=r"its roots are .* the lifter's would be \['pelvis'\]"):
        network_for_lifter(out, 48, 1, "camera", ("pelvis",))


def test_missing_motion_data_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    import train.lifting as lifting

    class Bodies:
        joints = np.zeros((6, 17, 3))
        num_bodies = 6

    monkeypatch.setattr("train.synth.body.BodyBank.load", staticmethod(lambda path: Bodies()))
    code = lifting.main(["--out", str(tmp_path / "l.pt"), "--bodies", "b.npz", "--data", str(tmp_path / "none"),
                         "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("python -m train.lifting: error: motion data not found") and "--data" in err[0]
    assert not (tmp_path / "l.pt").exists()
