"""How well `.bvh` tracks keep the poses they are made from (the figures in docs/bvh.md).

    python scripts/bvh_check.py --mocap                      # H36M training poses and CMU walks
    python scripts/bvh_check.py --tracks a.jsonl b.jsonl     # tracks posecast wrote
    python scripts/bvh_check.py --clips ../data/clips_report --work DIR   # rendered clips, 3D truth

Each pose sequence is written as a BVH (`streamer.bvh.bvh_text`), read back with the training
code's own BVH reader and forward kinematics (`train.motion`), and compared with what it was made
from. Per set:

- joint error: the distance of each pelvis-relative joint from where the sequence had it (mm).
  A BVH skeleton is rigid; where the poses' bone lengths vary, this is what the median lengths
  cost;
- half-turn steps: rows where some rotation channel moves more than 90 degrees from the row before
  (a twist an animation tool shows as a spin);
- wrong-way hinges: rows where a knee or an elbow bends backwards by more than 15 degrees;
- the conversion's speed (frames a second, this machine).

With --clips each rendered clip (`train.synth.clip`) is tracked by `posecast track` (its focal
length given) into an .npz and a .bvh, and both are scored against the clip's 3D labels (MPJPE,
mm, over the frames with a person).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from engines.skeleton import H36M17  # noqa: E402
from streamer.bvh import CAMERA_TO_BVH, bvh_text, level_rotation  # noqa: E402
from streamer.bvh_solve import best_rotation  # noqa: E402
from train.motion import bvh_forward_kinematics, load_cmu, load_h36m, parse_bvh  # noqa: E402

Z_UP_TO_BVH = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]]) * 100.0   # mocap world -> BVH cm
HALF_TURN_DEG = 90.0
WRONG_WAY_DEG = 15.0
# The side each hinge's last channel turns to when it bends as a body does: a knee's shin back
# (+X), an elbow's forearm forward (-Y on the left, +Y on the right, the T-pose's arms lying on X).
HINGE_SIGNS = {"r_knee": 1.0, "l_knee": 1.0, "l_elbow": -1.0, "r_elbow": 1.0}


def bvh_joints(text: str, relative: bool = True) -> tuple[np.ndarray, np.ndarray, object]:
    """(F, 17, 3) the H36M17 joints a BVH puts where, pelvis-relative unless not `relative` (its
    units and axes), its motion rows, and its skeleton; end sites stand for the leaves."""
    clip = parse_bvh(text)
    fk = bvh_forward_kinematics(clip.skeleton, clip.motion)
    names = clip.skeleton.names
    idx = [names.index(n) if n in names else names.index(H36M17.joint_names[H36M17.parents[j]] + "_End")
           for j, n in enumerate(H36M17.joint_names)]
    got = fk[:, idx]
    return (got - got[:, :1] if relative else got), clip.motion, clip.skeleton


def levelling(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """(3, 3) the one rotation R with got ~ R want over all joints and frames: the BVH's levelling."""
    return best_rotation(want.reshape(-1, 3), got.reshape(1, -1, 3))[0]


def ground_slope_deg(world: np.ndarray) -> float | None:
    """The slope, in degrees, of the line the lower ankle follows along the way the person goes
    (world (F, 17, 3), BVH axes); None where they go less than a metre."""
    lower = world[np.arange(len(world)), np.where(world[:, 3, 1] < world[:, 6, 1], 3, 6)]
    flat = lower[:, [0, 2]] - lower[:, [0, 2]].mean(axis=0)
    if len(flat) < 3 or np.ptp(flat, axis=0).max() < 100.0:
        return None
    way = np.linalg.svd(flat, full_matrices=False)[2][0]
    return float(np.degrees(np.arctan(abs(np.polyfit(flat @ way, lower[:, 1], 1)[0]))))


