"""TensorRTBackend's runtime (engine loading, I/O setup, chunked inference, close) on the CPU.

No other CPU test reaches it. A fake `tensorrt` with TensorRT 10's runtime API computes a known
function of its input, and CPU tensors stand in for CUDA ones, keeping what correctness depends
on: work on a stream (the engine, non-blocking copies made under it) runs only at that stream's
synchronize, in order; device memory cannot be read from the host; the engine reads and writes
only through the addresses it was given, which must start live device buffers of its dtype.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import logging
import sys
import types
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar
from unittest import mock

import numpy as np
import pytest
import torch

from engines.backends import tensorrt_backend as trtb
from engines.errors import BackendUnavailableError, ModelFileError
from engines.model_file import INPUT_NAME, OUTPUT_NAMES

S, J, G, R = 4, 3, 2, 2  # crop size, joints, grid, roots: tiny, only the shapes matter
MAX_BATCH = 4
OUT_SHAPES = {"probs_2d": (J, G, G), "offsets_3d": (R, J, 3)}


def _reference(x: np.ndarray) -> dict[str, np.ndarray]:
    """What the fake engine computes: each crop's outputs depend on that crop alone."""
    x = x.astype(np.float32).reshape(len(x), S * S * 3)
    probs = x.mean(axis=1)[:, None, None, None] + np.arange(J * G * G, dtype=np.float32).reshape(1, J, G, G)
    return {"probs_2d": probs, "offsets_3d": x[:, : R * J * 3].reshape(-1, R, J, 3) / 4}


# --------------------------------------------------------------------------------------------
# A CUDA stand-in: CPU tensors, and streams that queue work until synchronized


class _Buf(torch.Tensor):
    """The backend's buffers: their copies go on the current fake stream."""

    gpu: ClassVar[_FakeGPU | None] = None

    @classmethod
    def __torch_function__(cls, func: Callable[..., Any], classes: tuple[type, ...], args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs, name, gpu = kwargs or {}, getattr(func, "__name__", ""), cls.gpu
        if gpu is not None and name == "copy_" and gpu.current is not None:
            gpu.current.pending.append(functools.partial(super().__torch_function__, func, classes, args, kwargs))
            if not kwargs.get("non_blocking"):
                gpu.current.synchronize()  # a blocking copy waits for its stream's earlier work
            return args[0]
        if gpu is not None and name == "numpy" and gpu.on_device(args[0]):
            raise TypeError("can't convert cuda:0 device type tensor to numpy")  # as torch says
        return super().__torch_function__(func, classes, args, kwargs)


@dataclass
class _FakeStream:
    cuda_stream: int  # the handle execute_async_v3 is given
    pending: list[Callable[[], Any]] = field(default_factory=list)

    def synchronize(self) -> None:
        while self.pending:
            self.pending.pop(0)()


@dataclass
class _FakeGPU:
    current: _FakeStream | None = None  # None: the default stream, which does not wait for ours
    streams: dict[int, _FakeStream] = field(default_factory=dict)
    buffers: dict[int, weakref.ref] = field(default_factory=dict)  # device buffers by address

    def new_stream(self, device: Any = None, priority: int = 0) -> _FakeStream:
        stream = _FakeStream(0x7000 + len(self.streams))  # never 0: that is the default stream
        return self.streams.setdefault(stream.cuda_stream, stream)

    def empty(self, real_empty: Callable[..., torch.Tensor], *size: Any, device: Any = None,
              pin_memory: bool = False, **kwargs: Any) -> torch.Tensor:
        tensor = real_empty(*size, **kwargs).as_subclass(_Buf)
        if device is not None and torch.device(device).type == "cuda":
            self.buffers[tensor.data_ptr()] = weakref.ref(tensor)
        return tensor

    def on_device(self, tensor: torch.Tensor) -> bool:
        with torch._C.DisableTorchFunctionSubclass():  # a freed device buffer's address may be reused
            return self.buffers.get(tensor.untyped_storage().data_ptr(), lambda: None)() is not None

    def live(self) -> int:
        return sum(ref() is not None for ref in self.buffers.values())

    def memory(self, address: int, dtype: torch.dtype, count: int) -> torch.Tensor:
        """What a kernel given `address` reads and writes: `count` elements of a device buffer."""
        tensor = self.buffers.get(address, lambda: None)()
        assert tensor is not None, f"TensorRT got {address:#x}, not the start of a live device buffer"
        with torch._C.DisableTorchFunctionSubclass():
            assert tensor.dtype == dtype and tensor.numel() >= count, f"buffer {tensor.dtype} {tensor.shape}"
            return tensor.view(-1)[:count]


# --------------------------------------------------------------------------------------------
# A fake TensorRT 10 runtime: tensorrt.Runtime / ICudaEngine / IExecutionContext


class IOMode(enum.Enum):
    NONE, INPUT, OUTPUT = range(3)


class DType(enum.Enum):  # TensorRT's values
    FLOAT, HALF, INT8, INT32, BOOL, UINT8, FP8, BF16, INT64 = range(9)


TORCH_DTYPES = {DType.FLOAT: torch.float32, DType.HALF: torch.float16, DType.UINT8: torch.uint8}


class _ILogger:  # subclassed by the backend's logger, as trt.ILogger is
    class Severity(enum.IntEnum):
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)


