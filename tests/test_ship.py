"""Shipping a checkpoint (train/ship.py) and choosing test-time mirroring for an evaluation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from engines.errors import InputError, ModelFileError
from engines.model_config import ModelConfig
from engines.model_file import ModelInfo, export_onnx, load_checkpoint, save_checkpoint
from engines.network import build_network
from train.evaluate import load_predictor
from train.ship import main as ship_main
from train.ship import ship


@pytest.fixture()
def run_model(tmp_path: Path, small_model_config: ModelConfig) -> Path:
    """A training run's model.pt: some trained-looking weights, mirroring off."""
    cfg = dataclasses.replace(small_model_config, lift_width=16, seed=3)
    net = build_network(cfg)
    path = tmp_path / "run" / "model.pt"
    path.parent.mkdir()
    save_checkpoint(path, net, ModelInfo(cfg, weights="stage, step 10", trained=True))
    return path


def crops(size: int, n: int = 2) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_ship_sets_mirroring_and_weights_line_and_keeps_the_weights(run_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "default.pt"
    line = ship(run_model, out, flip_test="all", weights="stage, step 10, mirrored")
    assert line == "stage, step 10, mirrored"
    src, src_info = load_checkpoint(run_model)
    back, info = load_checkpoint(out)
    assert info.config.flip_test == "all" and src_info.config.flip_test == "none"
    assert info.trained and info.config == dataclasses.replace(src_info.config, flip_test="all")
    for key, value in src.state_dict().items():
        assert torch.equal(back.state_dict()[key], value)
    # Mirroring changes the outputs; switching it off again gives the source's exactly.
    x = torch.from_numpy(crops(info.config.input_size))
    with torch.no_grad():
        assert not torch.equal(back(x)[1], src(x)[1])
    ship(out, tmp_path / "plain.pt", flip_test="none")
    plain, plain_info = load_checkpoint(tmp_path / "plain.pt")
    assert plain_info.weights == "stage, step 10, mirrored" and plain_info.config == src_info.config
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(plain(x), src(x)))


def test_ship_errors(run_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(InputError, match="--out is the --model file"):
        ship(run_model, run_model, flip_test="all")
    with pytest.raises(InputError, match="--weights must not be empty"):
        ship(run_model, tmp_path / "x.pt", weights="  ")
    assert ship_main(["--model", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "y.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model file not found" in err[0]
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "y.pt").exists()


def test_ship_refuses_mirroring_with_one_sided_roots(tmp_path: Path, small_model_config: ModelConfig) -> None:
    cfg = dataclasses.replace(small_model_config, roots=("pelvis", "l_hip"))
    path = tmp_path / "m.pt"
    save_checkpoint(path, build_network(cfg), ModelInfo(cfg, weights="w", trained=True))
    with pytest.raises(ModelFileError, match="flip_test needs the roots"):
        ship(path, tmp_path / "out.pt", flip_test="3d")


def test_ship_command_line(run_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "shipped.pt"
    assert ship_main(["--model", str(run_model), "--out", str(out), "--flip-test", "3d"]) == 0
    assert "stage, step 10, 3D mirrored at test time" in capsys.readouterr().out
    _, info = load_checkpoint(out)
    # Without --weights the run's line stays, and says when shipping switched mirroring on.
    assert info.config.flip_test == "3d" and info.weights == "stage, step 10, 3D mirrored at test time"
    assert ship(run_model, tmp_path / "all.pt", flip_test="all") == "stage, step 10, mirrored at test time"
    assert ship(run_model, tmp_path / "same.pt") == "stage, step 10"


def test_ship_to_a_folder_is_one_clear_line(run_model: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "weights"
    folder.mkdir()
    assert ship_main(["--model", str(run_model), "--out", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"python -m train.ship: error: cannot write {folder}")
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("name", ["model.onnx", "model", "model.engine"])
def test_ship_refuses_an_out_the_runtime_would_not_read_as_a_checkpoint(
        run_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str) -> None:
    """The runtime reads a model by its suffix: a checkpoint shipped as model.onnx was written and
    then refused by posecast ("not an ONNX model"). One line, exit 2, nothing written."""
    assert ship_main(["--model", str(run_model), "--out", str(tmp_path / name)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("python -m train.ship: error: --out must name a .pt file")
    assert "posecast export" in err[0]
    assert not (tmp_path / name).exists()
    assert ship_main(["--model", str(run_model), "--out", str(tmp_path / "model.PTH")]) == 0


def test_evaluate_can_switch_mirroring_of_a_checkpoint_only(run_model: Path, tmp_path: Path) -> None:
    on, cfg_on, _ = load_predictor(run_model, flip_test="3d")
    off, cfg_off, _ = load_predictor(run_model)
    assert cfg_on.flip_test == "3d" and cfg_off.flip_test == "none"
    x = crops(cfg_on.input_size, 3)
    assert not np.allclose(on(x)[1], off(x)[1])
    net, info = load_checkpoint(run_model)
    onnx_path = export_onnx(net, info, tmp_path / "m.onnx")
    load_predictor(onnx_path, flip_test="none")                     # what the graph holds: fine
    with pytest.raises(InputError, match="part of an ONNX graph"):
        load_predictor(onnx_path, flip_test="all")
