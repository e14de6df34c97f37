"""The network: Park, Hwang & Kwak (2016), made fast.

    uint8 BGR crop (B, S, S, 3)
      -> normalise (inside the graph, so every backend gets the same input)
      -> backbone: a stem and four stages of inverted-residual blocks (strides 4, 8, 16, 32)
      -> 2D branch: the stride-8 map with the deeper stages added back in (a small feature
         pyramid), then per joint a softmax over the G x G grid cells (classification); with
         `grid_stride` 4, a finer head on the stride-4 map adds a correction to those logits
         upsampled to 2G x 2G cells
      -> 3D branch: the 2D probabilities fused with image features, then a regressor of every
         joint's offset from each of R roots: (B, R, J, 3) metres (a root's offset from itself
         is exactly 0).

Fusion, chosen in the config:
- `conv`: the probability maps are concatenated with the stride-8 features and convolved down to
  stride 32: spatial layout is kept and it costs little.
- `fc` (the paper's): the flattened probabilities go through a fully connected layer and are
  concatenated with the image features before the regressor.
- `none`: the 3D branch sees image features only (the ablation's baseline).

The lifter (`lift_width` > 0) adds a second way for the 2D result to reach 3D: the joints decoded
from the grid (as `engines/grid.decode` does) go through a residual MLP (Martinez et al., 2017) to
every root's offsets, and the regressor then learns a correction from the image. Its input is
normalised for position and scale, so it is trained first on projected motion capture alone
(`train/lifting.py`: millions of poses without rendering an image), then with the whole network.

The finer grid (`grid_stride` 4) is built so that a stride-8 model's weights carry over exactly:
its correction starts at zero, so each stride-8 cell's logit is shared by its four sub-cells and
their probabilities sum to the stride-8 cell's. The 3D branch's fusion reads those sums (the
stride-8 probabilities), so it keeps its shape and weights; the lifter reads the finer grid's
decoded joints.

Test-time mirroring (`flip_test`): in eval mode the network also runs on each crop's mirror image,
in the same batch, and averages the results mapped back to the crop: the 3D offsets (`3d`), or the
2D probabilities too (`all`). It is part of the exported graph, so every backend does it; training
never does.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from engines.model_config import ModelConfig


def conv_bn(cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2's block: expand 1x1, depthwise 3x3, project 1x1; residual when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        self.body = nn.Sequential(
            conv_bn(cin, hidden, 1),
            conv_bn(hidden, hidden, 3, stride, groups=hidden),
            conv_bn(hidden, cout, 1, act=False),
        )
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


def stage(cin: int, cout: int, depth: int, expansion: int, stride: int = 2) -> nn.Sequential:
    blocks = [InvertedResidual(cin, cout, stride, expansion)]
    blocks += [InvertedResidual(cout, cout, 1, expansion) for _ in range(depth - 1)]
    return nn.Sequential(*blocks)


def decode_grid(probs: torch.Tensor, input_size: int, grid_size: int | None = None,
                window: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """`engines.grid.decode` in torch (and in the exported graph): (B, J, G, G) probabilities ->
    points (B, J, 2) in crop pixels, confidence (B, J) (the mass in the window).

    The network passes `grid_size` from its config: the exported graph then holds it as a
    constant instead of computing it from the tensor's shape (which brings in ops TensorRT lacks)."""
    g = int(grid_size if grid_size is not None else probs.shape[-1])
    if probs.dtype != torch.float32:
        # bfloat16 (a CPU's autocast keeps the softmax in it) holds integers exactly only to 256:
        # the peak's cell index, and so the decoded point, would be off by cells.
        probs = probs.float()
    flat = probs.flatten(2)                                                        # (B, J, G*G)
    # Row and column of the peak in floating point (exact for any grid size): integer floor
    # division would export as Mod/And/Xor, which TensorRT's parser lacks.
    peak = flat.argmax(dim=-1).to(probs.dtype)
    py = torch.floor((peak + 0.5) * (1.0 / g))     # +0.5: a product that rounds low never floors wrong
    px = peak - py * g
    cells = torch.arange(g, dtype=probs.dtype, device=probs.device)
    # `< window + 0.5` rather than `<= window`: the same on integer cell distances, and ONNX's
    # Less is in every TensorRT parser (LessOrEqual only in newer ones).
    in_y = ((cells - py.unsqueeze(-1)).abs() < window + 0.5).to(probs.dtype)      # (B, J, G)
    in_x = ((cells - px.unsqueeze(-1)).abs() < window + 0.5).to(probs.dtype)
    mass = probs * in_y.unsqueeze(-1) * in_x.unsqueeze(-2)
    total = mass.sum(dim=(-1, -2))
    safe = torch.where(total > 0, total, torch.ones_like(total))
    centres = (cells + 0.5) * (input_size / g)
    x = (mass.sum(dim=-2) * centres).sum(dim=-1) / safe
    y = (mass.sum(dim=-1) * centres).sum(dim=-1) / safe
    return torch.stack([x, y], dim=-1), total


