"""Training losses: the 2D grid classification (soft labels, cross-entropy) and the 3D offsets.

2D: each joint's target is a bilinear soft label over the G x G cells (`engines.grid.soft_labels`,
ported to torch); the loss is the cross-entropy -sum(t log softmax(logits)), averaged over the
joints that have a label inside the crop.

Negatives (person-free crops, train/negatives.py): every joint's target is the uniform
distribution over the cells, so that the confidence (the mass around the peak) is low where no
person is; the loss is its KL divergence from the softmax, 0 for a flat one.

Twins (`loss_twin`, off by default): the mass a left joint's map puts on its right twin's place
(and a right joint's on its left twin's), beyond the joint's own place, as -log(1 - mass).

3D: the network predicts every joint's offset from each of R roots, X_j - X_root; the loss is
the squared error summed over x, y, z and averaged over roots, joints and the samples that have 3D
labels (the synthetic ones).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch.nn import functional as F


def soft_label_targets(joints_2d: torch.Tensor, grid_size: int, input_size: int) -> torch.Tensor:
    """(B, J, 2) crop pixels -> (B, J, G, G) bilinear soft labels (the torch port of
    `engines.grid.soft_labels`): each point spread over its 4 nearest cell centres, clamped to the
    border cells outside the centres' span; every label sums to 1."""
    g_n = int(grid_size)
    lead = joints_2d.shape[:-1]
    dtype = joints_2d.dtype if joints_2d.dtype in (torch.float32, torch.float64) else torch.float32
    p = joints_2d.reshape(-1, 2).to(dtype)
    cell = input_size / grid_size
    g = torch.clamp(p / cell - 0.5, 0.0, g_n - 1.0)
    lo = torch.floor(g).long()
    if g_n > 1:
        lo = torch.clamp(lo, max=g_n - 2)
    else:
        lo = torch.zeros_like(lo)
    frac = g - lo.to(dtype)
    n = p.shape[0]
    out = torch.zeros(n, g_n * g_n, dtype=dtype, device=p.device)
    for dy in (0, 1):
        wy = frac[:, 1] if dy else 1.0 - frac[:, 1]
        yy = torch.clamp(lo[:, 1] + dy, max=g_n - 1)
        for dx in (0, 1):
            wx = frac[:, 0] if dx else 1.0 - frac[:, 0]
            xx = torch.clamp(lo[:, 0] + dx, max=g_n - 1)
            out.scatter_add_(1, (yy * g_n + xx)[:, None], (wy * wx)[:, None])
    return out.reshape(*lead, g_n, g_n).to(torch.float32)


def _mirror_index(flip_permutation: Sequence[int], device: torch.device) -> torch.Tensor:
    """The skeleton's mirror order as an index tensor: each joint's left/right twin (itself if none)."""
    return torch.as_tensor(list(flip_permutation), dtype=torch.int64, device=device)


def loss_2d(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
            either_side: torch.Tensor | None = None,
            flip_permutation: Sequence[int] | None = None) -> torch.Tensor:
    """Cross-entropy of (B, J, G, G) logits against soft targets, averaged over the joints with
    mask 1 ((B, J); 0 when there are none).

    `either_side` ((B,) bool) marks samples whose left and right labels are not trusted: their
    loss is that of the better of the two assignments, the labels as they are or with every left
    joint's label given to its right twin (`flip_permutation`, the skeleton's mirror order) and
    back. Stage 12 (docs/results.md) tried it on the real photos, 19 in 20 of which face the
    camera: real backs came out mirrored more often, not less."""
    b, j = logits.shape[:2]
    logp = F.log_softmax(logits.reshape(b, j, -1).float(), dim=-1)
    t = targets.reshape(b, j, -1).to(logp.dtype)
    m = mask.to(logp.dtype)
    per_sample = (-(t * logp).sum(dim=-1) * m).sum(dim=1)                         # (B,)
    if either_side is not None and bool(either_side.any()):
        if flip_permutation is None:
            raise ValueError("either_side needs flip_permutation")
        perm = _mirror_index(flip_permutation, logits.device)
        exchanged = (-(t[:, perm] * logp).sum(dim=-1) * m[:, perm]).sum(dim=1)
        per_sample = torch.where(either_side.to(torch.bool).reshape(-1),
                                 torch.minimum(per_sample, exchanged), per_sample)
    return per_sample.sum() / m.sum().clamp_min(1.0)