def _arg(value: Any, kinds: type | tuple[type, ...]) -> Any:
    if not isinstance(value, kinds):  # pybind11 refuses what a binding's signature does not take
        raise TypeError(f"incompatible function arguments: {value!r}")
    return value


def _io(input_dtype: DType = DType.UINT8, output_dtype: DType = DType.FLOAT) -> list[tuple[str, IOMode, DType]]:
    # Outputs in the other order than OUTPUT_NAMES: the backend must go by name.
    return [(INPUT_NAME, IOMode.INPUT, input_dtype), ("offsets_3d", IOMode.OUTPUT, output_dtype),
            ("probs_2d", IOMode.OUTPUT, output_dtype)]


class FakeTRT:
    """The fake module, its knobs, and what it saw."""

    def __init__(self, gpu: _FakeGPU) -> None:
        self.gpu, self.io, self.profile_max = gpu, _io(), MAX_BATCH
        self.refuse: Callable[[bytes], bool] = lambda plan: False  # plans this TensorRT cannot read
        self.refused_batches: set[int] = set()
        self.execute_error = ""
        self.logger: Any = None  # TensorRT's one logger: the first live Runtime's
        self.live_runtimes = 0
        self.deserialized: list[bytes] = []
        self.runs: list[int] = []  # the batch of each execute_async_v3
        self.released: list[str] = []
        self.builds: list[dict[str, Any]] = []
        self.module = types.ModuleType("tensorrt")
        self.module.__dict__.update(__version__="10.3.0", ILogger=_ILogger, TensorIOMode=IOMode, DataType=DType,
                                    Runtime=lambda logger: _Runtime(self, logger))

    def error(self, msg: str) -> None:
        self.logger.log(_ILogger.Severity.ERROR, msg)

    def build_engine(self, onnx_path: Path, precision: str, max_batch: int, input_size: int, calibration: Any,
                     workspace_bytes: int, *, calibration_cache: Path, logger: Any) -> bytes:
        """Stands in for trtb.build_engine: records its arguments, returns b"plan#<n>"."""
        self.builds.append(dict(precision=precision, max_batch=max_batch, input_size=input_size,
                                calibration_cache=calibration_cache, logger=logger))
        return b"plan#%d" % len(self.builds)


class _Released:
    """Records its release: TensorRT needs a context freed before its engine, that before its runtime."""

    def __init__(self, trt: FakeTRT) -> None:
        self.trt = trt

    def __del__(self) -> None:
        self.trt.released.append(type(self).__name__.strip("_").lower())


class _Runtime(_Released):
    def __init__(self, trt: FakeTRT, logger: _ILogger) -> None:
        super().__init__(trt)
        trt.logger = trt.logger if trt.live_runtimes else _arg(logger, _ILogger)  # the others' is kept
        trt.live_runtimes += 1

    def __del__(self) -> None:
        super().__del__()
        self.trt.live_runtimes -= 1

    def deserialize_cuda_engine(self, serialized_engine: bytes) -> _Engine | None:
        plan = bytes(_arg(serialized_engine, (bytes, bytearray, memoryview)))
        self.trt.deserialized.append(plan)
        if not self.trt.refuse(plan):
            return _Engine(self.trt)
        self.trt.error("IRuntime::deserializeCudaEngine: Error Code 1: Serialization (Serialization assertion "
                       "stdVersionRead == kSERIALIZATION_VERSION failed.Version tag does not match)")
        return None


