"""The training loop: `python -m train.train --config configs/train/default.yaml` (or `posecast train`).

    batch (synthetic crops with 2D + 3D labels, real crops with 2D labels)
      -> net.forward_logits -> loss = w2d * CE(grid logits, soft labels) + w3d * MSE(offsets)
      -> AdamW, linear warm-up then cosine decay, one scheduler step per optimiser step

The run folder (`runs/<name>` unless `--out`):
- `log.jsonl`: a line every `log_every` steps (step, losses, lr, img/s, the share of the time
  spent waiting for the loaders) and one per validation
  (the quick metrics of train/evaluate.py on `val_samples` of each validation set).
- `last.pt`: written atomically every `checkpoint_every` steps, on Ctrl-C and at the end: model,
  optimiser, scheduler, step, RNG states and the recipe. It is also a Posecast checkpoint
  (`posecast track --model runs/x/last.pt` works). A run whose folder has one resumes from it;
  the loader restarts at that step, so a resumed run computes what an uninterrupted one would.
- `model.pt`: at the end, the trained network (engines.model_file.save_checkpoint).
- `.lock`: held while a run trains there (train/run_lock.py); a second run of the folder is refused.

BatchNorm: the network is in train mode for the optimiser steps, eval mode for validation.
Exit codes: 0 done; 1 the loss or the weights were not finite (train/step.py); 2 bad recipe or
data; 130 interrupted by Ctrl-C, 143 by SIGTERM, 129 by SIGHUP (each after writing last.pt).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import io
import json
import math
import os
import pickle
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

# OpenMP threads that wait passively instead of spinning: set before torch loads its OpenMP. On
# this project's shared 2-core machines (data generation, tests, loader workers running beside),
# spinning threads fight over the cores: a training step of the 256 px model with 2 threads went
# from 4 img/s to 6-8 img/s with this, at a load average of 8 (2026-11-25).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch

from engines.arguments import OneLineParser
from engines.config import ConfigError, from_dict, to_dict
from engines.errors import InputError, PosecastError
from engines.files import check_writable_folder, make_folders, remove_if_empty, write_hint
from engines.model_config import ModelConfig
from engines.model_file import ModelInfo, atomic_write_bytes, save_checkpoint
from engines.network import PoseNet, build_network
from engines.stop_signals import STOP_SIGNALS, describe, exit_code, stop_signals_interrupt
from train.budget import Plan, StepPlanner
from train.config import TrainConfig, load_train_config
from train.run_lock import remove_lock, run_folder_lock
from train.real2d import RealRecord
from train.real_cutouts import RealBackdrops

if TYPE_CHECKING:
    from train.step import LossWindow

PROG = "train"
# The step count of a time-budgeted run before it has planned: more than any run reaches.
_UNPLANNED = 10**9
LAST = "last.pt"
FINAL = "model.pt"
LOG = "log.jsonl"
CHECKPOINT_FORMAT = 1


THREE_D_MODULES = ("fuse", "fuse_fc", "spatial", "regressor")


def init_weights(net: PoseNet, path: Path, scope: str = "features") -> str:
    """Start the backbone and the 2D branch from another model's weights (where names and shapes
    match), and the lifter too where the source has one that fits; the rest of the 3D branch
    keeps its seeded initialisation. The ablation uses this so that every
    variant's 3D branch learns from the same features for the same number of steps. With scope
    "all", the 3D branch is taken too (continuing a trained model with another recipe); at another
    input size, the regressor's first layer is resampled to the new stride-32 map
    (`resample_regressor_input`). Backbone blocks that the source lacks (a deeper backbone) start
    as the identity (`start_added_blocks_as_identity`)."""
    from engines.model_file import load_checkpoint

    if Path(path).suffix.lower() == ".onnx":
        raise InputError(f"init_from: {path} is an ONNX model, which holds no trainable weights here; give the "
                         f"Posecast .pt checkpoint it was exported from")
    try:
        source, _ = load_checkpoint(path)
    except PosecastError as exc:
        raise InputError(f"init_from: {exc}") from None
    own = net.state_dict()
    weights = source.state_dict()
    resampled = ""
    if scope == "all" and source.input_size != net.input_size:
        key = "regressor.0.weight"
        if key in weights and key in own and net.fusion != "fc" and source.fusion != "fc":
            weights[key] = resample_regressor_input(weights[key], PoseNet.SPATIAL_CHANNELS,
                                                    source.input_size // 32, net.input_size // 32)
            resampled = (f"; the regressor's input resampled from a {source.input_size // 32}x"
                         f"{source.input_size // 32} to a {net.input_size // 32}x{net.input_size // 32} map")
    taken = {k: v for k, v in weights.items()
             if k in own and own[k].shape == v.shape
             and (scope == "all" or k.split(".")[0] not in THREE_D_MODULES)}
    net.load_state_dict(taken, strict=False)
    added = start_added_blocks_as_identity(net, weights)
    fresh = [k for k in own if k not in taken and not any(k.startswith(name + ".") for name in added)]
    deeper = f"; added blocks start as the identity: {', '.join(added)}" if added else ""
    return (f"initialised {len(taken)} of {len(own)} tensors from {path}" + resampled + deeper
            + (f"; new: {', '.join(sorted({k.split('.')[0] for k in fresh}))}" if fresh else ""))


BACKBONE_STAGES = ("s4", "s8", "s16", "s32")


def start_added_blocks_as_identity(net: PoseNet, source_weights: dict[str, torch.Tensor]) -> list[str]:
    """A deeper backbone continued from a shallower model: each residual block that the source
    lacks has its last BatchNorm's scale and shift set to zero, so the block adds nothing and the
    network starts with the source's function. The zero scale still gets a gradient, so the block
    learns from the first step (the zero-gamma start of Goyal et al., 2017). Returns the blocks'
    names."""
    added: list[str] = []
    for stage_name in BACKBONE_STAGES:
        for index, block in enumerate(getattr(net, stage_name)):
            name = f"{stage_name}.{index}"
            if not block.residual or any(k.startswith(name + ".") for k in source_weights):
                continue
            last_bn = block.body[-1][1]
            with torch.no_grad():
                last_bn.weight.zero_()
                last_bn.bias.zero_()
            added.append(name)
    return added


def resample_regressor_input(weight: torch.Tensor, channels: int, size_from: int, size_to: int) -> torch.Tensor:
    """The regressor's first layer, for a stride-32 map of another size (a model continued at
    another input size). The layer reads the flattened (channels, size, size) map. Each old
    cell's weight is shared among the new cells by the fraction of the old cell they cover, so
    the response to a map that is constant over space is exactly the same as before."""
    out = weight.shape[0]
    if weight.shape[1] != channels * size_from * size_from:
        raise ValueError(f"regressor input {weight.shape[1]} is not {channels} x {size_from} x {size_from}")
    share = torch.zeros(size_to, size_from, dtype=torch.float64)   # [new cell, old cell]
    for i in range(size_to):
        for k in range(size_from):
            overlap = min((i + 1) / size_to, (k + 1) / size_from) - max(i / size_to, k / size_from)
            share[i, k] = max(overlap, 0.0) * size_from
    grid = weight.double().reshape(out, channels, size_from, size_from)
    resized = torch.einsum("ik,ockl,jl->ocij", share, grid, share)
    return resized.reshape(out, channels * size_to * size_to).to(weight.dtype).contiguous()


def frozen_modules(net: PoseNet) -> list[torch.nn.Module]:
    """The backbone and the 2D branch (everything outside the 3D branch and the lifter), with
    their parameters set not to train."""
    frozen = [m for name, m in net.named_children() if name not in THREE_D_MODULES + ("lifter",)]
    for module in frozen:
        module.requires_grad_(False)
    return frozen


def set_train_mode(net: PoseNet, frozen: list[torch.nn.Module]) -> None:
    """Train mode, except that frozen modules keep their BatchNorm statistics (eval mode)."""
    net.train()
    for module in frozen:
        module.eval()


class TrainingInterrupted(PosecastError):
    exit_code = 130


def lr_factor(step: int, warmup: int, total: int, schedule: str, final_fraction: float, hold: int = 0) -> float:
    """The learning rate of optimiser step `step` (0-based) as a fraction of the peak: linear
    warm-up over `warmup` steps, the peak until step `hold` (a time-budgeted run before its plan,
    train/budget.py), then cosine from 1 down to `final_fraction` at `total`."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    begin = max(warmup, hold)
    span = max(total - begin, 1)
    t = min(max(step - begin, 0) / span, 1.0)
    return final_fraction + (1.0 - final_fraction) * 0.5 * (1.0 + math.cos(math.pi * t))


