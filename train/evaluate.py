"""Evaluation: `python -m train.evaluate --model M.pt|M.onnx --synth-val DIR.. --real2d DIR` (or
`posecast evaluate`).

What is measured, and how:
- The model runs on uint8 BGR crops: a `.pt` as the PyTorch network in eval mode, a `.onnx` with
  ONNX Runtime on the CPU; both give `probs_2d` and `offsets_3d`.
- 2D: `engines.grid.decode` (the tracker's decoding). PCK@0.2: a joint is correct within 0.2 x
  the torso diameter, here the distance between l_shoulder and r_hip in the ground-truth 2D
  (a diagonal of the torso: defined for every pose of both sets, both joints labelled in the
  real set, and not zero for a person seen side-on, as shoulder or hip width would be).
  Synthetic: over every labelled joint inside the crop. Real: over the labelled joints of the
  held-out split (12 COCO limb joints plus the pelvis, their hips' midpoint), crops made
  without augmentation around the labels with the tracker's margin (train/datasets.py).
- 3D (synthetic only): the per-root offsets are combined with each `engines.align.RootAligner`
  method, given the decoded 2D confidences (as the pipeline does); the result is the pose
  relative to the pelvis, compared with the ground truth minus its pelvis. MPJPE and PA-MPJPE
  (after a per-pose similarity Procrustes) in millimetres, means over joints and poses (the
  pelvis counts, with error 0, as usual for root-relative MPJPE).
- By framing: the renderer makes two kinds of crops (train/synth/scene.py): like the tracker's
  (the joints span 1/1.7 to 1/1.15 of the side) and like its full-frame search (a small person,
  0.12 to 0.55 of the side). The pipeline publishes the result of a tracking crop only (a search
  is always followed by a pass on a crop cut around the joints it found: streamer/tracking.py), so
  the 3D metrics are also given for each kind, told apart by the ground-truth joints' extent.
- Tracking crops by how far the person (the ray through their 2D joints' mean) is off the
  camera's optical axis (0-10, 10-20, over 20 degrees; the camera fitted to each sample's
  labels): where a camera-frame model must guess the turn that the ray frame removes
  (engines/ray_frame.py). A ray-frame model's pose is turned into the camera's frame as the
  pipeline turns it, by the ray through the decoded 2D joints (the labelled ones with
  `--exact-2d`), with the camera's focal length known (fitted to each sample's labels): what a
  user who gives `--focal` gets.
- Where it fails (train/breakdown.py): the tracking crops' MPJPE, PA-MPJPE and 2D PCK by the
  person's facing (front, side, back), the camera's height above them, the kind of motion and the
  number of hidden joints; every crop's by the person's scale in it; and the real photos' PCK by
  the view their labels show (front, side, back).
- Real photos also get their PCK with the prediction's left and right exchanged, and the share of
  3D poses facing away from the camera (the chest's direction over 90° from the camera's, the
  pose put on the crop's axis 5 m ahead: the photos' cameras are unknown). On photos of backs a
  model that sees them as fronts scores low PCK, high exchanged PCK and few poses facing away.
  `--real-files LIST` evaluates only the photos a text file names (train/real_back_views.txt:
  the 19 photos of backs), from both splits.
- Left/right pairs (`twin_errors`): the share of pairs with a gross error (a joint beyond 0.5
  torso diagonals), and of those where the two predictions lie together (within 0.2): both
  joints on one limb. Synthetic tracking and search crops apart, and the real photos.
- `--exact-2d` (a diagnostic, `.pt` models with a lifter): the lifter reads the labelled 2D
  joints at full confidence instead of the decoded ones; the 2D metrics stay the network's.
  The 3D error that is left is the 3D branch's own, what perfect 2D would give.
- `--per-root`: each root's own offsets before any alignment, against the ground-truth offsets
  from that root (its own entry, 0 by construction, left out): how good each row is alone.
- Confidence calibration (`conf_calibration`): how well each joint's confidence, which the
  stream publishes as `conf`, reads as the chance that the joint is within PCK@0.2: the share
  within it per tenth of confidence, and the expected calibration error (those shares' distance
  from the bins' mean confidence, weighted by the bins' joints). Synthetic and real.
- The tracker's score (the mean joint confidence, which its search compares with
  `tracking.detect_min_score`): its mean on each set, and the share of crops that reach the
  threshold. `--backgrounds DIR` adds person-free crops of the held-out background photos
  (train/negatives.py, seeded): there the share found is the false-detection rate.

- Intervals (train/intervals.py): the headline figures (each set's 2D PCK, the synthetic MPJPE
  and PA-MPJPE per method) get a 95% interval from resampling the samples: real photos one by
  one, rendered images by their held-out motion, whole (41 motions in `synth_val` and
  `synth_val_dm`), since images of one motion are alike. `--against OTHER.json` pairs this run
  with another model's `--json` of the same samples and gives each figure's difference with its
  own interval (train/eval_against.py): the same photos read by two models differ by far less
  noise than either figure has.

`--limit N` takes N samples evenly spread over each set (each shard is drawn from its own random
stream, so N spread samples cover the shards alike).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engines.arguments import OneLineParser
from engines.align import METHODS, RootAligner
from engines.errors import InputError
from engines.files import check_report_output, input_overwritten
from engines.grid import decode, window_cells
from engines.model_config import FLIP_TEST_MODES, ModelConfig
from engines.ray_frame import fit_pinholes, off_axis_degrees, person_rotations
from streamer.config import MAX_BATCH_SIZE, MAX_THREADS
from train import breakdown as bd
from train.command import run_command
from train.intervals import crossed_ratio_interval, ratio_interval
from train.metrics import calibration, mpjpe, pa_mpjpe, procrustes_align

PROG = "evaluate"
PCK_THRESHOLD = 0.2
# A joint within half a torso diagonal is roughly in place: what PCK@0.2 misses beyond it are gross
# errors (a joint on the wrong limb or side), not imprecision.
PCK_WIDE = 0.5
TORSO = ("l_shoulder", "r_hip")
# Between the renderer's search crops (extent <= 0.55 of the side) and tracking crops (>= 0.588).
TRACKING_EXTENT = 0.57
# Real photos: their 3D pose is judged on the crop's axis this far from the camera.
REAL_FACING_DEPTH_M = 5.0
# Degrees between the person's ray and the camera's optical axis (engines/ray_frame.py).
OFF_AXIS_BINS = ((0.0, 10.0), (10.0, 20.0), (20.0, 180.0))


# --- running a model ---------------------------------------------------------------------

class TorchPredictor:
    """A PyTorch network (put in eval mode by the caller, or here) -> numpy outputs."""

    def __init__(self, net: Any, exact_2d: bool = False) -> None:
        self.net = net
        self.exact_2d = exact_2d     # collect() then passes the labelled 2D (PoseNet.forward's diagnostic)

    def __call__(self, images: np.ndarray, joints_2d: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        import torch

        was_training = self.net.training
        self.net.eval()
        device = next(self.net.parameters()).device
        exact = None if joints_2d is None else torch.from_numpy(np.asarray(joints_2d, np.float32)).to(device)
        try:
            with torch.no_grad():
                probs, offsets = self.net(torch.from_numpy(np.ascontiguousarray(images)).to(device), exact)
        finally:
            self.net.train(was_training)
        return probs.cpu().numpy(), offsets.cpu().numpy()


class OnnxPredictor:
    def __init__(self, path: Path, threads: int = 0) -> None:
        from engines.backends.onnxruntime_backend import OnnxRuntimeBackend

        self.backend = OnnxRuntimeBackend(Path(path), "cpu", threads)

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self.backend.infer(np.ascontiguousarray(images))
        return out.probs_2d, out.offsets_3d


def load_predictor(path: str | Path, threads: int = 0, flip_test: str | None = None,
                   exact_2d: bool = False) -> tuple[Callable, ModelConfig, str]:
    """A model file -> (predictor, its model config, its weights line). `flip_test` overrides the
    model's test-time mirroring (a `.pt` only: an ONNX graph holds it); None keeps it. `exact_2d`:
    the lifter reads the labelled 2D joints (a `.pt` with a lifter only)."""

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        from engines.model_file import read_onnx_info

        info = read_onnx_info(path)
        if flip_test is not None and flip_test != info.config.flip_test:
            raise InputError(f"{path}: test-time mirroring is part of an ONNX graph ('{info.config.flip_test}' "
                             f"in this one); evaluate its .pt checkpoint to change it")
        if exact_2d:
            raise InputError(f"{path}: --exact-2d needs the .pt checkpoint (an ONNX graph decodes its own 2D)")
        return OnnxPredictor(path, threads), info.config, info.weights
    if suffix in (".pt", ".pth"):
        import torch

        from engines.model_file import load_checkpoint, with_flip_test

        if threads > 0:
            torch.set_num_threads(threads)
        net, info = load_checkpoint(path)
        if flip_test is not None:
            net, info = with_flip_test(net, info, flip_test, path)
        if exact_2d and not info.config.lift_width:
            raise InputError(f"{path}: --exact-2d feeds the lifter, and this model has none (lift_width 0)")
        return TorchPredictor(net, exact_2d), info.config, info.weights
    from engines.models import model_type_error

    raise model_type_error(path)


# --- collecting predictions ---------------------------------------------------------------

def spread_indices(n: int, limit: int | None) -> np.ndarray:
    """`limit` indices spread evenly over range(n) (all of them without a limit)."""
    if limit is None or limit >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max(limit, 1)).round().astype(np.int64))


def _np(x: Any) -> np.ndarray:
    return x.numpy() if hasattr(x, "numpy") else np.asarray(x)


def collect(predictor: Callable, dataset: Any, indices: Sequence[int], batch_size: int = 32,
            progress: Any = None) -> dict[str, np.ndarray]:
    """Runs the predictor over dataset[indices]; stacks labels and outputs."""
    keys = ("joints_2d", "mask_2d", "joints_3d", "has_3d")
    acc: dict[str, list[np.ndarray]] = {k: [] for k in keys + ("probs", "offsets")}
    for lo in range(0, len(indices), batch_size):
        items = [dataset[int(i)] for i in indices[lo:lo + batch_size]]
        images = np.stack([_np(it["image"]) for it in items]).astype(np.uint8, copy=False)
        if getattr(predictor, "exact_2d", False):
            probs, offsets = predictor(images, np.stack([_np(it["joints_2d"]) for it in items]))
        else:
            probs, offsets = predictor(images)
        acc["probs"].append(np.asarray(probs, np.float32))
        acc["offsets"].append(np.asarray(offsets, np.float32))
        for k in keys:
            acc[k].append(np.stack([_np(it[k]) for it in items]).astype(np.float32))
        if progress is not None:
            progress.update(len(items))
    return {k: np.concatenate(v) for k, v in acc.items()}


# --- metrics -----------------------------------------------------------------------------

def torso_diameter(joints_2d: np.ndarray, cfg: ModelConfig) -> np.ndarray:
    a, b = cfg.skeleton.indices(TORSO)
    return np.linalg.norm(joints_2d[..., a, :] - joints_2d[..., b, :], axis=-1)


def in_crop(joints_2d: np.ndarray, size: int) -> np.ndarray:
    return np.all((joints_2d >= 0) & (joints_2d < size), axis=-1)


def _pck_terms(points: np.ndarray, gt: np.ndarray, visible: np.ndarray,
               cfg: ModelConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(N, J) each: the joints that count (visible, in a pose with a torso), their 2D error in
    pixels, and whether it is within PCK_THRESHOLD and within PCK_WIDE torso diagonals."""
    torso = torso_diameter(gt, cfg)
    vis = visible & (torso > 1e-6)[:, None]
    dist = np.linalg.norm(points.astype(np.float64) - gt, axis=-1)
    return vis, dist, dist <= PCK_THRESHOLD * torso[:, None], dist <= PCK_WIDE * torso[:, None]


