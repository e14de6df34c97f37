"""Posecast against MediaPipe Pose on the same photos and clips (docs/results.md, "Against
MediaPipe Pose"). Driven by `scripts/compare_mediapipe.sh`, which runs MediaPipe in its own
virtual environment (`scripts/mediapipe_poses.py`); this side runs in Posecast's.

    python scripts/compare_mediapipe.py prepare OUT [--real2d DIR]
    python scripts/compare_mediapipe.py track-clips OUT --clips DIR ...
    python scripts/compare_mediapipe.py score OUT --clips DIR ... [--fit DIR] [--evaluate-json SET=J ...]

- **Real photos, 2D.** The held-out split of `real2d_fashion` (`train.real2d.split_real`, as
  `train.evaluate` holds it out) in two ways: the square crop that `train.evaluate` gives the
  network (1.35 times the labels' extent, `train.datasets.real_crop_transform`), and the whole
  photo, where each system finds the person itself (Posecast: `posecast track` on the folder).
  PCK@0.2 of the 13 labelled joints (`train.evaluate.metrics_2d`); MediaPipe's pelvis is the
  midpoint of its hips, as the labels' is. A photo where a system found nobody counts every joint
  as missed.
- **Rendered clips, 3D and 2D.** Each clip as a file: `posecast track` at the defaults with the
  clip's focal length (`train.video_eval.track_clip`), MediaPipe in its tracking mode. MediaPipe's
  33 landmarks do not define Human3.6M's joints (its hips, for one, sit elsewhere), so each of
  the 17 joints is fitted as an affine combination of its own and its neighbours' landmarks
  (`JOINT_LANDMARKS`; weights summing to one, as SMPL's joint regressor is), on the clips of
  `--fit` (whole people in view) or else the first `--clips` folder (the tuning set), separately
  for its world landmarks (3D, metres about its hips) and its image landmarks (2D). The other sets
  are scored with those weights by `train.video_eval.score_track`, as Posecast's tracks are, over the
  frames where both found a person. The fit can only help MediaPipe, and it also sets the scale
  of its skeleton from the ground truth; PA-MPJPE, which leaves scale out, is the fairer 3D figure.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from engines.skeleton import H36M17  # noqa: E402

# MediaPipe Pose landmark -> H36M17 joint, where both name the same joint (the labels' pelvis is the
# hips' midpoint, as below).
MEDIAPIPE_TO_H36M = {
    "l_shoulder": 11, "r_shoulder": 12, "l_elbow": 13, "r_elbow": 14, "l_wrist": 15, "r_wrist": 16,
    "l_hip": 23, "r_hip": 24, "l_knee": 25, "r_knee": 26, "l_ankle": 27, "r_ankle": 28,
}
MEDIAPIPE_HIPS = (23, 24)
# The landmarks each joint is fitted from: its own and its neighbours' (MediaPipe's numbering: 0
# nose, 1-6 eyes, 7-8 ears, 9-10 mouth, 11-16 shoulders, elbows, wrists, 17-22 hands, 23-28 hips,
# knees, ankles, 29-32 heels and toes; even: right, odd: left from 11 on). Fitted from all 33, the
# weights learn the tuning clips' pose correlations and move the wrists and ankles (on the report
# clips PCK@0.2 of the left wrist fell from 0.91 direct to 0.43).
JOINT_LANDMARKS = {
    "pelvis": (23, 24, 11, 12), "r_hip": (24, 23, 26, 12), "r_knee": (24, 26, 28), "r_ankle": (26, 28, 30, 32),
    "l_hip": (23, 24, 25, 11), "l_knee": (23, 25, 27), "l_ankle": (25, 27, 29, 31),
    "spine": (11, 12, 23, 24), "thorax": (11, 12, 23, 24, 0), "neck_nose": (0, 9, 10, 7, 8, 11, 12),
    "head_top": (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12),
    "l_shoulder": (11, 12, 23), "l_elbow": (11, 13, 15), "l_wrist": (13, 15, 17, 19, 21),
    "r_shoulder": (12, 11, 24), "r_elbow": (12, 14, 16), "r_wrist": (14, 16, 18, 20, 22),
}
MEDIAPIPE_LANDMARKS = 33


def direct_joints(landmarks: np.ndarray) -> np.ndarray:
    """(..., 33, D) MediaPipe landmarks -> (..., 17, D) H36M17 joints: the 12 limb joints and the
    pelvis as the hips' midpoint; NaN for spine, thorax, neck_nose and head_top."""
    out = np.full((*landmarks.shape[:-2], H36M17.num_joints, landmarks.shape[-1]), np.nan)
    for name, k in MEDIAPIPE_TO_H36M.items():
        out[..., H36M17.index(name), :] = landmarks[..., k, :]
    out[..., H36M17.index("pelvis"), :] = landmarks[..., list(MEDIAPIPE_HIPS), :].mean(axis=-2)
    return out


