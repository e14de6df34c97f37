"""INT8 calibration crops for TensorRT, from any source Posecast can read.

TensorRT's entropy calibrator needs inputs that look like what the engine will see. The crops are
the full frames letterboxed into the network's input, the same view as the person search, taken
evenly across the source. A trained model's tracked crops are tighter around the person. Their
activation ranges fall inside the full-frame ones, so these crops calibrate a range that covers
them.
"""

from __future__ import annotations

import numpy as np

from engines.crop import CropTransform
from engines.errors import InputError
from streamer.config import InferenceConfig, SourceConfig


def calibration_used(inference: InferenceConfig) -> bool:
    """Whether a calibration source would be read: only to build a TensorRT int8 engine, which
    needs an NVIDIA GPU."""
    from engines.backends import nvidia_gpu_present

    return (inference.precision == "int8" and inference.backend in ("tensorrt", "auto")
            and inference.device != "cpu" and nvidia_gpu_present())


def unread_note(spec: str) -> str:
    """What a run says of a calibration source it will not read."""
    return (f"note: the calibration source '{spec}' is not read: it is only for building a TensorRT int8 engine "
            f"(--precision int8) on an NVIDIA GPU")


def calibration_crops(spec: str, config: SourceConfig, size: int, max_crops: int = 256) -> np.ndarray:
    """Up to `max_crops` (N, size, size, 3) uint8 crops spread over the source `spec`."""
    # Here, not at the top: the infer stage asks `calibration_used` on every start, and reads
    # a source only for a TensorRT int8 build.
    from streamer.sources import open_source

    with open_source(spec, config) as src:
        total = src.info.frame_count
        step = max(1, (total or max_crops) // max_crops)
        crops: list[np.ndarray] = []
        for frame in src.frames():
            if frame.index % step:
                continue
            image = frame.upright()
            h, w = image.shape[:2]
            out = np.empty((size, size, 3), np.uint8)
            CropTransform.full_frame(w, h, size).cut(image, out)
            crops.append(out)
            if len(crops) >= max_crops:
                break
    if not crops:
        raise InputError(f"calibration source '{spec}' gave no frames (give a video or an image folder)")
    return np.stack(crops)
