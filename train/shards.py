"""Synthetic training data on disk: shards of JPEG crops with their 2D and 3D labels.

A shard directory holds `shard_00000.npz`, `shard_00001.npz`, ... and `manifest.json`:

    {"meta": {...}, "shard_size": 1000, "shards": [{"file": "shard_00000.npz", "count": 1000}, ...],
     "total": N}

Each shard is an uncompressed npz (JPEG bytes do not compress further):

- `jpeg` uint8 (sum of byte lengths,): the samples' JPEG files, concatenated
- `offsets` int64 (n + 1,): sample i is `jpeg[offsets[i]:offsets[i + 1]]`
- `joints_2d` float32 (n, 17, 2) crop pixels; `joints_3d` float32 (n, 17, 3) metres, camera frame;
  `visible` bool (n, 17); `motion` and `background` str (n,)

Shards and the manifest are written atomically (a temporary file, then `os.replace`), the manifest
after each shard, so a killed generator leaves a consistent directory behind.

Resuming: the caller generates shard k from its own seed f(base_seed, k). A writer opened on an
existing directory (with the same `meta` and `shard_size`) keeps the leading full shards, drops a
trailing partial one, and continues at shard index `completed_shards(out_dir)`: the caller restarts
its generator there, and the result is the same as an uninterrupted run.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import cv2
import numpy as np

from engines.errors import InputError
from engines.model_file import atomic_write_bytes

MANIFEST = "manifest.json"
NUM_JOINTS = 17


@dataclass
class SynthSample:
    jpeg: bytes                # 256x256 BGR image, JPEG-encoded (cv2.imencode)
    joints_2d: np.ndarray      # (17, 2) float32 crop pixels
    joints_3d: np.ndarray      # (17, 3) float32 metres, camera frame
    visible: np.ndarray        # (17,) bool
    motion: str                # motion sequence id
    background: str            # background file name


def encode_jpeg(image: np.ndarray, quality: int = 92) -> bytes:
    """BGR uint8 image -> JPEG bytes."""
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def decode_jpeg(data: bytes | np.ndarray) -> np.ndarray:
    """JPEG bytes -> BGR uint8 image (H, W, 3)."""
    arr = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray)) else data
    image = cv2.imdecode(arr, cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("JPEG decoding failed")
    return image


def shard_name(index: int) -> str:
    return f"shard_{index:05d}.npz"


def _normalise_meta(meta: dict | None) -> dict:
    """The meta as it reads back from JSON (tuples become lists, keys strings), for comparison."""
    return json.loads(json.dumps(meta if meta is not None else {}, sort_keys=True))


def read_manifest(out_dir: Path) -> dict | None:
    """The directory's manifest, or None where it has none."""
    path = Path(out_dir) / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{path} is not a readable shard manifest ({exc}); render the set again into a new "
                         f"folder") from None
    if not (isinstance(manifest, dict) and isinstance(manifest.get("shards"), list) and "meta" in manifest
            and all(isinstance(s, dict) and "file" in s and "count" in s for s in manifest["shards"])):
        raise InputError(f"{path} is not a shard manifest (it lacks 'meta' or a list of 'shards' with "
                         f"'file' and 'count'); render the set again into a new folder")
    return manifest


