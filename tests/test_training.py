"""The training recipe loader, the training loop (end to end, resume, Ctrl-C) and evaluation.

Everything runs on tiny fake data written here: shards of random 64 px images with consistent
2D / 3D labels (a jittered standing pose projected by a pinhole camera), and a real-2D folder in
the COCO format of `real2d_fashion`, with a 64 px network.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import torch

from engines.errors import ConfigError, InputError
from engines.skeleton import H36M17
from train.config import load_train_config
from train.shards import ShardWriter, SynthSample, encode_jpeg

REPO = Path(__file__).resolve().parent.parent
SIZE = 64

TINY_MODEL = """\
input_size: 64
grid_size: 8
stem_width: 8
widths: [8, 8, 16, 16]
depths: [1, 1, 1, 1]
expansion: 2
head_width: 8
fusion_fc_width: 16
regressor_width: 16
"""

# A standing pose (metres, person frame: x right, y down), H36M17 order.
STAND = np.array([
    [0.0, 0.0, 0.0], [-0.12, 0.0, 0.0], [-0.12, 0.42, 0.0], [-0.12, 0.84, 0.0], [0.12, 0.0, 0.0],
    [0.12, 0.42, 0.0], [0.12, 0.84, 0.0], [0.0, -0.24, 0.0], [0.0, -0.48, 0.0], [0.0, -0.58, -0.05],
    [0.0, -0.72, 0.0], [0.18, -0.46, 0.0], [0.2, -0.2, 0.0], [0.2, 0.04, 0.0], [-0.18, -0.46, 0.0],
    [-0.2, -0.2, 0.0], [-0.2, 0.04, 0.0],
], dtype=np.float32)


def fake_pose(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(joints_3d camera frame, joints_2d crop pixels) of a jittered pose 4 m away."""
    j3 = STAND + rng.normal(0, 0.03, STAND.shape).astype(np.float32)
    j3[:, 2] += 4.0
    j3[:, 0] += rng.normal(0, 0.05)
    f = SIZE * 2.2                            # the body (1.6 m) spans ~0.9 of the crop
    j2 = f * j3[:, :2] / j3[:, 2:3] + SIZE / 2
    return j3.astype(np.float32), j2.astype(np.float32)


def write_shards(folder: Path, count: int, seed: int, shard_size: int = 8) -> Path:
    rng = np.random.default_rng(seed)
    with ShardWriter(folder, shard_size=shard_size, meta={"fake": True, "seed": seed}) as w:
        for _ in range(count):
            j3, j2 = fake_pose(rng)
            image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
            w.add(SynthSample(encode_jpeg(image), j2, j3, np.ones(17, bool), "fake/walk", "noise"))
    return folder


