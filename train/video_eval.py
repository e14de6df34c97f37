"""The whole pipeline on rendered video with 3D ground truth (`train.synth.clip`'s clips).

    python -m train.video_eval --clips DIR [--model M] [--filter off one_euro kalman]

Each clip goes through `posecast track` as a user's file would (tracker, mirrored network, root
alignment, the temporal filter named), with the clip's focal length and principal point given
(`--focal`, `--principal`) unless `--without-focal`; its `.npz` track file is then scored against
the clip's labels:

- found: the share of frames with a person reported;
- MPJPE and PA-MPJPE (mm) of the pelvis-relative 3D joints, over the frames with a person;
- 2D PCK@0.2 of the visible joints in those frames (torso diagonal l_shoulder - r_hip, as in
  `train.evaluate`). Visible is the clip's label: in the frame and not hidden behind the body
  (`train.synth.scene.joints_seen`). `train.evaluate` counts every joint inside the crop, hidden
  or not, so its PCK is the harder figure (stage 31's held-out tracking crops: 77.7% over all
  their joints, 82.8% over the unhidden ones);
- acceleration error (mm per frame squared): the mean distance between the predicted and true
  second differences of each joint over three consecutive frames with a person. It is what
  jitter adds; a still, wrong pose has none.
- 2D acceleration error (px per frame squared): the same for the 2D joints, what jitter an
  overlay shows;
- root error and root acceleration error (mm, mm per frame squared): the same for `root_3d`, the
  pelvis's place in the camera, which carries a game character through a scene. Its error is
  mostly depth, which a single camera only knows from the person's size.
- conf calibration: how well the published per-joint `conf` reads as the chance that the joint
  is within PCK@0.2 (the joints PCK counts, by tenths of confidence; `train.metrics.calibration`),
  pooled over all clips.

Per clip, pooled by motion source and over all frames, one block per filter, as a table and
with `--json`.

With `--live` each clip is played in real time through `posecast run`, as a camera would feed the
pipeline (live filtering, stale frames dropped): the track's rows are matched to the clip's frames
by their media time, a frame never delivered counts as not found, and `dropped` is their share.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engines.arguments import OneLineParser
from engines.errors import InputError
from engines.files import check_report_output, input_overwritten, replaced_when_done
from engines.skeleton import H36M17
from train.command import run_command
from train.evaluate import PCK_THRESHOLD, TORSO, interval_span
from train.intervals import Interval, paired_ratio_difference, ratio_interval
from train.metrics import calibration_from_sums, calibration_sums, mpjpe, pa_mpjpe
from train.synth.body import JOINTS_VERSION

CONF_BINS = 10
FILTERS = ("auto", "off", "one_euro", "kalman")   # auto: what `posecast track` does to a file by default
LABEL_KEYS = ("joints_3d", "joints_2d", "visible", "focal", "motion")


class ClipMismatch(ValueError):
    """A clip's video and its labels disagree (another clip's labels beside it)."""


@dataclass
class ClipScore:
    frames: int
    found: int
    mpjpe_sum: float        # mm, summed over found frames (so clips pool by frame)
    pa_mpjpe_sum: float
    pck_hits: int
    pck_joints: int
    accel_sum: float        # mm / frame^2, summed over the triples of found frames
    accel_triples: int
    root_sum: float = 0.0   # mm, root_3d against the true pelvis, summed over found frames with a root
    root_frames: int = 0
    root_accel_sum: float = 0.0   # mm / frame^2, root_3d's, summed over the same triples as accel_sum
    dropped: int = 0        # frames a live run never delivered (`--live`: stale frames dropped)
    accel_2d_sum: float = 0.0   # px / frame^2, the 2D joints', summed over the same triples as accel_sum
    # Per tenth of `conf`, over the joints PCK counts: `train.metrics.calibration_sums`, so clips pool.
    conf_bins: np.ndarray = field(default_factory=lambda: np.zeros((3, CONF_BINS)))
    root_triples: int = 0   # the triples root_accel_sum is over: accel_triples for a track with a root

    def summary(self) -> dict[str, float]:
        return {
            "frames": self.frames,
            "found": self.found / max(self.frames, 1),
            "mpjpe_mm": self.mpjpe_sum / self.found if self.found else float("nan"),
            "pa_mpjpe_mm": self.pa_mpjpe_sum / self.found if self.found else float("nan"),
            "pck": self.pck_hits / self.pck_joints if self.pck_joints else float("nan"),
            "accel_mm": self.accel_sum / self.accel_triples if self.accel_triples else float("nan"),
            "accel_2d_px": self.accel_2d_sum / self.accel_triples if self.accel_triples else float("nan"),
            "root_mm": self.root_sum / self.root_frames if self.root_frames else float("nan"),
            "root_accel_mm": self.root_accel_sum / self.root_triples if self.root_triples else float("nan"),
            "conf_ece": calibration_from_sums(self.conf_bins)["ece"],
            "dropped": self.dropped / max(self.frames, 1),
            # What each figure above is a mean over, so that clips pool (and resample) exactly.
            "weights": {"found": self.frames, "mpjpe_mm": self.found, "pa_mpjpe_mm": self.found,
                        "pck": self.pck_joints, "accel_mm": self.accel_triples, "accel_2d_px": self.accel_triples,
                        "root_mm": self.root_frames, "root_accel_mm": self.root_triples},
        }

    def __add__(self, other: ClipScore) -> ClipScore:
        return ClipScore(*(a + b for a, b in zip(asdict(self).values(), asdict(other).values())))


PROG = "python -m train.video_eval"
EMPTY = ClipScore(0, 0, 0.0, 0.0, 0, 0, 0.0, 0)


def conf_table(sums: np.ndarray) -> list[dict[str, float]]:
    """`ClipScore.conf_bins` as `train.metrics.calibration`'s bins: the non-empty tenths, each
    with its joints, mean conf and share within PCK."""
    return calibration_from_sums(sums)["bins"]


def score_track(found: np.ndarray, pred_3d: np.ndarray, pred_2d: np.ndarray,
                labels: dict[str, np.ndarray], root_3d: np.ndarray | None = None,
                conf: np.ndarray | None = None) -> ClipScore:
    """A track (per frame: found (T,), joints_3d (T, J, 3) m pelvis-relative, joints_2d (T, J, 2) px,
    and optionally root_3d (T, 3) m, the pelvis in the camera frame, and conf (T, J)) against a
    clip's labels."""
    pelvis = H36M17.index("pelvis")
    gt_3d = np.asarray(labels["joints_3d"], np.float64)
    gt_root = gt_3d[:, pelvis].copy()
    gt_3d = gt_3d - gt_3d[:, pelvis:pelvis + 1]
    gt_2d, visible = np.asarray(labels["joints_2d"], np.float64), np.asarray(labels["visible"], bool)
    n = len(gt_3d)
    if len(found) != n:
        raise ClipMismatch(f"the track has {len(found)} frames, the clip {n}")
    found = np.asarray(found, bool) & np.isfinite(pred_3d).all(axis=(1, 2)) & np.isfinite(pred_2d).all(axis=(1, 2))
    pred = np.asarray(pred_3d, np.float64)
    pred = pred - pred[:, pelvis:pelvis + 1]
    kept = int(found.sum())
    # Sums over the frames found, so that clips pool by frame.
    err_sum = mpjpe(pred[found], gt_3d[found]) * 1000.0 * kept if kept else 0.0
    pa_sum = pa_mpjpe(pred[found], gt_3d[found]) * 1000.0 * kept if kept else 0.0
    a, b = H36M17.indices(TORSO)
    torso = np.linalg.norm(gt_2d[:, a] - gt_2d[:, b], axis=-1)
    counted = visible & found[:, None] & (torso > 1e-6)[:, None]
    dist = np.linalg.norm(np.nan_to_num(pred_2d) - gt_2d, axis=-1)
    hits = (dist <= PCK_THRESHOLD * torso[:, None]) & counted
    triple = found[:-2] & found[1:-1] & found[2:] if n >= 3 else np.zeros(0, bool)
    accel = np.linalg.norm(_second_difference(pred, gt_3d)[triple], axis=-1).mean(axis=-1) * 1000.0
    score = ClipScore(n, kept, err_sum, pa_sum, int(hits.sum()), int(counted.sum()), float(accel.sum()),
                      int(triple.sum()))
    accel_2d = np.linalg.norm(_second_difference(np.asarray(pred_2d, np.float64), gt_2d)[triple], axis=-1)
    score.accel_2d_sum = float(accel_2d.mean(axis=-1).sum())
    if conf is not None:
        score.conf_bins = calibration_sums(np.asarray(conf, np.float64)[counted], hits[counted], CONF_BINS)
    if root_3d is not None:
        root = np.asarray(root_3d, np.float64)
        if not np.isfinite(root[found]).all():
            raise ValueError("the track's root_3d is not finite in a frame with a person")
        score.root_sum = float(np.linalg.norm(root[found] - gt_root[found], axis=-1).sum() * 1000.0)
        score.root_frames = kept
        score.root_accel_sum = float(np.linalg.norm(_second_difference(root, gt_root)[triple], axis=-1).sum() * 1000.0)
        score.root_triples = score.accel_triples
    return score


