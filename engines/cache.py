"""Where Posecast keeps what it builds: exported models, TensorRT engines, the demo clip."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(sub: str = "") -> Path:
    """`$POSECAST_CACHE`, else `~/.cache/posecast` (created on demand)."""
    root = Path(os.environ.get("POSECAST_CACHE") or Path.home() / ".cache" / "posecast")
    path = root / sub if sub else root
    path.mkdir(parents=True, exist_ok=True)
    return path
