"""The figure-making scripts of docs/results.md and docs/performance.md: scripts/vtest_crop.py,
scripts/contact_sheet.py, scripts/track_stats.py, scripts/street_starts.py,
scripts/person_free_video.py, scripts/compare_mediapipe.py and scripts/bvh_check.py."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import av
import cv2
import numpy as np
import pytest

from clips import write_clip_labels

REPO = Path(__file__).resolve().parent.parent


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module          # dataclasses look their module up while the script loads
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 frames of 160x120 whose red channel is the frame index x 8."""
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        stream.options = {"crf": "0"}
        for i in range(30):
            img = np.zeros((120, 160, 3), np.uint8)
            img[..., 2] = i * 8
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def test_contact_sheet_tiles_the_chosen_frames(clip: Path, tmp_path: Path) -> None:
    sheet = load_script("contact_sheet")
    out = tmp_path / "sheet.png"
    assert sheet.main([str(clip), str(out), "--first", "2", "--every", "5", "--count", "5", "--columns", "3",
                       "--width", "80"]) == 0
    img = cv2.imread(str(out))
    assert img.shape == (2 * 60, 3 * 80, 3)                 # 5 tiles of 80x60 in rows of 3, one blank
    reds = [int(np.median(img[r * 60 + 40:r * 60 + 58, c * 80 + 40:c * 80 + 78, 2]))
            for r in range(2) for c in range(3)][:5]
    assert reds == pytest.approx([8 * f for f in (2, 7, 12, 17, 22)], abs=6)
    assert int(img[60:, 160:].max()) == 0                    # the blank tile


def test_contact_sheet_zooms_onto_the_tracked_person(clip: Path, tmp_path: Path) -> None:
    sheet = load_script("contact_sheet")
    track = tmp_path / "t.jsonl"
    lines = [json.dumps({"type": "meta"})]
    for seq in range(30):
        people = [{"bbox": [10, 20, 30, 60], "score": 0.5}] if seq != 5 else []
        lines.append(json.dumps({"type": "pose", "seq": seq, "people": people}))
    track.write_text("\n".join(lines) + "\n")
    out = tmp_path / "zoom.png"
    assert sheet.main([str(clip), str(out), "--first", "0", "--every", "5", "--count", "2", "--columns", "2",
                       "--width", "96", "--zoom", str(track)]) == 0
    img = cv2.imread(str(out))
    # Frame 0: a square of 96 px (twice the box's 40, raised to the minimum) scaled to 96. Frame 5
    # has no person: the whole 160x120 frame at 96 px wide, 72 high, padded to the row's height.
    assert img.shape == (96, 192, 3)
    assert int(img[80:, 100:190].max()) == 0 and int(np.median(img[40:70, 140:190, 2])) == pytest.approx(40, abs=6)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    assert sheet.main([str(clip), str(out), "--zoom", str(bad)]) == 2