@dataclass
class Data:
    synth: Any
    real: Any | None
    synth_val: Any | None
    real_val: Any | None
    negative: Any | None = None
    negative_val: Any | None = None


def build_data(cfg: TrainConfig, mcfg: ModelConfig) -> Data:
    """The training and validation datasets of a recipe. The real set's split is fixed (seed 0)
    whatever the training seed, so every run validates on the same records."""
    from train.datasets import RealDataset, SyntheticDataset

    size = mcfg.input_size
    synth = SyntheticDataset(cfg.synth_dirs(), input_size=size, augment=cfg.data.augment, seed=cfg.seed,
                             offsets_frame=mcfg.offsets_frame, cut_fraction=cfg.data.cut_fraction)
    val_dirs = cfg.synth_val_dirs()
    # Validation keeps camera-frame labels: train.evaluate turns a ray-frame model's pose back as the pipeline does.
    synth_val = SyntheticDataset(val_dirs, input_size=size, augment=False, seed=0) if val_dirs else None
    real = real_val = None
    real_dir = cfg.real2d_dir()
    if real_dir is not None:
        from train.real2d import load_real2d, split_real, suspicious_labels

        records = load_real2d(real_dir)
        train_recs, val_recs = split_real(records, val_fraction=cfg.data.real_val_fraction, seed=0)
        # About 2% of the labels are broken (legs placed in the background); split first so the
        # held-out images stay the same, then train on the sound ones only. Validation keeps all.
        train_recs = [r for r in train_recs if not suspicious_labels(r)]
        if cfg.data.real_fraction > 0:
            real = RealDataset(train_recs, input_size=size, augment=cfg.data.augment, seed=cfg.seed,
                               cut_fraction=cfg.data.cut_fraction, backdrops=real_backdrops(cfg, train_recs))
        if val_recs:
            real_val = RealDataset(val_recs, input_size=size, augment=False, seed=0)
    negative = negative_val = None
    bg_dir = cfg.backgrounds_dir()
    if bg_dir is not None:
        from train.backgrounds import split_backgrounds
        from train.negatives import NegativeDataset

        if cfg.data.negative_fraction > 0:
            photos = split_backgrounds(bg_dir, "train")
            if not photos:
                raise ValueError(f"{bg_dir} holds only held-out background photos: none for training negatives")
            negative = NegativeDataset(photos, input_size=size, seed=cfg.seed)
        held_out = split_backgrounds(bg_dir, "val")
        if held_out:            # without any, validation measures no false detections
            negative_val = NegativeDataset(held_out, input_size=size, seed=0, length=cfg.val_samples)
    return Data(synth, real, synth_val, real_val, negative, negative_val)


