"""Hard cuts between shots in a video: where the picture changes at once.

An edited video (a broadcast, a compilation, a music video) jumps from one shot to another. The
tracker's region then carries into a picture where it frames someone else, or no one, and the
filters smooth one shot's person into the next one's, with the root's depth held to a walking
speed across a change of camera. A cut is found from a 32 x 32 thumbnail of each frame: the mean
absolute difference from the last frame's (grey levels, 0-255) above `min_diff` and above `ratio`
times the mean of the last `HISTORY` differences, once `WARM_UP` differences set that level. The
ratio keeps fast motion and camera pans, whose differences stay high from frame to frame, from
counting as cuts (on 96 rendered clips without cuts, 10,418 frames, none counted; of 9,120 joins
of two of them, 99.8% did: docs/results.md, "Shot cuts"). The tracker then searches that frame
afresh and starts a new track, which restarts the filters.
"""

from __future__ import annotations

from collections import deque

import cv2
import numpy as np

HISTORY = 8             # frames whose differences set the level a cut must stand out from
WARM_UP = 3             # differences needed before a cut can be told from the motion there is
THUMB = 32              # thumbnail side, pixels
THUMB_SOURCE_PX = 128   # the frame is subsampled to about this before the thumbnail is made


class ShotCutDetector:
    """`detector(frame) -> bool`: whether this frame starts a new shot. One per source."""

    def __init__(self, min_diff: float, ratio: float) -> None:
        self.min_diff = min_diff
        self.ratio = ratio
        self._last = np.zeros((THUMB, THUMB, 3), np.uint8)     # the last frame's thumbnail
        self._this = np.zeros((THUMB, THUMB, 3), np.uint8)
        self._diff = np.zeros((THUMB, THUMB, 3), np.uint8)
        self._small: np.ndarray | None = None                  # every step-th pixel of the frame
        self._recent: deque[float] = deque(maxlen=HISTORY)     # the differences since the last cut
        self._started = False
        self.cuts = 0

    def __call__(self, frame: np.ndarray) -> bool:
        # Every step-th pixel (about 128 px a side) into a buffer kept from frame to frame, then
        # INTER_AREA. INTER_NEAREST at a whole ratio takes exactly every step-th pixel, four times
        # faster than numpy's strided copy (and a strided view passed to OpenCV would be gathered
        # into a new array). A side that is no multiple of the step loses its last partial step.
        step = max(1, min(frame.shape[0], frame.shape[1]) // THUMB_SOURCE_PX)
        small = frame
        if step > 1:
            rows, cols = frame.shape[0] // step, frame.shape[1] // step
            if self._small is None or self._small.shape[:2] != (rows, cols):
                self._small = np.empty((rows, cols, 3), np.uint8)
            cv2.resize(frame[:rows * step, :cols * step], (cols, rows), dst=self._small,
                       interpolation=cv2.INTER_NEAREST)
            small = self._small
        this, last = self._this, self._last
        cv2.resize(small, (THUMB, THUMB), dst=this, interpolation=cv2.INTER_AREA)
        self._this, self._last = last, this         # this frame's thumbnail is the next one's last
        if not self._started:
            self._started = True
            return False
        cv2.absdiff(this, last, dst=self._diff)
        diff = float(self._diff.mean())
        if (len(self._recent) >= WARM_UP and diff > self.min_diff
                and diff > self.ratio * sum(self._recent) / len(self._recent)):
            self.cuts += 1
            self._recent.clear()              # the new shot's motion sets its own level
            return True
        self._recent.append(diff)
        return False

