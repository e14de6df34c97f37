"""The learned temporal refiner (streamer/refiner.py) and its training windows (train/temporal.py):
the pipeline must feed it exactly the windows it was trained on, release every frame once and in
order, stay in step with root_3d's smoother, and refuse files it cannot use."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engines.errors import ConfigError
from engines.model_file import default_model_config, file_sha256
from engines.skeleton import H36M17
from streamer.config import load_pipeline_config
from streamer.filters import RESET_GAP_S, CausalSmoother, IdentityFilter, KalmanSmoother
from streamer.packets import ResultPacket
from streamer.refiner import (MIN_INTERVALS, DelayedSmoother, LiveRefiningSmoother, RefinerFileError, RefiningSmoother,
                              TemporalRefiner, frame_features,
                              mirrored_features, resolve_refiner)
from streamer.stages.align import AlignStage
from train.temporal import clip_windows, collect, segments, windows_of

from clips import write_clip_labels
from poses import result_packets

J = H36M17.num_joints
ORIGIN = H36M17.index(H36M17.origin)
FPS = 25.0


def _refiner(half: int, seed: int = 0, width: int = 16, digest: str = "0" * 64,
             future: int | None = None) -> TemporalRefiner:
    rng = np.random.default_rng(seed)
    future = half if future is None else future
    d_in = (half + 1 + future) * J * 6
    members = [[(rng.normal(0, 0.05, (d_in, width)).astype(np.float32), rng.normal(0, 0.05, width).astype(np.float32)),
                (rng.normal(0, 0.05, (width, J * 3)).astype(np.float32), rng.normal(0, 0.01, J * 3).astype(np.float32))]
               for _ in range(2)]
    return TemporalRefiner(half, future, J, members, digest, {}, scale=0.8)


def _frames(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    j3 = rng.normal(0.0, 0.3, (n, J, 3))
    j2 = rng.uniform(100.0, 400.0, (n, J, 2))
    conf = rng.uniform(0.0, 1.0, (n, J))
    return j3, j2, conf


def _through(sm, ts, j3, j2, conf) -> tuple[list[np.ndarray], list[int]]:
    out, per_push = [], []
    for t, a, b, c in zip(ts, j3, j2, conf):
        got = sm.push(float(t), a, c, b)
        per_push.append(len(got))
        out += got
    return out + sm.flush(), per_push


@given(st.floats(0.1, 10.0), st.floats(-500.0, 500.0), st.floats(-500.0, 500.0))
@settings(max_examples=30, deadline=None)
def test_features_ignore_the_crops_size_and_place(scale: float, dx: float, dy: float) -> None:
    j3, j2, conf = _frames(1)
    a = frame_features(j3[0], j2[0], conf[0], ORIGIN)
    b = frame_features(j3[0] + 5.0, j2[0] * scale + [dx, dy], conf[0], ORIGIN)
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_mirrored_features_are_the_mirrored_frames_features() -> None:
    j3, j2, conf = _frames(3)
    perm = list(H36M17.flip_permutation)
    x = np.stack([frame_features(j3[i], j2[i], conf[i], ORIGIN) for i in range(3)])
    mirrored = np.stack([frame_features(j3[i][perm] * [-1, 1, 1], j2[i][perm] * [-1, 1], conf[i][perm], ORIGIN)
                         for i in range(3)])
    np.testing.assert_allclose(mirrored_features(x, H36M17), mirrored, atol=1e-5)
    np.testing.assert_allclose(mirrored_features(mirrored_features(x, H36M17), H36M17), x, atol=1e-6)


@pytest.mark.parametrize("past,future", [(0, 0), (1, 1), (4, 4), (5, 0), (2, 3)])
@pytest.mark.parametrize("n", [1, 3, 12])
def test_the_pipeline_feeds_the_windows_training_used(past: int, future: int, n: int) -> None:
    refiner = _refiner(past, future=future)
    j3, j2, conf = _frames(n)
    out, per_push = _through(RefiningSmoother(refiner, CausalSmoother(IdentityFilter((J, 3))), ORIGIN),
                             np.arange(n) / FPS, j3, j2, conf)
    windows = windows_of(np.stack([frame_features(j3[t], j2[t], conf[t], ORIGIN) for t in range(n)]), past, future)
    expected = [j3[t] + refiner.correction(windows[t]) for t in range(n)]
    assert len(out) == n
    np.testing.assert_allclose(np.stack(out), np.stack(expected), atol=1e-5)
    assert per_push == [0] * min(future, n) + [1] * max(n - future, 0)


def test_a_jump_in_time_ends_the_window_and_keeps_step_with_the_root() -> None:
    cfg = load_pipeline_config().filter.kalman
    n, half, lag = 30, 3, 2
    ts = np.arange(n) / FPS
    ts[15:] += 2 * RESET_GAP_S
    j3, j2, conf = _frames(n)
    poses, pose_pushes = _through(RefiningSmoother(_refiner(half), KalmanSmoother(cfg, (J, 3), lag), ORIGIN),
                                  ts, j3, j2, conf)
    roots, root_pushes = _through(DelayedSmoother(KalmanSmoother(cfg, (1, 3), lag), half),
                                  ts, j3[:, :1], j2, [None] * n)
    assert pose_pushes == root_pushes
    assert len(poses) == len(roots) == n
    # The frames after the jump are refined as a track of their own.
    later, _ = _through(RefiningSmoother(_refiner(half), KalmanSmoother(cfg, (J, 3), lag), ORIGIN),
                        ts[15:], j3[15:], j2[15:], conf[15:])
    np.testing.assert_allclose(np.stack(poses[15:]), np.stack(later), atol=1e-9)


def test_segments_are_the_runs_of_one_person() -> None:
    found = np.array([0, 1, 1, 1, 0, 1, 1, 1, 1], bool)
    person = np.array([-1, 0, 0, 0, -1, 1, 1, 2, 2])
    assert segments(found, person) == [(1, 4), (5, 7), (7, 9)]
    assert segments(np.zeros(3, bool), np.full(3, -1)) == []


def test_save_and_load_keep_the_refiner(tmp_path: Path) -> None:
    refiner = replace(_refiner(2, digest="ab" * 32), fps=30.0)
    refiner.save(tmp_path / "r.npz")
    back = TemporalRefiner.load(tmp_path / "r.npz")
    assert (back.past, back.future, back.num_joints, back.model_digest, back.fps) == (2, 2, J, "ab" * 32, 30.0)
    # Learned at 30 fps: its own window from 10 to 37.5 fps, every n-th frame above, nothing below.
    assert [back.stride(f) for f in (10.0, 30.0, 37.5, 50.0, 60.0, 75.0, 120.0)] == [1, 1, 1, 2, 2, 2, 4]
    assert back.stride(9.0) is None and back.stride(None) is None and back.stride(float("nan")) is None
    window = np.random.default_rng(3).normal(size=(5, J * 6)).astype(np.float32)
    # Weights are stored in half precision: corrections agree to a fraction of a millimetre.
    np.testing.assert_allclose(back.correction(window), refiner.correction(window), atol=2e-4)
    assert back.scale == 0.8 and len(back.members) == 2


def test_the_correction_is_the_members_mean_scaled() -> None:
    refiner = _refiner(1)
    window = np.random.default_rng(4).normal(size=(3, J * 6)).astype(np.float32)
    alone = [replace(refiner, members=[m], scale=1.0).correction(window) for m in refiner.members]
    np.testing.assert_allclose(refiner.correction(window), 0.8 * (alone[0] + alone[1]) / 2, atol=1e-6)


def test_unusable_refiner_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(RefinerFileError, match="not found"):
        TemporalRefiner.load(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(RefinerFileError, match="cannot read"):
        TemporalRefiner.load(tmp_path / "junk.npz")
    np.savez(tmp_path / "other.npz", meta_json=np.array('{"format": "something else"}'))
    with pytest.raises(RefinerFileError, match="not a Posecast temporal refiner"):
        TemporalRefiner.load(tmp_path / "other.npz")


def test_a_refiner_is_used_only_behind_its_own_model(tmp_path: Path) -> None:
    model = tmp_path / "m.pt"
    model.write_bytes(b"weights")
    other = tmp_path / "other.pt"
    other.write_bytes(b"other weights")
    _refiner(1, digest=file_sha256(model)).save(tmp_path / "r.npz")
    assert resolve_refiner("off", model) is None
    assert resolve_refiner(str(tmp_path / "r.npz"), model) is not None
    with pytest.raises(RefinerFileError, match="another model"):
        resolve_refiner(str(tmp_path / "r.npz"), other)
    with pytest.raises(RefinerFileError, match="or an ONNX file exported by posecast export"):
        resolve_refiner(str(tmp_path / "r.npz"), None)
    assert resolve_refiner("auto", None) is None          # an ONNX file of unknown origin: none, no error
    assert resolve_refiner("auto", other) is None         # another model: no refiner, no error
    # An ONNX file exported from the model records the checkpoint's digest, and is that model.
    assert resolve_refiner(str(tmp_path / "r.npz"), None, file_sha256(model)) is not None


@pytest.mark.parametrize("live", [False, True])
def test_the_align_stage_refines_files_only_and_releases_every_frame(live: bool) -> None:
    cfg = replace(default_model_config(), offsets_frame="camera")
    stage = AlignStage(cfg, load_pipeline_config(), "", "", control=None, reporter=None,  # type: ignore[arg-type]
                       refiner=_refiner(3))
    stage.start(live, 24, FPS)
    assert isinstance(stage.smoother, RefiningSmoother) != live
    assert stage.smoother.lag == stage.root_smoother.lag
    packets = result_packets(stage, 40, range(20, 23), FPS, 24)
    out = []
    for p in packets:
        out += stage.align(p.to_dict())
    out += stage.flush()
    results = [ResultPacket.from_dict(d, stage.num_joints, stage.num_roots) for d in out]
    assert [r.frame.seq for r in results] == list(range(40))
    found = [r for r in results if r.found]
    assert len(found) == 37 and all(r.joints_3d is not None and r.root_3d is not None for r in found)


def test_a_ring_too_short_for_the_refiner_leaves_it_out(caplog: pytest.LogCaptureFixture) -> None:
    cfg = replace(default_model_config(), offsets_frame="camera")
    stage = AlignStage(cfg, load_pipeline_config(), "", "", control=None, reporter=None,  # type: ignore[arg-type]
                       refiner=_refiner(10))
    stage.start(False, 8, FPS)
    assert not isinstance(stage.smoother, RefiningSmoother)
    assert "temporal refiner" in caplog.text


@pytest.mark.parametrize("method,fps", [("off", FPS), ("auto", None), ("auto", 5.0)])
def test_no_refiner_without_a_filter_or_a_frame_rate_it_knows(method: str, fps: float | None) -> None:
    """`--filter off` keeps every frame as estimated; an image folder's shots are no sequence; a
    window of 21 frames at 5 fps spans other motion than it was measured on."""
    cfg = replace(default_model_config(), offsets_frame="camera")
    config = load_pipeline_config(None, {"filter": {"method": method}})
    stage = AlignStage(cfg, config, "", "", control=None, reporter=None,  # type: ignore[arg-type]
                       refiner=_refiner(3))
    stage.start(False, 24, fps)
    assert not isinstance(stage.smoother, RefiningSmoother)


@pytest.mark.parametrize("fps,stride", [(FPS, 1), (30.0, 1), (50.0, 2), (60.0, 2), (100.0, 4)])
def test_fast_files_are_refined_every_nth_frame_and_the_root_waits_as_long(fps: float, stride: int) -> None:
    cfg = replace(default_model_config(), offsets_frame="camera")
    stage = AlignStage(cfg, load_pipeline_config(), "", "", control=None, reporter=None,  # type: ignore[arg-type]
                       refiner=_refiner(3))
    stage.start(False, 40, fps)
    assert isinstance(stage.smoother, RefiningSmoother) and stage.smoother.stride == stride
    assert stage.smoother.lag == stage.root_smoother.lag == 3 * stride + stage.filter_config.file_lag


def test_a_short_ring_shortens_the_stride_before_the_smoother(caplog: pytest.LogCaptureFixture) -> None:
    """60 fps in a ring of 24: every second frame, 20 ahead, and the smoother's 10 do not fit in
    its 22; every frame, 10 ahead, does, and the smoother keeps its lag."""
    caplog.set_level("INFO")
    cfg = replace(default_model_config(), offsets_frame="camera")
    stage = AlignStage(cfg, load_pipeline_config(), "", "", control=None, reporter=None,  # type: ignore[arg-type]
                       refiner=_refiner(10))
    stage.start(False, 24, 60.0)
    assert isinstance(stage.smoother, RefiningSmoother) and stage.smoother.stride == 1
    assert stage.smoother.lag == stage.root_smoother.lag == 10 + stage.filter_config.file_lag
    assert "stride 1 instead of 2" in caplog.text


@given(st.integers(0, 4), st.integers(0, 3), st.integers(1, 4), st.integers(1, 30))
@settings(max_examples=60, deadline=None)
def test_at_stride_n_each_frame_is_refined_as_in_the_clip_of_every_nth_frame_through_it(
        past: int, future: int, stride: int, n: int) -> None:
    """Fast footage: the window of frame t reads frames t - n * past ... t + n * future, and at a
    track's ends it is filled as training filled the clip of every n-th frame through t."""
    refiner = _refiner(past, future=future)
    j3, j2, conf = _frames(n)
    sm = RefiningSmoother(refiner, CausalSmoother(IdentityFilter((J, 3))), ORIGIN, stride)
    out, per_push = _through(sm, np.arange(n) / 60.0, j3, j2, conf)
    feats = np.stack([frame_features(j3[t], j2[t], conf[t], ORIGIN) for t in range(n)])
    expected = np.empty_like(j3)
    for first in range(min(stride, n)):
        frames = np.arange(first, n, stride)
        for t, window in zip(frames, windows_of(feats[frames], past, future)):
            expected[t] = j3[t] + refiner.correction(window)
    assert len(out) == n and sm.lag == future * stride
    np.testing.assert_allclose(np.stack(out), expected, atol=1e-5)
    ahead = future * stride
    assert per_push == [0] * min(ahead, n) + [1] * max(n - ahead, 0)
    assert len(sm._feats) == 0


