"""Hard cuts between shots (streamer/shot_cuts.py) and what the tracker does at one."""

from __future__ import annotations

import numpy as np
import pytest

from streamer.shot_cuts import HISTORY, THUMB_SOURCE_PX, WARM_UP, ShotCutDetector
from streamer.tracking import PersonTracker
from tests.test_tracking import CFG, SIZE, SquareNet, close, frame

DIFF, RATIO = 16.0, 4.0


def textured(seed: int, h: int = 240, w: int = 1200) -> np.ndarray:
    """A wide picture with structure at several scales (what a pan moves across)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(h // 40 + 1, w // 40 + 1, 3)).astype(np.float64)
    big = np.kron(coarse, np.ones((40, 40, 1)))[:h, :w]
    return np.clip(big + rng.normal(0, 20, size=(h, w, 3)), 0, 255).astype(np.uint8)


def run(frames: list[np.ndarray]) -> list[int]:
    detect = ShotCutDetector(DIFF, RATIO)
    return [k for k, f in enumerate(frames) if detect(f)]


def test_a_still_scene_and_a_moving_person_are_one_shot() -> None:
    assert run([frame((60.0 + 8 * k, 120.0)) for k in range(30)]) == []


@pytest.mark.parametrize("speed", [2, 12, 40])
def test_a_pan_is_one_shot(speed: int) -> None:
    scene = textured(0)
    assert run([scene[:, x:x + 320] for x in range(0, 880, speed)]) == []


def test_a_cut_is_the_frame_where_the_picture_changes_and_the_new_shot_settles() -> None:
    a, b = textured(1)[:, :320], textured(2)[:, :320]
    detect = ShotCutDetector(DIFF, RATIO)
    flags = [detect(f) for f in [a] * 10 + [b] * 10 + [a] * 10]
    assert [k for k, cut in enumerate(flags) if cut] == [10, 20] and detect.cuts == 2


def test_no_cut_before_the_motion_there_is_known() -> None:
    a, b = textured(1)[:, :320], textured(2)[:, :320]
    assert run([a] * WARM_UP + [b]) == []           # a change within the first frames: not told apart
    assert run([a] * (WARM_UP + 1) + [b]) == [WARM_UP + 1]
    assert HISTORY >= WARM_UP


def test_a_large_frame_is_read_through_a_strided_view() -> None:
    hd = np.ascontiguousarray(np.kron(textured(3, 135, 240), np.ones((8, 8, 1), np.uint8)))
    assert hd.shape == (1080, 1920, 3)
    other = np.ascontiguousarray(hd[::-1])
    assert run([hd] * 6 + [other] * 3) == [6]


@pytest.mark.parametrize("size", [(1080, 1920), (576, 768), (480, 640), (577, 771), (250, 250)])
def test_the_frame_is_subsampled_to_every_step_th_pixel(size: tuple[int, int]) -> None:
    picture = np.random.default_rng(4).integers(0, 256, size=(*size, 3), dtype=np.uint8)
    detect = ShotCutDetector(DIFF, RATIO)
    detect(picture)
    step = min(size) // THUMB_SOURCE_PX
    if step == 1:
        assert detect._small is None                   # read as it is
        return
    rows, cols = size[0] // step, size[1] // step     # a partial step at the edge is left out
    np.testing.assert_array_equal(detect._small, picture[::step, ::step][:rows, :cols])


def test_the_tracker_searches_a_cut_frame_afresh_and_starts_a_track() -> None:
    net = SquareNet()
    t = PersonTracker(net, SIZE, CFG, window=1, max_batch=4)
    first = [t.process([frame((100.0 + 2 * k, 120.0))])[0] for k in range(3)]
    assert [r.passes for r in first] == [2, 1, 1] and [r.track for r in first] == [0, 0, 0]
    # The same place after the cut: a tracked crop would have held, but the shot is new.
    (cut,) = t.process([frame((106.0, 120.0))], cuts=[True])
    assert cut.passes == 2 and cut.track == 1
    close(cut, (106.0, 120.0))
    # In a batch, every frame from the cut on is searched: their region was the old shot's.
    batch = t.process([frame((108.0, 120.0)), frame((250.0, 90.0)), frame((252.0, 90.0))], cuts=[False, True, False])
    assert [r.passes for r in batch] == [1, 2, 2] and [r.track for r in batch] == [1, 2, 2]


