"""TensorRT backend: build an engine from the ONNX model once, cache it on disk, run it on the GPU.

The flow follows NVIDIA's samples: parse the ONNX file, build a serialized engine for this GPU,
TensorRT version and precision, keep it in a cache directory, and before trusting a fresh engine
compare its outputs with the framework's (`check_against_reference`).

Nothing here imports `tensorrt` at module level, so this module (and `EngineCache`, `EngineKey`,
`unsupported_ops`) imports and works on machines without TensorRT or a GPU. Written against the
TensorRT 10.x Python API; TensorRT 8.5/8.6 work too (named-tensor API, `execute_async_v3`).

Device memory comes from torch CUDA tensors (`data_ptr()`), and the CUDA stream is a torch stream
(`cuda_stream`), so pycuda / cuda-python are not needed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from engines.backends.base import PRECISIONS, Backend, NetOutputs
from engines.errors import BackendUnavailableError, ConfigError, ModelFileError
from engines.model_file import INPUT_NAME, OUTPUT_NAMES, atomic_write_bytes, file_sha256, read_onnx_info

try:  # POSIX only; without it the cache still works, just without the cross-process lock.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

DEFAULT_WORKSPACE_BYTES = 1 << 30
# build_engine's recipe (its profile's opt batch, TF32 off for fp32, the int8 calibration batch):
# raise it when that changes, so that engines built the old way are not reused.
BUILD_RECIPE = 1
SUPPORTED_BELOW_MAJOR = 11     # the first TensorRT major version this builder does not support

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
# Availability


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def tensorrt_available() -> tuple[bool, str]:
    """(True, TensorRT version) when TensorRT imports and a CUDA device is usable, else (False, why).

    Never raises.
    """
    try:
        import tensorrt as trt  # noqa: PLC0415 - optional dependency
    except ImportError as exc:
        return False, (
            "TensorRT is not installed (the `tensorrt` Python package, which needs an NVIDIA GPU "
            f"with its driver and CUDA; {_one_line(exc)})"
        )
    except Exception as exc:  # e.g. OSError: libnvinfer.so not found
        return False, f"TensorRT is installed but failed to load: {type(exc).__name__}: {_one_line(exc)}"
    if _trt_major(trt) >= SUPPORTED_BELOW_MAJOR:
        # TensorRT 11 removed the FP16 and INT8 builder flags and the calibrators this builder uses.
        return False, (f"TensorRT {getattr(trt, '__version__', '?')} is installed; Posecast's engine builder is "
                       f"written for TensorRT 10 (pip install 'tensorrt>=10,<11')")
    try:
        import torch  # noqa: PLC0415

        cuda_ok = bool(torch.cuda.is_available())
    except Exception as exc:  # pragma: no cover - broken torch install
        return False, f"could not check for a CUDA device through torch: {_one_line(exc)}"
    if not cuda_ok:
        return False, (
            "no usable CUDA device (torch.cuda.is_available() is False: no NVIDIA GPU or driver, "
            "or a CPU-only torch build)"
        )
    return True, str(getattr(trt, "__version__", "unknown"))


def _import_trt() -> Any:
    ok, reason = tensorrt_available()
    if not ok:
        raise BackendUnavailableError(f"TensorRT backend unavailable: {reason}")
    import tensorrt as trt  # noqa: PLC0415

    return trt


def _trt_major(trt: Any) -> int:
    try:
        return int(str(trt.__version__).split(".")[0])
    except (AttributeError, ValueError):
        return 0


# --------------------------------------------------------------------------------------------
# Engine cache (no TensorRT needed)


def array_sha256(array: np.ndarray) -> str:
    """Hex sha256 of an array's shape, dtype and bytes."""
    arr = np.ascontiguousarray(array)
    h = hashlib.sha256(f"{arr.shape}|{arr.dtype.str}|".encode())
    h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


def _slug(text: str, max_len: int = 32) -> str:
    slug = re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("._-").lower()
    return slug[:max_len].rstrip("._-") or "unknown"


