"""Train the temporal refiner (`streamer/refiner.py`) on the pipeline's own output.

1. Clips rendered from training material only (`python -m train.synth.clip --split train`, and
   their webcam views from `python -m train.synth.cut_clips`), each tracked by `posecast track
   --filter off` with its focal length: the per-frame poses the align stage sees before filtering.
   The track files are kept in `--tracks`, in a folder per model (its SHA-256's first 16 digits),
   so a second run with other training settings does not track again; one for another model,
   another render of a clip or other pipeline settings (configs/pipeline.yaml) does.
2. Windows of `streamer.refiner.frame_features`: `--past` frames before every frame with a
   person, the frame and `--future` frames after it, cut at the ends of each track and filled
   there with the end frame, as the pipeline fills them. Each window is also used mirrored.
3. MLPs (`--members`, from successive seeds) trained to move the frame's 3D joints onto the truth
   (mean per-joint distance, AdamW, cosine decay); the refiner applies their mean correction
   times `--scale`. A tenth of each source's clips is held out and reported, in whole motion groups
   (`held_out_groups`: the clips of one motion, and their webcam views, all on one side).

    python -m train.temporal --clips ../data/clips_train ../data/clips_webcam_train ../data/clips_train2 \\
        ../data/clips_webcam_train2 --tracks ../data/temporal_tracks --out engines/weights/temporal.npz

The result is scored like every filter, through the whole pipeline on the held-out clips:
`python -m train.video_eval --clips ../data/clips_report` (the refiner is on by default for files).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.arguments import OneLineParser
from engines.errors import InputError
from engines.files import check_writable_folder, make_folders, replaced_when_done
from engines.model_file import file_sha256
from engines.models import SHIPPED_DEFAULT
from engines.skeleton import H36M17
from streamer.refiner import TemporalRefiner, frame_features, mirrored_features
from train.metrics import mpjpe
from train.motion import HELD_OUT as HELD_OUT_MOTIONS
from train.command import run_command
from train.synth.clip import rendered_split
from train.video_eval import ClipMismatch, load_clips, read_npz_track, track_clip

ORIGIN = H36M17.index(H36M17.origin)
HELD_OUT_ONE_IN = 10         # one in ten of each source's clips is held out (`held_out_groups`)
DROPOUT = 0.25
WEIGHT_DECAY = 1e-2


@dataclass
class ClipWindows:
    windows: np.ndarray      # (N, past + 1 + future, J * 6) float32
    targets: np.ndarray      # (N, J, 3) true origin-relative joints, metres
    held_out: bool


def motion_group(motion: str) -> str:
    """The motions a clip's could be learned from: Human3.6M's subject and action, its takes
    together ("h36m/S1/Sitting 2" -> "h36m/S1/Sitting"), a CMU subject's ("cmu/35_29" -> "cmu/35"),
    else the sequence itself."""
    source, _, rest = motion.partition("/")
    if source == "h36m":
        return motion.rstrip("0123456789").rstrip()
    if source == "cmu":
        return f"cmu/{rest.split('_')[0]}"
    return motion


def held_out_groups(motions: list[str]) -> set[str]:
    """The motion groups (`motion_group`) held out, given every clip's `motion` label (a webcam
    view's is its clip's): per source (h36m, cmu, deepmimic), whole groups in the order of a stable
    hash of their names until they hold a tenth of its clips, passing over a group that would
    take them past a fifth (a source of fewer than five clips, or whose groups are all larger
    than a fifth, holds none out). Not every tenth clip by number: `train.synth.clip` draws clip
    k's source by k (every odd clip CMU or DeepMimic, so no tenth clip is Human3.6M), and clips
    draw their motions with replacement, so most held-out clips' motions were in training too."""
    by_source: dict[str, Counter[str]] = {}
    for m in motions:
        by_source.setdefault(m.split("/", 1)[0], Counter())[motion_group(m)] += 1
    held: set[str] = set()
    for groups in by_source.values():
        target, taken = sum(groups.values()) / HELD_OUT_ONE_IN, 0
        for group in sorted(groups, key=lambda g: (zlib.crc32(g.encode()), g)):
            if taken >= target:
                break
            if taken + groups[group] <= 2 * target:        # never past a fifth of the source
                held.add(group)
                taken += groups[group]
    return held


SOURCE_KEY = "source_sha256"     # in a kept track: the SHA-256 of the video it was tracked from
CONFIG_KEY = "config_sha256"     # ... and of the pipeline settings it was tracked with (`pipeline_digest`)


