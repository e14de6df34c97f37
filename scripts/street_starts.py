"""The street measure of docs/results.md: one model's tracks of a clip from several starting frames.

    python scripts/street_starts.py --model M.pt --out DIR [--clip vtest.avi] [--first 25] [--every 50] [--count 14]
        [--config pipeline.yaml]

The tracker follows one person, and which one, and whether it strays onto an object, depends on
where the clip starts. One track of one clip is a single draw: two models that differ by a few
training steps can differ by more on it than their quality does. This makes `--count` copies of
the clip, starting at frames first, first + every, ... (Motion-JPEG AVI at the clip's frame rate,
in DIR), tracks each with `posecast track --model M` at the pipeline's defaults, and prints
scripts/track_stats.py's proxies for each track and summed over all of them. Re-running with the
same DIR keeps the copies it made.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import cv2

from engines.errors import PosecastError
from engines.models import resolve_model

DEFAULT_CLIP = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")   # Debian's opencv-doc


class BadClip(ValueError):
    """The clip cannot give the copies asked for: bad input (exit 2)."""


def write_copies(clip: Path, starts: list[int], out: Path) -> list[Path]:
    """`clip` from each start frame to its end, one AVI per start; reads the clip once. A copy is
    written under a `.part.avi` name and renamed when whole, so that a run stopped half-way leaves
    none that the next run would take for complete; copies already whole are kept."""
    paths = [out / f"{clip.stem}_from{s:04d}.avi" for s in starts]
    if all(p.exists() for p in paths):
        return paths
    cap = cv2.VideoCapture(str(clip))
    if not cap.isOpened():
        hint = " (install Debian's opencv-doc, or give --clip)" if clip == DEFAULT_CLIP else ""
        raise BadClip(f"cannot read video {clip}{hint}")
    fps = cap.get(cv2.CAP_PROP_FPS) or 10.0
    todo = {s: p for s, p in zip(starts, paths) if not p.exists()}
    parts = {s: p.with_name(p.stem + ".part.avi") for s, p in todo.items()}
    writers: dict[int, cv2.VideoWriter] = {}
    index, read_whole = 0, False
    try:
        ok, frame = cap.read()
        while ok:
            if index in parts and index not in writers:
                h, w = frame.shape[:2]
                writers[index] = cv2.VideoWriter(str(parts[index]), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
            for w in writers.values():
                w.write(frame)
            index += 1
            ok, frame = cap.read()
        read_whole = True
    finally:
        for w in writers.values():
            w.release()
        cap.release()
        if not read_whole:              # stopped (a Ctrl-C, an error): no half copy is left
            for part in parts.values():
                part.unlink(missing_ok=True)
    short = [s for s in todo if s not in writers]
    if short:
        for part in parts.values():
            part.unlink(missing_ok=True)
        raise BadClip(f"{clip} has {index} frames; no copy can start at frame {short[0]}")
    for s, part in parts.items():
        part.replace(todo[s])
    return paths


def sibling(name: str) -> ModuleType:
    """Another script of this folder, as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module          # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="street_starts.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, type=Path, help="a Posecast .pt or .onnx model")
    ap.add_argument("--out", required=True, type=Path, help="folder for the copies and the track files")
    ap.add_argument("--clip", type=Path, default=DEFAULT_CLIP, help=f"the clip (default {DEFAULT_CLIP})")
    ap.add_argument("--first", type=int, default=25, help="the first copy's start frame (default 25)")
    ap.add_argument("--every", type=int, default=50, help="frames between starts (default 50)")
    ap.add_argument("--count", type=int, default=14, help="number of copies (default 14)")
    ap.add_argument("--config", type=Path,
                    help="a pipeline config laid over configs/pipeline.yaml (posecast track --config)")
    args = ap.parse_args(argv)
    if args.first < 0 or args.every < 1 or args.count < 1:
        print("street_starts.py: error: --first must be >= 0, --every and --count >= 1", file=sys.stderr)
        return 2
    if args.config is not None and not args.config.is_file():
        print(f"street_starts.py: error: config file not found: {args.config}", file=sys.stderr)
        return 2
    try:
        # Before the copies of the clip (59 MB each at the start) are written: a model that
        # cannot load ends here.
        resolve_model(args.model)
    except PosecastError as exc:
        print(f"street_starts.py: error: {exc}", file=sys.stderr)
        return 2
    starts = [args.first + k * args.every for k in range(args.count)]
    if not args.clip.is_file():
        hint = " (install Debian's opencv-doc, or give --clip)" if args.clip == DEFAULT_CLIP else ""
        print(f"street_starts.py: error: no clip {args.clip}{hint}", file=sys.stderr)
        return 2
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"street_starts.py: error: cannot create --out {args.out} ({exc.strerror or exc})", file=sys.stderr)
        return 2
    try:
        copies = write_copies(args.clip, starts, args.out)
    except BadClip as exc:
        print(f"street_starts.py: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"street_starts.py: error: cannot write the copies in {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    tag = args.model.stem + (f"_{args.config.stem}" if args.config else "")
    config = ["--config", str(args.config)] if args.config else []
    tracks = []
    for copy in copies:
        track = copy.with_name(f"{copy.stem}_{tag}.jsonl")
        # The installed command's own module, as `posecast` runs it, whatever is on PATH.
        done = subprocess.run([sys.executable, "-m", "streamer.cli", "track", str(copy), "--model", str(args.model),
                               "-o", str(track), "--no-progress", *config], capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
            print(f"street_starts.py: error: posecast track {copy.name} failed: {last}", file=sys.stderr)
            return 1
        tracks.append(str(track))
    return sibling("track_stats").main(tracks + ["--total"])


if __name__ == "__main__":
    from train.command import run_command

    sys.exit(run_command("street_starts.py", main, "the copies finished are kept; run it again to go on"))