@dataclass(frozen=True)
class EngineKey:
    """Everything a serialized TensorRT engine depends on.

    An engine only runs on the TensorRT version that built it and is tuned for (and usually tied
    to) the GPU model, so a change to any field means another engine file.
    `calibration_sha256` is the hash of the int8 calibration crops ("" for fp32/fp16).
    """

    onnx_sha256: str
    gpu_name: str
    compute_capability: str  # "8.9"
    trt_version: str
    precision: str
    max_batch: int
    calibration_sha256: str = ""
    # How build_engine builds (its recipe's version, the workspace): a change there means a new engine.
    build: str = ""

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} (got {self.precision!r})")
        if int(self.max_batch) < 1:
            raise ValueError(f"max_batch must be >= 1 (got {self.max_batch})")

    def digest(self) -> str:
        """sha256 over all fields (stable across runs and Python versions)."""
        payload = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()

    def filename(self) -> str:
        """A stable, filesystem-safe file name; readable parts plus a short hash of every field."""
        cc = _slug(self.compute_capability.replace(".", ""), 8)
        return (
            f"posecast-{_slug(self.onnx_sha256, 12)}-{_slug(self.gpu_name, 24)}-sm{cc}"
            f"-trt{_slug(self.trt_version, 16)}-{self.precision}-b{int(self.max_batch)}"
            f"-{self.digest()[:16]}.engine"
        )

    @classmethod
    def for_current_device(
        cls,
        onnx_path: Path,
        precision: str,
        max_batch: int,
        calibration: np.ndarray | None = None,
        device_index: int = 0,
        build: str = "",
    ) -> EngineKey:
        """The key for this machine's GPU and TensorRT (needs both)."""
        trt = _import_trt()
        import torch  # noqa: PLC0415

        major, minor = torch.cuda.get_device_capability(device_index)
        return cls(
            onnx_sha256=file_sha256(Path(onnx_path)),
            gpu_name=torch.cuda.get_device_name(device_index),
            compute_capability=f"{major}.{minor}",
            trt_version=str(trt.__version__),
            precision=precision,
            max_batch=int(max_batch),
            calibration_sha256=array_sha256(calibration) if precision == "int8" and calibration is not None else "",
            build=build,
        )


