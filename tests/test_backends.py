"""Every inference backend present, checked against the PyTorch CPU reference on random crops.

The reference is `TorchBackend` on the CPU in float32, running the default model's checkpoint
(`resolve_model(None)`, exported to ONNX once per test run into a temporary `POSECAST_CACHE`).
Backends that need hardware or packages this machine lacks are skipped with the reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engines.backends import ENGINE_TOLERANCE, BackendChoice, available, choose, create_backend
from engines.backends.onnxruntime_backend import OnnxRuntimeBackend, cuda_provider_available
from engines.backends.tensorrt_import import tensorrt_available
from engines.backends.torch_backend import TorchBackend, cuda_available
from engines.errors import BackendUnavailableError, ConfigError
from engines.models import ModelArtifact

# Tolerances against the PyTorch CPU float32 reference (max absolute difference).
# ONNX Runtime CPU runs the same float32 graph; only op fusion and summation order differ
# (measured ~1e-10 on probabilities, ~1e-8 m on offsets with the untrained network; ~2e-7 and
# ~1e-7 m with the shipped trained one).
ORT_CPU_PROBS_ATOL = 1e-5
ORT_CPU_OFFSETS_ATOL = 1e-4          # metres
# Many probabilities are small (all ~1 / G^2 for an untrained network; the far tail of a trained
# one's peaked heatmaps, down to ~1e-7 or less), where the absolute tolerance alone checks little; the
# relative one checks every value (a softmax's relative error is its logits' absolute error:
# measured ~4e-6 on stage 28, shipped then).
ORT_CPU_PROBS_RTOL = 1e-3
# ONNX Runtime CUDA (float32, but cuDNN may use TF32 convolutions).
ORT_CUDA_PROBS_ATOL = 1e-4
ORT_CUDA_OFFSETS_ATOL = 1e-3         # metres
# fp16 on the GPU (TensorRT engine, PyTorch autocast): the bound an engine is checked against at
# its start (stage 28's offsets moved by up to 11 mm under fp16 autocast on the CPU, stage 31's by 3.3).
FP16_PROBS_ATOL, FP16_OFFSETS_ATOL = ENGINE_TOLERANCE["fp16"]     # offsets in metres

TRT_OK, TRT_REASON = tensorrt_available()
CUDA_OK = cuda_available()
ORT_CUDA_OK = cuda_provider_available()

BATCHES = (1, 4)


def random_crops(size: int, batch: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(batch, size, size, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def artifact(default_model: ModelArtifact) -> ModelArtifact:
    assert default_model.checkpoint_path is not None
    return default_model


@pytest.fixture(scope="module")
def reference(artifact: ModelArtifact) -> TorchBackend:
    backend = TorchBackend(artifact.checkpoint_path, device="cpu", precision="fp32")
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def crops_by_batch(artifact: ModelArtifact) -> dict[int, np.ndarray]:
    size = artifact.info.config.input_size
    return {b: random_crops(size, b, seed=100 + b) for b in BATCHES}


def compare(backend, reference: TorchBackend, crops: np.ndarray, probs_atol: float, offsets_atol: float,
            probs_rtol: float | None = None) -> None:
    got, ref = backend.infer(crops), reference.infer(crops)
    assert got.probs_2d.shape == ref.probs_2d.shape
    assert got.offsets_3d.shape == ref.offsets_3d.shape
    assert got.probs_2d.dtype == np.float32 and got.offsets_3d.dtype == np.float32
    assert len(got.probs_2d) == len(crops)
    np.testing.assert_allclose(got.probs_2d, ref.probs_2d, atol=probs_atol, rtol=0, err_msg="probs_2d")
    np.testing.assert_allclose(got.offsets_3d, ref.offsets_3d, atol=offsets_atol, rtol=0, err_msg="offsets_3d")
    if probs_rtol is not None:
        np.testing.assert_allclose(got.probs_2d, ref.probs_2d, rtol=probs_rtol, atol=0, err_msg="probs_2d (relative)")


def test_reference_outputs_are_sane(reference: TorchBackend, crops_by_batch, artifact: ModelArtifact) -> None:
    cfg = artifact.info.config
    out = reference.infer(crops_by_batch[4])
    assert out.probs_2d.shape == (4, 17, cfg.grid_size, cfg.grid_size)
    assert out.offsets_3d.shape == (4, len(cfg.roots), 17, 3)
    np.testing.assert_allclose(out.probs_2d.sum(axis=(-2, -1)), 1.0, atol=1e-5)
    # Different crops give different outputs (the network is not ignoring its input).
    assert not np.allclose(out.offsets_3d[0], out.offsets_3d[1])


@pytest.mark.parametrize("batch", BATCHES)
def test_onnxruntime_cpu_matches_torch(artifact: ModelArtifact, reference: TorchBackend, crops_by_batch,
                                       batch: int) -> None:
    backend = create_backend(artifact, "onnxruntime", "cpu", threads=2)
    assert isinstance(backend, OnnxRuntimeBackend) and backend.device == "cpu"
    try:
        compare(backend, reference, crops_by_batch[batch], ORT_CPU_PROBS_ATOL, ORT_CPU_OFFSETS_ATOL,
                probs_rtol=ORT_CPU_PROBS_RTOL)
    finally:
        backend.close()


def test_torch_backend_is_deterministic(artifact: ModelArtifact, reference: TorchBackend, crops_by_batch) -> None:
    """A second PyTorch CPU backend on the same checkpoint gives the reference's outputs, and a
    batch gives each item's single-crop outputs."""
    other = create_backend(artifact, "torch", "cpu")
    assert isinstance(other, TorchBackend)
    crops = crops_by_batch[4]
    compare(other, reference, crops, 0.0, 0.0)
    one = reference.infer(crops[2:3])
    batch = reference.infer(crops)
    np.testing.assert_allclose(batch.probs_2d[2:3], one.probs_2d, atol=ORT_CPU_PROBS_ATOL, rtol=0)
    np.testing.assert_allclose(batch.offsets_3d[2:3], one.offsets_3d, atol=ORT_CPU_OFFSETS_ATOL, rtol=0)


