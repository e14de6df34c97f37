"""The on-disk cache of serialized TensorRT engines, keyed by everything an engine depends on (no TensorRT needed)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from engines.backends.base import PRECISIONS
from engines.backends.tensorrt_import import import_trt, one_line
from engines.model_file import atomic_write_bytes, file_sha256

try:  # POSIX only; without it the cache still works, just without the cross-process lock.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)


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
        trt = import_trt()
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
            # A warning, which a run shows by default: the build takes minutes, in which nothing else is said.
            log.warning("building TensorRT engine %s (once per model, GPU, TensorRT version, precision and batch "
                        "size; this takes minutes)", path.name)
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
                    log.warning("cannot read TensorRT engine cache file %s (%s); rebuilding", path, one_line(exc))
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
