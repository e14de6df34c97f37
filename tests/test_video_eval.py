"""Scoring a track against a rendered clip's labels (train/video_eval.py), and the clips' geometry
(train/synth/clip.py) that needs no renderer."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from engines.skeleton import H36M17
from train.synth.body import JOINTS_VERSION
from train.synth.clip import clip_length, play, random_camera, turned
from train.video_eval import score_track

from clips import write_clip_labels

J = H36M17.num_joints


def _video_eval(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`python -m train.video_eval ARGS` as a user runs it: its exit code and one-line errors."""
    return subprocess.run([sys.executable, "-m", "train.video_eval", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def _labels(frames: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    j3d = rng.normal(0, 0.3, (frames, J, 3)) + np.array([0.0, 0.0, 4.0])
    j2d = j3d[..., :2] / j3d[..., 2:] * 500.0 + 240.0
    return {"joints_3d": j3d, "joints_2d": j2d, "visible": np.ones((frames, J), bool)}


def _track(labels: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pred = labels["joints_3d"] - labels["joints_3d"][:, :1]          # the track is pelvis-relative
    return np.ones(len(pred), bool), pred.copy(), labels["joints_2d"].copy()


def test_a_perfect_track_scores_zero_error_and_full_pck():
    labels = _labels()
    s = score_track(*_track(labels), labels).summary()
    assert s["found"] == 1.0 and s["pck"] == 1.0
    assert s["mpjpe_mm"] == pytest.approx(0, abs=1e-9) and s["pa_mpjpe_mm"] == pytest.approx(0, abs=1e-6)
    assert s["accel_mm"] == pytest.approx(0, abs=1e-9)


def test_the_pelvis_is_subtracted_from_both_sides():
    labels = _labels()
    found, pred, pts = _track(labels)
    s = score_track(found, pred + np.array([1.0, -2.0, 3.0]), pts, labels).summary()
    assert s["mpjpe_mm"] == pytest.approx(0, abs=1e-9)


def test_an_offset_joint_costs_its_share_of_the_mean():
    labels = _labels()
    found, pred, pts = _track(labels)
    pred[:, H36M17.index("l_wrist")] += np.array([0.0, 0.17, 0.0])
    s = score_track(found, pred, pts, labels).summary()
    assert s["mpjpe_mm"] == pytest.approx(170.0 / J)
    assert s["accel_mm"] == pytest.approx(0, abs=1e-9)        # a constant error does not jitter


def test_jitter_shows_as_acceleration_error_and_frames_without_a_person_are_left_out():
    labels = _labels(frames=8)
    found, pred, pts = _track(labels)
    d = 0.01
    pred[:, H36M17.index("r_knee"), 0] += d * (-1.0) ** np.arange(8)          # +d, -d, +d, ...
    s = score_track(found, pred, pts, labels).summary()
    assert s["accel_mm"] == pytest.approx(4 * d * 1000 / J)                   # |d - 2(-d) + d| = 4d
    found[3] = False
    pts[3] = 0.0                                                              # far off, but not counted
    s2 = score_track(found, pred, pts, labels)
    assert s2.found == 7 and s2.accel_triples == 6 - 3 and s2.summary()["pck"] == 1.0


def test_2d_jitter_shows_as_2d_acceleration_error_and_a_constant_offset_does_not():
    labels = _labels(frames=8)
    found, pred, pts = _track(labels)
    assert score_track(found, pred, pts, labels).summary()["accel_2d_px"] == pytest.approx(0, abs=1e-9)
    pts[:, H36M17.index("l_ankle")] += np.array([5.0, -3.0])
    assert score_track(found, pred, pts, labels).summary()["accel_2d_px"] == pytest.approx(0, abs=1e-9)
    pts[:, H36M17.index("l_ankle"), 1] += 2.0 * (-1.0) ** np.arange(8)                  # +2, -2, ... px
    s = score_track(found, pred, pts, labels)
    assert s.summary()["accel_2d_px"] == pytest.approx(4 * 2.0 / J)
    found[3] = False                                                                  # its triples left out
    assert score_track(found, pred, pts, labels).accel_2d_sum == pytest.approx(3 * 8.0 / J)


def test_root_error_is_the_pelvis_place_in_the_camera_and_its_jitter():
    labels = _labels(frames=8)
    found, pred, pts = _track(labels)
    truth = labels["joints_3d"][:, H36M17.index("pelvis")]
    s = score_track(found, pred, pts, labels, truth.copy()).summary()
    assert s["root_mm"] == pytest.approx(0, abs=1e-9) and s["root_accel_mm"] == pytest.approx(0, abs=1e-9)
    far = truth + np.array([0.0, 0.0, 0.5])                                   # half a metre too deep
    s = score_track(found, pred, pts, labels, far).summary()
    assert s["root_mm"] == pytest.approx(500.0) and s["root_accel_mm"] == pytest.approx(0, abs=1e-9)
    shaky = truth + np.array([0.02, 0.0, 0.0]) * (-1.0) ** np.arange(8)[:, None]
    found[5] = False
    shaky[5] = np.nan                                                         # no person: not scored
    s = score_track(found, pred, pts, labels, shaky).summary()
    assert s["root_mm"] == pytest.approx(20.0) and s["root_accel_mm"] == pytest.approx(80.0)
    assert np.isnan(score_track(found, pred, pts, labels).summary()["root_mm"])   # no root given
    shaky[2] = np.nan
    with pytest.raises(ValueError, match="root_3d is not finite"):
        score_track(found, pred, pts, labels, shaky)


def test_pck_counts_visible_joints_within_a_fifth_of_the_torso_diagonal():
    labels = _labels()
    found, pred, pts = _track(labels)
    a, b = H36M17.index("l_shoulder"), H36M17.index("r_hip")
    torso = np.linalg.norm(labels["joints_2d"][:, a] - labels["joints_2d"][:, b], axis=-1)
    k = H36M17.index("head_top")
    pts[:, k, 0] += 0.25 * torso
    labels["visible"][:, H36M17.index("l_ankle")] = False
    s = score_track(found, pred, pts, labels)
    assert s.pck_joints == 6 * (J - 1) and s.pck_hits == 6 * (J - 2)


def test_conf_calibration_pools_over_clips_as_over_all_their_joints():
    from train.metrics import calibration
    from train.video_eval import EMPTY, conf_table

    rng = np.random.default_rng(3)
    scores, confs, hits = [], [], []
    for seed in range(3):
        labels = _labels(frames=5, seed=seed)
        found, pred, pts = _track(labels)
        a, b = H36M17.index("l_shoulder"), H36M17.index("r_hip")
        torso = np.linalg.norm(labels["joints_2d"][:, a] - labels["joints_2d"][:, b], axis=-1)
        miss = rng.random(pts.shape[:2]) < 0.3
        pts[miss] += np.array([1.0, 0.0]) * torso[:, None, None].repeat(J, 1)[miss]   # a torso off: a miss
        found[-1] = False                                                  # not counted
        labels["visible"][:, H36M17.index("r_wrist")] = False              # not counted either
        conf = rng.random(pts.shape[:2])
        scores.append(score_track(found, pred, pts, labels, conf=conf))
        counted = found[:, None] & labels["visible"]
        confs.append(conf[counted])
        hits.append(~miss[counted])
    pooled = sum(scores, EMPTY)
    assert pooled.conf_bins[0].sum() == pooled.pck_joints == sum(len(c) for c in confs)
    expected = calibration(np.concatenate(confs), np.concatenate(hits))
    assert pooled.summary()["conf_ece"] == pytest.approx(expected["ece"])
    table = conf_table(pooled.conf_bins)
    assert len(table) == len(expected["bins"])
    for got, want in zip(table, expected["bins"]):
        assert got == pytest.approx(want)
    assert np.isnan(score_track(*_track(_labels()), _labels()).summary()["conf_ece"])   # no conf given


def test_a_track_of_another_length_is_refused():
    labels = _labels()
    found, pred, pts = _track(labels)
    with pytest.raises(ValueError, match="frames"):
        score_track(found[:-1], pred[:-1], pts[:-1], labels)


def test_play_interpolates_the_10hz_motion_at_the_clip_rate():
    poses = np.random.default_rng(1).normal(size=(5, J, 3))
    np.testing.assert_allclose(play(poses, 10.0, 5, 0.0), poses)
    half = play(poses, 20.0, 9, 0.0)
    np.testing.assert_allclose(half[::2], poses)
    np.testing.assert_allclose(half[1::2], (poses[:-1] + poses[1:]) / 2)
    assert clip_length(5, 20.0, 100) == 9 and clip_length(5, 20.0, 4) == 4 and clip_length(1, 25.0, 10) == 1


@pytest.mark.parametrize("seed", range(6))
def test_a_random_camera_keeps_every_joint_of_the_clip_in_view(seed):
    rng = np.random.default_rng(seed)
    walk = np.zeros((40, J, 3))
    walk[..., 2] = np.linspace(0.0, 1.7, J)[None]                       # an upright stick person
    walk[..., 0] += np.linspace(0.0, 4.0, 40)[:, None]                   # walking 4 m along x
    walk = turned(walk, rng.uniform(0, 2 * np.pi))
    size = 480
    cam = random_camera(rng, walk, size)
    pts = (walk.reshape(-1, 3) - cam.centre) @ cam.rot.T
    fx, fy, cx, cy = cam.intrinsics
    assert np.all(pts[:, 2] > 2.5)
    uv = pts[:, :2] / pts[:, 2:] * [fx, fy] + [cx, cy]
    assert np.all((uv > 0.05 * size) & (uv < 0.95 * size))


@pytest.mark.parametrize("args, message", [
    (["--clips", "NOWHERE"], "no clip_*.npz"),
    (["--clips", ".", "--model", "missing.pt"], "model missing.pt not found"),
    (["--clips", ".", "--model", "model.onnx", "--json", "model.onnx"], "--json must name a .json file"),
    (["--clips", ".", "--json", "."], "cannot write --json '.': it is a folder"),
    (["--clips", ".", "--json", "no/such/folder.json"], "folder 'no/such' does not exist"),
])
def test_video_eval_refuses_missing_inputs_with_one_line(tmp_path, args, message):
    (tmp_path / "model.onnx").write_bytes(b"a model")
    args = [str(tmp_path / a) if a == "NOWHERE" else a for a in args]
    r = _video_eval(*args, cwd=tmp_path)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and message in r.stderr


def test_video_eval_against_needs_a_report_of_the_same_clips(tmp_path):
    """--against pairs clips by name: another command's JSON is refused before the run, and
    another folder's clips (the same names, other motions) after it, each in one line."""
    from train.video_eval import paired_clip_problem

    (tmp_path / "evaluate.json").write_text(json.dumps({"synthetic": {"samples": 3}}))
    r = _video_eval("--clips", str(tmp_path), "--against", str(tmp_path / "evaluate.json"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "not a --json report of this command" in r.stderr
    ours = {"clip_000": {"motion": "cmu/07_03"}, "clip_001": {"motion": "h36m/S8/Walking"}}
    assert paired_clip_problem(ours, dict(ours), tmp_path) is None
    assert "scored none of these clips" in paired_clip_problem(ours, {"clip_009": {"motion": "x"}}, tmp_path)
    other = paired_clip_problem(ours, {"clip_000": {"motion": "h36m/S8/Directions"}}, tmp_path)
    assert "clip_000: h36m/S8/Directions there, cmu/07_03 here" in other


def test_video_eval_refuses_a_broken_label_file(tmp_path):
    (tmp_path / "clip_000.npz").write_bytes(b"PK\x03\x04broken")
    (tmp_path / "clip_000.mp4").write_bytes(b"")
    r = _video_eval("--clips", str(tmp_path))
    assert r.returncode == 2 and "not a readable clip label file" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("version", [None, JOINTS_VERSION - 1])
def test_clips_with_older_joint_labels_are_refused(tmp_path, version):
    """Clips rendered before the knees and neck_nose moved (their labels hold no version, or an
    older one) would score a model, or train a refiner, against the old joints: refused in one
    line that says how to make them again, by the evaluation and by the refiner's training."""
    from train.temporal import main as temporal

    write_clip_labels(tmp_path, joints_version=None if version is None else np.int64(version))
    r = _video_eval("--clips", str(tmp_path))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert f"joint labels of version {version or 1}" in r.stderr and "python -m train.synth.clip" in r.stderr
    with pytest.raises(SystemExit) as exc:
        temporal(["--clips", str(tmp_path), "--tracks", str(tmp_path / "t"), "--out", str(tmp_path / "r.npz")])
    assert exc.value.code == 2 and not (tmp_path / "t").exists()


def test_paired_difference_pools_by_frames_and_brackets_a_consistent_gain():
    from train.video_eval import paired_difference, pooled

    def clip(frames, mpjpe, found=1.0):
        return {"frames": frames, "found": found, "mpjpe_mm": mpjpe}

    assert pooled([clip(100, 10.0), clip(300, 20.0)], "mpjpe_mm") == pytest.approx(17.5)
    assert pooled([clip(100, 10.0, found=0.5), clip(50, 40.0)], "mpjpe_mm") == pytest.approx(25.0)
    rng = np.random.default_rng(0)
    base = {f"c{i}": clip(int(rng.integers(50, 150)), float(rng.uniform(60, 200))) for i in range(20)}
    better = {k: {**v, "mpjpe_mm": v["mpjpe_mm"] - 5.0} for k, v in base.items()}
    diff, low, high = paired_difference(better, base, "mpjpe_mm")
    assert diff == pytest.approx(-5.0) and low == pytest.approx(-5.0) and high == pytest.approx(-5.0)
    noisy = {k: {**v, "mpjpe_mm": v["mpjpe_mm"] + float(rng.normal(0, 20))} for k, v in base.items()}
    diff, low, high = paired_difference(noisy, base, "mpjpe_mm")
    assert low < diff < high and high - low > 5.0
    with pytest.raises(ValueError, match="no clip"):
        paired_difference({"a": clip(1, 1.0)}, {"b": clip(1, 1.0)}, "mpjpe_mm")


def test_the_pooled_figures_get_an_interval_over_clips():
    """A clip set's pooled figure, with how much it would move on other clips like these: the
    interval is drawn from the clips' own values, and a clip never found counts for nothing."""
    from train.video_eval import interval_row, pooled, pooled_interval

    rng = np.random.default_rng(1)
    keys = ("found", "mpjpe_mm", "pa_mpjpe_mm", "pck", "accel_mm", "accel_2d_px", "root_mm", "root_accel_mm")
    clips = [{"frames": int(rng.integers(50, 150)), **{k: float(rng.uniform(0.5, 1.0) if k in ("found", "pck")
                                                                else rng.uniform(60, 200)) for k in keys}}
             for _ in range(12)]
    clips.append({"frames": 80, **{k: (0.0 if k == "found" else float("nan")) for k in keys}})
    got = pooled_interval(clips, "mpjpe_mm")
    values = [c["mpjpe_mm"] for c in clips[:-1]]
    assert got.value == pytest.approx(pooled(clips, "mpjpe_mm"))
    assert min(values) <= got.low < got.value < got.high <= max(values)
    same = pooled_interval([{**c, "mpjpe_mm": 100.0} for c in clips[:-1]], "mpjpe_mm")
    assert same.low == pytest.approx(100.0) and same.high == pytest.approx(100.0)
    row = interval_row(clips)
    assert row.startswith("| 95% interval over the 13 clips |") and "nan" not in row


def test_clips_pool_by_what_each_figure_is_a_mean_over():
    """PCK is over counted joints, the accelerations over frame triples, the root over frames with
    a root: the pooled figures (and their intervals) must equal the **all** row's, which sums the
    clips' scores."""
    from train.video_eval import ClipScore, EMPTY, pooled, pooled_interval

    with_root = ClipScore(100, 90, 90 * 120.0, 90 * 80.0, 700, 800, 88 * 5.0, 88, 90 * 400.0, 90, 88 * 6.0, 0, 88 * 1.0)
    with_root.root_triples = 88
    scores = [with_root, ClipScore(60, 20, 20 * 200.0, 20 * 150.0, 100, 300, 5 * 9.0, 5, 0.0, 0, 0.0, 0, 5 * 3.0)]
    clips = [sc.summary() for sc in scores]
    everything = sum(scores, EMPTY).summary()
    for key in ("found", "mpjpe_mm", "pa_mpjpe_mm", "pck", "accel_mm", "accel_2d_px", "root_mm", "root_accel_mm"):
        assert pooled(clips, key) == pytest.approx(everything[key]), key
        assert pooled_interval(clips, key).value == pytest.approx(everything[key]), key


def test_clip_rendering_refuses_a_missing_body_bank_with_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "train.synth.clip", "--out", str(tmp_path / "c"),
                        "--bodies", str(tmp_path / "none.npz")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "body bank" in r.stderr and "not found" in r.stderr


@pytest.mark.parametrize("with_focal", [True, False])
def test_the_clip_camera_is_given_to_the_pipeline(monkeypatch, tmp_path, with_focal):
    # A webcam view is cut off-centre from its clip: the pipeline needs its principal point too,
    # or the root is off by the cut's offset (a metre at 5 m on those views).
    from train import video_eval

    labels = {**_labels(), "focal": np.float64(800.0), "intrinsics": np.array([800.0, 800.0, 140.5, 390.25])}
    seen = []

    def fake_run(cmd, **kwargs):
        seen.append(cmd)
        found, pred, j2d = _track(labels)
        np.savez(tmp_path / "t.npz", found=found, joints_3d=pred, joints_2d=j2d, root_3d=labels["joints_3d"][:, 0],
                 conf=np.full(j2d.shape[:2], 0.75))
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(video_eval.subprocess, "run", fake_run)
    score = video_eval.run_clip(tmp_path / "c.mp4", labels, tmp_path / "t.npz", None, "auto", with_focal, None)
    assert score.summary()["root_mm"] == pytest.approx(0.0, abs=1e-9)
    assert score.summary()["conf_ece"] == pytest.approx(0.25)     # every joint a hit at conf 0.75
    cmd = seen[0]
    if with_focal:
        assert cmd[cmd.index("--focal") + 1] == "800.000"
        assert cmd[cmd.index("--principal") + 1: cmd.index("--principal") + 3] == ["140.500", "390.250"]
    else:
        assert "--focal" not in cmd and "--principal" not in cmd


def test_a_live_run_is_scored_on_the_clips_frames_by_media_time(monkeypatch, tmp_path):
    """`--live`: `posecast run` plays the clip in real time; its track's rows are laid on the
    clip's frames by media time, and a frame it dropped counts as dropped and not found."""
    from train import video_eval

    labels = {**_labels(8), "focal": np.float64(800.0), "fps": np.float64(25.0)}
    kept = np.array([0, 1, 2, 4, 5, 7])          # frames 3 and 6 dropped to stay live
    seen = []

    def fake_run(cmd, **kwargs):
        seen.append(cmd)
        found, pred, j2d = _track(labels)
        np.savez(tmp_path / "t.npz", found=found[kept], joints_3d=pred[kept], joints_2d=j2d[kept],
                 root_3d=labels["joints_3d"][kept, 0], conf=np.ones(j2d[kept].shape[:2]),
                 t_media=kept / 25.0 + 0.003)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(video_eval.subprocess, "run", fake_run)
    s = video_eval.run_clip(tmp_path / "c.mp4", labels, tmp_path / "t.npz", None, "auto", True, None, live=True).summary()
    assert seen[0][3:5] == ["run", str(tmp_path / "c.mp4")] and "--port" in seen[0]
    assert s["dropped"] == pytest.approx(2 / 8) and s["found"] == pytest.approx(6 / 8)
    assert s["mpjpe_mm"] == pytest.approx(0.0, abs=1e-9) and s["root_mm"] == pytest.approx(0.0, abs=1e-9)
    with np.load(tmp_path / "t.npz") as t:
        np.savez(tmp_path / "bad.npz", **{k: t[k] for k in t.files if k != "t_media"}, t_media=kept / 10.0)
    with pytest.raises(ValueError, match="media times"):
        video_eval.read_live_track(tmp_path / "bad.npz", 8, 25.0)


def test_a_clip_the_pipeline_refuses_is_the_users_error_not_a_fault(monkeypatch, tmp_path):
    """posecast exits 2 for a bad config, model or input: so does the evaluation, with its line
    (it said rc 1, as for a crash)."""
    from engines.errors import InputError
    from train import video_eval

    def refusing(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 2, "", "posecast: error: cfg.yaml: unknown key 'nope'\n")

    monkeypatch.setattr(video_eval.subprocess, "run", refusing)
    with pytest.raises(InputError, match="posecast track c.mp4 refused: cfg.yaml: unknown key 'nope'"):
        video_eval.run_clip(tmp_path / "c.mp4", _labels(), tmp_path / "t.npz", None, "auto", False, None)


def test_a_training_tool_ends_in_one_line(capsys):
    from engines.errors import InputError
    from train.command import run_command

    def interrupted() -> int:
        raise KeyboardInterrupt

    def refused() -> int:
        raise InputError("no training windows")

    assert run_command("tool", interrupted, "the tracks are kept") == 130
    assert capsys.readouterr().err == "tool: interrupted; the tracks are kept\n"
    assert run_command("tool", refused) == 2
    assert capsys.readouterr().err == "tool: error: no training windows\n"
    assert run_command("tool", lambda: 0) == 0


def test_a_training_tool_stopped_by_sigterm_cleans_up_as_after_ctrl_c(tmp_path):
    """SIGTERM (`kill`, a job scheduler) ends the tool in one line with 143, and what a Ctrl-C
    cleans up is cleaned up: here the temporary folder and the child process."""
    script = tmp_path / "tool.py"
    script.write_text(
        "import subprocess, sys, tempfile, time\n"
        "from train.command import run_command\n"
        "def main():\n"
        "    with tempfile.TemporaryDirectory(dir=sys.argv[1]):\n"
        "        subprocess.run([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "    return 0\n"
        "raise SystemExit(run_command('tool', main, 'nothing was written'))\n")
    work = tmp_path / "work"
    work.mkdir()
    tool = subprocess.Popen([sys.executable, str(script), str(work)], stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    import psutil

    def sleeping_child():
        # Once the child runs its own program (not the fork before exec), and the tool has had
        # time to wait on it: a signal in between is a window of subprocess itself.
        for c in psutil.Process(tool.pid).children():
            with contextlib.suppress(psutil.Error):
                if "time.sleep(60)" in " ".join(c.cmdline()):
                    return c
        return None

    deadline = time.monotonic() + 60
    while (child := sleeping_child()) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert child is not None
    time.sleep(0.5)
    tool.send_signal(signal.SIGTERM)
    _, err = tool.communicate(timeout=60)
    assert tool.returncode == 143 and err == "tool: stopped by SIGTERM; nothing was written\n"
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
    assert list(work.iterdir()) == []


def test_a_training_tool_whose_reader_goes_away_ends_quietly(tmp_path):
    script = "from train.command import run_command\nimport sys\n" \
             "def main():\n    for i in range(100000):\n        print('row', i)\n    return 0\n" \
             "raise SystemExit(run_command('tool', main))\n"
    r = subprocess.run(f"{sys.executable} -c \"$SCRIPT\" | head -1; echo ${{PIPESTATUS[0]}}", shell=True,
                       executable="/bin/bash", capture_output=True, text=True, timeout=120,
                       env={**os.environ, "SCRIPT": script}, cwd=Path(__file__).resolve().parents[1])
    assert r.stdout == "row 0\n141\n" and r.stderr == ""


def test_a_clip_where_no_one_was_found_reads_n_a_not_nan():
    from train.video_eval import format_row

    labels = _labels(frames=4)
    found, pred, pts = _track(labels)
    row = format_row("empty", score_track(np.zeros_like(found), pred, pts, labels).summary())
    assert "nan" not in row and row.count("n/a") == 7 and "| 0.0% |" in row
    row = format_row("full", score_track(found, pred, pts, labels).summary())
    assert "nan" not in row and row.count("n/a") == 2 and "100.0%" in row    # no root_3d given: no root error


def test_a_clip_whose_video_and_labels_disagree_is_named(tmp_path, monkeypatch, capsys):
    from train import video_eval
    from train.command import run_command

    labels = {"motion": "cmu/07_03"}
    monkeypatch.setattr(video_eval, "load_clips", lambda folder: [(tmp_path / "clip_004.mp4", labels)])

    def short_track(*args, **kwargs):
        raise video_eval.ClipMismatch("the track has 86 frames, the clip 150")

    monkeypatch.setattr(video_eval, "run_clip", short_track)
    assert run_command("tool", lambda: video_eval.main(["--clips", str(tmp_path), "--no-progress"])) == 2
    assert capsys.readouterr().err.endswith("tool: error: clip_004.mp4: the track has 86 frames, the clip 150; its "
                                            "video and its labels do not belong together (render the clip again)\n")

    def broken_track(*args, **kwargs):       # another fault of the run, not of the clip: exit 1, said as it is
        raise ValueError("the track's root_3d is not finite in a frame with a person")

    monkeypatch.setattr(video_eval, "run_clip", broken_track)
    assert run_command("tool", lambda: video_eval.main(["--clips", str(tmp_path), "--no-progress"])) == 1
    assert capsys.readouterr().err.endswith("error: clip_004.mp4: the track's root_3d is not finite in a frame "
                                            "with a person\n")


def test_a_report_that_cannot_be_written_still_prints_the_scores(tmp_path, monkeypatch, capsys):
    import contextlib
    import errno

    from train import video_eval

    labels = _labels(frames=4)
    found, pred, pts = _track(labels)
    score = score_track(found, pred, pts, labels)
    monkeypatch.setattr(video_eval, "load_clips", lambda folder: [(tmp_path / "clip_000.mp4", {"motion": "cmu/07_03"})])
    monkeypatch.setattr(video_eval, "run_clip", lambda *args: score)

    @contextlib.contextmanager
    def full_disk(path):
        raise OSError(errno.ENOSPC, "No space left on device")
        yield

    monkeypatch.setattr(video_eval, "replaced_when_done", full_disk)
    assert video_eval.main(["--clips", str(tmp_path), "--no-progress", "--json", str(tmp_path / "r.json")]) == 1
    out, err = capsys.readouterr()
    assert "| clip_000 (cmu/07_03) | 4 | 100.0% |" in out
    assert err.strip().splitlines()[-1] == (f"python -m train.video_eval: error: cannot write --json {tmp_path / 'r.json'}: "
                                            "No space left on device (the scores are printed above)")


@pytest.mark.parametrize("version, says", [(np.array([JOINTS_VERSION]), "not one whole number"),
                                           (np.str_("v2"), "not one whole number"),
                                           (np.float64(JOINTS_VERSION + 0.5), "not one whole number"),
                                           (np.int64(JOINTS_VERSION + 1), "newer than this code's")])
def test_an_odd_joints_version_is_refused_naming_its_file(tmp_path, version, says):
    """A joints_version that is not one whole number, or is newer than the code's, is a ValueError
    naming the label file (one line through video_eval and train.temporal), not a TypeError's
    traceback, a bare int() message, or advice to render the clips again."""
    from train.video_eval import load_clips

    write_clip_labels(tmp_path, joints_version=version)
    with pytest.raises(ValueError, match=says) as err:
        load_clips(tmp_path)
    assert "clip_000.npz" in str(err.value) and "\n" not in str(err.value)
