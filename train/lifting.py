"""Pretraining the lifter (engines/network.py `Lifter`) on projected motion capture.

The lifter maps 2D joints (normalised for position and scale) and their confidences to every
root's 3D offsets. Rendering gives a few tens of thousands of labelled images on this machine; the
motion bank holds about 10^5 poses, and 120 bodies and unlimited cameras multiply that. So the
lifter first learns from poses alone: a motion pose is retargeted onto a random body's bones
(`train.synth.retarget`, as the renderer does), seen from a camera drawn like the renderer's
(`train.synth.scene`), projected, and corrupted the way the 2D branch errs:

- per-joint Gaussian noise that grows as the joint's confidence falls,
- outliers: a joint thrown anywhere in the person's box, with a low confidence,
- left/right swaps of a whole limb pair (the commonest gross error of 2D estimators).

Optionally a share of each batch is the 2D that a trained network actually predicted on the
synthetic training images (`predicted_2d`), so that the lifter also sees the real error
distribution. The held-out motions (train.motion.HELD_OUT) are never sampled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from engines.network import Lifter
from engines.skeleton import H36M17
from train.motion import H36MCamera, MotionBank

PELVIS = H36M17.index("pelvis")
PARENTS = np.array(H36M17.parents)
FLIP = np.array(H36M17.flip_permutation, dtype=np.int64)
# Limb pairs that a 2D estimator swaps together: (left joints, right joints).
LIMBS = tuple(
    (np.array(H36M17.indices(tuple(f"l_{j}" for j in chain))), np.array(H36M17.indices(tuple(f"r_{j}" for j in chain))))
    for chain in (("hip", "knee", "ankle"), ("shoulder", "elbow", "wrist"))
)


@dataclass(frozen=True)
class NoiseModel:
    """2D corruption, in units of the pose's RMS radius in the image (about a quarter of its height)."""

    sigma_min: float = 0.015       # noise of a confident joint
    sigma_max: float = 0.25        # noise of a joint with confidence 0
    outlier_probability: float = 0.04
    swap_probability: float = 0.08  # per sample: one limb pair's sides exchanged
    clean_fraction: float = 0.1     # samples left exact, with confidence near 1


@dataclass(frozen=True)
class CameraModel:
    """As train.synth.scene.SceneOptions and its `_camera`."""

    distance: tuple[float, float] = (1.8, 9.0)
    h36m_camera_fraction: float = 0.3


def retarget_batch(bodies: np.ndarray, motion: np.ndarray) -> np.ndarray:
    """Vectorised `train.synth.retarget.retarget_joints`: (N, 17, 3) rest joints and motion poses
    -> the bodies' bone lengths along the motion's bone directions, pelvis at the motion's."""
    out = np.empty_like(motion, dtype=np.float64)
    out[:, 0] = motion[:, 0]
    for child, parent in enumerate(PARENTS):
        if parent < 0:
            continue
        length = np.linalg.norm(bodies[:, child] - bodies[:, parent], axis=-1, keepdims=True)
        d = motion[:, child] - motion[:, parent]
        d = d / np.maximum(np.linalg.norm(d, axis=-1, keepdims=True), 1e-9)
        out[:, child] = out[:, parent] + length * d
    return out


def look_at_batch(centre: np.ndarray, target: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """Vectorised `train.synth.scene.look_at`: (N, 3, 3) world -> camera rotations."""
    f = target - centre
    f = f / np.linalg.norm(f, axis=-1, keepdims=True)
    r = np.cross(f, np.array([0.0, 0.0, 1.0]))
    r = r / np.maximum(np.linalg.norm(r, axis=-1, keepdims=True), 1e-9)
    d = np.cross(f, r)
    rot = np.stack([r, d, f], axis=1)
    c, s = np.cos(roll), np.sin(roll)
    z, o = np.zeros_like(roll), np.ones_like(roll)
    roll_m = np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], axis=1)
    return roll_m @ rot


