"""ONNX Runtime: the CPU backend everywhere, and CUDA where onnxruntime-gpu is installed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engines.backends.base import Backend, NetOutputs
from engines.errors import BackendUnavailableError, ModelFileError
from engines.model_file import INPUT_NAME, OUTPUT_NAMES, check_io_names


def cuda_provider_available() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, onnx_path: Path, device: str = "cpu", threads: int = 0) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendUnavailableError("onnxruntime is not installed (pip install onnxruntime)") from None
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # A model that fails to load becomes one ModelFileError line below; onnxruntime's own
        # multi-line log of the same failure would come first and bury it.
        opts.log_severity_level = 4
        if threads > 0:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        # Several stage processes share two cores: spinning threads would steal them from capture.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if device == "cuda":
            if not cuda_provider_available():
                raise BackendUnavailableError("onnxruntime has no CUDA provider here (install onnxruntime-gpu on a CUDA machine)")
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=providers)
        except Exception as exc:
            raise ModelFileError(f"onnxruntime cannot load {onnx_path} ({str(exc).splitlines()[0][:160]}); the file "
                                 f"is damaged or not a model: write it again with `posecast export`") from None
        if device == "cuda" and self.session.get_providers()[0] != "CUDAExecutionProvider":
            # onnxruntime falls back to the CPU silently when CUDA fails to load.
            raise BackendUnavailableError("onnxruntime's CUDA provider failed to load (check the CUDA and cuDNN "
                                          "libraries); use --device cpu")
        self.device = device
        check_io_names(str(onnx_path), [i.name for i in self.session.get_inputs()],
                       [o.name for o in self.session.get_outputs()])

    def infer(self, crops: np.ndarray) -> NetOutputs:
        probs, offsets = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: crops})
        return NetOutputs(probs, offsets)

    def close(self) -> None:
        self.session = None
