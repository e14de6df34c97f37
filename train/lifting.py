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

The network's own 2D errors reach the lifter in stage 2 (configs/train/lifted.yaml), where the 3D
branch and the lifter train on rendered images with the lifter fed by the 2D branch. The held-out
motions (train.motion.HELD_OUT) and bodies are never sampled in training; they make the
validation set.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from engines.ray_frame import OFFSETS_FRAMES, OffsetsFrame, person_rotations
from engines.network import Lifter, own_root_mask
from engines.skeleton import H36M17
from train.datasets import flip_joints_3d
from train.motion import H36MCamera, MotionBank
from train.synth.retarget import retarget_joints_batch
from train.synth.scene import SceneOptions, look_at_batch

PELVIS = H36M17.index("pelvis")
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


class PoseSampler:
    """Batches of (points (N, 17, 2), confidence (N, 17), camera-frame joints (N, 17, 3)).

    Drawn as the renderer draws (train/synth/generate.py): a motion source by its weight, a pose
    uniformly within it, a random body; a Human3.6M pose is seen through one of its own subject's
    cameras with probability `h36m_camera_fraction`. Half the samples are mirrored (x -> -x with
    left and right exchanged), as training mirrors images."""

    def __init__(self, bank: MotionBank, bodies: np.ndarray, cameras: list[H36MCamera],
                 noise: NoiseModel = NoiseModel(), camera: SceneOptions = SceneOptions(),
                 source_weights: dict[str, float] | None = None) -> None:
        if len(bank) == 0:
            raise ValueError("the motion bank is empty")
        from train.synth.generate import SOURCE_WEIGHTS

        weights = SOURCE_WEIGHTS if source_weights is None else source_weights
        self.poses = bank.joints.astype(np.float64)
        self.by_source = [np.flatnonzero(bank.source == s) for s in weights]
        w = np.array([weights[s] for s in weights], np.float64) * np.array([len(i) > 0 for i in self.by_source])
        if w.sum() <= 0:
            raise ValueError(f"the motion bank has no poses of the sources {', '.join(weights)}")
        self.source_p = w / w.sum()
        self.bodies = np.asarray(bodies, np.float64)
        self.cam_r = np.stack([c.R for c in cameras]).astype(np.float64) if cameras else np.zeros((0, 3, 3))
        self.cam_t = np.stack([c.T for c in cameras]).astype(np.float64) if cameras else np.zeros((0, 3))
        # Per pose: the indices of its subject's cameras (none for other sources or unknown subjects).
        subjects = sorted({c.subject for c in cameras})
        self.subject_cams = [np.array([i for i, c in enumerate(cameras) if c.subject == s]) for s in subjects]
        subject_of = {s: k for k, s in enumerate(subjects)}
        self.pose_subject = np.array([subject_of.get(str(q).split("/")[1], -1) if str(q).startswith("h36m/") else -1
                                      for q in bank.sequence], np.int64)
        self.noise, self.camera = noise, camera

    def _draw_poses(self, rng: np.random.Generator, n: int) -> np.ndarray:
        source = rng.choice(len(self.by_source), size=n, p=self.source_p)
        idx = np.empty(n, np.int64)
        for k, members in enumerate(self.by_source):
            pick = source == k
            if pick.any():
                idx[pick] = members[rng.integers(len(members), size=int(pick.sum()))]
        return idx

    def _world(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Posed joints in the world, and per sample the real camera to use (-1: a random one)."""
        idx = self._draw_poses(rng, n)
        joints = retarget_joints_batch(self.bodies[rng.integers(len(self.bodies), size=n)], self.poses[idx])
        subject = self.pose_subject[idx]
        real = (subject >= 0) & (rng.random(n) < self.camera.h36m_camera_fraction)
        cam = np.full(n, -1, np.int64)
        for k in np.flatnonzero(real):
            options = self.subject_cams[subject[k]]
            cam[k] = options[rng.integers(len(options))]
        # Poses not seen through a real camera get any heading about their pelvis.
        yaw = rng.uniform(0, 2 * np.pi, n)
        c, s = np.cos(yaw), np.sin(yaw)
        rz = np.zeros((n, 3, 3))
        rz[:, 0, 0], rz[:, 0, 1], rz[:, 1, 0], rz[:, 1, 1], rz[:, 2, 2] = c, -s, s, c, 1.0
        pelvis = joints[:, PELVIS:PELVIS + 1]
        turned = np.einsum("nij,nkj->nki", rz, joints - pelvis) + pelvis
        joints = np.where((cam >= 0)[:, None, None], joints, turned)
        return joints, cam

    def _random_cameras(self, rng: np.random.Generator, joints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`train.synth.scene._camera`'s random cameras, for a batch."""
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
            joints, real = self._world(rng, m)
            rot, centre = self._random_cameras(rng, joints)
            use = real >= 0
            rot[use], centre[use] = self.cam_r[real[use]], self.cam_t[real[use]]
            cam = np.einsum("nij,nkj->nki", rot, joints - centre[:, None])
            mirror = rng.random(m) < 0.5
            cam[mirror] = flip_joints_3d(cam[mirror])
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

    def sample(self, rng: np.random.Generator, n: int,
               offsets_frame: str = "camera") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cam = self.camera_joints(rng, n)
        exact = cam[:, :, :2] / cam[:, :, 2:3]
        points, conf = self.corrupt(rng, exact)
        return points.astype(np.float32), conf.astype(np.float32), in_frame(cam, exact, offsets_frame).astype(np.float32)


def in_frame(cam: np.ndarray, exact: np.ndarray, offsets_frame: str) -> np.ndarray:
    """Camera-frame joints (n, 17, 3) as the model's `offsets_frame` wants them. For "ray": in
    the frame of the ray through the mean of their 2D joints (`exact`, (n, 17, 2), on the image
    plane at depth 1; engines/ray_frame.py)."""
    if offsets_frame == "camera":
        return cam
    rot = person_rotations(exact, 1.0, np.zeros(2))                    # the image plane at depth 1
    return np.einsum("nkj,nji->nki", cam, rot)                         # each row: R.T @ x


def lift_loss(lifter: Lifter, points: torch.Tensor, conf: torch.Tensor, joints_3d: torch.Tensor,
              roots: tuple[int, ...]) -> torch.Tensor:
    """The training loss's 3D term (train.losses.loss_3d) for the lifter alone."""
    from train.losses import loss_3d, offsets_target

    n = points.shape[0]
    pred = lifter(points, conf).reshape(n, len(roots), H36M17.num_joints, 3)
    mask = own_root_mask(len(roots), H36M17.num_joints, roots)
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
    val_samples: int = 4096
    checkpoint_every: int = 1000
    log_every: int = 100
    threads: int = 2
    offsets_frame: OffsetsFrame = "camera"     # the frame of the 3D targets (engines/ray_frame.py)


def save_lifter(path: Any, lifter: Lifter, opts: PretrainOptions, step: int,
                optimizer: torch.optim.Optimizer | None = None, extra: dict[str, Any] | None = None) -> None:
    """A lifter file: its weights and shape, the roots its rows belong to, and (for resuming) the
    optimiser and step. Written atomically."""

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


def lifter_frame(blob: dict[str, Any]) -> str:
    """The frame a lifter file's targets were in (files from before the option: the camera's)."""
    return str(blob.get("options", {}).get("offsets_frame", "camera"))


def load_into(lifter: Lifter, blob: dict[str, Any], roots: tuple[str, ...], source: str,
              offsets_frame: str | None = None) -> None:
    """Copies a lifter file's weights into a network's lifter, checking that both mean the same rows."""
    from engines.errors import InputError

    if tuple(blob["roots"]) != tuple(roots):
        raise InputError(f"{source}: the lifter was trained for roots {blob['roots']}, the model has {list(roots)}")
    frame = lifter_frame(blob)
    if offsets_frame is not None and frame != offsets_frame:
        raise InputError(f"{source}: the lifter was trained in the {frame} frame, the model's offsets_frame is "
                         f"{offsets_frame} (pretrain it with --offsets-frame {offsets_frame})")
    try:
        lifter.load_state_dict(blob["state_dict"])
    except RuntimeError as exc:
        raise InputError(f"{source}: the lifter's shape (width {blob['width']}, {blob['blocks']} blocks) does not "
                         f"fit the model's lift_width/lift_blocks ({str(exc).splitlines()[0]})") from None


class ValidationSet:
    """Held-out motions on held-out bodies, from fixed random cameras: exact and corrupted 2D."""

    def __init__(self, sampler: PoseSampler, n: int, seed: int, offsets_frame: str = "camera") -> None:
        rng = np.random.default_rng([seed, 7777])
        cam = sampler.camera_joints(rng, n)
        exact = cam[:, :, :2] / cam[:, :, 2:3]
        noisy, conf = sampler.corrupt(rng, exact)
        self.joints_3d = in_frame(cam, exact, offsets_frame).astype(np.float32)
        self.exact = exact.astype(np.float32)
        self.noisy, self.conf = noisy.astype(np.float32), conf.astype(np.float32)

    def metrics(self, lifter: Lifter, roots: tuple[int, ...]) -> dict[str, float]:
        ones = np.ones_like(self.conf)
        return {"val_noisy_mm": pelvis_mpjpe(lifter, self.noisy, self.conf, self.joints_3d, roots),
                "val_exact_mm": pelvis_mpjpe(lifter, self.exact, ones, self.joints_3d, roots)}


def pretrain(opts: PretrainOptions, out: Any, bodies_path: Any, data_dir: Any = None,
             init: dict[str, Any] | None = None,
             progress: bool = True, say: Callable[[str], None] = print,
             stop_after: int | None = None) -> dict[str, Any]:
    """Trains (or resumes, from `out` when it holds a checkpoint) a lifter on projected motion
    capture. `stop_after`: end after that step with a checkpoint, as an interruption would.
    Returns the last validation metrics."""

    from tqdm import tqdm

    from train.motion import load_all, split
    from train.train import StopFlag, TrainingInterrupted, _trim_log
    from train.synth.body import BodyBank
    from train.synth.generate import split_bodies

    torch.set_num_threads(opts.threads)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    bank = BodyBank.load(Path(bodies_path))
    try:
        motions, cameras = load_all(data_dir)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"motion data not found: {exc.filename or exc} (give --data DIR, or set POSECAST_DATA "
                                f"to the folder of ../shared/datasets/README.md)") from None
    train_m, val_m = split(motions)
    joints = bank.joints
    train_sampler = PoseSampler(train_m, joints[split_bodies(bank.num_bodies, "train")], cameras)
    val_sampler = PoseSampler(val_m, joints[split_bodies(bank.num_bodies, "val")], cameras)
    val = ValidationSet(val_sampler, opts.val_samples, opts.seed, opts.offsets_frame)
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
        if lifter_frame(blob) != opts.offsets_frame:
            raise ValueError(f"{out} holds a lifter trained in the {lifter_frame(blob)} frame; choose another --out, "
                             f"delete it, or use --offsets-frame {lifter_frame(blob)}")
        lifter.load_state_dict(blob["state_dict"])
        if "optimizer" in blob and "scheduler" in blob:
            from train.train import load_schedule_state

            load_schedule_state(opt, sched, blob["optimizer"], blob["scheduler"])
        elif "optimizer" in blob:
            opt.load_state_dict(blob["optimizer"])
        elif "scheduler" in blob:
            sched.load_state_dict(blob["scheduler"])
        start = int(blob["step"])
        say(f"resuming {out} at step {start} of {opts.steps}")
        # Threads change the speed, not the result.
        saved = {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in blob.get("options", {}).items()}
        changed = sorted(k for k, v in dataclasses.asdict(opts).items()
                         if k in saved and k != "threads" and saved[k] != (list(v) if isinstance(v, tuple) else v))
        if changed:
            say(f"note: the options differ from the checkpoint's in {', '.join(changed)}; continuing with the new values")
        if init is not None:
            say(f"note: --init is ignored: {out} already holds a lifter to resume")
        _trim_log(out.with_suffix(".log.jsonl"), start)
    else:
        # A run stopped before its first checkpoint starts again at step 0 (its log with it).
        _trim_log(out.with_suffix(".log.jsonl"), 0)
        if init is not None:
            load_into(lifter, init, opts.roots, "init", opts.offsets_frame)
            say("starting from the given lifter")

    log_path = out.with_suffix(".log.jsonl")
    bar = tqdm(total=opts.steps, initial=start, disable=not progress, unit="step", dynamic_ncols=True, desc="lifter")
    acc, t0, metrics = 0.0, time.perf_counter(), {}
    end = opts.steps if stop_after is None else min(opts.steps, stop_after)
    stopped: int | None = None
    with StopFlag() as flag, open(log_path, "a", buffering=1) as log:
        for step in range(start, end):
            rng = np.random.default_rng([opts.seed, step])      # a resumed run draws what it would have
            pts, conf, j3 = train_sampler.sample(rng, opts.batch_size, opts.offsets_frame)
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
            checkpoint = done % opts.checkpoint_every == 0 or done == end
            # Stopped between checkpoints: the step in flight is done, so its state is kept
            # (without a validation, to end at once) and a second run resumes from it.
            stopping = flag.signal is not None and done < end
            if checkpoint or stopping:
                extra: dict[str, Any] = {"scheduler": sched.state_dict()}
                if checkpoint:
                    lifter.eval()
                    metrics = val.metrics(lifter, roots)
                    log.write(json.dumps({"step": done, "val": metrics}) + "\n")
                    bar.write(f"lifter: step {done}: held-out motions, pelvis row: {metrics['val_noisy_mm']:.1f} mm "
                              f"from corrupted 2D, {metrics['val_exact_mm']:.1f} mm from exact 2D")
                    extra["val"] = metrics
                if not all(torch.isfinite(p).all() for p in lifter.parameters()):
                    raise ValueError(f"training diverged at step {done} (the lifter's weights are NaN or infinite); "
                                     f"{out} was not written over: lower --lr (it is {opts.lr:g})")
                save_lifter(out, lifter, opts, done, opt, extra)
                t0 = time.perf_counter()
            if stopping:
                stopped = flag.signal
                break
    bar.close()
    if stopped is not None:
        exc = TrainingInterrupted(f"interrupted at step {done} of {opts.steps}; {out} holds step {done}: "
                                  f"run the same command again to resume")
        exc.exit_code = 128 + int(stopped)
        raise exc
    if not metrics:
        lifter.eval()
        metrics = val.metrics(lifter, roots)
    return metrics