@pytest.mark.skipif(not ORT_CUDA_OK, reason="onnxruntime has no CUDAExecutionProvider here (onnxruntime-gpu on a CUDA machine)")
@pytest.mark.parametrize("batch", BATCHES)
def test_onnxruntime_cuda_matches_torch(artifact: ModelArtifact, reference: TorchBackend, crops_by_batch,
                                        batch: int) -> None:  # pragma: no cover - GPU only
    backend = create_backend(artifact, "onnxruntime", "cuda")
    try:
        compare(backend, reference, crops_by_batch[batch], ORT_CUDA_PROBS_ATOL, ORT_CUDA_OFFSETS_ATOL)
    finally:
        backend.close()


@pytest.mark.skipif(not TRT_OK, reason=TRT_REASON)
@pytest.mark.parametrize("batch", BATCHES)
def test_tensorrt_fp16_matches_torch(artifact: ModelArtifact, reference: TorchBackend, crops_by_batch,
                                     batch: int, posecast_cache) -> None:  # pragma: no cover - GPU only
    backend = create_backend(artifact, "tensorrt", precision="fp16", max_batch=8)
    try:
        compare(backend, reference, crops_by_batch[batch], FP16_PROBS_ATOL, FP16_OFFSETS_ATOL)
    finally:
        backend.close()


@pytest.mark.skipif(not CUDA_OK, reason="no CUDA device for PyTorch here (torch.cuda.is_available() is False)")
@pytest.mark.parametrize("batch", BATCHES)
def test_torch_cuda_fp16_matches_torch_cpu(artifact: ModelArtifact, reference: TorchBackend, crops_by_batch,
                                           batch: int) -> None:  # pragma: no cover - GPU only
    backend = create_backend(artifact, "torch", "cuda", precision="fp16")
    assert backend.half
    try:
        compare(backend, reference, crops_by_batch[batch], FP16_PROBS_ATOL, FP16_OFFSETS_ATOL)
    finally:
        backend.close()


# --- choosing and creating backends --------------------------------------------------------------

