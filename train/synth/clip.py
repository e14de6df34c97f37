"""Rendered video clips with 3D ground truth, to measure the whole pipeline on video.

    python -m train.synth.clip --out DIR --bodies BANK.npz --clips 8 --frames 150

The held-out images (`train.synth.generate --split val`) measure the network on crops cut from
their labels. A user's video goes through more: the tracker cuts the crops, the root alignment
and the temporal filter act on a sequence, and a pose that is right on average can still jitter
from frame to frame. Each clip here is one person moving through one motion sequence in front of
one static camera, everything held out from training (motions `train.motion.HELD_OUT`, the
validation bodies and backgrounds):

- Human3.6M's S8 is seen through one of its four real cameras, scaled to the frame (lens
  distortion left out); CMU and DeepMimic motions get a random camera 3 to 6 m beyond the
  motion's path, 0.8 to 2.2 m above the ground, whose focal length keeps every joint of every
  frame in view.
- The motion data are at 10 Hz; the clip plays them at `--fps` by linear interpolation of the
  joint positions (the body is posed on each interpolated pose, so the labels are exact).
- Sources take turns (Human3.6M every other clip, then CMU and DeepMimic), so a few clips cover
  all three.

Written per clip: `clip_NNN.mp4` (H.264, CRF 18) and `clip_NNN.npz` (`joints_3d` (T, 17, 3)
metres in the camera's frame, `joints_2d` (T, 17, 2) pixels, `visible` (T, 17), `focal`, `size`,
`fps`, `motion`, `body`, `background`). Clip k is drawn from its own random stream (seed, k) and
its `.npz` is written last, so an interrupted run resumes at the first clip without one.
`python -m train.video_eval` runs `posecast track` on the clips and scores the track files.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.arguments import OneLineParser
from engines.files import replaced_when_done
from engines.skeleton import H36M17
from train.backgrounds import load_backgrounds, split_backgrounds
from train.config import default_data_root
from train.motion import HELD_OUT, H36MCamera, MotionBank, load_all, split
from train.synth.body import JOINTS_VERSION, BodyBank
from train.synth.generate import run_resumable, split_bodies
from train.synth.render import BodyRenderer, Look
from train.synth.retarget import pose_body
from train.synth.scene import background_crop, joints_seen, look_at, over, random_look

MOTION_HZ = 10.0                  # the motion bank's rate (train.motion.load_all)
SOURCE_TURNS = ("h36m", "cmu", "h36m", "deepmimic")
MIN_SECONDS = 2.0                 # shorter sequences are drawn only where a source has no longer ones
PATH_CLEARANCE = (3.0, 6.0)       # metres from the motion's path to a random camera
CAMERA_HEIGHT = (0.8, 2.2)        # metres above the lowest joint
FILL = 0.42                       # the farthest joint from the image centre, as a share of the side
NOISE_STD = 2.0                   # sensor noise, grey levels
SPLITS = ("val", "train")


@dataclass(frozen=True)
class ClipCamera:
    rot: np.ndarray        # (3, 3) world -> camera (rows: right, down, forward)
    centre: np.ndarray     # (3,) metres, world
    intrinsics: tuple[float, float, float, float]   # fx, fy, cx, cy in the clip's pixels


def play(poses: np.ndarray, fps: float, frames: int, start_s: float) -> np.ndarray:
    """(frames, 17, 3): a 10 Hz pose sequence read at `fps` from `start_s`, linearly interpolated."""
    t = start_s + np.arange(frames) / fps
    x = np.clip(t * MOTION_HZ, 0.0, len(poses) - 1.0)
    i0 = np.minimum(np.floor(x).astype(int), len(poses) - 2) if len(poses) > 1 else np.zeros(frames, int)
    w = (x - i0)[:, None, None]
    i1 = np.minimum(i0 + 1, len(poses) - 1)
    return ((1.0 - w) * poses[i0] + w * poses[i1]).astype(np.float64)


def clip_length(poses: int, fps: float, frames: int) -> int:
    """Frames of a clip of at most `frames` from a sequence of `poses` 10 Hz poses."""
    return max(1, min(frames, int(np.floor((poses - 1) / MOTION_HZ * fps)) + 1))


def real_camera(cam: H36MCamera, size: int) -> ClipCamera:
    """A Human3.6M camera scaled from its 1000-pixel images to `size`, without its distortion."""
    s = size / float(max(cam.width, cam.height))
    return ClipCamera(cam.R.astype(np.float64), cam.T.astype(np.float64),
                      (float(cam.f[0] * s), float(cam.f[1] * s), float(cam.c[0] * s), float(cam.c[1] * s)))


def random_camera(rng: np.random.Generator, joints: np.ndarray, size: int) -> ClipCamera:
    """A static camera that keeps every joint of `joints` (T, 17, 3) in view."""
    pelvis = joints[:, H36M17.index("pelvis")]
    mid = pelvis.mean(axis=0)
    radius = float(np.linalg.norm(pelvis[:, :2] - mid[:2], axis=1).max())
    dist = radius + rng.uniform(*PATH_CLEARANCE)
    azim = rng.uniform(0, 2 * np.pi)
    centre = np.array([mid[0] + dist * np.cos(azim), mid[1] + dist * np.sin(azim),
                       joints[..., 2].min() + rng.uniform(*CAMERA_HEIGHT)])
    target = mid + np.array([0.0, 0.0, rng.uniform(-0.2, 0.3)])
    rot = look_at(centre, target, float(rng.normal(0, np.radians(2))))
    cam = (joints.reshape(-1, 3) - centre) @ rot.T
    reach = float(np.abs(cam[:, :2] / cam[:, 2:3]).max())
    f = float(np.clip(FILL * size / max(reach, 1e-6), 0.45 * size, 4.0 * size))
    return ClipCamera(rot, centre, (f, f, size / 2.0, size / 2.0))


def turned(poses: np.ndarray, yaw: float) -> np.ndarray:
    """`poses` (T, 17, 3) turned by `yaw` about the vertical through their first pelvis."""
    c, s = np.cos(yaw), np.sin(yaw)
    rz = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    pivot = poses[0, H36M17.index("pelvis")]
    return (poses - pivot) @ rz.T + pivot


class ClipMaker:
    """One split's material, loaded once: `plan` draws clip k, `render` draws its frames.

    "val" (the default) is the held-out material the evaluation clips use; "train" is the training
    motions, bodies, backgrounds and Human3.6M subjects, for models that learn from the pipeline's
    output (`train.temporal`) and must never see the held-out clips."""

    def __init__(self, bodies_path: Path, data_dir: Path, size: int, fps: float, frames: int, seed: int,
                 split_name: str = "val") -> None:
        if split_name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, not {split_name!r}")
        held_out = split_name == "val"
        self.bank = BodyBank.load(bodies_path)
        motions, cameras = load_all(data_dir, hz=MOTION_HZ)
        self.motions: MotionBank = split(motions)[1 if held_out else 0]
        self.cameras = [c for c in cameras if (f"h36m/{c.subject}/" in HELD_OUT) == held_out]
        self.sources = self.drawable_sources()
        self.bodies = split_bodies(self.bank.num_bodies, split_name)
        self.backgrounds = load_backgrounds(split_backgrounds(data_dir / "backgrounds", split_name))
        self.size, self.fps, self.frames, self.seed = size, fps, frames, seed
        self.renderer = BodyRenderer(self.bank.faces, self.bank.region, self.bank.template, size)

    def drawable_sources(self) -> tuple[str, ...]:
        """The motion sources this split can draw: DeepMimic's are missing without pybullet (or
        $POSECAST_DEEPMIMIC), and Human3.6M's need a camera of the split."""
        held = {n.split("/", 1)[0] for n in self.motions.sequences()}
        found = tuple(s for s in dict.fromkeys(SOURCE_TURNS) if s in held and (s != "h36m" or self.cameras))
        if not found:
            raise ValueError("no motion of this split to draw from: is the datasets folder complete?")
        return found

    def close(self) -> None:
        self.renderer.close()

    def sequence(self, rng: np.random.Generator, source: str) -> tuple[str, np.ndarray]:
        """A sequence of `source` from this split: one of at least MIN_SECONDS where there are such."""
        names = [n for n in self.motions.sequences() if n.startswith(source + "/")]
        poses = {n: int((self.motions.sequence == n).sum()) for n in names}
        long = [n for n in names if poses[n] > MIN_SECONDS * MOTION_HZ]
        names = long or names
        name = names[rng.integers(len(names))]
        return name, self.motions.joints[self.motions.sequence == name]

    def plan(self, k: int) -> ClipPlan:
        """Clip k's draws: motion, body, camera, look and background (nothing rendered yet)."""
        rng = np.random.default_rng([self.seed, k])
        source = SOURCE_TURNS[k % len(SOURCE_TURNS)]
        if source not in self.sources:
            source = self.sources[k % len(self.sources)]
        name, seq = self.sequence(rng, source)
        frames = clip_length(len(seq), self.fps, self.frames)
        spare = (len(seq) - 1) / MOTION_HZ - (frames - 1) / self.fps
        poses = play(seq, self.fps, frames, rng.uniform(0.0, max(spare, 0.0)))
        body = int(self.bodies[rng.integers(len(self.bodies))])
        if source != "h36m":      # mocap without a camera of its own: any heading will do
            poses = turned(poses, rng.uniform(0, 2 * np.pi))
        posed = [pose_body(self.bank.vertices[body], self.bank.joints[body], self.bank.part_weights, p) for p in poses]
        if source == "h36m":
            camera = real_camera(self.cameras[rng.integers(len(self.cameras))], self.size)
        else:
            camera = random_camera(rng, np.stack([j for _, j in posed]), self.size)
        look = random_look(rng)
        bg_name, bg = background_crop(rng, self.backgrounds, self.size)
        return ClipPlan(name, body, posed, camera, look, bg_name, bg, np.random.default_rng([self.seed, k, 1]))

    def render(self, plan: ClipPlan, video: Path,
               on_frame: Callable[[], None] | None = None) -> dict[str, np.ndarray]:
        """Writes `video` and returns the clip's labels; `on_frame` is called after each frame."""
        import av

        fx, fy, cx, cy = plan.camera.intrinsics
        n = len(plan.posed)
        j3d = np.zeros((n, H36M17.num_joints, 3), np.float32)
        j2d = np.zeros((n, H36M17.num_joints, 2), np.float32)
        visible = np.zeros((n, H36M17.num_joints), bool)
        try:
            self._encode(plan, video, j3d, j2d, visible, on_frame)
        except av.FFmpegError as exc:
            raise RuntimeError(f"cannot write {video}: {exc}") from None
        return {"joints_3d": j3d, "joints_2d": j2d, "visible": visible, "focal": np.float64((fx + fy) / 2),
                "intrinsics": np.array(plan.camera.intrinsics), "size": np.int64(self.size),
                "fps": np.float64(self.fps), "motion": np.str_(plan.motion), "body": np.int64(plan.body),
                "background": np.str_(plan.background), "joints_version": np.int64(JOINTS_VERSION)}

    def _encode(self, plan: ClipPlan, video: Path, j3d: np.ndarray, j2d: np.ndarray, visible: np.ndarray,
                on_frame: Callable[[], None] | None) -> None:
        """Renders and encodes every frame of `plan`, filling the label arrays in place."""
        from train.h264 import write_h264

        fx, fy, cx, cy = plan.camera.intrinsics

        def frames() -> Iterator[np.ndarray]:
            for t, (verts, joints) in enumerate(plan.posed):
                v_cam = (verts - plan.camera.centre) @ plan.camera.rot.T
                j_cam = (joints - plan.camera.centre) @ plan.camera.rot.T
                out = self.renderer.render(v_cam.astype(np.float32), plan.camera.intrinsics, plan.look)
                uv = j_cam[:, :2] / j_cam[:, 2:3] * np.array([fx, fy]) + np.array([cx, cy])
                j3d[t], j2d[t] = j_cam, uv
                visible[t] = joints_seen(out, uv, j_cam)
                img = over(out, plan.bg) + plan.noise.normal(0, NOISE_STD, (self.size, self.size, 3))
                yield np.clip(img, 0, 255).astype(np.uint8)
                if on_frame:
                    on_frame()

        write_h264(video, frames(), self.size, round(self.fps), {"crf": "18", "preset": "veryfast"})


