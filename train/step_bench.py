"""How fast a recipe's training step runs, in each arithmetic and tensor layout:
`python -m train.step_bench --config configs/train/gpu_next2.yaml`.

It times the training loop's own step (train/step.py: forward pass, losses, backward pass,
gradient clipping, AdamW) on one batch of made-up crops kept on the device, so the loaders and
the data on disk play no part: it needs no rendered people and runs in seconds on a GPU machine,
before the device time goes to training. The loaders' share is in a training run's log
(`data_wait`).

Variants (each from the same initial weights):
- `fp32, read every step`: the step as the loop ran it until 2026-12-06, reading its losses and
  a finiteness check back from the device every step;
- `fp32`, `tf32`, `bf16`: the recipe's `precision` choices, reading back once per `log_every`;
- with `--channels-last`, each of those again with NHWC tensors (the recipe's `channels_last`).

Printed: each timed round as it ends (the variants take turns, round by round), then
milliseconds per step (the median of the rounds) and crops per second.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from engines.arguments import OneLineParser
from engines.errors import InputError, PosecastError
from engines.network import PoseNet, build_network
from train.config import PRECISIONS, TrainConfig, load_train_config
from train.datasets import SOURCE_NEGATIVE, SOURCE_REAL, SOURCE_SYNTH
from train.step import (LossWindow, StepSetup, autocast_for, build_optimizer, step_losses, tf32_for,
                        to_device)
from train.train import resolve_device

PROG = "python -m train.step_bench"


@dataclass(frozen=True)
class Variant:
    precision: str
    channels_last: bool = False
    read_every_step: bool = False

    @property
    def name(self) -> str:
        extra = [", NHWC"] if self.channels_last else []
        extra += [", read every step"] if self.read_every_step else []
        return self.precision + "".join(extra)


@dataclass(frozen=True)
class Timing:
    variant: str
    ms_per_step: float                       # median over the rounds
    ms_per_step_rounds: list[float]
    crops_per_s: float


def made_up_batch(cfg: TrainConfig, batch_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """One batch shaped as the loader's (train/datasets.py), its shares of rendered, real and
    person-free crops those of the recipe; the values are random, which costs the step the same."""
    mcfg = cfg.model_config()
    s, j = mcfg.input_size, mcfg.skeleton.num_joints
    rng = np.random.default_rng(seed)
    n_real = round(batch_size * cfg.data.real_fraction)
    n_neg = min(round(batch_size * cfg.data.negative_fraction), batch_size - n_real)
    source = np.full(batch_size, SOURCE_SYNTH, np.int64)
    source[:n_real] = SOURCE_REAL
    source[n_real:n_real + n_neg] = SOURCE_NEGATIVE
    joints_3d = rng.normal(0.0, 0.3, (batch_size, j, 3)).astype(np.float32)
    joints_3d[..., 2] += 4.0
    synth = source == SOURCE_SYNTH
    return {
        "image": torch.from_numpy(rng.integers(0, 256, (batch_size, s, s, 3), dtype=np.uint8)),
        "joints_2d": torch.from_numpy(rng.uniform(0, s, (batch_size, j, 2)).astype(np.float32)),
        "mask_2d": torch.from_numpy(np.repeat((source != SOURCE_NEGATIVE)[:, None], j, 1).astype(np.float32)),
        "edge_2d": torch.zeros(batch_size, j),
        "joints_3d": torch.from_numpy(joints_3d * synth[:, None, None]),
        "has_3d": torch.from_numpy(synth.astype(np.float32)),
        "source": torch.from_numpy(source),
    }


class VariantRun:
    """One variant's network, optimiser and loss window, stepped as the training loop steps."""

    def __init__(self, net0: PoseNet, cfg: TrainConfig, batch: dict[str, torch.Tensor], variant: Variant,
                 device: torch.device) -> None:
        self.variant, self.cfg, self.device = variant, cfg, device
        self.net = copy.deepcopy(net0).to(device)
        if variant.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.net.train()
        self.opt = build_optimizer(self.net, cfg.optim)
        self.setup = StepSetup.for_model(cfg.model_config(), cfg.loss)
        self.batch = to_device(batch, device)
        self.window = LossWindow(device)
        self.done = 0

    def run(self, n: int) -> None:
        cfg = self.cfg
        with tf32_for(self.variant.precision):
            for _ in range(n):
                with autocast_for(self.variant.precision, self.device):
                    loss, parts = step_losses(self.net, self.batch, self.setup)
                # As the loop did until 2026-12-06: the loss checked before the backward pass and
                # the four losses read after the update, each read a wait for the device.
                if self.variant.read_every_step and not bool(torch.isfinite(loss)):
                    raise FloatingPointError("the made-up batch's loss is not finite")
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.optim.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(self.net.parameters(), cfg.optim.grad_clip)
                self.opt.step()
                if self.variant.read_every_step:
                    _ = [float(p.item()) for p in parts[:4]]
                self.done += 1
                self.window.add(parts, self.done)
                if self.done % cfg.log_every == 0:
                    self.window.check()
                    self.window.means()
                    self.window.reset()
            self.window.check()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def timed(self, n: int) -> float:
        """Milliseconds a step over `n` steps."""
        t0 = time.perf_counter()
        self.run(n)
        return 1000.0 * (time.perf_counter() - t0) / n


