"""The network's configuration (`configs/model.yaml`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from engines.ray_frame import OFFSETS_FRAMES, OffsetsFrame
from engines.skeleton import H36M17, Skeleton

Fusion = Literal["none", "conv", "fc"]
# Test-time mirroring (engines/network.py): none; the 3D offsets only; or the 2D probabilities too.
FlipTest = Literal["none", "3d", "all"]
FLIP_TEST_MODES: tuple[str, ...] = get_args(FlipTest)
# Pixels per grid cell: the 2D head at stride 8 (the backbone's stride-8 map), or at stride 4 (a
# finer head on the stride-4 map added to the stride-8 logits, engines/network.py).
GRID_STRIDES: tuple[int, ...] = (8, 4)
# The largest crop: the regressor's and the fc fusion's weights grow with its square (1024 px: a few
# hundred MB), and a typo beyond it (99999968) asked torch for exabytes, a traceback.
MAX_INPUT_SIZE = 1024


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the network. See `engines/network.py` for what each part does."""

    input_size: int
    grid_size: int
    stem_width: int
    widths: tuple[int, ...]
    depths: tuple[int, ...]
    expansion: int
    head_width: int
    fusion: Fusion
    fusion_fc_width: int
    regressor_width: int
    roots: tuple[str, ...]
    mean_bgr: tuple[float, float, float]
    std_bgr: tuple[float, float, float]
    seed: int
    # The lifter (engines/network.py): 0 leaves it out (models trained before it existed).
    lift_width: int = 0
    lift_blocks: int = 2
    # Test-time mirroring (engines/network.py): at inference the network also sees each crop
    # mirrored and averages the 3D ("3d") or every output ("all") over both. "none" in models
    # trained before it existed.
    flip_test: FlipTest = "none"
    # 8 in models trained before the finer head existed.
    grid_stride: int = 8
    # The frame of the 3D offsets (engines/ray_frame.py): the camera's, or the person's ray frame,
    # which the pipeline turns into the camera's. "camera" in models trained before the ray frame.
    offsets_frame: OffsetsFrame = "camera"

    @property
    def skeleton(self) -> Skeleton:
        return H36M17

    @property
    def root_indices(self) -> tuple[int, ...]:
        return self.skeleton.indices(self.roots)

    def check(self) -> None:
        if self.input_size % 32 or not 64 <= self.input_size <= MAX_INPUT_SIZE:
            raise ValueError(f"input_size must be a multiple of 32, from 64 to {MAX_INPUT_SIZE} (got {self.input_size})")
        if self.grid_stride not in GRID_STRIDES:
            raise ValueError(f"grid_stride must be one of {', '.join(map(str, GRID_STRIDES))} (got {self.grid_stride})")
        if self.grid_size * self.grid_stride != self.input_size:
            raise ValueError(
                f"grid_size must be input_size / grid_stride = {self.input_size // self.grid_stride} (the 2D "
                f"head sits at stride {self.grid_stride}; got {self.grid_size})"
            )
        if len(self.widths) != 4 or len(self.depths) != 4:
            raise ValueError("widths and depths must each list 4 stages (strides 4, 8, 16, 32)")
        if min(self.widths) < 8 or min(self.depths) < 1 or self.expansion < 1 or self.stem_width < 8:
            raise ValueError("widths must be >= 8, depths >= 1, expansion >= 1, stem_width >= 8")
        if not self.roots:
            raise ValueError("roots must name at least one joint")
        if len(set(self.roots)) != len(self.roots):
            raise ValueError("roots must not repeat a joint")
        if self.skeleton.origin not in self.roots:
            # Alignment expresses the pose relative to the origin; keeping it among the roots
            # means every alignment method has a direct estimate of it.
            raise ValueError(f"roots must include the skeleton origin '{self.skeleton.origin}'")
        try:
            self.skeleton.indices(self.roots)
        except ValueError as exc:
            raise ValueError(f"roots: {exc}") from None
        if self.lift_width and (self.lift_width < 16 or self.lift_blocks < 0):
            raise ValueError(f"lift_width must be 0 (no lifter) or at least 16, lift_blocks >= 0 "
                             f"(got {self.lift_width}, {self.lift_blocks})")
        if self.flip_test not in FLIP_TEST_MODES:
            raise ValueError(f"flip_test must be one of {', '.join(FLIP_TEST_MODES)} (got {self.flip_test!r})")
        if self.flip_test != "none":
            flip = self.skeleton.flip_permutation
            if {flip[i] for i in self.root_indices} != set(self.root_indices):
                raise ValueError("flip_test needs the roots to include both sides of every left/right pair "
                                 f"they name (got {list(self.roots)})")
        if self.offsets_frame not in OFFSETS_FRAMES:
            raise ValueError(f"offsets_frame must be one of {', '.join(OFFSETS_FRAMES)} (got {self.offsets_frame!r})")
        if any(s <= 0 for s in self.std_bgr):
            raise ValueError("std_bgr must be positive")
