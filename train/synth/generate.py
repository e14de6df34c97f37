"""Generate synthetic training or validation images into shards: seeded, resumable, measured.

    python -m train.synth.generate --split train --out DIR --count 30000 --bodies BANK.npz

Shard k is drawn from its own random stream (seed, k), so an interrupted run resumes at the first
incomplete shard and produces exactly what an uninterrupted run would have. The validation split
uses motions, bodies and background photos that training never sees (`train.motion.HELD_OUT`,
`split_bodies`: the bank's last `VAL_BODY_FRACTION`, `train.backgrounds.VAL_BACKGROUNDS`); both
splits also draw generated gradients as backgrounds.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np

from engines.arguments import OneLineParser
from engines.errors import PosecastError
from engines.stop_signals import describe, exit_code, stop_signals_interrupt
from train.backgrounds import load_backgrounds, split_backgrounds
from train.config import default_data_root
from train.motion import MotionBank, load_all, load_pack, split
from train.shards import ShardWriter
from train.synth.body import BodyBank
from train.synth.render import BodyRenderer
from train.synth.scene import Bystander, SceneOptions, make_sample

PROG = "python -m train.synth.generate"
VAL_BODY_FRACTION = 1 / 6
SOURCE_WEIGHTS = {"h36m": 0.55, "cmu": 0.25, "deepmimic": 0.20}


def split_bodies(count: int, split_name: str) -> np.ndarray:
    n_val = max(1, int(round(count * VAL_BODY_FRACTION)))
    return np.arange(count - n_val, count) if split_name == "val" else np.arange(count - n_val)


class MotionSampler:
    """Draws a pose: first a source by weight, then a pose uniformly within it."""

    def __init__(self, bank: MotionBank) -> None:
        self.bank = bank
        self.by_source = {s: np.flatnonzero(bank.source == s) for s in SOURCE_WEIGHTS}
        self.by_source = {s: idx for s, idx in self.by_source.items() if len(idx)}
        w = np.array([SOURCE_WEIGHTS[s] for s in self.by_source])
        self.sources = list(self.by_source)
        self.p = w / w.sum()

    def draw(self, rng: np.random.Generator) -> int:
        s = self.sources[rng.choice(len(self.sources), p=self.p)]
        idx = self.by_source[s]
        return int(idx[rng.integers(len(idx))])


def generate(out: Path, split_name: str, count: int, bodies_path: Path, data_dir: Path, seed: int,
             shard_size: int, opts: SceneOptions, motions_path: Path | None = None) -> int:
    bank = BodyBank.load(bodies_path)
    motions, cameras = load_pack(motions_path) if motions_path is not None else load_all(data_dir)
    train_m, val_m = split(motions)
    motions = val_m if split_name == "val" else train_m
    cams_by_subject: dict[str, list] = {}
    for cam in cameras:
        cams_by_subject.setdefault(cam.subject, []).append(cam)
    bodies = split_bodies(bank.num_bodies, split_name)
    backgrounds = load_backgrounds(split_backgrounds(data_dir / "backgrounds", split_name))
    sampler = MotionSampler(motions)
    meta = {"split": split_name, "seed": seed, "bodies": str(bodies_path.name), "num_bodies": bank.num_bodies,
            "scene": asdict(opts), "sources": sampler.sources}
    writer = ShardWriter(out, shard_size=shard_size, meta=meta, count=count)
    n_shards = -(-count // shard_size)
    start = writer.shard_index
    if start >= n_shards:
        # Complete, or asked for fewer than it holds: nothing is taken away, and the set stays as it is.
        print(f"{out} already holds {writer.total} images, as many as --count {count} asks or more: "
              f"nothing to render", file=sys.stderr)
    elif start:
        print(f"resuming {out}: {start} of {n_shards} shards already done", file=sys.stderr)
    renderer = BodyRenderer(bank.faces, bank.region, bank.template, opts.size)
    from tqdm import tqdm

    todo = max(0, count - start * shard_size)
    t0 = time.perf_counter()
    made = 0
    with tqdm(total=todo, desc=f"rendering {split_name}", unit="img", smoothing=0.05) as bar:
        for shard in range(start, n_shards):
            rng = np.random.default_rng([seed, shard])
            for _ in range(min(shard_size, count - shard * shard_size)):
                k = sampler.draw(rng)
                name = str(motions.sequence[k])
                subject = name.split("/")[1] if name.startswith("h36m/") else None
                body = int(bodies[rng.integers(len(bodies))])
                bystander = None      # drawn only when asked for: older data sets' streams stay the same
                if opts.bystander_probability > 0 and rng.random() < opts.bystander_probability:
                    bystander = Bystander(int(bodies[rng.integers(len(bodies))]), motions.joints[sampler.draw(rng)])
                sample = make_sample(rng, opts, bank, body, motions.joints[k], name, renderer, backgrounds,
                                     cams_by_subject.get(subject, []) if subject else [], bystander)
                writer.add(sample)
                made += 1
                bar.update(1)
    writer.close()
    renderer.close()
    dt = time.perf_counter() - t0
    if made:
        print(f"{made} images in {dt:.0f} s: {made / dt:.1f} images/s", file=sys.stderr)
    return made


def main(argv: list[str] | None = None) -> int:
    ap = OneLineParser(prog=PROG, description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="shard directory (created; resumed if it exists)")
    ap.add_argument("--split", choices=("train", "val"), required=True)
    ap.add_argument("--count", type=int, required=True, help="number of images")
    ap.add_argument("--bodies", type=Path, required=True, help="body bank from python -m train.synth.body")
    ap.add_argument("--data", type=Path, default=None, help="datasets folder (default $POSECAST_DATA or ../shared/datasets)")
    ap.add_argument("--motions", type=Path, default=None, metavar="PACK",
                    help="motions and cameras from python -m train.motion --pack, instead of the datasets "
                         "folder's (which then needs only backgrounds/)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shard-size", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1, metavar="N",
                    help="threads for numpy's BLAS and OpenCV in this process (default 1; 0 leaves the libraries' "
                         "own defaults). For speed, run one process per core rather than more threads")
    ap.add_argument("--long-hair", type=float, default=0.0, metavar="P",
                    help="share of people with long hair over the neck and shoulders (default 0)")
    ap.add_argument("--faces", type=float, default=0.0, metavar="P",
                    help="share of people with eyes, brows and lips painted on the face (default 0)")
    ap.add_argument("--head-turns", type=float, default=0.0, metavar="P",
                    help="share of people whose head is turned on the neck, up to looking over the shoulder (default 0)")
    ap.add_argument("--bystanders", type=float, default=0.0, metavar="P",
                    help="share of tracking crops (not search crops) with a second, unlabelled person beside, "
                         "before or behind (default 0)")
    args = ap.parse_args(argv)
    for flag, share in (("--long-hair", args.long_hair), ("--faces", args.faces), ("--head-turns", args.head_turns),
                        ("--bystanders", args.bystanders)):
        if not 0.0 <= share <= 1.0:
            ap.error(f"{flag} must be between 0 and 1 (got {share})")
    if args.threads < 0:
        ap.error(f"--threads must be 0 or more (got {args.threads})")
    if args.count < 1:
        ap.error(f"--count must be at least 1 image (got {args.count})")
    if not 0 <= args.seed < 2 ** 32:
        ap.error(f"--seed must be from 0 to 2**32 - 1 (got {args.seed})")
    opts = SceneOptions(long_hair_probability=args.long_hair, face_probability=args.faces,
                        head_turn_probability=args.head_turns, bystander_probability=args.bystanders)
    with math_threads(args.threads):
        return run_resumable(lambda: generate(args.out, args.split, args.count, args.bodies,
                                              args.data or default_data_root(), args.seed, args.shard_size, opts,
                                              args.motions),
                             "shards", PROG)


@contextlib.contextmanager
def math_threads(threads: int) -> Iterator[None]:
    """Limit numpy's BLAS and OpenCV to `threads` (0: leave them be) for the duration.

    Their own pools would each take every core: two renders on two cores then ran at 18
    images/s each instead of 35 (docs/training.md, "Synthetic people")."""
    if threads == 0:
        yield
        return
    import cv2
    try:
        from threadpoolctl import threadpool_limits
    except ImportError as exc:
        raise SystemExit("python -m train.synth.generate: threadpoolctl is not installed; install the training "
                         "extras with `bash scripts/setup.sh --train`, or pass --threads 0") from exc

    before = cv2.getNumThreads()
    cv2.setNumThreads(threads)
    try:
        with threadpool_limits(limits=threads):
            yield
    finally:
        cv2.setNumThreads(before)


def run_resumable(work: Callable[[], object], units: str, prog: str | None = None) -> int:
    """A resumable command's exit code: 0, 2 with one error line for bad input, 130 on Ctrl-C
    (143 on SIGTERM, 129 on SIGHUP, each with the same line: finished work is kept). With `prog`,
    each line starts with it, as the other `python -m train.X` tools' lines do."""
    lead = f"{prog}: " if prog else ""
    try:
        with stop_signals_interrupt():
            work()
    except FileExistsError as exc:       # a folder to make where a file is
        print(f"{lead}error: '{exc.filename}' is a file, not a folder; give --out a folder (new or one to resume)",
              file=sys.stderr)
        return 2
    except OSError as exc:
        # Python's own text ("[Errno 1] Operation not permitted: '/sys/x'") says no more than this.
        said = f"'{exc.filename}': {exc.strerror} (check the path and its permissions)" if exc.filename and exc.strerror \
            else str(exc)
        print(f"{lead}error: {said}", file=sys.stderr)
        return 2
    except (ValueError, RuntimeError, PosecastError) as exc:
        print(f"{lead}error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"{lead}{describe(exc)}: finished {units} are kept; run the same command again to resume", file=sys.stderr)
        return exit_code(exc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