@dataclass
class ClipPlan:
    motion: str
    body: int
    posed: list[tuple[np.ndarray, np.ndarray]]    # per frame: vertices (V, 3), joints (17, 3), world
    camera: ClipCamera
    look: Look
    background: str
    bg: np.ndarray                                 # (size, size, 3) BGR
    noise: np.random.Generator


SETTINGS = "settings.json"
VIEWS_SOURCE = "source.json"    # in a folder of webcam views (train.synth.cut_clips): their clips and split


def rendered_split(folder: Path) -> str | None:
    """The split a folder of clips was rendered from, as its settings say, or for webcam views
    (`train.synth.cut_clips`), as the record of their source clips says; None where neither does."""
    for name in (SETTINGS, VIEWS_SOURCE):
        try:
            record = json.loads((Path(folder) / name).read_text())
        except (OSError, ValueError):
            continue
        split = record.get("split") if isinstance(record, dict) else None
        return split if isinstance(split, str) else None
    return None


def check_settings(out: Path, settings: dict[str, object]) -> None:
    """A folder's clips are one set: a resume with other settings would mix clips of two sizes,
    rates or splits under one name. The settings are kept in the folder when its first clip is
    about to be made (`keep_settings`); a folder made before they were kept is resumed unchecked,
    and one that holds no clip yet takes any settings."""
    path = out / SETTINGS
    if path.exists() and any(out.glob("clip_*.npz")):
        try:
            kept = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path} is not readable ({exc}); delete it only if the clips there match "
                             f"this command's settings") from None
        changed = [f"{k} {kept.get(k)!r} there, {v!r} now" for k, v in settings.items() if kept.get(k) != v]
        if changed:
            raise ValueError(f"{out} holds clips made with other settings ({'; '.join(changed)}); give another "
                             f"--out, or the same settings to resume")


