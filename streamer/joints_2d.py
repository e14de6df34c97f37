"""Smoothing of a file's published 2D joints (`filter.joints_2d`).

The network finds each frame's 2D joints in that frame's crop alone, so they jitter from frame to
frame: on the held-out rendered clips by 6-8 px per frame² on whole people and by 66-79 on webcam
views, whose legs below the frame are guesses. Overlays and tools that read the 2D see it. A file's
3D joints already go through a fixed-lag Kalman smoother; its 2D joints now go through one too,
holding each frame as long, so each frame's 2D and 3D leave together.

- **In the person's size.** The smoother works in units of the person's size in the image, so one
  setting fits a person 100 px tall and one 1,000 px tall: the joints are divided by the RMS
  distance of the track's first frame's joints from their mean, and multiplied back after. A
  size from each frame would carry that frame's errors into the scale.
- **Outliers gated.** Some frames' joints are not noisy but wrong: left and right exchanged for a
  frame, a wrist drawn to the face. Smoothed as they are, they pull the frames around them off,
  and the smoother alone lost 0.4 points of PCK on whole people. So before the Kalman smoother,
  a joint further than `outlier_gate` sizes from its median over the 2 frames either side is
  trusted as little as a joint of the lowest confidence (`MIN_CONF`): the frames around it then
  carry it. Its median needs those 2 frames, which come out of the smoother's lag.

Live sources get their 2D joints as estimated: on the same clips the causal filters (One Euro, or
Kalman without the frames after) cut the jitter by half at most and cost accuracy
(docs/results.md, "Smoothed 2D joints").
"""

from __future__ import annotations

from collections import deque

import numpy as np

from streamer.filters import (MIN_CONF, CausalSmoother, FilterConfig, IdentityFilter, Joints2DFilterConfig,
                              KalmanSmoother, PoseSmoother, resolved_method)
from streamer.refiner import DelayedSmoother

GATE_FRAMES = 2        # the outlier gate's median reads this many frames either side
MIN_SIZE_PX = 1.0      # a degenerate first frame (every joint on one pixel) still gives a usable unit


def person_size(joints_2d: np.ndarray) -> float:
    """The RMS distance of the 2D joints (J, 2) from their mean, in pixels: the smoother's unit."""
    centred = joints_2d - joints_2d.mean(axis=0)
    return max(float(np.sqrt((centred * centred).sum(axis=1).mean())), MIN_SIZE_PX)


class Joints2DSmoother(DelayedSmoother):
    """One track's 2D joints (J, 2) in pixels: gated against outliers, then `KalmanSmoother` in
    units of the person's size, `lag` frames in all. The gate's frames ahead are the
    `DelayedSmoother`'s delay, so a jump in time ends the track as in the 3D joints' smoothers."""

    def __init__(self, cfg: Joints2DFilterConfig, num_joints: int, lag: int) -> None:
        if lag < 1:
            raise ValueError(f"a smoother needs a lag of at least one frame (got {lag})")
        self.gate = cfg.outlier_gate
        self.gate_frames = min(GATE_FRAMES, lag - 1) if self.gate > 0 else 0
        super().__init__(KalmanSmoother(cfg.kalman, (num_joints, 2), lag - self.gate_frames), self.gate_frames)
        # The track's recent frames in sizes: up to gate_frames already passed on, then the held ones.
        self._recent: deque[np.ndarray] = deque()
        self._size: float | None = None
        self.gated = 0                                # joints trusted as MIN_CONF so far

    @property
    def kalman(self) -> PoseSmoother:
        """The Kalman smoother behind the gate."""
        return self.inner

    def flush(self) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        while self._held:
            out += self._pass_oldest()
        out += self._scaled(self.inner.flush())
        self._recent.clear()
        self._size = self._t = None
        return out

    def _take(self, t: float, values: np.ndarray, conf: np.ndarray | None, joints_2d: np.ndarray | None) -> None:
        values = np.asarray(values, np.float64)
        if self._size is None:
            self._size = person_size(values)
        z = values / self._size
        self._recent.append(z)
        self._held.append((t, z, np.ones(len(z)) if conf is None else np.asarray(conf)))

    def _pass_oldest(self) -> list[np.ndarray]:
        t, z, conf = self._held.popleft()
        if self.gate_frames:
            # Every frame kept is in the window: up to gate_frames before this one and after it.
            median = np.median(np.stack(self._recent), axis=0)
            far = np.linalg.norm(z - median, axis=1) > self.gate
            if far.any():
                conf = np.where(far, MIN_CONF, conf)
                self.gated += int(far.sum())
        while len(self._recent) - len(self._held) > self.gate_frames:
            self._recent.popleft()
        return self._scaled(self.inner.push(t, z, conf))

    def _scaled(self, poses: list[np.ndarray]) -> list[np.ndarray]:
        for pose in poses:
            pose *= self._size                   # the smoother's outputs are new arrays
        return poses


def make_joints_2d_smoother(cfg: FilterConfig, num_joints: int, live: bool, lag: int, ahead: int) -> PoseSmoother:
    """The 2D joints' smoother, holding each frame as long as the 3D joints' (`ahead` frames for a
    refiner, then `lag` for the Kalman smoother): smoothing where a file's 3D joints are
    Kalman-smoothed with a lag and `joints_2d.smooth` is on, else each frame as estimated."""
    if cfg.joints_2d.smooth and not live and lag > 0 and resolved_method(cfg, live) == "kalman":
        smoother: PoseSmoother = Joints2DSmoother(cfg.joints_2d, num_joints, lag)
        return DelayedSmoother(smoother, ahead) if ahead else smoother
    as_estimated = CausalSmoother(IdentityFilter((num_joints, 2)))
    return DelayedSmoother(as_estimated, lag + ahead) if lag + ahead else as_estimated