def real_backdrops(cfg: TrainConfig, records: list[RealRecord]) -> RealBackdrops | None:
    """The real photos' people before training background photos, where the recipe asks."""
    cutouts_dir, bg_dir = cfg.real_cutouts_dir(), cfg.backgrounds_dir()
    if cfg.data.paste_fraction <= 0 or cutouts_dir is None or bg_dir is None:
        return None
    from train.backgrounds import split_backgrounds
    from train.real_cutouts import Cutouts

    cutouts = Cutouts.load(cutouts_dir, records)
    if not cutouts.masks:
        raise ValueError(f"{cutouts_dir} holds no mask of the training photos: make them with "
                         f"python -m train.real_cutouts --out {cutouts_dir}")
    return RealBackdrops(cutouts, split_backgrounds(bg_dir, "train"), cfg.data.paste_fraction,
                         bystanders=cfg.data.bystander_fraction, sources={r.path.name: r.path for r in records})


def held_out_in_training(train_dirs: list[Path], metas: list[dict], val_dirs: list[Path]) -> list[str]:
    """What would make the run's validation figures not held-out ones: a training folder (with
    its manifest's `meta`, as the data set read them) that is also a validation one, or whose
    manifest says it is a held-out set (split: val)."""
    notes = []
    for d, meta in dict(zip(train_dirs, metas)).items():
        if d in val_dirs:
            notes.append(f"{d} is both a training and a validation folder: the validation figures are on "
                         f"images the run trains on")
        elif isinstance(meta, dict) and meta.get("split") == "val":
            notes.append(f"{d} is a held-out set (its manifest says split: val), and the run trains on it: "
                         f"figures measured on it are no longer held-out ones")
    return notes


def describe_data(data: Data) -> dict[str, Any]:
    """What a run's folder patterns matched: recorded in the run folder, since a pattern such as
    `../data/synth_train_*` alone does not say which sets were there."""
    def folders(ds: Any) -> list[str]:
        return [str(d) for d in ds.shards.dirs]

    out: dict[str, Any] = {"synthetic": {"folders": folders(data.synth), "images": len(data.synth)}}
    if data.synth_val is not None:
        out["synthetic_val"] = {"folders": folders(data.synth_val), "images": len(data.synth_val)}
    out["real"] = {"train": len(data.real.records) if data.real is not None else 0,
                   "val": len(data.real_val.records) if data.real_val is not None else 0}
    if data.negative is not None:
        out["negatives"] = {"photos": [str(p) for p in data.negative.paths]}
    if data.negative_val is not None:
        out["negatives_val"] = {"photos": [str(p) for p in data.negative_val.paths]}
    return out


# --- checkpoints -------------------------------------------------------------------------