def pipeline_digest() -> str:
    """The SHA-256 of the built-in pipeline settings that `posecast track` runs the clips with
    (configs/pipeline.yaml as loaded: comments and layout do not count). A kept track made under
    other settings (another search threshold, crop margin or camera model) is not this pipeline's
    output, and a refiner trained on it would correct errors the pipeline no longer makes."""
    from dataclasses import asdict

    from streamer.config import load_pipeline_config

    text = json.dumps(asdict(load_pipeline_config()), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def track_record(track: Path) -> dict[str, str]:
    """What a kept track says it was made from (`SOURCE_KEY`, `CONFIG_KEY`): the keys it records,
    none where it records none or is absent."""
    try:
        with np.load(track, allow_pickle=False) as t:
            return {key: str(t[key]) for key in (SOURCE_KEY, CONFIG_KEY) if key in t.files}
    except (OSError, ValueError, zipfile.BadZipFile):
        return {}


def add_record(track: Path, record: dict[str, str]) -> None:
    """Adds `record`'s keys to a track file that lacks them (an .npz is a zip of .npy arrays): a
    copied or touched clip keeps its track, and a track copied in after its clip was rendered
    again, or the settings changed, does not."""
    with zipfile.ZipFile(track, "a") as z:
        for key, value in record.items():
            with z.open(f"{key}.npy", "w") as f:
                np.lib.format.write_array(f, np.array(value))


def segments(found: np.ndarray, person_id: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) runs of frames with a person and one track number: what the pipeline's
    smoothers see as one track."""
    runs, start = [], None
    for t in range(len(found) + 1):
        same = t < len(found) and found[t] and (start is None or person_id[t] == person_id[start])
        if start is not None and not same:
            runs.append((start, t))
            start = None
        if t < len(found) and found[t] and start is None:
            start = t
    return runs


def windows_of(feats: np.ndarray, past: int, future: int) -> np.ndarray:
    """(T, F) one track's frame features -> (T, past + 1 + future, F): each frame's window, filled
    at the track's ends with its first or last frame (`streamer.refiner.RefiningSmoother` does the same)."""
    padded = np.concatenate([np.repeat(feats[:1], past, 0), feats, np.repeat(feats[-1:], future, 0)])
    return np.stack([padded[i:i + past + 1 + future] for i in range(len(feats))])


def clip_windows(track: Path, labels: dict[str, np.ndarray], past: int, future: int) -> tuple[np.ndarray, np.ndarray]:
    """The windows and targets of one tracked clip."""
    found, j3, j2, _, conf = read_npz_track(track)
    with np.load(track) as t:
        person = t["person_id"]
    gt = np.asarray(labels["joints_3d"], np.float32)
    if len(found) != len(gt):        # a track of another render of the clip: its frames are not these labels'
        raise ClipMismatch(f"the track {track.name} has {len(found)} frames, the clip's labels {len(gt)}")
    found = np.asarray(found, bool) & np.isfinite(j3).all(axis=(1, 2))
    gt = gt - gt[:, ORIGIN:ORIGIN + 1]
    windows, targets = [], []
    for a, b in segments(found, person):
        windows.append(windows_of(np.stack([frame_features(j3[t], j2[t], conf[t], ORIGIN) for t in range(a, b)]),
                                  past, future))
        targets.append(gt[a:b])
    if not windows:
        return np.zeros((0, past + 1 + future, j3.shape[1] * 6), np.float32), np.zeros((0, j3.shape[1], 3), np.float32)
    return np.concatenate(windows).astype(np.float32), np.concatenate(targets)


def collect(clips: list[tuple[Path, Path, dict[str, np.ndarray]]], tracks: Path, model: Path, digest: str,
            past: int, future: int) -> list[ClipWindows]:
    """Every clip (folder, video, labels), tracked by `model` (SHA-256 `digest`) once, the tracks
    kept in `tracks`, and cut into windows."""
    from tqdm import tqdm

    tracks = tracks / digest[:16]
    make_folders(tracks)
    held = held_out_groups([str(labels["motion"]) for _, _, labels in clips])
    settings = pipeline_digest()
    out = []
    for folder, video, labels in tqdm(clips, desc="tracking clips", unit="clip"):
        track = tracks / f"{folder.name}_{video.stem}.npz"
        # A track of another render of the clip (the video's bytes differ from those it recorded),
        # or made with other pipeline settings, is tracked again; one kept before tracks recorded
        # their video, where older than it. What a track kept from before does not record is
        # taken as this render's and these settings', and recorded now.
        wanted = {SOURCE_KEY: file_sha256(video), CONFIG_KEY: settings}
        recorded = track_record(track)
        partial = track.with_name(f"partial_{track.name}")         # `track` picks the format by its suffix
        if not track.exists() or any(recorded.get(k, v) != v for k, v in wanted.items()) or (
                SOURCE_KEY not in recorded and track.stat().st_mtime < video.stat().st_mtime):
            track_clip(video, labels, partial, model, "off")
            add_record(partial, wanted)
            partial.replace(track)
        elif recorded.keys() != wanted.keys():
            shutil.copyfile(track, partial)
            add_record(partial, {k: v for k, v in wanted.items() if k not in recorded})
            partial.replace(track)
        try:
            w, y = clip_windows(track, labels, past, future)
        except ClipMismatch as exc:
            raise InputError(f"{exc}: {video} and its labels, or the kept track {track}, are of different renders; "
                             "render the clip again, or delete the track") from None
        out.append(ClipWindows(w, y, motion_group(str(labels["motion"])) in held))
    return out


def train(clips: list[ClipWindows], past: int, width: int, steps: int, batch: int, lr: float, seed: int,
          threads: int) -> tuple[list[tuple[np.ndarray, np.ndarray]], dict]:
    import torch
    from tqdm import tqdm

    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    fit = [c for c in clips if not c.held_out and len(c.targets)]
    held = [c for c in clips if c.held_out and len(c.targets)]
    if not fit:
        raise InputError("no training windows: no clip had a person found in enough frames in a row; check "
                         "the clips (python -m train.synth.clip --split train) and the model")
    x = np.concatenate([c.windows for c in fit])
    y = np.concatenate([c.targets for c in fit])
    x_flip = mirrored_features(x, H36M17)
    perm = np.asarray(H36M17.flip_permutation)
    y_flip = y[:, perm] * np.array([-1.0, 1.0, 1.0], np.float32)
    j = H36M17.num_joints
    d_in = x.shape[1] * x.shape[2]
    net = torch.nn.Sequential(
        torch.nn.Linear(d_in, width), torch.nn.ReLU(), torch.nn.Dropout(DROPOUT),
        torch.nn.Linear(width, width), torch.nn.ReLU(), torch.nn.Dropout(DROPOUT),
        torch.nn.Linear(width, j * 3))
    torch.nn.init.zeros_(net[-1].weight)   # starts as no correction at all
    torch.nn.init.zeros_(net[-1].bias)
    opt = torch.optim.AdamW(net.parameters(), lr, weight_decay=WEIGHT_DECAY)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    middle = slice(past * x.shape[2], past * x.shape[2] + j * 3)

    def corrected(xb: np.ndarray) -> torch.Tensor:
        flat = torch.from_numpy(xb.reshape(len(xb), -1))
        return (flat[:, middle] + net(flat)).view(-1, j, 3)

    t0 = time.perf_counter()
    with tqdm(range(steps), desc="training the refiner", unit="step") as bar:
        for step in bar:
            i = rng.integers(len(x), size=batch)
            flip = rng.random(batch) < 0.5
            xb = np.where(flip[:, None, None], x_flip[i], x[i])
            yb = torch.from_numpy(np.where(flip[:, None, None], y_flip[i], y[i]))
            loss = (corrected(xb) - yb).norm(dim=-1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if step % 200 == 0:
                bar.set_postfix(mpjpe_mm=f"{loss.item() * 1000:.1f}")
    net.eval()
    report = {"train_windows": int(len(x)), "train_clips": len(fit), "held_out_clips": len(held),
              "seconds": round(time.perf_counter() - t0, 1), "steps": steps, "width": width}
    layers = [(m.weight.detach().numpy().T.copy(), m.bias.detach().numpy().copy())
              for m in net if isinstance(m, torch.nn.Linear)]
    return layers, report


def held_out_report(refiner: TemporalRefiner, clips: list[ClipWindows]) -> dict:
    """The whole refiner (members averaged, scaled) on the held-out clips' windows, without the
    filter that follows it in the pipeline."""
    held = [c for c in clips if c.held_out and len(c.targets)]
    if not held:
        return {"held_out_windows": 0}
    x = np.concatenate([c.windows for c in held])
    y = np.concatenate([c.targets for c in held])
    j = refiner.num_joints
    before = x[:, refiner.past, : j * 3].reshape(-1, j, 3)
    after = before + np.stack([refiner.correction(w) for w in x])
    return {"held_out_windows": int(len(x)), "held_out_mpjpe_mm_before": round(1000.0 * mpjpe(before, y), 1),
            "held_out_mpjpe_mm_after": round(1000.0 * mpjpe(after, y), 1)}


def main(argv: list[str] | None = None) -> int:
    ap = OneLineParser(prog="python -m train.temporal", description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=Path, nargs="+", required=True,
                    help="folders of clips rendered from training material (train.synth.clip --split train)")
    ap.add_argument("--tracks", type=Path, required=True, help="folder for the clips' track files (kept, reused)")
    ap.add_argument("--out", type=Path, required=True, help="the refiner file to write (.npz)")
    ap.add_argument("--model", type=Path, default=None, help="the model to refine (default: the built-in one)")
    ap.add_argument("--past", type=int, default=10, help="frames before the refined one that it reads")
    ap.add_argument("--future", type=int, default=10,
                    help="frames after it that it reads (each frame then waits that many; 0 for live sources)")
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--members", type=int, default=2,
                    help="MLPs trained from successive seeds; their corrections are averaged")
    ap.add_argument("--scale", type=float, default=1.0, help="applied to the averaged correction (at most 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if args.past < 0 or args.future < 0 or args.width < 1 or args.steps < 1 or args.batch < 1 or not 0 < args.lr <= 1:
        ap.error("--past and --future must be at least 0; --width, --steps and --batch positive; --lr in (0, 1]")
    if not 1 <= args.threads <= 256:
        ap.error(f"--threads must be between 1 and 256 (got {args.threads})")
    if args.members < 1 or not 0.0 < args.scale <= 1.0:
        ap.error("--members must be at least 1 and --scale in (0, 1]")
    for folder in args.clips:
        if not folder.is_dir():
            ap.error(f"clip folder not found: {folder}")
    for folder in args.clips:
        split = rendered_split(folder)
        if split not in (None, "train"):
            ap.error(f"the clips in {folder} were rendered from {split} material (their settings say so): the "
                     f"refiner must never see them; render clips with python -m train.synth.clip --split train")
    model = args.model or SHIPPED_DEFAULT
    if not Path(model).is_file():
        ap.error(f"model file not found: {model}")
    if args.out.is_dir():
        ap.error(f"--out {args.out} is a folder; give the refiner file's name (.npz)")
    try:
        loaded = [(folder, video, labels) for folder in args.clips for video, labels in load_clips(folder)]
    except (FileNotFoundError, ValueError) as exc:
        ap.error(str(exc))
    # Clips copied without their settings record pass the check above; their motions still tell.
    for _, video, labels in loaded:
        if str(labels["motion"]).startswith(HELD_OUT_MOTIONS):
            ap.error(f"{video} shows the held-out motion {labels['motion']}: the refiner must never see it; "
                     "render clips with python -m train.synth.clip --split train")
    rates = {float(labels["fps"]) for _, _, labels in loaded}
    if len(rates) != 1:
        ap.error(f"the clips have several frame rates ({sorted(rates)}): train on clips of one rate")
    fps = rates.pop()
    for folder in (args.out.parent, args.tracks):    # before hours of tracking and training
        try:
            make_folders(folder)
            check_writable_folder(folder)
        except OSError as err:
            print(f"{ap.prog}: error: cannot write to '{folder}': {err.strerror or err} (choose a folder you can "
                  "write to)", file=sys.stderr)
            return 2
    digest = file_sha256(Path(model))
    try:
        clips = collect(loaded, args.tracks, Path(model), digest, args.past, args.future)
    except RuntimeError as exc:                      # a clip that posecast track could not read
        raise SystemExit(f"{ap.prog}: {exc}") from None
    members, reports = [], []
    for k in range(args.members):
        layers, report = train(clips, args.past, args.width, args.steps, args.batch, args.lr, args.seed + k,
                               args.threads)
        if not all(np.isfinite(w).all() and np.isfinite(b).all() for w, b in layers):
            raise InputError(f"training diverged (member {k + 1}'s weights are NaN or infinite); nothing was "
                             f"written: lower --lr (it is {args.lr:g})")
        alone = TemporalRefiner(args.past, args.future, H36M17.num_joints, [layers], digest, {}, fps)
        members.append(layers)
        reports.append({**report, **held_out_report(alone, clips)})
    info = {"model": Path(model).name, "clips": [str(c) for c in args.clips], "members_report": reports}
    refiner = TemporalRefiner(args.past, args.future, H36M17.num_joints, members, digest, info, fps, args.scale)
    report = held_out_report(refiner, clips)
    refiner.info["report"] = report
    with replaced_when_done(args.out) as tmp:
        refiner.save(tmp)
    print(f"wrote {args.out}: {report}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_command("python -m train.temporal", main, "the tracks written so far are kept and reused"))