def attach_lifter(model: Any, lifter_blob: dict[str, Any], out: Any, weights: str) -> Any:
    """A Posecast checkpoint: `model`'s backbone and 2D branch with the lifter as its whole 3D
    estimate (the rest of the 3D branch fresh, its regressor a zero correction): what the lifter
    gives from that model's 2D before any training on images."""

    from engines.model_file import ModelInfo, save_checkpoint

    net, cfg = network_for_lifter(model, int(lifter_blob["width"]), int(lifter_blob["blocks"]),
                                  lifter_frame(lifter_blob))
    load_into(net.lifter, lifter_blob, cfg.roots, "the lifter")
    save_checkpoint(Path(out), net.eval(), ModelInfo(cfg, weights=weights, trained=True))
    return Path(out)


def network_for_lifter(model: Any, width: int, blocks: int, frame: str,
                       roots: tuple[str, ...] | None = None) -> tuple[Any, Any]:
    """`model`'s network with its 3D branch made afresh for a lifter of `width` and `blocks`
    (and its config); an InputError where the model cannot take one (`roots`: the lifter's rows,
    where known). Checked before a pretraining with --attach-to, so that hours of it do not end in
    a model that cannot be built."""
    from engines.errors import InputError
    from engines.model_file import load_checkpoint
    from engines.network import build_network
    from train.train import THREE_D_MODULES

    source, info = load_checkpoint(Path(model))
    if roots is not None and tuple(roots) != tuple(info.config.roots):
        raise InputError(f"--attach-to {model}: its roots are {list(info.config.roots)}, the lifter's would be "
                         f"{list(roots)}")
    cfg = dataclasses.replace(info.config, lift_width=width, lift_blocks=blocks, offsets_frame=frame)
    try:
        cfg.check()
        net = build_network(cfg)
        # The model's own lifter, if it has one, goes with the rest of its 3D branch.
        kept = {k: v for k, v in source.state_dict().items()
                if k.split(".")[0] not in THREE_D_MODULES + ("lifter",)}
        net.load_state_dict(kept, strict=False)
    except (RuntimeError, ValueError) as exc:
        raise InputError(f"--attach-to {model}: its network cannot take a lifter of width {width} and {blocks} "
                         f"blocks ({' '.join(str(exc).split())[:200]})") from None
    return net, cfg


