"""Absolute root position: where in front of the camera the pelvis-relative 3D pose stands.

The network gives the pose relative to the pelvis (X_j, pelvis = 0) and, separately, the joints
in the image (u_j, v_j). The camera-frame pelvis position T is what makes the two agree:

    u_j = fx (X_j + Tx) / (Z_j + Tz) + cx,   v_j = fy (Y_j + Ty) / (Z_j + Tz) + cy.

In normalised image coordinates n = ((u - cx) / fx, (v - cy) / fy) that is, per joint and per
image axis a in {x, y}, one equation LINEAR in T:

    T_a - n_a Tz = n_a Z - P_a          (P = X for a = x, Y for a = y)

2J equations, 3 unknowns, solved by weighted least squares (weights = the 2D confidences). The
two lateral unknowns separate out in closed form, so no matrix is factorised:

    Tz  = -sum_{j,a} w (n - n_bar)(c - c_bar) / sum_{j,a} w (n - n_bar)^2,   c = n Z - P
    T_a = c_bar_a + n_bar_a Tz                          (bars: w-weighted means per axis)

The x rows carry weight fx^2 and the y rows fy^2, so that a residual counts as much as the
pixels it stands for when fx != fy. The equations' residual is the reprojection error (in
normalised units) times the joint's depth Z_j + Tz, so a plain solve trusts far joints more than
near ones; one re-solve with weights divided by the first solution's (Z_j + Tz)^2 makes the
objective the pixel error itself (to first order). Exact data are recovered exactly either way.

Degenerate input falls back to a scale-based estimate (`scale_translation`): the depth of the
pose's centroid is the ratio of its 3D spread (metres) to its 2D spread (normalised units, i.e.
pixels / focal), the 3D spread taken across the viewing ray through the weighted 2D centroid
(paraperspective: off the optical axis, depth differences spread the image too). On the exact
synthetic scenes of tests/test_rootpos.py its depth is off by 0.9% on average, 14% at worst
(plain weak perspective, spread across the optical axis: 4.4% and 74%). x and y put the 3D
centroid on that ray (for a pose whose centroid is the pelvis: the pelvis ray; the centroid of
all weighted joints is steadier than one pelvis detection). It applies when no joint has
confidence, when the 2D points have no spread (the system has no unique Tz), when not one joint
is finite, or when the solution puts the pelvis behind the camera or closer than `min_depth` (a
mirrored or wildly wrong 2D/3D pairing). Its depth is clipped to [min_depth, max_depth], so it
is always a finite point in front of the camera.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

# "All conf ~0": below this total confidence the 2D detections say nothing (17 joints all under
# 6e-5). Below this variance of the normalised 2D points (0.01 px at a 1000 px focal, squared)
# the image gives no scale, so no depth.
_MIN_TOTAL_CONF = 1e-3
_MIN_SPREAD2 = 1e-10
# With not one finite joint there is nothing to measure: the optical axis at a typical distance
# of a webcam subject, clipped to [min_depth, max_depth].
_NO_DATA_DEPTH_M = 3.0


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole camera in pixels of the input image (pixel centres at +0.5, so the image spans
    [0, w] x [0, h] and its centre is (w / 2, h / 2))."""

    fx: float
    fy: float
    cx: float
    cy: float
    # Per-call constants as arrays, built once: turning tuples into arrays costs microseconds.
    _centre: np.ndarray = field(init=False, repr=False, compare=False)
    _inv_focal: np.ndarray = field(init=False, repr=False, compare=False)
    _focal: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (self.fx > 0 and self.fy > 0 and math.isfinite(self.fx) and math.isfinite(self.fy)):
            raise ValueError(f"focal lengths must be positive and finite, got fx={self.fx}, fy={self.fy}")
        object.__setattr__(self, "_centre", np.array([self.cx, self.cy], dtype=np.float64))
        object.__setattr__(self, "_inv_focal", np.array([1.0 / self.fx, 1.0 / self.fy]))
        object.__setattr__(self, "_focal", np.array([self.fx, self.fy], dtype=np.float64))

    @classmethod
    def from_fov(cls, width: int, height: int, hfov_deg: float = 60.0) -> "Intrinsics":
        """Square pixels, principal point at the image centre, focal from an assumed horizontal
        field of view: the left and right image edges are hfov/2 off the optical axis."""
        if width <= 0 or height <= 0:
            raise ValueError(f"image size must be positive, got {width}x{height}")
        if not 0.0 < hfov_deg < 180.0:
            raise ValueError(f"hfov_deg must be in (0, 180), got {hfov_deg}")
        f = width / 2.0 / math.tan(math.radians(hfov_deg) / 2.0)
        return cls(fx=f, fy=f, cx=width / 2.0, cy=height / 2.0)

    def project(self, points: np.ndarray) -> np.ndarray:
        """(..., 3) camera-frame points -> (..., 2) pixels (no guard for points behind the camera)."""
        p = np.asarray(points, dtype=np.float64)
        return p[..., :2] / p[..., 2:3] * self._focal + self._centre