def time_variants(runs: list[VariantRun], steps: int, warmup: int, rounds: int,
                  say: Callable[[str], None]) -> list[Timing]:
    """Each variant warmed up, then timed in rounds taken in turn, so that a machine that speeds up
    or slows down as it goes (its clock, other work) weighs on all of them alike."""
    for r in runs:
        r.run(warmup)
    per_round: list[list[float]] = [[] for _ in runs]
    for k in range(rounds):
        for r, times in zip(runs, per_round):
            times.append(r.timed(steps))
            say(f"  round {k + 1}/{rounds}: {r.variant.name}: {times[-1]:.2f} ms")
    crops = int(runs[0].batch["image"].shape[0]) if runs else 0
    return [Timing(r.variant.name, statistics.median(t), t, 1000.0 * crops / statistics.median(t))
            for r, t in zip(runs, per_round)]


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="a training recipe (default: configs/train/default.yaml)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--batch", type=int, help="crops per step (default: the recipe's optim.batch_size)")
    p.add_argument("--steps", type=int, default=30, help="steps per timed round (default 30)")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds per variant (default 3)")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps first (default 10)")
    p.add_argument("--precision", nargs="+", choices=PRECISIONS, default=list(PRECISIONS),
                   help="the arithmetics to time (default: all)")
    p.add_argument("--channels-last", action="store_true", help="time each in NHWC layout as well")
    p.add_argument("--threads", type=int, help="torch threads on a CPU (default: the recipe's)")
    p.add_argument("--json", help="also write the timings to this file")
    return p


def run(args: argparse.Namespace) -> int:
    for name in ("batch", "steps", "rounds"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise InputError(f"--{name} must be at least 1 (got {value})")
    if args.warmup < 0:
        raise InputError(f"--warmup must be 0 or more (got {args.warmup})")
    cfg = load_train_config(args.config)
    device = torch.device(resolve_device(args.device))
    torch.set_num_threads(args.threads or cfg.threads)
    torch.manual_seed(0)
    net0 = build_network(cfg.model_config())
    batch = made_up_batch(cfg, args.batch or cfg.optim.batch_size)
    variants = [Variant("fp32", read_every_step=True)] + [Variant(p) for p in args.precision]
    if args.channels_last:
        variants += [Variant(p, channels_last=True) for p in args.precision]
    what = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} thread{'s' if torch.get_num_threads() != 1 else ''}"
    print(f"{PROG}: {cfg.run_name}, batch {batch['image'].shape[0]} of {cfg.model_config().input_size} px crops, "
          f"on {what}, torch {torch.__version__}", flush=True)
    runs = [VariantRun(net0, cfg, batch, v, device) for v in variants]
    timings = time_variants(runs, args.steps, args.warmup, args.rounds, lambda m: print(m, flush=True))
    for t in timings:
        spread = ", ".join(f"{x:.1f}" for x in t.ms_per_step_rounds)
        print(f"{t.variant:28s} {t.ms_per_step:8.2f} ms/step  {t.crops_per_s:8.0f} crops/s  (rounds {spread})",
              flush=True)
    if args.json:
        report = {"recipe": cfg.run_name, "device": what, "torch": torch.__version__,
                  "batch": int(batch["image"].shape[0]), "steps": args.steps, "rounds": args.rounds,
                  "timings": [asdict(t) for t in timings]}
        try:
            Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
        except OSError as exc:
            raise InputError(f"cannot write {args.json} ({exc.strerror or exc}); the timings are printed above") from None
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except PosecastError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except torch.OutOfMemoryError:
        size = f"a batch of {args.batch}" if args.batch else "the recipe's batch"
        print(f"{PROG}: error: the device ran out of memory for {size}; give a smaller --batch", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