def main(argv: list[str] | None = None) -> int:
    from engines.arguments import OneLineParser
    import sys

    from engines.errors import PosecastError
    from train.config import default_data_root
    from train.train import TrainingInterrupted

    p = OneLineParser(prog="python -m train.lifting",
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
    p.add_argument("--offsets-frame", choices=OFFSETS_FRAMES, default=d.offsets_frame,
                   help="the frame of the 3D targets: camera, or ray (the camera turned onto the ray through the "
                        "mean of the 2D joints; engines/ray_frame.py); the model it goes into must use the same")
    p.add_argument("--init", metavar="FILE", help="start from this lifter file's weights")
    p.add_argument("--attach-to", metavar="MODEL", help="then write --model-out: this model (.pt) with the lifter "
                   "as its 3D branch (its own 3D branch dropped)")
    p.add_argument("--model-out", metavar="FILE", help="with --attach-to: the model file to write")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    try:
        if bool(args.attach_to) != bool(args.model_out):
            raise ValueError("--attach-to and --model-out go together")
        if args.width < 16 or args.blocks < 0:
            raise ValueError(f"--width must be at least 16 and --blocks at least 0 (got {args.width}, {args.blocks})")
        if args.steps < 1 or args.batch_size < 1 or args.threads < 1 or not 0 < args.lr <= 1:
            raise ValueError("--steps, --batch-size and --threads must be at least 1, --lr in (0, 1]")
        if args.attach_to:
            network_for_lifter(args.attach_to, args.width, args.blocks, args.offsets_frame, PretrainOptions().roots)
        opts = PretrainOptions(width=args.width, blocks=args.blocks, steps=args.steps, batch_size=args.batch_size,
                               lr=args.lr, seed=args.seed, threads=args.threads, offsets_frame=args.offsets_frame)
        say = lambda m: print(f"python -m train.lifting: {m}", file=sys.stderr)  # noqa: E731
        out = Path(args.out)
        if out.is_dir():
            raise ValueError(f"--out {out} is a folder; give the lifter file's name (.pt)")
        init = load_lifter_file(args.init) if args.init else None
        m = pretrain(opts, out, args.bodies, args.data, init, progress=not args.no_progress, say=say)
    except TrainingInterrupted as exc:
        print(f"python -m train.lifting: {exc}", file=sys.stderr)
        return exc.exit_code
    except (PosecastError, ValueError, OSError) as exc:
        print(f"python -m train.lifting: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        kept = f"{args.out} holds the last checkpoint" if Path(args.out).exists() else "no checkpoint was written yet"
        print(f"python -m train.lifting: interrupted; {kept}: run the same command to resume", file=sys.stderr)
        return 130
    print(f"python -m train.lifting: wrote {args.out}: held-out pelvis-row MPJPE {m['val_noisy_mm']:.1f} mm (corrupted 2D), "
          f"{m['val_exact_mm']:.1f} mm (exact 2D)", file=sys.stderr)
    if args.attach_to:
        try:
            path = attach_lifter(args.attach_to, load_lifter_file(out), args.model_out,
                                 f"{Path(args.attach_to).name} + lifter {out.name}")
        except (PosecastError, ValueError) as exc:
            print(f"python -m train.lifting: error: {exc}", file=sys.stderr)
            return 2
        print(f"python -m train.lifting: wrote {path}: {args.attach_to}'s 2D with the lifter as its 3D", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
