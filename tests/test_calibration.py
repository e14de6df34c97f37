"""INT8 calibration crops: spread over the source, letterboxed to the network's input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engines.errors import InputError
from streamer.calibration import calibration_crops
from streamer.config import load_pipeline_config


def test_crops_spread_over_a_video(clip40: Path) -> None:
    crops = calibration_crops(str(clip40), load_pipeline_config().source, 64, max_crops=8)
    assert crops.shape == (8, 64, 64, 3) and crops.dtype == np.uint8
    # 160x120 letterboxed into a square: the top and bottom bands are black padding.
    assert crops[:, :6].max() == 0 and crops[:, 28:36].mean() > 20
    assert not np.array_equal(crops[0], crops[-1])      # taken across the clip, not one frame


def test_missing_calibration_source_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        calibration_crops(str(tmp_path / "missing.mp4"), load_pipeline_config().source, 64)


def test_calibration_in_config_and_overrides() -> None:
    assert load_pipeline_config().inference.calibration is None
    cfg = load_pipeline_config(overrides={"inference": {"calibration": "scenes/"}})
    assert cfg.inference.calibration == "scenes/"
