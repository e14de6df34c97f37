"""Resolving models: the cached default, checkpoints, and clear errors for bad model files."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import engines.models as models
from engines.errors import ModelFileError
from engines.model_file import (ModelInfo, export_onnx, load_checkpoint, read_onnx_info, save_checkpoint)
from engines.model_config import ModelConfig
from engines.models import ModelArtifact, file_sha256, resolve_model
from engines.network import build_network


def _no_export(*args, **kwargs):
    raise AssertionError("the model was exported again")


def test_default_model_is_the_shipped_trained_checkpoint(default_model: ModelArtifact, _session_cache: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The trained weights ship with Posecast: `resolve_model(None)` runs them, exported once into
    the (temporary) cache, never next to the weights."""
    assert models.SHIPPED_DEFAULT.is_file()
    first = default_model
    assert first.checkpoint_path == models.SHIPPED_DEFAULT
    assert first.info.trained is True and "untrained" not in first.info.weights
    cfg = first.info.config
    assert (cfg.input_size, cfg.grid_size, cfg.grid_stride, len(cfg.roots), cfg.fusion) == (128, 32, 4, 6, "conv")
    assert (cfg.offsets_frame, cfg.flip_test) == ("ray", "all")        # the align stage turns its poses
    assert first.onnx_path.is_file() and first.onnx_path.parent == _session_cache / "models"
    mtime = first.onnx_path.stat().st_mtime_ns
    monkeypatch.setattr(models, "export_onnx", _no_export)
    second = resolve_model(None)
    assert second == first
    assert second.onnx_path.stat().st_mtime_ns == mtime


def test_shipped_default_goes_to_posecast_cache(posecast_cache: Path) -> None:
    """A fresh cache: the shipped checkpoint's export is written there (and only that), and the
    record of its check under its hash."""
    first = resolve_model(None)
    assert [p.name for p in (posecast_cache / "models").iterdir()] == [first.onnx_path.name]
    assert [p.name for p in (posecast_cache / "checked").iterdir()] == [f"{first.onnx_sha256}.json"]
    assert first.onnx_path.suffix == ".onnx" and first.checkpoint_path == models.SHIPPED_DEFAULT


def test_untrained_default_is_cached(untrained_model: ModelArtifact, _session_cache: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Without shipped weights the default is the seeded, untrained network of configs/model.yaml."""
    first = untrained_model
    assert first.onnx_path.is_file() and first.checkpoint_path is not None and first.checkpoint_path.is_file()
    # Both files live in the (temporary) cache, never in ~/.cache.
    assert first.onnx_path.parent == _session_cache / "models"
    assert first.checkpoint_path.parent == _session_cache / "models"
    assert first.info.trained is False and "untrained" in first.info.weights
    assert first.info.config == models.default_model_config()
    mtimes = (first.onnx_path.stat().st_mtime_ns, first.checkpoint_path.stat().st_mtime_ns)
    monkeypatch.setattr(models, "SHIPPED_DEFAULT", tmp_path / "no-weights" / "default.pt")
    monkeypatch.setattr(models, "export_onnx", _no_export)
    monkeypatch.setattr(models, "save_checkpoint", _no_export)
    second = resolve_model(None)
    assert second == first
    assert (second.onnx_path.stat().st_mtime_ns, second.checkpoint_path.stat().st_mtime_ns) == mtimes


def test_untrained_default_goes_to_posecast_cache(posecast_cache: Path, small_model_config: ModelConfig,
                                                  tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No shipped weights and a fresh cache: the first call writes the checkpoint and its export
    there, the second reuses them. (A small config stands in for the default to keep the export
    quick.)"""
    monkeypatch.setattr(models, "SHIPPED_DEFAULT", tmp_path / "no-weights" / "default.pt")
    monkeypatch.setattr(models, "default_model_config", lambda: small_model_config)
    assert not any(posecast_cache.iterdir())
    first = resolve_model(None)
    files = sorted(p.name for p in (posecast_cache / "models").iterdir())
    assert len(files) == 2 and any(f.endswith(".pt") for f in files) and any(f.endswith(".onnx") for f in files)
    assert first.info.config == small_model_config and first.info.trained is False
    mtime = first.onnx_path.stat().st_mtime_ns
    monkeypatch.setattr(models, "export_onnx", _no_export)
    assert resolve_model(None) == first
    assert first.onnx_path.stat().st_mtime_ns == mtime


def test_checkpoint_round_trip(tmp_path: Path, small_model_config: ModelConfig) -> None:
    cfg = dataclasses.replace(small_model_config, seed=3)
    net = build_network(cfg)
    info = ModelInfo(cfg, weights="run-42", trained=True)
    path = tmp_path / "model.pt"
    save_checkpoint(path, net, info)
    loaded, loaded_info = load_checkpoint(path)
    assert loaded_info == info
    assert not loaded.training
    sa, sb = net.state_dict(), loaded.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8))
    with torch.inference_mode():
        for a, b in zip(net(x), loaded(x)):
            assert torch.equal(a, b)


