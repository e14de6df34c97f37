"""The one small interface every inference backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np


# The backends, by the names configs and --backend use ("auto": the fastest that works here), and
# the precisions a backend may run at (TensorRT all three, PyTorch on CUDA fp16).
BackendName = Literal["onnxruntime", "torch", "tensorrt"]
BACKENDS: tuple[str, ...] = get_args(BackendName)
Precision = Literal["fp32", "fp16", "int8"]
PRECISIONS: tuple[str, ...] = get_args(Precision)


@dataclass
class NetOutputs:
    """The network's raw outputs for a batch.

    probs_2d:   (B, J, G, G) float32, a softmax over the grid cells for each joint.
    offsets_3d: (B, R, J, 3) float32 metres, joint positions relative to each of the R roots.
    """

    probs_2d: np.ndarray
    offsets_3d: np.ndarray


class Backend(ABC):
    """Runs the network on a batch of crops.

    Input: (B, S, S, 3) uint8, BGR, channels last (normalisation happens inside the network).
    """

    name: str = "?"
    device: str = "cpu"

    @abstractmethod
    def infer(self, crops: np.ndarray) -> NetOutputs:
        ...

    def close(self) -> None:
        """Free the backend's resources (sessions, GPU buffers)."""

    def describe(self) -> str:
        return f"{self.name} ({self.device})"
