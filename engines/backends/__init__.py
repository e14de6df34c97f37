"""Inference backends behind one interface (`Backend`), and the choice between them.

`auto` takes the fastest present: TensorRT on a CUDA GPU, then ONNX Runtime's CUDA provider,
then PyTorch on CUDA, then ONNX Runtime on the CPU (faster than PyTorch eager on the CPU).
"""

from __future__ import annotations

import logging
import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from engines.backends.base import BACKENDS, Backend, NetOutputs
from engines.errors import BackendUnavailableError, ConfigError, ModelFileError, PosecastError
from engines.models import ModelArtifact

if TYPE_CHECKING:
    import numpy as np


log = logging.getLogger(__name__)

__all__ = ["Backend", "NetOutputs", "BACKENDS", "BackendChoice", "available", "choose", "create_backend"]


@dataclass(frozen=True)
class BackendChoice:
    name: str
    device: str


def nvidia_gpu_present() -> bool:
    """A cheap look for an NVIDIA driver, so CPU machines never pay for importing torch (about a
    second) or TensorRT just to learn that there is no GPU."""
    return (Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidia0").exists()
            or shutil.which("nvidia-smi") is not None)


def _version(package: str) -> str | None:
    # Imported here: every stage process imports this module (streamer.config does), and none asks.
    import importlib.metadata

    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def available() -> dict[str, str]:
    """Each backend and device present here -> a note (version), for `posecast backends`."""
    found: dict[str, str] = {}
    if importlib.util.find_spec("onnxruntime") is not None:
        found["onnxruntime:cpu"] = _version("onnxruntime") or "?"
    if importlib.util.find_spec("torch") is not None:
        found["torch:cpu"] = _version("torch") or "?"
    if not nvidia_gpu_present():
        return found
    from engines.backends.onnxruntime_backend import cuda_provider_available

    if "onnxruntime:cpu" in found and cuda_provider_available():
        found["onnxruntime:cuda"] = found["onnxruntime:cpu"]
    if "torch:cpu" in found:
        import torch

        if torch.cuda.is_available():
            found["torch:cuda"] = f"{torch.__version__} on {torch.cuda.get_device_name(0)}"
    from engines.backends.tensorrt_import import tensorrt_available

    ok, note = tensorrt_available()
    if ok:
        found["tensorrt:cuda"] = note
    return found


def choose(name: str, device: str, has_checkpoint: bool, skip: set[str] | None = None) -> BackendChoice:
    """Resolve `auto` and device `auto` against what is installed (less the `skip`ped ones)."""
    present = available()
    if name == "auto":
        order = ["tensorrt:cuda", "onnxruntime:cuda", "torch:cuda", "onnxruntime:cpu", "torch:cpu"]
        for key in order:
            backend, dev = key.split(":")
            if (key in present and key not in (skip or set()) and device in ("auto", dev)
                    and (backend != "torch" or has_checkpoint)):
                return BackendChoice(backend, dev)
        if device == "cuda":
            raise BackendUnavailableError("no backend can run on CUDA here (no NVIDIA GPU, or no CUDA build of "
                                          "onnxruntime, torch or TensorRT); use --device cpu")
        raise BackendUnavailableError("no inference backend could start here (pip install onnxruntime)")
    if device == "auto":
        dev = "cuda" if f"{name}:cuda" in present else "cpu"
    else:
        dev = device
    if name == "tensorrt":
        if device == "cpu":
            raise ConfigError("the TensorRT backend runs only on an NVIDIA GPU: drop --device cpu "
                              "(inference.device: cpu), or choose another --backend")
        dev = "cuda"
    return BackendChoice(name, dev)


def create_backend(model: ModelArtifact, name: str = "auto", device: str = "auto", threads: int = 0,
                   precision: str = "fp16", max_batch: int = 32, calibration: "np.ndarray | None" = None) -> Backend:
    """The backend `name` on `device`. `calibration`: (N, S, S, 3) uint8 crops for TensorRT int8.

    With `auto`, a backend that is present but fails to start (an engine that will not build, a
    provider that will not load) gives way to the next one, with a warning: auto promises the
    fastest backend that works, not the first one installed."""
    if name == "auto":
        skip: set[str] = set()
        while True:
            choice = choose("auto", device, model.checkpoint_path is not None, skip)
            try:
                return _create(model, choice, threads, precision, max_batch, calibration)
            except BackendUnavailableError as exc:
                log.warning("%s (%s) failed to start, trying the next backend: %s", choice.name, choice.device, exc)
                skip.add(f"{choice.name}:{choice.device}")
    return _create(model, choose(name, device, model.checkpoint_path is not None), threads, precision, max_batch,
                   calibration)