def write_real2d(folder: Path, count: int, seed: int) -> Path:
    """A keypoints.json in real2d_fashion's COCO format, with random photos."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True)
    coco_names = ["Nose", "Left Eye", "Right Eye", "Left Ear", "Right Ear", "Left Shoulder", "Right Shoulder",
                  "Left Elbow", "Right Elbow", "Left Wrist", "Right Wrist", "Left Hip", "Right Hip",
                  "Left Knee", "Right Knee", "Left Ankle", "Right Ankle"]
    coco_to_h36m = {0: "neck_nose", 5: "l_shoulder", 6: "r_shoulder", 7: "l_elbow", 8: "r_elbow", 9: "l_wrist",
                    10: "r_wrist", 11: "l_hip", 12: "r_hip", 13: "l_knee", 14: "r_knee", 15: "l_ankle",
                    16: "r_ankle"}
    images, annotations = [], []
    for i in range(count):
        w, h = 120, 160
        _, j2 = fake_pose(rng)
        pts = j2 * 1.5 + np.array([w / 2 - SIZE * 0.75, h / 2 - SIZE * 0.75])
        kp = []
        for c in range(17):
            name = coco_to_h36m.get(c, "head_top")
            x, y = pts[H36M17.index(name)]
            kp += [float(x), float(y), 2]
        name = f"img_{i:03d}.jpg"
        cv2.imwrite(str(folder / "images" / name), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        images.append({"id": i + 1, "file_name": name, "width": w, "height": h})
        annotations.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "keypoints": kp, "num_keypoints": 17,
                            "iscrowd": 0})
    coco = {"info": {}, "licenses": [], "images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "person", "keypoints": coco_names, "skeleton": []}]}
    (folder / "keypoints.json").write_text(json.dumps(coco))
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("train-data")
    (root / "tiny_model.yaml").write_text(TINY_MODEL)
    return {
        "root": root,
        "model": root / "tiny_model.yaml",
        "train": write_shards(root / "synth_train" / "a", 16, seed=1).parent,     # a folder of shard folders
        "train_b": write_shards(root / "synth_train" / "b", 8, seed=4),
        "val": write_shards(root / "synth_val", 8, seed=2),
        "real": write_real2d(root / "real2d", 10, seed=3),
    }


def recipe(paths: dict[str, Path], tmp_path: Path, name: str = "tiny", **extra: str) -> Path:
    """A tiny recipe; `extra` replaces whole top-level sections/keys (YAML text)."""
    sections = {
        "name": name,
        "model": f"\n  config: {paths['model']}\n  fusion: conv\n  roots: [pelvis, thorax, r_hip]\n  input_size: null",
        "data": (f"\n  synth_dirs: [{paths['train']}]\n  synth_val_dirs: [{paths['val']}]\n"
                 f"  real2d_dir: {paths['real']}\n  real_fraction: 0.25\n  real_val_fraction: 0.3"),
        "optim": "\n  batch_size: 4\n  steps: 6\n  lr: 0.003\n  warmup_steps: 2\n  grad_clip: 5.0",
        "num_workers": "0", "threads": "1", "checkpoint_every": "3", "val_every": "4", "val_samples": "4",
        "log_every": "1",
    }
    sections.update(extra)
    path = tmp_path / f"{name}.yaml"
    path.write_text("".join(f"{k}: {v}\n" for k, v in sections.items()))
    return path


# --- the recipe --------------------------------------------------------------------------

def test_the_recipes_find_their_data_where_scripts_train_sh_puts_it(monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path: Path) -> None:
    """scripts/train.sh renders into $POSECAST_WORK; the recipes must look there too (they named
    ../data, so a work folder elsewhere trained on whatever ../data held, or found nothing)."""
    from train.config import REPO_ROOT, resolve_path

    cfg = load_train_config(REPO / "configs" / "train" / "default.yaml")
    assert all(d.startswith("$POSECAST_WORK/") for d in (*cfg.data.synth_dirs, *cfg.data.synth_val_dirs))
    monkeypatch.setenv("POSECAST_WORK", str(tmp_path))
    assert resolve_path("$POSECAST_WORK/synth_val") == tmp_path / "synth_val"
    monkeypatch.delenv("POSECAST_WORK")
    assert resolve_path("$POSECAST_WORK/runs") == REPO_ROOT.parent / "data" / "runs"


def test_shipped_recipes_load() -> None:
    expected = {"default": ("conv", 6), "ablation_baseline": ("none", 1), "ablation_multiroot": ("none", 6),
                "ablation_fusion": ("conv", 1), "ablation_both": ("conv", 6)}
    steps = set()
    for name, (fusion, roots) in expected.items():
        cfg = load_train_config(REPO / "configs" / "train" / f"{name}.yaml")
        m = cfg.model_config()
        assert (cfg.name, m.fusion, len(m.roots)) == (name, fusion, roots)
        if name != "default":
            steps.add((cfg.optim.steps, cfg.seed, cfg.data))
    assert len(steps) == 1          # the ablations differ only in the model
    # The shipped model's later stages (scripts/train.sh).
    lifted = load_train_config(REPO / "configs" / "train" / "lifted.yaml")
    assert lifted.freeze_2d and lifted.lifter_from and lifted.model_config().lift_width == 512
    refined = load_train_config(REPO / "configs" / "train" / "refined.yaml")
    assert refined.init_scope == "all" and not refined.freeze_2d and refined.model_config().lift_width == 512
    assert refined.data.negative_fraction > 0 and refined.data.backgrounds_dir and refined.data.real_fraction > 0
    extended = load_train_config(REPO / "configs" / "train" / "extended.yaml")
    assert extended.init_from.endswith("refined/model.pt") and extended.init_scope == "all"
    assert extended.data == refined.data and extended.model_config() == refined.model_config()
    # Trained and validated without test-time mirroring; train/ship.py switches it on when shipping.
    assert extended.model_config().flip_test == "none"


def test_default_recipe_lists_every_key() -> None:
    """configs/train/default.yaml is where a recipe's keys and defaults are read (engines/config.py:
    the YAML files are the only place defaults live); a key only train/config.py knows is hidden."""
    from engines.config import load_yaml, to_dict

    def keys(data: dict, prefix: str = "") -> set[str]:
        return set().union(*({prefix + k} if not isinstance(v, dict) else keys(v, f"{prefix}{k}.")
                             for k, v in data.items()))

    loaded = to_dict(load_train_config(REPO / "configs" / "train" / "default.yaml"))
    listed = keys(load_yaml(REPO / "configs" / "train" / "default.yaml"))
    assert keys(loaded) - listed == set()


def test_evaluate_names_a_folder_given_as_the_model(tmp_path: Path) -> None:
    from engines.errors import ModelFileError
    from train.evaluate import load_predictor

    (tmp_path / "weights").mkdir()
    with pytest.raises(ModelFileError, match="is a folder, not a file"):
        load_predictor(tmp_path / "weights")


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "train").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_recipe_loads_and_builds_its_model(path: Path) -> None:
    """Measured-but-not-shipped recipes stay runnable: each validates and builds its model."""
    cfg = load_train_config(path)
    assert cfg.name == path.stem and cfg.optim.steps > 0
    cfg.model_config()


@pytest.mark.parametrize("text, key", [
    ("optim:\n  stepz: 3\n", "optim.stepz"),
    ("model:\n  fusion: convolution\n", "model.fusion"),
    ("model:\n  roots: [pelvis, nek]\n", "model.roots"),
    ("model:\n  roots: [thorax]\n", "model.roots"),
    ("data:\n  real_fraction: 1.5\n", "data.real_fraction"),
    ("data:\n  negative_fraction: 1.0\n  backgrounds_dir: bg\n", "data.negative_fraction"),
    ("loss:\n  w_neg: -1\n", "loss.w_neg"),
    ("init_scope: everything\n", "init_scope"),
    ("optim:\n  lr: fast\n", "optim.lr"),
    ("lerning_rate: 0.1\n", "lerning_rate"),
    ("seed: -3\n", "seed"),
    # Unbounded, these started 100000 torch threads (a segfault) or 10000 loader processes.
    ("threads: 100000\n", "threads must be between 1 and 256"),
    ("num_workers: 10000\n", "num_workers must be between 0 and 64"),
    ("model:\n  input_size: 99999968\n", "model.input_size"),     # a traceback from torch's allocator
    ("model:\n  config: no_such_model.yaml\n", "model.config: config file not found"),
    # The run would end still warming up, its learning rate never at optim.lr.
    ("optim:\n  steps: 100\n  warmup_steps: 500\n", "optim.warmup_steps (500) must be at most optim.steps (100): "),
])
def test_recipe_errors_name_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "bad_recipe.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_train_config(path)
    msg = str(err.value)
    assert str(path) in msg and key in msg, msg


def test_a_warm_up_as_long_as_the_run_is_the_longest_accepted(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("optim:\n  steps: 100\n  warmup_steps: 100\n")
    assert load_train_config(path).optim.warmup_steps == 100         # the peak reached at the last step
    # --steps shortens the run below the recipe's warm-up: said the same way.
    with pytest.raises(ConfigError, match=r"^command-line options: optim\.warmup_steps \(100\) must be at most "
                                          r"optim\.steps \(99\)"):
        load_train_config(path, {"optim": {"steps": 99}})


def test_recipe_model_overrides(data: dict[str, Path], tmp_path: Path) -> None:
    cfg = load_train_config(recipe(data, tmp_path, model=f"\n  config: {data['model']}\n  input_size: 96\n  fusion: fc"))
    m = cfg.model_config()
    assert (m.input_size, m.grid_size, m.fusion, m.widths) == (96, 12, "fc", (8, 8, 16, 16))
    fine = load_train_config(recipe(data, tmp_path, model=f"\n  config: {data['model']}\n  input_size: 96\n  grid_stride: 4"))
    assert (fine.model_config().grid_size, fine.model_config().grid_stride) == (24, 4)
    cfg = load_train_config(recipe(data, tmp_path), {"optim": {"steps": 9}})
    assert cfg.optim.steps == 9 and cfg.out_dir() == Path("runs") / "tiny"
    # Shard folders: a folder of them, or a glob.
    assert [p.name for p in cfg.synth_dirs()] == ["a", "b"]
    glob = f"\n  synth_dirs: ['{data['train']}/[ab]']\n  real2d_dir: null\n  real_fraction: 0.0"
    assert [p.name for p in load_train_config(recipe(data, tmp_path, data=glob)).synth_dirs()] == ["a", "b"]
    with pytest.raises(ConfigError, match="no shard folder matches"):
        load_train_config(recipe(data, tmp_path, data="\n  synth_dirs: [/nonexistent/x_*]")).synth_dirs()


# --- training ----------------------------------------------------------------------------

def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def test_train_end_to_end_and_resume(data: dict[str, Path], tmp_path: Path, posecast_cache: Path) -> None:
    from engines.models import resolve_model
    from train.train import LAST, train

    cfg = load_train_config(recipe(data, tmp_path))
    # The log of a run stopped before its first checkpoint: the new run starts it again.
    (tmp_path / "straight").mkdir()
    (tmp_path / "straight" / "log.jsonl").write_text('{"step": 1, "loss": 99.0}\n{"step": 2, "loss": 99.0}\n')
    straight = train(cfg, tmp_path / "straight", progress=False)
    assert straight["step"] == 6 and straight["final"]
    log = [json.loads(line) for line in (tmp_path / "straight" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert all(np.isfinite(r["loss"]) and r["img_per_s"] > 0 and 0.0 <= r["data_wait"] <= 1.0 for r in log if "loss" in r)
    vals = [r for r in log if "val" in r]
    assert [r["step"] for r in vals] == [4, 6] and np.isfinite(vals[-1]["val"]["synth_mpjpe_mm"])
    assert 0.0 <= vals[-1]["val"]["real_pck"] <= 1.0

    # Killed after step 3 (its checkpoint), then resumed: the same weights as the straight run.
    sliced = tmp_path / "sliced"
    first = train(cfg, sliced, progress=False, stop_after=3)
    assert first["step"] == 3 and first.get("final") is None and (sliced / LAST).exists()
    assert not (sliced / "model.pt").exists()
    notes: list[str] = []
    second = train(cfg, sliced, progress=False, announce=notes.append)
    assert second["start_step"] == 3 and any("resuming" in n and "step 3" in n for n in notes)
    a, b = _weights(tmp_path / "straight" / "model.pt"), _weights(sliced / "model.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    steps = [json.loads(line)["step"] for line in (sliced / "log.jsonl").read_text().splitlines()]
    assert steps == sorted(steps)            # the log continues, without repeated steps

    # Run again, the run is finished and says so; asked for fewer steps than it has trained, it
    # refuses, its config.json still the recipe its weights were trained on.
    notes = []
    again = train(cfg, sliced, progress=False, announce=notes.append)
    assert again["step"] == 6 and any("is finished (6 of 6 steps): nothing to do" in n for n in notes)
    recorded = (sliced / "config.json").read_text()
    fewer = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, steps=4))
    with pytest.raises(InputError, match=r"has trained 6 steps, more than the 4 asked for; give --steps 6 or more"):
        train(fewer, sliced, progress=False)
    assert (sliced / "config.json").read_text() == recorded

    # The trained model is a Posecast model (what `posecast track --model` resolves).
    artifact = resolve_model(tmp_path / "straight" / "model.pt")
    assert artifact.info.trained and artifact.info.weights.startswith("tiny, step 6, ")
    assert artifact.info.config.roots == ("pelvis", "thorax", "r_hip")
    assert resolve_model(sliced / LAST).info.config.input_size == SIZE     # last.pt loads too


def test_a_run_stopped_between_log_lines_logs_what_an_uninterrupted_one_does(
        data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C after step 3, with a log line every 2 steps: the checkpoint keeps the step-3 loss of
    the window, so the resumed run's step-4 line is the mean of steps 3 and 4, as an uninterrupted
    run's is (it was step 4's alone, a different number in a log said to resume exactly)."""
    from train import step as step_module
    from train.train import TrainingInterrupted, train

    cfg = load_train_config(recipe(data, tmp_path, log_every="2", checkpoint_every="100", val_every="0"))
    train(cfg, tmp_path / "straight", progress=False)

    real_step, calls = step_module.step_losses, []

    def interrupted_at_step_3(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:          # the handler notes it; the loop ends after this step
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(step_module, "step_losses", interrupted_at_step_3)
    with pytest.raises(TrainingInterrupted, match="holds step 3"):
        train(cfg, tmp_path / "resumed", progress=False)
    monkeypatch.setattr(step_module, "step_losses", real_step)
    train(cfg, tmp_path / "resumed", progress=False)

    def losses(run: str) -> list[tuple[int, float, float, float]]:
        rows = [json.loads(line) for line in (tmp_path / run / "log.jsonl").read_text().splitlines()]
        return [(r["step"], r["loss"], r["loss_2d"], r["loss_3d"]) for r in rows if "loss" in r]

    assert [r[0] for r in losses("straight")] == [2, 4, 6]
    assert losses("resumed") == losses("straight")


def test_every_line_of_a_run_validations_included_is_on_stderr(data: dict[str, Path], tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """The validations during the run were written to stdout, every other line (progress, the
    final validation, errors) to stderr: `2> train.log` kept all but them."""
    from train.train import train

    train(load_train_config(recipe(data, tmp_path)), tmp_path / "run", progress="lines")
    out, err = capsys.readouterr()
    assert out == ""
    assert "train: step 4: synthetic MPJPE" in err and "train: step 6: synthetic MPJPE" in err


def test_a_resume_with_a_new_learning_rate_uses_it(data: dict[str, Path], tmp_path: Path) -> None:
    """The loop's own advice after a non-finite loss is "lower optim.lr" and run again: the resumed
    run must follow the new rate on the saved schedule, as a run begun with it would from there,
    not the rate its optimizer's saved state brings back. A damaged last.pt is one line."""
    from engines.errors import ConfigError
    from train.train import LAST, train

    def rates(run: Path) -> dict[int, float]:
        return {r["step"]: r["lr"] for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if "lr" in r}

    slow = load_train_config(recipe(data, tmp_path, name="slow"))
    fast = load_train_config(recipe(data, tmp_path, name="fast",
                                    optim="\n  batch_size: 4\n  steps: 6\n  lr: 0.01\n  warmup_steps: 2\n  grad_clip: 5.0"))
    train(fast, tmp_path / "fast", progress=False)
    train(slow, tmp_path / "resumed", progress=False, stop_after=3)
    notes: list[str] = []
    train(fast, tmp_path / "resumed", progress=False, announce=notes.append)
    assert any("optim.lr" in n for n in notes)
    got, want = rates(tmp_path / "resumed"), rates(tmp_path / "fast")
    for step in (4, 5, 6):
        assert got[step] == pytest.approx(want[step]), step
    assert got[3] == pytest.approx(rates(tmp_path / "fast")[3] * 0.3)      # the slow run's, before

    # A damaged record of the data is rewritten, with a note; a damaged checkpoint is one line.
    train(fast, tmp_path / "again", progress=False, stop_after=3)
    (tmp_path / "again" / "data.json").write_text('{"synthetic": ')
    notes.clear()
    train(fast, tmp_path / "again", progress=False, announce=notes.append)
    assert any("data.json was damaged" in n for n in notes)
    assert json.loads((tmp_path / "again" / "data.json").read_text())["synthetic"]["images"] > 0
    (tmp_path / "resumed" / LAST).write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(ConfigError, match="cannot be read as a checkpoint .* damaged"):
        train(fast, tmp_path / "resumed", progress=False)
    for damaged in (b"", b"hello\n"):                  # empty; text (torch's legacy reader: a KeyError)
        (tmp_path / "resumed" / LAST).write_bytes(damaged)
        with pytest.raises(ConfigError, match="cannot be read as a checkpoint .* damaged"):
            train(fast, tmp_path / "resumed", progress=False)

    # A flipped bit in the optimizer's moments: named as damage, not a NaN loss blamed on the rate.
    blob = torch.load(tmp_path / "again" / LAST, weights_only=True)
    moments = next(iter(blob["training"]["optimizer"]["state"].values()))
    next(t for t in moments.values() if t.is_floating_point() and t.numel() > 1).view(-1)[0] = float("nan")
    torch.save(blob, tmp_path / "again" / LAST)
    with pytest.raises(ConfigError, match=r"holds non-finite values in the optimizer's .* it is damaged"):
        train(fast, tmp_path / "again", progress=False)

    # init_from only chooses a fresh run's weights: a resumed run says it is not read.
    notes.clear()
    init = dataclasses.replace(fast, init_from=str(tmp_path / "fast" / "model.pt"))
    train(slow, tmp_path / "init", progress=False, stop_after=2)
    train(init, tmp_path / "init", progress=False, stop_after=3, announce=notes.append)
    assert any("init_from only chooses a fresh run's first weights" in n and "it is not read" in n for n in notes)
    assert not any("differs from the checkpoint's in init_from" in n for n in notes)


def test_the_loss_window_sums_as_python_floats_and_names_the_first_non_finite_step() -> None:
    """The loop's sums stay on the device between log lines; they must read as the Python sums
    of the values it logged before, and a non-finite loss must be reported with its step."""
    from train.step import LOSS_PARTS, LossWindow, TrainingDiverged

    rng = np.random.default_rng(0)
    rows = rng.random((7, len(LOSS_PARTS)), dtype=np.float32) * 5
    window = LossWindow(torch.device("cpu"))
    for step, row in enumerate(rows, 1):
        window.add(torch.from_numpy(row), step)
    window.check()
    means = window.means()
    for i, name in enumerate(LOSS_PARTS):
        assert means[name] == sum(float(v) for v in rows[:, i]) / len(rows)      # to the last bit

    for step, total in ((8, 1.0), (9, float("nan")), (10, float("inf"))):
        window.add(torch.tensor([total, 0.5, 0.01, 0.0, 0.0]), step)
    with pytest.raises(TrainingDiverged, match=r"the loss is nan at step 9 \(2D 0.5, 3D 0.01, negatives 0\); "
                                              r"lower optim.lr"):
        window.check()
    window.reset()
    window.add(torch.ones(len(LOSS_PARTS)), 11)
    window.check()
    assert window.means()["loss"] == 1.0


def test_a_diverged_run_stops_before_keeping_its_weights(data: dict[str, Path], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """A non-finite loss at step 5 is found at the next log line (step 6, every second step here),
    before the checkpoint of that step: last.pt keeps step 4's finite weights, and the command
    says what happened and what to do in one line, exit code 1."""
    import train.step as step_module
    from train.train import LAST, main

    real = step_module.step_losses
    calls = {"n": 0}

    def fail_at_five(net, batch, setup):
        loss, parts = real(net, batch, setup)
        calls["n"] += 1
        if calls["n"] == 5:
            loss = loss * float("nan")
            parts = parts.clone()
            parts[0] = float("nan")
        return loss, parts

    monkeypatch.setattr(step_module, "step_losses", fail_at_five)
    path = recipe(data, tmp_path, log_every="2", checkpoint_every="2", val_every="0")
    out = tmp_path / "run"
    assert main(["--config", str(path), "--out", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("python -m train.train: error: the loss is nan at step 5 (2D ")
    assert "lower optim.lr and run the same command again" in err[-1]
    saved = torch.load(out / LAST, map_location="cpu", weights_only=True)
    assert saved["training"]["step"] == 4
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values() if v.is_floating_point())
    assert not (out / "model.pt").exists()

    # A finite loss whose update makes the weights non-finite, at a checkpoint step: the
    # checkpoint is refused, and last.pt keeps the one before.
    monkeypatch.setattr(step_module, "step_losses", real)
    real_update, updates = torch.optim.AdamW.step, {"n": 0}

    def update_then_overflow(self, *args, **kwargs):
        result = real_update(self, *args, **kwargs)
        updates["n"] += 1
        if updates["n"] == 4:
            with torch.no_grad():
                self.param_groups[0]["params"][0].fill_(float("inf"))
        return result

    monkeypatch.setattr(torch.optim.AdamW, "step", update_then_overflow)
    again = tmp_path / "again"
    assert main(["--config", str(path), "--out", str(again), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("python -m train.train: error: the weights are not finite after step 4 (its loss was "
                              "finite); lower optim.lr")
    saved = torch.load(again / LAST, map_location="cpu", weights_only=True)
    assert saved["training"]["step"] == 2
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values() if v.is_floating_point())


def test_bf16_trains_and_fp32_is_the_default(data: dict[str, Path], tmp_path: Path) -> None:
    """precision: bf16 runs the forward pass under bfloat16 autocast (here on the CPU, as it would
    on a GPU), with float32 weights, and restores the process-wide TF32 switches after."""
    from train.train import train

    assert load_train_config(recipe(data, tmp_path)).precision == "fp32"
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    cfg = load_train_config(recipe(data, tmp_path, name="bf16", precision="bf16", val_every="0",
                                   optim="\n  batch_size: 4\n  steps: 4\n  lr: 0.003\n  warmup_steps: 1"))
    summary = train(cfg, tmp_path / "bf16", progress=False)
    assert summary["final"] and (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
    log = [json.loads(line) for line in (tmp_path / "bf16" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4]
    assert all(np.isfinite(r["loss"]) for r in log if "loss" in r)
    weights = _weights(tmp_path / "bf16" / "model.pt")
    assert {v.dtype for v in weights.values() if v.is_floating_point()} == {torch.float32}
    with pytest.raises(ConfigError, match="precision"):
        load_train_config(recipe(data, tmp_path, name="fp16", precision="fp16"))

    from engines.network import build_network
    from train.step import autocast_for
    net = build_network(cfg.model_config())
    image = torch.zeros(2, SIZE, SIZE, 3, dtype=torch.uint8)
    for precision, dtype in (("bf16", torch.bfloat16), ("tf32", torch.float32), ("fp32", torch.float32)):
        with autocast_for(precision, torch.device("cpu")):
            assert net.forward_logits(image)[0].dtype == dtype, precision


def test_the_step_benchmark_times_every_variant_and_refuses_bad_counts(data: dict[str, Path], tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from train.step_bench import main

    path = recipe(data, tmp_path)
    report = tmp_path / "steps.json"
    assert main(["--config", str(path), "--device", "cpu", "--steps", "2", "--rounds", "2", "--warmup", "1",
                 "--channels-last", "--threads", "1", "--json", str(report)]) == 0
    got = json.loads(report.read_text())
    assert [t["variant"] for t in got["timings"]] == ["fp32, read every step", "fp32", "tf32", "bf16",
                                                      "fp32, NHWC", "tf32, NHWC", "bf16, NHWC"]
    assert got["batch"] == 4 and all(t["ms_per_step"] > 0 and len(t["ms_per_step_rounds"]) == 2
                                     for t in got["timings"])
    out = capsys.readouterr().out
    assert "batch 4 of 64 px crops, on CPU, 1 thread," in out and "bf16, NHWC" in out

    def out_of_memory(self, n):
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("train.step_bench.VariantRun.run", out_of_memory)
        assert main(["--config", str(path), "--device", "cpu", "--batch", "512", "--precision", "fp32"]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "python -m train.step_bench: error: the device ran out of memory for a batch of 512; give a smaller --batch"]
    assert main(["--config", str(path), "--steps", "0"]) == 2
    assert capsys.readouterr().err.strip() == "python -m train.step_bench: error: --steps must be at least 1 (got 0)"
    assert main(["--config", str(path), "--device", "cpu", "--steps", "1", "--rounds", "1", "--warmup", "0",
                 "--precision", "fp32", "--json", str(tmp_path / "no" / "such" / "x.json")]) == 2
    assert "cannot write" in capsys.readouterr().err


def test_a_checkpoint_from_before_a_model_key_existed_resumes(data: dict[str, Path], tmp_path: Path) -> None:
    """last.pt files written before `flip_test` existed lack the key: the default fills it in.
    A different network is still refused."""
    import dataclasses

    from train.train import LAST, same_network, train

    cfg = load_train_config(recipe(data, tmp_path, name="old"))
    run = tmp_path / "old"
    train(cfg, run, progress=False, stop_after=3)
    blob = torch.load(run / LAST, map_location="cpu", weights_only=True)
    del blob["posecast"]["model_config"]["flip_test"]
    # Nor had its recipe `precision` and `channels_last`: at their defaults they are no change.
    del blob["training"]["config"]["precision"], blob["training"]["config"]["channels_last"]
    torch.save(blob, run / LAST)
    # As if other sets had matched the recipe's folders at the start: the record is kept, with a note.
    (run / "data.json").write_text('{"synthetic": {"folders": [], "images": 0}}\n')
    notes: list[str] = []
    assert train(cfg, run, progress=False, announce=notes.append)["start_step"] == 3
    assert any("resuming" in n for n in notes) and any("keeps the start's" in n for n in notes)
    assert not any("differs from the checkpoint's" in n for n in notes), notes
    assert json.loads((run / "data.json").read_text())["synthetic"]["images"] == 0

    mcfg = cfg.model_config()
    saved = blob["posecast"]["model_config"]
    assert same_network(saved, mcfg) and same_network(saved, dataclasses.replace(mcfg, flip_test="3d"))
    assert not same_network(saved, dataclasses.replace(mcfg, roots=("pelvis", "thorax")))
    assert not same_network({**saved, "grid_size": "x"}, mcfg) and not same_network(None, mcfg)


def test_overfit_one_batch(data: dict[str, Path]) -> None:
    from engines.config import load_config
    from engines.model_config import ModelConfig
    from engines.network import build_network
    from train.config import load_train_config  # noqa: F401  (the recipe's model)
    from train.datasets import SyntheticDataset
    from train.losses import loss_2d, loss_3d, offsets_target, soft_label_targets

    torch.set_num_threads(1)
    mcfg = load_config(ModelConfig, "model.yaml", data["model"])
    net = build_network(mcfg).train()
    ds = SyntheticDataset([data["train"] / "a"], input_size=SIZE, augment=False)
    items = [ds[i] for i in range(8)]
    batch = {k: torch.stack([it[k] for it in items]) for k in ("image", "joints_2d", "mask_2d", "joints_3d", "has_3d")}
    target_2d = soft_label_targets(batch["joints_2d"], mcfg.grid_size, SIZE)
    target_3d = offsets_target(batch["joints_3d"], mcfg.root_indices)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        logits, offsets = net.forward_logits(batch["image"])
        loss = loss_2d(logits, target_2d, batch["mask_2d"]) + 25.0 * loss_3d(offsets, target_3d, batch["has_3d"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize("sig, group, workers", [(signal.SIGINT, False, "0"), (signal.SIGTERM, True, "1"),
                                                 (signal.SIGINT, True, "1"), (signal.SIGHUP, True, "1")],
                         ids=["ctrl-c", "sigterm to the group, a loader worker", "ctrl-c to the group, a loader worker",
                              "a closed terminal's sighup to the group, a loader worker"])
def test_a_stop_signal_writes_checkpoint_and_exits_128_plus_it(data: dict[str, Path], tmp_path: Path,
                                                              sig: signal.Signals, group: bool, workers: str) -> None:
    """Sent to the whole process group (as `timeout`, systemd or a terminal do), the signal reached
    the loader's workers too: they died first and the run failed with a traceback on a dead worker,
    losing the steps since the last checkpoint."""
    import psutil

    path = recipe(data, tmp_path, optim="\n  batch_size: 4\n  steps: 100000\n  lr: 0.001", checkpoint_every="100000",
                  val_every="0", num_workers=workers)
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "train.train", "--config", str(path), "--out", str(out),
                             "--no-progress"], cwd=REPO, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=group)
    try:
        deadline = time.monotonic() + 40
        log = out / "log.jsonl"
        while time.monotonic() < deadline and not (log.exists() and log.read_text().count("\n") >= 2):
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.1)
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) == int(workers)
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err, err
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    lines = [line for line in err.splitlines() if line.strip()]
    assert "interrupted at step" in lines[-1] and "resume" in lines[-1], err
    step = torch.load(out / "last.pt", map_location="cpu", weights_only=True)["training"]["step"]
    assert step >= 2 and f"holds step {step}" in lines[-1]


# --- evaluation --------------------------------------------------------------------------

def _val_sets(data: dict[str, Path], cfg):
    from train.datasets import RealDataset, SyntheticDataset
    from train.real2d import load_real2d, split_real

    synth = SyntheticDataset([data["val"]], input_size=cfg.input_size, augment=False)
    _, val = split_real(load_real2d(data["real"]), val_fraction=0.3, seed=0)
    return synth, RealDataset(val, input_size=cfg.input_size, augment=False)


def test_evaluate_tiny_model_finite(data: dict[str, Path], tmp_path: Path) -> None:
    from engines.config import load_config
    from engines.model_config import ModelConfig
    from engines.model_file import ModelInfo, export_onnx, save_checkpoint
    from engines.network import build_network
    from train.evaluate import main

    mcfg = load_config(ModelConfig, "model.yaml", data["model"])
    net = build_network(mcfg)
    info = ModelInfo(mcfg, "untrained tiny", trained=False)
    save_checkpoint(tmp_path / "tiny.pt", net, info)
    export_onnx(net, info, tmp_path / "tiny.onnx")
    results = []
    for model in ("tiny.pt", "tiny.onnx"):
        out = tmp_path / f"{model}.json"
        rc = main(["--model", str(tmp_path / model), "--synth-val", str(data["val"]), "--real2d", str(data["real"]),
                   "--real-val-fraction", "0.3", "--per-root", "--limit", "6", "--no-progress", "--json", str(out)])
        assert rc == 0
        results.append(json.loads(out.read_text()))
    for res in results:
        s = res["synthetic"]
        assert s["samples"] == 6 and res["real"]["samples"] == 3
        for m in ("average", "lstsq", "weighted"):
            assert np.isfinite(s["3d"][m]["mpjpe_mm"]) and np.isfinite(s["3d"][m]["pa_mpjpe_mm"])
        assert set(s["per_root_mm"]) == set(mcfg.roots)
        assert 0 <= s["2d"]["pck"] <= 1 and 0 <= res["real"]["2d"]["pck"] <= 1
    # The PyTorch network and its ONNX export give the same numbers.
    a, b = results
    assert a["synthetic"]["3d"]["lstsq"]["mpjpe_mm"] == pytest.approx(b["synthetic"]["3d"]["lstsq"]["mpjpe_mm"], abs=0.05)
    # --cut: the same images, cut off between hips and knees where the person is upright; still every sample.
    out = tmp_path / "cut.json"
    assert main(["--model", str(tmp_path / "tiny.onnx"), "--synth-val", str(data["val"]), "--real2d", str(data["real"]),
                 "--real-val-fraction", "0.3", "--limit", "6", "--no-progress", "--cut", "--json", str(out)]) == 0
    cut = json.loads(out.read_text())
    assert cut["cut"] and not b["cut"] and cut["synthetic"]["samples"] == 6 and cut["real"]["samples"] == 3
    assert np.isfinite(cut["synthetic"]["3d"]["weighted"]["mpjpe_mm"])


def test_evaluate_gives_intervals_and_pairs_two_models_by_sample(data: dict[str, Path], tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from engines.config import load_config
    from engines.model_config import ModelConfig
    from engines.model_file import ModelInfo, save_checkpoint
    from engines.network import build_network
    from train.evaluate import main

    mcfg = load_config(ModelConfig, "model.yaml", data["model"])
    save_checkpoint(tmp_path / "tiny.pt", build_network(mcfg), ModelInfo(mcfg, "untrained tiny", trained=False))
    sets = ["--synth-val", str(data["val"]), "--real2d", str(data["real"]), "--real-val-fraction", "0.3",
            "--align", "average", "weighted", "--no-progress"]

    def evaluate(name: str, *extra: str) -> tuple[int, dict | None]:
        out = tmp_path / f"{name}.json"
        rc = main(["--model", str(tmp_path / "tiny.pt"), *sets, "--json", str(out), *extra])
        return rc, json.loads(out.read_text()) if out.exists() else None

    rc, base = evaluate("base", "--flip-test", "none")
    assert rc == 0
    s, r = base["synthetic"], base["real"]
    # Each rendered image's held-out motion is kept for pairing; the synthetic intervals resample
    # motions and backgrounds at once (none where the set holds a single one of either: it would
    # never vary).
    from train.shards import ShardSet

    assert len(s["per_sample"]["clusters"]) == s["samples"] == len(s["per_sample"]["ids"])
    shards = ShardSet(data["val"])
    backgrounds = len({shards.labels(i)["background"] for i in range(len(shards))})
    motions = len(set(s["per_sample"]["clusters"]))
    shared = min(motions, backgrounds)
    for part, key, units in ((s["2d"], "pck_interval", shared), (r["2d"], "pck_interval", r["samples"]),
                             (s["3d"]["weighted"], "mpjpe_interval_mm", shared),
                             (s["3d"]["weighted"], "pa_mpjpe_interval_mm", shared)):
        low, high = part[key]
        assert (low <= high) if units >= 2 else (np.isnan(low) and np.isnan(high)), (key, units)
    # The real photos are named by file, so a pairing cannot mistake one split for another.
    assert len(set(r["per_sample"]["ids"])) == r["samples"] == 3
    assert all(name.endswith(".jpg") for name in r["per_sample"]["ids"])
    printed = capsys.readouterr().out
    assert "| 95% interval |" in printed
    assert "(untrained tiny), evaluated with --flip-test none" in printed     # what ran, not only what was shipped

    # The same model against itself: every difference is 0, to the last resample.
    rc, same = evaluate("same", "--flip-test", "none", "--against", str(tmp_path / "base.json"))
    assert rc == 0
    rows = same["against"]["rows"]
    assert {row["figure"] for row in rows} == {"MPJPE (average)", "PA-MPJPE (average)", "MPJPE (weighted)",
                                               "PA-MPJPE (weighted)", "2D PCK@0.2"}
    assert s["per_sample"]["backgrounds"] == [shards.labels(i)["background"] for i in s["per_sample"]["ids"]]
    for row in rows:                          # paired: motions and backgrounds at once
        units = shared if row["set"] == "synthetic" else r["samples"]
        assert row["difference"] == 0.0
        assert row["interval"] == [0.0, 0.0] if units >= 2 else all(np.isnan(row["interval"]))
    assert "## This model minus base.json" in capsys.readouterr().out
    # Another model (the same weights mirrored at test time): the difference is its own minus the base's.
    rc, flipped = evaluate("flipped", "--flip-test", "all", "--against", str(tmp_path / "base.json"))
    assert rc == 0
    real_row = next(row for row in flipped["against"]["rows"] if row["set"] == "real")
    assert real_row["difference"] == pytest.approx(100 * (flipped["real"]["2d"]["pck"] - r["2d"]["pck"]))
    assert real_row["interval"][0] <= real_row["difference"] <= real_row["interval"][1]
    capsys.readouterr()

    # Runs that cannot be paired: one line each, exit 2; a finished evaluation's own --json is kept.
    rc, fewer = evaluate("fewer", "--limit", "4", "--against", str(tmp_path / "base.json"))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "scored other synthetic samples" in err[0] and fewer is not None
    (tmp_path / "old.json").write_text(json.dumps({"synthetic": {"samples": 6}}))
    (tmp_path / "text.json").write_text("MPJPE 150 mm")
    (tmp_path / "clips.json").write_text(json.dumps({"auto": {"clips": {}}}))      # train.video_eval's
    for bad, says in (("missing.json", "cannot read"), ("text.json", "is not JSON"),
                      ("old.json", "holds no per-sample results"), ("clips.json", "is not an evaluation")):
        rc, out = evaluate(f"after_{bad}", "--against", str(tmp_path / bad))
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and says in err[0] and out is None     # refused before evaluating

    # Runs aligned with other methods: the 3D errors both have are compared, and the rest is said.
    rc, weighted = evaluate("weighted_only", "--flip-test", "none", "--align", "weighted", "--against",
                            str(tmp_path / "base.json"))
    assert rc == 0 and {row["figure"] for row in weighted["against"]["rows"]} >= {"MPJPE (weighted)"}
    assert "this run used weighted, the other average, weighted" in capsys.readouterr().out

    # A --json that cannot be written at the end (a full disk): the tables are printed first, as
    # the error line says.
    import train.evaluate as evaluate_module

    def full_disk(path: Path, res: dict) -> None:
        raise InputError(f"cannot write --json '{path}': No space left on device; the table above holds the results")

    real_write = evaluate_module.write_json
    evaluate_module.write_json = full_disk
    try:
        rc, _ = evaluate("full", "--flip-test", "none")
    finally:
        evaluate_module.write_json = real_write
    out = capsys.readouterr()
    assert rc == 2 and "| 95% interval |" in out.out and "No space left on device" in out.err


class GroundTruthPredictor:
    """A 'network' whose outputs are the ground truth of whichever image it is given."""

    def __init__(self, datasets, cfg) -> None:
        from engines.grid import soft_labels

        self.table = {}
        for ds in datasets:
            for i in range(len(ds)):
                it = ds[i]
                j2, j3 = it["joints_2d"].numpy(), it["joints_3d"].numpy()
                probs = soft_labels(j2, cfg.grid_size, cfg.input_size)
                offsets = j3[None] - j3[list(cfg.root_indices)][:, None]
                self.table[it["image"].numpy().tobytes()] = (probs, offsets.astype(np.float32))

    def __call__(self, images: np.ndarray):
        probs, offsets = zip(*(self.table[im.tobytes()] for im in images))
        return np.stack(probs), np.stack(offsets)


def test_evaluate_takes_the_real_photos_a_list_names(data: dict[str, Path], tmp_path: Path) -> None:
    from engines.config import load_config
    from engines.model_config import ModelConfig
    from engines.model_file import ModelInfo, save_checkpoint
    from engines.network import build_network
    from train.evaluate import main

    mcfg = load_config(ModelConfig, "model.yaml", data["model"])
    save_checkpoint(tmp_path / "tiny.pt", build_network(mcfg), ModelInfo(mcfg, "untrained tiny", trained=False))
    listing = tmp_path / "backs.txt"
    listing.write_text("# two photos\nimg_001.jpg\n\nimg_007.jpg  # one of each split, whatever the split\n")
    out = tmp_path / "res.json"
    args = ["--model", str(tmp_path / "tiny.pt"), "--real2d", str(data["real"]), "--no-progress"]
    assert main(args + ["--real-files", str(listing), "--json", str(out)]) == 0
    real = json.loads(out.read_text())["real"]
    assert real["samples"] == 2 and real["split"] == "listed in backs.txt"
    assert 0.0 <= real["pck_exchanged"] <= 1.0 and 0.0 <= real["facing_away"] <= 1.0
    listing.write_text("img_001.jpg\nnot_there.jpg\n")
    with pytest.raises(InputError, match="1 of the 2 photos listed .* not in the real set .first: not_there.jpg"):
        _run_evaluate(args + ["--real-files", str(listing)])
    listing.write_text("# nothing\n")
    with pytest.raises(InputError, match="lists no photo"):
        _run_evaluate(args + ["--real-files", str(listing)])
    with pytest.raises(InputError, match="cannot read"):
        _run_evaluate(args + ["--real-files", str(tmp_path / "absent.txt")])
    # The shipped list names photos of the real set's format.
    shipped = [line for line in (REPO / "train" / "real_back_views.txt").read_text().splitlines()
               if line and not line.startswith("#")]
    assert len(shipped) == 19 == len(set(shipped)) and all(n.endswith(".jpg") for n in shipped)


def test_evaluate_guards_its_inputs_and_the_reference_it_compares_with(data: dict[str, Path], tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    from engines.config import load_config
    from engines.model_config import ModelConfig
    from engines.model_file import ModelInfo, save_checkpoint
    from engines.network import build_network

    mcfg = load_config(ModelConfig, "model.yaml", data["model"])
    model = tmp_path / "tiny.pt"
    save_checkpoint(model, build_network(mcfg), ModelInfo(mcfg, "untrained tiny", trained=False))
    base = ["--model", str(model), "--no-progress"]
    synth = base + ["--synth-val", str(data["val"])]
    for extra, message in ((["--json", str(model)], "--json must name a .json file"),
                           (["--real-val-fraction", "1"], "--real-val-fraction must be between 0 and 1"),
                           (["--real-val-fraction", "nan"], "--real-val-fraction must be between 0 and 1"),
                           (["--batch-size", "100000"], "--batch-size must be between 1 and 256"),
                           (["--real-files", "x.txt"], "give --real2d too")):
        with pytest.raises(InputError, match=message):
            _run_evaluate(synth + extra)
    real = tmp_path / "real"
    shutil.copytree(data["real"], real)
    labels = (real / "keypoints.json").read_bytes()
    with pytest.raises(InputError, match="is also the real set's labels"):           # a typo that would destroy them
        _run_evaluate(base + ["--real2d", str(real), "--real-val-fraction", "0.3", "--json", str(real / "keypoints.json")])
    assert (real / "keypoints.json").read_bytes() == labels
    with pytest.raises(InputError, match="manifest; give another name"):
        _run_evaluate(synth + ["--json", str(data["val"] / "manifest.json")])
    # The same folder twice is evaluated once; a training set is said to be one.
    trained_on = tmp_path / "synth_train"
    with ShardWriter(trained_on, shard_size=8, meta={"split": "train"}) as w:
        rng = np.random.default_rng(5)
        for _ in range(4):
            j3, j2 = fake_pose(rng)
            w.add(SynthSample(encode_jpeg(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)), j2, j3,
                              np.ones(17, bool), "fake/walk", "noise"))
    ref = tmp_path / "ref.json"
    assert _run_evaluate(synth + [str(data["val"]), str(trained_on), "--limit", "4", "--json", str(ref)]) == 0
    assert json.loads(ref.read_text())["synthetic"]["folders"] == [str(data["val"].resolve()), str(trained_on.resolve())]
    err = capsys.readouterr().err
    assert f"{trained_on.resolve()} is a training set" in err and str(data["val"].resolve()) not in err
    # A run that cannot be paired with --against leaves the --against file as it was when --json names it too.
    before = ref.read_bytes()
    with pytest.raises(InputError, match="was left as it was"):
        _run_evaluate(synth + ["--limit", "2", "--json", str(ref), "--against", str(ref)])
    assert ref.read_bytes() == before
    with pytest.raises(InputError, match="this run's results were written to"):
        _run_evaluate(synth + ["--limit", "2", "--json", str(tmp_path / "other.json"), "--against", str(ref)])
    assert json.loads((tmp_path / "other.json").read_text())["synthetic"]["samples"] == 2


def test_evaluate_says_what_is_wrong_with_a_damaged_real_set(data: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    from engines.config import load_config
    from engines.model_config import ModelConfig
    from engines.model_file import ModelInfo, save_checkpoint
    from engines.network import build_network

    mcfg = load_config(ModelConfig, "model.yaml", data["model"])
    model = tmp_path / "tiny.pt"
    save_checkpoint(model, build_network(mcfg), ModelInfo(mcfg, "untrained tiny", trained=False))
    real = tmp_path / "real"
    shutil.copytree(data["real"], real)
    args = ["--model", str(model), "--no-progress", "--real2d", str(real), "--real-val-fraction", "0.3"]
    names = sorted(p.name for p in (real / "images").iterdir())
    (real / "images" / names[0]).write_bytes(b"\xff\xd8 not a JPEG any more")
    with pytest.raises(InputError, match=f"cannot read the real photo .*{names[0]}.*take its entry out"):
        _run_evaluate(args + ["--real-split", "train"] if names[0] not in _held_out(real) else args)
    for p in (real / "images").iterdir():
        p.unlink()
    with pytest.raises(InputError, match="of the photos to evaluate are not in"):
        _run_evaluate(args)
    (real / "images").rmdir()
    with pytest.raises(InputError, match="has no images/ folder"):
        _run_evaluate(args)
    (real / "images").mkdir()
    coco = json.loads((data["real"] / "keypoints.json").read_text())
    del coco["images"][0]["file_name"]
    (real / "keypoints.json").write_text(json.dumps(coco))
    with pytest.raises(InputError, match="is not a COCO keypoints file as expected .KeyError: 'file_name'"):
        _run_evaluate(args)
    (real / "keypoints.json").write_text("{}")
    with pytest.raises(InputError, match="is not a COCO keypoints file"):
        _run_evaluate(args)
    (real / "keypoints.json").write_text('{"images": [')
    with pytest.raises(InputError, match="cannot read .*keypoints.json"):
        _run_evaluate(args)


def _held_out(real: Path) -> set[str]:
    from train.real2d import load_real2d, split_real

    return {r.path.name for r in split_real(load_real2d(real), val_fraction=0.3, seed=0)[1]}


def _run_evaluate(argv: list[str]) -> int:
    from train.evaluate import build_parser, run

    return run(build_parser().parse_args(argv))


def test_evaluate_turns_a_ray_frame_models_pose_as_the_pipeline_does(data: dict[str, Path]) -> None:
    """A 'network' answering in the ray frame scores zero against the camera-frame labels once
    train.evaluate turns its pose by the ray through its decoded 2D joints; left unturned (a
    camera-frame config), the same answers are off."""
    from dataclasses import replace

    from engines.config import load_config
    from engines.model_config import ModelConfig
    from train.datasets import SyntheticDataset
    from train.evaluate import evaluate

    cam_cfg = load_config(ModelConfig, "model.yaml", data["model"], {"roots": ["pelvis", "thorax", "l_hip"]})
    ray_cfg = replace(cam_cfg, offsets_frame="ray")
    ray_ds = SyntheticDataset([data["val"]], input_size=cam_cfg.input_size, augment=False, offsets_frame="ray")
    labels = SyntheticDataset([data["val"]], input_size=cam_cfg.input_size, augment=False)
    predictor = GroundTruthPredictor([ray_ds], ray_cfg)
    turned = evaluate(predictor, ray_cfg, labels, None, methods=["weighted"])["synthetic"]["3d"]["weighted"]
    unturned = evaluate(predictor, cam_cfg, labels, None, methods=["weighted"])["synthetic"]["3d"]["weighted"]
    assert turned["mpjpe_mm"] < 1.0 and unturned["mpjpe_mm"] > 3 * turned["mpjpe_mm"], (turned, unturned)
    assert turned["pa_mpjpe_mm"] < 0.5 and unturned["pa_mpjpe_mm"] < 0.5        # only the turn differs


def test_framing_tells_tracking_crops_from_search_crops() -> None:
    from train.evaluate import framing

    pose = np.zeros((3, 17, 2))
    pose[:, :, 1] = np.linspace(0, 1, 17)          # a vertical pose of height 1
    size = 128
    extents = np.array([0.55, 0.6, 0.87]) * size   # the renderer's search maximum, tracking range
    got = framing(pose * extents[:, None, None] + 40.0, size)
    assert got.tolist() == [False, True, True]


def test_pck_and_the_wide_pck_tell_imprecision_from_gross_errors() -> None:
    """A joint 0.3 torso diagonals off misses PCK@0.2 but is within 0.5; one 0.7 off misses both."""
    from engines.model_file import default_model_config
    from train.evaluate import metrics_2d

    cfg = default_model_config()
    gt = np.zeros((1, 17, 2))
    a, b = cfg.skeleton.indices(("l_shoulder", "r_hip"))
    gt[0, b] = [0.0, 100.0]                                   # torso diagonal 100 px
    pts = gt.copy()
    ankle, wrist = cfg.skeleton.index("l_ankle"), cfg.skeleton.index("r_wrist")
    pts[0, ankle] += [30.0, 0.0]
    pts[0, wrist] += [0.0, 70.0]
    res = metrics_2d(pts, gt, np.ones((1, 17), bool), cfg)
    assert res["pck"] == pytest.approx(15 / 17) and res["pck_wide"] == pytest.approx(16 / 17)
    assert (res["per_joint"]["l_ankle"]["pck"], res["per_joint"]["l_ankle"]["pck_wide"]) == (0.0, 1.0)
    assert (res["per_joint"]["r_wrist"]["pck"], res["per_joint"]["r_wrist"]["pck_wide"]) == (0.0, 0.0)


def test_synthetic_intervals_resample_motions_and_backgrounds_at_once() -> None:
    """Rendered images share a held-out motion and a background photo: the figures' intervals
    resample both at once, and the per-sample record keeps both for paired comparisons."""
    from engines.grid import soft_labels
    from engines.model_file import default_model_config
    from train.evaluate import synthetic_metrics
    from train.intervals import crossed_ratio_interval

    cfg = default_model_config()
    size, n = cfg.input_size, 48
    rng = np.random.default_rng(8)
    gt = rng.uniform(0.2 * size, 0.8 * size, (n, 17, 2))
    pred = gt + rng.normal(0.0, 0.06 * size, gt.shape)
    j3 = rng.normal(0.0, 0.3, (n, 17, 3))
    motion = np.array([f"m{i % 6}" for i in range(n)], dtype=object)
    background = np.array([f"b{i % 4}.jpg" for i in range(n)], dtype=object)
    out = {"probs": soft_labels(pred, cfg.grid_size, size), "joints_2d": gt.astype(np.float32),
           "mask_2d": np.ones((n, 17), np.float32), "joints_3d": j3.astype(np.float32), "has_3d": np.ones(n, np.float32),
           "offsets": (j3[:, None] - j3[:, list(cfg.root_indices)][:, :, None]
                       + rng.normal(0.0, 0.1, (n, len(cfg.root_indices), 17, 3))).astype(np.float32),
           "motion": motion, "background": background}
    res = synthetic_metrics(out, cfg, ["weighted"])
    rec = res["per_sample"]
    assert rec["clusters"] == list(motion) and rec["backgrounds"] == list(background)
    crossed = crossed_ratio_interval(np.array(rec["pck_hits"]), np.array(rec["pck_joints"]), [motion, background])
    assert res["2d"]["pck_interval"] == crossed.as_list()
    errors = np.array(rec["3d"]["weighted"]["mpjpe_mm"])
    by_both = crossed_ratio_interval(errors, np.ones(n), [motion, background])
    assert res["3d"]["weighted"]["mpjpe_interval_mm"] == pytest.approx(by_both.as_list(), abs=1e-3)   # errors kept to 4 decimals
    by_motion = crossed_ratio_interval(errors, np.ones(n), [motion])
    assert res["3d"]["weighted"]["mpjpe_interval_mm"] != pytest.approx(by_motion.as_list(), abs=1e-3)


def test_real_pck_counts_no_joint_of_a_photo_without_a_labelled_torso() -> None:
    """PCK's yardstick is the labelled torso diagonal. A photo whose l_shoulder has no label has no
    yardstick (the missing label's position is a placeholder): none of its joints count, rather
    than counting against the distance to the placeholder."""
    from engines.grid import soft_labels
    from engines.model_file import default_model_config
    from train.evaluate import real_metrics

    cfg = default_model_config()
    sk, size = cfg.skeleton, cfg.input_size
    rng = np.random.default_rng(5)
    gt = rng.uniform(0.3 * size, 0.7 * size, (2, 17, 2))
    pred = gt.copy()
    pred[:, sk.index("l_wrist")] += [0.0, 0.1 * size]         # the wrist misses on a short torso
    gt[:, sk.index("l_shoulder")] = gt[:, sk.index("r_hip")] + [0.0, -0.2 * size]
    mask = np.ones((2, 17), np.float32)
    mask[1, sk.index("l_shoulder")] = 0.0
    gt[1, sk.index("l_shoulder")] = [-size, -size]             # where an unlabelled joint lands
    out = {"probs": soft_labels(pred, cfg.grid_size, size), "joints_2d": gt.astype(np.float32), "mask_2d": mask,
           "offsets": np.zeros((2, len(cfg.root_indices), 17, 3), np.float32)}
    res = real_metrics(out, cfg)
    assert res["2d"]["joints"] == 17                           # the first photo's alone
    assert res["2d"]["per_joint"]["l_wrist"]["pck"] == 0.0


def test_twin_errors_count_pairs_on_one_limb_apart_from_other_gross_errors() -> None:
    """Three poses, torso diagonal 100 px: both ankles on the left ankle (gross, together); the
    wrists exchanged (gross, apart); a knee 30 px off (not gross)."""
    from engines.model_file import default_model_config
    from train.evaluate import twin_errors

    cfg = default_model_config()
    sk = cfg.skeleton
    rng = np.random.default_rng(3)
    gt = rng.uniform(0, 60, (3, 17, 2))
    gt[:, sk.index("l_shoulder")] = [0.0, 0.0]
    gt[:, sk.index("r_hip")] = [0.0, 100.0]
    la, ra, lw, rw = sk.indices(("l_ankle", "r_ankle", "l_wrist", "r_wrist"))
    gt[:, la], gt[:, ra] = [200.0, 300.0], [280.0, 300.0]
    gt[:, lw], gt[:, rw] = [200.0, 0.0], [300.0, 0.0]
    pts = gt.copy()
    pts[0, ra] = gt[0, la] + [5.0, 0.0]
    pts[1, lw], pts[1, rw] = gt[1, rw], gt[1, lw]
    pts[2, sk.index("l_knee")] += [30.0, 0.0]
    visible = np.ones((3, 17), bool)
    res = twin_errors(pts, gt, visible, cfg)
    assert res["pairs"] == 3 * 6
    assert res["gross"] == pytest.approx(2 / 18) and res["together"] == pytest.approx(1 / 18)
    assert res["per_pair"]["ankle"] == {"pairs": 3, "gross": pytest.approx(1 / 3), "together": pytest.approx(1 / 3)}
    assert res["per_pair"]["wrist"]["together"] == 0.0 and res["per_pair"]["knee"]["gross"] == 0.0
    # A pair counts only where both joints do.
    visible[0, ra] = False
    assert twin_errors(pts, gt, visible, cfg)["per_pair"]["ankle"] == {"pairs": 2, "gross": 0.0, "together": 0.0}
    assert twin_errors(pts, gt, np.zeros((3, 17), bool), cfg)["pairs"] == 0


def test_evaluate_ground_truth_gives_zero_error(data: dict[str, Path]) -> None:
    from engines.config import load_config
    from engines.model_config import ModelConfig
    from train.evaluate import evaluate, markdown

    mcfg = load_config(ModelConfig, "model.yaml", data["model"], {"roots": ["pelvis", "thorax", "l_hip"]})
    synth, real = _val_sets(data, mcfg)
    res = evaluate(GroundTruthPredictor([synth, real], mcfg), mcfg, synth, real, per_root=True, batch_size=3)
    s = res["synthetic"]
    assert s["samples"] == len(synth) and s["2d"]["joints"] > 0.9 * 17 * len(synth)
    for m in ("average", "lstsq", "weighted"):
        assert s["3d"][m]["mpjpe_mm"] < 1e-3 and s["3d"][m]["pa_mpjpe_mm"] < 1e-3
    assert max(s["per_root_mm"].values()) < 1e-3
    assert s["2d"]["pck"] == 1.0 and res["real"]["2d"]["pck"] == 1.0
    assert s["2d"]["pck_wide"] == 1.0 and res["real"]["2d"]["per_joint"]["l_ankle"]["pck_wide"] == 1.0
    assert res["real"]["2d"]["joints"] > 0
    assert "| synthetic |" in markdown(res, mcfg)
    assert res["real"]["twins"]["gross"] == 0.0 and s["framing"]["tracking"]["twins"]["together"] == 0.0
    tracking = s["framing"]["tracking"]        # the fake poses fill ~0.9 of the crop
    assert tracking["samples"] == len(synth) and "search" not in s["framing"]
    assert tracking["3d"]["weighted"]["mpjpe_mm"] < 1e-3 and tracking["pck"] == 1.0
    assert "| synthetic, tracking crops |" in markdown(res, mcfg)
    # Every joint is a hit, so each tenth of confidence scores 1.0 and the calibration error is
    # what the confidence falls short of 1.
    for cal in (tracking["calibration"], res["real"]["calibration"]):
        assert cal["joints"] > 0 and all(b["hit_rate"] == 1.0 for b in cal["bins"])
        mean_conf = sum(b["mean_conf"] * b["joints"] for b in cal["bins"]) / cal["joints"]
        assert cal["ece"] == pytest.approx(1.0 - mean_conf)
    assert tracking["calibration"]["joints"] == s["2d"]["joints"]
    assert f"| real | {len(real)} | conf calibration error (ECE," in markdown(res, mcfg)
    # fake_pose's people stand 0-3 degrees off the axis, in crops centred on the axis.
    off = s["off_axis"]
    assert off["crops"] == "tracking" and list(off["bins"]) == ["0-10"]
    assert off["bins"]["0-10"]["samples"] == len(synth) and off["bins"]["0-10"]["mpjpe_mm"] < 1e-3
    assert "| synthetic, tracking crops 0-10 degrees off the camera's axis |" in markdown(res, mcfg)
    # The breakdown (train/breakdown.py): fake_pose's people face the camera, every joint labelled
    # visible, motion "fake/walk"; every bin scores the ground truth perfectly.
    factors = s["breakdown"]["factors"]
    assert list(factors) == ["facing", "camera height", "pose", "hidden joints", "scale"]
    assert list(factors["facing"]["bins"]) == ["front, 0-45°"] and list(factors["pose"]["bins"]) == ["other"]
    assert list(factors["hidden joints"]["bins"]) == ["0-2 of 17"]
    for f in factors.values():
        assert sum(b["samples"] for b in f["bins"].values()) == len(synth)
        assert all(b["mpjpe_mm"] < 1e-3 and b["pck"] == 1.0 for b in f["bins"].values())
    views = res["real"]["views"]
    assert views["front"]["pck"] == 1.0 and sum(v["samples"] for v in views.values()) == len(real)
    # Exchanged, the fake people's limbs land on their twins' places (the poses' sides differ), and
    # the ground truth's 3D faces the camera.
    assert res["real"]["pck_exchanged"] < 0.9 and res["real"]["facing_away"] == 0.0
    table = markdown(res, mcfg)
    assert "| facing | synthetic, tracking crops | front, 0-45° | 8 |" in table
    assert "| view (from the 2D labels) | real | front |" in table

    # A known error is measured as such: the pelvis row's joints all 5 cm lower; `average` takes
    # the mean of 3 rows, so 16 of 17 joints are 50 / 3 mm off.
    class Shifted(GroundTruthPredictor):
        def __call__(self, images):
            probs, offsets = super().__call__(images)
            offsets = offsets.copy()
            offsets[:, 0, 1:, 1] += 0.05
            return probs, offsets

    res = evaluate(Shifted([synth], mcfg), mcfg, synth, None, methods=("average",), per_root=True)
    assert res["synthetic"]["3d"]["average"]["mpjpe_mm"] == pytest.approx(50.0 / 3 * 16 / 17, abs=1e-3)
    assert res["synthetic"]["per_root_mm"]["pelvis"] == pytest.approx(50.0, abs=1e-3)


def test_ablation_report_table(tmp_path):
    from train.report import main as report_main

    def fake(fusion, roots, mpjpe, lift=0):
        m3 = {k: {"mpjpe_mm": mpjpe + i, "pa_mpjpe_mm": mpjpe / 2} for i, k in enumerate(("average", "lstsq", "weighted"))}
        return {"model": {"fusion": fusion, "roots": roots, "lift_width": lift, "lift_blocks": 2}, "synthetic": {"samples": 7, "3d": m3, "2d": {"pck": 0.5}},
                "real": {"samples": 3, "2d": {"pck": 0.25}}}
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(fake("none", ["pelvis"], 100.0)))
    both = fake("conv", ["pelvis", "thorax"], 80.0, lift=512)
    both["synthetic"]["framing"] = {"tracking": {"3d": {"weighted": {"mpjpe_mm": 30.0}}}}
    both["negative"] = {"samples": 5, "score": {"mean": 0.1, "detected": 0.2, "threshold": 0.3}}
    b.write_text(json.dumps(both))
    out = tmp_path / "t.md"
    assert report_main([f"baseline={a}", f"both={b}", "--out", str(out)]) == 0
    rows = out.read_text().splitlines()
    assert rows[2] == "| baseline | none | - | 1 | 100.0 | 101.0 | 102.0 | 50.0 | - | 50.0 | 25.0 | - |"
    assert rows[3] == "| both | conv | 512x2 | 2 | 80.0 | 81.0 | 82.0 | 40.0 | 30.0 | 50.0 | 25.0 | 20.0 |"
    assert "person-free crops of held-out backgrounds" in rows[-1] and rows[-1].endswith(": 5.")
    assert report_main(["nonsense"]) == 2
    assert report_main([f"x={tmp_path / 'missing.json'}"]) == 2


@pytest.mark.parametrize("runs, out, message", [
    (["real={tmp}/real.json"], None, "is not a `train.evaluate --json` report with synthetic 3D results"),
    (["empty={tmp}/empty.json"], None, "is not a `train.evaluate --json` report"),
    (["={tmp}/a.json"], None, "is not NAME=EVAL.json"),
    (["a|b={tmp}/a.json"], None, "holds a '|'"),
    (["a={tmp}/a.json"], "{tmp}/nowhere/t.md", "folder '{tmp}/nowhere' does not exist"),
    (["a={tmp}/a.json"], "{tmp}", "it is a folder"),
    (["a={tmp}/a.json"], "{tmp}/a.json", "--out must name a .md file"),
    (["a={tmp}/a.md"], "{tmp}/a.md", "--out '{tmp}/a.md' is also the evaluation of run 'a'; give another name"),
])
def test_ablation_report_refuses_in_one_line(tmp_path, capsys, runs, out, message):
    from train.report import main as report_main

    evaluation = {"model": {"fusion": "conv", "roots": ["pelvis"]},
                  "synthetic": {"samples": 2, "3d": {}, "2d": {"pck": 0.5}}}
    (tmp_path / "a.json").write_text(json.dumps(evaluation))
    (tmp_path / "a.md").write_text(json.dumps(evaluation))
    (tmp_path / "real.json").write_text(json.dumps({"model": {}, "real": {"samples": 3}}))
    (tmp_path / "empty.json").write_text("{}")
    args = [r.format(tmp=tmp_path) for r in runs] + ([] if out is None else ["--out", out.format(tmp=tmp_path)])
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert report_main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m train.report: error: ")
    assert message.format(tmp=tmp_path) in err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_init_from_takes_the_backbone_and_2d_branch_only(data: dict[str, Path], tmp_path: Path) -> None:
    from engines.model_file import load_checkpoint
    from engines.network import build_network
    from train.train import THREE_D_MODULES, train

    source = train(load_train_config(recipe(data, tmp_path, name="src")), tmp_path / "src", progress=False)
    src, _ = load_checkpoint(Path(source["final"]))
    notes: list[str] = []
    cfg = load_train_config(recipe(
        data, tmp_path, name="abl", init_from=str(Path(source["final"])),
        model=f"\n  config: {data['model']}\n  fusion: none\n  roots: [pelvis]\n  input_size: null",
        optim="\n  batch_size: 4\n  steps: 1\n  lr: 1.0e-9\n  warmup_steps: 0"))
    train(cfg, tmp_path / "abl", progress=False, announce=notes.append)
    assert any("initialised" in n for n in notes)
    got, info = load_checkpoint(tmp_path / "abl" / "model.pt")
    fresh = build_network(info.config).state_dict()
    src_sd, got_sd = src.state_dict(), got.state_dict()
    params = dict(got.named_parameters())
    moved: list[bool] = []
    for k, v in got_sd.items():
        if k not in params:
            continue                     # buffers: BatchNorm statistics move whatever the learning rate
        if k.split(".")[0] in THREE_D_MODULES:
            assert torch.allclose(v, fresh[k], atol=1e-6), k          # the 3D branch starts afresh
        else:
            assert torch.allclose(v, src_sd[k], atol=1e-6), k         # the rest comes from the source
            moved.append(not torch.equal(v, fresh[k]))
    assert moved and all(moved)          # the source's trained weights, not a fresh start
    bad = load_train_config(recipe(data, tmp_path, name="bad", init_from=str(tmp_path / "missing.pt")))
    with pytest.raises(Exception, match="init_from"):
        train(bad, tmp_path / "bad", progress=False)
    # An exported model is not a source of weights: said as such, not "give ... a .onnx model".
    (tmp_path / "m.onnx").write_bytes(b"onnx")
    onnx = load_train_config(recipe(data, tmp_path, name="onnx", init_from=str(tmp_path / "m.onnx")))
    with pytest.raises(InputError, match=r"is an ONNX model, which holds no trainable weights here; give the Posecast "
                                         r"\.pt checkpoint it was exported from"):
        train(onnx, tmp_path / "onnx", progress=False)


def test_a_recipe_starts_its_lifter_from_a_lifter_file(data: dict[str, Path], tmp_path: Path) -> None:
    from engines.model_file import load_checkpoint
    from engines.network import Lifter
    from train.lifting import PretrainOptions, save_lifter
    from train.train import main as train_main

    roots = ("pelvis", "thorax", "r_hip")
    torch.manual_seed(7)
    lifter = Lifter(17, len(roots), 16, 1)
    save_lifter(tmp_path / "lifter.pt", lifter, PretrainOptions(width=16, blocks=1, roots=roots), step=1)
    lifted_model = f"\n  config: {data['model']}\n  fusion: conv\n  roots: [pelvis, thorax, r_hip]\n  input_size: null" \
                   "\n  lift_width: 16\n  lift_blocks: 1"
    cfg = load_train_config(recipe(data, tmp_path, name="lifted", model=lifted_model,
                                   lifter_from=str(tmp_path / "lifter.pt"),
                                   optim="\n  batch_size: 4\n  steps: 1\n  lr: 1.0e-9\n  warmup_steps: 0"))
    notes: list[str] = []
    from train.train import train

    train(cfg, tmp_path / "lifted", progress=False, announce=notes.append)
    assert any("lifter initialised" in n for n in notes)
    got, info = load_checkpoint(tmp_path / "lifted" / "model.pt")
    assert info.config.lift_width == 16
    for k, v in lifter.state_dict().items():
        torch.testing.assert_close(got.lifter.state_dict()[k], v, atol=1e-6, rtol=0)
    # A lifter for other roots, or a recipe without a lifter, is one clear error.
    other = load_train_config(recipe(data, tmp_path, name="other", model=lifted_model.replace(
        "roots: [pelvis, thorax, r_hip]", "roots: [pelvis]"), lifter_from=str(tmp_path / "lifter.pt")))
    with pytest.raises(Exception, match="roots"):
        train(other, tmp_path / "other", progress=False)
    with pytest.raises(ConfigError, match="lifter_from is set but the recipe's model has no lifter"):
        load_train_config(recipe(data, tmp_path, name="none", lifter_from=str(tmp_path / "lifter.pt")))
    with pytest.raises(ConfigError, match="--lifter-from is given but the recipe's model has no lifter"):
        load_train_config(recipe(data, tmp_path, name="none"), {"lifter_from": str(tmp_path / "lifter.pt")})
    assert train_main(["--config", str(recipe(data, tmp_path, name="cli", model=lifted_model)),
                       "--lifter-from", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "cli")]) == 2


@pytest.mark.parametrize("stop", ["0", "-1"])
def test_stop_after_no_step_is_refused(data: dict[str, Path], tmp_path: Path, stop: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """It used to claim a checkpoint that was never written."""
    from train.train import main as train_main

    assert train_main(["--config", str(recipe(data, tmp_path)), "--out", str(tmp_path / "run"),
                       "--stop-after", stop, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--stop-after must be a step of at least 1" in err[0]
    assert not (tmp_path / "run").exists()


def test_freeze_2d_trains_the_3d_branch_only(data: dict[str, Path], tmp_path: Path) -> None:
    from engines.model_file import load_checkpoint
    from train.train import THREE_D_MODULES, train

    source = train(load_train_config(recipe(data, tmp_path, name="src2")), tmp_path / "src2", progress=False)
    src, _ = load_checkpoint(Path(source["final"]))
    cfg = load_train_config(recipe(data, tmp_path, name="frozen", init_from=str(Path(source["final"])),
                                   freeze_2d="true"))
    train(cfg, tmp_path / "frozen", progress=False)
    got, info = load_checkpoint(tmp_path / "frozen" / "model.pt")
    from engines.network import build_network

    src_sd, fresh = src.state_dict(), build_network(info.config).state_dict()
    moved_3d = []
    for k, v in got.state_dict().items():
        if k.split(".")[0] in THREE_D_MODULES + ("lifter",):
            moved_3d.append(not torch.equal(v, fresh[k]))         # trained from its fresh start
        elif k not in ("mean", "inv_std", "own_root_mask"):
            assert torch.equal(v, src_sd[k]), k           # weights and BatchNorm statistics kept
    assert any(moved_3d)
    with pytest.raises(ConfigError, match="freeze_2d"):
        load_train_config(recipe(data, tmp_path, name="nofrom", freeze_2d="true"))


# --- person-free crops (train/negatives.py) ------------------------------------------------

def _backgrounds(root: Path) -> Path:
    from train.backgrounds import VAL_BACKGROUNDS

    folder = root / "backgrounds"
    if not folder.exists():
        folder.mkdir()
        rng = np.random.default_rng(9)
        for name in ("street.jpg", "room.jpg", VAL_BACKGROUNDS[0]):
            cv2.imwrite(str(folder / name), rng.integers(0, 256, (120, 160, 3), dtype=np.uint8))
    return folder


def test_negatives_train_and_are_measured(data: dict[str, Path], tmp_path: Path) -> None:
    from train.backgrounds import VAL_BACKGROUNDS
    from train.train import train

    bg = _backgrounds(data["root"])
    section = (f"\n  synth_dirs: [{data['train']}]\n  synth_val_dirs: [{data['val']}]\n"
               f"  real2d_dir: {data['real']}\n  real_fraction: 0.25\n  real_val_fraction: 0.3\n"
               f"  backgrounds_dir: {bg}\n  negative_fraction: 0.5")
    cfg = load_train_config(recipe(data, tmp_path, name="neg", data=section))
    summary = train(cfg, tmp_path / "neg", progress=False)
    log = [json.loads(line) for line in (tmp_path / "neg" / "log.jsonl").read_text().splitlines()]
    losses = [r["loss_neg"] for r in log if "loss" in r]
    assert all(np.isfinite(losses)) and max(losses) > 0          # some batch held a negative
    val = summary["val"]
    assert 0.0 <= val["negative_detected"] <= 1.0 and 0.0 < val["negative_score"] <= 1.0
    assert 0.0 <= val["real_detected"] <= 1.0
    # The run folder records what the recipe's folders matched.
    matched = json.loads((tmp_path / "neg" / "data.json").read_text())
    assert matched["synthetic"] == {"folders": [str(data["train"] / "a"), str(data["train_b"])], "images": 24}
    assert matched["synthetic_val"]["images"] == 8
    assert matched["real"]["val"] >= 1 and matched["real"]["train"] >= 1
    assert matched["real"]["train"] + matched["real"]["val"] <= 10
    assert sorted(Path(p).name for p in matched["negatives"]["photos"]) == ["room.jpg", "street.jpg"]
    assert [Path(p).name for p in matched["negatives_val"]["photos"]] == [VAL_BACKGROUNDS[0]]

    # A missing folder is one clear error before any step; a fraction without a folder is a recipe error.
    missing = section.replace(str(bg), str(tmp_path / "nowhere"))
    bad = load_train_config(recipe(data, tmp_path, name="neg_missing", data=missing))
    with pytest.raises(InputError, match="training data: background folder not found"):
        train(bad, tmp_path / "neg_missing", progress=False)
    no_dir = section.replace(f"  backgrounds_dir: {bg}\n", "")
    with pytest.raises(ConfigError, match="negative_fraction > 0 needs backgrounds_dir"):
        load_train_config(recipe(data, tmp_path, name="neg_nodir", data=no_dir))


def test_real_either_side_trains_and_stage_12_changes_only_that(data: dict[str, Path], tmp_path: Path) -> None:
    from train.train import train

    loss = "\n  w2d: 1.0\n  w3d: 25.0\n  real_either_side: true"
    cfg = load_train_config(recipe(data, tmp_path, name="sides", loss=loss))
    assert cfg.loss.real_either_side
    summary = train(cfg, tmp_path / "sides", progress=False)
    log = [json.loads(line) for line in (tmp_path / "sides" / "log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss_2d"]) and r["loss_2d"] > 0 for r in log if "loss" in r)
    assert Path(summary["final"]).exists()
    stage10 = load_train_config(REPO / "configs" / "train" / "negatives.yaml")
    stage12 = load_train_config(REPO / "configs" / "train" / "either_side.yaml")
    assert not stage10.loss.real_either_side and stage12.loss.real_either_side
    assert stage12.init_from.endswith("negatives/model.pt") and stage12.init_scope == "all"
    assert dataclasses.replace(stage12, name=stage10.name, loss=stage10.loss, optim=stage10.optim,
                               init_from=stage10.init_from) == stage10
    # Stage 13: stage 10 with more real photos per batch, on stage 12's schedule.
    stage13 = load_train_config(REPO / "configs" / "train" / "more_real.yaml")
    assert stage13.optim == stage12.optim and stage13.data.real_fraction == 0.5
    assert dataclasses.replace(stage13, name=stage10.name, optim=stage10.optim, init_from=stage10.init_from,
                               data=dataclasses.replace(stage13.data, real_fraction=stage10.data.real_fraction)) == stage10
    with pytest.raises(ConfigError, match="real_either_side"):
        load_train_config(recipe(data, tmp_path, name="sides_bad", loss="\n  real_either_side: maybe"))


def test_twin_loss_trains_logs_and_stage_15_changes_only_that(data: dict[str, Path], tmp_path: Path) -> None:
    from train.train import train

    cfg = load_train_config(recipe(data, tmp_path, name="twins", loss="\n  w2d: 1.0\n  w3d: 25.0\n  w_twin: 2.0"))
    assert cfg.loss.w_twin == 2.0
    summary = train(cfg, tmp_path / "twins", progress=False)
    log = [json.loads(line) for line in (tmp_path / "twins" / "log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "loss" in r]
    assert steps and all(np.isfinite(r["loss_twin"]) and r["loss_twin"] >= 0 for r in steps)
    assert Path(summary["final"]).exists()
    # Off by default.
    assert load_train_config(recipe(data, tmp_path, name="plain")).loss.w_twin == 0.0
    stage12 = load_train_config(REPO / "configs" / "train" / "either_side.yaml")
    stage15 = load_train_config(REPO / "configs" / "train" / "twins.yaml")
    assert stage15.init_from.endswith("soup/model.pt") and stage15.loss.w_twin > 0
    assert dataclasses.replace(stage15, name=stage12.name, init_from=stage12.init_from,
                               loss=dataclasses.replace(stage15.loss, w_twin=0.0, real_either_side=True)) == stage12
    with pytest.raises(ConfigError, match="w_twin"):
        load_train_config(recipe(data, tmp_path, name="twins_bad", loss="\n  w_twin: -1"))


def test_a_stride_8_model_continues_on_the_finer_grid(data: dict[str, Path], tmp_path: Path) -> None:
    """configs/train/fine.yaml's path: `model.grid_stride: 4` over a stride-8 model's weights
    trains, and before any step its 2D output is the stride-8 model's, spread over sub-cells."""
    from engines.model_file import load_checkpoint
    from train.train import init_weights, train

    source = train(load_train_config(recipe(data, tmp_path, name="src8")), tmp_path / "src8", progress=False)
    fine_model = f"\n  config: {data['model']}\n  fusion: conv\n  roots: [pelvis, thorax, r_hip]\n  input_size: null\n  grid_stride: 4"
    cfg = load_train_config(recipe(data, tmp_path, name="fine", init_from=source["final"], init_scope="all",
                                   model=fine_model))
    mcfg = cfg.model_config()
    assert (mcfg.grid_stride, mcfg.grid_size) == (4, 16)
    from engines.network import build_network

    net = build_network(mcfg)
    note = init_weights(net, Path(source["final"]), "all")
    assert "new: head2d_fine, lat4, logits_fine" in note
    src, _ = load_checkpoint(Path(source["final"]))
    x = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
    with torch.no_grad():
        p8, _ = src.eval()(x)
        p4, _ = net.eval()(x)
    torch.testing.assert_close(torch.nn.functional.avg_pool2d(p4, 2) * 4, p8, atol=1e-6, rtol=0)
    summary = train(cfg, tmp_path / "fine", progress=False)
    got, info = load_checkpoint(Path(summary["final"]))
    assert (info.config.grid_stride, info.config.grid_size) == (4, 16)
    with torch.no_grad():
        probs, _ = got(x)
    assert probs.shape == (2, 17, 16, 16)


def test_a_ray_frame_recipe_trains_on_labels_turned_into_the_ray_frame(data: dict[str, Path], tmp_path: Path) -> None:
    """`model.offsets_frame: ray` (configs/train/ray_frame.yaml): the synthetic 3D labels are
    turned onto the person's ray (engines/ray_frame.py), validation measures in that frame, and
    the trained model file says so, for the pipeline to turn its poses back."""
    from engines.model_file import load_checkpoint
    from engines.ray_frame import fit_pinhole, off_axis_degrees, person_rotations
    from train.config import expand_shard_dirs
    from train.datasets import SyntheticDataset
    from train.train import train

    dirs = expand_shard_dirs([str(data["train"])])
    camera = SyntheticDataset(dirs, input_size=SIZE, augment=False, offsets_frame="camera")
    ray = SyntheticDataset(dirs, input_size=SIZE, augment=False, offsets_frame="ray")
    for i in (0, 5):
        j3, j2 = camera[i]["joints_3d"].numpy(), camera[i]["joints_2d"].numpy()
        focal, principal = fit_pinhole(j2, j3)
        np.testing.assert_allclose(focal, SIZE * 2.2, rtol=1e-3)            # fake_pose's camera
        np.testing.assert_allclose(ray[i]["joints_3d"].numpy(), j3 @ person_rotations(j2, focal, principal),
                                   atol=1e-5)
        angle = off_axis_degrees(person_rotations(j2, focal, principal))
        assert 0.0 < angle < 3.0                                           # fake_pose: a few cm off the axis at 4 m
    with pytest.raises(ValueError, match="offsets_frame must be one of camera, ray"):
        SyntheticDataset(dirs, input_size=SIZE, offsets_frame="crop")

    model = f"\n  config: {data['model']}\n  fusion: conv\n  roots: [pelvis, thorax, r_hip]\n  offsets_frame: ray"
    summary = train(load_train_config(recipe(data, tmp_path, name="rayf", model=model)), tmp_path / "rayf",
                    progress=False)
    _, info = load_checkpoint(Path(summary["final"]))
    assert info.config.offsets_frame == "ray"
    assert load_train_config(REPO / "configs" / "train" / "ray_frame.yaml").model_config().offsets_frame == "ray"
    control = load_train_config(REPO / "configs" / "train" / "camera_frame_control.yaml")
    stage6 = load_train_config(REPO / "configs" / "train" / "ray_frame.yaml")
    assert control.model_config().offsets_frame == "camera"
    assert dataclasses.replace(control, name=stage6.name, model=stage6.model) == stage6   # nothing else differs
    # Stage 7: stage 6 continued at 160 pixels with a larger share of real photos.
    stage7 = load_train_config(REPO / "configs" / "train" / "input160.yaml")
    assert stage7.init_from.endswith("ray_frame/model.pt") and stage7.init_scope == "all"
    assert stage7.model_config() == dataclasses.replace(stage6.model_config(), input_size=160, grid_size=40)
    assert stage7.data == dataclasses.replace(stage6.data, real_fraction=0.4)
    # Stage 8: stage 6's recipe with a deeper backbone and nothing else changed.
    stage8 = load_train_config(REPO / "configs" / "train" / "deeper.yaml")
    assert stage8.init_from.endswith("ray_frame/model.pt") and stage8.init_scope == "all"
    assert stage8.model_config() == dataclasses.replace(stage6.model_config(), depths=(2, 5, 8, 6))
    assert dataclasses.replace(stage8, name=stage6.name, model=stage6.model, init_from=stage6.init_from) == stage6


def test_init_scope_all_takes_every_tensor(data: dict[str, Path], tmp_path: Path) -> None:
    from engines.model_file import load_checkpoint
    from train.train import train

    source = train(load_train_config(recipe(data, tmp_path, name="src_all")), tmp_path / "src_all", progress=False)
    src, _ = load_checkpoint(Path(source["final"]))
    cfg = load_train_config(recipe(data, tmp_path, name="cont", init_from=str(Path(source["final"])),
                                   init_scope="all",
                                   optim="\n  batch_size: 4\n  steps: 1\n  lr: 1.0e-9\n  warmup_steps: 0"))
    train(cfg, tmp_path / "cont", progress=False)
    got, _ = load_checkpoint(tmp_path / "cont" / "model.pt")
    src_sd = src.state_dict()
    for k, v in got.named_parameters():
        assert torch.allclose(v, src_sd[k], atol=1e-6), k           # the 3D branch too
    with pytest.raises(ConfigError, match="init_scope"):
        load_train_config(recipe(data, tmp_path, name="cont_bad", init_scope="all"))


def test_a_deeper_backbone_starts_as_the_shallower_model_and_its_added_blocks_learn(
        data: dict[str, Path], tmp_path: Path) -> None:
    """configs/train/deeper.yaml's path: a model with more blocks per stage, continued from a
    shallower one, gives the same outputs before any step (each added block starts as the
    identity), and the added blocks train."""
    from engines.config import load_config
    from engines.model_config import ModelConfig
    from engines.model_file import ModelInfo, save_checkpoint
    from engines.network import build_network
    from train.train import init_weights

    shallow = load_config(ModelConfig, "model.yaml", data["model"])                     # depths 1,1,1,1
    source = build_network(shallow)
    with torch.no_grad():                 # trained-looking BatchNorm statistics, not the identity's defaults
        for module in source.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
    save_checkpoint(tmp_path / "shallow.pt", source, ModelInfo(shallow, "untrained shallow", trained=False))
    deep = build_network(dataclasses.replace(shallow, depths=(2, 3, 1, 2)))
    note = init_weights(deep, tmp_path / "shallow.pt", "all")
    assert note.endswith("added blocks start as the identity: s4.1, s8.1, s8.2, s32.1")      # nothing else new
    x = torch.randint(0, 256, (3, 64, 64, 3), dtype=torch.uint8)
    with torch.no_grad():
        want, got = source.eval()(x), deep.eval()(x)
    torch.testing.assert_close(got[0], want[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(got[1], want[1], atol=1e-6, rtol=0)
    # The zero scale of an added block's last BatchNorm gets a gradient, so the block learns.
    deep.train()
    logits, offsets = deep.forward_logits(x)
    (logits.square().mean() + offsets.square().mean()).backward()
    for name in ("s4.1", "s8.1", "s8.2", "s32.1"):
        stage_name, index = name.split(".")
        assert getattr(deep, stage_name)[int(index)].body[-1][1].weight.grad.abs().sum() > 0, name
    # The blocks the source had are its own, not reset.
    assert torch.equal(deep.s8[0].body[-1][1].weight, source.s8[0].body[-1][1].weight)


@settings(max_examples=40, deadline=None)
@given(size_from=st.integers(1, 6), size_to=st.integers(1, 8), seed=st.integers(0, 2**31 - 1))
def test_resampled_regressor_keeps_the_response_to_a_constant_map(size_from: int, size_to: int, seed: int) -> None:
    from train.train import resample_regressor_input

    gen = torch.Generator().manual_seed(seed)
    channels = 3
    weight = torch.randn(5, channels * size_from ** 2, generator=gen, dtype=torch.float64)
    level = torch.randn(channels, generator=gen, dtype=torch.float64)
    resized = resample_regressor_input(weight, channels, size_from, size_to)
    assert resized.shape == (5, channels * size_to ** 2)
    old = weight @ level.repeat_interleave(size_from ** 2)
    new = resized @ level.repeat_interleave(size_to ** 2)
    assert torch.allclose(old, new, atol=1e-9)
    # A weight that is itself constant over space stays constant, scaled by the cell area.
    flat = torch.randn(5, channels, 1, 1, generator=gen, dtype=torch.float64).expand(5, channels, size_from, size_from)
    got = resample_regressor_input(flat.reshape(5, -1), channels, size_from, size_to).reshape(5, channels, size_to, size_to)
    assert torch.allclose(got, flat[..., :1, :1] * (size_from / size_to) ** 2, atol=1e-12)
    assert torch.allclose(resample_regressor_input(weight, channels, size_from, size_from), weight, atol=1e-12)


def test_init_at_another_input_size_resamples_the_regressor(data: dict[str, Path], tmp_path: Path) -> None:
    from engines.config import load_config
    from engines.model_config import ModelConfig
    from engines.model_file import ModelInfo, save_checkpoint
    from engines.network import PoseNet, build_network
    from train.train import init_weights, resample_regressor_input

    small = load_config(ModelConfig, "model.yaml", data["model"])                       # 64 pixels
    source = build_network(small)
    save_checkpoint(tmp_path / "small.pt", source, ModelInfo(small, "untrained small", trained=False))
    large = build_network(dataclasses.replace(small, input_size=96, grid_size=96 // small.grid_stride))
    note = init_weights(large, tmp_path / "small.pt", "all")
    assert "resampled from a 2x2 to a 3x3 map" in note and "new:" not in note
    got, src = large.state_dict(), source.state_dict()
    assert torch.allclose(got["regressor.0.weight"],
                          resample_regressor_input(src["regressor.0.weight"], PoseNet.SPATIAL_CHANNELS, 2, 3))
    assert all(torch.equal(got[k], v) for k, v in src.items() if k != "regressor.0.weight")
    # Only the whole network is continued at another size; the features-only scope leaves the 3D branch.
    fresh = build_network(dataclasses.replace(small, input_size=96, grid_size=96 // small.grid_stride))
    before = fresh.state_dict()["regressor.0.weight"].clone()
    assert "resampled" not in init_weights(fresh, tmp_path / "small.pt", "features")
    assert torch.equal(fresh.state_dict()["regressor.0.weight"], before)
    with pytest.raises(ValueError, match="is not 32 x 3 x 3"):
        resample_regressor_input(src["regressor.0.weight"], PoseNet.SPATIAL_CHANNELS, 3, 4)


def test_evaluate_counts_false_detections_on_person_free_crops(data: dict[str, Path], tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from engines.config import load_config
    from engines.model_config import ModelConfig
    from engines.model_file import ModelInfo, save_checkpoint
    from engines.network import build_network
    from train.evaluate import main

    mcfg = load_config(ModelConfig, "model.yaml", data["model"])
    save_checkpoint(tmp_path / "tiny.pt", build_network(mcfg), ModelInfo(mcfg, "untrained tiny", trained=False))
    out = tmp_path / "neg.json"
    from train.backgrounds import VAL_BACKGROUNDS

    bg = tmp_path / "backgrounds"                 # two held-out photos: the crops' interval has two sources
    shutil.copytree(_backgrounds(data["root"]), bg)
    cv2.imwrite(str(bg / VAL_BACKGROUNDS[1]), np.random.default_rng(4).integers(0, 256, (120, 160, 3), dtype=np.uint8))
    rc = main(["--model", str(tmp_path / "tiny.pt"), "--backgrounds", str(bg), "--negatives", "7",
               "--detect-score", "0.05", "--no-progress", "--json", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["negative"]["samples"] == 7 and res["negative"]["score"]["threshold"] == 0.05
    assert 0.0 <= res["negative"]["score"]["detected"] <= 1.0
    # Crops of one photo are alike: the found share's interval resamples the photos whole.
    low, high = res["negative"]["score"]["detected_interval"]
    from train.backgrounds import split_backgrounds

    assert len(split_backgrounds(bg, "val")) == 2
    assert low <= res["negative"]["score"]["detected"] <= high
    assert "person-free crops | 7 | mean score" in capsys.readouterr().out
    # A second run gives the same crops, hence the same numbers.
    assert main(["--model", str(tmp_path / "tiny.pt"), "--backgrounds", str(bg), "--negatives", "7",
                 "--detect-score", "0.05", "--no-progress", "--json", str(tmp_path / "again.json")]) == 0
    assert json.loads((tmp_path / "again.json").read_text())["negative"] == res["negative"]
    # --limit caps the other sets; the person-free crops are as many as --negatives asks.
    assert main(["--model", str(tmp_path / "tiny.pt"), "--backgrounds", str(bg), "--negatives", "7", "--limit", "2",
                 "--detect-score", "0.05", "--no-progress", "--json", str(tmp_path / "limited.json")]) == 0
    assert json.loads((tmp_path / "limited.json").read_text())["negative"] == res["negative"]
    capsys.readouterr()

    rc = main(["--model", str(tmp_path / "tiny.pt"), "--backgrounds", str(tmp_path / "nowhere"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--backgrounds: background folder not found" in err[0]
    broken = tmp_path / "broken_bg"
    broken.mkdir()
    (broken / "kde_Autumn.jpg").write_bytes(b"not a jpeg")
    rc = main(["--model", str(tmp_path / "tiny.pt"), "--backgrounds", str(broken), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "kde_Autumn.jpg is not an image OpenCV can read" in err[0]
    rc = main(["--model", str(tmp_path / "tiny.pt"), "--backgrounds", str(bg), "--detect-score", "2", "--no-progress"])
    assert rc == 2 and "--detect-score must be in [0, 1]" in capsys.readouterr().err
    # The decoding window: the pipeline's by default, or the one asked for (a wider window holds
    # at least as much of each joint's mass, so no score falls).
    assert res["window"] == 1 and res["window_cells"] == 1
    wide = tmp_path / "wide.json"
    assert main(["--model", str(tmp_path / "tiny.pt"), "--backgrounds", str(bg), "--negatives", "7",
                 "--detect-score", "0.05", "--window", "2", "--no-progress", "--json", str(wide)]) == 0
    wide_res = json.loads(wide.read_text())
    assert wide_res["window"] == 2 and wide_res["negative"]["score"]["mean"] >= res["negative"]["score"]["mean"]
    capsys.readouterr()
    rc = main(["--model", str(tmp_path / "tiny.pt"), "--backgrounds", str(bg), "--window", "9", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--window must be between 0 and 4" in err[0]
    # The real set's training photos, to tell underfitting from overfitting.
    assert main(["--model", str(tmp_path / "tiny.pt"), "--real2d", str(data["real"]), "--real-val-fraction", "0.3",
                 "--real-split", "train", "--no-progress", "--json", str(tmp_path / "train_split.json")]) == 0
    got = json.loads((tmp_path / "train_split.json").read_text())["real"]
    assert got["split"] == "train" and got["samples"] == 7           # 10 photos, 3 held out
    assert "| real (training photos) | 7 | 2D PCK@0.2 |" in capsys.readouterr().out
    # --exact-2d feeds a lifter: a model without one is told so, in one line.
    rc = main(["--model", str(tmp_path / "tiny.pt"), "--backgrounds", str(bg), "--exact-2d", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--exact-2d feeds the lifter, and this model has none" in err[0]


def test_soup_averages_runs_of_one_architecture(data: dict[str, Path], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from engines.config import load_config
    from engines.model_config import ModelConfig
    from engines.model_file import ModelInfo, load_checkpoint, save_checkpoint
    from engines.network import build_network
    from train.soup import main, soup

    mcfg = load_config(ModelConfig, "model.yaml", data["model"])
    paths = []
    for k, flip in enumerate(("none", "all", "none")):
        torch.manual_seed(k)
        net = build_network(mcfg)
        with torch.no_grad():
            for t in net.state_dict().values():
                if t.is_floating_point():
                    t.normal_()
        cfg = dataclasses.replace(mcfg, flip_test=flip)
        paths.append(tmp_path / f"run{k}.pt")
        save_checkpoint(paths[-1], net, ModelInfo(cfg, f"run{k}, step 6, today", True))
    line = soup(paths, tmp_path / "soup.pt")
    assert line == "soup of run0, run1, run2"
    net, info = load_checkpoint(tmp_path / "soup.pt")
    assert info.config == dataclasses.replace(mcfg, flip_test="none") and info.trained
    assert "the runs differ in test-time mirroring (all, none); the soup has none" in capsys.readouterr().err
    # Runs that are all mirrored give a mirrored soup; a name is what comes before its first ": " or ", ".
    save_checkpoint(tmp_path / "a.pt", net, ModelInfo(dataclasses.replace(mcfg, flip_test="all"),
                                                      "stage 25c: trained on 84,800 people", True))
    assert soup([tmp_path / "a.pt", paths[1]], tmp_path / "mirrored.pt") == "soup of stage 25c, run1"
    assert load_checkpoint(tmp_path / "mirrored.pt")[1].config.flip_test == "all"
    states = [torch.load(p, weights_only=False)["state_dict"] for p in paths]
    for key, value in net.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, (states[0][key] + states[1][key] + states[2][key]) / 3)
        else:
            assert torch.equal(value, states[0][key])
    assert soup(paths[:2], tmp_path / "named.pt", weights=" mine ") == "mine"
    capsys.readouterr()
    # Failures: one clear line and exit status 2.
    other = dataclasses.replace(mcfg, roots=("pelvis", "thorax"))
    save_checkpoint(tmp_path / "other.pt", build_network(other), ModelInfo(other, "other", True))
    for argv, message in (
            ([str(paths[0]), str(tmp_path / "other.pt")], "other.pt: its model config differs"),
            ([str(paths[0])], "at least two checkpoints"),
            ([str(paths[0]), str(tmp_path / "soup.pt")], "is one of the --models"),
            ([str(paths[0]), str(tmp_path / "absent.pt")], "absent.pt"),
            ([str(paths[0]), str(paths[1])], "cannot write")):
        out = tmp_path / "soup.pt" if "one of" in message else tmp_path / "bad.pt"
        if message == "cannot write":
            out = tmp_path / "named.pt" / "under_a_file.pt"
        assert main(["--models", *argv, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert main(["--models", str(paths[0]), str(paths[1]), "--out", str(tmp_path / "ok.pt")]) == 0
    assert "wrote" in capsys.readouterr().out


def test_cut_off_people_train_and_stage_21_changes_only_that(data: dict[str, Path], tmp_path: Path) -> None:
    from train.train import train

    tiny_data = (f"\n  synth_dirs: [{data['train']}]\n  synth_val_dirs: [{data['val']}]\n"
                 f"  real2d_dir: {data['real']}\n  real_fraction: 0.5\n  real_val_fraction: 0.3\n  cut_fraction: 1.0")
    cfg = load_train_config(recipe(data, tmp_path, name="cut", data=tiny_data, loss="\n  w_edge: 1.0"))
    assert cfg.data.cut_fraction == 1.0 and cfg.loss.w_edge == 1.0
    summary = train(cfg, tmp_path / "cut", progress=False)
    log = [json.loads(line) for line in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss_2d"]) for r in log if "loss_2d" in r) and Path(summary["final"]).exists()
    plain = load_train_config(recipe(data, tmp_path, name="plain"))
    assert plain.data.cut_fraction == 0.0 and plain.loss.w_edge == 0.0
    # Stage 21: stage 15's start and schedule (stage 14, 3,000 steps), with the cut and edge loss for the twin loss.
    stage15 = load_train_config(REPO / "configs" / "train" / "twins.yaml")
    stage21 = load_train_config(REPO / "configs" / "train" / "cut_off.yaml")
    assert stage21.data.cut_fraction > 0 and stage21.loss.w_edge > 0
    assert dataclasses.replace(stage21, name=stage15.name, data=dataclasses.replace(stage21.data, cut_fraction=0.0),
                               loss=dataclasses.replace(stage21.loss, w_edge=0.0, w_twin=stage15.loss.w_twin)) == stage15
    for bad, match in (("data", "cut_fraction"), ("loss", "w_edge")):
        text = tiny_data.replace("cut_fraction: 1.0", "cut_fraction: 1.5") if bad == "data" else "\n  w_edge: -1"
        with pytest.raises(ConfigError, match=match):
            load_train_config(recipe(data, tmp_path, name=f"cut_bad_{bad}", **{bad: text}))


def test_a_time_budgeted_run_sets_its_own_steps_and_keeps_them_on_resume(data: dict[str, Path], tmp_path: Path) -> None:
    from train.train import LAST, train

    cfg = load_train_config(recipe(data, tmp_path, val_every="0", checkpoint_every="1000"))
    run = tmp_path / "budget"
    budget = 3.0
    summary = train(cfg, run, progress=False, time_budget_s=budget)
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    plans = [r for r in log if "plan" in r]
    assert len(plans) == 1
    plan = plans[0]["plan"]
    total, hold = plan["total"], plan["hold"]
    # Planned at the first log record after 15% of the budget, from the rate it measured there.
    assert plans[0]["step"] == hold and total >= hold and plan["budget_s"] == budget and plan["steps_per_s"] > 0
    assert summary["step"] == summary["steps"] == total and summary["final"] and (run / "model.pt").is_file()
    losses = [r for r in log if "loss" in r]
    assert losses[-1]["step"] == total and "val" in log[-1]
    assert json.loads((run / "config.json").read_text())["train"]["optim"]["steps"] == total
    # The peak learning rate after the warm-up until the plan, then the cosine decay to its end.
    peak = cfg.optim.lr
    assert all(r["lr"] == pytest.approx(peak) for r in losses if cfg.optim.warmup_steps <= r["step"] - 1 <= hold)
    if total > hold + 2:
        assert losses[-1]["lr"] < peak
    # The plan is in the checkpoint, and a resumed run keeps it instead of planning again.
    assert torch.load(run / LAST, map_location="cpu", weights_only=True)["training"]["plan"]["total"] == total
    notes: list[str] = []
    again = train(cfg, run, progress=False, announce=notes.append, time_budget_s=100.0)
    assert again["step"] == total and any("planned for a 3 s budget" in n for n in notes)


def test_a_bad_time_budget_is_one_error_line(data: dict[str, Path], tmp_path: Path) -> None:
    path = recipe(data, tmp_path)
    proc = subprocess.run([sys.executable, "-m", "train.train", "--config", str(path), "--out", str(tmp_path / "r"),
                           "--time-budget", "0"], capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "--time-budget must be a positive number of seconds" in proc.stderr
    assert not (tmp_path / "r" / "last.pt").exists()


def test_a_checkpoint_that_cannot_be_written_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    import train.train as train_module
    from engines.config import load_config
    from engines.model_config import ModelConfig
    from engines.network import build_network
    def full_disk(path: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(train_module, "atomic_write_bytes", full_disk)
    mcfg = load_config(ModelConfig, "model.yaml")
    net = build_network(mcfg)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    (tmp_path / "last.pt").write_bytes(b"the one before")
    with pytest.raises(InputError, match=r"cannot write the checkpoint .*last.pt at step 20: No space left on "
                                         r"device .*the checkpoint already there is kept whole"):
        train_module.save_training_state(tmp_path / "last.pt", net, opt, sched, 20,
                                         load_train_config(REPO / "configs" / "train" / "default.yaml"), mcfg)


def test_training_on_a_held_out_set_is_said(tmp_path: Path) -> None:
    from train.train import held_out_in_training

    val, other = tmp_path / "val", tmp_path / "other"
    metas = {val: {"split": "val"}, other: {"split": "train"}}
    notes = held_out_in_training([val, other], [metas[val], metas[other]], [tmp_path / "elsewhere"])
    assert len(notes) == 1 and "its manifest says split: val" in notes[0]
    notes = held_out_in_training([other], [metas[other]], [other])
    assert len(notes) == 1 and "is both a training and a validation folder" in notes[0]
    assert held_out_in_training([other], [metas[other]], [val]) == []


@pytest.mark.parametrize("tool, argv, says", [
    ("train.synth.generate", ["--split", "train", "--out", "{d}/g", "--count", "2", "--seed", "-1",
                              "--bodies", "{d}/b.npz"], "--seed must be"),
    ("train.synth.clip", ["--out", "{d}/c", "--seed", "-1", "--bodies", "{d}/b.npz"], "--seed must be"),
    ("train.synth.body", ["--out", "{d}", "--bodies", "2"], "is a folder; give the body bank's file name"),
])
def test_rendering_tools_refuse_bad_arguments_before_any_work(tmp_path: Path, tool: str, argv: list[str],
                                                              says: str, capsys: pytest.CaptureFixture[str]) -> None:
    import importlib

    module = importlib.import_module(tool)
    with pytest.raises(SystemExit) as exit_:
        module.main([a.format(d=tmp_path) for a in argv])
    assert exit_.value.code == 2 and says in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == []          # nothing made


def test_a_stop_signal_before_the_loop_is_one_line_and_its_exit_code(monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    # SIGTERM while the data and the network are set up (before the loop's own handlers): it
    # killed the run without a word and left its folder. Now it ends as Ctrl-C does, 128 + 15.
    import train.train as train_module

    def setting_up(args: object) -> int:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)                              # the handler raises before this ends
        return 0

    monkeypatch.setattr(train_module, "run", setting_up)
    assert train_module.main(["--config", str(REPO / "configs" / "train" / "default.yaml")]) == 143
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["python -m train.train: stopped by SIGTERM (the last checkpoint, if any, is kept: run the same "
                   "command again to resume)"]


def test_a_second_run_of_one_folder_is_refused_while_the_first_trains(data: dict[str, Path], tmp_path: Path) -> None:
    """Two runs given one --out both resumed from its last.pt and wrote it in turn, and both ended
    "successfully". The run holds a lock on the folder (a POSIX record lock, which the kernel lets
    go of when its process ends, killed or not): a second run is one line until the first ends."""
    import subprocess

    from engines.errors import InputError
    from train.train import train

    cfg = load_train_config(recipe(data, tmp_path))
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys\nfrom pathlib import Path\n"
                               "from train.run_lock import run_folder_lock\n"
                               "with run_folder_lock(Path(sys.argv[1])):\n"
                               "    print('held', flush=True)\n    sys.stdin.read()\n", str(out)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(InputError) as refused:
            train(cfg, out, progress=False)
        assert str(refused.value) == (f"another training run is using '{out}' (process {holder.pid}); wait for it "
                                      f"to end, or give another --out")
        assert sorted(p.name for p in out.iterdir()) == [".lock"]     # nothing of the run touched
    finally:
        holder.kill()
        holder.wait()
    train(cfg, out, progress=False)           # the holder gone, its lock went with it
    assert (out / "model.pt").is_file()