def test_available_lists_the_cpu_backends() -> None:
    found = available()
    assert "onnxruntime:cpu" in found and "torch:cpu" in found
    import onnxruntime
    import torch

    assert found["onnxruntime:cpu"] == onnxruntime.__version__
    assert found["torch:cpu"] == torch.__version__
    assert ("tensorrt:cuda" in found) == TRT_OK
    assert ("torch:cuda" in found) == CUDA_OK
    assert ("onnxruntime:cuda" in found) == ORT_CUDA_OK


@pytest.mark.skipif(TRT_OK or CUDA_OK or ORT_CUDA_OK, reason="this machine has a GPU backend, which auto prefers")
def test_auto_picks_onnxruntime_cpu_here() -> None:
    assert choose("auto", "auto", has_checkpoint=True) == BackendChoice("onnxruntime", "cpu")
    assert choose("auto", "auto", has_checkpoint=False) == BackendChoice("onnxruntime", "cpu")
    assert choose("auto", "cpu", has_checkpoint=True) == BackendChoice("onnxruntime", "cpu")
    assert choose("torch", "auto", has_checkpoint=True) == BackendChoice("torch", "cpu")
    assert choose("tensorrt", "auto", has_checkpoint=True) == BackendChoice("tensorrt", "cuda")


def test_tensorrt_on_the_cpu_is_refused_not_moved_to_the_gpu() -> None:
    # A contradiction the user should hear about: it used to run on the GPU without a word.
    with pytest.raises(ConfigError, match=r"runs only on an NVIDIA GPU: drop --device cpu"):
        choose("tensorrt", "cpu", has_checkpoint=True)
    assert choose("tensorrt", "cuda", has_checkpoint=True) == BackendChoice("tensorrt", "cuda")


@pytest.mark.parametrize(
    "present, device, has_checkpoint, expected",
    [
        (["tensorrt:cuda", "onnxruntime:cuda", "torch:cuda", "onnxruntime:cpu", "torch:cpu"], "auto", True,
         ("tensorrt", "cuda")),
        (["onnxruntime:cuda", "torch:cuda", "onnxruntime:cpu", "torch:cpu"], "auto", True, ("onnxruntime", "cuda")),
        (["torch:cuda", "onnxruntime:cpu", "torch:cpu"], "auto", True, ("torch", "cuda")),
        (["torch:cuda", "onnxruntime:cpu", "torch:cpu"], "auto", False, ("onnxruntime", "cpu")),   # ONNX-only model
        (["tensorrt:cuda", "onnxruntime:cpu", "torch:cpu"], "cpu", True, ("onnxruntime", "cpu")),
        (["torch:cpu"], "auto", True, ("torch", "cpu")),
    ],
)
def test_auto_preference_order(monkeypatch: pytest.MonkeyPatch, present, device, has_checkpoint, expected) -> None:
    import engines.backends as backends

    monkeypatch.setattr(backends, "available", lambda: {k: "x" for k in present})
    assert choose("auto", device, has_checkpoint) == BackendChoice(*expected)


def test_auto_with_nothing_usable_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    import engines.backends as backends

    monkeypatch.setattr(backends, "available", lambda: {"torch:cpu": "x"})
    with pytest.raises(BackendUnavailableError, match="no inference backend"):
        choose("auto", "auto", has_checkpoint=False)


def test_auto_creates_onnxruntime_cpu_here(artifact: ModelArtifact) -> None:
    if TRT_OK or CUDA_OK or ORT_CUDA_OK:
        pytest.skip("this machine has a GPU backend, which auto prefers")
    backend = create_backend(artifact)
    try:
        assert isinstance(backend, OnnxRuntimeBackend)
        assert backend.describe() == "onnxruntime (cpu)"
    finally:
        backend.close()


def test_torch_backend_for_an_onnx_only_model_raises(artifact: ModelArtifact) -> None:
    onnx_only = ModelArtifact(artifact.info, artifact.onnx_path, None, artifact.onnx_sha256)
    with pytest.raises(BackendUnavailableError) as info:
        create_backend(onnx_only, "torch", "cpu")
    message = str(info.value)
    assert "needs a .pt checkpoint" in message and "ONNX only" in message and "onnxruntime" in message
    assert "\n" not in message
    # auto never picks torch for it.
    assert choose("auto", "cpu", has_checkpoint=False).name == "onnxruntime"


