"""Whether TensorRT can run here (installed, a supported version, a CUDA device), and importing it only then.

`tensorrt` is imported only inside these functions, so Posecast imports and runs on machines without
TensorRT or a GPU.
"""

from __future__ import annotations

from typing import Any

from engines.errors import BackendUnavailableError

SUPPORTED_MAJOR = 10           # the one TensorRT major version this builder and runtime are written for


def one_line(text: object) -> str:
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
            f"with its driver and CUDA; {one_line(exc)})"
        )
    except Exception as exc:  # e.g. OSError: libnvinfer.so not found
        return False, f"TensorRT is installed but failed to load: {type(exc).__name__}: {one_line(exc)}"
    if trt_major(trt) != SUPPORTED_MAJOR:
        # TensorRT 11 removed the FP16 and INT8 builder flags and the calibrators this builder uses;
        # TensorRT 8.x parses ONNX only up to opset 17, and Posecast exports opset 18: it would fail in
        # the parser or build a wrong engine, where this says why at once.
        return False, (f"TensorRT {getattr(trt, '__version__', '?')} is installed; Posecast's engine builder is "
                       f"written for TensorRT 10 (pip install 'tensorrt>=10,<11')")
    try:
        import torch  # noqa: PLC0415

        cuda_ok = bool(torch.cuda.is_available())
    except Exception as exc:  # pragma: no cover - broken torch install
        return False, f"could not check for a CUDA device through torch: {one_line(exc)}"
    if not cuda_ok:
        return False, (
            "no usable CUDA device (torch.cuda.is_available() is False: no NVIDIA GPU or driver, "
            "or a CPU-only torch build)"
        )
    return True, str(getattr(trt, "__version__", "unknown"))


def import_trt() -> Any:
    ok, reason = tensorrt_available()
    if not ok:
        raise BackendUnavailableError(f"TensorRT backend unavailable: {reason}")
    import tensorrt as trt  # noqa: PLC0415

    return trt


def trt_major(trt: Any) -> int:
    try:
        return int(str(trt.__version__).split(".")[0])
    except (AttributeError, ValueError):
        return 0
