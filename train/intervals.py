"""95% intervals by resampling, for figures that are a ratio of sums over units.

Every headline figure of the evaluations is such a ratio: PCK is the joints found over the joints
labelled, MPJPE the summed per-pose error over the poses, a clip set's pooled figure the clips'
weighted values over their weights. Resampling the units (photos, rendered images, clips) with
replacement and recomputing the ratio gives its sampling spread (the percentile bootstrap). Units
that share a cluster (rendered images of one held-out motion) are drawn together, so correlated
samples are not counted as independent evidence. Where units share levels of several crossed
factors (each rendered image shows one held-out motion on one held-out background photo), every
factor is resampled at once (`crossed_ratio_interval`). A paired difference draws the same units
for both runs: two models scored on the same photos differ by much less noise than either figure
has.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A figure and the bounds of its interval (NaN where no resample could compute it)."""

    value: float
    low: float
    high: float

    def scaled(self, factor: float) -> Interval:
        return Interval(self.value * factor, self.low * factor, self.high * factor)

    def as_list(self) -> list[float]:
        return [self.low, self.high]


def _cluster_sums(num: np.ndarray, den: np.ndarray,
                  clusters: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    if num.shape != den.shape or num.ndim != 1:
        raise ValueError(f"num and den must be 1D arrays of one length (got {num.shape} and {den.shape})")
    if clusters is None:
        return num, den
    clusters = np.asarray(clusters)
    if clusters.shape != num.shape:
        raise ValueError(f"clusters must label every unit (got {clusters.shape} for {num.shape})")
    _, index = np.unique(clusters, return_inverse=True)
    return np.bincount(index, num), np.bincount(index, den)


def _draws(count: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, count) unit indices; row r is resample r."""
    if count < 1:
        raise ValueError("nothing to resample")
    return np.random.default_rng(seed).integers(count, size=(resamples, count))


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray | float:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _bounds(value: float, values: np.ndarray, level: float, units: int) -> tuple[float, float]:
    """The percentile bounds of the resampled `values`; NaN where they say nothing: one unit
    (or cluster) alone never varies, and a figure that is NaN has no interval. Resamples whose
    ratio is NaN drew only units without weight."""
    values = values[np.isfinite(values)]
    if units < 2 or not math.isfinite(value) or not len(values):
        return float("nan"), float("nan")
    tail = 50.0 * (1.0 - level)
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def ratio_interval(num: np.ndarray, den: np.ndarray, clusters: np.ndarray | None = None,
                   resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL) -> Interval:
    """sum(num) / sum(den) over the units, with the `level` interval from resampling them (or
    their `clusters`, whole)."""
    n, d = _cluster_sums(num, den, clusters)
    pick = _draws(len(n), resamples, seed)
    value = float(_ratio(n.sum(), d.sum()))
    return Interval(value, *_bounds(value, _ratio(n[pick].sum(1), d[pick].sum(1)), level, len(n)))


def _crossed_weights(factors: Sequence[np.ndarray], units: int, resamples: int,
                     seed: int) -> tuple[np.ndarray, int]:
    """(resamples, units) product weights and the fewest levels of any factor: each resample draws
    every factor's levels with replacement and weighs a unit by the product of how often its levels
    were drawn."""
    rng = np.random.default_rng(seed)
    weights = np.ones((resamples, units))
    fewest = units
    for factor in factors:
        factor = np.asarray(factor)
        if factor.shape != (units,):
            raise ValueError(f"a factor must give every unit a level (got {factor.shape} for ({units},))")
        _, index = np.unique(factor, return_inverse=True)
        levels = int(index.max()) + 1 if len(index) else 0
        fewest = min(fewest, levels)
        counts = np.zeros((resamples, max(levels, 1)))
        np.add.at(counts, (np.arange(resamples)[:, None], _draws(levels, resamples, rng.integers(2**32))), 1.0)
        weights *= counts[:, index]
    return weights, fewest


def crossed_ratio_interval(num: np.ndarray, den: np.ndarray, factors: Sequence[np.ndarray],
                           resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL) -> Interval:
    """sum(num) / sum(den) over units that each hold one level of every factor, with the `level`
    interval from resampling the levels of all factors at once: a resample draws each factor's
    levels with replacement and weighs a unit by the product of how often its levels were drawn
    (the product-weight bootstrap for crossed random effects, Owen 2007). One factor alone is
    `ratio_interval` with its levels as clusters; none, the units one by one: both are computed
    by it, so that those intervals keep the numbers they have always had."""
    if len(factors) < 2:
        return ratio_interval(num, den, factors[0] if factors else None, resamples, seed, level)
    num, den = _cluster_sums(num, den, None)
    weights, fewest = _crossed_weights(factors, len(num), resamples, seed)
    value = float(_ratio(num.sum(), den.sum()))
    return Interval(value, *_bounds(value, _ratio(weights @ num, weights @ den), level, fewest))


def _two_runs(num_a: np.ndarray, den_a: np.ndarray, num_b: np.ndarray, den_b: np.ndarray,
              clusters: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Both runs' sums per unit (or cluster), checked to score the same units."""
    na, da = _cluster_sums(num_a, den_a, clusters)
    nb, db = _cluster_sums(num_b, den_b, clusters)
    if na.shape != nb.shape:
        raise ValueError(f"the two runs must score the same units (got {len(num_a)} and {len(num_b)})")
    return na, da, nb, db


def paired_ratio_difference(num_a: np.ndarray, den_a: np.ndarray, num_b: np.ndarray, den_b: np.ndarray,
                            clusters: np.ndarray | None = None, resamples: int = RESAMPLES, seed: int = 0,
                            level: float = LEVEL) -> Interval:
    """Run a's ratio minus run b's over the same units, each resample drawing the same units for
    both."""
    na, da, nb, db = _two_runs(num_a, den_a, num_b, den_b, clusters)
    pick = _draws(len(na), resamples, seed)
    value = float(_ratio(na.sum(), da.sum()) - _ratio(nb.sum(), db.sum()))
    draws = _ratio(na[pick].sum(1), da[pick].sum(1)) - _ratio(nb[pick].sum(1), db[pick].sum(1))
    return Interval(value, *_bounds(value, draws, level, len(na)))


def crossed_paired_difference(num_a: np.ndarray, den_a: np.ndarray, num_b: np.ndarray, den_b: np.ndarray,
                              factors: Sequence[np.ndarray], resamples: int = RESAMPLES, seed: int = 0,
                              level: float = LEVEL) -> Interval:
    """Run a's ratio minus run b's over the same units, each resample weighing the units of both
    runs by the same product weights (`crossed_ratio_interval`); with one factor or none,
    `paired_ratio_difference`."""
    if len(factors) < 2:
        return paired_ratio_difference(num_a, den_a, num_b, den_b, factors[0] if factors else None,
                                       resamples, seed, level)
    na, da, nb, db = _two_runs(num_a, den_a, num_b, den_b, None)
    weights, fewest = _crossed_weights(factors, len(na), resamples, seed)
    value = float(_ratio(na.sum(), da.sum()) - _ratio(nb.sum(), db.sum()))
    draws = _ratio(weights @ na, weights @ da) - _ratio(weights @ nb, weights @ db)
    return Interval(value, *_bounds(value, draws, level, fewest))