def test_a_damaged_onnx_file_is_one_line_and_nothing_else(artifact: ModelArtifact, tmp_path,
                                                            capfd: pytest.CaptureFixture[str]) -> None:
    """A weight tensor cut short (a damaged download or copy): onnxruntime logs the failure
    itself on stderr, in colour, over several lines; only our one line may reach the user."""
    import onnx

    from engines.errors import ModelFileError

    model = onnx.load(str(artifact.onnx_path))
    tensor = next(t for t in model.graph.initializer if len(t.raw_data) > 8)
    tensor.raw_data = tensor.raw_data[: len(tensor.raw_data) // 2]
    damaged = tmp_path / "damaged.onnx"
    onnx.save(model, str(damaged))
    capfd.readouterr()
    with pytest.raises(ModelFileError) as info:
        OnnxRuntimeBackend(damaged)
    message = str(info.value)
    assert "\n" not in message and "damaged.onnx" in message and "posecast export" in message
    assert capfd.readouterr().err == ""


def test_an_onnx_file_with_other_tensor_names_is_refused_in_one_line(artifact: ModelArtifact, tmp_path) -> None:
    """Posecast's metadata over another network's tensors (an output renamed by a graph tool):
    refused when the session opens, not at the first frame, naming what the file has."""
    import onnx

    from engines.errors import ModelFileError

    model = onnx.load(str(artifact.onnx_path))
    renamed = {"offsets_3d": "heatmaps"}
    for node in model.graph.node:
        node.output[:] = [renamed.get(name, name) for name in node.output]
    for out in model.graph.output:
        out.name = renamed.get(out.name, out.name)
    path = tmp_path / "renamed.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelFileError) as info:
        OnnxRuntimeBackend(path)
    assert str(info.value) == (f"{path}: expected input 'image' and outputs probs_2d, offsets_3d, but it has inputs "
                               "image and outputs probs_2d, heatmaps: not a Posecast model (write one with "
                               "`posecast export`)")


@pytest.mark.skipif(TRT_OK, reason="TensorRT is available here")
def test_requesting_tensorrt_here_raises(artifact: ModelArtifact, posecast_cache) -> None:
    with pytest.raises(BackendUnavailableError) as info:
        create_backend(artifact, "tensorrt")
    message = str(info.value)
    assert message.startswith("TensorRT backend unavailable: ")
    assert TRT_REASON in message
    assert "\n" not in message


@pytest.mark.skipif(CUDA_OK, reason="PyTorch has CUDA here")
def test_requesting_torch_cuda_here_raises(artifact: ModelArtifact) -> None:
    with pytest.raises(BackendUnavailableError, match="PyTorch has no CUDA device here"):
        create_backend(artifact, "torch", "cuda")


@pytest.mark.skipif(ORT_CUDA_OK, reason="onnxruntime has CUDA here")
def test_requesting_onnxruntime_cuda_here_raises(artifact: ModelArtifact) -> None:
    with pytest.raises(BackendUnavailableError, match="no CUDA provider"):
        create_backend(artifact, "onnxruntime", "cuda")


def test_unknown_backend_name_raises(artifact: ModelArtifact) -> None:
    with pytest.raises(BackendUnavailableError, match="unknown backend 'tflite'"):
        create_backend(artifact, "tflite", "cpu")


def _fails(kind: str) -> Exception:
    import torch

    from engines.errors import BackendUnavailableError, ModelFileError

    return {"unavailable": BackendUnavailableError("pretend: engine build failed"),
            "parser": ModelFileError("TensorRT cannot parse model.onnx: pretend"),
            "cuda mismatch": TypeError("pybind11::init(): factory function returned nullptr"),
            "runtime": RuntimeError("pretend: execute_async_v3 failed"),
            "out of memory": torch.OutOfMemoryError("CUDA out of memory (pretend)")}[kind]


@pytest.mark.parametrize("kind", ["unavailable", "parser", "cuda mismatch", "runtime", "out of memory"])
def test_auto_falls_back_when_a_present_backend_fails_to_start(default_model, monkeypatch, kind: str) -> None:
    """auto promises the fastest backend that works: a TensorRT that is installed but cannot
    start, whatever the error, gives way to the next backend instead of failing the run."""
    import engines.backends as backends
    from engines.backends import tensorrt_backend

    real = backends.available
    monkeypatch.setattr(backends, "available", lambda: {**real(), "tensorrt:cuda": "10.0 (pretend)"})

    def broken(*args, **kwargs):
        raise _fails(kind)

    monkeypatch.setattr(tensorrt_backend, "TensorRTBackend", broken)
    backend = backends.create_backend(default_model, "auto", "auto", threads=1)
    try:
        assert backend.name == "onnxruntime" and backend.device == "cpu"
    finally:
        backend.close()


def test_tensorrt_asked_for_by_name_fails_with_one_line(default_model, monkeypatch) -> None:
    import engines.backends as backends
    from engines.backends import tensorrt_backend
    from engines.errors import BackendUnavailableError

    real = backends.available
    monkeypatch.setattr(backends, "available", lambda: {**real(), "tensorrt:cuda": "10.0 (pretend)"})

    def broken(*args, **kwargs):
        raise _fails("cuda mismatch")

    monkeypatch.setattr(tensorrt_backend, "TensorRTBackend", broken)
    with pytest.raises(BackendUnavailableError, match=r"TensorRT could not start: TypeError: pybind11"):
        backends.create_backend(default_model, "tensorrt", "cuda")


@pytest.mark.parametrize("fault", ["disagrees", "fails"])
def test_an_engine_that_fails_its_check_is_closed_and_refused(default_model, monkeypatch, tmp_path,
                                                              fault: str) -> None:
    """A built engine is checked against ONNX Runtime before it is trusted. One whose outputs
    differ, or whose inference fails, is closed (its GPU buffers and context) and refused, and
    auto moves on. A disagreeing engine stays cached: rebuilding it takes minutes and would most
    likely disagree again, while checking it takes a second."""
    import numpy as np

    import engines.backends as backends
    from engines.backends import tensorrt_backend
    from engines.backends.base import Backend, NetOutputs
    from engines.errors import BackendUnavailableError

    engines: list[Backend] = []

    class Cache:
        def path_for(self, key: str) -> Path:
            return tmp_path / f"{key}.engine"

        def invalidate(self, key: str) -> None:
            raise AssertionError("a disagreeing engine is kept")

    class Wrong(Backend):
        name, device = "tensorrt", "cuda"

        def __init__(self, *args, **kwargs) -> None:
            self.cache, self.key, self.closed = Cache(), "the-key", False
            engines.append(self)

        def infer(self, crops: np.ndarray) -> NetOutputs:
            if fault == "fails":
                raise RuntimeError("TensorRT inference failed: illegal memory access (pretend)")
            g, j, r = default_model.info.config.grid_size, 17, len(default_model.info.config.roots)
            return NetOutputs(np.full((len(crops), j, g, g), 1.0 / g ** 2, np.float32),
                              np.zeros((len(crops), r, j, 3), np.float32))

        def close(self) -> None:
            self.closed = True

    real = backends.available
    monkeypatch.setattr(backends, "available", lambda: {**real(), "tensorrt:cuda": "10.0 (pretend)"})
    monkeypatch.setattr(tensorrt_backend, "TensorRTBackend", Wrong)
    says = "disagrees with ONNX Runtime.*delete .*the-key.engine" if fault == "disagrees" else \
        "TensorRT could not start: RuntimeError: TensorRT inference failed"
    with pytest.raises(BackendUnavailableError, match=says):
        backends.create_backend(default_model, "tensorrt", "cuda")
    assert engines[-1].closed
    backend = backends.create_backend(default_model, "auto", "auto", threads=1)
    try:
        assert backend.name == "onnxruntime" and engines[-1].closed
    finally:
        backend.close()


def test_cuda_only_request_without_cuda_says_so(default_model) -> None:
    from engines.backends import create_backend
    from engines.errors import BackendUnavailableError

    with pytest.raises(BackendUnavailableError, match="no backend can run on CUDA here"):
        create_backend(default_model, "auto", "cuda")
