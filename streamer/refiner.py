"""A learned temporal refiner of 3D poses (`filter.refiner` for files, `filter.live_refiner` for
live sources: one that reads no frames ahead), trained by `train.temporal`.

Each frame's pose is estimated from its own crop, and the network hedges where the crop is
ambiguous: a limb hidden for a few frames, legs below a webcam's view, a person turning. The
frames around it often show what the frame alone does not. The refiner is a small MLP that reads a
window of the align stage's per-frame output (the pelvis-relative 3D joints in camera axes, the 2D
joints normalised for place and size, each joint's confidence): `past` frames before a frame,
the frame, and `future` frames after it, and adds a correction to the frame's 3D joints. It runs
before the temporal filter, so a file's frames wait `future` frames more (times its stride on
footage faster than it learned from: it then reads every n-th frame, `TemporalRefiner.stride`).

It was trained on the pipeline's output for one model, on clips rendered from training material
(`python -m train.temporal`); the file records that model's weights digest, and the align stage
uses the refiner only behind that model. Numpy only, a few matrix products a frame.
"""

from __future__ import annotations

import json
import math
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.errors import ModelFileError
from engines.files import replaced_when_done
from engines.model_file import file_sha256
from engines.skeleton import Skeleton
from streamer.filters import RESET_GAP_S, PoseSmoother

REFINER_FORMAT = "posecast-temporal-refiner"
REFINER_VERSION = 1
SLOWEST_RATE = 1 / 3       # relative to its training clips' rate: the slowest a refiner runs at
FASTEST_RATE = 1.25        # ... and the fastest at every frame (above it, every n-th: `stride`)
LIVE_INTERVALS = 31        # a live source's recent frame intervals, whose mean is its frame interval
MIN_INTERVALS = 3          # ... once it has seen this many
SHIPPED_REFINER = Path(__file__).resolve().parent.parent / "engines" / "weights" / "temporal.npz"
SHIPPED_LIVE_REFINER = SHIPPED_REFINER.with_name("temporal_live.npz")     # causal: past frames only


class RefinerFileError(ModelFileError):
    """A refiner file that cannot be used: missing, damaged, not a refiner, or for another model."""


def frame_features(joints_3d: np.ndarray, joints_2d: np.ndarray, conf: np.ndarray, origin: int) -> np.ndarray:
    """One frame's input to the refiner, (J * 6,): the 3D joints relative to `origin` (metres,
    camera axes), the 2D joints relative to `origin`'s divided by their RMS distance from it (so
    the crop's size and place drop out) and the confidences. The training and the pipeline both
    build it here."""
    j = len(conf)
    out = np.empty(j * 6, np.float32)
    rel3 = joints_3d - joints_3d[origin]
    rel2 = joints_2d - joints_2d[origin]
    radius = float(np.sqrt((rel2 * rel2).sum(axis=1).mean()))
    out[: j * 3] = rel3.reshape(-1)
    out[j * 3: j * 5] = (rel2 / max(radius, 1e-6)).reshape(-1)
    out[j * 5:] = conf
    return out


def mirrored_features(x: np.ndarray, skeleton: Skeleton) -> np.ndarray:
    """Features (..., J * 6) of the mirrored frame: x negated, left and right exchanged. For
    training (twice the data) and its tests."""
    j = skeleton.num_joints
    perm = np.asarray(skeleton.flip_permutation)
    rel3 = x[..., : j * 3].reshape(*x.shape[:-1], j, 3)[..., perm, :] * np.array([-1.0, 1.0, 1.0], np.float32)
    rel2 = x[..., j * 3: j * 5].reshape(*x.shape[:-1], j, 2)[..., perm, :] * np.array([-1.0, 1.0], np.float32)
    conf = x[..., j * 5:][..., perm]
    return np.concatenate([rel3.reshape(*x.shape[:-1], -1), rel2.reshape(*x.shape[:-1], -1), conf], axis=-1)


