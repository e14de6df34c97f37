"""Fake clips as `python -m train.synth.clip` writes them, shared by the tests of what reads them
(test_video_eval.py, test_refiner.py, test_cut_clips.py, test_scripts.py): one place that knows
the label keys `train.video_eval.load_clips` insists on, the joints' version among them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engines.skeleton import H36M17
from train.synth.body import JOINTS_VERSION

J = H36M17.num_joints


def write_clip_labels(folder: Path, k: int = 0, frames: int = 2, video: bytes | None = b"",
                      **labels: object) -> None:
    """clip_{k:03d}.npz: `frames` frames of zero joints, all visible, of the current
    JOINTS_VERSION, any key replaced or added by `labels` (`joints_version=None` leaves it out,
    as labels made before it was recorded); and clip_{k:03d}.mp4 holding `video` (None: the test
    makes the video itself)."""
    arrays = {"joints_3d": np.zeros((frames, J, 3)), "joints_2d": np.zeros((frames, J, 2)),
              "visible": np.ones((frames, J), bool), "focal": np.float64(500.0), "motion": np.str_("m"),
              "fps": np.float64(25.0), "joints_version": np.int64(JOINTS_VERSION), **labels}
    np.savez(folder / f"clip_{k:03d}.npz", **{key: v for key, v in arrays.items() if v is not None})
    if video is not None:
        (folder / f"clip_{k:03d}.mp4").write_bytes(video)