def joint_support() -> list[tuple[int, ...]]:
    return [JOINT_LANDMARKS[name] for name in H36M17.joint_names]


def fit_affine_regressor(source: np.ndarray, target: np.ndarray, ridge: float = 1e-3,
                         support: list[tuple[int, ...]] | None = None) -> np.ndarray:
    """(J, K) weights, each row summing to one, that best give `target` (N, J, D) from `source`
    (N, K, D) as target[:, j] = sum_k w[j, k] source[:, k], over all N and D at once; with
    `support`, row j is zero outside the landmarks support[j].

    Weights summing to one commute with a shift and a scale of a sample, so each sample is first
    centred on its landmarks' mean and divided by their RMS spread: pixels and metres, near and far
    people then weigh alike, and the small ridge (towards zero, for landmarks that move together,
    such as the face's) acts on the same scale everywhere. Each row is the least-squares solution
    under its sum-to-one constraint (Lagrange)."""
    centre = source.mean(axis=1, keepdims=True)
    spread = np.sqrt(((source - centre) ** 2).sum(axis=-1).mean(axis=1, keepdims=True))[..., None]
    spread = np.maximum(spread, 1e-9)
    source, target = (source - centre) / spread, (target - centre) / spread
    n, k, d = source.shape
    a = source.transpose(0, 2, 1).reshape(n * d, k)            # rows: (sample, coordinate)
    gram = a.T @ a / (n * d) + ridge * np.eye(k)
    weights = np.zeros((target.shape[1], k))
    for j in range(target.shape[1]):
        use = np.asarray(support[j] if support is not None else range(k))
        m = len(use)
        kkt = np.block([[2 * gram[np.ix_(use, use)], np.ones((m, 1))], [np.ones((1, m)), np.zeros((1, 1))]])
        b = target[:, j, :].reshape(n * d)
        rhs = np.concatenate([2 * a[:, use].T @ b / (n * d), [1.0]])
        weights[j, use] = np.linalg.solve(kkt, rhs)[:m]
    return weights


def apply_regressor(weights: np.ndarray, source: np.ndarray) -> np.ndarray:
    return np.einsum("jk,nkd->njd", weights, source)


# --- real photos --------------------------------------------------------------------------

PHOTO_SETS = ("held_out", "backs")


def photo_sets(real2d: Path) -> dict[str, list]:
    """held_out: train.evaluate's validation split of the photos; backs: the photos of backs that
    train/real_back_views.txt lists, from both splits (as `train.evaluate --real-files`)."""
    from train.evaluate import listed_records
    from train.real2d import load_real2d, split_real

    records = load_real2d(real2d)
    _, val = split_real(records, val_fraction=0.1, seed=0)
    return {"held_out": val, "backs": listed_records(records, REPO / "train" / "real_back_views.txt")}


def crop_square(record) -> tuple[float, float, float]:
    """(cx, cy, side) of train.evaluate's crop of a real photo (`real_crop_transform` without
    augmentation: an upright square, crop = a * image + t)."""
    from train.datasets import real_crop_transform

    box = record.box_points if len(record.box_points) >= 2 else record.joints_2d[record.mask]
    a, t, _, _ = real_crop_transform(box, 1, None, augment=False)      # a 1-pixel crop: a = 1 / side
    side = 1.0 / a[0, 0]
    cx, cy = (0.5 - t) * side
    return float(cx), float(cy), float(side)


