"""TensorRT backend: engine cache, availability checks, ONNX op support, and (GPU only) accuracy."""

from __future__ import annotations

import ctypes
import dataclasses
import json
import re
import sys
import threading
import time
import types
import warnings
from pathlib import Path

import numpy as np
import pytest

from engines.backends.base import Backend, NetOutputs
from engines.backends.tensorrt_backend import TensorRTBackend, check_against_reference
from engines.backends.tensorrt_build import MAX_ONNX_OPSET, build_engine, default_opset, unsupported_ops
from engines.backends.tensorrt_cache import EngineCache, EngineKey
from engines.backends.tensorrt_import import tensorrt_available
from engines.errors import BackendUnavailableError, ConfigError

TRT_OK, TRT_REASON = tensorrt_available()

S, G, J, R = 64, 8, 17, 2


def make_key(**changes) -> EngineKey:
    base = dict(
        onnx_sha256="ab" * 32,
        gpu_name="NVIDIA GeForce RTX 4090",
        compute_capability="8.9",
        trt_version="10.3.0",
        precision="fp16",
        max_batch=32,
    )
    base.update(changes)
    return EngineKey(**base)


class CountingBuilder:
    def __init__(self, payload: bytes = b"serialized-engine", delay: float = 0.0) -> None:
        self.calls = 0
        self.payload = payload
        self.delay = delay

    def __call__(self) -> bytes:
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        return self.payload + b"#%d" % self.calls


# --------------------------------------------------------------------------------------------
# EngineCache / EngineKey


def test_cache_builds_once_then_hits(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path / "engines")
    build = CountingBuilder()
    key = make_key()
    first = cache.get_or_build(key, build)
    assert build.calls == 1 and first == b"serialized-engine#1"
    second = cache.get_or_build(key, build)
    assert build.calls == 1 and second == first
    # A fresh cache object (another process, later) reads the same file.
    assert EngineCache(tmp_path / "engines").get_or_build(key, build) == first
    assert build.calls == 1


@pytest.mark.parametrize(
    "change",
    [
        {"precision": "fp32"},
        {"precision": "int8", "calibration_sha256": "cd" * 32},
        {"gpu_name": "NVIDIA H100 80GB HBM3"},
        {"compute_capability": "9.0"},
        {"trt_version": "10.4.0"},
        {"onnx_sha256": "ef" * 32},
        {"max_batch": 16},
    ],
)
def test_cache_other_key_builds_again(tmp_path: Path, change: dict) -> None:
    cache = EngineCache(tmp_path)
    build = CountingBuilder()
    cache.get_or_build(make_key(), build)
    other = make_key(**change)
    assert other.filename() != make_key().filename()
    assert cache.get_or_build(other, build) == b"serialized-engine#2"
    assert build.calls == 2
    assert cache.get_or_build(make_key(), build) == b"serialized-engine#1"  # the first one is still there
    assert build.calls == 2


