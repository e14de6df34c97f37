"""Resolving the model to run: a file the user names, or the default.

The default is the trained model shipped in `engines/weights/default.pt` (its card:
docs/model_card.md). Where that file is missing (a checkout without it), the default falls back to
the network of `configs/model.yaml` with its seeded, untrained initial weights: a real network
producing real but meaningless outputs; `ModelInfo.trained` is False and the command line says so.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

from engines.cache import cache_dir, cache_error, cache_path
from engines.config import to_dict
from engines.errors import ModelFileError
from engines.model_file import (FORMAT_VERSION, ModelInfo, _check_readable, atomic_write_bytes, default_model_config,
                                export_onnx, file_sha256, load_checkpoint, read_onnx_info, save_checkpoint)

log = logging.getLogger(__name__)

SHIPPED_DEFAULT = Path(__file__).resolve().parent / "weights" / "default.pt"


@dataclass(frozen=True)
class ModelArtifact:
    """A model ready for any backend: its ONNX file, its checkpoint if it has one, its info."""

    info: ModelInfo
    onnx_path: Path
    checkpoint_path: Path | None
    onnx_sha256: str
    checkpoint_sha256: str | None = None    # what a temporal refiner records (streamer/refiner.py)


def resolve_model(spec: str | Path | None) -> ModelArtifact:
    """`spec` is a `.onnx` or `.pt` path, or None for the default model."""
    if spec is None:
        return _shipped_default() if SHIPPED_DEFAULT.exists() else _untrained_default()
    path = Path(spec)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        _check_readable(path)       # before hashing: a named pipe would block the hash, not fail it
        info, onnx_sha = _read_checked_onnx(path)
        return ModelArtifact(info, path, None, onnx_sha, info.checkpoint_sha256)
    if suffix in (".pt", ".pth"):
        return _from_checkpoint(path)
    raise model_type_error(path)


# What TensorRT engines are usually named: posecast builds its own from the ONNX file and caches them.
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


def model_type_error(path: Path) -> ModelFileError:
    """The error for a model path that is neither .onnx nor .pt: what to give instead."""
    if path.is_dir():
        return ModelFileError(f"model path '{path}' is a folder, not a file (give a .onnx or .pt file)")
    if path.suffix.lower() in ENGINE_SUFFIXES:
        # An engine fits one GPU and one TensorRT version, and holds no Posecast metadata.
        return ModelFileError(f"'{path}' is named as a TensorRT engine, which is not taken as a model: give the .onnx "
                              f"or .pt model instead (--backend tensorrt builds its engine from it, and caches it)")
    return ModelFileError(f"unknown model file type '{path.suffix or path.name}' (use a .onnx or .pt file)")


def _from_checkpoint(path: Path) -> ModelArtifact:
    """A checkpoint with its ONNX export cached by the checkpoint's content hash."""
    _check_readable(path)  # before hashing: a missing path or a folder is a ModelFileError, not an OSError
    digest = file_sha256(path)
    onnx_path = cache_dir("models") / f"{path.stem}-{digest[:16]}.onnx"
    older: ModelInfo | None = None
    if onnx_path.exists():
        try:
            info, onnx_sha = _read_checked_onnx(onnx_path)
            if info.checkpoint_sha256 == digest:
                return ModelArtifact(info, onnx_path, path, onnx_sha, digest)
            # An older version's export, without the checkpoint's digest that `posecast export`
            # passes on: exported again over it, or used as it is where the cache is read-only.
            older = info
        except ModelFileError:
            # A damaged cache entry (a full disk, a copy cut short) is ours to fix: export again.
            log.warning("the cached export %s is damaged; exporting again", onnx_path)
            onnx_path.unlink(missing_ok=True)
    net, info = load_checkpoint(path)
    log.info("exporting %s to ONNX (once; cached at %s)", path, onnx_path)
    try:
        export_onnx(net, replace(info, checkpoint_sha256=digest), onnx_path)   # written whole, then renamed
    except OSError as err:
        if older is None:
            raise cache_error(onnx_path, err) from None
        return ModelArtifact(replace(older, checkpoint_sha256=digest), onnx_path, path, file_sha256(onnx_path), digest)
    info, onnx_sha = _read_checked_onnx(onnx_path)
    return ModelArtifact(info, onnx_path, path, onnx_sha, digest)


def _checked_record(onnx_sha: str) -> Path:
    """Where the record of the check of an ONNX file with this hash is kept. Looking is no reason
    to make the folder; where it cannot be made, every command checks the file whole."""
    return cache_path("checked") / f"{onnx_sha}.json"


def _read_checked_onnx(onnx_path: Path) -> tuple[ModelInfo, str]:
    """An ONNX file's info and hash. Checking the file whole (`read_onnx_info`: the graph, its
    input and outputs, every weight finite) needs the onnx package, whose import alone took about
    half a second at the start of every command. So a file is checked once: the record of the
    check, kept in the cache under the file's hash, holds its metadata, and a file with that hash,
    byte for byte the one checked, is not checked again."""
    before: str | None = None
    try:
        before = file_sha256(onnx_path)
        said = json.loads(_checked_record(before).read_text())      # named by the hash: this file's
        return ModelInfo.from_metadata(said["metadata"], str(onnx_path)), before
    except (OSError, ValueError, KeyError, TypeError, ModelFileError):
        pass                                   # no record (or a damaged one): checked whole below
    info = read_onnx_info(onnx_path)
    onnx_sha = file_sha256(onnx_path)
    # Recorded only if the file checked is still the one there: another command may export over
    # it meanwhile (an older version's export, replaced), and a record pairing the new file's
    # hash with the old file's metadata would be believed by every later command.
    if onnx_sha == before:
        try:
            atomic_write_bytes(_checked_record(onnx_sha),
                               json.dumps({"metadata": info.metadata()}).encode())
        except OSError:
            pass
    return info, onnx_sha


def _shipped_default() -> ModelArtifact:
    return _from_checkpoint(SHIPPED_DEFAULT)


def _untrained_default() -> ModelArtifact:
    cfg = default_model_config()
    # The weights are a function of the config, the network code and torch's RNG: key on all.
    network_src = (Path(__file__).resolve().parent / "network.py").read_bytes()
    # The version from the package metadata: importing torch costs a second on every run. (Imported
    # here: every stage process imports this module, and none asks.)
    import importlib.metadata

    torch_version = importlib.metadata.version("torch")
    key = hashlib.sha256(
        json.dumps(to_dict(cfg), sort_keys=True).encode() + network_src
        + torch_version.encode() + str(FORMAT_VERSION).encode()
    ).hexdigest()[:16]
    folder = cache_dir("models")
    ckpt = folder / f"untrained-{key}.pt"
    if not ckpt.exists():
        from engines.network import build_network

        info = ModelInfo(cfg, weights=f"untrained (seed {cfg.seed}): no trained weights are shipped yet", trained=False)
        try:
            save_checkpoint(ckpt, build_network(cfg), info)
        except OSError as err:
            raise cache_error(ckpt, err) from None
    try:
        return _from_checkpoint(ckpt)
    except ModelFileError:
        # A damaged cache entry is ours to fix, not the user's.
        ckpt.unlink(missing_ok=True)
        raise