def prepare(out: Path, real2d: Path) -> None:
    """Per photo set: `{set}_crop.txt` and `{set}_full.txt` for mediapipe_poses.py, and a folder
    `{set}/` of links to its photos for `posecast track`."""
    for name, records in photo_sets(real2d).items():
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        crop_lines, full_lines = [], []
        for rec in records:
            cx, cy, side = crop_square(rec)
            crop_lines.append(f"{rec.path} {cx:.3f} {cy:.3f} {side:.3f}")
            full_lines.append(str(rec.path))
            link = folder / rec.path.name
            if not link.exists():
                link.symlink_to(rec.path.resolve())
        (out / f"{name}_crop.txt").write_text("\n".join(crop_lines) + "\n")
        (out / f"{name}_full.txt").write_text("\n".join(full_lines) + "\n")
        print(f"compare_mediapipe: {len(records)} photos ({name}) listed in {out}", file=sys.stderr)


def posecast_photo_joints(track: Path, names: list[str]) -> np.ndarray:
    """(N, 17, 2) from `posecast track`'s JSON lines on a photo folder, in `names`' order; NaN
    where it found nobody."""
    from streamer.tracks import read_track

    by_name: dict[str, np.ndarray] = {}
    for msg in read_track(track)[1]:
        people = msg["people"]
        by_name[msg["image"]] = (np.asarray(people[0]["joints_2d"], np.float64) if people
                                 else np.full((H36M17.num_joints, 2), np.nan))
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ValueError(f"{track} has no record of {missing[0]} (and {len(missing) - 1} more)")
    return np.stack([by_name[n] for n in names])


def photo_pck(points: np.ndarray, records) -> dict[str, float]:
    """PCK@0.2 of the labelled joints, as is and with left and right exchanged, and the share of
    photos with a person found."""
    from train.evaluate import metrics_2d

    cfg = SimpleNamespace(skeleton=H36M17)      # all that metrics_2d reads of a model config
    gt = np.stack([r.joints_2d for r in records]).astype(np.float64)
    mask = np.stack([r.mask for r in records])
    found = np.isfinite(points[:, mask.any(axis=0)]).all(axis=(1, 2))
    # Nobody found: every joint missed (a point far outside the photo).
    scored = np.where(np.isfinite(points), points, -1e6)
    exchanged = scored[:, list(H36M17.flip_permutation)]
    return {"pck": metrics_2d(scored, gt, mask, cfg)["pck"], "pck_exchanged": metrics_2d(exchanged, gt, mask, cfg)["pck"],
            "found": float(found.mean()), "photos": len(records)}


def score_photos(out: Path, real2d: Path, evaluate_json: dict[str, Path]) -> dict:
    rows: dict[str, dict] = {}
    for name, records in photo_sets(real2d).items():
        row: dict[str, dict] = {}
        for protocol in ("crop", "full"):
            with np.load(out / f"mp_{name}_{protocol}.npz") as mp:
                row[f"mediapipe_{protocol}"] = {**photo_pck(direct_joints(mp["landmarks_2d"]), records),
                                                "ms_median": float(np.median(mp["seconds"]) * 1000)}
        names = [r.path.name for r in records]
        row["posecast_full"] = photo_pck(posecast_photo_joints(out / f"posecast_{name}.jsonl", names), records)
        if name in evaluate_json:
            res = json.loads(evaluate_json[name].read_text())["real"]
            row["posecast_crop"] = {"pck": res["2d"]["pck"], "pck_exchanged": res["pck_exchanged"], "found": 1.0,
                                    "photos": res["samples"]}
        rows[name] = row
    return rows


# --- rendered clips -----------------------------------------------------------------------

@dataclass
class ClipPair:
    set_name: str
    clip: str
    labels: dict
    posecast: tuple          # found, joints_3d, joints_2d, root_3d, conf
    mediapipe: dict          # the mediapipe_poses.py arrays


def load_pairs(out: Path, clip_dirs: list[Path]) -> list[ClipPair]:
    from train.video_eval import load_clips, read_npz_track

    pairs = []
    for folder in clip_dirs:
        for video, labels in load_clips(folder):
            with np.load(out / "mp_clips" / cache_name(folder) / f"{video.stem}.npz") as mp:
                arrays = {k: mp[k] for k in mp.files}
            posecast = read_npz_track(out / "posecast_clips" / cache_name(folder) / f"{video.stem}.npz")
            pairs.append(ClipPair(folder.name, video.stem, labels, posecast, arrays))
    return pairs