def check_outputs(backend: Backend, model: ModelArtifact) -> None:
    """One blank crop through an ONNX network: outputs of other shapes than its metadata describes
    (a file whose metadata was edited, or copied from another network) would otherwise fail at the
    first frame, inside a stage, in numpy's words. (A checkpoint's weights are checked against
    its metadata as they load.)"""
    import numpy as np

    cfg = model.info.config
    size, joints = cfg.input_size, cfg.skeleton.num_joints
    try:
        out = backend.infer(np.zeros((1, size, size, 3), np.uint8))
    except Exception as exc:
        # A graph that loads but cannot run (a node whose shapes do not fit, an operator the
        # runtime refuses at run time) would otherwise fail the same way inside the inference stage
        # at the first frame: a traceback and the runtime's words, exit 1. ONNX Runtime's words go
        # on after "Status Message:" with its C++ source's path and a function's signature.
        said = " ".join(str(exc).split()).split(" Status Message:")[0][:200]
        device = getattr(backend, "device", "cpu")
        if device != "cpu" or isinstance(exc, MemoryError):
            # On a GPU the first crop is also the device's first work: its memory full, a cuDNN or
            # driver that does not fit. Not the file's fault, and `auto` moves on (to the CPU, which
            # then says whether the file runs) only from this error.
            raise BackendUnavailableError(f"ONNX Runtime ({device}) could not run the network's first crop "
                                          f"({type(exc).__name__}: {said})") from None
        raise ModelFileError(f"{model.onnx_path}: the network fails on its first crop ({type(exc).__name__}: {said}); "
                             f"the file is damaged or not a Posecast network: write it again with `posecast export`"
                             ) from None
    want_2d, want_3d = (1, joints, cfg.grid_size, cfg.grid_size), (1, len(cfg.roots), joints, 3)
    got_2d, got_3d = tuple(np.shape(out.probs_2d)), tuple(np.shape(out.offsets_3d))
    if (got_2d, got_3d) != (want_2d, want_3d):
        raise ModelFileError(f"{model.onnx_path}: for one crop the network gives probs_2d {got_2d} and offsets_3d "
                             f"{got_3d}, where its metadata describes {want_2d} and {want_3d}: the metadata is not "
                             f"this network's (write the model again with `posecast export`)")


def _create(model: ModelArtifact, choice: BackendChoice, threads: int, precision: str, max_batch: int,
            calibration: "np.ndarray | None") -> Backend:
    if choice.name == "onnxruntime":
        from engines.backends.onnxruntime_backend import OnnxRuntimeBackend

        backend = OnnxRuntimeBackend(model.onnx_path, device=choice.device, threads=threads)
        try:
            check_outputs(backend, model)
        except BaseException:
            backend.close()
            raise
        return backend
    if choice.name == "torch":
        from engines.backends.torch_backend import TorchBackend

        return TorchBackend(model.checkpoint_path, device=choice.device, precision=precision, threads=threads)
    if choice.name == "tensorrt":
        from engines.backends.tensorrt_backend import TensorRTBackend
        from engines.backends.tensorrt_import import one_line
        from engines.cache import cache_dir

        engine = None
        try:
            engine = TensorRTBackend(Path(model.onnx_path), cache_dir("engines"), precision=precision,
                                     max_batch=max_batch, calibration=calibration)
            _verify_engine(engine, model, precision)
        except BaseException as exc:
            if engine is not None:
                engine.close()           # its GPU buffers and context, whatever failed in the check
            if isinstance(exc, (BackendUnavailableError, ConfigError)) or not isinstance(exc, Exception):
                raise
            # A parser that refuses the model, a CUDA and TensorRT that do not match (TypeError from
            # trt.Runtime), a GPU out of memory: the backend cannot start, and auto moves on.
            said = str(exc) if isinstance(exc, PosecastError) else f"{type(exc).__name__}: {exc}"
            raise BackendUnavailableError(f"TensorRT could not start: {one_line(said)[:300]}") from exc
        return engine
    raise BackendUnavailableError(f"unknown backend '{choice.name}' (choose from auto, {', '.join(BACKENDS)})")


# Tolerances (max abs: probabilities, offsets in metres) of a TensorRT engine against ONNX Runtime
# on the CPU (fp32 reference), by precision. They are there to catch a wrong engine (bindings,
# layouts, a broken parse: errors of tenths of a metre), not to grade rounding. The fp16 offsets'
# bound is not measured on a GPU: on the CPU stage 28 with its weights rounded to fp16 moved the
# offsets of the check's crops by up to 5.7 mm, and under torch's fp16 autocast by 11 mm
# (2026-12-07), past the 5 mm this bound was (stage 31, shipped since: 0.3 and 3.3 mm); it is
# 30 mm, a fifth of the model's own error.
ENGINE_TOLERANCE = {"fp32": (1e-4, 1e-3), "fp16": (2e-3, 3e-2), "int8": (2e-2, 5e-2)}


def _verify_engine(engine: Backend, model: ModelArtifact, precision: str) -> None:
    """Check a freshly loaded engine against the reference before trusting it (as NVIDIA's samples
    do): a wrong engine is worse than a slow backend."""
    import numpy as np

    from engines.backends.onnxruntime_backend import OnnxRuntimeBackend
    from engines.backends.tensorrt_backend import check_against_reference

    size = model.info.config.input_size
    crops = np.random.default_rng(0).integers(0, 256, size=(4, size, size, 3), dtype=np.uint8)
    atol_probs, atol_offsets = ENGINE_TOLERANCE[precision]
    reference = OnnxRuntimeBackend(model.onnx_path, "cpu")
    try:
        check_outputs(reference, model)          # the metadata is this network's, as ONNX Runtime checks it
        report = check_against_reference(engine, reference, crops, atol_probs, atol_offsets)
    finally:
        reference.close()
    if not report["ok"]:
        # The engine stays cached: a build takes minutes and would most likely disagree again,
        # while loading and checking it takes about a second at each start.
        raise BackendUnavailableError(
            f"the TensorRT engine disagrees with ONNX Runtime (max diff probs {report['max_abs_diff_probs']:.2g}, "
            f"offsets {report['max_abs_diff_offsets']:.2g} m; {precision}); use --backend onnxruntime or --precision "
            f"fp32 (or delete {engine.cache.path_for(engine.key)} to build it again)")