def _rng_state() -> dict[str, Any]:
    import random

    np_state = np.random.get_state()
    return {
        "torch": torch.random.get_rng_state(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": [list(random.getstate()[1]), random.getstate()[0], random.getstate()[2]],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    import random

    torch.random.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    key, version, gauss = state["python"]
    random.setstate((version, tuple(key), gauss))


def save_training_state(path: Path, net: PoseNet, opt: torch.optim.Optimizer, sched: Any, step: int,
                        cfg: TrainConfig, mcfg: ModelConfig, plan: Plan | None = None,
                        losses: LossWindow | None = None) -> None:
    """last.pt: everything to resume, laid out as a Posecast checkpoint too ('posecast' metadata
    and 'state_dict'), so engines.model_file.load_checkpoint reads it. Written atomically.
    `losses`: the steps since the last log line, so that a resumed run's next line is the mean of
    the same steps as an uninterrupted run's (checkpoints and log lines need not fall together)."""
    info = ModelInfo(mcfg, weights=f"{cfg.run_name}, step {step} (training checkpoint)", trained=step > 0)
    blob = {
        "posecast": info.metadata(),
        "state_dict": net.state_dict(),
        "training": {
            "format": CHECKPOINT_FORMAT,
            "step": step,
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "rng": _rng_state(),
            "config": to_dict(cfg),
            # A time-budgeted run's plan (train/budget.py): the schedule a resumed run must keep.
            "plan": None if plan is None else plan.to_dict(),
            "loss_window": None if losses is None else {"sums": losses.sums.cpu(), "steps": losses.steps},
        },
    }
    buf = io.BytesIO()
    torch.save(blob, buf)
    try:
        atomic_write_bytes(Path(path), buf.getvalue())
    except OSError as err:
        # Written through a new file renamed into place: the one before is still whole.
        kept = " (the checkpoint already there is kept whole, and the run resumes from it)" if Path(path).exists() else ""
        raise InputError(f"cannot write the checkpoint {path} at step {step}: {err.strerror or err} "
                         f"({write_hint(err)}){kept}") from None


def same_network(saved: Any, mcfg: ModelConfig) -> bool:
    """Whether a checkpoint's model_config describes the recipe's network. Keys it lacks take
    their defaults (checkpoints written before a key existed still resume), and test-time
    mirroring, which training never uses, does not count."""
    try:
        cfg = from_dict(ModelConfig, saved, source="checkpoint model_config")
    except (ConfigError, TypeError, ValueError):
        return False
    return replace(cfg, flip_test=mcfg.flip_test) == mcfg


def load_training_state(path: Path, net: PoseNet, opt: torch.optim.Optimizer, sched: Any, cfg: TrainConfig,
                        mcfg: ModelConfig, say: Callable[[str], None],
                        losses: LossWindow | None = None) -> tuple[int, Plan | None]:
    """Restores last.pt into the objects (and `losses`, where the checkpoint kept its window; one
    written before it did leaves the window empty); returns its step and its time budget's plan,
    if any."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, EOFError, RuntimeError, ValueError, KeyError, pickle.UnpicklingError) as exc:
        # KeyError: torch's reader of its legacy format, given text. An empty file's error has no text.
        why = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
        raise ConfigError(f"{path} cannot be read as a checkpoint ({why}); it is damaged: "
                          f"delete it to start afresh, or restore it from a copy") from None
    if not isinstance(blob, dict) or "training" not in blob:
        raise ConfigError(f"{path} is not a training checkpoint; delete it or choose another --out")
    if not same_network(blob["posecast"].get("model_config"), mcfg):
        raise ConfigError(f"{path} was written for a different model (its model_config differs from the "
                          f"recipe's); choose another --out or delete it to start afresh")
    state = blob["training"]
    saved_cfg = state.get("config", {})
    # A key the checkpoint predates was its default then: only another value is a change.
    defaults = {f.name: to_dict(f.default) for f in dataclasses.fields(TrainConfig)
                if f.default is not dataclasses.MISSING}
    if isinstance(saved_cfg, dict):
        saved_cfg = {**{k: v for k, v in defaults.items() if k not in saved_cfg}, **saved_cfg}
    changed = _changed_keys(saved_cfg, to_dict(cfg))
    # The weights to start from are only read by a fresh run: a resumed one goes on from its own.
    starts = [k for k in changed if k in FRESH_RUN_KEYS]
    changed = [k for k in changed if k not in FRESH_RUN_KEYS]
    if starts:
        say(f"note: {', '.join(starts)} only chooses a fresh run's first weights, and this run resumes {path}: "
            f"it is not read (for a run from those weights, choose another --out)")
    if changed:
        say(f"note: the recipe differs from the checkpoint's in {', '.join(changed)}; continuing with the new values")
    bad = [name for name, tensor in _state_tensors(blob["state_dict"], state["optimizer"])
           if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if bad:
        # A damaged file (a flipped bit): resuming would stop at a NaN loss, blamed on the rate.
        raise ConfigError(f"{path} holds non-finite values in {bad[0]}{f' and {len(bad) - 1} more' if len(bad) > 1 else ''}; "
                          f"it is damaged: delete it to start afresh, or restore it from a copy")
    net.load_state_dict(blob["state_dict"])
    load_schedule_state(opt, sched, state["optimizer"], state["scheduler"])
    _set_rng_state(state["rng"])
    window = state.get("loss_window")
    if losses is not None and isinstance(window, dict) and isinstance(window.get("sums"), torch.Tensor) \
            and window["sums"].shape == losses.sums.shape:
        losses.sums = window["sums"].to(losses.sums.device, torch.float64)
        losses.steps = int(window["steps"])
    saved_plan = state.get("plan")
    return int(state["step"]), Plan.from_dict(saved_plan) if saved_plan else None


FRESH_RUN_KEYS = ("init_from", "lifter_from", "init_scope")


def _state_tensors(weights: dict[str, Any], optimizer: dict[str, Any]) -> list[tuple[str, torch.Tensor]]:
    """The weights' and the optimizer's tensors (its moments), named for a message."""
    found = [(name, t) for name, t in weights.items() if isinstance(t, torch.Tensor)]
    for index, slots in (optimizer.get("state") or {}).items():
        found += [(f"the optimizer's {key} of parameter {index}", t) for key, t in slots.items()
                  if isinstance(t, torch.Tensor)]
    return found


def load_schedule_state(opt: torch.optim.Optimizer, sched: Any, opt_state: dict, sched_state: dict) -> None:
    """Restores a saved optimizer and LambdaLR schedule at their step, with the rates and weight
    decay that `opt` and `sched` were made with. The saved states bring back the rates of the run
    that wrote them; a run resumed with others (after "lower optim.lr") must get its own."""
    rates, decays = list(sched.base_lrs), [g.get("weight_decay", 0.0) for g in opt.param_groups]
    opt.load_state_dict(opt_state)
    sched.load_state_dict(sched_state)
    for group, saved, lr, decay in zip(opt.param_groups, sched.base_lrs, rates, decays):
        group["lr"] = group["lr"] * lr / saved if saved > 0 else lr
        group["initial_lr"], group["weight_decay"] = lr, decay
    sched.base_lrs = rates
    sched._last_lr = [group["lr"] for group in opt.param_groups]


def _read_json(path: Path) -> Any:
    """A run folder's record, or None where it is damaged (the run's own record, rewritten then)."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def _changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [k for key in keys for k in _changed_keys(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [] if old == new else [prefix.rstrip(".")]


def _trim_log(path: Path, step: int) -> None:
    """Drops log lines past the resumed step (written after the last checkpoint)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except json.JSONDecodeError:
            continue
    atomic_write_bytes(path, ("\n".join(keep) + "\n" if keep else "").encode())


# --- the loop ----------------------------------------------------------------------------

class StopFlag:
    """SIGINT, SIGTERM and SIGHUP (a closed terminal) set a flag that the loop reads between steps
    (the step in flight finishes, so the checkpoint is consistent); a second Ctrl-C interrupts at
    once. A SIGHUP ignored already stays ignored: `nohup` training must outlive its terminal."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        for sig in STOP_SIGNALS:
            if sig == signal.SIGHUP and signal.getsignal(sig) is signal.SIG_IGN:
                continue
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:          # not the main thread: no handlers, Ctrl-C as usual
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def train(cfg: TrainConfig, out: Path | None = None, progress: bool | str = True, stop_after: int | None = None,
          announce: Callable[[str], None] | None = None, time_budget_s: float | None = None) -> dict[str, Any]:
    """Runs (or resumes) a recipe. `progress`: True a tqdm bar, "lines" a line on stderr per log
    record (for logs that are files), False nothing. `stop_after`: end after that step with a
    checkpoint, as an interruption would, without writing model.pt (training in slices).
    `time_budget_s`: train for about that long; the run sets its own step count from the rate it
    measures (train/budget.py), and optim.steps is unused. Returns a summary."""
    out = Path(out) if out is not None else cfg.out_dir()
    created = _make_run_folder(out)
    try:
        with run_folder_lock(out):
            return _train(cfg, out, progress, stop_after, announce, time_budget_s)
    except BaseException:
        # A run that failed before writing anything leaves no empty folder of its own behind.
        if created:
            remove_lock(out)
        remove_if_empty(created)
        raise


def _make_run_folder(out: Path) -> list[Path]:
    """Create the run folder and its missing parents, and make sure a file can be written there
    (before the data is loaded). Returns the folders it created, deepest first."""
    if out.exists() and not out.is_dir():
        raise InputError(f"the run folder '{out}' is a file; choose another --out")
    created: list[Path] = []
    try:
        created = make_folders(out)
        check_writable_folder(out)
    except OSError as err:
        remove_if_empty(created)
        raise InputError(f"cannot write the run folder '{out}': {err.strerror or err} "
                         f"(choose another --out, in a folder you can write to)") from None
    return created


def _train(cfg: TrainConfig, out: Path, progress: bool | str, stop_after: int | None,
           announce: Callable[[str], None] | None, time_budget_s: float | None) -> dict[str, Any]:
    from tqdm import tqdm

    from train.datasets import make_loader
    from train.evaluate import TorchPredictor, quick_metrics
    from train.step import (LossWindow, StepSetup, autocast_for, build_optimizer, check_weights, step_losses,
                            tf32_for, to_device)

    say = announce or (lambda msg: print(f"{PROG}: {msg}", file=sys.stderr))
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    mcfg = cfg.model_config()
    try:
        data = build_data(cfg, mcfg)
    except (FileNotFoundError, ValueError) as exc:
        raise InputError(f"training data: {exc}") from None
    val_dirs = data.synth_val.shards.dirs if data.synth_val is not None else []
    for note in held_out_in_training(data.synth.shards.dirs, data.synth.shards.metas, val_dirs):
        say(f"note: {note}")

    device = torch.device(resolve_device(cfg.device))
    net = build_network(mcfg).to(device)
    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    frozen = frozen_modules(net) if cfg.freeze_2d else []
    opt = build_optimizer(net, cfg.optim)
    o = cfg.optim
    # The schedule reads these at every step: a time-budgeted run sets them when it has planned.
    budgeted = time_budget_s is not None
    schedule = {"total": _UNPLANNED if budgeted else o.steps, "hold": _UNPLANNED if budgeted else 0}
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, o.warmup_steps, schedule["total"], o.schedule, o.final_lr_fraction,
                                 schedule["hold"]))

    last, log_path = out / LAST, out / LOG
    start = 0
    plan: Plan | None = None
    losses = LossWindow(device)
    if last.exists():
        start, plan = load_training_state(last, net, opt, sched, cfg, mcfg, say, losses)
        if plan is not None:
            cfg = _follow_plan(cfg, schedule, plan)
            say(f"resuming from {last} at step {start} of {plan.total} (planned for a {plan.budget_s:g} s budget)")
        else:
            if not budgeted and start > o.steps:
                # Its config.json would then say fewer steps than its weights were trained for.
                raise InputError(f"the run in {out} has trained {start} steps, more than the {o.steps} asked for; "
                                 f"give --steps {start} or more to go on, or another --out")
            say(f"resuming from {last} at step {start}" + ("" if budgeted else f" of {o.steps}"))
        _trim_log(log_path, start)
    else:
        # A run stopped before its first checkpoint starts again at step 0: the lines it logged
        # would otherwise stay in front of the new run's.
        _trim_log(log_path, 0)
        if cfg.init_from:
            say(init_weights(net, cfg.init_path(), cfg.init_scope))
        if cfg.lifter_from:
            from train.lifting import load_into, load_lifter_file

            load_into(net.lifter, load_lifter_file(cfg.lifter_path()), mcfg.roots, f"lifter_from {cfg.lifter_from}",
                      mcfg.offsets_frame)
            say(f"lifter initialised from {cfg.lifter_path()}")
        elif net.lifter is not None and not cfg.init_from:
            say("note: the lifter starts untrained (no lifter_from); pretrain one with python -m train.lifting")
    _write_config(out, cfg, mcfg)
    matched = describe_data(data)
    data_path = out / "data.json"
    kept = _read_json(data_path) if start and data_path.exists() else None
    if kept is None:
        if start and data_path.exists():
            say(f"note: {data_path} was damaged; it now records the sets matched at this resume")
        data_path.write_text(json.dumps(matched, indent=1) + "\n")
    elif kept != matched:
        say(f"note: the data folders match other sets than at the run's start; {data_path} keeps the start's")
    say(f"data: {matched['synthetic']['images']} rendered images in {len(matched['synthetic']['folders'])} "
        f"folders, {matched['real']['train']} real photos, "
        f"{len(matched.get('negatives', {}).get('photos', []))} background photos for person-free crops")

    setup = StepSetup.for_model(mcfg, cfg.loss)
    planner = StepPlanner(time_budget_s, start) if budgeted and plan is None else None
    total = schedule["total"]           # _UNPLANNED until a budgeted run has planned
    end = total if stop_after is None else min(total, stop_after)
    summary: dict[str, Any] = {"out": str(out), "start_step": start, "steps": None if planner else total}
    if start >= end:
        if start >= total and (out / FINAL).exists():
            say(f"the run in {out} is finished ({start} of {total} steps): nothing to do ({out / FINAL} is its model)")
        if start >= total and not (out / FINAL).exists():
            _write_final(out, net, cfg, mcfg, start)
        summary.update(step=start, final=str(out / FINAL) if start >= total else None)
        return summary

    # The loader's batches are drawn lazily, so an unplanned run's can run to _UNPLANNED.
    loader = make_loader(data.synth, data.real, cfg.data.real_fraction if data.real is not None else 0.0,
                         o.batch_size, cfg.num_workers, cfg.seed, total, start_step=start,
                         pin_memory=device.type == "cuda", negative_ds=data.negative,
                         negative_fraction=cfg.data.negative_fraction if data.negative is not None else 0.0)
    with open(log_path, "a", buffering=1) as log:
        bar = tqdm(total=None if planner else total, initial=start, disable=progress is not True, unit="step",
                   dynamic_ncols=True, desc=cfg.run_name, file=sys.stderr)
        step = start
        window: dict[str, float] = {"images": 0, "wait": 0.0}
        t_window = t_budget = time.perf_counter()
        rate = 0.0
        val: dict[str, Any] | None = None

        def validate() -> dict[str, Any]:
            net.eval()
            with torch.no_grad():
                metrics = quick_metrics(TorchPredictor(net), mcfg, data.synth_val, data.real_val, cfg.val_samples,
                                        data.negative_val)
            set_train_mode(net, frozen)
            log.write(json.dumps({"step": step, "val": metrics}) + "\n")
            return metrics

        interrupted = hard = False
        it = None
        try:
            with StopFlag() as flag, tf32_for(cfg.precision):
                set_train_mode(net, frozen)
                it = iter(loader)
                while step < end:
                    t_wait = time.perf_counter()
                    batch = next(it)
                    # Time spent waiting for the loaders, apart from the step: it tells a
                    # loader-bound run from a compute-bound one.
                    window["wait"] += time.perf_counter() - t_wait
                    batch = to_device(batch, device)
                    with autocast_for(cfg.precision, device):
                        loss, parts = step_losses(net, batch, setup)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    if o.grad_clip is not None:
                        torch.nn.utils.clip_grad_norm_([p for p in net.parameters() if p.requires_grad], o.grad_clip)
                    lr_used = opt.param_groups[0]["lr"]
                    opt.step()
                    sched.step()
                    step += 1

                    losses.add(parts, step)
                    window["images"] += int(batch["image"].shape[0])
                    bar.update(1)
                    if step % cfg.log_every == 0 or step == end:
                        losses.check()
                        means = losses.means()
                        if cfg.loss.w_twin <= 0:
                            del means["loss_twin"]
                        dt = time.perf_counter() - t_window
                        rate = window["images"] / dt if dt > 0 else 0.0
                        record = {"step": step, **means, "lr": lr_used, "img_per_s": rate,
                                  "data_wait": min(window["wait"] / dt, 1.0) if dt > 0 else 0.0,
                                  "time": time.time()}
                        log.write(json.dumps(record) + "\n")
                        bar.set_postfix(loss=f"{record['loss']:.3f}", l2d=f"{record['loss_2d']:.3f}",
                                        l3d=f"{record['loss_3d']:.4f}", lneg=f"{record['loss_neg']:.3f}",
                                        img_s=f"{rate:.1f}")
                        if progress == "lines":
                            twin = f", twins {record['loss_twin']:.4f}" if "loss_twin" in record else ""
                            of = total if total != _UNPLANNED else "?"
                            say(f"step {step}/{of}: loss {record['loss']:.4f} (2D {record['loss_2d']:.4f}, "
                                f"3D {record['loss_3d']:.5f} m^2, negatives {record['loss_neg']:.4f}{twin}), "
                                f"lr {lr_used:.3g}, {rate:.1f} img/s, {100 * record['data_wait']:.0f}% waiting for data")
                        window = {k: 0 for k in window}
                        losses.reset()
                        t_window = time.perf_counter()
                        made = planner.mark(t_window - t_budget, step) if planner else None
                        if made is not None:
                            plan, total = made, made.total
                            cfg = _follow_plan(cfg, schedule, plan)
                            end = total if stop_after is None else min(total, stop_after)
                            _write_config(out, cfg, mcfg)
                            log.write(json.dumps({"step": step, "plan": plan.to_dict()}) + "\n")
                            bar.total = total
                            bar.refresh()
                            say(f"time budget {plan.budget_s:g} s: {plan.steps_per_s:.2f} steps/s measured, so "
                                f"{total} steps in all; the learning rate decays from step {step}")
                    if cfg.val_every and step % cfg.val_every == 0 and step < total:
                        losses.check()
                        val = validate()
                        # stderr, with every other line of the run (tqdm.write's own default is stdout):
                        # `2> train.log` keeps the validations.
                        bar.write(f"{PROG}: step {step}: " + _format_quick(val), file=sys.stderr)
                        t_window = time.perf_counter()
                    if step % cfg.checkpoint_every == 0 or step == end:
                        losses.check()
                        check_weights(net, step)
                        save_training_state(last, net, opt, sched, step, cfg, mcfg, plan, losses)
                    if flag.signal is not None:
                        interrupted = True
                        break
        except KeyboardInterrupt:
            # A second Ctrl-C (or one outside the main thread): the optimiser may be half-way through
            # a step, so last.pt keeps the last checkpoint.
            interrupted = hard = True
        finally:
            # Dropping the iterator stops the loader's workers now, as the run ends, rather than
            # whenever the interpreter collects it.
            it = None
            bar.close()
            if hasattr(loader, "close"):
                loader.close()
        if interrupted:
            if not hard and step > start:
                losses.check()
                check_weights(net, step)
                save_training_state(last, net, opt, sched, step, cfg, mcfg, plan, losses)
            of = f" of {total}" if total != _UNPLANNED else ""
            exc = TrainingInterrupted(f"interrupted at step {step}{of}; {last} holds step "
                                      f"{_checkpoint_step(last)}: run the same command again to resume")
            exc.exit_code = 128 + int(flag.signal or signal.SIGINT)     # a hard Ctrl-C: 130
            raise exc
        summary.update(step=step, img_per_s=rate, steps=None if total == _UNPLANNED else total)
        if step >= total:
            val = validate()
            say(f"step {step}: " + _format_quick(val))
            summary["final"] = str(_write_final(out, net, cfg, mcfg, step))
            summary["val"] = val
            say(f"wrote {out / FINAL}")
        return summary


