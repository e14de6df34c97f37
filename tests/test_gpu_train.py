"""Training on a GPU machine that holds only the repository and a pack: scripts/gpu_pack.sh,
scripts/gpu_train.sh and configs/train/gpu.yaml. The whole script runs here on the CPU with a
small recipe: it renders, then trains for the time it is given (the run sizes itself)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from train import motion
from train.config import load_train_config

REPO = Path(__file__).resolve().parent.parent
DATA = motion.default_data_root()
needs_data = pytest.mark.skipif(
    not all((DATA / d).exists() for d in (motion.H36M_FILE, motion.CMU_DIR, "backgrounds", "real2d_fashion")),
    reason=f"shared data not found under {DATA} (set POSECAST_DATA)")


def run_script(name: str, *args: str, env: dict[str, str] | None = None,
               timeout: float = 600) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHON": sys.executable, **(env or {})}
    return subprocess.run(["bash", str(REPO / "scripts" / name), *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=REPO)


def test_the_gpu_recipe_is_stage_21_with_a_larger_batch() -> None:
    gpu = load_train_config(REPO / "configs" / "train" / "gpu.yaml")
    stage21 = load_train_config(REPO / "configs" / "train" / "cut_off.yaml")
    assert gpu.model == stage21.model and gpu.loss == stage21.loss
    assert gpu.data.synth_dirs == ("$POSECAST_WORK/synth_gpu_1*",) and gpu.data.synth_val_dirs == ()
    for field in ("real_fraction", "negative_fraction", "cut_fraction", "backgrounds_dir"):
        assert getattr(gpu.data, field) == getattr(stage21.data, field), field
    assert (gpu.optim.batch_size, stage21.optim.batch_size) == (128, 32)
    assert gpu.init_from == "$POSECAST_WORK/runs/cut_off/model.pt" and gpu.init_scope == "all" and gpu.device == "cuda"
    more = load_train_config(REPO / "configs" / "train" / "gpu_more.yaml")       # stage 23: stage 22 again
    assert more.init_from == "$POSECAST_WORK/runs/gpu/model.pt" and more.data.synth_dirs == ("$POSECAST_WORK/synth_gpu_2*",)
    assert more.optim.lr < gpu.optim.lr and (more.model, more.loss) == (gpu.model, gpu.loss)
    long = load_train_config(REPO / "configs" / "train" / "gpu_long.yaml")       # stage 24: stage 23 again, longer
    assert long.init_from == "$POSECAST_WORK/runs/gpu_more/model.pt" and long.data.synth_dirs == ("$POSECAST_WORK/synth_gpu_3*",)
    assert long.optim.lr == more.optim.lr and long.optim.steps > more.optim.steps
    assert (long.model, long.loss, long.data.real_fraction) == (gpu.model, gpu.loss, gpu.data.real_fraction)
    nxt = load_train_config(REPO / "configs" / "train" / "gpu_next.yaml")        # stage 25 (prepared): stage 24 again
    assert nxt.init_from == "$POSECAST_WORK/runs/gpu_long/model.pt" and nxt.data.synth_dirs == ("$POSECAST_WORK/synth_gpu_4*",)
    assert (nxt.model, nxt.loss, nxt.data, nxt.optim) == (long.model, long.loss,
                                                           dataclasses.replace(long.data, synth_dirs=nxt.data.synth_dirs), long.optim)


def test_gpu_pack_refuses_without_a_body_bank(tmp_path: Path) -> None:
    r = run_script("gpu_pack.sh", str(tmp_path / "pack"), env={"POSECAST_WORK": str(tmp_path)})
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "no body bank" in r.stderr and "train.synth.body" in r.stderr


def test_gpu_pack_refuses_a_bank_with_older_joint_labels(tmp_path: Path) -> None:
    """Such a bank is refused by the renderer on the GPU machine, after its start: refuse it here."""
    from train.synth.body import PARTS, REGIONS

    np.savez(tmp_path / "bodies.npz", parts=np.array(PARTS), regions=np.array(REGIONS))   # no joints_version: 1
    r = run_script("gpu_pack.sh", str(tmp_path / "pack"), env={"POSECAST_WORK": str(tmp_path)})
    assert r.returncode == 2 and not (tmp_path / "pack").exists()
    assert r.stderr.strip().count("\n") == 0 and "version 1 of the joint labels" in r.stderr, r.stderr


PACKED = ("bodies.npz", "motions.npz", "backgrounds", "real2d_fashion", "real2d_fashion/keypoints.json")


def _pack(root: Path, missing: str = "") -> Path:
    pack = root / "pack"
    for name in PACKED:
        if not missing or not (name == missing or name.startswith(missing + "/")):
            (pack / name).parent.mkdir(parents=True, exist_ok=True)
            (pack / name).mkdir() if "." not in name else (pack / name).write_bytes(b"x")
    return pack


@pytest.mark.parametrize("missing", PACKED)
def test_gpu_train_refuses_an_incomplete_pack(tmp_path: Path, missing: str) -> None:
    pack = _pack(tmp_path, missing)
    r = run_script("gpu_train.sh", str(pack), str(tmp_path / "out"), env={"POSECAST_WORK": str(tmp_path / "w")})
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and f"has no {missing}" in r.stderr and "gpu_pack.sh" in r.stderr


@pytest.mark.parametrize("args, env, says", [
    (["0", "5"], {}, "RENDER_S must be a whole number of seconds above 0 (got '0')"),
    (["abc", "5"], {}, "RENDER_S must be a whole number"),
    (["5", "0"], {}, "TRAIN_S must be a whole number"),
    (["5", "5"], {"DEADLINE_S": "-3"}, "DEADLINE_S must be a whole number"),
    (["5", "5"], {"STEPS": "many"}, "STEPS must be a whole number above 0"),
    (["5", "5"], {"STEP_BENCH": "yes"}, "STEP_BENCH must be auto, 1 or 0 (got 'yes')"),
    (["5", "5", "configs/train/gpu_nxt.yaml"], {}, "no recipe configs/train/gpu_nxt.yaml"),
    (["5", "5"], {"INIT": "nowhere/stage24.pt"}, "no INIT model file nowhere/stage24.pt"),
])
def test_gpu_train_checks_its_arguments_before_rendering(tmp_path: Path, args: list[str], env: dict[str, str],
                                                         says: str) -> None:
    """Every argument is checked before the smoke test and the renderers spend device time."""
    pack = _pack(tmp_path)
    r = run_script("gpu_train.sh", str(pack), str(tmp_path / "out"), *args, env={"POSECAST_WORK": str(tmp_path / "w"), **env})
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and says in r.stderr, r.stderr
    assert not (tmp_path / "w" / "gpu_logs").exists() and r.stdout == ""


def test_gpu_train_refuses_an_out_it_cannot_make(tmp_path: Path) -> None:
    """Without OUT, its files went to / before (the EXIT trap wrote /logs.tgz)."""
    (tmp_path / "a_file").write_text("")
    r = run_script("gpu_train.sh", str(_pack(tmp_path)), str(tmp_path / "a_file"), "5", "5",
                   env={"POSECAST_WORK": str(tmp_path / "w")})
    assert r.returncode == 2 and r.stderr.strip() == f"error: cannot make OUT {tmp_path / 'a_file'} (a folder it can write)"


def test_gpu_train_refuses_a_missing_pack(tmp_path: Path) -> None:
    r = run_script("gpu_train.sh", str(tmp_path / "nowhere"), str(tmp_path / "out"))
    assert r.returncode == 2 and "no pack folder" in r.stderr.splitlines()[-1]


@needs_data
def test_gpu_pack_then_gpu_train_render_measure_and_train(tmp_path: Path) -> None:
    """The pack holds what the datasets give; the script renders from it with its own seeds,
    trains for TRAIN_S seconds (the run sets its steps from its own rate) and leaves the model and
    its logs in OUT."""
    pytest.importorskip("moderngl", reason="moderngl is in the test extra")
    pytest.importorskip("anny", reason="anny is in the test extra")
    from train.synth.body import export

    work = tmp_path / "work"
    export(3, seed=0, out=work / "bodies.npz")
    pack = tmp_path / "pack"
    r = run_script("gpu_pack.sh", str(pack), env={"POSECAST_WORK": str(work), "POSECAST_DATA": str(DATA)})
    assert r.returncode == 0, r.stderr
    bank, cameras = motion.load_all(DATA)
    packed, packed_cameras = motion.load_pack(pack / "motions.npz")
    np.testing.assert_array_equal(packed.joints, bank.joints)
    assert len(packed_cameras) == len(cameras)
    assert sorted(p.name for p in (pack / "backgrounds").iterdir()) == sorted(p.name for p in (DATA / "backgrounds").iterdir())
    assert (pack / "real2d_fashion" / "keypoints.json").read_bytes() == (DATA / "real2d_fashion" / "keypoints.json").read_bytes()

    recipe = tmp_path / "cpu.yaml"     # the GPU recipe, small enough for two CPU cores
    recipe.write_text((REPO / "configs" / "train" / "gpu.yaml").read_text().replace("device: cuda", "device: cpu")
                      .replace("batch_size: 128", "batch_size: 8").replace("warmup_steps: 200", "warmup_steps: 2")
                      + "val_samples: 8\n")
    out = tmp_path / "out"
    r = run_script("gpu_train.sh", str(pack), str(out), "20", "6", str(recipe),
                   env={"POSECAST_WORK": str(work), "INIT": "engines/weights/default.pt", "STEP_BENCH": "1"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "rendering works" in r.stdout and "trained" in r.stdout and "% of the time waiting for data" in r.stdout
    # The step's timing ran beside the renderers (here on the CPU, forced; by default only with a
    # GPU) and says at least what it ran on before rendering's end cut it off (its figures, or the
    # end of its log where it had none yet).
    assert ("the training step, timed while rendering" in r.stdout
            or "the training step's timing gave no figure" in r.stdout)
    assert "batch 8 of 128 px crops, on CPU" in r.stdout
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "data.json", "log.jsonl", "logs.tgz", "model.pt"]
    rendered = json.loads((out / "data.json").read_text())["synthetic"]
    assert rendered["images"] > 0 and all(Path(f).name.startswith("synth_gpu_1") for f in rendered["folders"])
    steps = int(r.stdout.split("trained ")[1].split(" steps (planned at step")[0])
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps > 0 and log[-1]["step"] == steps and "val" in log[-1]
    plan = [row["plan"] for row in log if "plan" in row]     # the run sized itself for TRAIN_S
    assert len(plan) == 1 and plan[0]["total"] == steps and plan[0]["budget_s"] == 6
    config = json.loads((out / "config.json").read_text())["train"]
    assert config["optim"]["steps"] == steps and config["init_from"] == "engines/weights/default.pt"
    assert (work / "runs" / "cpu" / "model.pt").is_file()            # the run folder takes the recipe's name

    # STEPS repeats a recorded run: that many steps, whatever the time. 3 s of rendering finish no
    # shard of 200 images (10 s once made none on these two loaded cores); the first run's
    # synth_gpu_1000, resumed, has some already.
    again = tmp_path / "again"
    r = run_script("gpu_train.sh", str(pack), str(again), "3", "6", str(recipe),
                   env={"POSECAST_WORK": str(work), "INIT": "engines/weights/default.pt", "STEPS": "3"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "trained 3 steps (STEPS;" in r.stdout
    assert "the training step" not in r.stdout          # STEP_BENCH=auto: no GPU here, nothing to say
    log = [json.loads(line) for line in (again / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 3 and not any("plan" in row for row in log)

    # A SIGTERM (or Ctrl-C) to the script reaches the run, which checkpoints: OUT gets the
    # weights of that checkpoint, and last.pt in parts, and nothing is left running. (3 s of
    # rendering finish no shard: the first run's synth_gpu_1000, resumed, has some already.)
    sliced = tmp_path / "cpu_slices.yaml"
    sliced.write_text(recipe.read_text().replace("checkpoint_every: 250", "checkpoint_every: 2"))
    stopped = tmp_path / "stopped"
    proc = subprocess.Popen(["bash", str(REPO / "scripts" / "gpu_train.sh"), str(pack), str(stopped), "3", "60", str(sliced)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                            env={**os.environ, "PYTHON": sys.executable, "POSECAST_WORK": str(work),
                                 "INIT": "engines/weights/default.pt", "STEPS": "100000"})
    deadline = time.monotonic() + 300
    while not (work / "runs" / "cpu_slices" / "last.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    said = proc.communicate(timeout=120)[0]
    assert proc.returncode == 143, said
    assert "the run was stopped (TERM)" in said and "its last checkpoint (step" in said
    names = sorted(p.name for p in stopped.iterdir())
    assert "last_weights.pt" in names and any(n.startswith("last.pt.part_") for n in names) and "model.pt" not in names
    parts = b"".join(p.read_bytes() for p in sorted(stopped.glob("last.pt.part_*")))
    assert parts == (work / "runs" / "cpu_slices" / "last.pt").read_bytes()
    from engines.models import resolve_model

    assert resolve_model(stopped / "last_weights.pt").info.trained
    import psutil

    left = [p.info["cmdline"] for p in psutil.process_iter(["cmdline"]) if str(work) in " ".join(p.info["cmdline"] or [])]
    assert left == [], left


def _copy_script(root: Path, name: str) -> Path:
    (root / "scripts").mkdir(parents=True, exist_ok=True)
    script = root / "scripts" / name
    script.write_text((REPO / "scripts" / name).read_text())
    return script


@pytest.mark.parametrize("missing", [".gpu/pack", ".gl", ".whl"])
def test_gpu_device_refuses_a_checkout_without_what_it_carries(tmp_path: Path, missing: str) -> None:
    script = _copy_script(tmp_path, "gpu_device.sh")
    for d in (".gpu/pack", ".gl", ".whl"):
        if d != missing:
            (tmp_path / d).mkdir(parents=True)
    r = subprocess.run(["bash", str(script), str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0
    assert f"no {missing} in the carried checkout" in r.stderr and "gpu_carry.sh" in r.stderr
    r = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "usage: bash scripts/gpu_device.sh OUT" in r.stderr


def test_gpu_carry_keeps_what_is_there_and_reports_the_sizes(tmp_path: Path) -> None:
    script = _copy_script(tmp_path, "gpu_carry.sh")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    for path in (".gpu/pack/motions.npz", ".gl/libegl1.deb", ".whl/moderngl.whl"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(b"x" * 1000)
    r = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert ".gpu" in r.stdout and ".gl" in r.stdout and ".whl" in r.stdout and "at most 64 MiB" in r.stdout
    assert sorted(p.name for p in (tmp_path / ".gl").iterdir()) == ["libegl1.deb"]    # nothing downloaded


def test_gpu_carry_refuses_what_a_device_call_cannot_carry(tmp_path: Path) -> None:
    script = _copy_script(tmp_path, "gpu_carry.sh")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    for path in (".gl/libegl1.deb", ".whl/moderngl.whl"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(b"x" * 1000)
    (tmp_path / ".gpu" / "pack").mkdir(parents=True)
    with open(tmp_path / ".gpu" / "pack" / "motions.npz", "wb") as f:
        f.truncate(65 * 1024 * 1024)                  # sparse: 65 MiB counted, nothing written
    r = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 4 and r.stderr.strip().count("\n") == 0
    assert "over a device call's 64 MiB" in r.stderr and "a device call carries 65.0 MiB (the working tree's files 0.0 MiB" in r.stdout


def test_an_interrupted_gpu_pack_keeps_the_pack_there_was(tmp_path: Path) -> None:
    """The pack is made aside and moved into place whole: a failure leaves the old one as it was,
    and nothing half-made that gpu_carry.sh or gpu_train.sh would take for complete."""
    work, data = tmp_path / "work", tmp_path / "data"
    work.mkdir()
    (work / "bodies.npz").write_bytes(b"bodies")
    for d in ("backgrounds", "real2d_fashion"):
        (data / d).mkdir(parents=True)
    old = _pack(tmp_path)
    r = run_script("gpu_pack.sh", str(old), env={"POSECAST_WORK": str(work), "POSECAST_DATA": str(data),
                                                 "PYTHON": "false"})
    assert r.returncode != 0
    assert sorted(p.name for p in old.iterdir()) == sorted(n for n in PACKED if "/" not in n)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".gpu_pack")] == []


def test_gpu_carry_reports_a_failed_download_in_one_line_and_leaves_nothing_half_done(tmp_path: Path) -> None:
    script = _copy_script(tmp_path, "gpu_carry.sh")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gpu" / "pack").mkdir(parents=True)
    (tmp_path / ".gpu" / "pack" / "motions.npz").write_bytes(b"x")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "apt-get"        # a download that writes one file, then fails
    fake.write_text("#!/bin/sh\ntouch libegl1.deb\necho 'E: Unable to locate package libvulkan1' >&2\nexit 100\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    r = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env)
    assert r.returncode == 3 and r.stderr.strip().count("\n") == 0
    assert "apt-get download failed (E: Unable to locate package libvulkan1)" in r.stderr
    assert not (tmp_path / ".gl").exists()            # a later run downloads again


@pytest.mark.parametrize("empty", [".gl", ".whl"])
def test_gpu_device_refuses_an_empty_carried_folder(tmp_path: Path, empty: str) -> None:
    script = _copy_script(tmp_path, "gpu_device.sh")
    for d in (".gpu/pack", ".gl", ".whl"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / ".gl" / "libegl1.deb").write_bytes(b"x")
    (tmp_path / ".whl" / "moderngl.whl").write_bytes(b"x")
    for f in (tmp_path / empty).iterdir():
        f.unlink()
    r = subprocess.run(["bash", str(script), str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and f"no {empty}/*." in r.stderr, r.stderr


def test_gpu_device_reports_a_library_it_cannot_unpack_in_one_line(tmp_path: Path) -> None:
    script = _copy_script(tmp_path, "gpu_device.sh")
    for d in (".gpu/pack", ".gl", ".whl"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / ".gl" / "libegl1.deb").write_bytes(b"x")
    (tmp_path / ".whl" / "moderngl.whl").write_bytes(b"x")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dpkg").write_text("#!/bin/sh\necho 'dpkg-deb: error: failed to create directory' >&2\nexit 2\n")
    (bin_dir / "dpkg").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    r = subprocess.run(["bash", str(script), str(tmp_path / "out")], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 3 and r.stderr.strip().count("\n") == 0
    assert "cannot unpack .gl/libegl1.deb (dpkg-deb: error: failed to create directory)" in r.stderr
    assert not (tmp_path / "out").exists()
