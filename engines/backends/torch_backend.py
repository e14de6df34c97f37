"""PyTorch: the reference implementation (CPU), and a GPU path with fp16 where CUDA exists."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engines.backends.base import Backend, NetOutputs
from engines.errors import BackendUnavailableError


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, checkpoint_path: Path | None, device: str = "cpu", precision: str = "fp32",
                 threads: int = 0) -> None:
        import torch

        from engines.model_file import load_checkpoint

        if checkpoint_path is None:
            raise BackendUnavailableError(
                "the PyTorch backend needs a .pt checkpoint; this model is ONNX only (use --backend onnxruntime)")
        if device == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailableError("PyTorch has no CUDA device here (use --device cpu)")
        if threads > 0:
            torch.set_num_threads(threads)
        net, _ = load_checkpoint(checkpoint_path)
        self.torch = torch
        self.device = device
        self.half = device == "cuda" and precision in ("fp16", "int8")
        self.net = net.to(device)
        if self.half:
            # The uint8 input and normalisation buffers stay fp32 so the first cast is exact;
            # the convolutions run in fp16 under autocast.
            self.autocast = torch.autocast("cuda", dtype=torch.float16)
        else:
            self.autocast = None

    def infer(self, crops: np.ndarray) -> NetOutputs:
        torch = self.torch
        x = torch.from_numpy(np.ascontiguousarray(crops)).to(self.device, non_blocking=True)
        with torch.inference_mode():
            if self.autocast is not None:
                with self.autocast:
                    probs, offsets = self.net(x)
            else:
                probs, offsets = self.net(x)
        return NetOutputs(probs.float().cpu().numpy(), offsets.float().cpu().numpy())
