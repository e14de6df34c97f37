"""Finding the person and following them with a region of interest.

There is no separate detector: the network itself searches. A frame with no region of interest
is searched by running the network on the whole frame, letterboxed into the crop; if the 2D
joints it finds are confident enough (`detect_min_score`), the crop is cut again around them and
the network runs a second time on that region, which gives the frame's result. A weaker
candidate (from `refine_min_score`) gets that second look too, and counts as a person only if
the crop around it reaches `detect_min_score`: a person small in the frame has unsure joints
there and sure ones in the crop (docs/results.md, "Rendered video"). The next frames reuse the
region from the last result (no back edge between processes: this happens inside the inference
stage), centred across the image on the torso joints (`roi_centre`): centred on the joints'
extent, a limb drawn out to someone beside would pull it between the two people.
When the mean confidence falls below `track_min_score`, the frame is searched again at once, so
a lost person costs one frame's extra passes, not a frame without a result.

A track can also hold on to the wrong thing: a bollard whose "joints" score just above
`track_min_score` is followed for ever, while a person walks by. So every `research_every` frames
a full-frame search (and its refined crop) runs beside the tracked crop on the same frame, and
its result replaces the track's when its score is higher by `switch_margin` (two extra passes
per `research_every` frames; the margin keeps the track from flipping between two people: 0.05
lets a search leave a tripod that 0.1 kept, docs/results.md, "The margin a search needs to take over").

Each result carries its track's number, the person id of the messages: a frame with nobody ends
a track, and with `new_track_iou` above 0 so does a search whose person's 2D box barely overlaps
the last frame's (`_number`). A periodic search that takes over from a track still found continues
it only where its person's box overlaps the last one's by `takeover_min_iou`: elsewhere it found
something else (on `vtest.avi` a person where the track sat on a tripod, at overlap 0), and the
filters must not smooth one into the other.

A new shot shares nothing with the frame before (`process`'s `cuts`): each image of a folder of
unrelated photos (`tracking.folder_images`), or a video's frame after a hard cut
(streamer/shot_cuts.py). It is searched afresh and its person starts a track. A region carried
from another photo frames the next one's person wrongly and still scores above `track_min_score`
often enough to cost (docs/results.md, "Image folders").

A search is one network call on several crops: the letterboxed frame and, with `search_tiles` n
above 1, n x n overlapping tiles in which a small person is larger. The crop with the highest
score is refined.

File sources can run in batches (`inference.batch_size`, 1 by default): every frame of a batch
starts from the region of the previous batch's last result, so the region lags by up to a batch.
`roi_margin` absorbs some of that motion, and a frame that loses the person is searched again
individually, but on slow footage the lag costs: docs/performance.md, "File batch size".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from engines.backends.base import NetOutputs
from engines.crop import CropTransform, box_around, points_bbox
from engines.grid import decode, window_cells
from streamer.config import TrackingConfig

SEARCH, REFINE, TRACK = "search", "refine", "track"


@dataclass
class FrameResult:
    found: bool
    score: float
    joints_2d: np.ndarray      # (J, 2) image pixels
    conf: np.ndarray           # (J,)
    offsets_3d: np.ndarray     # (R, J, 3)
    passes: int                # network runs spent on this frame (1 when tracking went well)
    track: int = -1            # which track the person belongs to (0, 1, ...); -1 with nobody found
    searched: bool = False     # the result came from a full-frame search, not from the tracked crop
    took_over: bool = False    # a periodic search's result that replaced the track's (`switch_margin`)


@dataclass
class _Pending:
    index: int
    image: np.ndarray
    crop: CropTransform
    mode: str
    passes: int = 0
    rival: bool = False        # a periodic search beside the tracked crop of the same frame
    proposal: float = 1.0      # a refined crop: the score of the search that proposed it


# A crop's decoded output: (item, points in the image, confidences, offsets, score).
_Decoded = tuple[_Pending, np.ndarray, np.ndarray, np.ndarray, float]


class PersonTracker:
    """Keeps the region of interest between calls; `process` handles a batch of frames."""

    def __init__(self, infer: Callable[[np.ndarray], NetOutputs], input_size: int, cfg: TrackingConfig,
                 window: int, max_batch: int, torso: tuple[int, ...] = ()) -> None:
        self.infer = infer
        self.size = input_size
        self.cfg = cfg
        # The joints the tracked region is centred on across the image (cfg.roi_centre "torso").
        self.centre_joints = torso if cfg.roi_centre == "torso" else ()
        self.window = window
        self.roi: tuple[float, float, float] | None = None       # cx, cy, side in image pixels
        self.buffer = np.zeros((max_batch, input_size, input_size, 3), dtype=np.uint8)
        self.network_runs = 0
        self.searches = 0
        self.switches = 0          # periodic searches that took over from the track
        self.since_search = 0      # frames since the last full-frame search
        self.track = -1            # the last track's number
        self.last_box: tuple[float, float, float, float] | None = None   # the last person's 2D box

    def process(self, images: list[np.ndarray], scales: list[float | np.ndarray] | None = None,
                cuts: list[bool] | None = None) -> list[FrameResult]:
        """One result per image, in order. `scales`: input-image pixels per given pixel, one for
        both axes or (2,) across and down; `cuts`: which images start a new shot."""
        scales = scales or [1.0] * len(images)
        cuts = cuts or [False] * len(images)
        results: list[FrameResult | None] = [None] * len(images)
        rivals: dict[int, FrameResult] = {}
        # A batch's frames start from the region of the batch before; after a cut inside the batch
        # that region is the old shot's, so every frame from the cut on is searched.
        first_cut = next((i for i, cut in enumerate(cuts) if cut), len(images))
        pending = [p for i, img in enumerate(images) for p in self._start(i, img, fresh=i >= first_cut)]
        if (pending and pending[-1].mode == TRACK and self.cfg.research_every
                and self.since_search >= self.cfg.research_every):
            # On the batch's last frame, whose result sets the region the next batch starts from.
            last = pending[-1]
            pending += self._search(last.index, last.image, last.passes, rival=True)
        while pending:
            outputs = self._run(pending)
            follow_up: list[_Pending] = []
            best_search: dict[tuple[int, bool], _Decoded] = {}
            finished: list[_Decoded] = []
            for item, (probs, offsets) in zip(pending, outputs):
                pts_crop, conf = decode(probs, self.size, window_cells(self.window, self.size, probs.shape[-1]))
                pts = item.crop.to_image(pts_crop)
                score = float(conf.mean())
                if item.mode == SEARCH:
                    # The crops of one search (the frame and its tiles) compete: keep the best.
                    key = (item.index, item.rival)
                    if key not in best_search or score > best_search[key][4]:
                        best_search[key] = (item, pts, conf, offsets, score)
                    continue
                finished.append((item, pts, conf, offsets, score))
            finished += best_search.values()
            for item, pts, conf, offsets, score in finished:
                item.passes += 1
                nxt = self._next_step(item, pts, conf, score)
                if nxt:
                    follow_up += nxt
                    continue
                found = score >= self._needed(item)
                # A network that emits NaN or inf (a broken model, fp16 overflow) has found nobody.
                found = found and bool(np.isfinite(pts).all() and np.isfinite(offsets).all())
                result = FrameResult(found, score, pts * scales[item.index], conf, offsets, item.passes,
                                     searched=item.mode != TRACK)
                if item.rival:
                    rivals[item.index] = result
                else:
                    results[item.index] = result
            pending = follow_up
        for index, rival in rivals.items():
            results[index] = self._better(results[index], rival)
        for result, cut in zip(results, cuts):
            self._number(result, new_shot=cut)      # type: ignore[arg-type]
        last = results[-1] if results else None
        if last is not None:
            if last.found:
                h, w = images[-1].shape[:2]
                box = box_around(last.joints_2d / scales[-1], last.conf, self.cfg.roi_margin, self.cfg.min_roi_px,
                                 centre_joints=self.centre_joints)
                self.roi = _bounded(box, w, h)
            else:
                self.roi = None
        return results  # type: ignore[return-value]

    def _number(self, result: FrameResult, new_shot: bool = False) -> None:
        """The result's track: the last one's, unless the frame before had nobody, the frame starts a
        new shot, a search gave this frame's person and their 2D box overlaps the last one's by less
        than `new_track_iou`, or a periodic search took over with a box that overlaps it by less than
        `takeover_min_iou` (the search found someone else). A tracked crop continues its track whatever its box does:
        the boxes of one person, squeezed where the frame cuts them off or flickering where they are
        small, jump more than identity does. Box overlap is all the tracker knows of identity: a
        person found again far from where they were lost starts a track, and one crossing another
        may not."""
        if not result.found or new_shot:
            self.last_box = None
        if not result.found:
            return
        box = points_bbox(result.joints_2d)
        if (self.last_box is None or (result.searched and _iou(box, self.last_box) < self.cfg.new_track_iou)
                or (result.took_over and _iou(box, self.last_box) < self.cfg.takeover_min_iou)):
            self.track += 1
        self.last_box = box
        result.track = self.track

    def _needed(self, item: _Pending) -> float:
        """The score at which this crop's result counts as a person."""
        if item.mode == TRACK or (item.mode == REFINE and item.proposal >= self.cfg.detect_min_score):
            return self.cfg.track_min_score
        # A search, or the crop around a weak search candidate: it has to convince on its own.
        return self.cfg.detect_min_score

    def _better(self, tracked: FrameResult | None, rival: FrameResult) -> FrameResult:
        """The frame's result: the track's, unless the periodic search found someone clearly better."""
        assert tracked is not None
        passes = tracked.passes + rival.passes
        if rival.found and (not tracked.found or rival.score > tracked.score + self.cfg.switch_margin):
            self.switches += 1
            return dataclasses.replace(rival, passes=passes, took_over=tracked.found)
        return dataclasses.replace(tracked, passes=passes)

    def _search(self, index: int, image: np.ndarray, passes: int = 0, rival: bool = False) -> list[_Pending]:
        """The crops of one full-frame search: the letterboxed frame, then its tiles."""
        self.searches += 1
        self.since_search = 0
        h, w = image.shape[:2]
        crops = [CropTransform.full_frame(w, h, self.size)] + CropTransform.tiles(w, h, self.cfg.search_tiles, self.size)
        return [_Pending(index, image, crop, SEARCH, passes, rival) for crop in crops]

    def _start(self, index: int, image: np.ndarray, fresh: bool = False) -> list[_Pending]:
        if self.roi is None or fresh:
            return self._search(index, image)
        self.since_search += 1
        cx, cy, side = self.roi
        return [_Pending(index, image, CropTransform.from_box(cx, cy, side, self.size), TRACK)]

    def _next_step(self, item: _Pending, pts: np.ndarray, conf: np.ndarray, score: float) -> list[_Pending]:
        """The crops to run next for this frame; none when its result is final."""
        if item.mode == SEARCH and score >= min(self.cfg.refine_min_score, self.cfg.detect_min_score):
            return [self._refined(item, pts, conf, score)]
        if item.mode == TRACK and score < self.cfg.track_min_score:
            return self._search(item.index, item.image, item.passes)
        return []

    def _refined(self, item: _Pending, pts: np.ndarray, conf: np.ndarray, score: float) -> _Pending:
        cx, cy, side = box_around(pts, conf, self.cfg.roi_margin, self.cfg.min_roi_px)
        return _Pending(item.index, item.image, CropTransform.from_box(cx, cy, side, self.size), REFINE, item.passes,
                        item.rival, score)

    def _run(self, items: list[_Pending]) -> list[tuple[np.ndarray, np.ndarray]]:
        out: list[tuple[np.ndarray, np.ndarray]] = []
        cap = len(self.buffer)
        for start in range(0, len(items), cap):
            chunk = items[start:start + cap]
            for k, item in enumerate(chunk):
                item.crop.cut(item.image, self.buffer[k])
            net: NetOutputs = self.infer(self.buffer[: len(chunk)])
            self.network_runs += 1
            out.extend(zip(net.probs_2d, net.offsets_3d))
        return out


def crops_per_call(batch_size: int, search_tiles: int) -> int:
    """How many crops one network call takes: a batch's frames, or one whole search (the
    letterboxed frame and its tiles), whichever is more, so that a search is one call."""
    return max(batch_size, 1 + (search_tiles * search_tiles if search_tiles > 1 else 0))


def _iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Intersection over union of two boxes (x0, y0, x1, y1); 0 where either has no area."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0.0) * max(h, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _bounded(box: tuple[float, float, float], width: int, height: int) -> tuple[float, float, float]:
    """The region of interest with its centre kept on the image and its side at most twice the frame's.

    An unsure network spreads its joints over the whole crop; the next region is then
    `roi_margin` times larger, every frame, until the coordinates overflow to inf (seen with the
    untrained model and --min-score 0 after ~350 frames). Bounded, it stays a sane crop.
    """
    cx, cy, side = box
    side = min(side, 2.0 * max(width, height))
    return float(np.clip(cx, 0.0, width)), float(np.clip(cy, 0.0, height)), side