def metrics_2d(points: np.ndarray, gt: np.ndarray, visible: np.ndarray, cfg: ModelConfig) -> dict[str, Any]:
    """PCK@0.2 overall and per joint, and the mean 2D error in pixels, over `visible` joints."""
    vis, dist, hit, near = _pck_terms(points, gt, visible, cfg)
    per_joint = {}
    for j, name in enumerate(cfg.skeleton.joint_names):
        if vis[:, j].any():
            per_joint[name] = {"pck": float(hit[vis[:, j], j].mean()), "error_px": float(dist[vis[:, j], j].mean()),
                               "pck_wide": float(near[vis[:, j], j].mean()), "count": int(vis[:, j].sum())}
    return {
        "pck": float(hit[vis].mean()) if vis.any() else float("nan"),
        "pck_wide": float(near[vis].mean()) if vis.any() else float("nan"),
        "error_px": float(dist[vis].mean()) if vis.any() else float("nan"),
        "joints": int(vis.sum()),
        "per_joint": per_joint,
    }


def conf_calibration(points: np.ndarray, conf: np.ndarray, gt: np.ndarray, visible: np.ndarray,
                     cfg: ModelConfig) -> dict[str, Any]:
    """How well each joint's confidence (what the stream publishes as `conf`) reads as the chance
    that the joint is within PCK_THRESHOLD torso diagonals, over the joints PCK counts."""
    vis, _, hit, _ = _pck_terms(points, gt, visible, cfg)
    return calibration(conf[vis], hit[vis])


def twin_errors(points: np.ndarray, gt: np.ndarray, visible: np.ndarray, cfg: ModelConfig) -> dict[str, Any]:
    """Left/right pairs (both joints counted, as PCK counts them): the share with a gross error
    (either joint beyond PCK_WIDE torso diagonals) and the share whose two predictions lie
    within PCK_THRESHOLD torso diagonals of each other while one of them is gross: both joints
    on one limb, the error that a left map taking its right twin's place makes. Overall and per
    pair (named by the left joint without its prefix)."""
    vis, dist, _, near = _pck_terms(points, gt, visible, cfg)
    torso = torso_diameter(gt, cfg)
    out: dict[str, Any] = {"per_pair": {}}
    total = gross_n = together_n = 0
    for left, right in cfg.skeleton.left_right_pairs:
        both = vis[:, left] & vis[:, right]
        gross = both & ~(near[:, left] & near[:, right])
        apart = np.linalg.norm(points[:, left].astype(np.float64) - points[:, right], axis=-1)
        together = gross & (apart <= PCK_THRESHOLD * torso)
        n = int(both.sum())
        out["per_pair"][cfg.skeleton.joint_names[left][2:]] = {
            "pairs": n, "gross": float(gross.sum() / n) if n else float("nan"),
            "together": float(together.sum() / n) if n else float("nan")}
        total, gross_n, together_n = total + n, gross_n + int(gross.sum()), together_n + int(together.sum())
    out.update(pairs=total, gross=gross_n / total if total else float("nan"),
               together=together_n / total if total else float("nan"))
    return out


