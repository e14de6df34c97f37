"""TensorRT backend: build an engine from the ONNX model once, cache it on disk, run it on the GPU.

The flow follows NVIDIA's samples: parse the ONNX file, build a serialized engine for this GPU,
TensorRT version and precision, keep it in a cache directory, and before trusting a fresh engine
compare its outputs with the framework's (`check_against_reference`).

The parts: `tensorrt_import` (whether TensorRT can run here), `tensorrt_cache` (the engine cache
and its key), `tensorrt_build` (the ONNX checks and the builder) and this module (the runtime and
the check against the reference). None imports `tensorrt` at module level, so all of them import
and work on machines without TensorRT or a GPU. Written against the TensorRT 10.x Python API, the
one major version `tensorrt_import` accepts.

Device memory comes from torch CUDA tensors (`data_ptr()`), and the CUDA stream is a torch stream
(`cuda_stream`), so pycuda / cuda-python are not needed.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from engines.backends.base import PRECISIONS, Backend, NetOutputs
from engines.backends.tensorrt_build import (
    BUILD_RECIPE,
    DEFAULT_WORKSPACE_BYTES,
    build_engine,
    check_calibration,
    errors_since,
    make_logger,
    read_input_size,
)
from engines.backends.tensorrt_cache import EngineCache, EngineKey
from engines.backends.tensorrt_import import import_trt
from engines.errors import BackendUnavailableError, ConfigError, ModelFileError
from engines.model_file import INPUT_NAME, OUTPUT_NAMES, check_io_names

log = logging.getLogger(__name__)


def _torch_dtype(trt: Any, dtype: Any) -> Any:
    import torch  # noqa: PLC0415

    table = {
        "FLOAT": torch.float32,
        "HALF": torch.float16,
        "BF16": torch.bfloat16,
        "INT8": torch.int8,
        "UINT8": torch.uint8,
        "INT32": torch.int32,
        "INT64": torch.int64,
        "BOOL": torch.bool,
    }
    for name, tdtype in table.items():
        if hasattr(trt.DataType, name) and dtype == getattr(trt.DataType, name):
            return tdtype
    raise BackendUnavailableError(f"TensorRT engine uses an I/O data type Posecast does not handle: {dtype}")


class TensorRTBackend(Backend):
    """Runs the network through a TensorRT engine built (once) from the ONNX model.

    Device buffers are torch CUDA tensors allocated at `max_batch` (TensorRT gets their
    `data_ptr()`), host staging buffers are pinned torch tensors and the work runs on a dedicated
    torch CUDA stream (`execute_async_v3(stream.cuda_stream)`): no pycuda needed. Batches larger
    than `max_batch` are run in chunks. One `infer` at a time (a lock guards the buffers).
    """

    name = "tensorrt"

    def __init__(
        self,
        onnx_path: Path,
        cache_dir: Path,
        precision: str = "fp16",
        max_batch: int = 32,
        calibration: np.ndarray | None = None,
        *,
        workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
        device_index: int = 0,
    ) -> None:
        self.device = "cuda"
        self._context = None
        self._engine = None
        trt = import_trt()  # raises BackendUnavailableError with the reason
        import torch  # noqa: PLC0415

        if precision not in PRECISIONS:
            raise ConfigError(f"TensorRT precision must be one of {', '.join(PRECISIONS)} (got {precision!r})")
        if int(max_batch) < 1:
            raise ConfigError(f"TensorRT max_batch must be >= 1 (got {max_batch})")
        onnx_path = Path(onnx_path)
        if not onnx_path.is_file():
            raise ModelFileError(f"ONNX model not found: {onnx_path}")
        self.onnx_path = onnx_path
        self.precision = precision
        self.max_batch = int(max_batch)
        self.input_size = read_input_size(onnx_path)
        cal = check_calibration(calibration, self.input_size) if precision == "int8" else None

        self._torch_device = torch.device("cuda", device_index)
        gpu_name = torch.cuda.get_device_name(self._torch_device)
        self.device = f"cuda:{gpu_name}"
        self.key = EngineKey.for_current_device(onnx_path, precision, self.max_batch, cal, device_index,
                                                build=f"recipe{BUILD_RECIPE}-ws{int(workspace_bytes)}")
        self.cache = EngineCache(Path(cache_dir))
        engine_path = self.cache.path_for(self.key)
        calib_cache = engine_path.with_name(engine_path.name[: -len(".engine")] + ".calib")

        self._logger = make_logger(trt)  # must outlive the runtime and engine
        self._runtime = trt.Runtime(self._logger)

        builds = 0

        def build() -> bytes:
            nonlocal builds
            builds += 1
            with torch.cuda.device(self._torch_device):
                return build_engine(
                    onnx_path, precision, self.max_batch, self.input_size, cal, workspace_bytes,
                    calibration_cache=calib_cache, logger=self._logger,
                )

        with torch.cuda.device(self._torch_device):
            blob = self.cache.get_or_build(self.key, build)
            mark = self._logger.count
            engine = self._runtime.deserialize_cuda_engine(blob)
            if engine is None and not builds:
                # Only an engine from the cache is worth one rebuild (a build takes minutes, and
                # a fresh one that will not load would not load the second time either).
                log.warning("TensorRT could not deserialize cached engine %s; rebuilding", engine_path)
                self.cache.invalidate(self.key)
                blob = self.cache.get_or_build(self.key, build)
                mark = self._logger.count
                engine = self._runtime.deserialize_cuda_engine(blob)
            if engine is None:
                self.cache.invalidate(self.key)     # not kept for every later start to refuse again
                detail = errors_since(self._logger, mark) or "see the TensorRT log"
                raise BackendUnavailableError(f"TensorRT could not load the engine it built: {detail}")
            self._engine = engine
            self._setup_io(trt, torch)

    def _setup_io(self, trt: Any, torch: Any) -> None:
        engine = self._engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        check_io_names(f"the TensorRT engine built from {self.onnx_path}", inputs, outputs)
        self._context = engine.create_execution_context()
        if self._context is None:
            raise BackendUnavailableError("TensorRT could not create an execution context (out of GPU memory?)")
        s = self.input_size
        full = (self.max_batch, s, s, 3)
        if not self._context.set_input_shape(INPUT_NAME, full):
            raise BackendUnavailableError(f"TensorRT engine rejects input shape {full}")
        dev = self._torch_device
        in_dtype = _torch_dtype(trt, engine.get_tensor_dtype(INPUT_NAME))
        self._in_dev = torch.empty(full, dtype=in_dtype, device=dev)
        self._in_host = torch.empty(full, dtype=in_dtype, pin_memory=True)
        self._out_dev: dict[str, Any] = {}
        self._out_host: dict[str, Any] = {}
        for name in OUTPUT_NAMES:
            shape = tuple(self._context.get_tensor_shape(name))
            if not shape or shape[0] != self.max_batch or any(d < 0 for d in shape):
                raise ModelFileError(f"{self.onnx_path}: unexpected TensorRT output shape {shape} for '{name}'")
            dtype = _torch_dtype(trt, engine.get_tensor_dtype(name))
            self._out_dev[name] = torch.empty(shape, dtype=dtype, device=dev)
            self._out_host[name] = torch.empty(shape, dtype=dtype, pin_memory=True)
        self._stream = torch.cuda.Stream(device=dev)
        self._lock = threading.Lock()
        self._torch = torch

    def _bind(self) -> None:
        ctx = self._context
        ctx.set_tensor_address(INPUT_NAME, int(self._in_dev.data_ptr()))
        for name in OUTPUT_NAMES:
            ctx.set_tensor_address(name, int(self._out_dev[name].data_ptr()))

    def infer(self, crops: np.ndarray) -> NetOutputs:
        if self._context is None:
            raise RuntimeError("TensorRTBackend is closed")
        s = self.input_size
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[1:] != (s, s, 3) or crops.dtype != np.uint8:
            raise ValueError(f"crops must be (B, {s}, {s}, 3) uint8 (got {crops.shape} {crops.dtype})")
        n_total = crops.shape[0]
        if n_total == 0:
            return NetOutputs(
                probs_2d=np.zeros((0, *self._out_dev["probs_2d"].shape[1:]), np.float32),
                offsets_3d=np.zeros((0, *self._out_dev["offsets_3d"].shape[1:]), np.float32),
            )
        parts: dict[str, list[np.ndarray]] = {name: [] for name in OUTPUT_NAMES}
        with self._lock:
            for start in range(0, n_total, self.max_batch):
                chunk = crops[start : start + self.max_batch]
                for name, arr in self._run_chunk(chunk).items():
                    parts[name].append(arr)
        out = {name: (p[0] if len(p) == 1 else np.concatenate(p)) for name, p in parts.items()}
        return NetOutputs(
            probs_2d=out["probs_2d"].astype(np.float32, copy=False),
            offsets_3d=out["offsets_3d"].astype(np.float32, copy=False),
        )

    def _run_chunk(self, chunk: np.ndarray) -> dict[str, np.ndarray]:
        torch = self._torch
        n = chunk.shape[0]
        host_in = self._in_host.numpy()
        np.copyto(host_in[:n], chunk, casting="unsafe")  # uint8 -> the engine's input dtype
        mark = self._logger.count
        try:
            with torch.cuda.device(self._torch_device), torch.cuda.stream(self._stream):
                self._in_dev[:n].copy_(self._in_host[:n], non_blocking=True)
                shape = (n, self.input_size, self.input_size, 3)
                if not self._context.set_input_shape(INPUT_NAME, shape):
                    raise RuntimeError(f"TensorRT engine rejects input shape {shape}")
                self._bind()
                if not self._context.execute_async_v3(self._stream.cuda_stream):
                    detail = errors_since(self._logger, mark)
                    raise RuntimeError(f"TensorRT inference failed{': ' + detail if detail else ''}")
                for name in OUTPUT_NAMES:
                    self._out_host[name][:n].copy_(self._out_dev[name][:n], non_blocking=True)
        finally:
            # Also after a failure: the copy queued on the side stream must be done before the
            # buffers are reused or freed (torch's allocator does not know that stream uses them).
            self._stream.synchronize()
        return {name: self._out_host[name][:n].numpy().copy() for name in OUTPUT_NAMES}

    def close(self) -> None:
        # Not while an infer is using the buffers (no lock yet: the buffers were never made).
        with getattr(self, "_lock", None) or contextlib.nullcontext():
            stream = getattr(self, "_stream", None)
            if stream is not None:
                stream.synchronize()
            self._context = None
            self._engine = None
            for attr in ("_in_dev", "_in_host", "_out_dev", "_out_host", "_stream", "_runtime"):
                if hasattr(self, attr):
                    setattr(self, attr, None)

    def describe(self) -> str:
        return f"{self.name} ({self.device}, {self.precision}, max batch {self.max_batch})"


# --------------------------------------------------------------------------------------------
# Verification


def check_against_reference(
    backend: Backend,
    reference_backend: Backend,
    crops: np.ndarray,
    atol_probs: float,
    atol_offsets: float,
) -> dict[str, Any]:
    """Run both backends on `crops` and compare: max abs differences and whether within tolerance.

    Returns {"batch", "max_abs_diff_probs", "max_abs_diff_offsets", "atol_probs", "atol_offsets",
    "ok", "backend", "reference"}. Mismatched shapes or NaNs give ok=False (diffs inf / nan).
    """
    got = backend.infer(crops)
    ref = reference_backend.infer(crops)

    def max_diff(a: np.ndarray, b: np.ndarray) -> float:
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if a.shape != b.shape:
            return float("inf")
        return float(np.max(np.abs(a - b))) if a.size else 0.0

    d_probs = max_diff(got.probs_2d, ref.probs_2d)
    d_offsets = max_diff(got.offsets_3d, ref.offsets_3d)
    return {
        "batch": int(len(crops)),
        "max_abs_diff_probs": d_probs,
        "max_abs_diff_offsets": d_offsets,
        "atol_probs": float(atol_probs),
        "atol_offsets": float(atol_offsets),
        "ok": bool(d_probs <= atol_probs and d_offsets <= atol_offsets),
        "backend": backend.describe(),
        "reference": reference_backend.describe(),
    }