def check_sequence(joints: np.ndarray, root: np.ndarray | None = None) -> dict[str, object]:
    """One sequence, (F, 17, 3) in BVH axes and centimetres, with the pelvis's places (F, 3) where
    known: the BVH's errors (once its levelling is undone) and steps, the turn that levelled it,
    and the slope of the ground under the feet with and without levelling."""
    rel = joints - joints[:, :1]
    place = np.zeros((len(joints), 3)) if root is None else root
    t = time.perf_counter()
    text = bvh_text(H36M17, rel, place, 1 / 30)
    seconds = time.perf_counter() - t
    got, motion, skeleton = bvh_joints(text)
    turn = levelling(got, rel)
    slopes = {}
    if root is not None:
        for key, level in (("levelled", True), ("camera", False)):
            world, _, _ = bvh_joints(bvh_text(H36M17, rel, place, 1 / 30, level=level), relative=False)
            slopes[key] = ground_slope_deg(world)
    got = got @ turn                                          # the levelling undone
    steps = np.abs(np.diff(motion[:, 3:], axis=0)) > HALF_TURN_DEG
    wrong = np.zeros(len(motion), bool)
    for joint, sign in HINGE_SIGNS.items():
        angle = motion[:, skeleton.channel_start[skeleton.index(joint)] + 2]
        wrong |= sign * ((angle + 180.0) % 360.0 - 180.0) < -WRONG_WAY_DEG
    return {"errors_mm": np.linalg.norm(got - rel, axis=-1).ravel() * 10.0, "half_turns": int(steps.any(axis=1).sum()),
            "wrong_way": int(wrong.sum()), "rows": len(motion), "seconds": seconds,
            "levelled_deg": float(np.degrees(np.arccos(np.clip((np.trace(turn) - 1) / 2, -1, 1)))),
            "slopes": slopes}


def summarize(label: str, results: list[dict[str, object]]) -> dict[str, object]:
    errors = np.concatenate([r["errors_mm"] for r in results])
    rows = sum(r["rows"] for r in results)
    levelled = [r["levelled_deg"] for r in results if r["levelled_deg"] > 0.1]     # not the fit's rounding noise
    slope = {key: [r["slopes"][key] for r in results if r["slopes"].get(key) is not None]
             for key in ("camera", "levelled")}
    return {"set": label, "sequences": len(results), "frames": rows,
            "levelled": {"sequences": len(levelled),
                         "median_turn_deg": round(float(np.median(levelled)), 1) if levelled else None},
            "ground_slope_deg": {key: {"walks": len(v), "median": round(float(np.median(v)), 1),
                                       "max": round(float(np.max(v)), 1)} if v else None
                                 for key, v in slope.items()},
            "joint_error_mm": {"mean": round(float(errors.mean()), 1),
                               "p95": round(float(np.percentile(errors, 95)), 1),
                               "max": round(float(errors.max()), 1)},
            "half_turn_rows": sum(r["half_turns"] for r in results),
            "wrong_way_rows": sum(r["wrong_way"] for r in results),
            "frames_per_s": round(rows / sum(r["seconds"] for r in results))}


def tilt_deg(turn: np.ndarray | None, true_up: np.ndarray) -> tuple[float, float]:
    """How far the true up (BVH axes, unit) is from +Y in the camera's axes, and after `turn`."""
    y = np.array([0.0, 1.0, 0.0])
    before = float(np.degrees(np.arccos(np.clip(true_up @ y, -1, 1))))
    after = before if turn is None else float(np.degrees(np.arccos(np.clip((turn @ true_up) @ y, -1, 1))))
    return before, after


def tilt_summary(label: str, pairs: list[tuple[float, float]], levelled: int) -> dict[str, object]:
    b, a = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    return {"set": label, "views": len(pairs), "levelled": levelled,
            "camera_tilt_deg": {"median": round(float(np.median(b)), 1), "p95": round(float(np.percentile(b, 95)), 1),
                                "max": round(float(b.max()), 1)},
            "after_levelling_deg": {"median": round(float(np.median(a)), 1), "p95": round(float(np.percentile(a, 95)), 1),
                                    "max": round(float(a.max()), 1)}}


