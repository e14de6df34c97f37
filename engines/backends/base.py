"""The one small interface every inference backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


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