class ShardWriter:
    """Collects samples and writes them out `shard_size` at a time (see the module docstring).

    `shard_index` is the index of the shard being filled: after opening an existing directory it
    equals `completed_shards(out_dir)`, where the caller's generator must restart.
    """

    def __init__(self, out_dir: Path, shard_size: int = 1000, meta: dict | None = None,
                 count: int | None = None) -> None:
        if shard_size < 1:
            raise ValueError(f"shard_size must be at least 1 (got {shard_size})")
        self.out_dir = Path(out_dir)
        self.shard_size = int(shard_size)
        self.meta = _normalise_meta(meta)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._pending: list[SynthSample] = []
        self._closed = False
        self._shards: list[dict[str, Any]] = []

        existing = read_manifest(self.out_dir)
        if existing is not None:
            kept = _normalise_meta(existing.get("meta"))
            if kept != self.meta:
                changed = [f"{k} {kept.get(k)!r} there, {self.meta.get(k)!r} now" for k in sorted({*kept, *self.meta})
                           if kept.get(k) != self.meta.get(k)]
                raise ValueError(
                    f"{self.out_dir} holds shards made with different settings ({'; '.join(changed)}); "
                    f"use another directory or delete it")
            if int(existing.get("shard_size", -1)) != self.shard_size:
                raise ValueError(
                    f"{self.out_dir} was written with shard_size {existing.get('shard_size')}, "
                    f"not {self.shard_size}: resuming would change which samples each shard holds")
            keep = self._leading_full(existing["shards"], self.shard_size)
            keep += self._last_one_needed(existing["shards"], keep, count)
            for dropped in existing["shards"][keep:]:
                (self.out_dir / dropped["file"]).unlink(missing_ok=True)
            self._shards = list(existing["shards"][:keep])
            if keep != len(existing["shards"]):
                self._write_manifest()
        else:
            self._write_manifest()

    # --- resume -------------------------------------------------------------------------------

    def _last_one_needed(self, shards: list[dict], full: int, count: int | None) -> int:
        """1 where the shard after the `full` whole ones stays: with it the set holds `count`
        images or more (complete, or a smaller --count, which takes nothing away); else 0, and it
        is rendered again from its start."""
        if count is None or len(shards) != full + 1 or shards[full]["file"] != shard_name(full):
            return 0
        # Holding at least what the set lacks of `count`: the set is complete, or more than asked.
        return int(int(shards[full]["count"]) >= count - full * self.shard_size)

    @staticmethod
    def _leading_full(shards: list[dict], shard_size: int) -> int:
        n = 0
        for k, s in enumerate(shards):
            if s["file"] != shard_name(k) or int(s["count"]) != shard_size:
                break
            n += 1
        return n

    @staticmethod
    def completed_shards(out_dir: Path) -> int:
        """How many full shards `out_dir` holds (0 for a new directory): where to restart (a
        writer told the set's `count` keeps a last partial shard that completes it)."""
        manifest = read_manifest(Path(out_dir))
        if manifest is None:
            return 0
        return ShardWriter._leading_full(manifest["shards"], int(manifest["shard_size"]))

    @property
    def shard_index(self) -> int:
        return len(self._shards)

    @property
    def total(self) -> int:
        return sum(int(s["count"]) for s in self._shards) + len(self._pending)

    # --- writing ------------------------------------------------------------------------------

    def add(self, s: SynthSample) -> None:
        if self._closed:
            raise ValueError("ShardWriter is closed")
        j2, j3, vis = np.asarray(s.joints_2d), np.asarray(s.joints_3d), np.asarray(s.visible)
        if j2.shape != (NUM_JOINTS, 2) or j3.shape != (NUM_JOINTS, 3) or vis.shape != (NUM_JOINTS,):
            raise ValueError(f"bad label shapes: joints_2d {j2.shape}, joints_3d {j3.shape}, visible {vis.shape}")
        self._pending.append(s)
        if len(self._pending) >= self.shard_size:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        samples, self._pending = self._pending, []
        blobs = [np.frombuffer(s.jpeg, dtype=np.uint8) for s in samples]
        offsets = np.zeros(len(blobs) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(b) for b in blobs])
        arrays = {
            "jpeg": np.concatenate(blobs) if blobs else np.zeros(0, np.uint8),
            "offsets": offsets,
            "joints_2d": np.stack([np.asarray(s.joints_2d, np.float32) for s in samples]),
            "joints_3d": np.stack([np.asarray(s.joints_3d, np.float32) for s in samples]),
            "visible": np.stack([np.asarray(s.visible, bool) for s in samples]),
            "motion": np.array([str(s.motion) for s in samples], dtype=str),
            "background": np.array([str(s.background) for s in samples], dtype=str),
        }
        name = shard_name(self.shard_index)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(self.out_dir / name, buf.getvalue())
        self._shards.append({"file": name, "count": len(samples)})
        self._write_manifest()

    def _write_manifest(self) -> None:
        manifest = {
            "meta": self.meta,
            "shard_size": self.shard_size,
            "shards": self._shards,
            "total": sum(int(s["count"]) for s in self._shards),
        }
        data = json.dumps(manifest, indent=1).encode()
        atomic_write_bytes(self.out_dir / MANIFEST, data)

    def close(self) -> None:
        """Writes the partial last shard (if any) and the manifest."""
        if self._closed:
            return
        self._flush()
        self._closed = True

    def abort(self) -> None:
        """Drops the samples not yet written (the directory stays resumable)."""
        self._pending = []
        self._closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # After an error, a partial shard would only be dropped again on resume.
        if exc_type is None:
            self.close()
        else:
            self.abort()


