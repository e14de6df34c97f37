"""A physical bound on how fast root_3d's depth may change.

root_3d's depth comes from the person's size in the image (engines/rootpos.py). When the person
is mostly outside the frame, the network still draws a whole skeleton, squeezed into the part it
sees: 40 px where the person spans 200, and the depth solve then puts them five to thirty times
too far (docs/results.md, "Rendered video": 127-283 m seen on webcam views). Confidence does not
tell those frames apart; time does. A person's distance cannot change by a large factor from one
frame to the next, so each frame's depth is held within exp(+-max_rate * dt) of the last one it
gave, and the root moves along its own ray to that depth (its place in the image is kept).

The bound is on the relative change (1/s), because the depth's error is relative: at 2/s a person
3 m away may approach at 6 m/s, far beyond walking, while a 20 m jump is cut to 20 cm per frame.
The rendered clips' true motion stays under 0.46/s. A new track (after a frame with nobody, or a
gap in time over `reset_gap_s`) starts from its first depth, as the filters do, unless `start`
gives it another: a file's align stage, which holds frames back anyway, starts each track from
the median depth of its first frames, since a track often starts on a person entering the frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class DepthRateLimit:
    max_rate: float            # 1/s: the largest |d ln(depth) / dt| believed; 0: no bound
    reset_gap_s: float         # a longer gap between frames starts afresh
    _t: float | None = field(default=None, init=False)
    _depth: float = field(default=0.0, init=False)

    def __call__(self, t: float, root: np.ndarray) -> np.ndarray:
        """`root` (3,) camera-frame metres at time `t` (s), scaled along its ray where its depth moved too fast."""
        depth = float(root[2])
        if self.max_rate <= 0.0 or not (depth > 0.0 and math.isfinite(depth)):
            return root
        kept = depth
        if self._t is not None and 0.0 <= t - self._t <= self.reset_gap_s:
            step = math.exp(self.max_rate * (t - self._t))
            kept = min(max(depth, self._depth / step), self._depth * step)
        self._t, self._depth = t, kept
        return root if kept == depth else root * (kept / depth)

    def start(self, t: float, depth: float) -> None:
        """Starts a track at `depth` (m) at time `t`: its first frame is held to that depth."""
        if depth > 0.0 and math.isfinite(depth):
            self._t, self._depth = t, depth

    @property
    def started(self) -> bool:
        return self._t is not None

    def reset(self) -> None:
        self._t = None