def test_a_build_is_announced_at_the_default_log_level(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A build takes minutes: a run, which shows warnings only, must say why it seems to stall."""
    cache, key = EngineCache(tmp_path), make_key()
    with caplog.at_level("WARNING", logger="engines.backends.tensorrt_cache"):
        cache.get_or_build(key, CountingBuilder())
    assert f"building TensorRT engine {key.filename()}" in caplog.text and "takes minutes" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="engines.backends.tensorrt_cache"):
        cache.get_or_build(key, CountingBuilder())     # a cache hit says nothing
    assert caplog.text == ""


def test_cache_rebuilds_truncated_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = EngineCache(tmp_path)
    build = CountingBuilder()
    key = make_key()
    cache.get_or_build(key, build)
    cache.path_for(key).write_bytes(b"")  # truncated to 0 bytes
    with caplog.at_level("WARNING"):
        assert cache.get_or_build(key, build) == b"serialized-engine#2"
    assert build.calls == 2
    assert "corrupt" in caplog.text
    assert cache.get_or_build(key, build) == b"serialized-engine#2"
    assert build.calls == 2


def test_cache_rebuilds_damaged_file(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    build = CountingBuilder(payload=b"x" * 1000)
    key = make_key()
    cache.get_or_build(key, build)
    path = cache.path_for(key)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])  # truncated half-way: checksum no longer matches
    assert cache.get_or_build(key, build).endswith(b"#2")
    raw = bytearray(path.read_bytes())
    raw[-10] ^= 0xFF  # one flipped byte
    path.write_bytes(bytes(raw))
    assert cache.get_or_build(key, build).endswith(b"#3")
    assert build.calls == 3


def test_cache_write_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    key = make_key()
    cache.get_or_build(key, CountingBuilder())
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [key.filename(), key.filename() + ".lock"]
    assert not list(tmp_path.glob("*.tmp"))


def test_cache_failed_build_leaves_nothing(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)

    def failing() -> bytes:
        raise RuntimeError("builder exploded")

    with pytest.raises(RuntimeError, match="exploded"):
        cache.get_or_build(make_key(), failing)
    assert not cache.path_for(make_key()).exists()
    assert not list(tmp_path.glob("*.tmp"))
    with pytest.raises(RuntimeError, match="no data"):
        cache.get_or_build(make_key(), lambda: b"")
    assert not cache.path_for(make_key()).exists()


def test_cache_accepts_buffer_from_builder(tmp_path: Path) -> None:
    # TensorRT returns an IHostMemory (a buffer), not bytes.
    data = EngineCache(tmp_path).get_or_build(make_key(), lambda: memoryview(b"plan-bytes"))
    assert data == b"plan-bytes"


def test_cache_lock_serialises_concurrent_builds(tmp_path: Path) -> None:
    build = CountingBuilder(delay=0.3)
    key = make_key()
    results: list[bytes] = []

    def worker() -> None:
        results.append(EngineCache(tmp_path).get_or_build(key, build))

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert build.calls == 1
    assert results == [b"serialized-engine#1"] * 3


def test_key_filename_stable_and_safe() -> None:
    key = make_key(gpu_name="NVIDIA GeForce RTX 4090 / Laptop GPU", trt_version="10.3.0.26")
    again = make_key(gpu_name="NVIDIA GeForce RTX 4090 / Laptop GPU", trt_version="10.3.0.26")
    assert key.filename() == again.filename()
    name = key.filename()
    assert re.fullmatch(r"[a-z0-9._-]+\.engine", name), name
    assert "/" not in name and " " not in name and len(name) < 160
    assert "fp16" in name and "sm89" in name and "b32" in name
    # Pinned value: the name must not change between runs or Python versions.
    assert make_key().filename() == make_key().filename()
    assert make_key().digest() == EngineKey(**dataclasses.asdict(make_key())).digest()


def test_key_filename_distinct_across_every_field() -> None:
    base = make_key()
    changes = {
        "onnx_sha256": "00" * 32,
        "gpu_name": "NVIDIA A100-SXM4-40GB",
        "compute_capability": "8.0",
        "trt_version": "8.6.1",
        "precision": "int8",
        "max_batch": 8,
        "calibration_sha256": "11" * 32,
        "build": "recipe2-ws1073741824",
    }
    assert set(changes) == {f.name for f in dataclasses.fields(EngineKey)}
    names = {base.filename()}
    for field, value in changes.items():
        names.add(dataclasses.replace(base, **{field: value}).filename())
    assert len(names) == len(changes) + 1
    # Fields that slug to the same text still differ through the hash.
    assert make_key(gpu_name="A/B").filename() != make_key(gpu_name="A B").filename()


def test_key_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="precision"):
        make_key(precision="fp8")
    with pytest.raises(ValueError, match="max_batch"):
        make_key(max_batch=0)


# --------------------------------------------------------------------------------------------
# Availability without TensorRT / CUDA


@pytest.mark.skipif(TRT_OK, reason="TensorRT and CUDA are available here")
def test_tensorrt_unavailable_here() -> None:
    ok, reason = tensorrt_available()
    assert ok is False
    assert isinstance(reason, str) and reason and "\n" not in reason


def test_tensorrt_not_installed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` raise ImportError
    ok, reason = tensorrt_available()
    assert ok is False and "TensorRT is not installed" in reason
    with pytest.raises(BackendUnavailableError, match="TensorRT is not installed") as info:
        TensorRTBackend(tmp_path / "model.onnx", tmp_path / "cache")
    assert "\n" not in str(info.value)
    assert info.value.exit_code == 2


@pytest.mark.skipif(TRT_OK, reason="TensorRT and CUDA are available here")
def test_backend_unavailable_here(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailableError) as info:
        TensorRTBackend(tmp_path / "model.onnx", tmp_path / "cache")
    assert "TensorRT" in str(info.value)
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        assert "TensorRT is not installed" in str(info.value)


def test_tensorrt_11_is_refused_before_it_is_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """TensorRT 11 removed BuilderFlag.FP16 and INT8 and the calibrators: it would fail at the
    first build (fp16 is the default), so it is said unsupported, and auto skips it."""
    fake = types.ModuleType("tensorrt")
    fake.__version__ = "11.4.0.106"
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    ok, reason = tensorrt_available()
    assert ok is False and "TensorRT 11.4.0.106 is installed" in reason and "<11" in reason
    with pytest.raises(BackendUnavailableError, match="written for TensorRT 10"):
        TensorRTBackend(tmp_path / "model.onnx", tmp_path / "cache")


def test_tensorrt_8_is_refused_before_it_is_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """TensorRT 8.x parses ONNX up to opset 17, below the export's 18: on a GPU it would be said
    available, and auto would pick it, only to fail in the parser (or build a wrong engine)."""
    import torch

    fake = types.ModuleType("tensorrt")
    fake.__version__ = "8.6.1"
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    ok, reason = tensorrt_available()
    assert ok is False and "TensorRT 8.6.1 is installed" in reason and "written for TensorRT 10" in reason
    with pytest.raises(BackendUnavailableError, match="written for TensorRT 10"):
        TensorRTBackend(tmp_path / "model.onnx", tmp_path / "cache")


def test_the_tensorrt_extra_asks_for_tensorrt_10_and_no_pycuda() -> None:
    import tomllib

    extra = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())[
        "project"]["optional-dependencies"]["tensorrt"]
    assert extra == ["tensorrt>=10,<11"]


def test_tensorrt_without_cuda(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import torch

    fake = types.ModuleType("tensorrt")
    fake.__version__ = "10.0.0"
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ok, reason = tensorrt_available()
    assert ok is False and "CUDA" in reason
    with pytest.raises(BackendUnavailableError, match="CUDA"):
        TensorRTBackend(tmp_path / "model.onnx", tmp_path / "cache")


def test_build_engine_int8_needs_calibration(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="int8 needs calibration data"):
        build_engine(tmp_path / "m.onnx", "int8", 8, S, calibration=None, workspace_bytes=1 << 28)
    with pytest.raises(ConfigError, match="int8 needs calibration data"):
        build_engine(tmp_path / "m.onnx", "int8", 8, S, np.zeros((0, S, S, 3), np.uint8), 1 << 28)
    with pytest.raises(ConfigError, match="uint8"):
        build_engine(tmp_path / "m.onnx", "int8", 8, S, np.zeros((4, S, S, 3), np.float32), 1 << 28)
    with pytest.raises(ConfigError, match="precision"):
        build_engine(tmp_path / "m.onnx", "fp8", 8, S, None, 1 << 28)


# --------------------------------------------------------------------------------------------
# A small stand-in model with the real model's I/O


def _standin_module():
    import torch
    from torch import nn

    class StandIn(nn.Module):
        """(B, 64, 64, 3) uint8 BGR -> probs (B, 17, 8, 8) softmaxed, offsets (B, 2, 17, 3)."""

        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", torch.tensor([104.0, 117.0, 123.0]).view(1, 3, 1, 1))
            self.register_buffer("inv_std", 1.0 / torch.tensor([57.4, 57.1, 58.4]).view(1, 3, 1, 1))
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.Hardswish())
            self.s2 = nn.Sequential(nn.Conv2d(16, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.ReLU())
            self.s3 = nn.Sequential(nn.Conv2d(32, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.ReLU6())
            self.heat = nn.Conv2d(32, J, 1)
            self.fc = nn.Linear(32, R * J * 3)

        def forward(self, image):
            x = image.permute(0, 3, 1, 2).float()
            x = (x - self.mean) * self.inv_std
            x = self.s3(self.s2(self.stem(x)))  # (B, 32, 8, 8)
            logits = self.heat(x).flatten(2)  # (B, 17, 64)
            probs = torch.softmax(logits, dim=-1).reshape(-1, J, G, G)
            pooled = nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
            offsets = (0.3 * torch.tanh(self.fc(pooled))).reshape(-1, R, J, 3)
            return probs, offsets

    torch.manual_seed(0)
    model = StandIn().eval()
    with torch.no_grad():  # non-trivial batch-norm statistics
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model


def export_standin(path: Path) -> Path:
    import onnx
    import torch

    model = _standin_module()
    example = torch.zeros(2, S, S, 3, dtype=torch.uint8)
    kwargs = dict(
        input_names=["image"],
        output_names=["probs_2d", "offsets_3d"],
        dynamic_axes={"image": {0: "batch"}, "probs_2d": {0: "batch"}, "offsets_3d": {0: "batch"}},
        opset_version=17,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        try:
            torch.onnx.export(model, (example,), str(path), dynamo=False, **kwargs)
        except TypeError:  # a torch without the `dynamo` argument
            torch.onnx.export(model, (example,), str(path), **kwargs)
    proto = onnx.load(str(path))
    meta = {
        "input_size": S,
        "grid_size": G,
        "joint_names": [f"j{i}" for i in range(J)],
        "roots": ["j0", "j1"],
    }
    entry = proto.metadata_props.add()
    entry.key, entry.value = "posecast", json.dumps(meta)
    onnx.save(proto, str(path))
    return path


@pytest.fixture(scope="module")
def standin_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_standin(tmp_path_factory.mktemp("standin") / "standin.onnx")


def test_standin_export_uses_only_tensorrt_ops(standin_onnx: Path) -> None:
    import onnx

    model = onnx.load(str(standin_onnx))
    onnx.checker.check_model(model)
    assert default_opset(model) <= MAX_ONNX_OPSET
    assert unsupported_ops(model) == [], unsupported_ops(model)
    assert [i.name for i in model.graph.input] == ["image"]
    assert [o.name for o in model.graph.output] == ["probs_2d", "offsets_3d"]


def test_unsupported_ops_flags_unknown_and_foreign_ops() -> None:
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("NonZero", ["a"], ["b"]),
        helper.make_node("FusedConv", ["a"], ["c"], domain="com.microsoft"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("b", TensorProto.INT64, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    assert unsupported_ops(model) == ["NonZero", "com.microsoft::FusedConv"]
    assert default_opset(model) == 21 > MAX_ONNX_OPSET


# --------------------------------------------------------------------------------------------
# check_against_reference (with stand-in backends; no GPU needed)


class _FixedBackend(Backend):
    name = "fixed"

    def __init__(self, shift: float = 0.0) -> None:
        self.shift = shift

    def infer(self, crops: np.ndarray) -> NetOutputs:
        b = len(crops)
        probs = np.full((b, J, G, G), 1.0 / (G * G), np.float32) + self.shift
        offsets = np.zeros((b, R, J, 3), np.float32) + 2 * self.shift
        return NetOutputs(probs, offsets)


def test_check_against_reference_reports_max_diffs() -> None:
    crops = np.zeros((3, S, S, 3), np.uint8)
    same = check_against_reference(_FixedBackend(), _FixedBackend(), crops, 1e-3, 1e-3)
    assert same["ok"] and same["max_abs_diff_probs"] == 0.0 and same["batch"] == 3
    off = check_against_reference(_FixedBackend(0.01), _FixedBackend(), crops, 1e-3, 1e-3)
    assert not off["ok"]
    assert off["max_abs_diff_probs"] == pytest.approx(0.01, abs=1e-6)
    assert off["max_abs_diff_offsets"] == pytest.approx(0.02, abs=1e-6)


# --------------------------------------------------------------------------------------------
# GPU: a real engine against onnxruntime


class _OrtBackend(Backend):
    name = "onnxruntime"

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def infer(self, crops: np.ndarray) -> NetOutputs:
        probs, offsets = self.session.run(["probs_2d", "offsets_3d"], {"image": crops})
        return NetOutputs(probs, offsets)


# Tolerances: fp16 engines against fp32 onnxruntime; offsets in metres.
TOLERANCES = {"fp32": (1e-4, 1e-3), "fp16": (2e-3, 5e-3)}


@pytest.mark.skipif(not TRT_OK, reason=f"needs TensorRT and a CUDA GPU: {TRT_REASON}")
@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_engine_matches_onnxruntime(standin_onnx: Path, tmp_path: Path, precision: str) -> None:
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, size=(11, S, S, 3), dtype=np.uint8)  # 11 > max_batch: chunked
    cache_dir = tmp_path / "engines"
    backend = TensorRTBackend(standin_onnx, cache_dir, precision=precision, max_batch=4)
    try:
        assert backend.name == "tensorrt" and backend.device.startswith("cuda:")
        out = backend.infer(crops)
        assert out.probs_2d.shape == (11, J, G, G) and out.probs_2d.dtype == np.float32
        assert out.offsets_3d.shape == (11, R, J, 3) and out.offsets_3d.dtype == np.float32
        one = backend.infer(crops[:1])
        assert one.probs_2d.shape == (1, J, G, G)
        atol_p, atol_o = TOLERANCES[precision]
        report = check_against_reference(backend, _OrtBackend(standin_onnx), crops, atol_p, atol_o)
        assert report["ok"], report
    finally:
        backend.close()
    engines = list(cache_dir.glob("*.engine"))
    assert len(engines) == 1
    # A second backend loads the cached engine instead of building.
    mtime = engines[0].stat().st_mtime_ns
    again = TensorRTBackend(standin_onnx, cache_dir, precision=precision, max_batch=4)
    try:
        assert np.allclose(again.infer(crops[:3]).probs_2d, out.probs_2d[:3], atol=1e-6)
    finally:
        again.close()
    assert engines[0].stat().st_mtime_ns == mtime


# --------------------------------------------------------------------------------------------
# build_engine's use of the TensorRT API, against a recording fake (checks our side only)


def _fake_tensorrt(parse_ok: bool, errors: list[str] = ()) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.3.0"
    calls: dict = {"flags": set(), "profiles": []}
    trt.calls = calls

    class ILogger:
        class Severity:
            INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

        def __init__(self) -> None:
            pass

    class Error:
        def __init__(self, text: str) -> None:
            self.text = text

        def desc(self) -> str:
            return self.text

        def node_operator(self) -> str:
            return "Foo"

    class Tensor:
        name = "image"

    class Network:
        num_inputs = 1

        def get_input(self, i):
            return Tensor()

    class Parser:
        def __init__(self, network, logger) -> None:
            self.num_errors = 0 if parse_ok else len(errors)

        def parse_from_file(self, path: str) -> bool:
            calls["parsed"] = path
            return parse_ok

        def get_error(self, i):
            return Error(errors[i])

    class Profile:
        def set_shape(self, name, mn, opt, mx) -> None:
            calls["profiles"].append((name, mn, opt, mx))

    class Config:
        def set_memory_pool_limit(self, pool, size) -> None:
            calls["workspace"] = size

        def add_optimization_profile(self, profile) -> None:
            calls["n_profiles"] = calls.get("n_profiles", 0) + 1

        def set_flag(self, flag) -> None:
            calls["flags"].add(flag)

        def clear_flag(self, flag) -> None:
            calls["flags"].discard(flag)
            calls.setdefault("cleared", set()).add(flag)

        def set_calibration_profile(self, profile) -> None:
            calls["calibration_profile"] = calls["profiles"][-1]

    class Builder:
        platform_has_fast_fp16 = True

        def __init__(self, logger) -> None:
            pass

        def create_network(self, flags):
            calls["network_flags"] = flags
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            calibrator = getattr(config, "int8_calibrator", None)
            if calibrator is not None:
                # As TensorRT calibrates: a table from the cache, else batches read from the device
                # pointers the calibrator gives (here CPU memory), then the table written back.
                calls["cache_read"] = calibrator.read_calibration_cache()
                if calls["cache_read"] is None:
                    batch, calls["batches"] = calibrator.get_batch_size(), []
                    while (pointers := calibrator.get_batch(["image"])) is not None:
                        size = batch * S * S * 3
                        memory = (ctypes.c_uint8 * size).from_address(pointers[0])
                        calls["batches"].append(np.frombuffer(memory, np.uint8).reshape(batch, S, S, 3).copy())
                    calibrator.write_calibration_cache(memoryview(b"calibration table"))
            return memoryview(b"plan")

    class IInt8EntropyCalibrator2:
        def __init__(self) -> None:
            pass

    trt.ILogger = ILogger
    trt.Builder, trt.OnnxParser = Builder, Parser
    trt.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(EXPLICIT_BATCH=0)
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
    trt.BuilderFlag = types.SimpleNamespace(FP16="fp16", INT8="int8", TF32="tf32")
    return trt


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)

    def install(trt: types.ModuleType) -> types.ModuleType:
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        return trt

    return install


def test_build_engine_calls(fake_gpu, tmp_path: Path) -> None:
    onnx_path = tmp_path / "m.onnx"
    onnx_path.write_bytes(b"not really onnx")
    trt = fake_gpu(_fake_tensorrt(parse_ok=True))
    assert build_engine(onnx_path, "fp16", 32, S, None, 1 << 28) == b"plan"
    assert trt.calls["profiles"] == [("image", (1, S, S, 3), (16, S, S, 3), (32, S, S, 3))]
    assert trt.calls["flags"] == {"fp16"} and trt.calls["workspace"] == 1 << 28
    assert trt.calls["network_flags"] == 0  # TensorRT 10: no EXPLICIT_BATCH
    trt = fake_gpu(_fake_tensorrt(parse_ok=True))
    assert build_engine(onnx_path, "fp32", 1, S, None, 1 << 28) == b"plan"
    assert trt.calls["profiles"] == [("image", (1, S, S, 3), (1, S, S, 3), (1, S, S, 3))]
    assert trt.calls["flags"] == set() and trt.calls["cleared"] == {"tf32"}


def test_int8_calibrates_on_full_batches_and_keeps_the_table(fake_gpu, monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: Path) -> None:
    """The calibrator serves the calibration crops in order, in full batches only (the calibration
    profile fixes the batch), and its table is kept and used instead of calibrating again."""
    import torch

    # The calibrator's device buffer comes from the CPU; the fake TensorRT reads it by address.
    cpu_empty = torch.empty
    monkeypatch.setattr(torch, "empty", lambda *a, device=None, **kw: cpu_empty(*a, **kw))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    onnx_path, table = tmp_path / "m.onnx", tmp_path / "m.calib"
    onnx_path.write_bytes(b"not really onnx")
    crops = np.random.default_rng(0).integers(0, 256, (37, S, S, 3), dtype=np.uint8)
    trt = fake_gpu(_fake_tensorrt(parse_ok=True))
    assert build_engine(onnx_path, "int8", 32, S, crops, 1 << 28, calibration_cache=table) == b"plan"
    assert trt.calls["flags"] == {"fp16", "int8"}
    assert trt.calls["calibration_profile"] == ("image", (16, S, S, 3), (16, S, S, 3), (16, S, S, 3))
    assert [len(b) for b in trt.calls["batches"]] == [16, 16]               # the last 5 crops make no full batch
    assert np.array_equal(np.concatenate(trt.calls["batches"]), crops[:32])
    assert table.read_bytes() == b"calibration table"

    trt = fake_gpu(_fake_tensorrt(parse_ok=True))
    build_engine(onnx_path, "int8", 32, S, crops, 1 << 28, calibration_cache=table)
    assert trt.calls["cache_read"] == b"calibration table" and "batches" not in trt.calls
    table.write_bytes(b"")                                                   # an empty table is none
    trt = fake_gpu(_fake_tensorrt(parse_ok=True))
    build_engine(onnx_path, "int8", 4, S, crops[:6], 1 << 28, calibration_cache=table)
    assert [len(b) for b in trt.calls["batches"]] == [4]                     # batches no bigger than max_batch


def test_build_engine_reports_parser_errors_on_one_line(fake_gpu, tmp_path: Path) -> None:
    from engines.errors import ModelFileError

    onnx_path = tmp_path / "m.onnx"
    onnx_path.write_bytes(b"x")
    fake_gpu(_fake_tensorrt(parse_ok=False, errors=["Unsupported op\nFoo", "second problem"]))
    with pytest.raises(ModelFileError) as info:
        build_engine(onnx_path, "fp16", 8, S, None, 1 << 28)
    msg = str(info.value)
    assert "\n" not in msg and "Unsupported op Foo [Foo]" in msg and "second problem" in msg


def test_input_size_is_read_from_a_real_posecast_export(default_model) -> None:
    """The backend reads the crop size from what `export_onnx` really writes (review: a made-up
    metadata key in the stand-in once hid that real exports failed here)."""
    from engines.backends.tensorrt_build import read_input_size

    assert read_input_size(default_model.onnx_path) == default_model.info.config.input_size
