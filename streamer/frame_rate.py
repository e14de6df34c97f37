"""A video's frame rate from its frames' timestamps, where its container's figure is wrong.

Containers state a rate that FFmpeg does not check against the frames: a browser's recording
(MediaRecorder WebM) states none, and FFmpeg then guesses 1000 fps from its millisecond time base;
a recording that paused averages its gap into a rate far below the one its frames come at. What
the filters need, and what a subscriber expects in `meta.fps`, is the rate at which consecutive
frames come: the median gap between the first frames' timestamps says that, whatever jitter, gaps
or B-frame reordering there is.

The timestamps overrule the container only where it is wrong in a way they can tell: frames that
come faster than it says (a paused recording's average, a wrong header), or a stated rate no video
has (FFmpeg's guess from a fine time base). Frames that come slower at the start than the
container says are believed less: a screen recording sends frames only when the picture changes,
and a still start says nothing of the rest.

`FilePace` places a file's frames in time as a player does, from those timestamps: when `run`
feeds each frame, and where each frame sits in an overlay video.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MIN_GAPS = 8              # fewer gaps than this say too little to overrule the container
TOLERANCE = 0.10          # a variable-rate phone clip's median and mean rates agree within this
GUESSED_FPS = 240.0       # above this a stated rate is taken for FFmpeg's guess (1000 from a ms time base)
# A file played at its pace (`run FILE`, and its frames' place in an overlay video) whose times
# jump back, or ahead by more than this, plays on at its frame rate instead of waiting out the
# jump: joined MPEG-TS segments, a camera's timestamp reset. (ffplay's AV_NOSYNC_THRESHOLD; a
# recording's shorter pause is played as one.)
PACE_JUMP_S = 10.0
REORDER_PERIODS = 4       # a step back in the times of up to this many frame periods: frames out of order


@dataclass(frozen=True)
class FrameRate:
    fps: float | None     # the rate to use
    stated: float | None  # what the container says

    @property
    def corrected(self) -> bool:
        """The timestamps overruled the container."""
        return self.fps is not None and self.fps != self.stated


def rate_from_times(times: Sequence[float]) -> float | None:
    """Frames a second from presentation times in seconds (any order, repeats ignored), or None
    where fewer than MIN_GAPS gaps between distinct times are known."""
    t = np.unique(np.asarray([x for x in times if x is not None and np.isfinite(x)], np.float64))
    gaps = np.diff(t)
    if gaps.size < MIN_GAPS:
        return None
    # The median picks the usual gap; the mean of the gaps near it then undoes the rounding of
    # millisecond timestamps (33 and 34 ms gaps are 30 fps, not the median's 30.3).
    usual = gaps[np.abs(gaps / np.median(gaps) - 1.0) <= 0.5]
    return float(1.0 / usual.mean())


def choose_rate(stated: float | None, measured: float | None) -> FrameRate:
    """The container's rate, unless the timestamps show it wrong (see the module's docstring)."""
    if stated is not None and (not np.isfinite(stated) or stated <= 0):
        stated = None
    if measured is None or (stated is not None and abs(measured / stated - 1.0) <= TOLERANCE):
        return FrameRate(stated, stated)
    if stated is None or measured > stated or stated > GUESSED_FPS:
        return FrameRate(measured, stated)
    return FrameRate(stated, stated)


@dataclass
class FilePace:
    """When each frame of a file played at its pace is due (monotonic seconds): as far after the
    first as its media time is. After a jump in the times (`PACE_JUMP_S`) a frame comes one frame
    period after the frame before, and the pace counts on from there; a small step back (frames
    out of order, `REORDER_PERIODS`) comes with the frame before. A frame without a time comes one
    period after the one before."""

    period: float
    start: tuple[float, float] | None = None    # (due, media time) the pace counts from
    last: tuple[float, float] | None = None     # ... of the frame before

    def due(self, t_media: float | None, now: float) -> float:
        if self.last is None:
            t = 0.0 if t_media is None else t_media
            self.start = (now, t)
        else:
            t = self.last[1] + self.period if t_media is None else t_media
            step = t - self.last[1]
            if step > PACE_JUMP_S or step < -REORDER_PERIODS * self.period:
                self.start = (self.last[0] + self.period, t)
        assert self.start is not None
        due = self.start[0] + (t - self.start[1])
        if self.last is not None:
            due = max(due, self.last[0])
        self.last = (due, t)
        return due