def test_the_shipped_refiner_is_for_the_shipped_model() -> None:
    """`filter.refiner: auto` uses it only behind the model it was trained for: a refiner shipped
    for other weights would silently never run."""
    from engines.models import SHIPPED_DEFAULT
    from streamer.refiner import SHIPPED_REFINER

    if not SHIPPED_REFINER.exists():
        pytest.skip("no temporal refiner is shipped")
    assert resolve_refiner("auto", SHIPPED_DEFAULT) is not None


def test_the_shipped_model_exported_to_onnx_keeps_its_refiners(posecast, tmp_path: Path) -> None:
    """`posecast export` writes the checkpoint's digest into the ONNX file: run from it, the model
    gets the refiners trained behind it, and the same poses as from the checkpoint."""
    from engines.models import SHIPPED_DEFAULT, resolve_model

    if not SHIPPED_DEFAULT.exists():
        pytest.skip("no trained model is shipped")
    out = tmp_path / "shipped.onnx"
    r = posecast.run(["export", "-o", out])
    assert r.returncode == 0, r.stderr
    model = resolve_model(out)
    assert model.checkpoint_path is None and model.checkpoint_sha256 == file_sha256(SHIPPED_DEFAULT)
    for live in (False, True):
        assert resolve_refiner("auto", None, model.checkpoint_sha256, live=live) is not None