def camera_intrinsics(width: int, height: int, focal_px: float | None, hfov_deg: float,
                      principal_px: tuple[float, float] | None = None) -> Intrinsics:
    """The camera of an image: its focal length if known, else one assumed from a field of view;
    its principal point if known, else the image centre."""
    k = Intrinsics.from_fov(width, height, hfov_deg)
    f = k.fx if focal_px is None else float(focal_px)
    cx, cy = (k.cx, k.cy) if principal_px is None else map(float, principal_px)
    return Intrinsics(f, f, cx, cy)


def in_view_weights(conf: np.ndarray, joints_2d: np.ndarray, width: float, height: float,
                    min_joints: int) -> np.ndarray:
    """The root solve's weights: `conf`, with the joints outside the image at 0 where at least
    `min_joints` are inside it (0: all joints keep their confidence). A joint outside the image is
    the network's guess at a part of the body the camera does not see; the person's size in the
    image, which gives the depth, is what it does see (docs/results.md, "The root from the joints
    in view")."""
    conf = np.asarray(conf, dtype=np.float64)
    if min_joints <= 0:
        return conf
    pts = np.asarray(joints_2d, dtype=np.float64)
    inside = (pts[:, 0] >= 0.0) & (pts[:, 0] <= width) & (pts[:, 1] >= 0.0) & (pts[:, 1] <= height)
    return conf * inside if int(inside.sum()) >= min_joints else conf


def root_translation(joints_3d: np.ndarray, joints_2d: np.ndarray, conf: np.ndarray, k: Intrinsics,
                     min_depth: float = 0.3, max_depth: float = 100.0,
                     refine: bool = True) -> tuple[np.ndarray, float]:
    """The camera-frame pelvis position T (3,) such that joints_3d + T projects onto joints_2d.

    joints_3d (J, 3) metres, camera axes, relative to the pelvis; joints_2d (J, 2) pixels;
    conf (J,) weights in [0, 1] (negative ones count as 0; a joint with a non-finite value is
    left out). Returns (T, rms): rms is the confidence-weighted RMS reprojection error in pixels
    of the returned T (weighted, so a joint the detector disowns does not dominate it; inf when
    not one joint is finite).
    Degenerate input gets the scale-based fallback (see the module docstring); `max_depth`
    only bounds the fallback. `refine=False` skips the depth re-weighting (one solve, not two).
    """
    p3, n, w = _prepare(joints_3d, joints_2d, conf, k)
    table = _table(p3, n)
    sums = (w @ table).tolist()
    if not all(map(math.isfinite, sums)):           # rare: a NaN or inf somewhere; drop those joints
        p3, n, w = _finite_joints(p3, n, w)
        table = _table(p3, n)
        sums = (w @ table).tolist()
    f2x, f2y = k.fx * k.fx, k.fy * k.fy
    t = _solve(sums, f2x, f2y) if sums[0] > _MIN_TOTAL_CONF else None
    if t is not None and refine:
        # Divide each joint's weight by its depth squared: the residual becomes pixel error.
        depth = np.maximum(p3[:, 2] + t[2], min_depth)
        t = _solve((w / (depth * depth) @ table).tolist(), f2x, f2y)
    if t is None or not (t[2] >= min_depth and all(map(math.isfinite, t))):
        out = _fallback(p3, n, w, min_depth, max_depth)
    else:
        out = np.array(t)
    return out, _rms_px(p3, n, w, sums[0], out, k)


def scale_translation(joints_3d: np.ndarray, joints_2d: np.ndarray, conf: np.ndarray, k: Intrinsics,
                      min_depth: float = 0.3, max_depth: float = 100.0) -> np.ndarray:
    """The scale-based fallback on its own: T (3,), finite, min_depth <= T_z <= max_depth."""
    p3, n, w = _finite_joints(*_prepare(joints_3d, joints_2d, conf, k))
    return _fallback(p3, n, w, min_depth, max_depth)


