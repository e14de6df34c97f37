"""Root-ensemble alignment (engines/align.py), property tests on skeleton-shaped poses.

Poses are drawn along the H36M17 tree (bones 0.1-0.45 m in random directions, anywhere within a
few metres of the camera), root sets are random subsets of the joints that include the origin.

Run this file as a script (`python tests/test_align.py`) to print the mean errors of the three
methods on the two seeded benchmarks below (one corrupted root; 2 cm Gaussian noise).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engines.align import METHODS, RootAligner
from engines.model_file import default_model_config
from engines.skeleton import H36M17

J = H36M17.num_joints
ORIGIN = H36M17.index(H36M17.origin)
DEFAULT_ROOTS = default_model_config().root_indices      # configs/model.yaml's six
EXACT_M = 1e-5

SETTINGS = settings(deadline=None, max_examples=60)


def random_pose(rng: np.random.Generator) -> np.ndarray:
    """(J, 3) metres: a skeleton-shaped pose placed somewhere in front of the camera."""
    x = np.zeros((J, 3))
    for j, p in enumerate(H36M17.parents):
        if p >= 0:
            d = rng.normal(size=3)
            x[j] = x[p] + d / np.linalg.norm(d) * rng.uniform(0.1, 0.45)
    return x + rng.uniform([-2, -2, 1], [2, 2, 8])


def offsets_of(x: np.ndarray, roots: tuple[int, ...]) -> np.ndarray:
    """Consistent per-root estimates: O[r] = X - X[root_r]."""
    return np.stack([x - x[r] for r in roots])


def relative(x: np.ndarray) -> np.ndarray:
    return x - x[..., ORIGIN:ORIGIN + 1, :]


def mean_error(est: np.ndarray, x: np.ndarray) -> float:
    """Mean per-joint position error (metres) of `est` against X relative to the origin."""
    return float(np.linalg.norm(est - relative(x), axis=-1).mean())


def corruption(rng: np.random.Generator) -> np.ndarray:
    """(J, 3): every joint moved 0.2-0.5 m in a random direction."""
    d = rng.normal(size=(J, 3))
    return d / np.linalg.norm(d, axis=1, keepdims=True) * rng.uniform(0.2, 0.5, size=(J, 1))


seeds = st.integers(0, 2**32 - 1)


@st.composite
def root_sets(draw, min_size: int = 1) -> tuple[int, ...]:
    """A shuffled tuple of distinct joint indices that contains the origin."""
    others = draw(st.lists(st.sampled_from([j for j in range(J) if j != ORIGIN]),
                           min_size=min_size - 1, max_size=J - 1, unique=True))
    return tuple(draw(st.permutations([ORIGIN, *others])))


# --- exactness and invariances --------------------------------------------------------------

@SETTINGS
@given(st.sampled_from(METHODS), seeds, root_sets(), st.booleans())
def test_consistent_offsets_come_back_exactly(method: str, seed: int, roots: tuple[int, ...],
                                              with_conf: bool) -> None:
    rng = np.random.default_rng(seed)
    x = random_pose(rng)
    conf = rng.uniform(0.05, 1.0, size=J) if with_conf else None
    out = RootAligner(J, roots, ORIGIN, method=method)(offsets_of(x, roots), conf)
    assert out.shape == (J, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, relative(x), atol=EXACT_M, rtol=0)
    assert np.all(out[ORIGIN] == 0.0)


@SETTINGS
@given(st.sampled_from(METHODS), seeds, root_sets())
def test_translating_each_row_does_not_matter(method: str, seed: int, roots: tuple[int, ...]) -> None:
    rng = np.random.default_rng(seed)
    x = random_pose(rng)
    noisy = offsets_of(x, roots) + rng.normal(scale=0.03, size=(len(roots), J, 3))   # not consistent
    shifts = rng.uniform(-5, 5, size=(len(roots), 1, 3))                            # one per row
    aligner = RootAligner(J, roots, ORIGIN, method=method)
    conf = rng.uniform(0.05, 1.0, size=J)
    np.testing.assert_allclose(aligner(noisy + shifts), aligner(noisy), atol=EXACT_M, rtol=0)
    np.testing.assert_allclose(aligner(noisy + shifts, conf), aligner(noisy, conf), atol=EXACT_M, rtol=0)


@SETTINGS
@given(st.sampled_from(METHODS), seeds, root_sets())
def test_translating_the_ground_truth_changes_nothing(method: str, seed: int, roots: tuple[int, ...]) -> None:
    rng = np.random.default_rng(seed)
    x = random_pose(rng)
    t = rng.uniform(-10, 10, size=3)
    noise = rng.normal(scale=0.03, size=(len(roots), J, 3))
    aligner = RootAligner(J, roots, ORIGIN, method=method)
    a = aligner(offsets_of(x, roots) + noise)
    b = aligner(offsets_of(x + t, roots) + noise)
    np.testing.assert_allclose(a, b, atol=EXACT_M, rtol=0)
    np.testing.assert_allclose(aligner(offsets_of(x + t, roots)), relative(x), atol=EXACT_M, rtol=0)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else q * np.array([-1.0, 1.0, 1.0])


@SETTINGS
@given(st.sampled_from(METHODS), seeds, root_sets(min_size=3), st.booleans())
def test_turning_the_rows_turns_the_pose(method: str, seed: int, roots: tuple[int, ...], corrupt: bool) -> None:
    """The axes the network's offsets come in (camera or ray frame) must not decide the pose:
    every method is equivariant under a rotation of all rows, noisy and with a bad row too."""
    rng = np.random.default_rng(seed)
    noisy = offsets_of(random_pose(rng), roots) + rng.normal(scale=0.03, size=(len(roots), J, 3))
    if corrupt:
        noisy[rng.integers(len(roots))] += corruption(rng)
    rot = random_rotation(rng)
    conf = rng.uniform(0.05, 1.0, size=J)
    aligner = RootAligner(J, roots, ORIGIN, method=method)
    np.testing.assert_allclose(aligner(noisy @ rot.T, conf), aligner(noisy, conf) @ rot.T, atol=EXACT_M, rtol=0)


@SETTINGS
@given(st.sampled_from(METHODS), seeds, root_sets(), st.integers(1, 5), st.booleans())
def test_batch_equals_per_item_calls(method: str, seed: int, roots: tuple[int, ...], batch: int,
                                     with_conf: bool) -> None:
    rng = np.random.default_rng(seed)
    offsets = np.stack([offsets_of(random_pose(rng), roots) for _ in range(batch)])
    offsets += rng.normal(scale=0.05, size=offsets.shape)
    conf = rng.uniform(0.05, 1.0, size=(batch, J)) if with_conf else None
    aligner = RootAligner(J, roots, ORIGIN, method=method)
    out = aligner(offsets, conf)
    assert out.shape == (batch, J, 3) and out.dtype == np.float32
    for b in range(batch):
        one = aligner(offsets[b], None if conf is None else conf[b])
        np.testing.assert_allclose(out[b], one, atol=1e-6, rtol=0)


def test_input_validation() -> None:
    with pytest.raises(ValueError, match="unknown alignment method 'median'"):
        RootAligner(J, DEFAULT_ROOTS, ORIGIN, method="median")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="origin joint must be one of the roots"):
        RootAligner(J, (1, 2), ORIGIN)


# --- robustness -----------------------------------------------------------------------------

@SETTINGS
@given(seeds, root_sets(min_size=3), st.data())
def test_one_corrupted_root_moves_weighted_less_than_average(seed: int, roots: tuple[int, ...], data) -> None:
    """Holds in every example, whichever row is corrupted (the origin's included)."""
    rng = np.random.default_rng(seed)
    x = random_pose(rng)
    bad = data.draw(st.sampled_from(range(len(roots))))
    offsets = offsets_of(x, roots)
    offsets[bad] += corruption(rng)
    err = {m: mean_error(RootAligner(J, roots, ORIGIN, method=m)(offsets), x) for m in ("average", "weighted")}
    assert err["weighted"] < err["average"], err


@SETTINGS
@given(seeds, root_sets(min_size=3), st.data())
def test_lowering_a_root_joints_confidence_reduces_that_roots_influence(seed: int, roots: tuple[int, ...],
                                                                       data) -> None:
    # Not for the origin's row: lowering the origin joint's confidence scales that row's equations
    # and, equally, the other rows' equations about the origin, which are what outvote it (with
    # w = c_root c_j the ratio is unchanged). Its rejection is the robust start's job, tested above.
    rng = np.random.default_rng(seed)
    x = random_pose(rng)
    bad = data.draw(st.sampled_from([i for i, r in enumerate(roots) if r != ORIGIN]))
    clean = offsets_of(x, roots)
    corrupted = clean.copy()
    # A small error (1-2.5 cm): inside the robust weights' inlier band, where the confidences are
    # what decide a row's say (a gross error is rejected whatever its confidence).
    corrupted[bad] += 0.05 * corruption(rng)
    aligner = RootAligner(J, roots, ORIGIN, method="weighted")
    conf = np.ones(J)
    low = conf.copy()
    low[roots[bad]] = 0.1

    def influence(c: np.ndarray) -> float:
        """How far the corrupted row moves the result (the clean result is exact)."""
        return float(np.linalg.norm(aligner(corrupted, c) - aligner(clean, c), axis=-1).mean())

    assert influence(low) < influence(conf)


def alignment_errors(kind: str, trials: int = 200, seed: int = 20240611,
                     roots: tuple[int, ...] = DEFAULT_ROOTS, which_root: str = "any") -> dict[str, float]:
    """Mean per-joint error (metres) of each method over seeded trials with the default roots.

    kind: "corrupted" (one row, chosen uniformly, gets `corruption`) or "noise" (i.i.d. 2 cm
    Gaussian noise on every offset, own-root entries included). which_root ("any", "origin",
    "non-origin") restricts the corrupted row.
    """
    rng = np.random.default_rng(seed)
    aligners = {m: RootAligner(J, roots, ORIGIN, method=m) for m in METHODS}
    rows = {"any": list(range(len(roots))),
            "origin": [roots.index(ORIGIN)],
            "non-origin": [i for i, r in enumerate(roots) if r != ORIGIN]}[which_root]
    errors: dict[str, list[float]] = {m: [] for m in METHODS}
    for _ in range(trials):
        x = random_pose(rng)
        offsets = offsets_of(x, roots)
        if kind == "corrupted":
            offsets[rows[rng.integers(len(rows))]] += corruption(rng)
        elif kind == "noise":
            offsets += rng.normal(scale=0.02, size=offsets.shape)
        elif kind == "noise-exact-root":
            noise = rng.normal(scale=0.02, size=offsets.shape)
            noise[np.arange(len(roots)), list(roots)] = 0.0
            offsets += noise
        else:
            raise ValueError(kind)
        for m, aligner in aligners.items():
            errors[m].append(mean_error(aligner(offsets), x))
    return {m: float(np.mean(v)) for m, v in errors.items()}


def test_one_corrupted_root_mean_error_over_seeded_trials() -> None:
    """Over 200 seeded trials (the corrupted row any of the 6 default roots), `weighted` has the
    lower mean error, by far."""
    err = alignment_errors("corrupted")
    assert err["weighted"] < 0.2 * err["average"], err
    err = alignment_errors("corrupted", which_root="non-origin")
    assert err["weighted"] < 0.5 * err["average"], err


def test_corrupted_origin_row_moves_weighted_less_than_average() -> None:
    """The origin's own row pins the origin with J - 1 equations; the robust start and Tukey's
    weights still reject it entirely."""
    err = alignment_errors("corrupted", which_root="origin")
    assert err["weighted"] < err["average"], err
    assert err["weighted"] < 0.002, err


def test_noise_with_exact_own_root_entries_favours_least_squares() -> None:
    """Posecast's network emits each root's offset from itself as exactly 0; with noise on the
    other offsets, solving all root-joint equations beats the paper's average."""
    err = alignment_errors("noise-exact-root")
    assert err["lstsq"] < err["average"] and err["weighted"] < err["average"], err


def test_gaussian_noise_errors_are_small() -> None:
    """2 cm i.i.d. noise per coordinate: every method stays within 4 cm (measured 17.6, 28.8 and
    28.9 mm: average, lstsq, weighted)."""
    err = alignment_errors("noise")
    assert all(e < 0.04 for e in err.values()), err


def test_confidences_outside_the_unit_interval_are_clipped() -> None:
    """A network's softmax mass can be 0 (the system would be singular) or, summed, above 1."""
    rng = np.random.default_rng(0)
    x = random_pose(rng)
    off = offsets_of(x, DEFAULT_ROOTS) + rng.normal(scale=0.02, size=(len(DEFAULT_ROOTS), J, 3))
    conf = rng.uniform(0.05, 1.0, size=J)
    free = [j for j in range(J) if j not in DEFAULT_ROOTS]
    conf[free[:2]] = 0.0
    conf[free[2:4]] = 3.0
    aligner = RootAligner(J, DEFAULT_ROOTS, ORIGIN)
    np.testing.assert_allclose(aligner(off, conf), aligner(off, np.clip(conf, 1e-3, 1.0)), atol=1e-6)


def test_a_joint_every_row_disagrees_on_still_gets_a_finite_estimate() -> None:
    """Each row 1 m off in its own direction: every residual is past the cutoff, and the weights'
    floor keeps the system solvable (the rows' mean is still right)."""
    x = random_pose(np.random.default_rng(1))
    off = offsets_of(x, DEFAULT_ROOTS)
    j = next(j for j in range(J) if j not in DEFAULT_ROOTS)
    directions = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], float)
    off[:, j] += directions[: len(DEFAULT_ROOTS)]
    out = RootAligner(J, DEFAULT_ROOTS, ORIGIN)(off)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, relative(x), atol=1e-4)


if __name__ == "__main__":  # the numbers for the docs
    for label, kwargs in [
        ("one corrupted root (any of the 6)", dict(kind="corrupted")),
        ("one corrupted root (not the origin)", dict(kind="corrupted", which_root="non-origin")),
        ("one corrupted root (the origin's row)", dict(kind="corrupted", which_root="origin")),
        ("2 cm i.i.d. Gaussian noise on all offsets", dict(kind="noise")),
        ("2 cm noise, own-root entries exact (our net)", dict(kind="noise-exact-root")),
    ]:
        err = alignment_errors(**kwargs)
        print(f"{label:45s} " + "  ".join(f"{m} {1000 * e:6.1f} mm" for m, e in err.items()))