def test_contact_sheet_says_when_its_zoom_track_holds_nobody(clip: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    sheet = load_script("contact_sheet")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert sheet.main([str(clip), str(tmp_path / "s.png"), "--count", "2", "--zoom", str(empty)]) == 0
    assert "holds no pose with a person; every tile is the whole frame" in capsys.readouterr().err


def test_contact_sheet_errors(clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sheet = load_script("contact_sheet")
    assert sheet.main([str(tmp_path / "missing.mp4"), str(tmp_path / "s.jpg")]) == 2
    assert sheet.main([str(clip), str(tmp_path / "s.jpg"), "--first", "500"]) == 2
    assert sheet.main([str(clip), str(tmp_path / "s.jpg"), "--every", "0"]) == 2
    assert sheet.main([str(clip), str(tmp_path / "s.xyz")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("contact_sheet: error:") for line in lines)
    assert "has no frame 500" in lines[1]


def test_vtest_crop_cuts_the_box_and_checks_it(clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    crop = load_script("vtest_crop")
    out = tmp_path / "crop.mp4"
    assert crop.main([str(clip), str(out), "--box", "20", "10", "100", "--size", "64", "--frames", "3", "8"]) == 0
    with av.open(str(out)) as src:
        frames = [f.to_ndarray(format="bgr24") for f in src.decode(video=0)]
    assert len(frames) == 6 and frames[0].shape == (64, 64, 3)
    assert int(np.median(frames[0][..., 2])) == pytest.approx(24, abs=6)
    capsys.readouterr()
    assert crop.main([str(clip), str(tmp_path / "bad.mp4"), "--box", "100", "10", "100"]) == 2
    assert "not inside the 160x120 frames" in capsys.readouterr().err
    assert not (tmp_path / "bad.mp4").exists()
    # Numbers, outputs and an empty range: one line each (tracebacks, or "wrote 0 frames", before).
    for args, says in ((["--size", "255"], "--size must be even"), (["--fps", "-5"], "--fps must be between"),
                       (["--frames", "8", "3"], "give FIRST <= LAST"), (["--frames", "500", "600"], "has no frame in"),
                       (["--out", str(tmp_path / "no" / "x.mp4")], "folder"), (["--out", str(clip)], "the output is the input"),
                       (["--out", str(tmp_path / "x.jpg")], "the output must be a video file")):
        out = args[1] if args[0] == "--out" else str(tmp_path / "bad.mp4")
        extra = [] if args[0] == "--out" else args
        assert crop.main([str(clip), out, "--box", "20", "10", "100", *extra]) == 2
        assert says in capsys.readouterr().err
    assert not (tmp_path / "bad.mp4").exists() and not (tmp_path / "no").exists() and not (tmp_path / "x.jpg").exists()


def _pose(seq: int, joints: np.ndarray | None, score: float = 0.8) -> dict:
    people = [] if joints is None else [{"id": 0, "score": score, "joints_2d": joints.tolist()}]
    return {"type": "pose", "schema": 1, "seq": seq, "people": people}


def _upright(x: float, y: float = 100.0) -> np.ndarray:
    """17 joints in a box 20 px wide and 80 px tall, centred on (x, y)."""
    rng = np.random.default_rng(0)
    pts = rng.uniform([-10.0, -40.0], [10.0, 40.0], (17, 2))
    pts[0], pts[1] = (-10.0, -40.0), (10.0, 40.0)
    return pts + (x, y)


def test_track_stats_counts_spread_and_still_frames() -> None:
    stats = load_script("track_stats")
    fps = 10.0
    walking = [_pose(k, _upright(5.0 * k)) for k in range(40)]            # 5 px a frame: never still
    parked = [_pose(40 + k, _upright(300.0)) for k in range(40)]          # 4 s on one spot
    wide = _upright(300.0)[:, ::-1]                                        # 80 px wide, 20 px tall
    odd = [_pose(80, wide), _pose(81, None), _pose(82, _upright(300.0) * (1.0, 5.0))]  # wide, nobody, 400 px tall
    s = stats.track_stats(walking + parked + odd, fps)
    assert (s.frames, s.found, s.spread) == (83, 82, 3)
    assert (s.missing, s.wide, s.tall) == (1, 1, 1)
    # 4 s windows every second: only the one lying wholly in the parked stretch (frames 40-79) is still.
    assert (s.still_windows, s.windows) == (1, 5)
    assert s.mean_score == pytest.approx(0.8 * 82 / 83)
    assert stats.track_stats(walking, fps).still_windows == 0
    assert stats.track_stats(parked, fps, still_px=0.5).still_windows == 1     # not moving at all
    assert s.tracks == 2                                  # one, and one after the frame with nobody


def test_track_stats_counts_tracks_by_person_id() -> None:
    stats = load_script("track_stats")
    poses = [_pose(k, _upright(5.0 * k)) for k in range(9)]
    for k, pose in enumerate(poses):
        pose["people"][0]["id"] = 0 if k < 4 else 1         # a search found someone else at frame 4
    poses[6] = _pose(6, None)                               # nobody; frames 7 and 8 keep id 1 (old files: id 0)
    assert stats.track_stats(poses, 10.0).tracks == 3


def test_track_stats_reads_track_files_and_reports_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stats = load_script("track_stats")
    track = tmp_path / "t.jsonl"
    lines = [{"type": "meta", "schema": 1, "fps": 10.0}] + [_pose(k, _upright(300.0)) for k in range(40)]
    track.write_text("".join(json.dumps(m) + "\n" for m in lines))
    assert stats.main([str(track)]) == 0
    out = capsys.readouterr().out
    assert ("40 frames, person in 40; spread 0.0% (0: 0 without a person, 0 wider than tall, 0 too tall); "
            "still windows 1 of 1") in out
    assert stats.main([str(tmp_path / "missing.jsonl")]) == 1
    assert "cannot read track file" in capsys.readouterr().err
    assert stats.main([str(track), "--window", "0"]) == 2
    assert "must be positive" in capsys.readouterr().err


def test_track_stats_total_sums_the_tracks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stats = load_script("track_stats")
    paths = []
    for name, poses in (("a", [_pose(k, _upright(5.0 * k)) for k in range(40)]),
                        ("b", [_pose(k, _upright(300.0)[:, ::-1]) for k in range(10)])):    # 10 wide frames
        paths.append(tmp_path / f"{name}.jsonl")
        lines = [{"type": "meta", "schema": 1, "fps": 10.0}] + poses
        paths[-1].write_text("".join(json.dumps(m) + "\n" for m in lines))
    assert stats.main([str(p) for p in paths] + ["--total"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == ("total of 2 files: 50 frames, person in 50; spread 20.0% (10: 0 without a person, "
                    "10 wider than tall, 0 too tall); still windows 0 of 1; mean score 0.800; 2 tracks")


def test_street_starts_tracks_each_copy_and_sums(clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    street = load_script("street_starts")
    copies = street.write_copies(clip, [4, 20], tmp_path)
    for copy, start in zip(copies, (4, 20)):
        cap = cv2.VideoCapture(str(copy))
        ok, first = cap.read()
        count = 1 + sum(1 for _ in iter(lambda: cap.read()[0], False))
        assert ok and count == 30 - start
        assert round(first[..., 2].mean() / 8) == start                   # the red channel counts frames
    model = REPO / "engines" / "weights" / "default.pt"
    assert street.main(["--model", str(model), "--out", str(tmp_path), "--clip", str(clip),
                        "--first", "4", "--every", "16", "--count", "2"]) == 0
    out = capsys.readouterr().out
    assert "clip_from0004_default.jsonl: 26 frames" in out and "clip_from0020_default.jsonl: 10 frames" in out
    assert "total of 2 files: 36 frames" in out
    # Failures: one line each, non-zero exit.
    assert street.main(["--model", str(model), "--out", str(tmp_path / "x"), "--clip", str(clip), "--first", "40",
                        "--count", "1"]) == 2
    assert "has 30 frames; no copy can start at frame 40" in capsys.readouterr().err
    assert list((tmp_path / "x").iterdir()) == []
    assert street.main(["--model", str(model), "--out", str(tmp_path / "x"), "--clip", str(tmp_path / "no.avi")]) == 2
    err = capsys.readouterr().err
    assert "no clip" in err and "opencv-doc" not in err            # the hint is for the default clip only
    assert street.main(["--model", str(tmp_path / "none.pt"), "--out", str(tmp_path)]) == 2
    assert "none.pt" in capsys.readouterr().err
    assert street.main(["--model", str(model), "--out", str(tmp_path), "--every", "0"]) == 2
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    (tmp_path / "fresh").mkdir()
    assert street.main(["--model", str(bad), "--out", str(tmp_path / "fresh"), "--clip", str(clip), "--first", "4",
                        "--count", "1"]) == 2                  # refused before any copy is written
    assert "is not a Posecast PyTorch checkpoint" in capsys.readouterr().err
    assert list((tmp_path / "fresh").iterdir()) == []
    # --config is laid over the pipeline's defaults, and names the track files.
    config = tmp_path / "often.yaml"
    config.write_text("tracking:\n  research_every: 5\n")
    assert street.main(["--model", str(model), "--out", str(tmp_path), "--clip", str(clip), "--first", "4",
                        "--count", "1", "--config", str(config)]) == 0
    assert "clip_from0004_default_often.jsonl: 26 frames" in capsys.readouterr().out
    assert street.main(["--model", str(model), "--out", str(tmp_path), "--config", str(tmp_path / "none.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    config.write_text("tracking:\n  research_every: -1\n")
    assert street.main(["--model", str(model), "--out", str(tmp_path), "--clip", str(clip), "--first", "4",
                        "--count", "1", "--config", str(config)]) == 1
    assert "research_every" in capsys.readouterr().err


def test_person_free_video_holds_each_crop_for_its_frames(tmp_path: Path) -> None:
    script = load_script("person_free_video")
    photos = tmp_path / "photos"
    photos.mkdir()
    for k, colour in enumerate([(0, 0, 255), (0, 255, 0)]):
        image = np.zeros((90, 120, 3), np.uint8)
        image[:] = colour
        image[..., 0] = np.linspace(0, 150, 120, dtype=np.uint8)       # where the crop lies shows in blue
        cv2.imwrite(str(photos / f"p{k}.png"), image)
    (photos / "notes.txt").write_text("not a photo")
    out = tmp_path / "pfree.mp4"
    assert script.main([str(photos), str(out), "--crops", "2", "--frames", "3", "--size", "64"]) == 0
    with av.open(str(out)) as c:
        frames = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
    assert len(frames) == 2 * 2 * 3 and frames[0].shape == (64, 64, 3)
    means = np.array([f.reshape(-1, 3).mean(axis=0) for f in frames])
    assert (means[:6, 2] > 200).all() and (means[6:, 1] > 200).all()        # photo by photo, in name order
    first = tmp_path / "again.mp4"
    assert script.main([str(photos), str(first), "--crops", "2", "--frames", "3", "--size", "64"]) == 0
    with av.open(str(first)) as c:
        again = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
    assert all(np.array_equal(a, b) for a, b in zip(frames, again))          # seeded
    other = tmp_path / "other.mp4"
    assert script.main([str(photos), str(other), "--crops", "2", "--frames", "3", "--size", "64", "--seed", "1"]) == 0
    with av.open(str(other)) as c:
        assert not all(np.array_equal(a, f.to_ndarray(format="bgr24")) for a, f in zip(frames, c.decode(video=0)))


def test_street_starts_leaves_no_half_copy_for_the_next_run(clip: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A run stopped while copying left short copies, which the next run took as whole and
    scored (162 of 795 frames, silently)."""
    street = load_script("street_starts")
    real = street.cv2.VideoCapture

    class Stopped:                       # a Ctrl-C after 10 frames read (cv2's class cannot be subclassed safely)
        reads = 0

        def __init__(self, path: str) -> None:
            self.cap = real(path)

        def __getattr__(self, name: str):
            return getattr(self.cap, name)

        def read(self):
            Stopped.reads += 1
            if Stopped.reads > 10:
                raise KeyboardInterrupt
            return self.cap.read()

    monkeypatch.setattr(street.cv2, "VideoCapture", Stopped)
    with pytest.raises(KeyboardInterrupt):
        street.write_copies(clip, [4, 20], tmp_path)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(street.cv2, "VideoCapture", real)
    for copy, start in zip(street.write_copies(clip, [4, 20], tmp_path), (4, 20)):
        cap = real(str(copy))
        assert int(cap.get(street.cv2.CAP_PROP_FRAME_COUNT)) == 30 - start
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip_from0004.avi", "clip_from0020.avi"]


@pytest.mark.parametrize("make, message", [
    ("empty", "no .jpg or .png photos"),
    ("broken", "cannot read"),
])
def test_person_free_video_refuses_bad_folders_with_one_line(tmp_path: Path, make: str, message: str,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    script = load_script("person_free_video")
    photos = tmp_path / "photos"
    photos.mkdir()
    if make == "broken":
        (photos / "bad.jpg").write_bytes(b"not a jpeg")
    assert script.main([str(photos), str(tmp_path / "out.mp4")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_person_free_video_never_writes_over_a_photo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Given one of its own photos as the output, it replaced the photo with a video (exit 0)."""
    script = load_script("person_free_video")
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "p.jpg"), np.full((90, 120, 3), 128, np.uint8))
    before = (photos / "p.jpg").read_bytes()
    (photos / "p.mp4").symlink_to(photos / "p.jpg")           # a video's name that is the photo
    for out, says in ((photos / "p.jpg", "must be a video file"), (photos / "p.mp4", "is the photo p.jpg")):
        assert script.main([str(photos), str(out), "--frames", "1", "--size", "64"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and says in err[0], err
    assert (photos / "p.jpg").read_bytes() == before


# --- scripts/compare_mediapipe.py (MediaPipe itself runs only in its own environment) -------

def test_mediapipe_landmarks_map_onto_the_joints_both_define() -> None:
    cmp = load_script("compare_mediapipe")
    from engines.skeleton import H36M17

    landmarks = np.random.default_rng(0).normal(size=(2, 33, 2))
    joints = cmp.direct_joints(landmarks)
    assert joints.shape == (2, 17, 2)
    np.testing.assert_array_equal(joints[:, H36M17.index("l_wrist")], landmarks[:, 15])
    np.testing.assert_array_equal(joints[:, H36M17.index("r_ankle")], landmarks[:, 28])
    np.testing.assert_allclose(joints[:, H36M17.index("pelvis")], (landmarks[:, 23] + landmarks[:, 24]) / 2)
    for name in ("spine", "thorax", "neck_nose", "head_top"):
        assert np.isnan(joints[:, H36M17.index(name)]).all()


def test_the_affine_regressor_recovers_known_weights_and_follows_a_shift() -> None:
    cmp = load_script("compare_mediapipe")
    rng = np.random.default_rng(1)
    truth = rng.dirichlet(np.full(33, 0.3), size=17)                 # rows sum to one
    source = rng.normal(size=(400, 33, 3))
    target = cmp.apply_regressor(truth, source)
    exact = cmp.fit_affine_regressor(source, target, ridge=0.0)
    np.testing.assert_allclose(exact, truth, atol=1e-8)
    fitted = cmp.fit_affine_regressor(source, target)
    np.testing.assert_allclose(fitted.sum(axis=1), 1.0, atol=1e-9)
    shift = np.array([3.0, -2.0, 0.5])
    # Weights summing to one: moving every landmark moves every joint by as much (image pixels).
    np.testing.assert_allclose(cmp.apply_regressor(fitted, source + shift) - cmp.apply_regressor(fitted, source),
                               np.broadcast_to(shift, (400, 17, 3)), atol=1e-9)
    assert np.abs(cmp.apply_regressor(fitted, source) - target).mean() < 0.02
    local = cmp.fit_affine_regressor(source, target, support=cmp.joint_support())
    np.testing.assert_allclose(local.sum(axis=1), 1.0, atol=1e-9)
    for row, use in zip(local, cmp.joint_support()):
        outside = np.ones(33, bool)
        outside[list(use)] = False
        assert not row[outside].any()


def test_photo_pck_counts_a_photo_without_a_person_as_missed() -> None:
    cmp = load_script("compare_mediapipe")
    from engines.skeleton import H36M17
    from train.real2d import coco_to_h36m

    rng = np.random.default_rng(2)
    records = []
    for _ in range(4):
        kp = np.concatenate([rng.uniform(100, 400, size=(17, 2)), np.full((17, 1), 2.0)], axis=1)
        joints, mask = coco_to_h36m(kp)
        records.append(SimpleRecord(joints, mask))
    exact = np.stack([r.joints_2d for r in records]).astype(np.float64)
    res = cmp.photo_pck(exact, records)
    assert res["pck"] == 1.0 and res["found"] == 1.0 and res["pck_exchanged"] < 1.0
    missing = exact.copy()
    missing[0] = np.nan                                              # nobody found in the first photo
    missing[1, H36M17.index("spine")] = np.nan                       # an unlabelled joint: still found
    res = cmp.photo_pck(missing, records)
    assert res["found"] == 0.75 and res["pck"] == 0.75


@dataclass
class SimpleRecord:
    """What photo_pck reads of a train.real2d.RealRecord."""
    joints_2d: np.ndarray
    mask: np.ndarray


def _fake_clip_set(out: Path, folder: Path, seed: int, frames: int = 12) -> None:
    """A clip folder (labels, an empty stand-in video), MediaPipe's output on it, and a Posecast
    track equal to the labels. The labels' joints are one fixed affine combination of MediaPipe's
    landmarks (each on its JOINT_LANDMARKS), so the fit can recover them exactly."""
    cmp = load_script("compare_mediapipe")
    weights = np.zeros((17, 33))
    for j, use in enumerate(cmp.joint_support()):
        weights[j, list(use)] = np.random.default_rng(100 + j).dirichlet(np.ones(len(use)))
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for k in range(2):
        world = rng.normal(size=(frames, 33, 3)) * 0.4
        world -= cmp.apply_regressor(weights, world)[:, :1]          # about the pelvis, as MediaPipe's about its hips
        image = rng.normal(size=(frames, 33, 2)) * 60.0 + 240.0
        root = np.array([0.0, 0.0, 4.0])
        write_clip_labels(folder, k, frames, joints_3d=cmp.apply_regressor(weights, world) + root,
                          joints_2d=cmp.apply_regressor(weights, image), motion=np.str_("test"))
        dest = out / "mp_clips" / cmp.cache_name(folder)
        dest.mkdir(parents=True, exist_ok=True)
        np.savez(dest / f"clip_{k:03d}.npz", landmarks_2d=image, visibility=np.ones((frames, 33)), world=world,
                 found=np.ones(frames, bool), seconds=np.full(frames, 0.02))
        track = out / "posecast_clips" / cmp.cache_name(folder)
        track.mkdir(parents=True, exist_ok=True)
        np.savez(track / f"clip_{k:03d}.npz", found=np.ones(frames, bool),
                 joints_3d=cmp.apply_regressor(weights, world), joints_2d=cmp.apply_regressor(weights, image),
                 root_3d=np.tile(root, (frames, 1)), conf=np.ones((frames, 17)))


def test_the_clip_scores_fit_on_one_set_and_score_the_others(tmp_path: Path) -> None:
    cmp = load_script("compare_mediapipe")
    for seed, name in enumerate(("tune", "report", "more")):
        _fake_clip_set(tmp_path / "out", tmp_path / name, seed)
    clips = [tmp_path / n for n in ("tune", "report", "more")]
    report = cmp.score(tmp_path / "out", clips, tmp_path, {})
    assert "photos" not in report and report["clips"]["fitted_on"] == "tune"
    assert set(report["clips"]) == {"fitted_on", "report", "more", "pooled"}
    pooled = report["clips"]["pooled"]
    assert pooled["frames"] == 48 and pooled["posecast"]["mpjpe_mm"] < 1e-6 and pooled["posecast"]["pck"] == 1.0
    assert pooled["mediapipe"]["mpjpe_mm"] < 5.0 and pooled["mediapipe"]["pck"] == 1.0   # the fit recovered them
    fitted = cmp.score(tmp_path / "out", clips[1:], tmp_path, {}, fit_dir=clips[0])
    again = fitted["clips"]["pooled"]                    # --fit: the same fit, every --clips set scored
    assert set(fitted["clips"]) == {"fitted_on", "report", "more", "pooled"}
    assert again["mediapipe"]["mpjpe_mm"] == pooled["mediapipe"]["mpjpe_mm"] and again["frames"] == 48
    assert "| pooled | 48 |" in cmp.markdown(report)


def test_clips_of_another_folder_of_the_same_name_are_not_taken_for_these(tmp_path: Path) -> None:
    """Results were kept by the clip folder's name: other clips in a folder of that name were
    scored with them (or crashed on their lengths)."""
    cmp = load_script("compare_mediapipe")
    a, b = tmp_path / "x" / "tune", tmp_path / "y" / "tune"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    assert cmp.cache_name(a) != cmp.cache_name(b) and cmp.cache_name(a).startswith("tune-")
    # compare_mediapipe.sh asks the .py for the name.
    assert 'compare_mediapipe.py cache-name "$c"' in (REPO / "scripts" / "compare_mediapipe.sh").read_text()
    key = subprocess.run([sys.executable, str(REPO / "scripts" / "compare_mediapipe.py"), "cache-name", str(a)],
                         capture_output=True, text=True, check=True, cwd=REPO).stdout.strip()
    assert key == cmp.cache_name(a)


def test_bvh_check_scores_a_track(tmp_path: Path, capsys) -> None:
    from engines.skeleton import H36M17
    from streamer.protocol import PersonPose, PoseFrame, meta_message
    from streamer.tracks import open_track_writer

    bvh_check = load_script("bvh_check")
    # A stiff body turning on the spot: its BVH comes back to within the text's rounding.
    rest = np.array([[0, 0, 0], [-.13, .02, 0], [-.13, .47, 0], [-.13, .91, .02], [.13, .02, 0], [.13, .47, 0],
                     [.13, .91, .02], [0, -.23, .02], [0, -.48, .02], [0, -.6, -.06], [0, -.71, -.04],
                     [.15, -.48, .02], [.2, -.2, .02], [.22, .05, -.05], [-.15, -.48, .02], [-.2, -.2, .02],
                     [-.22, .05, -.05]])
    track = tmp_path / "t.jsonl"
    with open_track_writer(track, meta_message(H36M17, "x", (64, 64), 30.0, {})) as w:
        for i in range(30):
            a = np.radians(6 * i)
            turn = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
            joints = (rest @ turn.T).astype(np.float32)
            w.write(PoseFrame(i, 1.0 + i / 30, i / 30, (64, 64),
                              [PersonPose(0, 0.9, (0, 0, 9, 9), joints, np.zeros((17, 2), np.float32),
                                          np.ones(17, np.float32))]))
    out = tmp_path / "check.json"
    assert bvh_check.main(["--tracks", str(track), "--json", str(out)]) == 0
    (summary,) = json.loads(out.read_text())["sets"]
    assert summary["frames"] == 30 and summary["wrong_way_rows"] == 0 and summary["half_turn_rows"] == 0
    assert summary["joint_error_mm"]["max"] < 0.5
    assert "1 tracks: 30 frames; joint error mean" in capsys.readouterr().out


def test_bvh_check_without_the_mocap_data_says_so_in_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    """docs/bvh.md's command run where the shared datasets are not beside the repository: one line
    naming the folder and the ways to give it (--data, POSECAST_DATA), exit 2, no traceback."""
    bvh_check = load_script("bvh_check")
    monkeypatch.setenv("POSECAST_DATA", str(tmp_path / "nowhere"))
    assert bvh_check.main(["--mocap"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bvh_check.py: error: the Human3.6M poses are not at ")
    assert str(tmp_path / "nowhere") in err[0] and "--data" in err[0]
    assert bvh_check.main(["--mocap", "--data", str(tmp_path)]) == 2      # the option that line names
    assert str(tmp_path / "h36m_poses") in capsys.readouterr().err