def cache_name(folder: Path) -> str:
    """The folder of OUT that keeps one clip folder's results: its name and a hash of its whole
    path, as compare_mediapipe.sh names it (another folder of the same name is other clips)."""
    import hashlib

    return f"{folder.name}-{hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:8]}"


def track_clips(out: Path, clip_dirs: list[Path]) -> None:
    from train.video_eval import load_clips, track_clip

    for folder in clip_dirs:
        dest = out / "posecast_clips" / cache_name(folder)
        dest.mkdir(parents=True, exist_ok=True)
        for video, labels in load_clips(folder):
            track = dest / f"{video.stem}.npz"
            if not track.exists():
                track_clip(video, labels, track, None, "auto")
        print(f"compare_mediapipe: tracked {folder.name}", file=sys.stderr)


def fit_regressors(pairs: list[ClipPair]) -> tuple[np.ndarray, np.ndarray]:
    pelvis = H36M17.index("pelvis")
    src3, dst3, src2, dst2 = [], [], [], []
    for p in pairs:
        found = p.mediapipe["found"].astype(bool)
        gt3 = np.asarray(p.labels["joints_3d"], np.float64)
        src3.append(p.mediapipe["world"][found])
        dst3.append((gt3 - gt3[:, pelvis:pelvis + 1])[found])
        src2.append(p.mediapipe["landmarks_2d"][found])
        dst2.append(np.asarray(p.labels["joints_2d"], np.float64)[found])
    support = joint_support()
    return (fit_affine_regressor(np.concatenate(src3), np.concatenate(dst3), support=support),
            fit_affine_regressor(np.concatenate(src2), np.concatenate(dst2), support=support))


def score_clip_pairs(pairs: list[ClipPair], w3: np.ndarray, w2: np.ndarray) -> dict[str, dict]:
    from train.video_eval import score_track

    totals: dict[str, object] = {}
    frames = 0
    mp_found_total = 0
    ms = []
    for p in pairs:
        mp_found = p.mediapipe["found"].astype(bool)
        pc_found, pc3, pc2, _, _ = p.posecast
        both = mp_found & pc_found.astype(bool)
        mp3 = apply_regressor(w3, np.nan_to_num(p.mediapipe["world"]))
        mp2 = apply_regressor(w2, np.nan_to_num(p.mediapipe["landmarks_2d"]))
        scores = {"mediapipe": score_track(both, mp3, mp2, p.labels),
                  "posecast": score_track(both, pc3, pc2, p.labels),
                  "posecast_all": score_track(pc_found, pc3, pc2, p.labels),
                  "mediapipe_all": score_track(mp_found, mp3, mp2, p.labels)}
        for k, s in scores.items():
            totals[k] = s if k not in totals else totals[k] + s
        frames += len(mp_found)
        mp_found_total += int(mp_found.sum())
        ms.append(p.mediapipe["seconds"])
    result = {k: s.summary() for k, s in totals.items()}
    result["frames"] = frames
    result["mediapipe_ms_median"] = float(np.median(np.concatenate(ms)) * 1000)
    return result


def score(out: Path, clip_dirs: list[Path], real2d: Path, evaluate_json: dict[str, Path],
          fit_dir: Path | None = None) -> dict:
    """The photos' scores, where their MediaPipe runs are in `out`; the clips' with MediaPipe's joints
    fitted on `fit_dir`'s clips, or else on the first of `clip_dirs`, which is then not scored."""
    report: dict[str, object] = {}
    if (out / "mp_held_out_crop.npz").exists():
        report["photos"] = score_photos(out, real2d, evaluate_json)
    if clip_dirs:
        scored = clip_dirs if fit_dir is not None else clip_dirs[1:]
        fit_dir = fit_dir or clip_dirs[0]
        # Fitted where every joint is in view: a webcam view's legs below the frame are MediaPipe's
        # guesses, and as targets they would teach the fit those guesses.
        w3, w2 = fit_regressors(load_pairs(out, [fit_dir]))
        pairs = load_pairs(out, scored)
        report["clips"] = {"fitted_on": fit_dir.name}
        for folder in scored:
            report["clips"][folder.name] = score_clip_pairs([p for p in pairs if p.set_name == folder.name], w3, w2)
        if len(scored) > 1:
            report["clips"]["pooled"] = score_clip_pairs(pairs, w3, w2)
    return report