def h36m_camera_tilts(data: Path | None = None) -> dict[str, object]:
    """Every H36M training sequence seen through each of its subject's 4 calibrated cameras (all
    pitched): the true up against +Y in the camera's axes, and after `level_rotation`."""
    bank, cameras = load_h36m(data)
    to_bvh = np.diag([1.0, -1.0, -1.0])
    pairs, levelled = [], 0
    for seq in bank.sequences():
        world = bank.joints[bank.sequence == seq].astype(np.float64)
        for cam in (c for c in cameras if c.subject == seq.split("/")[1]):
            joints = cam.world_to_camera(world) @ to_bvh.T * 100.0
            turn = level_rotation(H36M17, joints - joints[:, :1])
            levelled += turn is not None
            pairs.append(tilt_deg(turn, to_bvh @ cam.R @ np.array([0.0, 0.0, 1.0])))
    return tilt_summary("H36M sequences through their 4 cameras", pairs, levelled)


def mocap_sets(data: Path | None = None) -> list[dict[str, object]]:
    h36m, _ = load_h36m(data)
    out = []
    for label, bank in (("H36M training poses (10 Hz)", h36m), ("CMU walking (30 Hz)", load_cmu(data, hz=30.0))):
        seqs = [bank.joints[bank.sequence == s].astype(np.float64) @ Z_UP_TO_BVH.T for s in bank.sequences()]
        out.append(summarize(label, [check_sequence(j, j[:, 0]) for j in seqs]))
    return out


def track_set(paths: list[Path]) -> dict[str, object]:
    from streamer.tracks import read_track

    results = []
    for path in paths:
        _, poses = read_track(path)
        people = [p["people"][0] for p in poses if p["people"]]
        if people:
            root = np.array([p.get("root_3d") or [np.nan] * 3 for p in people], np.float64) @ CAMERA_TO_BVH.T
            results.append(check_sequence(np.asarray([p["joints_3d"] for p in people], np.float64) @ CAMERA_TO_BVH.T,
                                          root))
    return summarize(f"{len(results)} tracks", results)