class EngineCache:
    """Serialized engines on disk, one file per `EngineKey`.

    Files are written atomically (temp file in the same directory + `os.replace`), carry a small
    header with a sha256 of the payload so a truncated or damaged file is detected and rebuilt,
    and a per-key lock file (`fcntl.flock`) keeps two processes from building the same engine at
    once: the second waits, then finds the first one's file.

    Note the header: the files are not raw TensorRT plans (`trtexec --loadEngine` cannot read them).
    """

    MAGIC = b"POSECAST-TRT-ENGINE v1\n"
    _DIGEST_LEN = 32

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = Path(cache_dir)

    def path_for(self, key: EngineKey) -> Path:
        return self.cache_dir / key.filename()

    def get(self, key: EngineKey) -> bytes | None:
        """The cached engine, or None when absent or corrupt."""
        return self._read(self.path_for(key))

    def get_or_build(self, key: EngineKey, build_fn: Callable[[], Any]) -> bytes:
        """The cached engine for `key`; else `build_fn()` (bytes or a buffer), stored and returned."""
        path = self.path_for(key)
        data = self._read(path, warn=False)  # a corrupt file is reported once, under the lock
        if data is not None:
            log.debug("TensorRT engine cache hit: %s", path)
            return data
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with self._locked(path):
            data = self._read(path)  # another process may have built it while we waited
            if data is not None:
                log.debug("TensorRT engine built by another process: %s", path)
                return data
            log.info("building TensorRT engine %s (once per model, GPU, TensorRT version, precision)", path.name)
            built = build_fn()
            data = bytes(built) if not isinstance(built, bytes) else built
            if not data:
                raise RuntimeError("the TensorRT engine builder returned no data")
            self._write(path, data)
            return data

    def invalidate(self, key: EngineKey) -> None:
        """Delete the cached engine for `key` (e.g. when TensorRT refuses to deserialize it)."""
        with contextlib.suppress(FileNotFoundError):
            self.path_for(key).unlink()

    # -- internals

    def _read(self, path: Path, warn: bool = True) -> bytes | None:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            if warn:
                    log.warning("cannot read TensorRT engine cache file %s (%s); rebuilding", path, _one_line(exc))
            return None
        head = len(self.MAGIC) + self._DIGEST_LEN
        problem = None
        if len(raw) <= head or not raw.startswith(self.MAGIC):
            problem = "empty" if not raw else "bad header or truncated"
        elif hashlib.sha256(raw[head:]).digest() != raw[len(self.MAGIC) : head]:
            problem = "checksum mismatch"
        if problem is not None:
            if warn:
                log.warning("TensorRT engine cache file %s is corrupt (%s); rebuilding", path, problem)
            return None
        return raw[head:]

    def _write(self, path: Path, data: bytes) -> None:
        # Header and checksum first: a file cut short anywhere, or damaged, is caught on read.
        atomic_write_bytes(path, self.MAGIC + hashlib.sha256(data).digest() + data)

    @contextlib.contextmanager
    def _locked(self, path: Path) -> Iterator[None]:
        if fcntl is None:  # pragma: no cover - Windows
            yield
            return
        # The lock file stays: deleting it would let a third process lock a fresh inode.
        lock_path = path.with_name(path.name + ".lock")
        with open(lock_path, "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


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


def _read_input_size(onnx_path: Path) -> int:
    """The crop size: the static (B, S, S, 3) shape of the `image` input, which every Posecast
    export has, else the model's Posecast metadata."""
    try:
        import onnx  # noqa: PLC0415

        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:
        raise ModelFileError(f"cannot read ONNX model {onnx_path}: {_one_line(exc)}") from None
    for inp in model.graph.input:
        if inp.name == INPUT_NAME:
            dims = [d.dim_value for d in inp.type.tensor_type.shape.dim]
            if len(dims) == 4 and dims[1] > 0 and dims[1] == dims[2] and dims[3] == 3:
                return int(dims[1])
    return read_onnx_info(Path(onnx_path)).config.input_size


# --------------------------------------------------------------------------------------------
# Building (needs TensorRT)


def _make_logger(trt: Any) -> Any:
    """A TensorRT logger forwarding to Python logging that remembers error messages."""

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self.count = 0                 # errors ever logged: the mark `_errors_since` counts from

        def log(self, severity: Any, msg: str) -> None:
            sev = trt.ILogger.Severity
            if severity in (sev.INTERNAL_ERROR, sev.ERROR):
                self.errors.append(_one_line(msg))
                self.count += 1
                del self.errors[:-20]
                log.error("TensorRT: %s", msg)
            elif severity == sev.WARNING:
                log.warning("TensorRT: %s", msg)
            elif severity == sev.INFO:
                log.debug("TensorRT: %s", msg)

    return _Logger()


def _errors_since(logger: Any, mark: int) -> str:
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


def _check_calibration(calibration: np.ndarray | None, input_size: int) -> np.ndarray:
    if calibration is None or len(calibration) == 0:
        raise ConfigError(
            "precision int8 needs calibration data: a few hundred representative crops "
            f"(N, {input_size}, {input_size}, 3) uint8; pass them, or use precision fp16"
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
    cal = _check_calibration(calibration, size) if precision == "int8" else None
    calibrator = None
    opt = int(opt_batch) if opt_batch is not None else max(1, max_batch // 2)
    opt = min(max(opt, 1), max_batch)
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise ModelFileError(f"ONNX model not found: {onnx_path}")

    trt = _import_trt()
    logger = logger if logger is not None else _make_logger(trt)
    builder = trt.Builder(logger)
    flags = 0
    # TensorRT 8.x needs explicit batch asked for; 10.x has only explicit batch (flag deprecated).
    if _trt_major(trt) < 10 and hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        problems = []
        for i in range(parser.num_errors):
            err = parser.get_error(i)
            where = ""
            op = getattr(err, "node_operator", None)
            if callable(op) and op():
                where = f" [{op()}]"
            problems.append(f"{_one_line(err.desc())}{where}")
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
        detail = _errors_since(logger, mark) or "see the TensorRT log"
        raise BackendUnavailableError(f"TensorRT failed to build an engine from {onnx_path}: {detail}")
    return bytes(serialized)


# --------------------------------------------------------------------------------------------
# Runtime


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
        trt = _import_trt()  # raises BackendUnavailableError with the reason
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
        self.input_size = _read_input_size(onnx_path)
        cal = _check_calibration(calibration, self.input_size) if precision == "int8" else None

        self._torch_device = torch.device("cuda", device_index)
        gpu_name = torch.cuda.get_device_name(self._torch_device)
        self.device = f"cuda:{gpu_name}"
        self.key = EngineKey.for_current_device(onnx_path, precision, self.max_batch, cal, device_index,
                                                build=f"recipe{BUILD_RECIPE}-ws{int(workspace_bytes)}")
        self.cache = EngineCache(Path(cache_dir))
        engine_path = self.cache.path_for(self.key)
        calib_cache = engine_path.with_name(engine_path.name[: -len(".engine")] + ".calib")

        self._logger = _make_logger(trt)  # must outlive the runtime and engine
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
                detail = _errors_since(self._logger, mark) or "see the TensorRT log"
                raise BackendUnavailableError(f"TensorRT could not load the engine it built: {detail}")
            self._engine = engine
            self._setup_io(trt, torch)

    def _setup_io(self, trt: Any, torch: Any) -> None:
        engine = self._engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if inputs != [INPUT_NAME] or sorted(outputs) != sorted(OUTPUT_NAMES):
            raise ModelFileError(
                f"{self.onnx_path}: expected input '{INPUT_NAME}' and outputs {', '.join(OUTPUT_NAMES)}; "
                f"the engine has inputs {inputs} and outputs {outputs}"
            )
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
                    detail = _errors_since(self._logger, mark)
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
