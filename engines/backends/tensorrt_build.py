"""Building a TensorRT engine from the ONNX model.

`unsupported_ops` and `default_opset` check a model's ops and opset against what TensorRT's ONNX
parser takes without TensorRT itself: tests/test_tensorrt.py runs them on every export, on
machines with no GPU. The build does not repeat them: an op TensorRT cannot take fails in its
parser, whose error names the op."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from engines.backends.base import PRECISIONS
from engines.backends.tensorrt_import import import_trt, one_line
from engines.errors import BackendUnavailableError, ConfigError, ModelFileError
from engines.model_file import INPUT_NAME, atomic_write_bytes, read_onnx_info

log = logging.getLogger(__name__)

DEFAULT_WORKSPACE_BYTES = 1 << 30
# build_engine's recipe (its profile's opt batch, TF32 off for fp32, the int8 calibration batch):
# raise it when that changes, so that engines built the old way are not reused.
BUILD_RECIPE = 1

# TensorRT 10's ONNX parser handles opsets 9..20.
MAX_ONNX_OPSET = 20

# ONNX ops (default domain) that TensorRT's ONNX parser supports and that an export of the
# Posecast network (or anything close to it) can produce. Deliberately a short list of ops we
# have reason to emit, not TensorRT's full support matrix: an op outside it should be looked at
# (onnx-tensorrt's docs/operators.md lists restrictions, e.g. Resize modes) before it is added.
TENSORRT_ONNX_OPS = frozenset(
    {
        # convolution / normalisation / pooling
        "Conv", "ConvTranspose", "BatchNormalization", "InstanceNormalization", "LayerNormalization",
        "GlobalAveragePool", "GlobalMaxPool", "AveragePool", "MaxPool",
        # activations
        "Relu", "LeakyRelu", "PRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Erf",
        "Softmax", "LogSoftmax", "Softplus",
        # arithmetic
        "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Exp", "Log", "Neg", "Abs", "Min", "Max",
        "Floor", "Ceil", "Sum",
        # linear algebra / reductions
        "Gemm", "MatMul", "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ArgMax",
        # shapes and data movement
        "Cast", "Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Concat", "Split",
        "Slice", "Gather", "Expand", "Tile", "Pad", "Resize", "Shape", "Constant",
        "ConstantOfShape", "Identity", "Dropout", "Where", "Equal", "Less", "Greater", "Range",
    }
)


# --------------------------------------------------------------------------------------------
# ONNX checks (no TensorRT needed)


def default_opset(onnx_model: Any) -> int:
    """The model's default-domain ("" / "ai.onnx") opset version."""
    for imp in onnx_model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 0


def _iter_nodes(graph: Any) -> Iterator[Any]:
    for node in graph.node:
        yield node
        for attr in node.attribute:  # If / Loop / Scan bodies
            if attr.HasField("g"):
                yield from _iter_nodes(attr.g)
            for sub in attr.graphs:
                yield from _iter_nodes(sub)


def unsupported_ops(onnx_model: Any, supported: frozenset[str] = TENSORRT_ONNX_OPS) -> list[str]:
    """Sorted op types in `onnx_model` (an `onnx.ModelProto`) that are not in the TensorRT list.

    Ops from other domains are reported as "domain::OpType" (TensorRT only parses them through
    plugins). An opset above `MAX_ONNX_OPSET` is checked separately (`default_opset`).
    """
    bad: set[str] = set()
    for node in _iter_nodes(onnx_model.graph):
        if node.domain not in ("", "ai.onnx"):
            bad.add(f"{node.domain}::{node.op_type}")
        elif node.op_type not in supported:
            bad.add(node.op_type)
    return sorted(bad)


def read_input_size(onnx_path: Path) -> int:
    """The crop size: the static (B, S, S, 3) shape of the `image` input, which every Posecast
    export has, else the model's Posecast metadata."""
    try:
        import onnx  # noqa: PLC0415

        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:
        raise ModelFileError(f"cannot read ONNX model {onnx_path}: {one_line(exc)}") from None
    for inp in model.graph.input:
        if inp.name == INPUT_NAME:
            dims = [d.dim_value for d in inp.type.tensor_type.shape.dim]
            if len(dims) == 4 and dims[1] > 0 and dims[1] == dims[2] and dims[3] == 3:
                return int(dims[1])
    return read_onnx_info(Path(onnx_path)).config.input_size


