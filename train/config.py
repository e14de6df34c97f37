"""Training recipes (`configs/train/*.yaml`): a typed, validated `TrainConfig`.

A recipe is laid over `configs/train/default.yaml` (engines.config.load_config), so an ablation
recipe lists only what it changes; unknown keys, wrong types and bad values are errors that name
the recipe file and the dotted key. The model is `model.config` (a model YAML, itself laid over
`configs/model.yaml`) with the recipe's `model.fusion`, `model.roots`, `model.input_size` and
`model.grid_stride` on top; `model_config()` builds and validates it (grid_size follows
input_size / grid_stride).

Paths: `~` and `$VARS` are expanded; `$POSECAST_DATA` defaults to `../shared/datasets` beside
the repository (the datasets README's convention), and `$POSECAST_WORK`, where the rendered sets
and runs are (scripts/train.sh), to `../data` beside it. A relative path is taken from the current
directory, or from the repository root when it does not exist there (so `configs/model.yaml`
works from anywhere).
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from engines.config import ConfigError, check_range, config_path, from_dict, load_config, load_yaml, merge
from engines.model_config import MAX_INPUT_SIZE, Fusion, ModelConfig
from engines.ray_frame import OffsetsFrame
from engines.skeleton import H36M17
from streamer.config import MAX_THREADS

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RECIPE = "train/default.yaml"          # relative to configs/
# Data loader processes (threads are bounded by the pipeline's MAX_THREADS): more than the largest
# machine's cores only fill memory, and a typo like 10000 would start them all (threads: 100000
# ended the run in a segfault).
MAX_WORKERS = 64


def default_data_root() -> Path:
    return Path(os.environ.get("POSECAST_DATA") or REPO_ROOT.parent / "shared" / "datasets")


def default_work_root() -> Path:
    """Where rendered data and runs go (`scripts/train.sh`), and where the recipes look for them."""
    return Path(os.environ.get("POSECAST_WORK") or REPO_ROOT.parent / "data")


def resolve_path(text: str) -> Path:
    """A config path: variables and ~ expanded; relative to the current directory, or to the
    repository root where only that exists."""
    def var(m: re.Match[str]) -> str:
        key = m.group(1) or m.group(2)
        if key == "POSECAST_DATA":
            return str(default_data_root())
        if key == "POSECAST_WORK":
            return str(default_work_root())
        return os.environ.get(key, m.group(0))

    expanded = re.sub(r"\$\{(\w+)\}|\$(\w+)", var, text)
    path = Path(expanded).expanduser()
    if path.is_absolute() or path.exists():
        return path
    in_repo = REPO_ROOT / path
    return in_repo if in_repo.exists() else path


Precision = Literal["fp32", "tf32", "bf16"]     # train/step.py: what each means
PRECISIONS: tuple[str, ...] = get_args(Precision)


@dataclass(frozen=True)
class ModelSection:
    config: str = "configs/model.yaml"      # a model YAML (laid over configs/model.yaml)
    fusion: Fusion | None = None             # overrides; null keeps the model YAML's value
    roots: tuple[str, ...] | None = None
    input_size: int | None = None
    lift_width: int | None = None            # the lifter (engines/network.py); 0: none
    lift_blocks: int | None = None
    grid_stride: int | None = None           # 8 or 4: pixels per 2D grid cell; grid_size follows
    offsets_frame: OffsetsFrame | None = None  # the frame of the 3D labels and outputs

    def check(self) -> None:
        if self.roots is not None:
            if not self.roots:
                raise ValueError("roots: must name at least one joint")
            for name in self.roots:
                if name not in H36M17.joint_names:
                    raise ValueError(f"roots: unknown joint '{name}' (the {H36M17.name} joints are: "
                                     f"{', '.join(H36M17.joint_names)})")
        if self.input_size is not None and (self.input_size % 32 or not 64 <= self.input_size <= MAX_INPUT_SIZE):
            raise ValueError(f"input_size: must be a multiple of 32, from 64 to {MAX_INPUT_SIZE} (got {self.input_size})")


@dataclass(frozen=True)
class DataSection:
    synth_dirs: tuple[str, ...]              # shard folders (each with manifest.json), or folders of them
    synth_val_dirs: tuple[str, ...] = ()
    real2d_dir: str | None = None            # COCO-format keypoints.json + images/ (null: synthetic only)
    real_fraction: float = 0.0               # share of each batch's people drawn from the real 2D set
    real_val_fraction: float = 0.1           # real records held out for validation (split seed 0)
    augment: bool = True
    backgrounds_dir: str | None = None       # photos for negatives (train/negatives.py; their training split)
    negative_fraction: float = 0.0           # share of each batch that is a person-free crop (drawn
                                             # after the people: real = (1 - this) x real_fraction)
    cut_fraction: float = 0.0                # share of people (rendered tracking-like crops and real
                                             # photos) cut off by the crop's lower edge between hips
                                             # and knees, as a webcam at a desk sees them
    real_cutouts_dir: str | None = None      # masks of the real photos' people (python -m train.real_cutouts)
    paste_fraction: float = 0.0              # share of real photos whose person is put before a
                                             # training background photo (needs the two above)
    bystander_fraction: float = 0.0          # share of those given another training photo's person
                                             # beside them, unlabelled (train.real_cutouts)

    def check(self) -> None:
        if not self.synth_dirs:
            raise ValueError("synth_dirs: must list at least one shard folder")
        if not 0.0 <= self.real_fraction <= 1.0:
            raise ValueError(f"real_fraction: must be in [0, 1] (got {self.real_fraction})")
        if self.real_fraction > 0 and self.real2d_dir is None:
            raise ValueError("real_fraction > 0 needs real2d_dir")
        if not 0.0 <= self.negative_fraction < 1.0:
            raise ValueError(f"negative_fraction: must be in [0, 1) (got {self.negative_fraction})")
        if self.negative_fraction > 0 and self.backgrounds_dir is None:
            raise ValueError("negative_fraction > 0 needs backgrounds_dir")
        if not 0.0 <= self.cut_fraction <= 1.0:
            raise ValueError(f"cut_fraction: must be in [0, 1] (got {self.cut_fraction})")
        if not 0.0 <= self.paste_fraction <= 1.0:
            raise ValueError(f"paste_fraction: must be in [0, 1] (got {self.paste_fraction})")
        if self.paste_fraction > 0 and (self.real_cutouts_dir is None or self.backgrounds_dir is None):
            raise ValueError("paste_fraction > 0 needs real_cutouts_dir and backgrounds_dir")
        if not 0.0 <= self.bystander_fraction <= 1.0:
            raise ValueError(f"bystander_fraction: must be in [0, 1] (got {self.bystander_fraction})")
        if self.bystander_fraction > 0 and self.paste_fraction <= 0:
            raise ValueError("bystander_fraction > 0 needs paste_fraction > 0 (bystanders join pasted people)")
        if not 0.0 <= self.real_val_fraction < 1.0:
            raise ValueError(f"real_val_fraction: must be in [0, 1) (got {self.real_val_fraction})")


@dataclass(frozen=True)
class OptimSection:
    batch_size: int
    steps: int
    lr: float                                # peak learning rate (AdamW), after warm-up
    weight_decay: float = 1e-4
    warmup_steps: int = 0                    # linear warm-up from 0
    schedule: Literal["cosine", "constant"] = "cosine"
    final_lr_fraction: float = 0.01          # cosine ends at lr x this
    grad_clip: float | None = None           # max global gradient norm; null: no clipping

    def check(self) -> None:
        if self.batch_size < 1 or self.steps < 1:
            raise ValueError("batch_size and steps must be >= 1")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError("lr must be > 0 and weight_decay >= 0")
        if self.warmup_steps < 0:
            raise ValueError("warmup_steps must be >= 0")
        if self.warmup_steps > self.steps:
            # The run would end still warming up: its learning rate never reaches lr.
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be at most optim.steps ({self.steps}): "
                             f"the learning rate would never reach optim.lr (a shorter warm-up, or more steps)")
        if not 0.0 <= self.final_lr_fraction <= 1.0:
            raise ValueError("final_lr_fraction must be in [0, 1]")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError("grad_clip must be > 0 (or null)")


@dataclass(frozen=True)
class LossSection:
    w2d: float = 1.0                         # cross-entropy of the grid softmax against soft labels (nats)
    w3d: float = 100.0                       # mean squared offset error (metres squared); see default.yaml
    w_neg: float = 1.0                       # negatives: KL(uniform || grid softmax) (nats)
    w_twin: float = 0.0                      # -log(1 - mass on the left/right twin's place) (losses.py)
    w_edge: float = 0.0                      # labelled joints outside the crop: cross-entropy against the
                                             # border cell nearest their place ("it is beyond here")
    real_either_side: bool = False           # real photos: 2D loss of the better of the labelled
                                             # and the left-right exchanged assignment (losses.py)

    def check(self) -> None:
        if self.w2d < 0 or self.w3d < 0 or self.w2d + self.w3d == 0:
            raise ValueError("w2d and w3d must be >= 0, not both 0")
        if self.w_neg < 0:
            raise ValueError("w_neg must be >= 0")
        if self.w_twin < 0:
            raise ValueError("w_twin must be >= 0")
        if self.w_edge < 0:
            raise ValueError("w_edge must be >= 0")


@dataclass(frozen=True)
class TrainConfig:
    name: str | None                         # run name; null: the recipe file's name
    model: ModelSection
    data: DataSection
    optim: OptimSection
    loss: LossSection = LossSection()
    seed: int = 0                            # data order and augmentation (the weights' init: model seed)
    output_dir: str | None = None            # null: runs/<name> under the current directory
    device: Literal["auto", "cpu", "cuda"] = "auto"   # auto: cuda when torch sees a GPU
    num_workers: int = 2                     # data loader processes (0: in the training process)
    threads: int = 2                         # torch.set_num_threads
    precision: Precision = "fp32"            # the forward pass's arithmetic (train/step.py)
    channels_last: bool = False              # the network's weights and activations in NHWC order (train/step_bench.py)
    checkpoint_every: int = 500              # steps between out/last.pt writes
    val_every: int = 1000                    # steps between validations (0: only at the end)
    val_samples: int = 256                   # cap per validation set (synthetic and real)
    log_every: int = 10                      # steps between JSONL log lines
    init_from: str | None = None             # a checkpoint to start from where names and shapes match
    init_scope: Literal["features", "all"] = "features"   # features: backbone, 2D, lifter; all: every tensor
    lifter_from: str | None = None           # a lifter file (python -m train.lifting) for model.lifter
    freeze_2d: bool = False                  # keep init_from's backbone and 2D branch as they are

    def check(self) -> None:
        if self.name is not None and (not self.name or "/" in self.name or self.name.startswith(".")):
            raise ValueError(f"name: must be a plain folder name (got {self.name!r})")
        check_range("num_workers", self.num_workers, 0, MAX_WORKERS, " (0: in the training process)")
        check_range("threads", self.threads, 1, MAX_THREADS)
        if self.init_scope == "all" and not self.init_from:
            raise ValueError("init_scope: all needs init_from")
        if self.freeze_2d and not self.init_from:
            raise ValueError("freeze_2d: needs init_from (the trained backbone and 2D branch to keep)")
        if self.checkpoint_every < 1 or self.val_every < 0 or self.val_samples < 1 or self.log_every < 1:
            raise ValueError("checkpoint_every, val_samples and log_every must be >= 1; val_every >= 0")
        if not 0 <= self.seed < 2 ** 32:
            raise ValueError(f"seed: must be from 0 to 2**32 - 1 (got {self.seed})")

    # --- derived ---------------------------------------------------------------------

    def init_path(self) -> Path:
        return resolve_path(self.init_from) if self.init_from else Path()

    def lifter_path(self) -> Path:
        return resolve_path(self.lifter_from) if self.lifter_from else Path()

    @property
    def run_name(self) -> str:
        return self.name or "run"

    def out_dir(self) -> Path:
        return resolve_path(self.output_dir) if self.output_dir else Path("runs") / self.run_name

    def synth_dirs(self) -> list[Path]:
        return expand_shard_dirs(self.data.synth_dirs)

    def synth_val_dirs(self) -> list[Path]:
        return expand_shard_dirs(self.data.synth_val_dirs)

    def real_cutouts_dir(self) -> Path | None:
        return resolve_path(self.data.real_cutouts_dir) if self.data.real_cutouts_dir else None

    def backgrounds_dir(self) -> Path | None:
        return resolve_path(self.data.backgrounds_dir) if self.data.backgrounds_dir else None

    def real2d_dir(self) -> Path | None:
        return resolve_path(self.data.real2d_dir) if self.data.real2d_dir else None

    def model_config(self) -> ModelConfig:
        return build_model_config(self.model, "model")


def expand_shard_dirs(entries: tuple[str, ...] | list[str]) -> list[Path]:
    """Each entry is a shard folder (it has manifest.json), a folder of shard folders, or a glob
    pattern (`../data/synth_train_*`) of either; the result is sorted within each entry."""
    out: list[Path] = []
    for entry in entries:
        if any(c in entry for c in "*?["):
            pattern = resolve_path(entry)
            base = Path(pattern.anchor) if pattern.is_absolute() else Path()
            rel = str(pattern.relative_to(base)) if pattern.is_absolute() else str(pattern)
            found = sorted(p for p in base.glob(rel) if p.is_dir())
            if not found and not pattern.is_absolute():
                found = sorted(p for p in REPO_ROOT.glob(rel) if p.is_dir())
            if not found:
                shown = f"{entry} ({pattern})" if str(pattern) != entry else entry
                raise ConfigError(f"no shard folder matches {shown}: render the images first "
                                  f"(python -m train.synth.generate; bash scripts/train.sh does it all)")
            paths = found
        else:
            paths = [resolve_path(entry)]
        for path in paths:
            if (path / "manifest.json").is_file():
                out.append(path.resolve())
            elif path.is_dir():
                subs = sorted(p for p in path.iterdir() if (p / "manifest.json").is_file())
                if not subs:
                    raise ConfigError(f"{path}: no shards here (no manifest.json in it or in its sub-folders)")
                out.extend(p.resolve() for p in subs)
            else:
                raise ConfigError(f"shard folder not found: {path} (render the images first: "
                                  f"python -m train.synth.generate; bash scripts/train.sh does it all)")
    return out


def build_model_config(section: ModelSection, source: str) -> ModelConfig:
    """configs/model.yaml, the recipe's model YAML over it, the recipe's overrides over that."""
    path = resolve_path(section.config)
    data = load_yaml(config_path("model.yaml"))
    if path.resolve() != config_path("model.yaml").resolve():
        try:
            data = merge(data, load_yaml(path))
        except ConfigError as exc:
            # The model YAML's own error ("config file not found: m.yaml") with the recipe that names it.
            raise ConfigError(f"{source}: model.config: {exc}") from None
    over: dict[str, Any] = {}
    if section.fusion is not None:
        over["fusion"] = section.fusion
    if section.roots is not None:
        over["roots"] = list(section.roots)
    if section.grid_stride is not None:
        over["grid_stride"] = section.grid_stride
    if section.input_size is not None or section.grid_stride is not None:
        size = section.input_size if section.input_size is not None else data.get("input_size")
        stride = section.grid_stride if section.grid_stride is not None else data.get("grid_stride", 8)
        if section.input_size is not None:
            over["input_size"] = size
        if isinstance(size, int) and isinstance(stride, int) and stride > 0:
            over["grid_size"] = size // stride
    if section.offsets_frame is not None:
        over["offsets_frame"] = section.offsets_frame
    if section.lift_width is not None:
        over["lift_width"] = section.lift_width
    if section.lift_blocks is not None:
        over["lift_blocks"] = section.lift_blocks
    # Errors name the recipe and the model file, with the key as model.<key>.
    return from_dict(ModelConfig, merge(data, over), source=f"{source} (model.config {path} with the recipe's model keys)",
                     prefix="model.")


def load_train_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """A recipe laid over configs/train/default.yaml, with `overrides` (from flags) on top; the
    model it names is built once here so that its errors show at load time."""
    cfg = load_config(TrainConfig, DEFAULT_RECIPE, path, overrides)
    source = str(path) if path is not None else str(config_path(DEFAULT_RECIPE))
    if cfg.name is None:
        stem = Path(path).stem if path is not None else "default"
        cfg = dataclasses.replace(cfg, name=stem)
    try:
        mcfg = build_model_config(cfg.model, source)
    except ConfigError as exc:
        raise ConfigError(str(exc)) from None
    if cfg.lifter_from is not None and not mcfg.lift_width:
        given = ("--lifter-from is given" if overrides and overrides.get("lifter_from") is not None
                 else "lifter_from is set")
        raise ConfigError(f"{source}: {given} but the recipe's model has no lifter (set model.lift_width)")
    return cfg