def metrics_3d(pred: np.ndarray, gt_rel: np.ndarray, cfg: ModelConfig) -> dict[str, Any]:
    """MPJPE and PA-MPJPE in mm, and the per-joint MPJPE, of root-relative poses (N, J, 3) m."""
    err = np.linalg.norm(pred.astype(np.float64) - gt_rel, axis=-1) * 1000.0          # (N, J)
    pa = np.linalg.norm(procrustes_align(pred, gt_rel) - gt_rel, axis=-1) * 1000.0
    return {
        "mpjpe_mm": mpjpe(pred, gt_rel) * 1000.0,
        "pa_mpjpe_mm": pa_mpjpe(pred, gt_rel) * 1000.0,
        "per_joint_mm": {n: float(err[:, j].mean()) for j, n in enumerate(cfg.skeleton.joint_names)},
        "per_joint_pa_mm": {n: float(pa[:, j].mean()) for j, n in enumerate(cfg.skeleton.joint_names)},
    }


def per_root_errors(offsets: np.ndarray, joints_3d: np.ndarray, cfg: ModelConfig) -> dict[str, float]:
    """Each root's own offsets, before alignment: mean error (mm) against the ground truth's
    offsets from that root, over the other joints."""
    out = {}
    for r, (name, idx) in enumerate(zip(cfg.roots, cfg.root_indices)):
        target = joints_3d - joints_3d[:, idx:idx + 1]
        err = np.linalg.norm(offsets[:, r].astype(np.float64) - target, axis=-1)
        others = np.arange(cfg.skeleton.num_joints) != idx
        out[name] = float(err[:, others].mean() * 1000.0)
    return out


def framing(joints_2d: np.ndarray, size: int) -> np.ndarray:
    """Per sample: True for a tracking-like crop, False for a search-like one (see above)."""
    extent = (joints_2d.max(axis=1) - joints_2d.min(axis=1)).max(axis=-1)
    return extent >= TRACKING_EXTENT * size


def by_off_axis(pred: np.ndarray, gt_rel: np.ndarray, degrees: np.ndarray) -> dict[str, Any]:
    """MPJPE and PA-MPJPE (mm) of the poses whose person is 0-10, 10-20 and over 20 degrees off
    the camera's optical axis (engines/ray_frame.py)."""
    out: dict[str, Any] = {}
    for lo, hi in OFF_AXIS_BINS:
        keep = (degrees >= lo) & (degrees < hi)
        if keep.any():
            out[f"{lo:g}-{hi:g}" if hi < 180 else f"{lo:g}+"] = {
                "samples": int(keep.sum()), "mpjpe_mm": mpjpe(pred[keep], gt_rel[keep]) * 1000.0,
                "pa_mpjpe_mm": pa_mpjpe(pred[keep], gt_rel[keep]) * 1000.0}
    return out


def sample_errors(points: np.ndarray, gt2d: np.ndarray, visible: np.ndarray, cfg: ModelConfig,
                  pred: np.ndarray | None = None, gt_rel: np.ndarray | None = None) -> bd.SampleErrors:
    """Per sample: the 2D hits at PCK@0.2 over its labelled joints (as `metrics_2d` counts them)
    and, given root-relative 3D poses for every sample, MPJPE and PA-MPJPE in mm (else None)."""
    vis, _, hit, _ = _pck_terms(points, gt2d, visible, cfg)
    err = pa = None
    if pred is not None and gt_rel is not None:
        err = np.linalg.norm(pred.astype(np.float64) - gt_rel, axis=-1).mean(axis=1) * 1000.0
        pa = np.linalg.norm(procrustes_align(pred, gt_rel) - gt_rel, axis=-1).mean(axis=1) * 1000.0
    return bd.SampleErrors(err, pa, (hit & vis).sum(axis=1), vis.sum(axis=1))


def per_sample_record(errors: bd.SampleErrors, clusters: np.ndarray | None,
                      backgrounds: np.ndarray | None = None) -> dict[str, Any]:
    """What a paired comparison with another model needs (train/eval_against.py): each sample's
    PCK hits and labelled joints, its cluster (held-out motion; None: each sample its own) and,
    for rendered images, its background (resampled with the motions, crossed)."""
    rec = {"clusters": None if clusters is None else [str(c) for c in clusters],
           "pck_hits": errors.hits.astype(int).tolist(), "pck_joints": errors.labelled.astype(int).tolist()}
    if backgrounds is not None:
        rec["backgrounds"] = [str(b) for b in backgrounds]
    return rec


def add_intervals(res: dict[str, Any], errors: bd.SampleErrors, factors: Sequence[np.ndarray]) -> None:
    """The 95% interval of a set's PCK, resampling the samples by what they share: each sample alone
    (no factor), the levels of one factor whole, or those of several crossed factors at once."""
    res["2d"]["pck_interval"] = crossed_ratio_interval(errors.hits, errors.labelled, factors).as_list()


def add_3d_intervals(res: dict[str, Any], errors: bd.SampleErrors, factors: Sequence[np.ndarray]) -> dict[str, list]:
    """The same for one alignment method's MPJPE and PA-MPJPE; returns their per-sample errors."""
    ones = np.ones(len(errors.mpjpe_mm))
    res["mpjpe_interval_mm"] = crossed_ratio_interval(errors.mpjpe_mm, ones, factors).as_list()
    res["pa_mpjpe_interval_mm"] = crossed_ratio_interval(errors.pa_mpjpe_mm, ones, factors).as_list()
    return {"mpjpe_mm": np.round(errors.mpjpe_mm, 4).tolist(), "pa_mpjpe_mm": np.round(errors.pa_mpjpe_mm, 4).tolist()}


def by_factor(j3: np.ndarray, gt2d: np.ndarray, tracking: np.ndarray, motion: np.ndarray | None,
              hidden: np.ndarray | None, errors: bd.SampleErrors, cfg: ModelConfig) -> dict[str, Any]:
    """The synthetic errors split by viewpoint, pose, hidden joints (`tracking` crops: what the
    pipeline publishes) and the person's scale (every crop): train/breakdown.py. `motion` and
    `hidden` (per sample) are None where the set does not record them."""
    labels: list[tuple[str, np.ndarray, Sequence[str], bool]] = [
        ("facing", bd.bin_numeric(bd.facing_degrees(j3, cfg.skeleton), bd.FACING_BINS),
         [b[0] for b in bd.FACING_BINS], True),
        ("camera height", bd.bin_numeric(bd.camera_height_degrees(j3, cfg.skeleton), bd.CAMERA_HEIGHT_BINS),
         [b[0] for b in bd.CAMERA_HEIGHT_BINS], True),
    ]
    if motion is not None:
        labels.append(("pose", bd.pose_groups(motion), [g for g, _ in bd.POSE_GROUPS] + [bd.OTHER_POSE], True))
    if hidden is not None:
        labels.append(("hidden joints", bd.bin_numeric(hidden.astype(np.float64), bd.HIDDEN_BINS),
                       [b[0] for b in bd.HIDDEN_BINS], True))
    labels.append(("scale", bd.bin_numeric(bd.extent_share(gt2d, cfg.input_size), bd.SCALE_BINS),
                   [b[0] for b in bd.SCALE_BINS], False))
    factors: dict[str, Any] = {}
    for name, lab, order, tracking_only in labels:
        lab = lab.copy()
        if tracking_only:
            lab[~tracking] = ""
        factors[name] = {"crops": "tracking" if tracking_only else "all", "bins": bd.summarise(lab, errors, order)}
    return factors