# --------------------------------------------------------------------------------------------
# Building (needs TensorRT)


def make_logger(trt: Any) -> Any:
    """A TensorRT logger forwarding to Python logging that remembers error messages."""

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self.count = 0                 # errors ever logged: the mark `errors_since` counts from

        def log(self, severity: Any, msg: str) -> None:
            sev = trt.ILogger.Severity
            if severity in (sev.INTERNAL_ERROR, sev.ERROR):
                self.errors.append(one_line(msg))
                self.count += 1
                del self.errors[:-20]
                log.error("TensorRT: %s", msg)
            elif severity == sev.WARNING:
                log.warning("TensorRT: %s", msg)
            elif severity == sev.INFO:
                log.debug("TensorRT: %s", msg)

    return _Logger()


def errors_since(logger: Any, mark: int) -> str:
    """The newest three errors `logger` took after `mark` (its count then), each once: one logger
    serves a backend's whole life, and an old error (a cached engine refused at start) must not
    pass for the cause of a later failure."""
    fresh = logger.count - mark
    new = logger.errors[-min(fresh, len(logger.errors)):] if fresh > 0 else []
    return "; ".join(list(dict.fromkeys(new))[-3:])


def _make_calibrator(trt: Any, calibration: np.ndarray, batch_size: int, cache_path: Path | None) -> Any:
    """An entropy calibrator (v2) over `calibration` (N, S, S, 3) uint8, in full batches.

    Created in a factory so that the base class `trt.IInt8EntropyCalibrator2` is only looked up
    when TensorRT is present.
    """
    import torch  # noqa: PLC0415

    class _Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._data = calibration
            self._batch = batch_size
            self._next = 0
            self._cache_path = cache_path
            self._device = torch.empty((batch_size, *calibration.shape[1:]), dtype=torch.uint8, device="cuda")

        def get_batch_size(self) -> int:  # deprecated in TRT 10 (explicit batch), still called
            return self._batch

        def get_batch(self, names: list[str]) -> list[int] | None:
            # Only full batches: the calibration profile fixes the batch size.
            if self._next + self._batch > len(self._data):
                return None
            chunk = self._data[self._next : self._next + self._batch]
            self._next += self._batch
            self._device.copy_(torch.from_numpy(np.ascontiguousarray(chunk)))
            torch.cuda.synchronize()
            return [int(self._device.data_ptr())]

        def read_calibration_cache(self) -> bytes | None:
            if self._cache_path is not None and self._cache_path.is_file():
                data = self._cache_path.read_bytes()
                if data:
                    log.info("using TensorRT calibration cache %s", self._cache_path)
                    return data
            return None

        def write_calibration_cache(self, cache: Any) -> None:
            if self._cache_path is not None:
                atomic_write_bytes(self._cache_path, bytes(cache))

    return _Calibrator()


def check_calibration(calibration: np.ndarray | None, input_size: int) -> np.ndarray:
    if calibration is None or len(calibration) == 0:
        raise ConfigError(
            "precision int8 needs calibration data: give --calibration VIDEO_OR_FOLDER (inference.calibration) "
            "of typical scenes, or use --precision fp16"
        )
    cal = np.asarray(calibration)
    if cal.dtype != np.uint8 or cal.ndim != 4 or cal.shape[1:] != (input_size, input_size, 3):
        raise ConfigError(
            f"int8 calibration data must be (N, {input_size}, {input_size}, 3) uint8 "
            f"(got {cal.shape} {cal.dtype})"
        )
    return cal