@dataclass
class TemporalRefiner:
    """MLPs: window (past + 1 + future, J * 6) -> correction (J, 3) of frame `past` in it, the
    members' mean times `scale`. Several members trained from other seeds, and a scale under one,
    make its large corrections rarer where it is unsure (docs/results.md, "A learned temporal
    refiner")."""

    past: int
    future: int
    num_joints: int
    members: list[list[tuple[np.ndarray, np.ndarray]]]   # per MLP: (weight (in, out), bias (out,)), ReLU between
    model_digest: str                              # SHA-256 of the model file it was trained behind
    info: dict
    fps: float = 25.0                              # the frame rate of the clips it learned from
    scale: float = 1.0                             # applied to the members' mean correction

    @property
    def window(self) -> int:
        return self.past + 1 + self.future

    def stride(self, fps: float | None) -> int | None:
        """Frames between the places of its window for poses at `fps` a second, None where they
        come too slowly (or at an unknown rate). Its window spans a fixed number of frames, and it
        is measured to help from a third of its training clips' rate (every third frame of them)
        to a quarter above it: 8.3 to 31.25 fps for 25 fps clips, stride 1. Faster, it reads every
        n-th frame, n the fewest that brings the rate into that span (50 or 60 fps: every second
        frame), so the window spans the time it learned from. docs/results.md, "Faster frames"."""
        if fps is None or not math.isfinite(fps) or fps < SLOWEST_RATE * self.fps:
            return None
        return max(1, math.ceil(fps / (FASTEST_RATE * self.fps)))

    def correction(self, window: np.ndarray) -> np.ndarray:
        """(window, J * 6) -> (J, 3), metres."""
        x = window.reshape(-1)
        total = np.zeros(self.num_joints * 3, np.float32)
        for layers in self.members:
            h = x
            for i, (w, b) in enumerate(layers):
                h = h @ w + b
                if i < len(layers) - 1:
                    np.maximum(h, 0.0, out=h)
            total += h
        total *= self.scale / len(self.members)
        return total.reshape(self.num_joints, 3)

    def save(self, path: Path) -> None:
        arrays = {}
        for k, layers in enumerate(self.members):
            arrays.update({f"m{k}w{i}": w.astype(np.float16) for i, (w, _) in enumerate(layers)})
            arrays.update({f"m{k}b{i}": b.astype(np.float32) for i, (_, b) in enumerate(layers)})
        meta = {"format": REFINER_FORMAT, "version": REFINER_VERSION, "past": self.past, "future": self.future,
                "fps": self.fps, "scale": self.scale, "num_joints": self.num_joints,
                "layers": [len(layers) for layers in self.members], "model_sha256": self.model_digest,
                **self.info}
        # A file object: np.savez would add ".npz" to a name. Renamed into place when whole.
        with replaced_when_done(Path(path)) as tmp, open(tmp, "wb") as f:
            np.savez(f, meta_json=np.array(json.dumps(meta)), **arrays)

    @classmethod
    def load(cls, path: Path) -> TemporalRefiner:
        path = Path(path)
        if not path.is_file():
            raise RefinerFileError(f"temporal refiner not found: {path} (a file written by python -m train.temporal)")
        try:
            with np.load(path, allow_pickle=False) as f:
                meta = json.loads(str(f["meta_json"]))
                if meta.get("format") != REFINER_FORMAT:
                    raise RefinerFileError(f"{path} is not a Posecast temporal refiner")
                members = [[(f[f"m{k}w{i}"].astype(np.float32), f[f"m{k}b{i}"].astype(np.float32))
                            for i in range(int(n))] for k, n in enumerate(meta["layers"])]
                past, future, joints = int(meta["past"]), int(meta["future"]), int(meta["num_joints"])
                digest = str(meta["model_sha256"])
                fps, scale = float(meta["fps"]), float(meta["scale"])
        except RefinerFileError:
            raise
        except Exception as exc:       # zip, key and JSON errors all mean a damaged file
            # numpy's own words (a pickle, a bad zip) would send a user the wrong way.
            raise RefinerFileError(f"cannot read the temporal refiner {path} ({type(exc).__name__}): it is damaged "
                                   "or not a refiner; write it again with python -m train.temporal") from None
        window = past + 1 + future
        if not members or any(not layers or layers[0][0].shape[0] != window * joints * 6
                              or layers[-1][0].shape[1] != joints * 3 for layers in members):
            raise RefinerFileError(f"{path}: its layers do not fit a window of {window} frames of {joints} joints")
        info = {k: v for k, v in meta.items() if k not in
                ("format", "version", "past", "future", "fps", "scale", "num_joints", "layers", "model_sha256")}
        return cls(past, future, joints, members, digest, info, fps, scale)