def test_resolve_a_checkpoint_exports_it_once(tmp_path: Path, posecast_cache: Path,
                                              small_model_config: ModelConfig,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    info = ModelInfo(small_model_config, weights="run-1", trained=True)
    ckpt = tmp_path / "mine.pt"
    save_checkpoint(ckpt, build_network(small_model_config), info)
    artifact = resolve_model(ckpt)
    digest = file_sha256(ckpt)
    # The export records which checkpoint it came from (the temporal refiners know a model by it).
    assert artifact.checkpoint_path == ckpt and artifact.info == dataclasses.replace(info, checkpoint_sha256=digest)
    assert artifact.checkpoint_sha256 == digest
    assert artifact.onnx_path.parent == posecast_cache / "models" and artifact.onnx_path.name.startswith("mine-")
    monkeypatch.setattr(models, "export_onnx", _no_export)
    assert resolve_model(str(ckpt)) == artifact
    # An ONNX path resolves to itself, with no checkpoint.
    direct = resolve_model(artifact.onnx_path)
    assert direct.onnx_path == artifact.onnx_path and direct.checkpoint_path is None
    assert direct.info == artifact.info and direct.onnx_sha256 == artifact.onnx_sha256
    assert direct.checkpoint_sha256 == digest


def test_a_damaged_cached_export_is_exported_again(tmp_path: Path, posecast_cache: Path,
                                                  small_model_config: ModelConfig) -> None:
    info = ModelInfo(small_model_config, weights="run-1", trained=True)
    ckpt = tmp_path / "mine.pt"
    save_checkpoint(ckpt, build_network(small_model_config), info)
    good = resolve_model(ckpt)
    whole = good.onnx_path.read_bytes()
    good.onnx_path.write_bytes(whole[: len(whole) // 3])         # a copy cut short, a full disk
    again = resolve_model(ckpt)
    assert again.onnx_path == good.onnx_path and again.info == good.info
    assert again.onnx_path.read_bytes() == whole


def _imports_onnx_to_resolve(spec: Path) -> str:
    """Whether a fresh command that resolves `spec` imports the onnx package ("True"/"False")."""
    import subprocess
    import sys

    code = f"import sys\nfrom engines.models import resolve_model\nresolve_model({str(spec)!r})\nprint('onnx' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    return out.stdout.strip()


def test_a_cached_export_is_checked_whole_once(tmp_path: Path, posecast_cache: Path,
                                               small_model_config: ModelConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    """Checking an export whole needs the onnx package, whose import took about half a second at
    the start of every command: a cached export byte for byte the one checked before is known by
    the record of that check, and a command then imports no onnx at all."""
    info = ModelInfo(small_model_config, weights="run-1", trained=True)
    ckpt = tmp_path / "mine.pt"
    save_checkpoint(ckpt, build_network(small_model_config), info)
    first = resolve_model(ckpt)
    checked: list[Path] = []

    def counted(path: Path) -> ModelInfo:
        checked.append(path)
        return read_onnx_info(path)

    monkeypatch.setattr(models, "read_onnx_info", counted)
    assert resolve_model(ckpt) == first and checked == []
    assert _imports_onnx_to_resolve(ckpt) == "False"
    # A file that is no longer the one checked (here cut short) is checked whole, and exported again.
    whole = first.onnx_path.read_bytes()
    first.onnx_path.write_bytes(whole[: len(whole) // 3])
    assert resolve_model(ckpt) == first and checked
    assert first.onnx_path.read_bytes() == whole


def test_an_onnx_file_of_ones_own_is_checked_whole_once(tmp_path: Path, posecast_cache: Path,
                                                         small_model_config: ModelConfig,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """`--model mine.onnx`: checked whole at the first command, known by its hash after; the
    record is kept in the cache, never beside the user's file."""
    path = tmp_path / "mine.onnx"
    export_onnx(build_network(small_model_config), ModelInfo(small_model_config, "w", True), path)
    first = resolve_model(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.onnx", "posecast-cache"]
    assert (posecast_cache / "checked" / f"{first.onnx_sha256}.json").is_file()
    assert _imports_onnx_to_resolve(path) == "False"

    def never(path: Path) -> ModelInfo:
        raise AssertionError(f"{path} was checked whole again")

    monkeypatch.setattr(models, "read_onnx_info", never)
    assert resolve_model(path) == first
    # Changed since (its metadata edited, here cut short): checked whole, and refused.
    monkeypatch.setattr(models, "read_onnx_info", read_onnx_info)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ModelFileError, match="is not an ONNX model"):
        resolve_model(path)
    assert [p.name for p in (posecast_cache / "checked").iterdir()] == [f"{first.onnx_sha256}.json"]


def test_a_cache_that_cannot_be_made_checks_an_onnx_file_every_time(tmp_path: Path, small_model_config: ModelConfig,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv("POSECAST_CACHE", str(blocker / "cache"))      # under a file: never made
    path = tmp_path / "mine.onnx"
    export_onnx(build_network(small_model_config), ModelInfo(small_model_config, "w", True), path)
    assert resolve_model(path) == resolve_model(path)


def test_a_cached_export_replaced_while_it_is_checked_leaves_no_record_of_the_other_file(
        tmp_path: Path, posecast_cache: Path, small_model_config: ModelConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two commands at once on an older version's export (no checkpoint digest): while one checks
    it whole, the other exports over it. The record must not pair the new file's hash with the
    old file's metadata: every later command would believe it, find the digest missing and export
    again, at every start, for good."""
    info = ModelInfo(small_model_config, weights="run-1", trained=True)
    ckpt = tmp_path / "mine.pt"
    save_checkpoint(ckpt, build_network(small_model_config), info)
    cached = resolve_model(ckpt).onnx_path
    current = cached.read_bytes()                                # with the digest, as this version writes it
    export_onnx(load_checkpoint(ckpt)[0], info, cached)          # as an older version wrote it
    swapped: list[Path] = []

    def checked_while_another_command_exports(path: Path) -> ModelInfo:
        said = read_onnx_info(path)
        if not swapped:                                          # the other command's export lands now
            tmp = path.with_name("other-command.tmp")
            tmp.write_bytes(current)
            os.replace(tmp, path)
            swapped.append(path)
        return said

    monkeypatch.setattr(models, "read_onnx_info", checked_while_another_command_exports)
    resolve_model(ckpt)
    assert swapped
    monkeypatch.setattr(models, "read_onnx_info", read_onnx_info)
    monkeypatch.setattr(models, "export_onnx", _no_export)       # the file there now is this version's
    later = resolve_model(ckpt)
    assert later.info.checkpoint_sha256 == file_sha256(ckpt)
    assert later.info == read_onnx_info(cached)


def test_an_older_cached_export_without_the_checkpoints_digest_is_exported_again(
        tmp_path: Path, posecast_cache: Path, small_model_config: ModelConfig) -> None:
    """Exports cached by an older version lack the digest an exported ONNX file is known by."""
    info = ModelInfo(small_model_config, weights="run-1", trained=True)
    ckpt = tmp_path / "mine.pt"
    save_checkpoint(ckpt, build_network(small_model_config), info)
    cached = resolve_model(ckpt).onnx_path
    export_onnx(load_checkpoint(ckpt)[0], info, cached)          # as an older version wrote it
    assert read_onnx_info(cached).checkpoint_sha256 is None
    assert resolve_model(ckpt).info.checkpoint_sha256 == file_sha256(ckpt)
    assert read_onnx_info(cached).checkpoint_sha256 == file_sha256(ckpt)


def test_an_older_cached_export_in_a_read_only_cache_is_used_as_it_is(
        tmp_path: Path, posecast_cache: Path, small_model_config: ModelConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    info = ModelInfo(small_model_config, weights="run-1", trained=True)
    ckpt = tmp_path / "mine.pt"
    save_checkpoint(ckpt, build_network(small_model_config), info)
    cached = resolve_model(ckpt).onnx_path
    export_onnx(load_checkpoint(ckpt)[0], info, cached)          # as an older version wrote it
    before = cached.read_bytes()

    def read_only(*args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(models, "export_onnx", read_only)
    artifact = resolve_model(ckpt)
    assert artifact.onnx_path == cached and cached.read_bytes() == before
    assert artifact.checkpoint_sha256 == file_sha256(ckpt) == artifact.info.checkpoint_sha256


def test_a_cache_that_cannot_be_written_is_one_error(tmp_path: Path, small_model_config: ModelConfig,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from engines.errors import InputError

    info = ModelInfo(small_model_config, weights="run-1", trained=True)
    ckpt = tmp_path / "mine.pt"
    save_checkpoint(ckpt, build_network(small_model_config), info)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    # Under a file: unwritable even for root (CI), as a read-only home would be.
    monkeypatch.setenv("POSECAST_CACHE", str(blocker / "cache"))
    with pytest.raises(InputError, match="cannot write Posecast's cache at .*set POSECAST_CACHE to a writable folder"):
        resolve_model(ckpt)
    # A full disk while the export is written: the same line, and no partial file.
    cache = tmp_path / "cache"
    monkeypatch.setenv("POSECAST_CACHE", str(cache))

    def full_disk(net, info, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(models, "export_onnx", full_disk)
    with pytest.raises(InputError, match="No space left on device .*free some disk space"):
        resolve_model(ckpt)
    assert list((cache / "models").iterdir()) == []


# --- bad model files ----------------------------------------------------------------------------

def _tiny_onnx_without_metadata(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _mismatched_checkpoint(path: Path, cfg: ModelConfig) -> Path:
    """Weights of one network saved with the config of another."""
    net = build_network(cfg)
    other = dataclasses.replace(cfg, widths=(8, 16, 16, 16))
    save_checkpoint(path, net, ModelInfo(other, weights="w", trained=False))
    return path


def _checkpoint_without_weights(path: Path, cfg: ModelConfig) -> Path:
    save_checkpoint(path, build_network(cfg), ModelInfo(cfg, weights="w", trained=False))
    blob = torch.load(path, weights_only=True)
    del blob["state_dict"]
    torch.save(blob, path)
    return path


def _truncated_checkpoint(path: Path, cfg: ModelConfig) -> Path:
    """A checkpoint's first half: a copy or download cut short."""
    save_checkpoint(path, build_network(cfg), ModelInfo(cfg, weights="w", trained=False))
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    return path


def _checkpoint_of_huge_input(path: Path, cfg: ModelConfig) -> Path:
    """Metadata asking for a network torch cannot allocate (it raised from its allocator)."""
    save_checkpoint(path, build_network(cfg), ModelInfo(cfg, weights="w", trained=False))
    blob = torch.load(path, weights_only=True)
    blob["posecast"]["model_config"].update(input_size=99999968, grid_size=99999968 // cfg.grid_stride)
    torch.save(blob, path)
    return path


BAD_FILES = {
    "missing .onnx": (lambda d, c: d / "missing.onnx", "model file not found"),
    "missing .pt": (lambda d, c: d / "missing.pt", "model file not found"),
    "folder .onnx": (lambda d, c: _mkdir(d / "folder.onnx"), "is a folder"),
    "folder .pt": (lambda d, c: _mkdir(d / "folder.pt"), "is a folder"),
    "folder without a suffix": (lambda d, c: _mkdir(d / "weights"), "is a folder, not a file"),
    "empty .onnx": (lambda d, c: _write(d / "empty.onnx", b""), "is empty"),
    "empty .pt": (lambda d, c: _write(d / "empty.pt", b""), "is empty"),
    "random bytes .onnx": (lambda d, c: _write(d / "noise.onnx", _noise()), "not an ONNX model"),
    "random bytes .pt": (lambda d, c: _write(d / "noise.pt", _noise()), "not a Posecast PyTorch checkpoint"),
    "onnx without metadata": (lambda d, c: _tiny_onnx_without_metadata(d / "plain.onnx"),
                              "is an ONNX model but not a Posecast one"),
    ".txt extension": (lambda d, c: _write(d / "model.txt", b"hello"), "unknown model file type '.txt'"),
    "TensorRT engine": (lambda d, c: _write(d / "model.engine", _noise()), "give the .onnx or .pt model instead"),
    "truncated .pt": (lambda d, c: _truncated_checkpoint(d / "cut.pt", c), "is a PyTorch file that is damaged or incomplete"),
    "whole pickled module .pt": (lambda d, c: _torch_save(d / "module.pt", torch.nn.Linear(2, 2)),
                                 "not a Posecast PyTorch checkpoint"),
    "huge input_size in metadata": (lambda d, c: _checkpoint_of_huge_input(d / "huge.pt", c),
                                    "input_size must be a multiple of 32, from 64 to 1024"),
    # What to give instead: a checkpoint of Posecast's training, or a Posecast ONNX file.
    "torch file, not a checkpoint": (lambda d, c: _torch_save(d / "dict.pt", {"a": 1}),
                                     "is a PyTorch file but not a Posecast checkpoint (no 'posecast' metadata; give a "
                                     ".pt that Posecast wrote, such as the model.pt or last.pt of a `posecast train` "
                                     "run, or a Posecast .onnx model)"),
    "torch tensor, not a checkpoint": (lambda d, c: _torch_save(d / "tensor.pt", torch.zeros(3)),
                                       "is a PyTorch file but not a Posecast checkpoint (no 'posecast' metadata; give a "
                                       ".pt that Posecast wrote"),
    # What is wrong, not torch's heading ("Error(s) in loading state_dict for PoseNet:").
    "weights do not match config": (lambda d, c: _mismatched_checkpoint(d / "mismatch.pt", c),
                                    "weights do not fit the network its metadata describes (size mismatch for "),
    "checkpoint without weights": (lambda d, c: _checkpoint_without_weights(d / "noweights.pt", c),
                                   "holds Posecast metadata but no weights"),
}


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _noise() -> bytes:
    return np.random.default_rng(1).integers(0, 256, size=4096, dtype=np.uint8).tobytes()


def _torch_save(path: Path, obj) -> Path:
    torch.save(obj, path)
    return path


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_model_files_raise_model_file_error(case: str, tmp_path: Path, posecast_cache: Path,
                                                small_model_config: ModelConfig) -> None:
    make, expected = BAD_FILES[case]
    path = make(tmp_path, small_model_config)
    with pytest.raises(ModelFileError) as info:
        resolve_model(path)
    message = str(info.value)
    assert expected in message, message
    assert "\n" not in message and len(message) < 400, message
    assert "weights_only" not in message, message   # torch's advice to unpickle untrusted files
    if case != ".txt extension":          # that message names the extension, not the file
        assert path.name in message, message
    assert info.value.exit_code == 2
    # Nothing half-made is left in the cache.
    assert not any(p.suffix == ".onnx" for p in (posecast_cache / "models").glob("*"))


def test_weights_a_diverged_run_left_are_refused(tmp_path: Path, small_model_config: ModelConfig) -> None:
    """NaN weights find no one, silently: the .pt and an ONNX exported from it are refused."""
    net = build_network(small_model_config)
    info = ModelInfo(small_model_config, "diverged", trained=True)
    export_onnx(net, info, tmp_path / "before.onnx")
    read_onnx_info(tmp_path / "before.onnx")                       # finite: fine
    with torch.no_grad():
        next(net.parameters()).fill_(float("nan"))
    save_checkpoint(tmp_path / "nan.pt", net, info)
    with pytest.raises(ModelFileError, match="1 of its weight tensors hold NaN or infinite values.*earlier checkpoint"):
        load_checkpoint(tmp_path / "nan.pt")
    export_onnx(net, info, tmp_path / "nan.onnx")
    with pytest.raises(ModelFileError, match="hold NaN or infinite values"):
        read_onnx_info(tmp_path / "nan.onnx")


def test_posecast_metadata_on_another_network_is_refused(tmp_path: Path, small_model_config: ModelConfig) -> None:
    import onnx
    from onnx import TensorProto, helper

    export_onnx(build_network(small_model_config), ModelInfo(small_model_config, "w", False), tmp_path / "m.onnx")
    ours = onnx.load(str(tmp_path / "m.onnx"))
    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["y"])], "other",
                              [helper.make_tensor_value_info("image", TensorProto.UINT8, [1, 64, 64, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, [1, 64, 64, 3])])
    other = helper.make_model(graph)
    other.metadata_props.extend(ours.metadata_props)
    onnx.save(other, str(tmp_path / "other.onnx"))
    with pytest.raises(ModelFileError, match=r"but it has inputs image and outputs y: not a Posecast model"):
        read_onnx_info(tmp_path / "other.onnx")


def test_metadata_that_is_not_the_networks_is_refused_in_one_line(tmp_path: Path,
                                                                   small_model_config: ModelConfig) -> None:
    """Metadata saying 256-pixel crops on a network that takes 64: refused when the file is read,
    not by the runtime at the first frame with a traceback."""
    import onnx

    export_onnx(build_network(small_model_config), ModelInfo(small_model_config, "w", False), tmp_path / "m.onnx")
    model = onnx.load(str(tmp_path / "m.onnx"))
    entry = model.metadata_props[0]
    data = json.loads(entry.value)
    data["model_config"].update(input_size=256, grid_size=256 // small_model_config.grid_stride)
    entry.value = json.dumps(data)
    onnx.save(model, str(tmp_path / "other.onnx"))
    size = small_model_config.input_size
    with pytest.raises(ModelFileError) as info:
        read_onnx_info(tmp_path / "other.onnx")
    assert str(info.value) == (f"{tmp_path / 'other.onnx'}: its metadata says the network takes 256x256 crops, but "
                               f"its input 'image' is ?x{size}x{size}x3: the metadata is not this network's (write "
                               f"the model again with `posecast export`)")


def test_damaged_posecast_metadata(tmp_path: Path, small_model_config: ModelConfig) -> None:
    import json

    import onnx

    path = tmp_path / "m.onnx"
    export_onnx(build_network(small_model_config), ModelInfo(small_model_config, "w", False), path)
    model = onnx.load(str(path))
    for value, expected in [("{not json", "not valid JSON"),
                            (json.dumps({"format": 99}), "unsupported Posecast model format 99"),
                            (json.dumps([{"format": 1}] * 50), "its Posecast metadata is not a JSON object but a list"),
                            (json.dumps({"format": 1}), "damaged Posecast metadata"),
                            # A TypeError's traceback before: the config loader iterated over the 5.
                            (json.dumps({"format": 1, "model_config": 5, "weights": "w", "trained": False}),
                             r"damaged Posecast metadata \(.*\(model_config\): expected a mapping of keys to values, "
                             r"not int\)")]:
        model.metadata_props[0].value = value
        onnx.save(model, str(path))
        with pytest.raises(ModelFileError, match=expected):
            read_onnx_info(path)


def test_metadata_that_is_not_the_networks_is_one_line_before_any_frame(tmp_path: Path, posecast_cache: Path,
                                                                        small_model_config: ModelConfig) -> None:
    # Edited metadata: fewer roots than the network has, or a float input. The first frame failed
    # inside a stage (numpy's reshape error, exit 1); now the model is refused as it is opened.
    import onnx

    from engines.backends import create_backend

    path = tmp_path / "m.onnx"
    export_onnx(build_network(small_model_config), ModelInfo(small_model_config, "w", False), path)
    model = onnx.load(str(path))
    meta = json.loads(model.metadata_props[0].value)
    meta["model_config"]["roots"] = meta["model_config"]["roots"][:1]
    model.metadata_props[0].value = json.dumps(meta)
    onnx.save(model, str(tmp_path / "roots.onnx"))
    with pytest.raises(ModelFileError, match=r"offsets_3d \(1, 6, 17, 3\), where its metadata describes .* "
                                             r"\(1, 1, 17, 3\): the metadata is not this network's"):
        create_backend(resolve_model(tmp_path / "roots.onnx"), "onnxruntime", "cpu")
    model = onnx.load(str(path))
    model.graph.input[0].type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    onnx.save(model, str(tmp_path / "float.onnx"))
    with pytest.raises(ModelFileError, match="its input 'image' takes float, where a Posecast network takes uint8"):
        read_onnx_info(tmp_path / "float.onnx")


def test_a_network_that_loads_but_cannot_run_is_one_line_before_any_frame(tmp_path: Path, posecast_cache: Path,
                                                                          small_model_config: ModelConfig) -> None:
    """A graph that ONNX Runtime loads but cannot run (here a Reshape whose shape does not fit the
    crop): the inference stage failed at the first frame with ONNX Runtime's traceback and an
    exit 1. It is refused as the backend starts, in one line."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    from engines.backends import create_backend

    path = tmp_path / "m.onnx"
    export_onnx(build_network(small_model_config), ModelInfo(small_model_config, "w", False), path)
    model = onnx.load(str(path))
    graph, size = model.graph, small_model_config.input_size
    for node in graph.node:
        node.input[:] = ["image_back" if name == "image" else name for name in node.input]
    graph.initializer.extend([numpy_helper.from_array(np.array([-1, size - 1, size, 3], np.int64), "unfit"),
                              numpy_helper.from_array(np.array([-1, size, size, 3], np.int64), "fit")])
    graph.node.insert(0, helper.make_node("Reshape", ["image_unfit", "fit"], ["image_back"]))
    graph.node.insert(0, helper.make_node("Reshape", ["image", "unfit"], ["image_unfit"]))
    bad = tmp_path / "unfit.onnx"
    onnx.save(model, str(bad))
    with pytest.raises(ModelFileError) as info:
        create_backend(resolve_model(bad), "onnxruntime", "cpu")
    message = str(info.value)
    assert message.startswith(f"{bad}: the network fails on its first crop (")
    assert "Reshape" in message and message.endswith("write it again with `posecast export`")
    assert "\n" not in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any file")
def test_unreadable_model_file(tmp_path: Path, small_model_config: ModelConfig) -> None:
    path = tmp_path / "locked.pt"
    save_checkpoint(path, build_network(small_model_config), ModelInfo(small_model_config, "w", False))
    path.chmod(0)
    try:
        with pytest.raises(ModelFileError, match="not readable"):
            resolve_model(path)
    finally:
        path.chmod(0o600)


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_a_first_crop_that_fails_on_a_gpu_is_the_device_not_the_file(tmp_path: Path, small_model_config: ModelConfig,
                                                                     device: str) -> None:
    """ONNX Runtime on a GPU that fails the first crop (its memory full, a cuDNN that does not fit)
    is a backend that cannot start, which `auto` moves on from; not "the file is damaged: write
    it again", the words for a graph the CPU cannot run. Out of memory on the CPU is not the
    file's fault either."""
    from engines.backends import check_outputs
    from engines.errors import BackendUnavailableError

    path = tmp_path / "m.onnx"
    export_onnx(build_network(small_model_config), ModelInfo(small_model_config, "w", False), path)

    class Fails:
        def __init__(self, exc: Exception) -> None:
            self.device, self.exc = device, exc

        def infer(self, _crops: np.ndarray) -> None:
            raise self.exc

    with pytest.raises(BackendUnavailableError, match=rf"ONNX Runtime \({device}\) could not run"):
        check_outputs(Fails(MemoryError() if device == "cpu" else RuntimeError("CUDNN_STATUS_NOT_SUPPORTED")),
                      resolve_model(path))
    if device == "cpu":
        with pytest.raises(ModelFileError, match="the network fails on its first crop"):
            check_outputs(Fails(RuntimeError("Reshape: shape does not fit")), resolve_model(path))


def test_a_file_named_onnx_that_onnx_cannot_read_says_what_to_do(tmp_path: Path) -> None:
    """A checkpoint given the wrong name is told so; anything else is told what to give instead."""
    checkpoint = tmp_path / "model.onnx"
    torch.save({"weights": torch.zeros(2)}, checkpoint)
    with pytest.raises(ModelFileError, match=r"is not an ONNX model \(.*\); it looks like a PyTorch checkpoint: "
                                             r"name it \.pt$"):
        read_onnx_info(checkpoint)
    text = tmp_path / "notes.onnx"
    text.write_text("hello, this is not a model\n")
    with pytest.raises(ModelFileError, match=r"is not an ONNX model \(.*\); it is damaged or no model: give a "
                                             r"Posecast \.onnx model \(posecast export writes one\) or a \.pt "
                                             r"checkpoint$"):
        read_onnx_info(text)