def _follow_plan(cfg: TrainConfig, schedule: dict[str, int], plan: Plan) -> TrainConfig:
    """A time budget's plan into the learning-rate schedule (which reads `schedule` at every step)
    and into the recipe that config.json and the checkpoints record."""
    schedule.update(total=plan.total, hold=plan.hold)
    return replace(cfg, optim=replace(cfg.optim, steps=plan.total))


def _write_config(out: Path, cfg: TrainConfig, mcfg: ModelConfig) -> None:
    """config.json: the recipe as the run uses it (a time-budgeted run's with its planned steps)."""
    (out / "config.json").write_text(json.dumps({"train": to_dict(cfg), "model": to_dict(mcfg)}, indent=1))


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: cuda, but torch sees no CUDA GPU here (use device: cpu or auto)")
    return name


def _checkpoint_step(path: Path) -> int | str:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["training"]["step"])
    except Exception:
        return "nothing"


def _write_final(out: Path, net: PoseNet, cfg: TrainConfig, mcfg: ModelConfig, step: int) -> Path:
    date = _dt.date.today().isoformat()
    info = ModelInfo(mcfg, weights=f"{cfg.run_name}, step {step}, {date}", trained=True)
    path = out / FINAL
    save_checkpoint(path, net.eval(), info)
    return path