class ShardSet:
    """All samples of one or more shard directories, by a flat index.

    Shards load lazily (one `np.load` each, on first access) and stay in memory: the label arrays
    and the shard's JPEG bytes, decoded per sample. Each DataLoader worker holds its own copy.
    """

    def __init__(self, dirs: list[Path] | Path) -> None:
        if isinstance(dirs, (str, Path)):
            dirs = [dirs]
        self.dirs = [Path(d) for d in dirs]
        self.metas: list[dict] = []
        self._files: list[Path] = []
        counts: list[int] = []
        for d in self.dirs:
            manifest = read_manifest(d)
            if manifest is None:
                raise FileNotFoundError(f"no {MANIFEST} in {d}: not a shard directory")
            self.metas.append(manifest["meta"])
            for s in manifest["shards"]:
                self._files.append(d / s["file"])
                counts.append(int(s["count"]))
        if sum(counts) == 0:
            # What a render stopped before its first shard leaves: a manifest of no shards. Every
            # reader (training, its validation, train.evaluate) would fail later, in a traceback.
            names = ", ".join(str(d) for d in self.dirs)
            its = "its manifest lists" if len(self.dirs) == 1 else "their manifests list"
            raise InputError(f"no images in {names}: {its} no shards (a render stopped before its first shard "
                             f"was done); run python -m train.synth.generate on it again (it resumes), or leave "
                             f"it out")
        self._starts = np.zeros(len(counts) + 1, dtype=np.int64)
        self._starts[1:] = np.cumsum(counts)
        self._loaded: dict[int, dict[str, np.ndarray]] = {}

    def __len__(self) -> int:
        return int(self._starts[-1])

    def _shard(self, k: int) -> dict[str, np.ndarray]:
        arrays = self._loaded.get(k)
        if arrays is None:
            path = self._files[k]
            fix = "render the set again into a new folder (python -m train.synth.generate)"
            try:
                with np.load(path, allow_pickle=False) as z:
                    arrays = {name: z[name] for name in z.files}
            except FileNotFoundError:
                raise InputError(f"shard {path} is missing, though its manifest lists it; {fix}") from None
            except (OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
                raise InputError(f"shard {path} is damaged ({exc}); {fix}") from None
            expected = int(self._starts[k + 1] - self._starts[k])
            if "offsets" not in arrays or len(arrays["offsets"]) != expected + 1:
                found = len(arrays["offsets"]) - 1 if "offsets" in arrays else "no"
                raise InputError(f"shard {path} holds {found} samples where its manifest says {expected}; {fix}")
            self._loaded[k] = arrays
        return arrays

    def locate(self, i: int) -> tuple[int, int]:
        """Flat index -> (shard number, index within the shard)."""
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"sample {i} out of range ({n} samples)")
        k = int(np.searchsorted(self._starts, i, side="right") - 1)
        return k, int(i - self._starts[k])

    def jpeg(self, i: int) -> bytes:
        k, j = self.locate(i)
        a = self._shard(k)
        return a["jpeg"][a["offsets"][j]:a["offsets"][j + 1]].tobytes()

    def labels(self, i: int) -> dict[str, Any]:
        """Sample i's `motion` and `background` names and `visible` flags, without decoding its image."""
        k, j = self.locate(i)
        a = self._shard(k)
        return {"motion": str(a["motion"][j]), "background": str(a["background"][j]), "visible": a["visible"][j].copy()}

    def get(self, i: int) -> dict[str, Any]:
        """Sample i: `image` (H, W, 3) uint8 BGR, `joints_2d`, `joints_3d`, `visible`, `motion`,
        `background` (arrays are copies: the caller may modify them)."""
        k, j = self.locate(i)
        a = self._shard(k)
        return {
            "image": decode_jpeg(a["jpeg"][a["offsets"][j]:a["offsets"][j + 1]]),
            "joints_2d": a["joints_2d"][j].copy(),
            "joints_3d": a["joints_3d"][j].copy(),
            "visible": a["visible"][j].copy(),
            "motion": str(a["motion"][j]),
            "background": str(a["background"][j]),
        }