class Lifter(nn.Module):
    """2D joints and their confidences -> (B, R * J * 3) offsets from every root, in metres."""

    def __init__(self, num_joints: int, num_roots: int, width: int, blocks: int) -> None:
        super().__init__()
        self.inp = nn.Linear(num_joints * 3, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(width, width), nn.ReLU(inplace=True), nn.Linear(width, width))
            for _ in range(blocks))
        self.out = nn.Linear(width, num_roots * num_joints * 3)

    @staticmethod
    def normalise(points: torch.Tensor) -> torch.Tensor:
        """Centred on the joints' mean and divided by their RMS distance from it: the same pose
        seen larger, smaller or elsewhere in the crop gives the same input."""
        centred = points - points.mean(dim=1, keepdim=True)
        scale = centred.square().sum(dim=-1).mean(dim=1, keepdim=True).sqrt().clamp_min(1e-6)
        return centred / scale.unsqueeze(-1)

    def forward(self, points: torch.Tensor, conf: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.normalise(points).flatten(1), conf], dim=1)
        h = F.relu(self.inp(x))
        for block in self.blocks:
            h = F.relu(h + block(h))
        return self.out(h)


def own_root_mask(num_roots: int, num_joints: int, root_indices: tuple[int, ...]) -> torch.Tensor:
    """(1, R, J, 1): 0 at each root's own entry, 1 elsewhere. Each root's offset from itself is 0
    by definition: emitted exactly, alignment (which re-expresses every row relative to its own
    root) gets no noise from that entry."""
    mask = torch.ones(1, num_roots, num_joints, 1)
    mask[0, torch.arange(num_roots), torch.tensor(root_indices)] = 0.0
    return mask