def keep_settings(out: Path, settings: dict[str, object]) -> None:
    """Records the settings of a folder's clips, once its inputs have opened (a start that failed
    on a missing body bank must not tie the folder to it)."""
    if not any(out.glob("clip_*.npz")):
        with replaced_when_done(out / SETTINGS) as tmp:
            tmp.write_text(json.dumps(settings, indent=1) + "\n")


def make_clips(out: Path, bodies_path: Path, data_dir: Path, clips: int, frames: int, fps: float, size: int,
               seed: int, split_name: str = "val") -> int:
    """Renders the clips `out` lacks; returns how many were made."""
    out.mkdir(parents=True, exist_ok=True)
    settings = {"frames": frames, "fps": fps, "size": size, "seed": seed, "split": split_name,
                "bodies": bodies_path.name}
    check_settings(out, settings)
    todo = [k for k in range(clips) if not (out / f"clip_{k:03d}.npz").exists()]
    if len(todo) < clips:
        print(f"resuming {out}: {clips - len(todo)} of {clips} clips already done", file=sys.stderr)
    if not todo:
        return 0
    from tqdm import tqdm

    maker = ClipMaker(bodies_path, data_dir, size, fps, frames, seed, split_name)
    keep_settings(out, settings)
    t0, made_frames = time.perf_counter(), 0
    try:
        with tqdm(total=len(todo) * frames, desc="rendering clips", unit="frame", smoothing=0.05) as bar:
            for k in todo:
                plan = maker.plan(k)
                bar.total -= frames - len(plan.posed)
                bar.set_postfix_str(plan.motion)
                labels = maker.render(plan, out / f"clip_{k:03d}.mp4", lambda: bar.update(1))
                with replaced_when_done(out / f"clip_{k:03d}.npz") as tmp, open(tmp, "wb") as f:
                    np.savez(f, **labels)
                made_frames += len(plan.posed)
    finally:
        maker.close()
    dt = time.perf_counter() - t0
    print(f"{len(todo)} clips, {made_frames} frames in {dt:.0f} s: {made_frames / dt:.1f} frames/s", file=sys.stderr)
    return len(todo)