class _Engine(_Released):
    def __init__(self, trt: FakeTRT) -> None:
        super().__init__(trt)
        self.io = {name: (mode, dtype) for name, mode, dtype in trt.io}
        self.num_io_tensors = len(self.io)

    def get_tensor_name(self, index: int) -> str:
        return list(self.io)[_arg(index, int)]

    def get_tensor_mode(self, name: str) -> IOMode:
        return self.io.get(_arg(name, str), (IOMode.NONE,))[0]

    def get_tensor_dtype(self, name: str) -> DType:
        return self.io[_arg(name, str)][1]

    def create_execution_context(self) -> _Context:
        return _Context(self.trt, {name: TORCH_DTYPES.get(dtype) for name, (_, dtype) in self.io.items()})


class _Context(_Released):
    def __init__(self, trt: FakeTRT, dtypes: dict[str, torch.dtype | None]) -> None:
        super().__init__(trt)
        self.dtypes = dtypes
        self.shape: tuple[int, ...] | None = None
        self.addresses: dict[str, int] = {}

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        shape = tuple(_arg(d, int) for d in _arg(shape, (tuple, list)))
        batch_ok = 1 <= shape[0] <= self.trt.profile_max and shape[0] not in self.trt.refused_batches
        if _arg(name, str) != INPUT_NAME or shape[1:] != (S, S, 3) or not batch_ok:
            self.trt.error(f"IExecutionContext::setInputShape: Error Code 3: API Usage Error ({name} {shape})")
            return False
        self.shape = shape
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        batch = self.shape[0] if self.shape else -1  # -1 until the input shape is set
        return (batch, S, S, 3) if name == INPUT_NAME else (batch, *OUT_SHAPES[name])

    def set_tensor_address(self, name: str, memory: int) -> bool:
        self.addresses[_arg(name, str)] = _arg(memory, int)
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        trt, gpu, dtypes = self.trt, self.trt.gpu, self.dtypes
        if trt.execute_error or self.shape is None or set(self.addresses) != set(dtypes):
            trt.error(trt.execute_error or "IExecutionContext::enqueueV3: Error Code 3: shapes or addresses unset")
            return False
        n, addresses = self.shape[0], dict(self.addresses)  # what the engine uses is fixed at enqueue
        trt.runs.append(n)

        def kernel() -> None:  # reads and writes when its stream gets to it
            crops = gpu.memory(addresses[INPUT_NAME], dtypes[INPUT_NAME], n * S * S * 3).numpy()
            for name, value in _reference(crops.reshape(n, S, S, 3)).items():
                gpu.memory(addresses[name], dtypes[name], value.size).copy_(torch.from_numpy(value.reshape(-1)))

        stream = gpu.streams.get(_arg(stream_handle, int))  # else the default stream, which does not wait for ours
        stream.pending.append(kernel) if stream is not None else kernel()
        return True


# --------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture
def trt(monkeypatch: pytest.MonkeyPatch) -> FakeTRT:
    """The fake TensorRT and GPU in place, and build_engine replaced by the fake's."""
    fake = FakeTRT(gpu := _FakeGPU())
    monkeypatch.setitem(sys.modules, "tensorrt", fake.module)
    monkeypatch.setattr(trtb, "build_engine", fake.build_engine)
    monkeypatch.setattr(_Buf, "gpu", gpu)
    # What the backend allocates on "cuda" (or pinned) comes from the CPU, as a _Buf.
    monkeypatch.setattr(torch, "empty", functools.partial(gpu.empty, torch.empty))
    for name, value in dict(
        is_available=lambda: True,
        get_device_name=lambda device=None: "NVIDIA GeForce RTX 4090",
        get_device_capability=lambda device=None: (8, 9),
        device=lambda device: contextlib.nullcontext(),  # Posecast only uses device 0
        stream=lambda stream: mock.patch.object(gpu, "current", stream),
        Stream=gpu.new_stream,
    ).items():
        monkeypatch.setattr(torch.cuda, name, value)
    return fake