def synthetic_metrics(out: dict[str, np.ndarray], cfg: ModelConfig, methods: Iterable[str],
                      per_root: bool = False, by_framing: bool = True, window: int = 1) -> dict[str, Any]:
    methods = list(methods)
    points, conf = decode(out["probs"], cfg.input_size, window)
    gt2d = out["joints_2d"].astype(np.float64)
    visible = (out["mask_2d"] > 0) & in_crop(gt2d, cfg.input_size)
    res: dict[str, Any] = {"samples": len(points), "2d": metrics_2d(points, gt2d, visible, cfg)}
    # Rendered images of one held-out motion are alike, and so are those on one background photo:
    # the intervals, paired or not, resample motions and backgrounds at once.
    factors = [out[k] for k in ("motion", "background") if k in out]
    if by_framing:
        errors_2d = sample_errors(points, gt2d, visible, cfg)
        add_intervals(res, errors_2d, factors)
        res["per_sample"] = per_sample_record(errors_2d, out.get("motion"), out.get("background"))
        # Only the top-level call splits by framing; its per-framing sub-calls do not need it.
        tracking = framing(gt2d, cfg.input_size)
        res["framing"] = {}
        for kind, keep in (("tracking", tracking), ("search", ~tracking)):
            if keep.any():
                part = {k: v[keep] for k, v in out.items()}
                sub = synthetic_metrics(part, cfg, methods, by_framing=False, window=window)
                res["framing"][kind] = {"samples": sub["samples"], "pck": sub["2d"]["pck"],
                                        "error_px": sub["2d"]["error_px"],
                                        "twins": twin_errors(points[keep], gt2d[keep], visible[keep], cfg),
                                        "calibration": conf_calibration(points[keep], conf[keep], gt2d[keep],
                                                                        visible[keep], cfg),
                                        "3d": {m: {k: v for k, v in r.items() if not k.startswith("per_joint")}
                                               for m, r in sub.get("3d", {}).items()}}
    has3d = out["has_3d"] > 0
    if has3d.any():
        skel = cfg.skeleton
        origin = skel.index(skel.origin)
        gt3 = out["joints_3d"][has3d].astype(np.float64)
        gt_rel = gt3 - gt3[:, origin:origin + 1]
        res["3d"] = {}
        if by_framing:
            res["per_sample"]["has_3d"] = has3d.astype(int).tolist()
        turn = None
        if cfg.offsets_frame == "ray" and "pinhole" in out:
            # As the align stage does: the ray through the decoded joints (the labelled ones under
            # --exact-2d), with the camera's focal length known.
            cam = out["pinhole"][has3d]
            seen = out.get("turn_points", points)[has3d]
            turn = person_rotations(seen, cam[:, 0], cam[:, 1:])
        for method in methods:
            aligner = RootAligner(skel.num_joints, cfg.root_indices, origin, method)
            pred = aligner(out["offsets"][has3d], conf[has3d])
            if turn is not None:
                pred = np.einsum("nij,nkj->nki", turn, pred)
            res["3d"][method] = metrics_3d(pred, gt_rel, cfg)
            if by_framing:
                errors = sample_errors(points[has3d], gt2d[has3d], visible[has3d], cfg, pred, gt_rel)
                res["per_sample"].setdefault("3d", {})[method] = add_3d_intervals(
                    res["3d"][method], errors, [f[has3d] for f in factors])
            if by_framing and method == methods[-1]:
                extra = {k: out[k][has3d] if k in out else None for k in ("motion", "hidden")}
                res["breakdown"] = {"method": method, "factors": by_factor(
                    gt3, gt2d[has3d], tracking[has3d], extra["motion"], extra["hidden"], errors, cfg)}
            if "off_axis_deg" in out and by_framing and method == methods[-1]:
                # Tracking crops only: what the pipeline publishes (search crops are harder at every angle).
                track = tracking[has3d]
                res["off_axis"] = {"method": method, "crops": "tracking",
                                   "bins": by_off_axis(pred[track], gt_rel[track], out["off_axis_deg"][has3d][track])}
        if per_root:
            res["per_root_mm"] = per_root_errors(out["offsets"][has3d], gt3, cfg)
    return res


def real_metrics(out: dict[str, np.ndarray], cfg: ModelConfig, window: int = 1) -> dict[str, Any]:
    """2D PCK of the real photos, overall, per joint and by the view their labels show; the PCK
    with the prediction's left and right exchanged (a model that sees a back as a front scores
    low, and high exchanged); and the share of 3D poses facing away from the camera."""
    points, conf = decode(out["probs"], cfg.input_size, window)
    gt, labelled = out["joints_2d"].astype(np.float64), out["mask_2d"] > 0
    # PCK's reference is the labelled torso diagonal: a photo without a label on either of its
    # joints has none (an unlabelled joint's position is 0, warped into the crop), so none of its
    # joints count.
    a, b = cfg.skeleton.indices(TORSO)
    labelled = labelled & (labelled[:, a] & labelled[:, b])[:, None]
    views = bd.real_views(gt, labelled, cfg.skeleton)
    by_view = bd.summarise(views, sample_errors(points, gt, labelled, cfg), bd.REAL_VIEWS)
    exchanged = metrics_2d(points[:, list(cfg.skeleton.flip_permutation)], gt, labelled, cfg)
    skel = cfg.skeleton
    pose = RootAligner(skel.num_joints, cfg.root_indices, skel.index(skel.origin), "weighted")(out["offsets"], conf)
    # The photos' cameras are unknown: the pose is put on the crop's axis, REAL_FACING_DEPTH_M ahead.
    facing = bd.facing_degrees(pose + np.array([0.0, 0.0, REAL_FACING_DEPTH_M]), skel)
    errors = sample_errors(points, gt, labelled, cfg)
    res = {"samples": len(points), "2d": metrics_2d(points, gt, labelled, cfg), "views": by_view,
            "twins": twin_errors(points, gt, labelled, cfg),
            "calibration": conf_calibration(points, conf, gt, labelled, cfg),
            "pck_exchanged": exchanged["pck"], "facing_away": float(np.mean(facing > 90.0)) if len(points) else float("nan"),
            "per_sample": per_sample_record(errors, None)}
    if "background" in out:
        # Photos put before a few backgrounds (--real-backdrops): photos and backgrounds are
        # resampled crossed, each photo its own cluster, as rendered images' motions and backgrounds.
        factors = [np.arange(len(points)).astype(str), out["background"]]
        res["per_sample"] = per_sample_record(errors, factors[0], factors[1])
    else:
        factors = []
    if len(points):
        add_intervals(res, errors, factors)
    return res


def pipeline_scoring() -> tuple[float, int]:
    """The pipeline's `tracking.detect_min_score` and `alignment.window` (configs/pipeline.yaml):
    what its search calls a person, and the decoding window its confidences come from."""
    from streamer.config import load_pipeline_config

    pipeline = load_pipeline_config()
    return float(pipeline.tracking.detect_min_score), int(pipeline.alignment.window)


def score_metrics(out: dict[str, np.ndarray], cfg: ModelConfig, detect_score: float, window: int,
                  sources: np.ndarray | None = None) -> dict[str, Any]:
    """The tracker's score of each crop (mean joint confidence, decoded with its `window`): its
    mean, and the share of crops at or above `detect_score` (a person found, for a search). Given
    each crop's source (the photo a person-free crop is cut from), that share gets its 95%
    interval, resampling the sources whole: crops of one photo are alike."""
    _, conf = decode(out["probs"], cfg.input_size, window)
    score = conf.mean(axis=-1)
    found = (score >= detect_score).astype(np.float64)
    res = {"mean": float(score.mean()), "detected": float(found.mean()), "threshold": float(detect_score)}
    if sources is not None and len(found):
        res["detected_interval"] = ratio_interval(found, np.ones_like(found), sources).as_list()
    return res