def _prepare(joints_3d: np.ndarray, joints_2d: np.ndarray, conf: np.ndarray,
             k: Intrinsics) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Float64 3D points, normalised 2D coordinates, non-negative weights."""
    p3 = np.asarray(joints_3d, dtype=np.float64)
    uv = np.asarray(joints_2d, dtype=np.float64)
    w = np.maximum(np.asarray(conf, dtype=np.float64), 0.0)
    j = p3.shape[0] if p3.ndim == 2 else -1
    if p3.shape != (j, 3) or uv.shape != (j, 2) or w.shape != (j,):
        raise ValueError(f"expected joints_3d (J, 3), joints_2d (J, 2), conf (J,); got "
                         f"{p3.shape}, {uv.shape}, {w.shape}")
    return p3, (uv - k._centre) * k._inv_focal, w


def _table(p3: np.ndarray, n: np.ndarray) -> np.ndarray:
    """(J, 9) per joint: 1, n, c, n^2, n c (both image axes), where T_a - n_a Tz = c_a.

    Every weighted sum the solve needs is then one product with the weights, and the
    re-weighted solve reuses the table."""
    c = n * p3[:, 2:3] - p3[:, :2]
    return np.concatenate((np.ones((len(n), 1)), n, c, n * n, n * c), axis=1)


def _finite_joints(p3: np.ndarray, n: np.ndarray,
                   w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Only the joints whose every value is finite (a zero weight would not do: 0 * nan is nan)."""
    ok = np.isfinite(p3).all(axis=1) & np.isfinite(n).all(axis=1) & np.isfinite(w)
    return (p3, n, w) if ok.all() else (p3[ok], n[ok], w[ok])


def _solve(sums: list[float], f2x: float, f2y: float) -> tuple[float, float, float] | None:
    """Weighted least squares for T from the weighted column sums of `_table`; None when the
    2D points have no spread (no unique depth). Scale-invariant in the weights."""
    sw, snx, sny, scx, scy, snnx, snny, sncx, sncy = sums
    if not sw > 0.0:
        return None
    # Weighted (co)variances of n and c per axis, times sw; x rows weigh fx^2, y rows fy^2.
    spread2 = f2x * (snnx - snx * snx / sw) + f2y * (snny - sny * sny / sw)
    if not spread2 > _MIN_SPREAD2 * sw * (f2x + f2y):
        return None
    tz = -(f2x * (sncx - snx * scx / sw) + f2y * (sncy - sny * scy / sw)) / spread2
    return (scx + snx * tz) / sw, (scy + sny * tz) / sw, tz


def _fallback(p3: np.ndarray, n: np.ndarray, w: np.ndarray, min_depth: float,
              max_depth: float) -> np.ndarray:
    """Paraperspective: the depth of the 3D centroid is its spread across the viewing ray over
    the normalised 2D spread. Expects finite input (see `_finite_joints`)."""
    if len(w) == 0:
        return np.array([0.0, 0.0, min(max(_NO_DATA_DEPTH_M, min_depth), max_depth)])
    sw = float(w.sum())
    if not sw > _MIN_TOTAL_CONF:
        w, sw = np.ones(len(w)), float(len(w))    # no confidence anywhere: every joint alike
    n_bar = w @ n / sw
    p_bar = w @ p3 / sw
    d3 = p3 - p_bar
    # To first order n_j - n_bar = (dP_xy - n_bar dZ) / D around the centroid at depth D: off
    # the optical axis, depth differences spread the image too (ignoring them biases D low).
    across = d3[:, :2] - np.outer(d3[:, 2], n_bar)
    s2 = float(w @ ((n - n_bar) ** 2).sum(axis=1))
    s3 = float(w @ (across * across).sum(axis=1))
    # No image spread (s2 -> 0) means infinitely far: the clip turns that (and a nan from
    # overflowing input) into max_depth.
    depth = math.sqrt(s3 / s2) - p_bar[2] if s2 > 0.0 else math.inf
    tz = max(depth, min_depth) if depth <= max_depth else max_depth
    # The 3D centroid lies on the 2D centroid's ray: n_bar (Tz + Z_bar) = P_bar + T.
    txy = n_bar * (tz + p_bar[2]) - p_bar[:2]
    t = np.array([txy[0], txy[1], tz])
    return t if np.isfinite(t).all() else np.array([0.0, 0.0, tz])


def _rms_px(p3: np.ndarray, n: np.ndarray, w: np.ndarray, sw: float, t: np.ndarray,
            k: Intrinsics) -> float:
    """Confidence-weighted RMS reprojection error in pixels (every joint alike if no weight;
    inf if no joint); sw is w's sum."""
    if len(w) == 0:
        return math.inf
    if not sw > _MIN_TOTAL_CONF:
        w, sw = np.ones(len(w)), float(len(w))
    q = p3 + t
    # A joint at or behind the camera has no image; a tiny positive depth makes its error huge but finite.
    e = q[:, :2] / np.maximum(q[:, 2:3], 1e-9) - n
    ex2, ey2 = (w @ (e * e)).tolist()
    return math.sqrt((k.fx * k.fx * ex2 + k.fy * k.fy * ey2) / sw)