def clip_set(clips: Path, work: Path) -> dict[str, object]:
    """Every rendered clip tracked into .npz and .bvh, both scored against the 3D labels."""
    work.mkdir(parents=True, exist_ok=True)
    sums = {"track": 0.0, "bvh": 0.0}
    frames = levelled = 0
    results = []
    tilts: list[tuple[float, float]] = []
    for video in sorted(clips.glob("*.mp4")):
        with np.load(video.with_suffix(".npz")) as d:
            truth, focal = d["joints_3d"].astype(np.float64), float(d["focal"])
        npz, bvh = work / f"{video.stem}.npz", work / f"{video.stem}.bvh"
        subprocess.run([sys.executable, "-m", "streamer.cli", "track", str(video), "-o", str(npz), "-o", str(bvh),
                        "--no-progress", "--focal", f"{focal:.3f}"], check=True, capture_output=True, cwd=REPO)
        with np.load(npz) as t:
            found, pred, root = t["found"], t["joints_3d"].astype(np.float64), t["root_3d"].astype(np.float64)
        got, _, _ = bvh_joints(bvh.read_text())
        truth, pred = truth - truth[:, :1], pred - pred[:, :1]
        got = got @ levelling(got[found], pred[found] @ CAMERA_TO_BVH.T)     # the levelling undone
        got = got / np.diag(CAMERA_TO_BVH)                  # back to camera axes, metres
        sums["track"] += float(np.linalg.norm(pred[found] - truth[found], axis=-1).mean(axis=1).sum())
        sums["bvh"] += float(np.linalg.norm(got[found] - truth[found], axis=-1).mean(axis=1).sum())
        frames += int(found.sum())
        results.append(check_sequence(pred[found] @ CAMERA_TO_BVH.T, root[found] @ CAMERA_TO_BVH.T))
        # The true up, from the labels' own poses (motion capture, levelled the same way).
        true_turn = level_rotation(H36M17, truth @ CAMERA_TO_BVH.T)
        if true_turn is not None:
            turn = level_rotation(H36M17, pred[found] @ CAMERA_TO_BVH.T)
            levelled += turn is not None
            tilts.append(tilt_deg(turn, true_turn.T @ np.array([0.0, 1.0, 0.0])))
    summary = summarize(f"{len(results)} rendered clips' tracks", results)
    summary["mpjpe_mm"] = {k: round(1000.0 * v / max(frames, 1), 1) for k, v in sums.items()}
    summary["tilt"] = tilt_summary("the clips' cameras (true up from the labels' poses)", tilts, levelled)
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mocap", action="store_true", help="the H36M training poses and CMU walks (shared data)")
    p.add_argument("--tracks", nargs="+", type=Path, default=[], metavar="JSONL", help="posecast .jsonl tracks")
    p.add_argument("--clips", type=Path, help="a folder of train.synth.clip clips (.mp4 with .npz labels)")
    p.add_argument("--work", type=Path, help="with --clips: where the tracks are written")
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument("--data", type=Path, help="with --mocap: the datasets folder holding h36m_poses/ and "
                   "cmu_walk_bvh/ (default: $POSECAST_DATA, else ../shared/datasets beside the repository)")
    args = p.parse_args(argv)
    if not (args.mocap or args.tracks or args.clips):
        p.error("give --mocap, --tracks and/or --clips")
    if args.clips and not args.work:
        p.error("--clips needs --work DIR for the tracks it writes")
    try:
        sets = mocap_sets(args.data) if args.mocap else []
        tilts = [h36m_camera_tilts(args.data)] if args.mocap else []
    except FileNotFoundError as exc:
        # train.motion's message names --data and POSECAST_DATA, which this script takes too.
        print(f"bvh_check.py: error: {exc}", file=sys.stderr)
        return 2
    if args.tracks:
        sets.append(track_set(args.tracks))
    if args.clips:
        sets.append(clip_set(args.clips, args.work))
    for s in sets:
        e = s["joint_error_mm"]
        line = (f"{s['set']}: {s['frames']} frames; joint error mean {e['mean']} mm (95th pct {e['p95']}, "
                f"max {e['max']}); half-turn steps in {s['half_turn_rows']} rows; a knee or elbow bent "
                f"backwards in {s['wrong_way_rows']} rows; {s['frames_per_s']} frames/s")
        lv, slope = s["levelled"], s["ground_slope_deg"]
        line += f"; levelled {lv['sequences']} of {s['sequences']} (median turn {lv['median_turn_deg']} deg)"
        if slope["camera"] is not None:
            line += (f"; ground slope along {slope['camera']['walks']} walks: camera's axes median "
                     f"{slope['camera']['median']} deg (max {slope['camera']['max']}), levelled "
                     f"{slope['levelled']['median']} (max {slope['levelled']['max']})")
        if "mpjpe_mm" in s:
            line += f"; MPJPE against the labels: track {s['mpjpe_mm']['track']} mm, BVH {s['mpjpe_mm']['bvh']} mm"
            tilts.append(s["tilt"])
        print(line)
    for t in tilts:
        c, a = t["camera_tilt_deg"], t["after_levelling_deg"]
        print(f"{t['set']}: {t['views']} views, levelled {t['levelled']}; up off by: camera's axes median {c['median']} "
              f"deg (95th pct {c['p95']}, max {c['max']}), after levelling {a['median']} (95th pct {a['p95']}, max {a['max']})")
    if args.json:
        args.json.write_text(json.dumps({"sets": sets, "tilts": tilts}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