def evaluate(predictor: Callable, cfg: ModelConfig, synth_ds: Any | None, real_ds: Any | None,
             methods: Sequence[str] = METHODS, limit: int | None = None, per_root: bool = False,
             batch_size: int = 32, progress: bool = False, negative_ds: Any | None = None,
             detect_score: float | None = None, window: int | None = None) -> dict[str, Any]:
    """All metrics of one model on the given validation sets (any may be None). Every set also
    gets the tracker's score statistics ("score") at `detect_score` (None: the pipeline's);
    for the person-free crops of `negative_ds` that is all there is: "detected" is then the
    false-detection rate. `limit` caps the synthetic and real sets, not the person-free crops,
    which `negative_ds` makes as many as asked for. Every decoding uses `window` (None: the
    pipeline's)."""
    from tqdm import tqdm

    pipeline_score, pipeline_window = pipeline_scoring()
    if detect_score is None:
        detect_score = pipeline_score
    if window is None:
        window = pipeline_window
    cells = window_cells(window, cfg.input_size, cfg.grid_size)
    sets = [(key, ds) for key, ds in (("synthetic", synth_ds), ("real", real_ds), ("negative", negative_ds))
            if ds is not None]
    # The person-free crops were made as many as asked for (--negatives): a limit is not theirs.
    plan = {key: spread_indices(len(ds), None if key == "negative" else limit) for key, ds in sets}
    results: dict[str, Any] = {"pck_threshold": PCK_THRESHOLD, "torso": list(TORSO), "methods": list(methods),
                               "window": window, "window_cells": cells}
    with tqdm(total=sum(len(v) for v in plan.values()), disable=not progress, unit="img", file=sys.stderr,
              dynamic_ncols=True) as bar:
        t0 = time.perf_counter()
        for key, ds in sets:
            bar.set_description(key)
            out = collect(predictor, ds, plan[key], batch_size, bar)
            if key == "synthetic":
                shards = getattr(ds, "shards", None)
                if shards is not None:
                    # What the image shows, for the breakdown (train/breakdown.py).
                    labels = [shards.labels(int(i)) for i in plan[key]]
                    out["motion"] = np.array([lab["motion"] for lab in labels], dtype=object)
                    out["background"] = np.array([lab["background"] for lab in labels], dtype=object)
                    out["hidden"] = np.array([np.size(lab["visible"]) - np.count_nonzero(lab["visible"])
                                              for lab in labels])
                if getattr(ds, "offsets_frame", "camera") == "camera":
                    # Each sample's camera, fitted to its camera-frame labels: how far off its axis the
                    # person is, and the turn a ray-frame model's pose gets (see synthetic_metrics).
                    cams = fit_pinholes(out["joints_2d"], out["joints_3d"])
                    out["pinhole"] = cams
                    out["off_axis_deg"] = off_axis_degrees(person_rotations(out["joints_2d"], cams[:, 0], cams[:, 1:]))
                    if getattr(predictor, "exact_2d", False):
                        out["turn_points"] = out["joints_2d"]
                results[key] = synthetic_metrics(out, cfg, methods, per_root, window=cells)
            elif key == "real":
                backdrops = getattr(ds, "backdrops", None)
                if backdrops is not None:       # --real-backdrops: the samples share 7 backgrounds
                    out["background"] = np.array([backdrops.shown.get(ds.records[int(i)].path.name, "")
                                                  for i in plan[key]], dtype=object)
                results[key] = real_metrics(out, cfg, cells)
            else:
                results[key] = {"samples": len(out["probs"])}
            photo_of = getattr(ds, "photo_of", None)
            sources = np.array([photo_of(int(i)) for i in plan[key]]) if photo_of else None
            results[key]["score"] = score_metrics(out, cfg, detect_score, cells, sources)
            if "per_sample" in results[key]:
                results[key]["per_sample"]["ids"] = sample_ids(ds, plan[key])
        results["seconds"] = time.perf_counter() - t0
    return results


def sample_ids(ds: Any, indices: np.ndarray) -> list:
    """What names each evaluated sample, for pairing two evaluations: a real photo's file name,
    else its index in the set."""
    records = getattr(ds, "records", None)
    if records is not None:
        return [records[int(i)].path.name for i in indices]
    return [int(i) for i in indices]


def quick_metrics(predictor: Callable, cfg: ModelConfig, synth_ds: Any | None, real_ds: Any | None,
                  limit: int, negative_ds: Any | None = None) -> dict[str, Any]:
    """The few numbers logged during training (flat, for the JSONL log)."""
    res = evaluate(predictor, cfg, synth_ds, real_ds, METHODS, limit, negative_ds=negative_ds)
    flat: dict[str, Any] = {}
    if "synthetic" in res:
        s = res["synthetic"]
        flat["synth_pck"] = s["2d"]["pck"]
        if "3d" in s:
            for m in METHODS:
                flat[f"synth_mpjpe_mm_{m}"] = s["3d"][m]["mpjpe_mm"]
            flat["synth_mpjpe_mm"] = s["3d"]["weighted"]["mpjpe_mm"]
            flat["synth_pa_mpjpe_mm"] = s["3d"]["weighted"]["pa_mpjpe_mm"]
            tracking = s.get("framing", {}).get("tracking", {}).get("3d", {}).get("weighted")
            if tracking:
                flat["synth_tracking_mpjpe_mm"] = tracking["mpjpe_mm"]
    if "real" in res:
        flat["real_pck"] = res["real"]["2d"]["pck"]
        flat["real_detected"] = res["real"]["score"]["detected"]
    if "negative" in res:
        flat["negative_detected"] = res["negative"]["score"]["detected"]
        flat["negative_score"] = res["negative"]["score"]["mean"]
    return flat


# --- report ------------------------------------------------------------------------------

def _f(x: float, digits: int = 1) -> str:
    return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{digits}f}"


def interval_span(bounds: list[float] | None, digits: int = 1) -> str:
    """An interval's bounds as "low–high" ("n/a" where it has none; empty where none was made)."""
    if bounds is None:
        return ""
    if not all(np.isfinite(bounds)):
        return "n/a"
    return f"{bounds[0]:.{digits}f}–{bounds[1]:.{digits}f}"


