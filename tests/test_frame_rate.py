"""A video's frame rate from its timestamps (streamer/frame_rate.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.frame_rate import MIN_GAPS, TOLERANCE, FilePace, choose_rate, rate_from_times


@settings(max_examples=60, deadline=None)
@given(fps=st.floats(5.0, 240.0), n=st.integers(MIN_GAPS + 1, 80), jitter=st.floats(0.0, 0.25),
       seed=st.integers(0, 2**31 - 1))
def test_rate_from_jittered_reordered_millisecond_times(fps: float, n: int, jitter: float, seed: int) -> None:
    """Whatever the jitter, the millisecond rounding and the decode order (B-frames), the rate
    comes back to within the rounding of one gap."""
    rng = np.random.default_rng(seed)
    gaps = (1.0 + rng.uniform(-jitter, jitter, n)) / fps
    times = np.round(np.concatenate([[0.0], np.cumsum(gaps)]) * 1000.0) / 1000.0
    rng.shuffle(times)
    measured = rate_from_times(list(times))
    if len(np.unique(times)) - 1 < MIN_GAPS:
        assert measured is None          # a fast clip's gaps can round to nothing
        return
    assert measured is not None
    typical = 1.0 / fps
    assert abs(1.0 / measured - typical) <= jitter * typical + 0.001


def test_a_pause_does_not_lower_the_rate() -> None:
    times = [i / 30.0 for i in range(30)] + [3.0 + i / 30.0 for i in range(30)]
    assert rate_from_times(times) == pytest.approx(30.0)


def test_too_few_or_unusable_times_say_nothing() -> None:
    assert rate_from_times([i / 25.0 for i in range(MIN_GAPS)]) is None       # MIN_GAPS - 1 gaps
    assert rate_from_times([0.0] * 50) is None
    assert rate_from_times([float("nan")] * 50) is None
    assert rate_from_times([i / 25.0 for i in range(MIN_GAPS + 1)]) == pytest.approx(25.0)


@pytest.mark.parametrize("stated, measured, fps, corrected", [
    (30.0, 29.8, 30.0, False),             # a variable-rate phone clip: its container is right
    (30.0, 30.0 * (1 + TOLERANCE * 0.9), 30.0, False),
    (1000.0, 29.7, 29.7, True),            # a browser's WebM: FFmpeg's guess from its time base
    (17.97, 30.0, 30.0, True),             # a recording that paused: the average is no rate
    (None, 25.0, 25.0, True),
    (float("nan"), 25.0, 25.0, True),
    (0.0, None, None, False),
    (24.0, None, 24.0, False),             # too few frames to check: the container's word
    (12.5, 2.0, 12.5, False),              # a screen recording's still start: slower than stated
    (60.0, 30.0, 60.0, False),
])
def test_choose_rate(stated: float | None, measured: float | None, fps: float | None, corrected: bool) -> None:
    rate = choose_rate(stated, measured)
    assert rate.fps == pytest.approx(fps) if fps is not None else rate.fps is None
    assert rate.corrected is corrected


def test_a_file_played_at_its_pace_plays_on_across_a_jump_in_its_times() -> None:
    """`run FILE`: frames are due as far apart as their media times, but a jump (joined MPEG-TS
    segments, a timestamp reset) neither waits out two minutes nor makes every later frame late:
    the frame after it comes one period after the one before. A shorter pause is played."""
    pace = FilePace(period=0.04)
    times = [10.0, 10.04, 10.08, 130.0, 130.04, 5.0, 5.04, 5.08, 8.08, 8.12]
    due = [pace.due(t, now=100.0) for t in times]
    assert np.allclose(np.diff(due), [0.04, 0.04, 0.04, 0.04, 0.04, 0.04, 0.04, 3.0, 0.04])
    assert due[0] == 100.0


def test_frames_out_of_order_or_without_a_time_keep_the_pace() -> None:
    """Times a few periods out of order (B-frames stamped in decode order) come with the frame
    before, not a period later each; a frame without a time comes a period after the one before,
    and the pace goes on from the file's own times, not from a clock of its own."""
    pace = FilePace(period=0.04)
    times = [1.4, 1.52, 1.56, 1.48, 1.64, None, 1.72, 1.76]
    due = [pace.due(t, now=0.0) for t in times]
    assert np.allclose(due, [0.0, 0.12, 0.16, 0.16, 0.24, 0.28, 0.32, 0.36])