def _track_npz(posecast, clip: Path, out: Path, *extra: str) -> np.ndarray:
    r = posecast.run(["track", clip, "-o", out, "--no-progress", *extra])
    assert r.returncode == 0, r.stderr
    with np.load(out) as t:
        return t["joints_3d"]


def test_a_file_is_refined_as_the_config_says(posecast, clip40: Path, tmp_path: Path, default_model) -> None:
    """A refiner file named in the config runs behind its own model and changes the poses; `off`
    and a file made for other weights are honoured, the latter with one line and exit 2."""
    model = default_model.checkpoint_path
    own, other = tmp_path / "own.npz", tmp_path / "other.npz"
    _refiner(3, digest=file_sha256(model)).save(own)
    _refiner(3, digest="f" * 64).save(other)
    configs = {}
    for name, value in (("own", own), ("off", "off"), ("other", other)):
        configs[name] = tmp_path / f"{name}.yaml"
        configs[name].write_text(f"filter:\n  refiner: {value}\n")
    refined = _track_npz(posecast, clip40, tmp_path / "a.npz", "--config", configs["own"])
    plain = _track_npz(posecast, clip40, tmp_path / "b.npz", "--config", configs["off"])
    found = np.isfinite(plain).all(axis=(1, 2))
    assert found.any() and (np.isfinite(refined).all(axis=(1, 2)) == found).all()
    assert np.abs(refined[found] - plain[found]).max() > 1e-4
    r = posecast.run(["track", clip40, "-o", tmp_path / "c.jsonl", "--config", configs["other"]])
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "trained for another model" in lines[0] and "filter.refiner: off" in lines[0]
    assert not (tmp_path / "c.jsonl").exists()