class PoseNet(nn.Module):
    """Outputs `probs_2d` (B, J, G, G) and `offsets_3d` (B, R, J, 3)."""

    SPATIAL_CHANNELS = 32       # channels of the stride-32 map flattened into the regressor

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        j, g, r = cfg.skeleton.num_joints, cfg.grid_size, len(cfg.roots)
        w, d, e, hw = cfg.widths, cfg.depths, cfg.expansion, cfg.head_width
        self.num_joints, self.grid, self.num_roots = j, g, r
        mean = torch.tensor(cfg.mean_bgr, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(cfg.std_bgr, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("mean", mean)
        self.register_buffer("inv_std", 1.0 / std)

        self.stem = conv_bn(3, cfg.stem_width, 3, 2)
        self.s4 = stage(cfg.stem_width, w[0], d[0], e)
        self.s8 = stage(w[0], w[1], d[1], e)
        self.s16 = stage(w[1], w[2], d[2], e)
        self.s32 = stage(w[2], w[3], d[3], e)

        # 2D branch at stride 8.
        self.lat8 = conv_bn(w[1], hw, 1, act=False)
        self.lat16 = conv_bn(w[2], hw, 1, act=False)
        self.lat32 = conv_bn(w[3], hw, 1, act=False)
        self.head2d = nn.Sequential(conv_bn(hw, hw, 3, groups=hw), conv_bn(hw, hw, 1))
        self.logits = nn.Conv2d(hw, j, 1)
        self.grid_stride = cfg.grid_stride
        if cfg.grid_stride == 4:
            self.lat4 = conv_bn(w[0], hw, 1, act=False)
            self.head2d_fine = nn.Sequential(conv_bn(hw, hw, 3, groups=hw), conv_bn(hw, hw, 1))
            self.logits_fine = nn.Conv2d(hw, j, 1)
            # A zero correction: a stride-8 model loaded into this one gives the same outputs.
            nn.init.zeros_(self.logits_fine.weight)
            nn.init.zeros_(self.logits_fine.bias)

        # 3D branch.
        self.fusion = cfg.fusion
        if cfg.fusion == "conv":
            self.fuse = nn.Sequential(
                conv_bn(hw + j, w[2], 1),
                InvertedResidual(w[2], w[2], 2, e),
                InvertedResidual(w[2], w[3], 2, e),
            )
        self.spatial = conv_bn(w[3], self.SPATIAL_CHANNELS, 1)
        flat = self.SPATIAL_CHANNELS * (cfg.input_size // 32) ** 2
        if cfg.fusion == "fc":
            gc = cfg.input_size // 8               # the fusion reads stride-8 cells (forward_logits)
            self.fuse_fc = nn.Sequential(nn.Linear(j * gc * gc, cfg.fusion_fc_width), nn.ReLU(inplace=True))
            flat += cfg.fusion_fc_width
        self.register_buffer("own_root_mask", own_root_mask(r, j, cfg.root_indices))
        self.regressor = nn.Sequential(
            nn.Linear(flat, cfg.regressor_width),
            nn.ReLU(inplace=True),
            nn.Linear(cfg.regressor_width, r * j * 3),
        )
        self.input_size, self.grid_size = cfg.input_size, cfg.grid_size
        self.lifter = Lifter(j, r, cfg.lift_width, cfg.lift_blocks) if cfg.lift_width else None
        self.flip_test = cfg.flip_test
        # Not persistent: they follow from the skeleton and roots, and checkpoints stay as they were.
        flip = cfg.skeleton.flip_permutation
        roots = list(cfg.root_indices)
        # Each root's mirror among the roots (ModelConfig.check ensures it exists under flip_test).
        mirrored_roots = [roots.index(flip[i]) if flip[i] in roots else k for k, i in enumerate(roots)]
        self.register_buffer("flip_joints", torch.tensor(flip, dtype=torch.int64), persistent=False)
        self.register_buffer("flip_roots", torch.tensor(mirrored_roots, dtype=torch.int64), persistent=False)
        self.register_buffer("mirror_x", torch.tensor([-1.0, 1.0, 1.0]), persistent=False)
        if self.lifter is not None:
            # The lifter gives the estimate; the regressor starts as a zero correction to it.
            nn.init.zeros_(self.regressor[-1].weight)
            nn.init.zeros_(self.regressor[-1].bias)

    def forward(self, image: torch.Tensor, exact_2d: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`exact_2d` (B, J, 2) crop pixels, a diagnostic (train/evaluate.py --exact-2d): the
        lifter reads these joints at full confidence instead of the ones the 2D branch found."""
        if self.flip_test != "none" and not self.training:
            return self.forward_mirrored(image, exact_2d)
        return self.forward_once(image, exact_2d)

    def forward_once(self, image: torch.Tensor, exact_2d: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        logits, offsets = self.forward_logits(image, exact_2d)
        b = logits.shape[0]
        probs = torch.softmax(logits.reshape(b, self.num_joints, -1), dim=-1)
        return probs.reshape(b, self.num_joints, self.grid, self.grid), offsets

    def forward_mirrored(self, image: torch.Tensor, exact_2d: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Test-time mirroring: the crops and their mirror images in one batch, the mirrored
        results mapped back (grid columns reversed, left and right swapped, x negated: the mirror of
        a crop whose principal point is its centre, as in training's flip augmentation) and
        averaged with the direct ones. `3d` averages the offsets only, so the 2D probabilities
        (the tracker's points and score) stay the crop's own; `all` averages both, which measured
        better 2D too (docs/results.md)."""
        # Cast first: TensorRT accepts a UINT8 input only straight into a Cast (NVIDIA/TensorRT#3985).
        x = image.float()
        both = torch.cat([x, x.flip(2)], dim=0)                      # (2B, S, S, 3), width is dim 2
        if exact_2d is not None:                                      # their mirror: x -> S - x, sides swapped
            mirrored = exact_2d.index_select(1, self.flip_joints) * self.mirror_x[:2]
            exact_2d = torch.cat([exact_2d, mirrored + self.mirror_x.new_tensor([self.input_size, 0.0])], dim=0)
        probs, offsets = self.forward_once(both, exact_2d)
        # reshape(2, -1, ...) splits the halves without a Slice at a batch size read from the graph.
        probs = probs.reshape(2, -1, self.num_joints, self.grid, self.grid)
        offsets = offsets.reshape(2, -1, self.num_roots, self.num_joints, 3)
        probs_back = probs[1].index_select(1, self.flip_joints).flip(-1)
        offsets_back = offsets[1].index_select(1, self.flip_roots).index_select(2, self.flip_joints) * self.mirror_x
        offsets_mean = (offsets[0] + offsets_back) * 0.5
        if self.flip_test == "3d":
            return probs[0], offsets_mean
        return (probs[0] + probs_back) * 0.5, offsets_mean

    def forward_logits(self, image: torch.Tensor, exact_2d: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`logits_2d` (B, J, G, G) before the softmax, and `offsets_3d`: what training needs, since
        cross-entropy on log-softmax of the logits is stable where the log of probabilities is not."""
        # Contiguous NCHW: the NHWC permute alone leaves a channels-last layout whose depthwise
        # convolution backward pass ran about 4x slower in PyTorch's CPU kernels (measured at 256 px,
        # NCHW weights). Weights made channels-last too (a recipe's channels_last) turn the whole
        # network NHWC, which trained 20% faster on two CPU cores (torch 2.13, 128 px).
        # Cast before the permute: TensorRT accepts a UINT8 input only straight into a Cast.
        x = image.float().permute(0, 3, 1, 2).contiguous()
        x = (x - self.mean) * self.inv_std
        f4 = self.s4(self.stem(x))
        f8 = self.s8(f4)
        f16 = self.s16(f8)
        f32 = self.s32(f16)

        pyramid = (
            self.lat8(f8)
            + F.interpolate(self.lat16(f16), scale_factor=2.0, mode="nearest")
            + F.interpolate(self.lat32(f32), scale_factor=4.0, mode="nearest")
        )
        h = self.head2d(F.relu6(pyramid))
        logits = self.logits(h)                                          # (B, J, G8, G8)
        b = logits.shape[0]
        if self.grid_stride == 4:
            fine = self.head2d_fine(F.relu6(self.lat4(f4) + F.interpolate(h, scale_factor=2.0, mode="nearest")))
            logits = F.interpolate(logits, scale_factor=2.0, mode="nearest") + self.logits_fine(fine)
        probs = torch.softmax(logits.reshape(b, self.num_joints, -1), dim=-1)
        probs_2d = probs.reshape(b, self.num_joints, self.grid, self.grid)
        # The fusion reads stride-8 cells: the finer grid's probabilities summed over each 2 x 2.
        probs_8 = probs_2d if self.grid_stride == 8 else F.avg_pool2d(probs_2d, 2) * 4.0

        deep = f32
        if self.fusion == "conv":
            deep = deep + self.fuse(torch.cat([h, probs_8], dim=1))
        feats = self.spatial(deep).flatten(1)
        if self.fusion == "fc":
            feats = torch.cat([feats, self.fuse_fc(probs_8.flatten(1))], dim=1)
        raw = self.regressor(feats)
        if self.lifter is not None:
            # Detached: the 2D branch learns from its own loss, not from the lifter's mistakes.
            points, conf = decode_grid(probs_2d.detach(), self.input_size, self.grid_size)
            if exact_2d is not None:
                points, conf = exact_2d.to(points.dtype), torch.ones_like(conf)
            raw = raw + self.lifter(points, conf)
        offsets = raw.reshape(b, self.num_roots, self.num_joints, 3) * self.own_root_mask
        return logits, offsets


def build_network(cfg: ModelConfig) -> PoseNet:
    """A network initialised deterministically from `cfg.seed`."""
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(cfg.seed)
    try:
        net = PoseNet(cfg)
    finally:
        torch.random.set_rng_state(gen_state)
    return net.eval()