@pytest.fixture
def make(trt: FakeTRT, tmp_path: Path) -> Callable[..., Any]:
    """TensorRTBackend(...) on a model file of which only the input's crop size is read."""
    from onnx import TensorProto, helper, save

    image = helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, ["batch", S, S, 3])
    save(helper.make_model(helper.make_graph([], "standin", [image], [])), str(tmp_path / "model.onnx"))
    return lambda **kw: trtb.TensorRTBackend(tmp_path / "model.onnx", tmp_path / "engines",
                                             **{"max_batch": MAX_BATCH, **kw})


def _crops(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, S, S, 3), dtype=np.uint8)


def _assert_outputs(out: Any, crops: np.ndarray) -> None:
    for name, want in _reference(crops).items():
        got = getattr(out, name)
        assert got.dtype == np.float32 and got.shape == want.shape, (name, got.dtype, got.shape)
        np.testing.assert_allclose(got, want, rtol=1e-3, err_msg=name)  # 1e-3: fp16 outputs


# --------------------------------------------------------------------------------------------
# Tests


@pytest.mark.parametrize("dtypes", [(DType.UINT8, DType.FLOAT), (DType.FLOAT, DType.HALF)],
                         ids=["u8-fp32", "fp32-fp16"])
def test_each_crop_gets_its_own_outputs_in_order(trt: FakeTRT, make: Callable[..., Any], dtypes: tuple) -> None:
    trt.io = _io(*dtypes)
    backend = make()
    calls = [_crops(n, seed=n) for n in (11, 1, MAX_BATCH, 0, 5)]  # chunked, single, exact, empty, again
    results = [backend.infer(crops) for crops in calls]
    for crops, out in zip(calls, results):  # checked at the end: no result may alias the buffers
        _assert_outputs(out, crops)
    # One engine run per chunk, at the chunk's own batch size (the engine computes no padding).
    assert trt.runs == [4, 4, 3, 1, 4, 4, 1]


@pytest.mark.parametrize("crops", [np.zeros((2, S, S, 3), np.float32), np.zeros((2, S + 1, S + 1, 3), np.uint8),
                                   np.zeros((S, S, 3), np.uint8)], ids=["float", "size", "unbatched"])
def test_crops_of_another_shape_or_type_are_refused(make: Callable[..., Any], crops: np.ndarray) -> None:
    with pytest.raises(ValueError, match=rf"crops must be \(B, {S}, {S}, 3\) uint8"):
        make().infer(crops)


def test_the_engine_is_built_once_then_loaded_from_the_cache(trt: FakeTRT, make: Callable) -> None:
    first = make(precision="fp16")
    assert len(trt.builds) == 1 and trt.builds[0]["logger"] is trt.logger  # one logger: the build's errors are heard
    assert {k: trt.builds[0][k] for k in ("precision", "max_batch", "input_size")} == dict(
        precision="fp16", max_batch=MAX_BATCH, input_size=S)
    assert trt.builds[0]["calibration_cache"] == first.cache.path_for(first.key).with_suffix(".calib")
    assert first.device == "cuda:NVIDIA GeForce RTX 4090" and first.key.compute_capability == "8.9"
    first.close()
    _assert_outputs(make(precision="fp16").infer(_crops(2)), _crops(2))
    assert len(trt.builds) == 1 and trt.deserialized == [b"plan#1", b"plan#1"]


def test_a_cached_engine_this_tensorrt_cannot_load_is_rebuilt_once(
        trt: FakeTRT, make: Callable, caplog: pytest.LogCaptureFixture) -> None:
    make().close()
    trt.refuse = lambda plan: plan == b"plan#1"  # e.g. TensorRT was upgraded since the engine was built
    with caplog.at_level(logging.WARNING, logger=trtb.__name__):
        backend = make()
    assert "rebuilding" in caplog.text
    assert trt.deserialized == [b"plan#1", b"plan#1", b"plan#2"] and len(trt.builds) == 2
    assert backend.cache.get(backend.key) == b"plan#2"  # the unreadable plan is gone from the cache
    _assert_outputs(backend.infer(_crops(5)), _crops(5))