class PoseSampler:
    """Batches of (points (N, 17, 2), confidence (N, 17), camera-frame joints (N, 17, 3))."""

    def __init__(self, bank: MotionBank, bodies: np.ndarray, cameras: list[H36MCamera],
                 noise: NoiseModel = NoiseModel(), camera: CameraModel = CameraModel()) -> None:
        if len(bank) == 0:
            raise ValueError("the motion bank is empty")
        self.poses = bank.joints.astype(np.float64)
        self.is_h36m = bank.source == "h36m"
        self.bodies = np.asarray(bodies, np.float64)
        self.cam_r = np.stack([c.R for c in cameras]).astype(np.float64) if cameras else np.zeros((0, 3, 3))
        self.cam_t = np.stack([c.T for c in cameras]).astype(np.float64) if cameras else np.zeros((0, 3))
        self.noise, self.camera = noise, camera

    def _world(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        idx = rng.integers(len(self.poses), size=n)
        joints = retarget_batch(self.bodies[rng.integers(len(self.bodies), size=n)], self.poses[idx])
        use_h36m = self.is_h36m[idx] & (rng.random(n) < self.camera.h36m_camera_fraction) & (len(self.cam_r) > 0)
        # Poses not seen through a real camera get any heading about their pelvis.
        yaw = rng.uniform(0, 2 * np.pi, n)
        c, s = np.cos(yaw), np.sin(yaw)
        rz = np.zeros((n, 3, 3))
        rz[:, 0, 0], rz[:, 0, 1], rz[:, 1, 0], rz[:, 1, 1], rz[:, 2, 2] = c, -s, s, c, 1.0
        pelvis = joints[:, PELVIS:PELVIS + 1]
        turned = np.einsum("nij,nkj->nki", rz, joints - pelvis) + pelvis
        joints = np.where(use_h36m[:, None, None], joints, turned)
        return joints, use_h36m

    def _random_cameras(self, rng: np.random.Generator, joints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = len(joints)
        pelvis = joints[:, PELVIS]
        ground = np.minimum(joints[:, :, 2].min(axis=1), pelvis[:, 2] - 1.2) - 0.08
        lo, hi = np.log(self.camera.distance[0]), np.log(self.camera.distance[1])
        dist = np.exp(rng.uniform(lo, hi, n))
        azim = rng.uniform(0, 2 * np.pi, n)
        centre = np.stack([pelvis[:, 0] + dist * np.cos(azim), pelvis[:, 1] + dist * np.sin(azim),
                           ground + rng.uniform(0.3, 2.8, n)], axis=1)
        target = (pelvis + np.stack([np.zeros(n), np.zeros(n), rng.uniform(-0.3, 0.4, n)], axis=1)
                  + rng.normal(0, 1, (n, 3)) * (0.12 * dist)[:, None] * np.array([1, 1, 0.5]))
        return look_at_batch(centre, target, rng.normal(0, np.radians(4), n)), centre

    def camera_joints(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """(n, 17, 3) posed bodies in camera frames, every joint at least 0.2 m in front."""
        out = np.empty((0, H36M17.num_joints, 3))
        while len(out) < n:
            m = n - len(out) + 8
            joints, use_h36m = self._world(rng, m)
            rot, centre = self._random_cameras(rng, joints)
            if use_h36m.any():
                which = rng.integers(len(self.cam_r), size=int(use_h36m.sum()))
                rot[use_h36m], centre[use_h36m] = self.cam_r[which], self.cam_t[which]
            cam = np.einsum("nij,nkj->nki", rot, joints - centre[:, None])
            out = np.concatenate([out, cam[cam[:, :, 2].min(axis=1) > 0.2]])
        return out[:n]

    def corrupt(self, rng: np.random.Generator, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact 2D (n, 17, 2) -> (noisy points, confidences) by the noise model."""
        nm = self.noise
        n, j = points.shape[:2]
        centred = points - points.mean(axis=1, keepdims=True)
        radius = np.sqrt((centred ** 2).sum(-1).mean(axis=1))[:, None, None]          # (n, 1, 1)
        conf = rng.beta(4.0, 1.5, (n, j))
        sigma = nm.sigma_min + (nm.sigma_max - nm.sigma_min) * (1.0 - conf) ** 2
        noisy = points + rng.normal(0, 1, (n, j, 2)) * sigma[..., None] * radius
        outlier = rng.random((n, j)) < nm.outlier_probability
        lo, hi = points.min(axis=1, keepdims=True), points.max(axis=1, keepdims=True)
        anywhere = lo + rng.random((n, j, 2)) * (hi - lo)
        noisy = np.where(outlier[..., None], anywhere, noisy)
        conf = np.where(outlier, rng.uniform(0.05, 0.4, (n, j)), conf)
        for i in np.flatnonzero(rng.random(n) < nm.swap_probability):
            left, right = LIMBS[rng.integers(len(LIMBS))]
            noisy[i, left], noisy[i, right] = noisy[i, right].copy(), noisy[i, left].copy()
        clean = rng.random(n) < nm.clean_fraction
        noisy[clean] = points[clean]
        conf[clean] = rng.uniform(0.9, 1.0, (int(clean.sum()), j))
        return noisy, conf

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cam = self.camera_joints(rng, n)
        exact = cam[:, :, :2] / cam[:, :, 2:3]
        points, conf = self.corrupt(rng, exact)
        return points.astype(np.float32), conf.astype(np.float32), cam.astype(np.float32)


@dataclass(frozen=True)
class PredictedSet:
    """What a network predicted on rendered images: points (N, 17, 2) crop pixels, confidence
    (N, 17), and the images' camera-frame joints (N, 17, 3)."""

    points: np.ndarray
    conf: np.ndarray
    joints_3d: np.ndarray

    def __len__(self) -> int:
        return len(self.points)


def predict_2d(predict: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], dataset: Any, batch: int = 128,
               progress: Callable[[int], None] | None = None) -> PredictedSet:
    """Runs `predict(images (B, S, S, 3) uint8) -> (points, conf)` over a SyntheticDataset made
    with augment=False, as it is and mirrored (the mirror doubles the set as training's flips do)."""
    from train.datasets import flip_image, flip_joints_3d

    pts, confs, j3s = [], [], []
    for start in range(0, len(dataset), batch):
        items = [dataset.get(i, None) for i in range(start, min(start + batch, len(dataset)))]
        images = np.stack([s["image"].numpy() for s in items])
        j3 = np.stack([s["joints_3d"].numpy() for s in items])
        for imgs, joints in ((images, j3), (np.stack([flip_image(im) for im in images]),
                                            np.stack([flip_joints_3d(j) for j in j3]))):
            p, c = predict(imgs)
            pts.append(p)
            confs.append(c)
            j3s.append(joints)
        if progress is not None:
            progress(len(items))
    return PredictedSet(np.concatenate(pts).astype(np.float32), np.concatenate(confs).astype(np.float32),
                        np.concatenate(j3s).astype(np.float32))


def lift_loss(lifter: Lifter, points: torch.Tensor, conf: torch.Tensor, joints_3d: torch.Tensor,
              roots: tuple[int, ...]) -> torch.Tensor:
    """The training loss's 3D term (train.losses.loss_3d) for the lifter alone."""
    from train.losses import loss_3d, offsets_target

    n = points.shape[0]
    pred = lifter(points, conf).reshape(n, len(roots), H36M17.num_joints, 3)
    mask = torch.ones(1, len(roots), H36M17.num_joints, 1)
    mask[0, torch.arange(len(roots)), torch.tensor(roots)] = 0.0
    return loss_3d(pred * mask, offsets_target(joints_3d, roots), torch.ones(n))


def pelvis_mpjpe(lifter: Lifter, points: np.ndarray, conf: np.ndarray, joints_3d: np.ndarray,
                 roots: tuple[int, ...]) -> float:
    """MPJPE (mm) of the pelvis root's row: a quick figure for the pretraining log."""
    with torch.no_grad():
        n = len(points)
        pred = lifter(torch.from_numpy(points), torch.from_numpy(conf)).reshape(n, len(roots), H36M17.num_joints, 3)
    row = pred[:, roots.index(PELVIS)].numpy()
    truth = joints_3d - joints_3d[:, PELVIS:PELVIS + 1]
    return float(np.linalg.norm(row - truth, axis=-1).mean() * 1000.0)


# --- pretraining ---------------------------------------------------------------------------

LIFTER_FORMAT = 1


@dataclass(frozen=True)
class PretrainOptions:
    width: int = 1024
    blocks: int = 2
    roots: tuple[str, ...] = ("pelvis", "thorax", "r_hip", "l_hip", "r_shoulder", "l_shoulder")
    steps: int = 20000
    batch_size: int = 256
    lr: float = 1e-3
    final_lr_fraction: float = 0.02
    seed: int = 0
    predicted_fraction: float = 0.0      # share of each batch from `PredictedSet` (when given)
    val_samples: int = 4096
    checkpoint_every: int = 1000
    log_every: int = 100
    threads: int = 2


def save_lifter(path: Any, lifter: Lifter, opts: PretrainOptions, step: int,
                optimizer: torch.optim.Optimizer | None = None, extra: dict[str, Any] | None = None) -> None:
    """A lifter file: its weights and shape, the roots its rows belong to, and (for resuming) the
    optimiser and step. Written atomically."""
    import dataclasses
    import io
    from pathlib import Path

    from engines.model_file import atomic_write_bytes

    blob = {"posecast_lifter": LIFTER_FORMAT, "state_dict": lifter.state_dict(), "width": opts.width,
            "blocks": opts.blocks, "roots": list(opts.roots), "step": step,
            "options": dataclasses.asdict(opts), **(extra or {})}
    if optimizer is not None:
        blob["optimizer"] = optimizer.state_dict()
    buf = io.BytesIO()
    torch.save(blob, buf)
    atomic_write_bytes(Path(path), buf.getvalue())


def load_lifter_file(path: Any) -> dict[str, Any]:
    """Reads a lifter file (`save_lifter`); a clear error for anything else."""
    from pathlib import Path

    from engines.errors import InputError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"lifter file {path} not found (make one with: python -m train.lifting --out {path})")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"{path} is not a lifter file (torch could not read it: {type(exc).__name__})") from None
    if not isinstance(blob, dict) or blob.get("posecast_lifter") != LIFTER_FORMAT:
        raise InputError(f"{path} is not a lifter file written by python -m train.lifting")
    return blob


def load_into(lifter: Lifter, blob: dict[str, Any], roots: tuple[str, ...], source: str) -> None:
    """Copies a lifter file's weights into a network's lifter, checking that both mean the same rows."""
    from engines.errors import InputError

    if tuple(blob["roots"]) != tuple(roots):
        raise InputError(f"{source}: the lifter was trained for roots {blob['roots']}, the model has {list(roots)}")
    try:
        lifter.load_state_dict(blob["state_dict"])
    except RuntimeError as exc:
        raise InputError(f"{source}: the lifter's shape (width {blob['width']}, {blob['blocks']} blocks) does not "
                         f"fit the model's lift_width/lift_blocks ({str(exc).splitlines()[0]})") from None


class ValidationSet:
    """Held-out motions on held-out bodies, from fixed random cameras: exact and corrupted 2D."""

    def __init__(self, sampler: PoseSampler, n: int, seed: int) -> None:
        rng = np.random.default_rng([seed, 7777])
        cam = sampler.camera_joints(rng, n)
        exact = cam[:, :, :2] / cam[:, :, 2:3]
        noisy, conf = sampler.corrupt(rng, exact)
        self.joints_3d = cam.astype(np.float32)
        self.exact = exact.astype(np.float32)
        self.noisy, self.conf = noisy.astype(np.float32), conf.astype(np.float32)

    def metrics(self, lifter: Lifter, roots: tuple[int, ...]) -> dict[str, float]:
        ones = np.ones_like(self.conf)
        return {"val_noisy_mm": pelvis_mpjpe(lifter, self.noisy, self.conf, self.joints_3d, roots),
                "val_exact_mm": pelvis_mpjpe(lifter, self.exact, ones, self.joints_3d, roots)}


def pretrain(opts: PretrainOptions, out: Any, bodies_path: Any, data_dir: Any = None,
             predicted: PredictedSet | None = None, init: dict[str, Any] | None = None,
             progress: bool = True, say: Callable[[str], None] = print,
             stop_after: int | None = None) -> dict[str, Any]:
    """Trains (or resumes, from `out` when it holds a checkpoint) a lifter on projected motion
    capture, optionally mixed with predicted 2D. `stop_after`: end after that step with a
    checkpoint, as an interruption would. Returns the last validation metrics."""
    import json
    import math
    import time
    from pathlib import Path

    from tqdm import tqdm

    from train.motion import load_all, split
    from train.synth.body import BodyBank
    from train.synth.generate import split_bodies

    torch.set_num_threads(opts.threads)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    bank = BodyBank.load(Path(bodies_path))
    motions, cameras = load_all(data_dir)
    train_m, val_m = split(motions)
    joints = bank.joints
    train_sampler = PoseSampler(train_m, joints[split_bodies(bank.num_bodies, "train")], cameras)
    val_sampler = PoseSampler(val_m, joints[split_bodies(bank.num_bodies, "val")], cameras)
    val = ValidationSet(val_sampler, opts.val_samples, opts.seed)
    roots = tuple(H36M17.indices(opts.roots))

    torch.manual_seed(opts.seed)
    lifter = Lifter(H36M17.num_joints, len(roots), opts.width, opts.blocks)
    opt = torch.optim.Adam(lifter.parameters(), lr=opts.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: opts.final_lr_fraction + (1 - opts.final_lr_fraction) * 0.5
        * (1 + math.cos(math.pi * min(s / opts.steps, 1.0))))
    start = 0
    if out.exists():
        blob = load_lifter_file(out)
        if blob.get("width") != opts.width or blob.get("blocks") != opts.blocks or tuple(blob["roots"]) != opts.roots:
            raise ValueError(f"{out} holds a lifter of another shape; choose another --out or delete it")
        lifter.load_state_dict(blob["state_dict"])
        if "optimizer" in blob:
            opt.load_state_dict(blob["optimizer"])
        if "scheduler" in blob:
            sched.load_state_dict(blob["scheduler"])
        start = int(blob["step"])
        say(f"resuming {out} at step {start} of {opts.steps}")
    elif init is not None:
        load_into(lifter, init, opts.roots, "init")
        say("starting from the given lifter")

    log_path = out.with_suffix(".log.jsonl")
    n_pred = int(round(opts.batch_size * opts.predicted_fraction)) if predicted is not None and len(predicted) else 0
    bar = tqdm(total=opts.steps, initial=start, disable=not progress, unit="step", dynamic_ncols=True, desc="lifter")
    acc, t0, metrics = 0.0, time.perf_counter(), {}
    end = opts.steps if stop_after is None else min(opts.steps, stop_after)
    with open(log_path, "a", buffering=1) as log:
        for step in range(start, end):
            rng = np.random.default_rng([opts.seed, step])      # a resumed run draws what it would have
            pts, conf, j3 = train_sampler.sample(rng, opts.batch_size - n_pred)
            if n_pred:
                pick = rng.integers(len(predicted), size=n_pred)
                pts = np.concatenate([pts, predicted.points[pick]])
                conf = np.concatenate([conf, predicted.conf[pick]])
                j3 = np.concatenate([j3, predicted.joints_3d[pick]])
            lifter.train()
            loss = lift_loss(lifter, torch.from_numpy(pts), torch.from_numpy(conf), torch.from_numpy(j3), roots)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            acc += loss.item()
            bar.update(1)
            done = step + 1
            if done % opts.log_every == 0:
                rate = opts.log_every * opts.batch_size / (time.perf_counter() - t0)
                record = {"step": done, "loss": acc / opts.log_every, "lr": opt.param_groups[0]["lr"],
                          "samples_per_s": rate}
                log.write(json.dumps(record) + "\n")
                bar.set_postfix(loss=f"{record['loss']:.4f}", rate=f"{rate:.0f}/s")
                acc, t0 = 0.0, time.perf_counter()
            if done % opts.checkpoint_every == 0 or done == end:
                lifter.eval()
                metrics = val.metrics(lifter, roots)
                log.write(json.dumps({"step": done, "val": metrics}) + "\n")
                bar.write(f"lifter: step {done}: held-out motions, pelvis row: {metrics['val_noisy_mm']:.1f} mm "
                          f"from corrupted 2D, {metrics['val_exact_mm']:.1f} mm from exact 2D")
                save_lifter(out, lifter, opts, done, opt, {"val": metrics, "scheduler": sched.state_dict()})
                t0 = time.perf_counter()
    bar.close()
    if not metrics:
        lifter.eval()
        metrics = val.metrics(lifter, roots)
    return metrics


def predicted_set_from_model(model: Any, synth_dirs: list[Any], cache: Any, limit: int | None = None,
                             say: Callable[[str], None] = print) -> PredictedSet:
    """What `model` (a .pt) predicts in 2D on the synthetic shards (and their mirror), cached in
    `cache` (.npz) so a resumed run does not predict again."""
    from pathlib import Path

    from tqdm import tqdm

    from engines.grid import decode
    from engines.model_file import load_checkpoint
    from train.datasets import SyntheticDataset

    cache = Path(cache)
    if cache.exists():
        with np.load(cache) as d:
            return PredictedSet(d["points"], d["conf"], d["joints_3d"])
    net, info = load_checkpoint(Path(model))
    size = info.config.input_size
    dataset = SyntheticDataset([Path(p) for p in synth_dirs], input_size=size, augment=False)
    if limit is not None and limit < len(dataset):
        keep = np.unique(np.linspace(0, len(dataset) - 1, limit).round().astype(np.int64))
        dataset = _Subset(dataset, keep)

    def predict(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            probs, _ = net(torch.from_numpy(images))
        return decode(probs.numpy(), size)

    say(f"predicting 2D with {model} on {len(dataset)} synthetic images (and their mirror)")
    with tqdm(total=len(dataset), unit="img", desc="predict 2D") as bar:
        pset = predict_2d(predict, dataset, progress=bar.update)
    np.savez(cache, points=pset.points, conf=pset.conf, joints_3d=pset.joints_3d)
    return pset


class _Subset:
    """dataset.get over a subset of indices (train.datasets' datasets take (i, rng))."""

    def __init__(self, dataset: Any, indices: np.ndarray) -> None:
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def get(self, i: int, rng: Any) -> dict[str, Any]:
        return self.dataset.get(int(self.indices[i]), rng)


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys
    from pathlib import Path

    from engines.errors import PosecastError
    from train.config import default_data_root, expand_shard_dirs

    p = argparse.ArgumentParser(prog="python -m train.lifting",
                                description="Pretrain the 2D-to-3D lifter on projected motion capture "
                                            "(resumes from --out when it exists).")
    p.add_argument("--out", required=True, metavar="FILE", help="the lifter file (.pt); a log is written beside it")
    p.add_argument("--bodies", required=True, metavar="NPZ", help="the body bank (python -m train.synth.body)")
    p.add_argument("--data", metavar="DIR", help=f"datasets folder (default {default_data_root()})")
    d = PretrainOptions()
    p.add_argument("--width", type=int, default=d.width)
    p.add_argument("--blocks", type=int, default=d.blocks)
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--init", metavar="FILE", help="start from this lifter file's weights")
    p.add_argument("--predicted-from", metavar="MODEL",
                   help="a trained model (.pt) whose 2D predictions on --synth images join the batches")
    p.add_argument("--synth", nargs="+", metavar="DIR", default=[], help="synthetic shard folders (with --predicted-from)")
    p.add_argument("--predicted-fraction", type=float, default=0.5)
    p.add_argument("--predicted-limit", type=int, metavar="N", help="predict on at most N images, spread over the set")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    try:
        if args.predicted_from and not args.synth:
            raise ValueError("--predicted-from needs --synth shard folders")
        if not 0.0 <= args.predicted_fraction < 1.0:
            raise ValueError("--predicted-fraction must be in [0, 1)")
        opts = PretrainOptions(width=args.width, blocks=args.blocks, steps=args.steps, batch_size=args.batch_size,
                               lr=args.lr, seed=args.seed, threads=args.threads,
                               predicted_fraction=args.predicted_fraction if args.predicted_from else 0.0)
        say = lambda m: print(f"lifting: {m}", file=sys.stderr)  # noqa: E731
        out = Path(args.out)
        predicted = None
        if args.predicted_from:
            predicted = predicted_set_from_model(args.predicted_from, expand_shard_dirs(args.synth),
                                                 out.with_suffix(".predicted.npz"), args.predicted_limit, say)
        init = load_lifter_file(args.init) if args.init else None
        m = pretrain(opts, out, args.bodies, args.data, predicted, init, progress=not args.no_progress, say=say)
    except (PosecastError, ValueError, FileNotFoundError) as exc:
        print(f"lifting: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lifting: interrupted; {args.out} holds the last checkpoint: run the same command to resume",
              file=sys.stderr)
        return 130
    print(f"lifting: wrote {args.out}: held-out pelvis-row MPJPE {m['val_noisy_mm']:.1f} mm (corrupted 2D), "
          f"{m['val_exact_mm']:.1f} mm (exact 2D)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