def main(argv: list[str] | None = None) -> int:
    ap = OneLineParser(prog="python -m train.synth.clip", description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="clip directory (created; resumed if it exists)")
    ap.add_argument("--bodies", type=Path, required=True, help="body bank from python -m train.synth.body")
    ap.add_argument("--data", type=Path, default=None,
                    help="datasets folder (default $POSECAST_DATA or ../shared/datasets)")
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--frames", type=int, default=150,
                    help="frames per clip at most (shorter motions give shorter clips)")
    ap.add_argument("--fps", type=int, default=25, help="frames per second (an integer: the video's rate)")
    ap.add_argument("--size", type=int, default=480, help="side of the square frames, pixels")
    ap.add_argument("--seed", type=int, default=300)
    ap.add_argument("--split", choices=SPLITS, default="val",
                    help="held-out material (val, for evaluation) or training material (train)")
    args = ap.parse_args(argv)
    if args.clips < 1 or args.frames < 2 or args.fps <= 0 or args.size < 64:
        ap.error("--clips must be at least 1, --frames at least 2, --fps positive and --size at least 64")
    if not 0 <= args.seed < 2 ** 32:
        ap.error(f"--seed must be from 0 to 2**32 - 1 (got {args.seed})")
    return run_resumable(lambda: make_clips(args.out, args.bodies, args.data or default_data_root(), args.clips,
                                            args.frames, args.fps, args.size, args.seed, args.split), "clips")


if __name__ == "__main__":
    raise SystemExit(main())