def test_an_engine_that_never_loads_fails_with_tensorrts_errors(trt: FakeTRT, make: Callable, tmp_path: Path) -> None:
    trt.refuse = lambda plan: True
    with pytest.raises(BackendUnavailableError, match="could not load.*Version tag does not match") as info:
        make()
    assert "\n" not in str(info.value)
    # A fresh build that will not load is not built again (a build takes minutes), nor kept for
    # every later start to refuse again.
    assert len(trt.builds) == 1 and not list((tmp_path / "engines").glob("*.engine"))


def test_a_cached_engine_refused_twice_is_built_once_more_and_not_kept(trt: FakeTRT, make: Callable) -> None:
    first = make()
    cache, key = first.cache, first.key
    first.close()
    trt.refuse = lambda plan: True
    with pytest.raises(BackendUnavailableError, match="could not load"):
        make()
    assert len(trt.builds) == 2 and cache.get(key) is None


def test_an_old_error_is_not_given_as_the_cause_of_a_new_one(trt: FakeTRT, make: Callable) -> None:
    make().close()
    trt.refuse = lambda plan: plan == b"plan#1"       # a start that refused the cached engine and rebuilt
    backend = make()
    trt.execute_error = "IExecutionContext::enqueueV3: Error Code 1: Cuda Runtime (illegal memory access)"
    with pytest.raises(RuntimeError, match="illegal memory access") as info:
        backend.infer(_crops(2))
    assert "Version tag" not in str(info.value)


NAMES = "expected input 'image' and outputs probs_2d, offsets_3d"


@pytest.mark.parametrize("knob, value, error, match", [
    ("io", [("input", IOMode.INPUT, DType.UINT8), *_io()[1:]], ModelFileError, NAMES),
    ("io", _io()[:2], ModelFileError, NAMES),
    ("io", [*_io(), ("mask", IOMode.INPUT, DType.UINT8)], ModelFileError, NAMES),
    ("io", [*_io()[:2], ("heatmaps", IOMode.OUTPUT, DType.FLOAT)], ModelFileError, NAMES),
    ("io", _io(output_dtype=DType.FP8), BackendUnavailableError, "data type"),
    ("profile_max", MAX_BATCH - 1, BackendUnavailableError, rf"rejects input shape \({MAX_BATCH}, {S}, {S}, 3\)"),
], ids=["input-renamed", "output-missing", "extra-input", "output-renamed", "fp8-outputs", "small-profile"])
def test_an_engine_posecast_cannot_use_is_refused(trt: FakeTRT, make: Callable, knob: str, value: Any,
                                                   error: type[Exception], match: str) -> None:
    setattr(trt, knob, value)
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize("knob, value, match", [
    ("refused_batches", {3}, rf"TensorRT engine rejects input shape \(3, {S}, {S}, 3\)"),
    ("execute_error", "IExecutionContext::enqueueV3: Error Code 1: Cuda Runtime (illegal memory access)",
     r"TensorRT inference failed: .*illegal memory access"),
], ids=["set_input_shape", "execute_async_v3"])
def test_a_context_call_returning_false_raises_a_clear_error(trt: FakeTRT, make: Callable, knob: str,
                                                            value: Any, match: str) -> None:
    backend = make()
    setattr(trt, knob, value)
    with pytest.raises(RuntimeError, match=match):
        backend.infer(_crops(7))  # chunks of 4 and 3
    # The input's copy was queued on the side stream: it is done before the buffers can be reused.
    assert all(not stream.pending for stream in trt.gpu.streams.values())
    setattr(trt, knob, type(value)())  # nothing of the failed call may spoil the next one
    _assert_outputs(backend.infer(_crops(5, seed=1)), _crops(5, seed=1))


def test_close_releases_context_engine_runtime_in_order_and_only_once(trt: FakeTRT, make: Callable) -> None:
    backend = make()
    backend.infer(_crops(5))
    assert trt.released == [] and trt.gpu.live() == 1 + len(OUTPUT_NAMES)
    backend.close()
    assert trt.released == ["context", "engine", "runtime"] and trt.gpu.live() == 0
    backend.close()
    assert trt.released == ["context", "engine", "runtime"]
    with pytest.raises(RuntimeError, match="closed"):
        backend.infer(_crops(1))