def test_another_trained_model_is_told_the_shipped_refiners_do_not_fit(posecast, clip40: Path,
                                                                        tmp_path: Path) -> None:
    """`auto` leaves a model other than the shipped one unrefined, and the user is told so in one
    note (the shipped refiner's figures would otherwise be read as that model's); naming the
    refiners `off`, or the shipped model itself, says nothing."""
    import torch

    from engines.models import SHIPPED_DEFAULT
    from streamer.refiner import SHIPPED_REFINER

    if not (SHIPPED_DEFAULT.exists() and SHIPPED_REFINER.exists()):
        pytest.skip("no trained model and refiner are shipped")
    blob = torch.load(SHIPPED_DEFAULT, weights_only=True)
    blob["posecast"]["weights"] = "the shipped weights under another description: another file, another digest"
    other = tmp_path / "other.pt"
    torch.save(blob, other)
    off = tmp_path / "off.yaml"
    off.write_text("filter:\n  refiner: off\n  live_refiner: off\n")
    # Its own file refiner, the live one left at auto: a file reads only the former, and is refined.
    _refiner(3, digest=file_sha256(other)).save(tmp_path / "own.npz")
    own = tmp_path / "own.yaml"
    own.write_text(f"filter:\n  refiner: {tmp_path / 'own.npz'}\n")
    for extra, told in (([], False), (["--model", other], True), (["--model", other, "--config", off], False),
                        (["--model", other, "--config", own], False)):
        r = posecast.run(["track", clip40, "-o", tmp_path / "t.jsonl", "--no-progress", *extra])
        assert r.returncode == 0, r.stderr
        notes = [ln for ln in r.stderr.splitlines() if "temporal refiners fit only the shipped model" in ln]
        assert len(notes) == int(told), r.stderr
        if told:
            assert f"python -m train.temporal --model {other}" in notes[0] and "live_refiner" not in notes[0]


def test_the_unrefined_note_names_the_refiner_the_source_reads(tmp_path: Path) -> None:
    """A camera or a real-time run reads the live refiner (trained with --future 0), a video file
    the file one, pictures none; an ONNX file that does not record its checkpoint cannot take one."""
    from types import SimpleNamespace

    from streamer.cli import _refiners_read, _unrefined_note

    (tmp_path / "walk.mp4").write_bytes(b"")
    assert _refiners_read(str(tmp_path / "walk.mp4"), False) == (True, False)
    assert _refiners_read(str(tmp_path / "walk.mp4"), True) == (False, True)
    assert _refiners_read("/dev/video0", False) == (False, True)
    assert _refiners_read(str(tmp_path), False) == (False, False)
    assert _refiners_read("rtsp://host/x", False) == (True, True)
    pt = SimpleNamespace(checkpoint_sha256="0" * 64, checkpoint_path=Path("mine.pt"))
    live = _unrefined_note(pt, (False, True))
    assert "--model mine.pt" in live and "--future 0" in live and "set filter.live_refiner: off" in live
    assert "filter.refiner " not in live
    assert "--future 0" not in _unrefined_note(pt, (True, False))
    bare = _unrefined_note(SimpleNamespace(checkpoint_sha256=None, checkpoint_path=None), (True, False))
    assert "does not record the checkpoint" in bare and "posecast export" in bare