def markdown(res: dict[str, Any], cfg: ModelConfig, title: str = "") -> str:
    lines = [f"## {title}" if title else "## Evaluation", ""]
    methods = res["methods"]
    s, r = res.get("synthetic"), res.get("real")
    split = "val" if r is None else r.get("split", "val")
    real = {"val": "real", "train": "real (training photos)"}.get(split, f"real ({split})")
    lines += ["| set | samples | metric | value | 95% interval |", "|---|---:|---|---:|---:|"]
    if s is not None:
        for m in methods if "3d" in s else []:
            lines.append(f"| synthetic | {s['samples']} | MPJPE ({m}) mm | {_f(s['3d'][m]['mpjpe_mm'])} | "
                         f"{interval_span(s['3d'][m].get('mpjpe_interval_mm'))} |")
            lines.append(f"| synthetic | {s['samples']} | PA-MPJPE ({m}) mm | {_f(s['3d'][m]['pa_mpjpe_mm'])} | "
                         f"{interval_span(s['3d'][m].get('pa_mpjpe_interval_mm'))} |")
        lines.append(f"| synthetic | {s['samples']} | 2D PCK@{PCK_THRESHOLD} | {_f(s['2d']['pck'], 3)} | "
                     f"{interval_span(s['2d'].get('pck_interval'), 3)} |")
        lines.append(f"| synthetic | {s['samples']} | 2D error px | {_f(s['2d']['error_px'])} | |")
        for kind, f in s.get("framing", {}).items():
            label = f"synthetic, {kind} crops"
            for m in methods if f["3d"] else []:
                lines.append(f"| {label} | {f['samples']} | MPJPE ({m}) mm | {_f(f['3d'][m]['mpjpe_mm'])} | |")
            if "weighted" in f["3d"]:
                lines.append(f"| {label} | {f['samples']} | PA-MPJPE (weighted) mm | {_f(f['3d']['weighted']['pa_mpjpe_mm'])} | |")
            lines.append(f"| {label} | {f['samples']} | 2D PCK@{PCK_THRESHOLD} | {_f(f['pck'], 3)} | |")
            lines += _twin_lines(label, f['samples'], f.get("twins"))
        off = s.get("off_axis")
        for name, b in (off["bins"].items() if off else ()):
            label = f"synthetic, tracking crops {name} degrees off the camera's axis"
            lines.append(f"| {label} | {b['samples']} | MPJPE ({off['method']}) mm | {_f(b['mpjpe_mm'])} | |")
            lines.append(f"| {label} | {b['samples']} | PA-MPJPE ({off['method']}) mm | {_f(b['pa_mpjpe_mm'])} | |")
    if r is not None:
        lines.append(f"| {real} | {r['samples']} | 2D PCK@{PCK_THRESHOLD} | {_f(r['2d']['pck'], 3)} | "
                     f"{interval_span(r['2d'].get('pck_interval'), 3)} |")
        lines.append(f"| {real} | {r['samples']} | 2D error px | {_f(r['2d']['error_px'])} | |")
        lines.append(f"| {real} | {r['samples']} | 2D PCK@{PCK_WIDE} | {_f(r['2d']['pck_wide'], 3)} | |")
        lines += _twin_lines(real, r['samples'], r.get("twins"))
        if "pck_exchanged" in r:
            lines.append(f"| {real} | {r['samples']} | 2D PCK@{PCK_THRESHOLD}, left and right exchanged | "
                         f"{_f(r['pck_exchanged'], 3)} | |")
            lines.append(f"| {real} | {r['samples']} | 3D facing away (over 90°) | {_f(r['facing_away'], 3)} | |")
    for label, part in _calibrated_sets(s, r, real):
        cal = part["calibration"]
        lines.append(f"| {label} | {part['samples']} | conf calibration error (ECE, {cal['joints']} joints) | "
                     f"{_f(cal['ece'], 3)} | |")
    for key, label in (("synthetic", "synthetic"), ("real", real), ("negative", "person-free crops")):
        sc = res.get(key, {}).get("score")
        if sc is not None:
            n = res[key]["samples"]
            lines.append(f"| {label} | {n} | mean score | {_f(sc['mean'], 3)} | |")
            lines.append(f"| {label} | {n} | score >= {sc['threshold']:.2f} (found) | {_f(sc['detected'], 3)} | "
                         f"{interval_span(sc.get('detected_interval'), 3)} |")
    lines.append("")
    # Per joint.
    head = ["joint"]
    if s is not None and "3d" in s:
        head += [f"MPJPE {m} mm" for m in methods]
    if s is not None:
        head.append("synth PCK")
    if r is not None:
        head += ["real PCK", f"real PCK@{PCK_WIDE}"]
    lines += ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for name in cfg.skeleton.joint_names:
        row = [name]
        if s is not None and "3d" in s:
            row += [_f(s["3d"][m]["per_joint_mm"][name]) for m in methods]
        if s is not None:
            pj = s["2d"]["per_joint"].get(name)
            row.append(_f(pj["pck"], 3) if pj else "-")
        if r is not None:
            pj = r["2d"]["per_joint"].get(name)
            row += [_f(pj["pck"], 3), _f(pj["pck_wide"], 3)] if pj else ["-", "-"]
        lines.append("| " + " | ".join(row) + " |")
    lines += _calibration_lines(s, r, real)
    if s is not None and "per_root_mm" in s:
        lines += ["", "| root | own offsets error mm (before alignment) |", "|---|---:|"]
        lines += [f"| {k} | {_f(v)} |" for k, v in s["per_root_mm"].items()]
    lines += _breakdown_lines(s, r, real)
    return "\n".join(lines) + "\n"


def _calibrated_sets(s: dict[str, Any] | None, r: dict[str, Any] | None, real: str) -> list[tuple[str, dict]]:
    """(label, results with a "calibration") for each set that has one: the synthetic crops by
    framing (the tracking crops are what the pipeline publishes), then the real photos."""
    parts = [(f"synthetic, {kind} crops", f) for kind, f in ((s or {}).get("framing") or {}).items()]
    parts.append((real, r or {}))
    return [(label, part) for label, part in parts if part.get("calibration")]


def _calibration_lines(s: dict[str, Any] | None, r: dict[str, Any] | None, real: str) -> list[str]:
    """One row per tenth of confidence: each set's joints there and the share of them within PCK."""
    sets = [(label, part["calibration"]) for label, part in _calibrated_sets(s, r, real)]
    if not sets:
        return []
    head = ["conf"] + [f"{label}: joints | {label}: PCK@{PCK_THRESHOLD}" for label, _ in sets]
    lines = ["", "| " + " | ".join(head) + " |", "|---" + "|---:|---:" * len(sets) + "|"]
    lows = sorted({b["low"] for _, cal in sets for b in cal["bins"]})
    for low in lows:
        row = [f"{low:.1f}-{low + 0.1:.1f}"]
        for _, cal in sets:
            b = next((b for b in cal["bins"] if b["low"] == low), None)
            row += [str(b["joints"]), _f(b["hit_rate"], 3)] if b else ["0", "-"]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _twin_lines(label: str, samples: int, twins: dict[str, Any] | None) -> list[str]:
    if not twins or not twins["pairs"]:
        return []
    return [f"| {label} | {samples} | left/right pairs with a gross error (over {PCK_WIDE}) | {_f(twins['gross'], 3)} | |",
            f"| {label} | {samples} | left/right pairs gross with both on one limb | {_f(twins['together'], 3)} | |"]


def _breakdown_lines(s: dict[str, Any] | None, r: dict[str, Any] | None, real: str) -> list[str]:
    """Where it fails: the table of train/breakdown.py's factors (none: no lines)."""
    rows = []
    split = (s or {}).get("breakdown")
    for factor, f in (split["factors"].items() if split else ()):
        rows += [f"| {factor} | synthetic, {f['crops']} crops | {label} | {v['samples']} | {_f(v['mpjpe_mm'])} | "
                 f"{_f(v['pa_mpjpe_mm'])} | {_f(v['pck'], 3)} |" for label, v in f["bins"].items()]
    rows += [f"| view (from the 2D labels) | {real} | {label} | {v['samples']} | - | - | {_f(v['pck'], 3)} |"
             for label, v in ((r or {}).get("views") or {}).items()]
    if not rows:
        return []
    method = split["method"] if split else "-"
    return ["", f"| factor | set | bin | samples | MPJPE ({method}) mm | PA-MPJPE mm | 2D PCK@{PCK_THRESHOLD} |",
            "|---|---|---|---:|---:|---:|---:|"] + rows


# --- command line ------------------------------------------------------------------------

def held_out_shard_dirs(dirs: list[Path]) -> list[Path]:
    """`dirs` each once (a folder given twice would count its images twice), saying which of
    them are training sets: their manifests say so, and their figures are not held-out ones."""
    from train.shards import read_manifest

    unique = list(dict.fromkeys(dirs))
    for d in unique:
        manifest = read_manifest(d) or {}
        meta = manifest.get("meta") if isinstance(manifest, dict) else None
        if isinstance(meta, dict) and meta.get("split") == "train":
            print(f"{PROG}: note: {d} is a training set (its manifest says split: train); its figures are not "
                  f"held-out ones", file=sys.stderr)
    return unique