def shipped_refiners_unused(settings: tuple[str, str], resolved: tuple[TemporalRefiner | None, TemporalRefiner | None],
                            read: tuple[bool, bool]) -> tuple[bool, bool]:
    """For `filter.refiner` and `filter.live_refiner` (`settings`, in that order): whether the run
    reads it (`read`: a file's, a live source's), it is "auto" and it came to nothing (`resolved`)
    although a refiner is shipped: it fits only the shipped model, so another model's poses go
    unrefined, and a user comparing models should be told."""
    file_unused, live_unused = (used and setting == "auto" and refiner is None and shipped.is_file()
                                for setting, refiner, used, shipped in zip(settings, resolved, read,
                                                                           (SHIPPED_REFINER, SHIPPED_LIVE_REFINER)))
    return file_unused, live_unused


def resolve_refiner(setting: str, checkpoint: Path | None, digest: str | None = None,
                    live: bool = False) -> TemporalRefiner | None:
    """The refiner `filter.refiner` (files) or, with `live`, `filter.live_refiner` names for a run
    of the model saved in `checkpoint` (None for an ONNX file; `digest`: the checkpoint's SHA-256,
    where the caller has it already, as an ONNX file exported by Posecast records it). "auto" is
    the shipped one where it was trained behind this very model, else none: its corrections are
    learned for one network's errors. A file named outright must fit, and a live one must not look
    ahead."""
    if setting == "off":
        return None
    key = "filter.live_refiner" if live else "filter.refiner"
    if checkpoint is not None and digest is None:
        digest = file_sha256(checkpoint)
    if setting == "auto":
        shipped = SHIPPED_LIVE_REFINER if live else SHIPPED_REFINER
        if digest is None or not shipped.is_file():
            return None
        refiner = TemporalRefiner.load(shipped)
        return refiner if refiner.model_digest == digest else None
    if not Path(setting).is_file():
        raise RefinerFileError(f"temporal refiner not found: {setting} ({key} takes auto, off or a file written "
                               "by python -m train.temporal)")
    refiner = TemporalRefiner.load(Path(setting))
    if digest is None:
        raise RefinerFileError(f"the temporal refiner {setting} can be checked only against a .pt model or an ONNX "
                               f"file exported by posecast export; run one of those, or set {key}: off")
    if refiner.model_digest != digest:
        named = checkpoint.name if checkpoint is not None else "this model"
        raise RefinerFileError(f"the temporal refiner {setting} was trained for another model than {named}; "
                               f"train one for it (python -m train.temporal --model {checkpoint or 'CHECKPOINT.pt'}), "
                               f"or set {key}: off")
    if live and refiner.future:
        raise RefinerFileError(f"the temporal refiner {setting} waits for {refiner.future} frames ahead, which a live "
                               "source does not have; train a live one (python -m train.temporal --future 0), "
                               f"or set {key}: off")
    return refiner


class DelayedSmoother(PoseSmoother):
    """`inner`, each frame held `delay` frames first. On its own it is root_3d's smoother, kept in
    step with a pose smoother that has a refiner in front (same frames held, same jumps in time);
    `RefiningSmoother` builds on it. A jump in time ends the track, as it does in the filters
    (`RESET_GAP_S`)."""

    def __init__(self, inner: PoseSmoother, delay: int) -> None:
        self.inner = inner
        self.delay = delay
        self.lag = delay + inner.lag
        self._held: deque[tuple[float, np.ndarray, np.ndarray | None]] = deque()   # frames not yet passed on
        self._t: float | None = None

    def push(self, t: float, values: np.ndarray, conf: np.ndarray | None = None,
             joints_2d: np.ndarray | None = None) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        if self._t is not None and abs(t - self._t) > RESET_GAP_S:
            out = self.flush()
        if self._t is None or t > self._t:
            self._t = t
        self._take(t, np.asarray(values), conf, joints_2d)
        if len(self._held) > self.delay:
            out += self._pass_oldest()
        return out

    def flush(self) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        while self._held:
            out += self._pass_oldest()
        self._t = None
        return out + self.inner.flush()

    def _take(self, t: float, values: np.ndarray, conf: np.ndarray | None, joints_2d: np.ndarray | None) -> None:
        self._held.append((t, values, conf))

    def _pass_oldest(self) -> list[np.ndarray]:
        return self.inner.push(*self._held.popleft())