def markdown(report: dict) -> str:
    """The report as the tables of docs/results.md."""
    lines: list[str] = []
    photos = report.get("photos", {})
    if photos:
        lines += ["| photos | system, input | PCK@0.2 | with left and right exchanged | found | ms per image (median) |",
                  "|---|---|---:|---:|---:|---:|"]
        for name, row in photos.items():
            for system, r in row.items():
                ms = f"{r['ms_median']:.1f}" if "ms_median" in r else "-"
                lines.append(f"| {name} ({r['photos']}) | {system.replace('_', ', ')} | {r['pck'] * 100:.1f}% | "
                             f"{r['pck_exchanged'] * 100:.1f}% | {r['found'] * 100:.0f}% | {ms} |")
    clips = report.get("clips", {})
    if clips:
        lines += ["", f"Clips (MediaPipe's joints fitted on {clips['fitted_on']}); frames where both found a person:", "",
                  "| set | frames | both found | system | MPJPE mm | PA-MPJPE mm | 2D PCK@0.2 | accel. error mm/frame² | "
                  "found alone |", "|---|---:|---:|---|---:|---:|---:|---:|---:|"]
        for name, r in clips.items():
            if name == "fitted_on":
                continue
            for system in ("posecast", "mediapipe"):
                s, alone = r[system], r[f"{system}_all"]
                lines.append(f"| {name} | {r['frames']} | {s['found'] * 100:.1f}% | {system} | {s['mpjpe_mm']:.1f} | "
                             f"{s['pa_mpjpe_mm']:.1f} | {s['pck'] * 100:.1f}% | {s['accel_mm']:.1f} | "
                             f"{alone['found'] * 100:.1f}% |")
            lines.append(f"| {name} | | | MediaPipe ms per frame (median) | {r['mediapipe_ms_median']:.1f} | | | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python scripts/compare_mediapipe.py", description=__doc__.split("\n\n")[0])
    p.add_argument("step", choices=("prepare", "track-clips", "score", "cache-name"),
                   help="cache-name: print the name a clip folder's results are kept under (for the .sh)")
    p.add_argument("out", type=Path, help="the comparison's working folder (cache-name: a clip folder)")
    p.add_argument("--real2d", type=Path, default=None, help="real2d_fashion (default: the datasets folder)")
    p.add_argument("--clips", type=Path, nargs="*", default=[],
                   help="clip folders; without --fit the first fits MediaPipe's joints and is not scored")
    p.add_argument("--fit", type=Path, default=None,
                   help="the clip folder that fits MediaPipe's joints (whole people in view: not webcam views)")
    p.add_argument("--evaluate-json", nargs="*", default=[], metavar="SET=JSON",
                   help="train.evaluate's JSON of the shipped model on a photo set (held_out=J, backs=J)")
    p.add_argument("--json", type=Path, default=None, help="write the scores here")
    args = p.parse_args(argv)
    if args.step == "cache-name":
        print(cache_name(args.out))
        return 0
    from train.config import default_data_root

    real2d = args.real2d or default_data_root() / "real2d_fashion"
    given = dict(item.split("=", 1) for item in args.evaluate_json if "=" in item)
    if len(given) != len(args.evaluate_json) or not set(given) <= set(PHOTO_SETS):
        p.error(f"--evaluate-json takes SET=JSON, SET one of {', '.join(PHOTO_SETS)} (got {' '.join(args.evaluate_json)})")
    from engines.errors import InputError

    try:
        args.out.mkdir(parents=True, exist_ok=True)
        if args.step == "prepare":
            prepare(args.out, real2d)
        elif args.step == "track-clips":
            track_clips(args.out, args.clips)
        else:
            report = score(args.out, args.clips, real2d, {k: Path(v) for k, v in given.items()}, args.fit)
            if args.json is not None:
                args.json.write_text(json.dumps(report, indent=1) + "\n")
            print(markdown(report))
    except FileNotFoundError as exc:
        print(f"compare_mediapipe: {exc.filename or exc} is missing (bash scripts/compare_mediapipe.sh makes "
              f"MediaPipe's and Posecast's results before it scores them)", file=sys.stderr)
        return 2
    except (InputError, ValueError, RuntimeError) as exc:
        print(f"compare_mediapipe: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