def held_out_backdrops(cutouts_dir: Path, records: Sequence[Any], backgrounds: Path, bystanders: bool = False) -> Any:
    """Every one of `records`' people before a crop of a held-out background photo (the same
    crop for the same photo every run: the evaluation's per-sample seed draws it); with
    `bystanders`, another of `records`' people beside each, unlabelled."""
    from train.backgrounds import split_backgrounds
    from train.real_cutouts import Cutouts, RealBackdrops

    try:
        cutouts = Cutouts.load(cutouts_dir, records)
        photos = split_backgrounds(backgrounds, "val")
        if not photos:
            raise FileNotFoundError(f"none of the held-out background photos is in {backgrounds}")
        # Reads the photos: one may be unreadable.
        backdrops = RealBackdrops(cutouts, photos, 1.0, bystanders=1.0 if bystanders else 0.0,
                                  sources={r.path.name: r.path for r in records})
    except (FileNotFoundError, ValueError) as exc:
        raise InputError(f"--real-backdrops: {exc}") from None
    missing = [r.path.name for r in records if r.path.name not in cutouts.masks]
    if missing:
        raise InputError(f"--real-backdrops: {len(missing)} of the photos to evaluate have no mask in {cutouts_dir} "
                         f"(first: {missing[0]}); make them with python -m train.real_cutouts --out {cutouts_dir}")
    return backdrops


def listed_records(records: Sequence[Any], listing: Path) -> list[Any]:
    """The real records whose image is named in `listing` (one file name a line; # comments)."""
    try:
        lines = listing.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise InputError(f"--real-files: {listing} is not a text file (list one photo's file name a line)") from None
    except OSError as exc:
        raise InputError(f"--real-files: cannot read {listing} ({exc.strerror or exc})") from None
    names = [line.split("#", 1)[0].strip() for line in lines]
    names = [n for n in names if n]
    by_name = {r.path.name: r for r in records}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise InputError(f"--real-files: {len(missing)} of the {len(names)} photos listed in {listing} are not in the "
                         f"real set (first: {missing[0]}); list file names as in its images/ folder")
    if not names:
        raise InputError(f"--real-files: {listing} lists no photo")
    return [by_name[n] for n in names]


