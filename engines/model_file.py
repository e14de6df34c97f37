"""Model files: PyTorch checkpoints (`.pt`), ONNX exports (`.onnx`) and the metadata they carry.

A model travels with what is needed to use it: the skeleton (joint names, parents), the roots, the
input size and format, the grid and the normalisation, plus a line saying what its weights are.
Checkpoints keep it next to the state dict; ONNX files keep it as JSON in `metadata_props` under
the key `posecast`, so ONNX Runtime and TensorRT users need nothing else.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from engines.config import ConfigError, from_dict, load_config, to_dict
from engines.errors import ModelFileError
from engines.files import replaced_when_done
from engines.model_config import ModelConfig

FORMAT_VERSION = 1
METADATA_KEY = "posecast"
INPUT_NAME = "image"
OUTPUT_NAMES = ("probs_2d", "offsets_3d")


OPSET = 18


def check_io_names(what: str, inputs: list[str], outputs: list[str]) -> None:
    """Refuses a network whose tensors are not the ones a Posecast export has (`what`: the file,
    or the engine built from it), whichever backend read it."""
    if inputs != [INPUT_NAME] or sorted(outputs) != sorted(OUTPUT_NAMES):
        raise ModelFileError(f"{what}: expected input '{INPUT_NAME}' and outputs {', '.join(OUTPUT_NAMES)}, but it has "
                             f"inputs {', '.join(inputs) or 'none'} and outputs {', '.join(outputs) or 'none'}: "
                             f"not a Posecast model (write one with `posecast export`)")


@dataclass(frozen=True)
class ModelInfo:
    config: ModelConfig
    weights: str          # what the weights are: "untrained (seed 0)", or a training run's name
    trained: bool
    # The SHA-256 of the checkpoint an ONNX file was exported from: what the temporal refiners
    # trained behind that checkpoint recognise it by (streamer/refiner.py). None: not known.
    checkpoint_sha256: str | None = None

    def metadata(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "format": FORMAT_VERSION,
            "skeleton": cfg.skeleton.name,
            "joint_names": list(cfg.skeleton.joint_names),
            "parents": list(cfg.skeleton.parents),
            "roots": list(cfg.roots),
            "input": {"name": INPUT_NAME, "shape": ["batch", cfg.input_size, cfg.input_size, 3],
                      "dtype": "uint8", "layout": "NHWC", "color": "BGR"},
            "grid_size": cfg.grid_size,
            "normalisation": {"mean_bgr": list(cfg.mean_bgr), "std_bgr": list(cfg.std_bgr),
                              "applied": "inside the network"},
            "outputs": {"probs_2d": "batch x joints x grid x grid softmax over cells",
                        "offsets_3d": "batch x roots x joints x 3, metres, x right, y down, z forward"
                                          + (" of the camera turned onto the person's ray (engines/ray_frame.py)"
                                             if cfg.offsets_frame == "ray" else ", camera axes")},
            "weights": self.weights,
            "trained": self.trained,
            "model_config": to_dict(cfg),
            **({"checkpoint_sha256": self.checkpoint_sha256} if self.checkpoint_sha256 else {}),
        }

    @classmethod
    def from_metadata(cls, meta: dict[str, Any], source: str) -> "ModelInfo":
        if not isinstance(meta, dict):
            raise ModelFileError(f"{source}: its Posecast metadata is not a JSON object but a "
                                 f"{type(meta).__name__} (the file was edited or damaged; re-export the model)")
        if meta.get("format") != FORMAT_VERSION:
            raise ModelFileError(
                f"{source}: unsupported Posecast model format {meta.get('format')!r} "
                f"(this version reads format {FORMAT_VERSION}; re-export the model)"
            )
        try:
            cfg = from_dict(ModelConfig, meta["model_config"], source=f"{source} (model_config)")
            digest = meta.get("checkpoint_sha256")
            return cls(config=cfg, weights=str(meta["weights"]), trained=bool(meta["trained"]),
                       checkpoint_sha256=digest if isinstance(digest, str) else None)
        except (KeyError, ConfigError) as exc:
            raise ModelFileError(f"{source}: damaged Posecast metadata ({exc})") from None


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with replaced_when_done(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())     # the rename must never expose a file whose bytes are not on disk


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --- checkpoints -------------------------------------------------------------------------

def save_checkpoint(path: Path, net: Any, info: ModelInfo) -> None:
    import io

    import torch

    buf = io.BytesIO()
    torch.save({"posecast": info.metadata(), "state_dict": net.state_dict()}, buf)
    atomic_write_bytes(Path(path), buf.getvalue())


def load_checkpoint(path: Path) -> tuple[Any, ModelInfo]:
    """A `.pt` checkpoint -> (network in eval mode, its info)."""
    import torch

    from engines.network import PoseNet

    path = Path(path)
    _check_readable(path)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a file that is not a checkpoint
        # Only the exception's type: torch's own text advises weights_only=False, which would
        # run arbitrary code from an untrusted file.
        if _is_cut_short_zip(path):
            # torch's own format without its end: a copy or download cut short, not another kind of file.
            raise ModelFileError(f"{path} is a PyTorch file that is damaged or incomplete (torch could not read it: "
                                 f"{type(exc).__name__}); copy it again whole, or give another .pt or .onnx model") from None
        raise ModelFileError(f"{path} is not a Posecast PyTorch checkpoint (torch could not read it: "
                             f"{type(exc).__name__}); give a .pt written by Posecast or a .onnx model") from None
    if not isinstance(blob, dict) or "posecast" not in blob:
        # Weights of another network have nothing to make them a Posecast one: a run's files are.
        raise ModelFileError(f"{path} is a PyTorch file but not a Posecast checkpoint (no 'posecast' metadata; "
                             f"give a .pt that Posecast wrote, such as the model.pt or last.pt of a `posecast train` "
                             f"run, or a Posecast .onnx model)")
    if "state_dict" not in blob:
        raise ModelFileError(f"{path} holds Posecast metadata but no weights (no 'state_dict'); give the model.pt "
                             f"a training run wrote, or a .onnx model")
    info = ModelInfo.from_metadata(blob["posecast"], str(path))
    net = PoseNet(info.config)
    try:
        net.load_state_dict(blob["state_dict"])
    except RuntimeError as exc:
        raise ModelFileError(f"{path}: weights do not fit the network its metadata describes "
                             f"({_state_dict_problem(exc)})") from None
    _say_non_finite(path, [k for k, v in blob["state_dict"].items()
                           if isinstance(v, torch.Tensor) and v.is_floating_point() and not torch.isfinite(v).all()])
    return net.eval(), info


def with_flip_test(net: Any, info: ModelInfo, flip_test: str, source: str | Path) -> tuple[Any, ModelInfo]:
    """The same weights with test-time mirroring (engines/network.py) set to `flip_test`."""
    from engines.network import PoseNet

    cfg = replace(info.config, flip_test=flip_test)
    try:
        cfg.check()
    except ValueError as exc:
        raise ModelFileError(f"{source}: cannot mirror at test time: {exc}") from None
    out = PoseNet(cfg)
    out.load_state_dict(net.state_dict())
    return out.eval(), replace(info, config=cfg)


# --- ONNX --------------------------------------------------------------------------------

def export_onnx(net: Any, info: ModelInfo, path: Path) -> Path:
    """Export with a dynamic batch axis and the Posecast metadata; written atomically.

    The TorchScript exporter (`dynamo=False`), deprecated but present in the pinned torch 2.13: it
    exports this network in about 2 s against 8.5 s for the torch.export-based one, and needs no
    onnxscript. Both give the same operators (all TensorRT-parsable) and outputs within 1e-8
    (checked 2026-11-25); switch when the pin moves past the old exporter's removal.
    """
    import onnx
    import torch

    size = info.config.input_size
    example = torch.zeros((2, size, size, 3), dtype=torch.uint8)
    path = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "model.onnx"
        with torch.no_grad():
            torch.onnx.export(
                net.eval(), (example,), str(raw),
                input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAMES[0]: {0: "batch"}, OUTPUT_NAMES[1]: {0: "batch"}},
                opset_version=OPSET, dynamo=False,
            )
        model = onnx.load(str(raw))
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(info.metadata())
    model.producer_name = "posecast"
    onnx.checker.check_model(model)
    atomic_write_bytes(path, model.SerializeToString())
    return path


ZIP_MAGIC = b"PK\x03\x04"       # how torch.save's files start (a zip archive)


def _not_onnx_hint(path: Path) -> str:
    """What to do about a file named .onnx that ONNX cannot read."""
    if _starts_as_zip(path):
        return "it looks like a PyTorch checkpoint: name it .pt"
    return "it is damaged or no model: give a Posecast .onnx model (posecast export writes one) or a .pt checkpoint"


def read_onnx_info(path: Path) -> ModelInfo:
    """The metadata of a Posecast ONNX file; a clear error for anything else."""
    import onnx

    path = Path(path)
    _check_readable(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelFileError(f"{path} is not an ONNX model ({_first_line(exc)}); {_not_onnx_hint(path)}") from None
    if not model.graph.node:
        raise ModelFileError(f"{path} is not an ONNX model (no graph inside)")
    meta = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in meta:
        raise ModelFileError(f"{path} is an ONNX model but not a Posecast one (no '{METADATA_KEY}' metadata; "
                             f"export it with `posecast export`)")
    try:
        data = json.loads(meta[METADATA_KEY])
    except json.JSONDecodeError:
        raise ModelFileError(f"{path}: the '{METADATA_KEY}' metadata is not valid JSON") from None
    info = ModelInfo.from_metadata(data, str(path))
    weights = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    # Posecast's metadata on another network: every command would refuse it later, export too.
    check_io_names(str(path), [i.name for i in inputs], [o.name for o in model.graph.output])
    _check_input_shape(path, inputs[0], info.config.input_size)
    import numpy as np
    from onnx import numpy_helper

    _say_non_finite(path, [t.name for t in model.graph.initializer
                           if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)
                           and not np.isfinite(numpy_helper.to_array(t)).all()])
    return info


def _check_input_shape(path: Path, image: Any, size: int) -> None:
    """The network's input must take the crops the metadata describes: (batch, S, S, 3). Else the
    first frame would fail inside the runtime, in its words."""
    import onnx

    elem = image.type.tensor_type.elem_type
    if elem != onnx.TensorProto.UINT8:
        raise ModelFileError(f"{path}: its input '{INPUT_NAME}' takes {onnx.TensorProto.DataType.Name(elem).lower()}, "
                             f"where a Posecast network takes uint8 crops: the metadata is not this network's (write "
                             f"the model again with `posecast export`)")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in image.type.tensor_type.shape.dim]
    if len(dims) != 4 or any(d is not None and d != want for d, want in zip(dims[1:], (size, size, 3))):
        shape = "x".join("?" if d is None else str(d) for d in dims)
        raise ModelFileError(f"{path}: its metadata says the network takes {size}x{size} crops, but its input "
                             f"'{INPUT_NAME}' is {shape}: the metadata is not this network's (write the model again "
                             f"with `posecast export`)")


def _say_non_finite(path: Path, bad: list[str]) -> None:
    """A diverged training run leaves NaN weights (`bad`: the tensors with any); a network with
    them finds no one, silently."""
    if bad:
        raise ModelFileError(f"{path}: {len(bad)} of its weight tensors hold NaN or infinite values (first: {bad[0]}), "
                             f"as a training run that diverged leaves them; use an earlier checkpoint")


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise ModelFileError(f"model file not found: {path}")
    if path.is_dir():
        raise ModelFileError(f"model path is a folder, not a file: {path}")
    if path.stat().st_size == 0:
        raise ModelFileError(f"model file is empty: {path}")
    if not os.access(path, os.R_OK):
        raise ModelFileError(f"model file is not readable (permissions): {path}")


def _is_cut_short_zip(path: Path) -> bool:
    """Whether the file starts as a zip archive (every checkpoint torch.save writes) but lacks the
    directory at a zip's end: the first part of one. A whole one torch refuses (a pickled module,
    which weights_only may not run) is another kind of file."""
    import zipfile

    return _starts_as_zip(path) and not zipfile.is_zipfile(path)


def _starts_as_zip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(len(ZIP_MAGIC)) == ZIP_MAGIC


def _state_dict_problem(exc: RuntimeError) -> str:
    """torch's load_state_dict error in one line: its first line is only a heading ('Error(s) in
    loading state_dict for PoseNet:'); what is wrong (keys missing or unexpected, sizes) follows."""
    lines = [line.strip() for line in str(exc).strip().splitlines()[1:] if line.strip()]
    return "; ".join(lines)[:200] if lines else _first_line(exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def default_model_config() -> ModelConfig:
    return load_config(ModelConfig, "model.yaml")