def test_train_temporal_checks_its_outputs_before_tracking(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """An output folder that cannot be written is one line and exit 2, before any clip is tracked."""
    from train.temporal import main as temporal

    (tmp_path / "clips").mkdir()
    write_clip_labels(tmp_path / "clips")
    (tmp_path / "afile").write_text("")
    assert temporal(["--clips", str(tmp_path / "clips"), "--tracks", str(tmp_path / "t"),
                     "--out", str(tmp_path / "afile" / "r.npz")]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "cannot write to" in err[0]


@pytest.mark.parametrize("extra, says", [
    (["--lr", "inf"], "--lr in (0, 1]"), (["--lr", "nan"], "--lr in (0, 1]"), (["--threads", "0"], "--threads must be"),
    ([], "rendered from val material"), (["webcam"], "rendered from val material"),
], ids=["lr inf", "lr nan", "no threads", "held-out clips", "webcam views of held-out clips"])
def test_train_temporal_refuses_what_would_spoil_the_refiner(tmp_path: Path, extra: list[str], says: str,
                                                            capsys: pytest.CaptureFixture) -> None:
    """An infinite learning rate wrote a refiner of NaN weights (the pipeline then crashed on it),
    and clips rendered from held-out material were trained on."""
    from train.temporal import main as temporal

    (tmp_path / "clips").mkdir()
    if extra == ["webcam"]:          # train.synth.cut_clips' views keep their source's split
        (tmp_path / "clips" / "source.json").write_text('{"clips": "/data/clips_val", "split": "val"}')
        extra = []
    else:
        (tmp_path / "clips" / "settings.json").write_text('{"split": "val"}')
    with pytest.raises(SystemExit) as ended:
        temporal(["--clips", str(tmp_path / "clips"), "--tracks", str(tmp_path / "t"), "--out",
                  str(tmp_path / "r.npz"), *extra])
    # The whole of stderr is the one line (argparse's usage block came before it).
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert ended.value.code == 2 and len(err) == 1 and says in err[0], err
    assert err[0].startswith("python -m train.temporal: error: ")
    assert not (tmp_path / "r.npz").exists()


def test_train_temporal_refuses_held_out_motions_without_a_settings_record(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    """Evaluation clips copied without their settings.json would pass the split check: their
    motion labels still name held-out material (train.motion.HELD_OUT), and refuse them."""
    from train.temporal import main as temporal

    (tmp_path / "clips").mkdir()
    write_clip_labels(tmp_path / "clips", motion=np.str_("h36m/S8/Walking 1"))
    with pytest.raises(SystemExit) as ended:
        temporal(["--clips", str(tmp_path / "clips"), "--tracks", str(tmp_path / "t"), "--out", str(tmp_path / "r.npz")])
    err = [ln for ln in capsys.readouterr().err.splitlines() if "error:" in ln]
    assert ended.value.code == 2 and len(err) == 1 and "held-out motion h36m/S8/Walking 1" in err[0]
    assert not (tmp_path / "t").exists() and not (tmp_path / "r.npz").exists()


@pytest.mark.parametrize("case", ["out is a folder", "no clips"])
def test_train_temporal_refuses_bad_folders_in_one_line(tmp_path: Path, case: str,
                                                        capsys: pytest.CaptureFixture) -> None:
    """Both were tracebacks: a folder given as --out only after every clip was tracked and the
    refiner trained; a clip folder without clips at once."""
    from train.temporal import main as temporal

    (tmp_path / "clips").mkdir()
    (tmp_path / "out.npz").mkdir()
    out = tmp_path / ("out.npz" if case == "out is a folder" else "r.npz")
    with pytest.raises(SystemExit) as ended:
        temporal(["--clips", str(tmp_path / "clips"), "--tracks", str(tmp_path / "t"), "--out", str(out)])
    err = [ln for ln in capsys.readouterr().err.splitlines() if "error:" in ln]     # after argparse's usage
    assert ended.value.code == 2 and len(err) == 1
    assert ("is a folder" if case == "out is a folder" else "no clip_*.npz") in err[0]


def test_train_temporal_names_a_clip_it_cannot_track(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A damaged clip ends the run with one line naming it (exit 2: posecast refused it as bad
    input), and leaves no partial track."""
    from train.command import run_command
    from train.temporal import main as temporal

    clips = tmp_path / "clips"
    clips.mkdir()
    write_clip_labels(clips, video=b"not a video")
    code = run_command("python -m train.temporal", lambda: temporal(
        ["--clips", str(clips), "--tracks", str(tmp_path / "t"), "--out", str(tmp_path / "r.npz")]))
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip() and "%|" not in ln]   # less the bar
    assert code == 2 and len(lines) == 1 and "clip_000.mp4" in lines[0], lines
    assert not [p for p in (tmp_path / "t").rglob("*") if p.is_file()]
    assert not (tmp_path / "r.npz").exists()


# --- the live (causal) refiner ---------------------------------------------------------------

def _live(past: int = 4) -> LiveRefiningSmoother:
    return LiveRefiningSmoother(_refiner(past, future=0), CausalSmoother(IdentityFilter((J, 3))), ORIGIN)


def _expected(refiner: TemporalRefiner, feats: list[np.ndarray], pose: np.ndarray) -> np.ndarray:
    """`pose` corrected from the window whose last rows are `feats` (the track's first frame
    filling the rows before them)."""
    rows = [feats[0]] * max(refiner.window - len(feats), 0) + feats[-refiner.window:]
    return pose + refiner.correction(np.stack(rows)).astype(pose.dtype)


def test_a_live_refiner_corrects_each_pose_from_the_frames_before_it() -> None:
    """Nothing waits; the first frames pass through until the camera's rate is known, then each
    pose is corrected from the window of its own and the frames before it."""
    sm = _live()
    j3, j2, conf = _frames(12)
    feats = [frame_features(a, b, c, ORIGIN) for a, b, c in zip(j3, j2, conf)]
    for k in range(12):
        got = sm.push(k / FPS, j3[k], conf[k], j2[k])
        assert len(got) == 1
        want = j3[k] if k < MIN_INTERVALS else _expected(sm.refiner, feats[:k + 1], j3[k])
        np.testing.assert_allclose(got[0], want, atol=1e-6)
    assert sm.refined == 12 - MIN_INTERVALS and sm.lag == 0
    with pytest.raises(ValueError, match="look ahead"):
        LiveRefiningSmoother(_refiner(2), CausalSmoother(IdentityFilter((J, 3))), ORIGIN)


def test_a_dropped_frame_leaves_no_place_in_the_window() -> None:
    """The window holds the poses as they came: with a stale frame dropped, the poses after it
    are corrected as if the frames had come one after the other."""
    j3, j2, conf = _frames(12)
    came = [k for k in range(12) if k not in (6, 7)]
    dropped, even = _live(), _live()
    for i, k in enumerate(came):
        a = dropped.push(k / FPS, j3[k], conf[k], j2[k])
        b = even.push(i / FPS, j3[k], conf[k], j2[k])
        np.testing.assert_allclose(a[0], b[0], atol=1e-6)
    assert dropped.refined == even.refined == len(came) - MIN_INTERVALS


def test_a_live_refiner_rests_at_a_rate_too_slow_and_after_a_gap_starts_afresh() -> None:
    """At 5 poses a second the window spans other motion than it was measured on: the poses pass
    through. After a pause longer than RESET_GAP_S the window starts again from the next
    frame, as a new track's."""
    slow = _live()
    j3, j2, conf = _frames(12)
    for k in range(12):
        np.testing.assert_array_equal(slow.push(k / 5.0, j3[k], conf[k], j2[k])[0], j3[k])
    assert slow.refined == 0
    sm, fresh = _live(), _live()
    for k in range(6):
        sm.push(k / FPS, j3[k], conf[k], j2[k])
    for k in range(6):                         # the rate is known already: only the window restarts
        fresh.push(100.0 + k / FPS, j3[k], conf[k], j2[k])
    t0 = 5 / FPS + 2 * RESET_GAP_S
    feats = [frame_features(a, b, c, ORIGIN) for a, b, c in zip(j3[6:], j2[6:], conf[6:])]
    for i, k in enumerate(range(6, 12)):
        got = sm.push(t0 + i / FPS, j3[k], conf[k], j2[k])
        np.testing.assert_allclose(got[0], _expected(sm.refiner, feats[:i + 1], j3[k]), atol=1e-6)


def test_a_fast_live_source_is_refined_from_every_second_pose() -> None:
    """At 60 poses a second the window reads every second pose back from each one: the span of
    time it learned from. Its history is kept for that from the start."""
    sm = _live()
    j3, j2, conf = _frames(24)
    feats = [frame_features(a, b, c, ORIGIN) for a, b, c in zip(j3, j2, conf)]
    for k in range(24):
        got = sm.push(k / 60.0, j3[k], conf[k], j2[k])
        want = j3[k] if k < MIN_INTERVALS else _expected(sm.refiner, feats[k % 2:k + 1:2], j3[k])
        np.testing.assert_allclose(got[0], want, atol=1e-6)
    assert sm.refined == 24 - MIN_INTERVALS
    assert len(sm._feats) == sm.refiner.past * 2          # what the next pose's window reaches back to


def test_a_stream_that_delivers_frames_in_pairs_is_read_at_its_real_rate() -> None:
    """Pairs of frames 2 ms apart every 80 ms are 25 poses a second: once a few pairs have shown
    it, the window reads every pose, as for frames evenly spaced (the median interval, 2 ms, would
    read 500 a second and every 16th pose)."""
    j3, j2, conf = _frames(40)
    pairs, even = _live(), _live()
    for k in range(40):
        a = pairs.push((k // 2) * 0.08 + (k % 2) * 0.002, j3[k], conf[k], j2[k])
        b = even.push(k * 0.04, j3[k], conf[k], j2[k])
        if k >= 2 * MIN_INTERVALS:
            np.testing.assert_allclose(a[0], b[0], atol=1e-6)
    assert pairs.refined == even.refined == 40 - MIN_INTERVALS
    assert pairs.refiner.stride(1.0 / pairs.frame_interval()) == 1


def test_a_live_refiner_is_causal_and_for_its_model(tmp_path: Path) -> None:
    model = tmp_path / "m.pt"
    model.write_bytes(b"weights")
    _refiner(2, digest=file_sha256(model)).save(tmp_path / "ahead.npz")
    _refiner(2, digest=file_sha256(model), future=0).save(tmp_path / "causal.npz")
    assert resolve_refiner(str(tmp_path / "causal.npz"), model, live=True).future == 0
    with pytest.raises(RefinerFileError, match="frames ahead.*filter.live_refiner: off"):
        resolve_refiner(str(tmp_path / "ahead.npz"), model, live=True)
    with pytest.raises(ConfigError, match="filter.live_refiner must be"):
        load_pipeline_config(None, {"filter": {"live_refiner": " "}})


@pytest.mark.parametrize("live,method", [(True, "auto"), (False, "auto"), (True, "off")])
def test_the_align_stage_refines_live_sources_with_the_causal_refiner(live: bool, method: str) -> None:
    cfg = replace(default_model_config(), offsets_frame="camera")
    config = load_pipeline_config(None, {"filter": {"method": method}})
    stage = AlignStage(cfg, config, "", "", control=None, reporter=None,  # type: ignore[arg-type]
                       refiner=_refiner(3), live_refiner=_refiner(3, future=0))
    ring = 4 if live else 24                   # live sources keep only their newest frames
    stage.start(live, ring, FPS)
    assert isinstance(stage.smoother, LiveRefiningSmoother) == (live and method != "off")
    if not live:
        assert isinstance(stage.smoother, RefiningSmoother)
    packets = result_packets(stage, 30, range(10, 12), FPS, ring)
    out = []
    for p in packets:
        out += stage.align(p.to_dict())
    out += stage.flush()
    assert len(out) == 30
    if isinstance(stage.smoother, LiveRefiningSmoother):
        assert stage.smoother.refined == 28 - MIN_INTERVALS      # every pose found, once the rate is known


def test_the_shipped_live_refiner_is_causal_and_for_the_shipped_model() -> None:
    from engines.models import SHIPPED_DEFAULT
    from streamer.refiner import SHIPPED_LIVE_REFINER

    if not SHIPPED_LIVE_REFINER.exists():
        pytest.skip("no live refiner is shipped")
    refiner = resolve_refiner("auto", SHIPPED_DEFAULT, live=True)
    assert refiner is not None and refiner.future == 0


def test_a_live_run_is_refined_as_the_config_says(posecast, clip40: Path, tmp_path: Path, default_model) -> None:
    """`posecast run` on a file (played in real time, as a live source): a causal refiner named in
    the config changes the poses; one that looks ahead is refused with one line and exit 2."""
    model = default_model.checkpoint_path
    causal, ahead = tmp_path / "causal.npz", tmp_path / "ahead.npz"
    _refiner(3, digest=file_sha256(model), future=0).save(causal)
    _refiner(3, digest=file_sha256(model)).save(ahead)
    poses = {}
    for name, value in (("causal", causal), ("off", "off"), ("ahead", ahead)):
        config = tmp_path / f"{name}.yaml"
        config.write_text(f"filter:\n  live_refiner: {value}\n")
        out = tmp_path / f"track_{name}.npz"
        r = posecast.run(["run", clip40, "-o", out, "--port", "0", "--no-progress", "--config", config])
        if name == "ahead":
            lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
            assert r.returncode == 2 and len(lines) == 1 and "filter.live_refiner: off" in lines[0]
            assert not out.exists()
            continue
        assert r.returncode == 0, r.stderr
        with np.load(out) as t:
            poses[name] = dict(zip(np.rint(t["t_media"] * 30).astype(int), t["joints_3d"]))
    common = [k for k in poses["causal"] if k in poses["off"] and np.isfinite(poses["off"][k]).all()]
    # A loaded machine drops live frames (on purpose), so fewer frames than the clip's 40 may be in
    # both runs; the refiner passes the first three through, so a few more are enough to tell.
    assert len(common) >= 8
    assert max(np.abs(poses["causal"][k] - poses["off"][k]).max() for k in common) > 1e-4


def test_a_missing_or_damaged_refiner_file_is_named_with_its_setting(tmp_path: Path) -> None:
    model = tmp_path / "m.pt"
    model.write_bytes(b"weights")
    with pytest.raises(RefinerFileError, match="not found.*filter.live_refiner takes auto, off"):
        resolve_refiner(str(tmp_path / "none.npz"), model, live=True)
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(RefinerFileError, match="cannot read.*damaged or not a refiner") as err:
        resolve_refiner(str(tmp_path / "junk.npz"), model)
    assert "pickle" not in str(err.value)


def _fake_track(path: Path, frames: int) -> None:
    """A `posecast track --filter off` file: a person in every frame, one track."""
    j3, j2, conf = _frames(frames, 0)
    j3 = j3 - j3[:, ORIGIN:ORIGIN + 1]
    np.savez(path, found=np.ones(frames, bool), person_id=np.zeros(frames, np.int64), joints_3d=j3.astype(np.float32),
             joints_2d=j2.astype(np.float32), root_3d=np.zeros((frames, 3), np.float32), conf=conf.astype(np.float32))


def _fake_clips(tmp_path: Path, motions: dict[int, str], frames: int = 12) -> list[tuple[Path, Path, dict]]:
    folder = tmp_path / "clips_train"
    folder.mkdir(exist_ok=True)
    clips = []
    for k, motion in motions.items():
        video = folder / f"clip_{k:03d}.mp4"
        video.write_bytes(b"")
        clips.append((folder, video, {"joints_3d": np.zeros((frames, J, 3), np.float32), "motion": np.str_(motion)}))
    return clips


def test_held_out_clips_share_no_motion_with_the_training_clips(tmp_path: Path, monkeypatch) -> None:
    """Clips drawn from one motion (here clips 2i and 2i + 1; a clip and its webcam view alike)
    must not land on both sides of the split: the held-out figure would then be of motions it
    learned."""
    monkeypatch.setattr("train.temporal.track_clip",
                        lambda video, labels, out, model, method: _fake_track(out, len(labels["joints_3d"])))
    sources = ("h36m/S1/Sitting {}", "cmu/{}_01", "deepmimic/humanoid3d_{}")
    motions = {k: sources[(k // 2) % 3].format(k // 2) for k in range(60)}
    got = collect(_fake_clips(tmp_path, motions), tmp_path / "tracks", Path("m.pt"), "0" * 64, 2, 2)
    sides = [c.held_out for c in got]
    assert sides[0::2] == sides[1::2] and any(sides) and not all(sides)


def test_every_source_has_held_out_motions() -> None:
    """About a tenth of each source's clips, in whole groups of motions, whatever the clips'
    numbers (every tenth clip by number held out no Human3.6M clip)."""
    from train.temporal import held_out_groups, motion_group

    assert motion_group("h36m/S1/Sitting 2") == motion_group("h36m/S1/Sitting") != motion_group("h36m/S5/Sitting")
    rng = np.random.default_rng(0)
    names = {"h36m": [f"h36m/S{s}/{a}{t}" for s in (1, 5, 6, 7) for a in ("Walking", "Sitting", "Eating", "Photo")
                      for t in ("", " 1")],
             "cmu": [f"cmu/{s}_{n:02d}" for s in range(10, 40) for n in range(3)],
             "deepmimic": [f"deepmimic/humanoid3d_{m}" for m in ("roll", "crawl", "run", "walk", "jump", "flip")]}
    turns = ("h36m", "cmu", "h36m", "deepmimic")          # train.synth.clip's SOURCE_TURNS
    motions = [str(rng.choice(names[turns[k % 4]])) for k in range(400)]
    held = held_out_groups(motions)
    for source in names:
        share = np.mean([motion_group(m) in held for m in motions if m.startswith(source)])
        assert 0.05 <= share <= 0.25, (source, share)


def test_a_track_of_another_render_of_the_clip_is_not_paired_with_its_labels(tmp_path: Path, monkeypatch) -> None:
    """A kept track whose frames are not the labels' would pair each window with another frame's
    truth (and shift every later clip's targets): it is tracked again where older than the video,
    and refused where it still does not fit."""
    calls = []

    def track(video, labels, out, model, method):
        calls.append(video.name)
        _fake_track(out, len(labels["joints_3d"]))

    monkeypatch.setattr("train.temporal.track_clip", track)
    tracks = tmp_path / "tracks"
    old = tracks / ("0" * 16) / "clips_train_clip_000.npz"     # where collect keeps it for digest "0" * 64
    old.parent.mkdir(parents=True)
    _fake_track(old, 15)                            # an earlier render's track: 15 frames, the clip 12
    with pytest.raises(Exception, match="15 frames"):
        clip_windows(old, {"joints_3d": np.zeros((12, J, 3), np.float32)}, 2, 2)
    os.utime(old, (1, 1))                           # older than the clip rendered again
    got = collect(_fake_clips(tmp_path, {0: "cmu/35_29"}), tracks, Path("m.pt"), "0" * 64, 2, 2)
    assert calls == ["clip_000.mp4"] and len(got[0].windows) == len(got[0].targets) == 12


def test_a_kept_track_follows_its_video_not_its_age(tmp_path: Path, monkeypatch) -> None:
    """A clip copied or touched (its video newer, its bytes the same) keeps its track; a track copied
    in, or touched, after its clip was rendered again (newer than the video, of the old render and
    of the same length, as a render from the same seed is) is tracked again."""
    calls = []

    def track(video, labels, out, model, method):
        calls.append(video.read_bytes())
        _fake_track(out, len(labels["joints_3d"]))

    monkeypatch.setattr("train.temporal.track_clip", track)
    clips = _fake_clips(tmp_path, {0: "cmu/35_29"})
    video = clips[0][1]
    video.write_bytes(b"the first render")
    run = lambda: collect(clips, tmp_path / "tracks", Path("m.pt"), "0" * 64, 2, 2)   # noqa: E731
    run()
    assert calls == [b"the first render"]
    later = video.stat().st_mtime + 100
    os.utime(video, (later, later))                  # copied (cp without -p) or touched
    run()
    assert calls == [b"the first render"]
    video.write_bytes(b"the second render")         # rendered again, the old track copied in after it
    os.utime(video, (1, 1))
    run()
    assert calls == [b"the first render", b"the second render"]


def test_a_kept_track_follows_the_pipeline_settings(tmp_path: Path, monkeypatch) -> None:
    """A track made under other pipeline settings (configs/pipeline.yaml changed since) is not
    this pipeline's output: it is tracked again. One kept from before tracks recorded the settings
    is taken as made with these, and says so from then on."""
    from train.temporal import CONFIG_KEY, SOURCE_KEY, pipeline_digest, track_record

    calls = []

    def track(video, labels, out, model, method):
        calls.append(video.name)
        _fake_track(out, len(labels["joints_3d"]))

    monkeypatch.setattr("train.temporal.track_clip", track)
    clips = _fake_clips(tmp_path, {0: "cmu/35_29"})
    kept = tmp_path / "tracks" / ("0" * 16) / "clips_train_clip_000.npz"
    run = lambda: collect(clips, tmp_path / "tracks", Path("m.pt"), "0" * 64, 2, 2)   # noqa: E731
    run()
    assert calls == ["clip_000.mp4"] and track_record(kept)[CONFIG_KEY] == pipeline_digest()
    run()
    assert len(calls) == 1                                    # the same settings: kept
    monkeypatch.setattr("train.temporal.pipeline_digest", lambda: "f" * 64)
    run()
    assert len(calls) == 2 and track_record(kept) == {SOURCE_KEY: file_sha256(clips[0][1]), CONFIG_KEY: "f" * 64}
    _fake_track(kept, 12)                                     # kept from before any record
    os.utime(kept, (kept.stat().st_mtime + 100,) * 2)          # newer than its video
    run()
    assert len(calls) == 2 and track_record(kept) == {SOURCE_KEY: file_sha256(clips[0][1]), CONFIG_KEY: "f" * 64}


def test_the_held_out_share_of_a_source_stays_under_a_fifth() -> None:
    """Groups are taken until a tenth is held out, but never one that takes the source past a
    fifth: 9 clips held, then a group of 20 of the 100 would hold out 29%."""
    import zlib

    from train.temporal import held_out_groups

    names = sorted((f"deepmimic/m{i}" for i in range(200)), key=lambda g: (zlib.crc32(g.encode()), g))
    motions = [names[0]] * 9 + [names[1]] * 20 + names[2:73]        # 100 clips, in hash order
    share = np.mean([m in held_out_groups(motions) for m in motions])
    assert 0.05 <= share <= 0.2, share