def _format_quick(m: dict[str, Any]) -> str:
    parts = []
    if "synth_mpjpe_mm" in m:
        parts.append(f"synthetic MPJPE {m['synth_mpjpe_mm']:.1f} mm, PA {m['synth_pa_mpjpe_mm']:.1f} mm, "
                     f"PCK@0.2 {m['synth_pck']:.3f}")
    if "real_pck" in m:
        parts.append(f"real PCK@0.2 {m['real_pck']:.3f}, detected {m['real_detected']:.3f}")
    if "negative_detected" in m:
        parts.append(f"person-free crops detected {m['negative_detected']:.3f} (mean score {m['negative_score']:.3f})")
    return "; ".join(parts) or "no validation data"


# --- command line ------------------------------------------------------------------------

def build_parser(prog: str = "python -m train.train") -> argparse.ArgumentParser:
    p = OneLineParser(prog=prog, description="Train the pose network on a recipe (configs/train/*.yaml); "
                                "resumes from OUT/last.pt when present.")
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="YAML", help="a training recipe, laid over configs/train/default.yaml")
    p.add_argument("--out", metavar="DIR", help="run folder (default: runs/<name>)")
    p.add_argument("--steps", type=int, metavar="N", help="total optimiser steps (overrides optim.steps)")
    p.add_argument("--stop-after", type=int, metavar="N", help="stop after step N with a checkpoint (train in slices)")
    p.add_argument("--time-budget", type=float, metavar="SECONDS",
                   help="train for about this long: the run measures its own rate and sets the step count "
                        "(instead of optim.steps and --steps; train/budget.py)")
    p.add_argument("--num-workers", type=int, metavar="N", help="data loader processes (overrides num_workers)")
    p.add_argument("--threads", type=int, metavar="N", help="torch threads (overrides threads)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where to train (overrides device)")
    p.add_argument("--init-from", metavar="MODEL", help="start the backbone and 2D branch from this model (overrides init_from)")
    p.add_argument("--lifter-from", metavar="FILE", help="start the lifter from this lifter file (overrides lifter_from)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (without a terminal, a line per log record is printed instead)")