def _second_difference(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(T - 2, ...): the predicted minus the true second difference over each three frames."""
    if len(pred) < 3:
        return np.zeros((0, *pred.shape[1:]))
    return (pred[2:] - 2 * pred[1:-1] + pred[:-2]) - (truth[2:] - 2 * truth[1:-1] + truth[:-2])


def read_npz_track(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    with np.load(path) as t:
        return t["found"], t["joints_3d"], t["joints_2d"], t["root_3d"], t["conf"]


def read_live_track(path: Path, frames: int, fps: float) -> tuple[tuple[np.ndarray, ...], int]:
    """A live run's `.npz` track laid out on the clip's `frames` frames by media time (frames it
    never delivered: not found, NaN), and how many those were."""
    with np.load(path) as t:
        rows = np.rint(t["t_media"] * fps).astype(np.int64)
        arrays = [t[k] for k in ("found", "joints_3d", "joints_2d", "root_3d", "conf")]
    if len(rows) and (rows.min() < 0 or rows.max() >= frames or len(np.unique(rows)) != len(rows)):
        raise ValueError(f"{path.name}: its media times do not fit the clip's {frames} frames at {fps:g} fps")
    laid = []
    for a in arrays:
        full = np.zeros(frames, bool) if a.dtype == bool else np.full((frames, *a.shape[1:]), np.nan, a.dtype)
        full[rows] = a
        laid.append(full)
    return tuple(laid), frames - len(rows)


def run_clip(video: Path, labels: dict[str, np.ndarray], track: Path, model: Path | None, filter_name: str,
             with_focal: bool, config: Path | None, live: bool = False) -> ClipScore:
    track_clip(video, labels, track, model, filter_name, with_focal, config, live)
    dropped = 0
    if live:
        (found, joints_3d, joints_2d, root_3d, conf), dropped = read_live_track(
            track, len(labels["joints_3d"]), float(labels["fps"]))
    else:
        found, joints_3d, joints_2d, root_3d, conf = read_npz_track(track)
    score = score_track(found, joints_3d, joints_2d, labels, root_3d, conf)
    score.dropped = dropped
    return score


def track_clip(video: Path, labels: dict[str, np.ndarray], track: Path, model: Path | None, filter_name: str,
               with_focal: bool = True, config: Path | None = None, live: bool = False) -> None:
    """`posecast track` on one clip into the `.npz` track file `track`; with `live`, `posecast run`
    (played in real time, publishing on a free port)."""
    cmd = [sys.executable, "-m", "streamer.cli", *(("run", str(video), "--port", "0") if live else ("track", str(video))),
           "-o", str(track), "--filter", filter_name, "--no-progress"]
    if with_focal:
        cmd += ["--focal", f"{float(labels['focal']):.3f}"]
        if "intrinsics" in labels:
            # A webcam view (train.synth.cut_clips) is cut off-centre from its clip: its optical
            # axis meets the frame elsewhere than the centre, and the pipeline has to be told.
            cx, cy = np.asarray(labels["intrinsics"], np.float64)[2:4]
            cmd += ["--principal", f"{cx:.3f}", f"{cy:.3f}"]
    if model is not None:
        cmd += ["--model", str(model)]
    if config is not None:
        cmd += ["--config", str(config)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode == 2:             # bad input, config or model: the user's to fix, as posecast says
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise InputError(f"posecast track {video.name} refused: {last.removeprefix('posecast: error: ')}")
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"posecast track {video.name} failed (rc {done.returncode}): {last}")


def load_clips(folder: Path) -> list[tuple[Path, dict[str, np.ndarray]]]:
    clips = []
    for labels_path in sorted(folder.glob("clip_*.npz")):
        video = labels_path.with_suffix(".mp4")
        if not video.exists():
            raise FileNotFoundError(f"{video} is missing (its labels {labels_path.name} are there)")
        try:
            with np.load(labels_path, allow_pickle=False) as d:
                labels = {k: d[k] for k in d.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise ValueError(f"{labels_path} is not a readable clip label file ({type(exc).__name__}); "
                             "render the clips again with python -m train.synth.clip") from None
        missing = [k for k in LABEL_KEYS if k not in labels]
        if missing:
            raise ValueError(f"{labels_path} lacks {', '.join(missing)}: not made by python -m train.synth.clip")
        # Labels made before the joints were corrected would score (or train a refiner) against the
        # old knees and neck_nose without a word.
        raw = np.asarray(labels.get("joints_version", 1))
        if raw.shape != () or raw.dtype.kind not in "iu":
            raise ValueError(f"{labels_path} holds joints_version {raw.tolist()!r} ({raw.dtype}, shape {raw.shape}), "
                             "not one whole number: not made by python -m train.synth.clip")
        version = int(raw)
        if version > JOINTS_VERSION:
            raise ValueError(f"{labels_path} holds joint labels of version {version}, newer than this code's "
                             f"({JOINTS_VERSION}): update Posecast to score or train on them")
        if version != JOINTS_VERSION:
            raise ValueError(f"{labels_path} holds joint labels of version {version}, this code's are version "
                             f"{JOINTS_VERSION} (the knees and neck_nose moved): render the clips again with "
                             "python -m train.synth.clip, and cut their webcam views again")
        clips.append((video, labels))
    if not clips:
        raise FileNotFoundError(f"no clip_*.npz in {folder} (make them with python -m train.synth.clip)")
    return clips


def _pooled_terms(clips: list[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """Per clip, `key` times what it is a mean over, and that (0 for a clip with none). Reports
    written before the summaries kept their `weights` are weighted by the frames found (exact for
    the 3D errors, close for the rest)."""
    weight = np.array([c["weights"][key] if "weights" in c else c["frames"] * (1.0 if key == "found" else c["found"])
                       for c in clips], np.float64)
    value = np.array([c[key] for c in clips], np.float64)
    ok = (weight > 0) & np.isfinite(value)
    return np.where(ok, value, 0.0) * np.where(ok, weight, 0.0), np.where(ok, weight, 0.0)


def pooled(clips: list[dict[str, float]], key: str) -> float:
    """`key` pooled over clips' summaries by the frames it is averaged over."""
    num, den = _pooled_terms(clips, key)
    return float(num.sum() / den.sum()) if (den > 0).any() else float("nan")


def pooled_interval(clips: list[dict[str, float]], key: str) -> Interval:
    """`key` pooled over the clips, with a 95% interval from resampling the clips."""
    return ratio_interval(*_pooled_terms(clips, key))


def interval_row(clips: list[dict[str, Any]]) -> str:
    """The pooled figures' 95% intervals over clips, as a row under the table's **all** row
    ("n/a" with fewer than two clips: one clip alone says nothing of others)."""
    def span(key: str, scale: float = 1.0, digits: int = 1) -> str:
        return interval_span(pooled_interval(clips, key).scaled(scale).as_list(), digits)

    return (f"| 95% interval over the {len(clips)} clips | | {span('found', 100)}% | {span('mpjpe_mm')} | "
            f"{span('pa_mpjpe_mm')} | {span('pck', 100)}% | {span('accel_mm')} | {span('accel_2d_px')} | "
            f"{span('root_mm', digits=0)} | {span('root_accel_mm')} |")


def paired_difference(ours: dict[str, dict], theirs: dict[str, dict], key: str, resamples: int = 2000,
                      seed: int = 0) -> tuple[float, float, float]:
    """(difference, low, high): `key` pooled over the clips both runs scored, ours minus theirs,
    with a 95% interval from resampling the clips (the same clips for both runs)."""
    names = sorted(set(ours) & set(theirs))
    if not names:
        raise ValueError("the two runs share no clip")
    diff = paired_ratio_difference(*_pooled_terms([ours[n] for n in names], key),
                                   *_pooled_terms([theirs[n] for n in names], key), resamples=resamples, seed=seed)
    return diff.value, diff.low, diff.high


def paired_clip_problem(ours: dict[str, dict], theirs: dict[str, dict], other: Path) -> str | None:
    """Why two reports' clips cannot be paired (None: they can): clips are paired by name, so the
    same name must be the same clip (its motion), and at least one must be shared."""
    shared = sorted(set(ours) & set(theirs))
    if not shared:
        return f"--against {other} scored none of these clips; give a report of the same clip folder"
    differ = [n for n in shared if ours[n].get("motion") != theirs[n].get("motion")]
    if differ:
        return (f"--against {other} scored other clips under the same names ({differ[0]}: "
                f"{theirs[differ[0]].get('motion')} there, {ours[differ[0]].get('motion')} here); give a report "
                f"of the same clip folder")
    return None


def _unpaired(report: dict[str, dict], theirs: dict[str, Any], other: Path) -> str | None:
    """Why some filter's clips cannot be paired with the --against report's (the first such)."""
    for filter_name, block in report.items():
        if isinstance(theirs.get(filter_name), dict):
            problem = paired_clip_problem(block["clips"], theirs[filter_name]["clips"], other)
            if problem is not None:
                return problem
    return None


def _figure(value: float, spec: str, scale: float = 1.0) -> str:
    """One table cell: "n/a" where nothing was there to measure (no one found: no error to take)."""
    return format(scale * value, spec) if math.isfinite(value) else "n/a"


def format_row(name: str, s: dict[str, float]) -> str:
    return (f"| {name} | {s['frames']} | {100 * s['found']:.1f}% | {_figure(s['mpjpe_mm'], '.1f')} | "
            f"{_figure(s['pa_mpjpe_mm'], '.1f')} | {_figure(s['pck'], '.1%')} | {_figure(s['accel_mm'], '.1f')} | "
            f"{_figure(s['accel_2d_px'], '.1f')} | {_figure(s['root_mm'], '.0f')} | {_figure(s['root_accel_mm'], '.1f')} |")


HEADER = ("| clip | frames | found | MPJPE mm | PA-MPJPE mm | PCK@0.2 | accel. error mm/frame² "
          "| 2D accel. error px/frame² | root error mm | root accel. error mm/frame² |\n"
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
COMPARED = (("mpjpe_mm", "mm", 1), ("pa_mpjpe_mm", "mm", 1), ("pck", "points", 100), ("accel_mm", "mm/frame²", 1),
            ("accel_2d_px", "px/frame²", 1), ("root_mm", "mm", 1), ("root_accel_mm", "mm/frame²", 1), ("found", "points", 100))


def main(argv: list[str] | None = None) -> int:
    ap = OneLineParser(prog=PROG, description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=Path, required=True, help="folder of python -m train.synth.clip's clips")
    ap.add_argument("--model", type=Path, default=None, help="model file (default: the built-in model)")
    ap.add_argument("--filter", nargs="+", choices=FILTERS, default=["auto"],
                    help="temporal filters to compare (default auto: the pipeline's default for files)")
    ap.add_argument("--config", type=Path, default=None, help="a pipeline config laid over configs/pipeline.yaml")
    ap.add_argument("--without-focal", action="store_true",
                    help="do not give the clips' focal length and principal point (the pipeline then assumes its hfov_deg and the image centre)")
    ap.add_argument("--live", action="store_true",
                    help="play each clip in real time through `posecast run`, as a camera would feed it "
                         "(live filtering; stale frames dropped and counted)")
    ap.add_argument("--json", type=Path, default=None, metavar="OUT.json", help="also write the scores here")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    ap.add_argument("--against", type=Path, default=None, metavar="JSON",
                    help="another run's --json over the same clips: print the differences, clip by clip paired, "
                         "with 95%% intervals from resampling the clips")
    args = ap.parse_args(argv)
    theirs = None
    if args.against is not None:
        try:
            theirs = json.loads(args.against.read_text())
        except (OSError, ValueError) as exc:
            print(f"{PROG}: error: --against {args.against}: {exc}", file=sys.stderr)
            return 2
        blocks = [f for f in args.filter if isinstance(theirs, dict) and isinstance(theirs.get(f), dict)
                  and isinstance(theirs[f].get("clips"), dict)]
        if not blocks:
            print(f"{PROG}: error: --against {args.against} is not a --json report of this command with "
                  f"the filter(s) asked for ({', '.join(args.filter)}); run it with --json first", file=sys.stderr)
            return 2
    for path, what in ((args.model, "model"), (args.config, "config")):
        if path is not None and not path.is_file():
            print(f"{PROG}: error: {what} {path} not found", file=sys.stderr)
            return 2
    if args.json is not None:
        reason = check_report_output(args.json, "--json", ".json", {"the --model file": args.model, "the --config file": args.config})
        if reason is not None:
            print(f"{PROG}: error: {reason}", file=sys.stderr)
            return 2
    try:
        clips = load_clips(args.clips)
    except (FileNotFoundError, ValueError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    from tqdm import tqdm

    motions = {video.stem: str(labels["motion"]) for video, labels in clips}
    report: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp, tqdm(total=len(clips) * len(args.filter), unit="clip",
                                                    disable=args.no_progress) as bar:
        for filter_name in args.filter:
            per_clip: dict[str, ClipScore] = {}
            for video, labels in clips:
                bar.set_postfix_str(f"{filter_name} {video.name}")
                try:
                    per_clip[video.stem] = run_clip(video, labels, Path(tmp) / "t.npz", args.model, filter_name,
                                                    not args.without_focal, args.config, args.live)
                except ClipMismatch as exc:
                    raise InputError(f"{video.name}: {exc}; its video and its labels do not belong together "
                                     f"(render the clip again)") from None
                except (RuntimeError, ValueError) as exc:
                    print(f"{PROG}: error: {video.name}: {exc}", file=sys.stderr)
                    return 1
                bar.update(1)
            by_source: dict[str, ClipScore] = {}
            for name, score in per_clip.items():
                source = motions[name].split("/")[0]
                by_source[source] = by_source.get(source, EMPTY) + score
            everything = sum(per_clip.values(), EMPTY)
            report[filter_name] = {
                "clips": {k: {"motion": motions[k], **v.summary()} for k, v in per_clip.items()},
                "sources": {k: v.summary() for k, v in by_source.items()},
                "all": everything.summary(),
                "conf_bins": conf_table(everything.conf_bins)}
    mismatch = None if theirs is None else _unpaired(report, theirs, args.against)
    kept = mismatch is not None and args.json is not None and input_overwritten(args.json, {"the --against file": args.against})
    unwritten = None
    if args.json is not None and not kept:
        # Before the tables: a reader that stops reading them (`| head`) loses no scores. A
        # report that cannot be compared with --against does not replace it.
        try:
            with replaced_when_done(args.json) as tmp_json:
                tmp_json.write_text(json.dumps(report, indent=1))
        except OSError as exc:
            unwritten = f"cannot write --json {args.json}: {exc.strerror or exc} (the scores are printed above)"
    for filter_name, block in report.items():
        print(f"\nfilter: {filter_name}\n{HEADER}")
        for name, s in block["clips"].items():
            print(format_row(f"{name} ({s['motion']})", s))
        for name, s in block["sources"].items():
            print(format_row(f"all {name}", s))
        print(format_row("**all**", block["all"]))
        print(interval_row(list(block["clips"].values())))
        if args.live:
            print(f"\nframes never delivered (stale, dropped to stay live): {100 * block['all']['dropped']:.1f}%")
        print(f"\nconf over all clips' joints, by tenths (ECE {block['all']['conf_ece']:.3f}):\n"
              "| conf | joints | mean conf | within PCK@0.2 |\n|---|---:|---:|---:|")
        for b in block["conf_bins"]:
            print(f"| {b['low']:.1f}-{b['high']:.1f} | {b['joints']} | {b['mean_conf']:.3f} | {b['hit_rate']:.3f} |")
    if unwritten is not None:
        print(f"{PROG}: error: {unwritten}", file=sys.stderr)
        return 1
    for filter_name, block in report.items():
        if theirs is None:
            break
        other = theirs.get(filter_name)
        if other is None:
            print(f"\n--against {args.against.name} has no '{filter_name}' block", file=sys.stderr)
            continue
        if mismatch is not None:
            what = (f"; --json {args.json} was left as it was (it is the --against file)" if kept
                    else f"; this run's scores were written to {args.json}" if args.json is not None else "")
            print(f"{PROG}: error: {mismatch}{what}", file=sys.stderr)
            return 2
        print(f"\nfilter {filter_name}, this run minus {args.against.name} (95% interval over clips):")
        for key, unit, scale in COMPARED:
            if not all(key in c for c in other["clips"].values()):
                print(f"  {key}: not in {args.against.name} (scored before it was measured)")
                continue
            diff, low, high = (scale * v for v in paired_difference(block["clips"], other["clips"], key))
            print(f"  {key}: {diff:+.1f} {unit} ({low:+.1f} to {high:+.1f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_command(PROG, main, "no report was written (one is written whole, when every clip is scored)"))
