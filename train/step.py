"""One training step's losses, shared by the training loop (train/train.py) and the step
benchmark (train/step_bench.py), and the running sums the loop logs.

Nothing here reads a value back from the training device while a log window fills. On a GPU a
read (`.item()`, `bool(tensor)`) waits for every kernel queued before it, so the host cannot
queue step n + 1 while step n runs; the loop used to read five values a step (six with the twin
loss). The sums and the
first non-finite loss are kept on the device and read once per log line or checkpoint
(`LossWindow.check`, `LossWindow.means`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from engines.errors import PosecastError
from engines.model_config import ModelConfig
from engines.network import PoseNet
from train.config import LossSection, OptimSection
from train.datasets import SOURCE_NEGATIVE, SOURCE_REAL
from train.losses import loss_2d, loss_3d, loss_negative, loss_twin, offsets_target, soft_label_targets

# The order of `step_losses`' parts and of `LossWindow.means`' keys (the log's names).
LOSS_PARTS = ("loss", "loss_2d", "loss_3d", "loss_neg", "loss_twin")


class TrainingDiverged(PosecastError):
    """The loss or the weights were not finite: the run stops before a checkpoint keeps them."""
    exit_code = 1


@dataclass(frozen=True)
class StepSetup:
    """What a step needs besides the network and the batch."""
    grid: int                                # cells per side of the 2D grid
    size: int                                # crop side, pixels
    roots: tuple[int, ...]                   # joint indices of the 3D branch's roots
    flip_order: tuple[int, ...]              # the skeleton's mirror order
    loss: LossSection

    @classmethod
    def for_model(cls, mcfg: ModelConfig, loss: LossSection) -> StepSetup:
        return cls(grid=mcfg.grid_size, size=mcfg.input_size, roots=tuple(mcfg.root_indices),
                   flip_order=tuple(mcfg.skeleton.flip_permutation), loss=loss)


def step_losses(net: PoseNet, batch: dict[str, torch.Tensor], setup: StepSetup) -> tuple[torch.Tensor, torch.Tensor]:
    """The weighted loss to back-propagate and its parts, detached, as one (5,) tensor in the
    order of LOSS_PARTS (the twin loss 0 when its weight is)."""
    w = setup.loss
    logits, offsets = net.forward_logits(batch["image"])
    targets = soft_label_targets(batch["joints_2d"], setup.grid, setup.size)
    # The soft labels clamp a joint outside the crop to the border cell nearest it.
    mask_2d = batch["mask_2d"] + w.w_edge * batch["edge_2d"] if w.w_edge else batch["mask_2d"]
    l2 = loss_2d(logits, targets, mask_2d,
                 either_side=(batch["source"] == SOURCE_REAL) if w.real_either_side else None,
                 flip_permutation=setup.flip_order)
    l3 = loss_3d(offsets, offsets_target(batch["joints_3d"], setup.roots), batch["has_3d"])
    ln = loss_negative(logits, batch["source"] == SOURCE_NEGATIVE)
    loss = w.w2d * l2 + w.w3d * l3 + w.w_neg * ln
    lt = torch.zeros((), device=loss.device, dtype=loss.dtype)
    if w.w_twin > 0:
        lt = loss_twin(logits, targets, batch["mask_2d"], setup.flip_order)
        loss = loss + w.w_twin * lt
    return loss, torch.stack([loss, l2, l3, ln, lt]).detach().float()


class LossWindow:
    """Sums of the losses over the steps since the last log line, kept on the training device,
    and the first step whose loss was not finite."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.reset()

    def reset(self) -> None:
        # float64, as the Python floats the loop summed before, so that the log reads the same.
        self.sums = torch.zeros(len(LOSS_PARTS), dtype=torch.float64, device=self.device)
        self.steps = 0
        self.bad_step = torch.full((), -1, dtype=torch.int64, device=self.device)
        self.bad_parts = torch.zeros(len(LOSS_PARTS), dtype=torch.float32, device=self.device)

    def add(self, parts: torch.Tensor, step: int) -> None:
        """Step `step`'s (1-based) parts, without waiting for the device."""
        first = ~torch.isfinite(parts[0]) & (self.bad_step < 0)
        self.bad_step = torch.where(first, torch.full_like(self.bad_step, step), self.bad_step)
        self.bad_parts = torch.where(first, parts, self.bad_parts)
        self.sums += parts
        self.steps += 1

    def check(self) -> None:
        """Raise TrainingDiverged if a loss since the last reset was not finite (one read)."""
        bad = int(self.bad_step.item())
        if bad >= 0:
            total, l2, l3, ln, _ = self.bad_parts.tolist()
            raise TrainingDiverged(f"the loss is {total} at step {bad} (2D {l2:.4g}, 3D {l3:.4g}, negatives "
                                   f"{ln:.4g}); lower optim.lr and run the same command again (it resumes "
                                   f"from the last checkpoint, which was written before)")

    def means(self) -> dict[str, float]:
        """The mean of each part over the window (one read)."""
        n = max(self.steps, 1)
        return {name: s / n for name, s in zip(LOSS_PARTS, self.sums.tolist())}


def check_weights(net: torch.nn.Module, step: int) -> None:
    """Raise TrainingDiverged if a weight is not finite (one read): a finite loss says nothing of
    the update that came after it, and a checkpoint must never keep such weights."""
    finite = torch.stack([torch.isfinite(p).all() for p in net.parameters()]).all()
    if not bool(finite):
        raise TrainingDiverged(f"the weights are not finite after step {step} (its loss was finite); lower "
                               f"optim.lr and run the same command again (it resumes from the last checkpoint, "
                               f"which was written before)")


@contextlib.contextmanager
def tf32_for(precision: str) -> Iterator[None]:
    """TF32 matrix products (tf32, bf16) for the run, on NVIDIA GPUs; fp32 keeps torch's defaults,
    under which cuDNN may already use TF32 for convolutions. The switches are process-wide, so
    they are restored on the way out."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        if precision != "fp32":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def autocast_for(precision: str, device: torch.device) -> torch.autocast:
    """bf16: the forward pass and the losses autocast to bfloat16 (the weights, their gradients
    and the optimiser stay float32; the losses' softmax and squares are taken in float32)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def build_optimizer(net: PoseNet, optim: OptimSection) -> torch.optim.AdamW:
    """AdamW over the trainable weights, without weight decay on BatchNorm's weights and biases."""
    decay, no_decay = [], []
    for p in net.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": optim.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=optim.lr)


def to_device(batch: dict[str, object], device: torch.device) -> dict[str, object]:
    """A batch's tensors on `device`; asynchronous where the loader pinned them."""
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}

