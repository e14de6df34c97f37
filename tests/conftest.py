"""Shared fixtures.

Nothing a test does may write to the user's `~/.cache/posecast`: a session-wide fixture points
`POSECAST_CACHE` at a temporary folder for the whole run, and `posecast_cache` gives a test a
fresh, empty cache of its own (with `monkeypatch.setenv`, undone after the test).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Safety net: every test runs with `POSECAST_CACHE` in a temporary folder."""
    path = tmp_path_factory.mktemp("posecast-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("POSECAST_CACHE", str(path))
        yield path


@pytest.fixture
def posecast_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty cache folder for this test only."""
    path = tmp_path / "posecast-cache"
    path.mkdir()
    monkeypatch.setenv("POSECAST_CACHE", str(path))
    return path


@pytest.fixture(scope="session")
def default_model(_session_cache: Path):
    """`resolve_model(None)`: the default (untrained) model, exported to ONNX once per run (~3 s)."""
    from engines.models import resolve_model

    return resolve_model(None)


@pytest.fixture(scope="session")
def small_model_config():
    """The default model config shrunk to a 64 px input so networks build and export quickly."""
    from engines.model_file import default_model_config

    cfg = dataclasses.replace(
        default_model_config(),
        input_size=64, grid_size=8, stem_width=8, widths=(8, 8, 16, 16), depths=(1, 1, 1, 1),
        expansion=2, head_width=8, fusion_fc_width=16, regressor_width=16,
    )
    cfg.check()
    return cfg