def run(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {}
    if args.steps is not None:
        overrides["optim"] = {"steps": args.steps}
    if args.num_workers is not None:
        overrides["num_workers"] = args.num_workers
    if args.threads is not None:
        overrides["threads"] = args.threads
    if args.device is not None:
        overrides["device"] = args.device
    if args.init_from is not None:
        overrides["init_from"] = args.init_from
    if args.lifter_from is not None:
        overrides["lifter_from"] = args.lifter_from
    cfg = load_train_config(args.config, overrides or None)
    progress: bool | str = False if args.no_progress else (True if sys.stderr.isatty() else "lines")
    if args.time_budget is not None and not (0 < args.time_budget < math.inf):
        raise InputError(f"--time-budget must be a positive number of seconds (got {args.time_budget:g})")
    if args.stop_after is not None and args.stop_after < 1:
        raise InputError(f"--stop-after must be a step of at least 1 (got {args.stop_after})")
    summary = train(cfg, Path(args.out) if args.out else None, progress=progress,
                    stop_after=args.stop_after, time_budget_s=args.time_budget)
    if summary.get("final") is None:
        of = f" of {summary['steps']}" if summary.get("steps") else ""
        print(f"{PROG}: stopped at step {summary['step']}{of}; checkpoint in "
              f"{Path(summary['out']) / LAST}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None, prog: str = "python -m train.train") -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        # SIGTERM and SIGHUP before the loop (setting up the data and the network) end the run as
        # Ctrl-C does, the folder it made taken away; the loop has an orderly stop of its own.
        with stop_signals_interrupt():
            return run(args)
    except TrainingInterrupted as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return exc.exit_code
    except PosecastError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        print(f"{prog}: {describe(exc)} (the last checkpoint, if any, is kept: run the same command again to resume)",
              file=sys.stderr)
        return exit_code(exc)


if __name__ == "__main__":
    sys.exit(main())
