"""The 2D grid: bilinear soft labels and their windowed decoding (property tests)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from engines.grid import cell_centres, decode, soft_labels, window_cells

# (grid_size, input_size) pairs: the model's (G = S / 8) and a few others, non-integer cells too.
SIZES = [(8, 64), (32, 256), (16, 256), (5, 100), (7, 64), (2, 16)]
EXACT_PX = 1e-3

SETTINGS = settings(deadline=None, max_examples=80)


@st.composite
def point_in_span(draw, sizes=SIZES):
    """(grid, size, point) with the point anywhere between the first and last cell centre."""
    grid, size = draw(st.sampled_from(sizes))
    centres = cell_centres(grid, size)
    lo, hi = float(centres[0]), float(centres[-1])
    coord = st.floats(lo, hi, allow_nan=False)
    return grid, size, np.array([draw(coord), draw(coord)])


def test_cell_centres() -> None:
    np.testing.assert_allclose(cell_centres(4, 64), [8, 24, 40, 56])
    np.testing.assert_allclose(cell_centres(32, 256), (np.arange(32) + 0.5) * 8)


@SETTINGS
@given(point_in_span())
def test_soft_labels_are_a_distribution(case) -> None:
    grid, size, p = case
    label = soft_labels(p, grid, size)
    assert label.shape == (grid, grid) and label.dtype == np.float32
    assert (label >= 0).all()
    assert abs(float(label.sum(dtype=np.float64)) - 1.0) < 1e-6
    assert np.count_nonzero(label) <= 4


@SETTINGS
@given(point_in_span(), st.integers(1, 3))
def test_decode_inverts_soft_labels_exactly(case, window: int) -> None:
    grid, size, p = case
    points, conf = decode(soft_labels(p, grid, size), size, window=window)
    assert points.shape == (2,) and conf.shape == ()
    np.testing.assert_allclose(points, p, atol=EXACT_PX, rtol=0)
    # The whole label lies in the window: the confidence of a perfect prediction is 1.
    assert abs(float(conf) - 1.0) < 1e-5


@SETTINGS
@given(st.sampled_from(SIZES), st.floats(-1000, 1000), st.floats(-1000, 1000), st.integers(1, 3))
def test_points_outside_the_span_clamp_to_border_centres(sizes, x: float, y: float, window: int) -> None:
    grid, size = sizes
    centres = cell_centres(grid, size)
    lo, hi = centres[0], centres[-1]
    p = np.array([x, y])
    points, conf = decode(soft_labels(p, grid, size), size, window=window)
    np.testing.assert_allclose(points, np.clip(p, lo, hi), atol=EXACT_PX, rtol=0)
    assert abs(float(conf) - 1.0) < 1e-5


@pytest.mark.parametrize("grid, size", [(8, 64), (32, 256)])
def test_far_outside_points_land_on_the_corner_cells(grid: int, size: int) -> None:
    cell = size / grid
    label = soft_labels(np.array([-50.0, 10 * size]), grid, size)
    assert label[grid - 1, 0] == 1.0            # row = y (bottom), column = x (left)
    points, _ = decode(label, size)
    np.testing.assert_allclose(points, [cell / 2, size - cell / 2], atol=EXACT_PX)


@st.composite
def two_distant_points(draw):
    """A point p and a point q at least 4 cells away from it (on some axis)."""
    grid, size = draw(st.sampled_from([(8, 64), (32, 256), (16, 256)]))
    _, _, p = draw(point_in_span([(grid, size)]))
    _, _, q = draw(point_in_span([(grid, size)]))
    cell = size / grid
    if np.abs(p - q).max() < 4 * cell:
        # Push q to the far side of the grid along x.
        centres = cell_centres(grid, size)
        q = q.copy()
        q[0] = centres[-1] if p[0] < size / 2 else centres[0]
    return grid, size, p, q


@SETTINGS
@given(two_distant_points(), st.floats(0.82, 0.95), st.integers(1, 2))
def test_a_distant_second_mode_does_not_move_the_local_decode(case, weight: float, window: int) -> None:
    grid, size, p, q = case
    cell = size / grid
    # weight * (peak of p's label, >= 0.25) beats (1 - weight) * (peak of q's label, <= 1) when
    # weight > 0.8, so the argmax is one of p's cells.
    probs = weight * soft_labels(p, grid, size) + (1 - weight) * soft_labels(q, grid, size)
    # q's cells must lie outside the window around p's peak (only window 2 near the limit fails).
    assume(np.abs(p - q).max() >= (window + 2) * cell)
    points, conf = decode(probs, size, window=window)
    np.testing.assert_allclose(points, p, atol=EXACT_PX, rtol=0)
    assert abs(float(conf) - weight) < 1e-5
    # A global expectation is dragged towards q, into the empty space between the modes.
    global_expectation = weight * p + (1 - weight) * q
    wide, wide_conf = decode(probs, size, window=grid)          # a window covering the whole grid
    np.testing.assert_allclose(wide, global_expectation, atol=EXACT_PX, rtol=0)
    assert abs(float(wide_conf) - 1.0) < 1e-5
    assert np.abs(wide - p).max() > 0.1 * cell


@SETTINGS
@given(st.integers(1, 3), st.integers(1, 4), st.sampled_from([(8, 64), (32, 256)]), st.integers(0, 2**32 - 1))
def test_decode_handles_batch_dimensions(batch: int, window: int, sizes, seed: int) -> None:
    grid, size = sizes
    rng = np.random.default_rng(seed)
    centres = cell_centres(grid, size)
    pts = rng.uniform(centres[0], centres[-1], size=(batch, 17, 2))
    labels = soft_labels(pts, grid, size)
    assert labels.shape == (batch, 17, grid, grid)
    points, conf = decode(labels, size, window=window)
    assert points.shape == (batch, 17, 2) and conf.shape == (batch, 17)
    np.testing.assert_allclose(points, pts, atol=EXACT_PX, rtol=0)
    np.testing.assert_allclose(conf, 1.0, atol=1e-5)
    # Arbitrary (not label-shaped) probabilities: batched == one at a time.
    logits = rng.normal(size=(batch, 17, grid, grid))
    probs = np.exp(logits) / np.exp(logits).sum(axis=(-2, -1), keepdims=True)
    points, conf = decode(probs, size, window=window)
    for b in range(batch):
        for j in range(17):
            p1, c1 = decode(probs[b, j], size, window=window)
            np.testing.assert_allclose(points[b, j], p1, rtol=1e-6, atol=1e-4)
            np.testing.assert_allclose(conf[b, j], c1, rtol=1e-6)


@pytest.mark.parametrize("window", [1, 2, 3])
@pytest.mark.parametrize("corner", [(0, 0), (0, -1), (-1, 0), (-1, -1)])
def test_peak_at_the_border_clips_the_window(window: int, corner: tuple[int, int]) -> None:
    grid, size = 8, 64
    cell = size / grid
    cy, cx = (c % grid for c in corner)
    probs = np.zeros((grid, grid), np.float32)
    probs[cy, cx] = 1.0
    points, conf = decode(probs, size, window=window)
    np.testing.assert_allclose(points, [(cx + 0.5) * cell, (cy + 0.5) * cell], atol=EXACT_PX)
    assert abs(float(conf) - 1.0) < 1e-6
    # A point between the border centre and its neighbour, peaking on the border cell.
    centres = cell_centres(grid, size)
    x = centres[0] + 0.3 * cell if cx == 0 else centres[-1] - 0.3 * cell
    p = np.array([x, centres[cy]])
    points, conf = decode(soft_labels(p, grid, size), size, window=window)
    np.testing.assert_allclose(points, p, atol=EXACT_PX)
    assert abs(float(conf) - 1.0) < 1e-5


def test_confidence_is_the_window_mass() -> None:
    grid, size = 8, 64
    probs = np.full((grid, grid), 1.0 / (grid * grid), np.float32)
    probs[4, 4] += 0.5
    probs /= probs.sum()
    _, conf1 = decode(probs, size, window=1)
    np.testing.assert_allclose(conf1, probs[3:6, 3:6].sum(), rtol=1e-5)
    _, conf0 = decode(probs, size, window=0)
    np.testing.assert_allclose(conf0, probs[4, 4], rtol=1e-5)


def test_the_decoding_window_keeps_its_extent_in_pixels_on_a_finer_grid() -> None:
    assert [window_cells(w, 128, 16) for w in (0, 1, 2)] == [0, 1, 2]      # stride 8
    assert [window_cells(w, 128, 32) for w in (0, 1, 2)] == [0, 2, 4]      # stride 4
    assert window_cells(1, 256, 32) == 1 and window_cells(1, 64, 8) == 1
    # A coarser grid (cells of 16 px) keeps a window of at least one cell.
    assert window_cells(1, 256, 16) == 1 and window_cells(2, 256, 16) == 2


def test_an_all_zero_map_decodes_to_finite_points_with_no_confidence() -> None:
    points, conf = decode(np.zeros((2, 8, 8), np.float32), 64)
    assert np.isfinite(points).all() and (conf == 0).all()
