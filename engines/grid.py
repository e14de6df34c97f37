"""The 2D grid: soft labels for training and their decoding back to pixels.

Each joint's 2D location is classified over a G x G grid of cells covering the S x S crop (the
paper's formulation). Cell (i, j) covers pixels [j c, (j + 1) c) x [i c, (i + 1) c) with c = S / G,
and stands for its centre ((j + 0.5) c, (i + 0.5) c).

Encoding spreads a point over its four nearest cell centres with bilinear weights, so the label's
expectation is exactly the point. Decoding takes the expectation over a small window around the
most probable cell: sub-cell precision, and a second mode elsewhere (a left/right confusion, say)
cannot drag the estimate into the empty space between the two, as a global expectation would.

Confidence is the probability mass in that window, not the single peak cell's probability: a
perfect prediction of a point on a cell corner puts 0.25 in each of four cells, and its confidence
should not depend on where inside a cell the joint falls.
"""

from __future__ import annotations

import numpy as np


def cell_centres(grid_size: int, input_size: int) -> np.ndarray:
    """(G,) pixel coordinate of each cell centre along one axis."""
    cell = input_size / grid_size
    return (np.arange(grid_size, dtype=np.float64) + 0.5) * cell


def soft_labels(points: np.ndarray, grid_size: int, input_size: int) -> np.ndarray:
    """Bilinear soft labels: (..., 2) crop pixels -> (..., G, G) float32, each summing to 1.

    Points outside the centres' span are clamped to the border cells.
    """
    points = np.asarray(points, dtype=np.float64)
    cell = input_size / grid_size
    # Continuous cell coordinate whose integer values are cell centres.
    g = np.clip(points / cell - 0.5, 0.0, grid_size - 1.0)
    lo = np.minimum(np.floor(g).astype(np.int64), grid_size - 2) if grid_size > 1 else np.zeros_like(g, dtype=np.int64)
    frac = g - lo
    lead = points.shape[:-1]
    out = np.zeros(lead + (grid_size, grid_size), dtype=np.float32)
    flat = out.reshape(-1, grid_size, grid_size)
    lo2 = lo.reshape(-1, 2)
    fr2 = frac.reshape(-1, 2)
    idx = np.arange(flat.shape[0])
    for dy in (0, 1):
        wy = fr2[:, 1] if dy else 1.0 - fr2[:, 1]
        for dx in (0, 1):
            wx = fr2[:, 0] if dx else 1.0 - fr2[:, 0]
            yy = np.minimum(lo2[:, 1] + dy, grid_size - 1)
            xx = np.minimum(lo2[:, 0] + dx, grid_size - 1)
            np.add.at(flat, (idx, yy, xx), (wy * wx).astype(np.float32))
    return out


# The pipeline's decoding window (`alignment.window`) counts cells of this many crop pixels, so a
# model with a finer grid gets the same extent in pixels, hence confidences on the same scale (its
# detection thresholds stay calibrated; measured in docs/results.md).
WINDOW_CELL_PX = 8


def window_cells(window: int, input_size: int, grid_size: int) -> int:
    """`window` in 8-pixel cells -> the same window in cells of a `grid_size` grid over the crop
    (1 -> 1 on a stride-8 grid, 2 on a stride-4 one)."""
    return window * max(1, round(WINDOW_CELL_PX * grid_size / input_size))


def decode(probs: np.ndarray, input_size: int, window: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Grid probabilities (..., G, G) -> (points (..., 2) crop pixels, confidence (...)).

    points: expectation of the cell centres over the (2 window + 1)^2 cells around the most
    probable cell (cells beyond the border count as empty). confidence: the mass in that window.
    """
    probs = np.asarray(probs)
    grid = probs.shape[-1]
    lead = probs.shape[:-2]
    flat = probs.reshape(-1, grid * grid)
    peak = np.argmax(flat, axis=1)
    py, px = np.divmod(peak, grid)
    offsets = np.arange(-window, window + 1)
    ys = py[:, None] + offsets[None, :]                      # (N, K)
    xs = px[:, None] + offsets[None, :]
    valid_y = (ys >= 0) & (ys < grid)
    valid_x = (xs >= 0) & (xs < grid)
    ys_c = np.clip(ys, 0, grid - 1)
    xs_c = np.clip(xs, 0, grid - 1)
    cells = ys_c[:, :, None] * grid + xs_c[:, None, :]        # (N, K, K)
    mass = np.take_along_axis(flat, cells.reshape(len(flat), -1), axis=1).reshape(cells.shape)
    mass = mass * (valid_y[:, :, None] & valid_x[:, None, :])
    total = mass.sum(axis=(1, 2))
    safe = np.where(total > 0, total, 1.0)
    centres = cell_centres(grid, input_size)
    x = (mass.sum(axis=1) * centres[xs_c]).sum(axis=1) / safe
    y = (mass.sum(axis=2) * centres[ys_c]).sum(axis=1) / safe
    points = np.stack([x, y], axis=-1).reshape(lead + (2,))
    return points.astype(np.float32), total.reshape(lead).astype(np.float32)
