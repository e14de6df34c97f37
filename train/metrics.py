"""Pose metrics: MPJPE, PA-MPJPE (after Procrustes alignment) and 2D PCK.

Inputs are arrays of poses (..., J, 3) or (..., J, 2); results are means over everything but the
joint axis unless said otherwise. Units are whatever the inputs are in (report millimetres).
"""

from __future__ import annotations

import numpy as np


def mpjpe(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean per-joint position error: the mean Euclidean distance over joints and poses."""
    return float(np.linalg.norm(np.asarray(pred, np.float64) - np.asarray(target, np.float64), axis=-1).mean())


def procrustes_align(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """`pred` (N, J, 3) moved onto `target` by the best similarity transform (rotation, uniform
    scale, translation) per pose, reflections excluded. A pose with a non-finite coordinate (in
    either) comes back NaN, as its MPJPE is, and leaves the others alone (the SVD would fail on all)."""
    pred = np.asarray(pred, np.float64)
    target = np.asarray(target, np.float64)
    finite = np.isfinite(pred).all(axis=(1, 2)) & np.isfinite(target).all(axis=(1, 2))
    if not finite.all():
        out = np.full(np.broadcast_shapes(pred.shape, target.shape), np.nan)
        if finite.any():
            out[finite] = procrustes_align(pred[finite], target[finite])
        return out
    mu_p, mu_t = pred.mean(axis=1, keepdims=True), target.mean(axis=1, keepdims=True)
    p, t = pred - mu_p, target - mu_t
    h = np.einsum("nji,njk->nik", p, t)                       # (N, 3, 3) covariance
    u, s, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(np.einsum("nij,njk->nik", vt.transpose(0, 2, 1), u.transpose(0, 2, 1))))
    fix = np.ones_like(s)
    fix[:, -1] = d
    rot = np.einsum("nij,nj,njk->nik", vt.transpose(0, 2, 1), fix, u.transpose(0, 2, 1))
    var = (p ** 2).sum(axis=(1, 2))
    scale = (s * fix).sum(axis=1) / np.maximum(var, 1e-12)
    return scale[:, None, None] * np.einsum("nik,njk->nji", rot, p) + mu_t


def pa_mpjpe(pred: np.ndarray, target: np.ndarray) -> float:
    """MPJPE after Procrustes alignment of each pose."""
    pred = np.asarray(pred).reshape(-1, *np.shape(pred)[-2:])
    target = np.asarray(target).reshape(-1, *np.shape(target)[-2:])
    return mpjpe(procrustes_align(pred, target), target)


def pck(pred_2d: np.ndarray, target_2d: np.ndarray, ref_length: np.ndarray, threshold: float = 0.2,
        visible: np.ndarray | None = None) -> float:
    """Fraction of joints within `threshold` x `ref_length` (one per pose, e.g. torso size) of the
    target, over visible joints."""
    dist = np.linalg.norm(np.asarray(pred_2d, np.float64) - np.asarray(target_2d, np.float64), axis=-1)
    ok = dist <= threshold * np.asarray(ref_length, np.float64)[..., None]
    if visible is None:
        return float(ok.mean())
    vis = np.asarray(visible, bool)
    return float(ok[vis].mean()) if vis.any() else float("nan")


def calibration_sums(conf: np.ndarray, hit: np.ndarray, bins: int = 10) -> np.ndarray:
    """(3, bins): per bin of equal width of `conf` (n,) in [0, 1], its joints, their confidences
    summed and their hits (`hit` (n,) bool, a joint within PCK). Sums, so that sets pool by adding."""
    conf = np.clip(np.asarray(conf, np.float64).ravel(), 0.0, 1.0)
    hit = np.asarray(hit, bool).ravel()
    if conf.shape != hit.shape:
        raise ValueError(f"conf and hit differ in size ({conf.size} and {hit.size})")
    which = np.minimum((conf * bins).astype(np.int64), bins - 1)   # conf 1.0 falls in the top bin
    return np.stack([np.bincount(which, minlength=bins).astype(np.float64),
                     np.bincount(which, weights=conf, minlength=bins),
                     np.bincount(which, weights=hit.astype(np.float64), minlength=bins)])


def calibration_from_sums(sums: np.ndarray) -> dict[str, object]:
    """`calibration` of `calibration_sums` (of one set, or of several added together)."""
    joints, conf, hits = np.asarray(sums, np.float64)
    bins, total = len(joints), int(joints.sum())
    if not total:
        return {"ece": float("nan"), "joints": 0, "bins": []}
    rows = [{"low": b / bins, "high": (b + 1) / bins, "joints": int(joints[b]),
             "mean_conf": float(conf[b] / joints[b]), "hit_rate": float(hits[b] / joints[b])}
            for b in range(bins) if joints[b] > 0]
    ece = sum(r["joints"] / total * abs(r["hit_rate"] - r["mean_conf"]) for r in rows)
    return {"ece": float(ece), "joints": total, "bins": rows}


def calibration(conf: np.ndarray, hit: np.ndarray, bins: int = 10) -> dict[str, object]:
    """How well a confidence reads as the chance of a hit: `conf` (n,) in [0, 1] against `hit` (n,)
    bool (a joint within PCK). The expected calibration error (the bins' |hit rate - mean conf|,
    weighted by their share of the joints) and, per non-empty bin of equal width, its joints, mean
    conf and hit rate."""
    return calibration_from_sums(calibration_sums(conf, hit, bins))