def build_engine(
    onnx_path: Path,
    precision: str,
    max_batch: int,
    input_size: int,
    calibration: np.ndarray | None = None,
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
    *,
    calibration_cache: Path | None = None,
    opt_batch: int | None = None,
    logger: Any = None,
) -> bytes:
    """Parse `onnx_path` and build a serialized engine for input `image` (1..max_batch, S, S, 3).

    fp16 and int8 also enable fp16 kernels where the GPU has fast fp16. int8 calibrates with
    `calibration` (N, S, S, 3) uint8 and keeps the calibration table in `calibration_cache`.
    `logger`: the process's TensorRT logger where one exists already (a runtime's): TensorRT keeps
    one logger at a time, so a second one would never hear the build's errors.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"TensorRT precision must be one of {', '.join(PRECISIONS)} (got {precision!r})")
    if int(max_batch) < 1:
        raise ConfigError(f"TensorRT max_batch must be >= 1 (got {max_batch})")
    max_batch = int(max_batch)
    size = int(input_size)
    cal = check_calibration(calibration, size) if precision == "int8" else None
    calibrator = None
    opt = int(opt_batch) if opt_batch is not None else max(1, max_batch // 2)
    opt = min(max(opt, 1), max_batch)
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise ModelFileError(f"ONNX model not found: {onnx_path}")

    trt = import_trt()
    logger = logger if logger is not None else make_logger(trt)
    builder = trt.Builder(logger)
    # TensorRT 10 (the one version tensorrt_import accepts) has only explicit batch: no flags.
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        problems = []
        for i in range(parser.num_errors):
            err = parser.get_error(i)
            where = ""
            op = getattr(err, "node_operator", None)
            if callable(op) and op():
                where = f" [{op()}]"
            problems.append(f"{one_line(err.desc())}{where}")
        raise ModelFileError(
            f"TensorRT cannot parse {onnx_path}: " + ("; ".join(problems) or "unknown parser error")
        )
    input_names = [network.get_input(i).name for i in range(network.num_inputs)]
    if INPUT_NAME not in input_names:
        raise ModelFileError(f"{onnx_path} has no input named '{INPUT_NAME}' (inputs: {', '.join(input_names)})")

    config = builder.create_builder_config()
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    else:  # pragma: no cover - TensorRT < 8.4
        config.max_workspace_size = int(workspace_bytes)

    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, (1, size, size, 3), (opt, size, size, 3), (max_batch, size, size, 3))
    config.add_optimization_profile(profile)

    if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        # TF32 is on by default on Ampere+; fp32 here means "as close to the framework as possible".
        config.clear_flag(trt.BuilderFlag.TF32)
    if precision in ("fp16", "int8"):
        if getattr(builder, "platform_has_fast_fp16", True):
            config.set_flag(trt.BuilderFlag.FP16)
        else:
            log.warning("this GPU has no fast fp16; building the TensorRT engine without fp16 kernels")
    if precision == "int8":
        assert cal is not None
        if not getattr(builder, "platform_has_fast_int8", True):
            log.warning("this GPU has no fast int8; the int8 TensorRT engine may be slower than fp16")
        # Implicit (calibration-based) int8 is deprecated in TensorRT 10 in favour of explicit
        # quantization (Q/DQ nodes in the ONNX, e.g. from NVIDIA's ModelOpt). It still works, and
        # it needs no change to the exported model, so we keep it here.
        calib_batch = max(1, min(len(cal), max_batch, 16))
        config.set_flag(trt.BuilderFlag.INT8)
        # Keep a Python reference until the build is done: the config does not own the calibrator.
        calibrator = _make_calibrator(trt, cal, calib_batch, calibration_cache)
        config.int8_calibrator = calibrator
        if hasattr(config, "set_calibration_profile"):
            # With dynamic shapes, calibration runs at this profile's opt shape.
            calib_profile = builder.create_optimization_profile()
            shape = (calib_batch, size, size, 3)
            calib_profile.set_shape(INPUT_NAME, shape, shape, shape)
            config.set_calibration_profile(calib_profile)

    mark = logger.count
    serialized = builder.build_serialized_network(network, config)
    calibrator = None  # noqa: F841 - released only after the build
    if serialized is None:
        detail = errors_since(logger, mark) or "see the TensorRT log"
        raise BackendUnavailableError(f"TensorRT failed to build an engine from {onnx_path}: {detail}")
    return bytes(serialized)