class RefiningSmoother(DelayedSmoother):
    """`refiner` in front of another smoother: each pose waits for the frames after it that its
    window reads, is corrected, and goes on into `inner`. With `stride` n (fast footage, see
    `TemporalRefiner.stride`) the window reads every n-th frame through the pose, so each frame is
    refined as it would be in the clip of every n-th frame through it. At a track's ends that
    clip's first or last frame fills the window, as in training."""

    def __init__(self, refiner: TemporalRefiner, inner: PoseSmoother, origin: int, stride: int = 1) -> None:
        if stride < 1:
            raise ValueError(f"stride must be at least 1, not {stride}")
        super().__init__(inner, refiner.future * stride)
        self.refiner = refiner
        self.origin = origin
        self.stride = stride
        self._longest = stride  # the longest stride read at yet: how far back frames are kept
        self.refined = 0        # frames corrected (the rest passed through: a live rate unknown or too slow)
        self._feats: deque[np.ndarray] = deque()      # features of the track's frames the windows still read
        self._window = np.empty((refiner.window, refiner.num_joints * 6), np.float32)

    def _take(self, t: float, values: np.ndarray, conf: np.ndarray | None, joints_2d: np.ndarray | None) -> None:
        if conf is None or joints_2d is None:
            raise ValueError("the temporal refiner needs each frame's confidences and 2D joints")
        self._feats.append(frame_features(values, joints_2d, conf, self.origin))
        super()._take(t, values, conf, joints_2d)

    def _pass_oldest(self) -> list[np.ndarray]:
        stride = self._stride_now()
        t, values, conf = self._held.popleft()
        here = len(self._feats) - len(self._held) - 1          # the frame passed on, in _feats
        if stride is not None:
            last = len(self._feats) - 1
            for i in range(self.refiner.window):
                k = here + (i - self.refiner.past) * stride
                if k < 0:                          # the track's first frame of this clip of every n-th
                    k = here % stride
                elif k > last:                     # ... and its last
                    k = last - (last - here) % stride
                self._window[i] = self._feats[k]
            values = values + self.refiner.correction(self._window).astype(values.dtype)
            self.refined += 1
            self._longest = max(self._longest, stride)    # a live source's rate may rise again
        # Keep what the next frame's window reaches back to.
        for _ in range(here + 1 - self.refiner.past * self._longest):
            self._feats.popleft()
        return self.inner.push(t, values, conf)

    def _stride_now(self) -> int | None:
        """The stride for the frame passed on now; None: it passes unchanged (a live source's rate
        may not suit)."""
        return self.stride

    def flush(self) -> list[np.ndarray]:
        out = super().flush()
        self._feats.clear()
        return out


class LiveRefiningSmoother(RefiningSmoother):
    """A causal `refiner` (no frames ahead) in front of a live source's filter: each pose is
    corrected from itself and the `past` poses before it, and goes on at once.

    Live frames come when they come: the capture drops stale ones, and a camera's real rate is
    not always the one it reports. The window holds the poses as they came, a dropped frame
    leaving no place in it: offline, with a tenth to two fifths of the frames dropped at random,
    that did as well as blending the poses either side into the dropped frame's place, and at a
    third of the frames as well as at all of them (docs/results.md, "The refiner live"). The
    refiner's stride follows the rate the poses come at (`TemporalRefiner.stride`), taken from
    the mean of the recent intervals: the time the window's poses span is what the stride must keep
    to what it learned, and a stream that delivers its frames in pairs a few ms apart has a median
    interval of a few ms. Too slow or not yet known, the poses pass through unchanged."""

    def __init__(self, refiner: TemporalRefiner, inner: PoseSmoother, origin: int) -> None:
        if refiner.future:
            raise ValueError("a live refiner must not look ahead (train it with --future 0)")
        super().__init__(refiner, inner, origin)
        self._intervals: deque[float] = deque(maxlen=LIVE_INTERVALS)   # kept across tracks: the source's

    def frame_interval(self) -> float | None:
        """The interval between poses (seconds), once a few frames have shown it."""
        n = len(self._intervals)
        return sum(self._intervals) / n if n >= MIN_INTERVALS else None

    def push(self, t: float, values: np.ndarray, conf: np.ndarray | None = None,
             joints_2d: np.ndarray | None = None) -> list[np.ndarray]:
        if self._t is not None and 0.0 < t - self._t <= RESET_GAP_S:
            self._intervals.append(t - self._t)
        return super().push(t, values, conf, joints_2d)

    def _stride_now(self) -> int | None:
        interval = self.frame_interval()
        return None if interval is None else self.refiner.stride(1.0 / interval)