def twin_regions(targets: torch.Tensor, flip_permutation: Sequence[int]) -> torch.Tensor:
    """(B, J, G, G) soft labels -> (B, J, G, G) 0/1: the cells within one cell of the joint's
    twin's label (`flip_permutation`: the skeleton's mirror order) and more than one cell from
    its own. All 0 for a joint without a twin (the spine, the head). Where the two labels lie
    within two cells of each other nothing is left, so a pose with the joints together costs
    nothing."""
    perm = _mirror_index(flip_permutation, targets.device)
    near = F.max_pool2d((targets > 0).to(torch.float32), 3, stride=1, padding=1)     # (B, J, G, G)
    region = near[:, perm] * (1.0 - near)
    has_twin = (perm != torch.arange(len(perm), device=perm.device)).to(region.dtype)
    return region * has_twin.view(1, -1, 1, 1)


def loss_twin(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
              flip_permutation: Sequence[int]) -> torch.Tensor:
    """-log(1 - q) of (B, J, G, G) logits, q the softmax mass in the joint's `twin_regions`,
    averaged over the joints with a twin whose own and twin's mask ((B, J)) are both 1 (0 when
    there are none). Cross-entropy already rewards mass at the joint's place; this names the
    one wrong place that measured most common: 70% of the gross ankle errors of the rendered
    tracking crops had both ankles on one leg (docs/results.md, stage 15)."""
    b, j = logits.shape[:2]
    p = torch.softmax(logits.reshape(b, j, -1).float(), dim=-1)
    region = twin_regions(targets, flip_permutation).reshape(b, j, -1).to(p.dtype)
    q = (p * region).sum(dim=-1).clamp(max=1.0 - 1e-6)
    perm = _mirror_index(flip_permutation, logits.device)
    m = mask.to(p.dtype) * mask[:, perm].to(p.dtype) * (region.sum(dim=-1) > 0).to(p.dtype)
    return (-torch.log1p(-q) * m).sum() / m.sum().clamp_min(1.0)


def loss_negative(logits: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """KL(uniform || softmax) of (B, J, G, G) logits, averaged over the joints of the samples with
    `negative` 1 ((B,); 0 when there are none). In nats: -mean(log p) - log(G^2)."""
    b, j = logits.shape[:2]
    logp = F.log_softmax(logits.reshape(b, j, -1).float(), dim=-1)
    kl = -logp.mean(dim=-1) - math.log(logp.shape[-1])                            # (B, J)
    w = negative.to(kl.dtype).reshape(-1)
    return (kl.mean(dim=1) * w).sum() / w.sum().clamp_min(1.0)


def offsets_target(joints_3d: torch.Tensor, root_indices: Sequence[int]) -> torch.Tensor:
    """(B, J, 3) -> (B, R, J, 3): X_j - X_root_r."""
    roots = joints_3d[:, list(root_indices)]                                     # (B, R, 3)
    return joints_3d[:, None, :, :] - roots[:, :, None, :]


def loss_3d(pred: torch.Tensor, target: torch.Tensor, has_3d: torch.Tensor) -> torch.Tensor:
    """Squared error of (B, R, J, 3) offsets: summed over x, y, z, averaged over roots, joints and
    the samples with has_3d 1 (0 when there are none). Units: metres squared."""
    se = ((pred.float() - target.float()) ** 2).sum(dim=-1).mean(dim=(1, 2))      # (B,)
    w = has_3d.to(se.dtype).reshape(-1)
    return (se * w).sum() / w.sum().clamp_min(1.0)
