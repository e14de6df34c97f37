"""Where Posecast keeps what it builds: exported models, TensorRT engines, the demo clip."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from engines.errors import InputError


def cache_path(sub: str = "") -> Path:
    """`$POSECAST_CACHE`, else `~/.cache/posecast` (or `sub` in it), without making it."""
    root = Path(os.environ.get("POSECAST_CACHE") or Path.home() / ".cache" / "posecast")
    return root / sub if sub else root


def cache_dir(sub: str = "") -> Path:
    """`cache_path(sub)`, created on demand."""
    path = cache_path(sub)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise cache_error(path, err) from None
    return path


def cache_error(path: Path, err: OSError) -> InputError:
    """A cache that cannot be written (a read-only home, a full disk) in one line."""
    if err.errno == errno.ENOSPC:
        hint = "free some disk space, or set POSECAST_CACHE to a folder on another disk"
    else:
        hint = "set POSECAST_CACHE to a writable folder"
    return InputError(f"cannot write Posecast's cache at '{path}': {err.strerror or err} ({hint})")