def build_parser(prog: str = "python -m train.evaluate") -> argparse.ArgumentParser:
    p = OneLineParser(prog=prog, description="Evaluate a model: synthetic MPJPE / PA-MPJPE / 2D PCK and "
                                "real 2D PCK@0.2, per alignment method; a Markdown table.")
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="FILE", help="a Posecast .pt or .onnx model")
    p.add_argument("--synth-val", nargs="+", metavar="DIR", default=[],
                   help="synthetic shard folders (or folders of them) with 3D labels")
    p.add_argument("--real2d", metavar="DIR", help="the real 2D set (keypoints.json + images/); its validation split is used")
    p.add_argument("--real-val-fraction", type=float, default=0.1, help="the split's held-out fraction (default 0.1, seed 0)")
    p.add_argument("--real-split", choices=("val", "train"), default="val",
                   help="which part of the real set: the held-out photos (default), or the training photos (to "
                        "tell underfitting from overfitting; training skips a few with broken labels, this does not)")
    p.add_argument("--real-files", metavar="LIST",
                   help="only the real photos named in this text file (one file name a line, # comments), from "
                        "both splits; train/real_back_views.txt lists the photos of backs")
    p.add_argument("--backgrounds", metavar="DIR",
                   help="background photos: person-free crops of their held-out split measure false detections")
    p.add_argument("--real-backdrops", metavar="CUTOUTS",
                   help="the real photos' people cut out by these masks (python -m train.real_cutouts) and put "
                        "before crops of the held-out background photos (needs --real2d and --backgrounds): "
                        "real people in scenes, not on studio walls")
    p.add_argument("--bystanders", action="store_true",
                   help="with --real-backdrops: another of the evaluated photos' people beside each person "
                        "(behind them, or now and then in front), unlabelled: one skeleton kept off a neighbour")
    p.add_argument("--negatives", type=int, default=500, metavar="N",
                   help="how many person-free crops (default 500; seeded, the same every run)")
    p.add_argument("--detect-score", type=float, metavar="S",
                   help="the score that counts as a person found (default: configs/pipeline.yaml's detect_min_score)")
    p.add_argument("--flip-test", choices=FLIP_TEST_MODES,
                   help="test-time mirroring of a .pt model: none, 3d (the 3D only) or all (default: as the model file says)")
    p.add_argument("--window", type=int, metavar="N",
                   help="decoding window: the expectation over +-N 8-pixel cells around each peak (2N of a "
                        "stride-4 grid's cells; default: the pipeline's alignment.window)")
    p.add_argument("--exact-2d", action="store_true",
                   help="a diagnostic: the lifter reads the labelled 2D joints at full confidence instead of the 2D "
                        "branch's (a .pt with a lifter): the 3D error the model would have with perfect 2D")
    p.add_argument("--cut", action="store_true",
                   help="every held-out person cut off by the crop's lower edge halfway between hips and knees "
                        "(as a webcam at a desk sees them; rendered people small in their image stay whole): "
                        "PCK counts the joints in the crop, MPJPE all of them")
    p.add_argument("--align", nargs="+", choices=METHODS, default=list(METHODS), help="alignment methods (default all)")
    p.add_argument("--limit", type=int, metavar="N", help="at most N samples per set, spread evenly (not the person-free crops: --negatives sets those)")
    p.add_argument("--per-root", action="store_true", help="also each root's own offset error before alignment")
    p.add_argument("--batch-size", type=int, default=32, metavar="N", help="crops per network call, 1 to 256 (default 32)")
    p.add_argument("--threads", type=int, default=0,
                   help=f"CPU threads, 0 (the library's default) to {MAX_THREADS}")
    p.add_argument("--json", metavar="OUT.json", help="write every number as JSON (checked before evaluating; missing folders are made)")
    p.add_argument("--against", metavar="OTHER.json",
                   help="another model's --json of the same sets: print this model minus it, paired by sample, "
                        "with 95%% intervals (train/eval_against.py)")
    p.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    from train.config import expand_shard_dirs, resolve_path
    from train.datasets import RealDataset, SyntheticDataset

    if not args.synth_val and not args.real2d and not args.backgrounds:
        raise InputError("nothing to evaluate on: give --synth-val, --real2d and/or --backgrounds")
    if args.negatives < 1:
        raise InputError("--negatives must be >= 1")
    if args.detect_score is not None and not 0.0 <= args.detect_score <= 1.0:
        raise InputError(f"--detect-score must be in [0, 1] (got {args.detect_score})")
    if args.limit is not None and args.limit < 1:
        raise InputError("--limit must be >= 1")
    if args.window is not None and not 0 <= args.window <= 4:
        raise InputError(f"--window must be between 0 and 4, as the pipeline's alignment.window (got {args.window})")
    if not 1 <= args.batch_size <= MAX_BATCH_SIZE:
        raise InputError(f"--batch-size must be between 1 and {MAX_BATCH_SIZE}, as in the pipeline (got {args.batch_size})")
    if not 0.0 < args.real_val_fraction < 1.0:        # also false for nan
        raise InputError(f"--real-val-fraction must be between 0 and 1, both left out (got {args.real_val_fraction:g})")
    if args.real_files and not args.real2d:
        raise InputError("--real-files picks photos of the real set: give --real2d too")
    if args.bystanders and not args.real_backdrops:
        raise InputError("--bystanders stand beside the people put before backgrounds: give --real-backdrops too")
    if args.real_backdrops and not (args.real2d and args.backgrounds):
        raise InputError("--real-backdrops puts the real photos' people before background photos: give --real2d "
                         "and --backgrounds too")
    if not 0 <= args.threads <= MAX_THREADS:
        raise InputError(f"--threads must be between 0 and {MAX_THREADS} (got {args.threads})")
    json_path = Path(args.json) if args.json is not None else None
    if json_path is not None:
        # --json may name the --against file (compare, then keep the newest): that one is written
        # only if the comparison is made.
        check_json_output(json_path, {"the --real-files list": args.real_files and resolve_path(args.real_files)})
    other = None
    if args.against:
        from train.eval_against import load_evaluation

        other = load_evaluation(Path(args.against))     # before the evaluation: it can take minutes
    predictor, cfg, weights = load_predictor(args.model, args.threads, args.flip_test, args.exact_2d)
    synth_ds = real_ds = None
    if args.synth_val:
        # Camera-frame labels for every model: a ray-frame model's pose is turned back as the pipeline
        # turns it (synthetic_metrics).
        from train.shards import MANIFEST

        synth_dirs = held_out_shard_dirs(expand_shard_dirs(args.synth_val))
        if json_path is not None:       # a --json naming a set's own file would destroy its labels
            refuse_json_over(json_path, {f"{d}'s manifest": d / MANIFEST for d in synth_dirs})
        synth_ds = SyntheticDataset(synth_dirs, input_size=cfg.input_size, augment=False,
                                    seed=0, cut_fraction=1.0 if args.cut else 0.0)
    if args.real2d:
        from train.real2d import load_real2d, split_real

        real_dir = resolve_path(args.real2d)
        if json_path is not None:
            refuse_json_over(json_path, {"the real set's labels": real_dir / "keypoints.json"})
        try:
            records = load_real2d(real_dir)
        except (FileNotFoundError, ValueError) as exc:
            raise InputError(str(exc)) from None
        train_split, val = split_real(records, val_fraction=args.real_val_fraction, seed=0)
        chosen = val if args.real_split == "val" else train_split
        if args.real_files:
            chosen = listed_records(records, resolve_path(args.real_files))
        if not chosen:
            raise InputError(f"--real2d: the {args.real_split} split of {args.real2d} holds no photo at "
                             f"--real-val-fraction {args.real_val_fraction:g}")
        missing = [r.path for r in chosen if not r.path.is_file()]
        if missing:
            raise InputError(f"--real2d: {len(missing)} of the photos to evaluate are not in {real_dir / 'images'} "
                             f"(first: {missing[0].name}); restore them, or take their entries out of keypoints.json")
        backdrops = held_out_backdrops(resolve_path(args.real_backdrops), chosen, resolve_path(args.backgrounds),
                                       args.bystanders) if args.real_backdrops else None
        real_ds = RealDataset(chosen, input_size=cfg.input_size, augment=False, seed=0,
                              cut_fraction=1.0 if args.cut else 0.0, backdrops=backdrops)
    negative_ds = None
    if args.backgrounds:
        from train.backgrounds import split_backgrounds
        from train.negatives import NegativeDataset

        try:
            photos = split_backgrounds(resolve_path(args.backgrounds), "val")
            if not photos:
                raise FileNotFoundError(f"none of the held-out background photos is in {args.backgrounds}")
            negative_ds = NegativeDataset(photos, input_size=cfg.input_size, seed=0, length=args.negatives)
        except (FileNotFoundError, ValueError) as exc:
            raise InputError(f"--backgrounds: {exc}") from None
    res = evaluate(predictor, cfg, synth_ds, real_ds, args.align, args.limit, args.per_root,
                   args.batch_size, progress=not args.no_progress, negative_ds=negative_ds,
                   detect_score=args.detect_score, window=args.window)
    res["model"] = {"path": str(args.model), "weights": weights, "fusion": cfg.fusion, "roots": list(cfg.roots),
                    "input_size": cfg.input_size, "lift_width": cfg.lift_width, "lift_blocks": cfg.lift_blocks,
                    "flip_test": cfg.flip_test, "grid_size": cfg.grid_size, "grid_stride": cfg.grid_stride,
                    "offsets_frame": cfg.offsets_frame, "exact_2d": bool(args.exact_2d)}
    res["cut"] = bool(args.cut)
    if args.synth_val:
        res["synthetic"]["folders"] = [str(d) for d in synth_dirs]
    if args.real2d:
        res["real"]["split"] = f"listed in {Path(args.real_files).name}" if args.real_files else args.real_split
        if args.real_backdrops:
            res["real"]["split"] += ", before held-out backgrounds" + (", a bystander beside" if args.bystanders else "")
    note = ", 3D from the labelled 2D (--exact-2d)" if args.exact_2d else ""
    note += ", people cut off between hips and knees (--cut)" if args.cut else ""
    # The weights line says how the file was shipped; an override is what this evaluation ran.
    note += f", evaluated with --flip-test {args.flip_test}" if args.flip_test is not None else ""
    # The results are written before they are printed: a reader that stops reading the tables
    # (`| head`) loses no JSON.
    tables = [markdown(res, cfg, f"{Path(args.model).name} ({weights}){note}")]
    if other is not None:
        from train import eval_against

        try:
            rows = eval_against.compare(res, other, Path(args.against))
        except InputError as exc:
            if json_path is not None and input_overwritten(json_path, {"the --against file": args.against}):
                exc = InputError(f"{exc}; --json {json_path} was left as it was (it is the --against file)")
            elif json_path is not None:
                write_json(json_path, res)      # this evaluation's own results are not lost
                exc = InputError(f"{exc}; this run's results were written to {json_path}")
            print(tables[0])
            raise exc from None
        tables.append(eval_against.markdown(rows, Path(args.against)))
        unpaired = eval_against.unpaired_alignments(res, other)
        if unpaired is not None:
            tables.append(f"Note: {unpaired}.\n")
        res["against"] = eval_against.as_json(rows, Path(args.against))
    if json_path is not None:
        try:
            write_json(json_path, res)
        except InputError:
            print("\n".join(tables))              # what the error line says is above
            raise
    print("\n".join(tables))
    if json_path is not None:
        print(f"{PROG}: wrote {json_path}", file=sys.stderr)
    return 0


def check_json_output(path: Path, inputs: dict[str, Path | str | None]) -> None:
    """Fail before the evaluation (it can take minutes) where --json could not be written after
    it, or would replace one of the run's `inputs` (the `--real-files` list, say). Missing folders are made at
    the end."""
    reason = check_report_output(path, "--json", ".json", inputs, make_folders=True)
    if reason is not None:
        raise InputError(reason)


def refuse_json_over(path: Path, inputs: dict[str, Path | str | None]) -> None:
    """Only the overlap part of `check_json_output`, for inputs found after it ran (the sets'
    own files): the rest of it was checked for the same path already."""
    same = input_overwritten(path, inputs)
    if same is not None:
        raise InputError(f"--json '{path}' is also {same}; give another name")


def write_json(path: Path, res: dict[str, Any]) -> None:
    """Through a temporary file renamed into place: a failed write (a full disk) leaves no partial
    file, and a result already at `path` stays as it was."""
    from engines.files import replaced_when_done

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with replaced_when_done(path) as tmp:
            tmp.write_text(json.dumps(res, indent=1, allow_nan=True) + "\n")
    except OSError as err:
        raise InputError(f"cannot write --json '{path}': {err.strerror or err}; the table above holds "
                         f"the results, the JSON file was not written") from None


def main(argv: list[str] | None = None, prog: str = "python -m train.evaluate") -> int:
    args = build_parser(prog).parse_args(argv)
    return run_command(prog, lambda: run(args), "nothing was written (the figures need every sample)")


if __name__ == "__main__":
    sys.exit(main())
