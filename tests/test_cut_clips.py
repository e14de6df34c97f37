"""Webcam views of rendered clips (train/synth/cut_clips.py): the window, the labels moved with the
pixels, resuming, and the refusals. The clips here are drawn by hand: no renderer needed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engines.skeleton import H36M17
from train.synth.cut_clips import cut_clips, cut_labels, webcam_window
from clips import write_clip_labels
from poses import LEGS, standing

J = H36M17.num_joints
SIZE = 128
IDX = H36M17.index


def lying(pose: np.ndarray) -> np.ndarray:
    return pose[:, ::-1].copy()


def write_clip(folder: Path, k: int, poses: np.ndarray, dot: str = "head_top") -> None:
    """A clip whose frames are black with one white 5x5 square on joint `dot`, and its labels."""
    import av

    folder.mkdir(parents=True, exist_ok=True)
    with av.open(str(folder / f"clip_{k:03d}.mp4"), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"crf": "10", "preset": "veryfast"})
        stream.width = stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        for pose in poses:
            image = np.zeros((SIZE, SIZE, 3), np.uint8)
            x, y = np.floor(pose[IDX(dot)]).astype(int)
            image[y - 2:y + 3, x - 2:x + 3] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    write_clip_labels(folder, k, len(poses), video=None, joints_3d=np.ones((len(poses), J, 3)),
                      joints_2d=poses.astype(np.float32), focal=np.float64(100.0),
                      intrinsics=np.array([100.0, 100.0, 64.0, 64.0]), size=np.int64(SIZE),
                      motion=np.str_("test/standing"), body=np.int64(0), background=np.str_("none"))


def frames_of(video: Path) -> np.ndarray:
    import av

    with av.open(str(video)) as c:
        return np.stack([f.to_ndarray(format="bgr24") for f in c.decode(video=0)])


def test_the_window_cuts_between_hips_and_knees_and_keeps_the_head():
    poses = np.stack([standing(64 + t, 120, 24) for t in range(10)])
    w = webcam_window(poses, SIZE)
    assert w is not None
    hips, knees, head = 120 - 2 * 24, 120 - 24, 120 - 3.75 * 24
    bottom = w.y0 + w.side
    assert hips < bottom < knees                        # the frame's lower edge cuts the thighs
    assert w.y0 < head and w.x0 < 64 < w.x0 + w.side
    assert 0 <= w.x0 and 0 <= w.y0 and w.x0 + w.side <= SIZE and w.y0 + w.side <= SIZE


def test_a_window_past_the_frame_is_moved_inside_it():
    poses = np.stack([standing(64, 95, 24)] * 4)       # the head 1 px from the top: the margin reaches past it
    w = webcam_window(poses, SIZE)
    assert w is not None and w.y0 == 0.0 and w.side < SIZE


def test_a_person_lying_in_most_frames_has_no_webcam_view():
    upright = standing(64, 120, 24)
    poses = np.stack([upright] * 4 + [lying(upright)] * 5)
    assert webcam_window(poses, SIZE) is None


def test_labels_move_with_the_pixels_and_joints_outside_are_not_visible(tmp_path):
    poses = np.stack([standing(60 + 2 * t, 120, 24) for t in range(8)])
    write_clip(tmp_path / "clips", 0, poses)
    assert cut_clips(tmp_path / "clips", tmp_path / "webcam") == 1
    with np.load(tmp_path / "webcam" / "clip_000.npz") as d:
        labels = dict(d)
    frames = frames_of(tmp_path / "webcam" / "clip_000.mp4")
    assert frames.shape == (8, SIZE, SIZE, 3)
    for t in range(8):
        grey = frames[t].astype(float).mean(axis=-1)
        ys, xs = np.nonzero(grey > 0.5 * grey.max())
        bright = np.array([xs.mean() + 0.5, ys.mean() + 0.5])      # pixel centres at +0.5, as the labels
        scale = labels["focal"] / 100.0
        # The source dot covers floor(head) - 2 .. + 3: its centre is floor(head) + 0.5.
        expected = (np.floor(poses[t, IDX("head_top")]) + 0.5 - (poses[t, IDX("head_top")])) * scale \
            + labels["joints_2d"][t, IDX("head_top")]
        assert np.abs(bright - expected).max() < 1.0
    legs = [IDX(n) for n in LEGS]
    assert not labels["visible"][:, legs].any() and labels["visible"][:, IDX("head_top")].all()
    assert (labels["joints_2d"][:, legs, 1] >= SIZE).all()
    np.testing.assert_array_equal(labels["joints_3d"], np.ones((8, J, 3)))
    # The intrinsics move with the window: the labelled 2D points are where the 3D ones project.
    fx, fy, cx, cy = labels["intrinsics"]
    assert fx == fy == labels["focal"] and labels["focal"] > 100.0


def test_cut_labels_project_a_camera_point_where_the_window_puts_it():
    rng = np.random.default_rng(0)
    j3d = rng.normal(0, 0.4, (3, J, 3)) + (0.0, 0.0, 4.0)
    f, c = 300.0, 64.0
    j2d = j3d[..., :2] / j3d[..., 2:] * f + c
    labels = {"joints_3d": j3d, "joints_2d": j2d, "visible": np.ones((3, J), bool), "focal": np.float64(f),
              "intrinsics": np.array([f, f, c, c]), "size": np.int64(SIZE)}
    from train.synth.cut_clips import Window

    moved = cut_labels(labels, Window(20.0, 10.0, 64.0))
    fx, fy, cx, cy = moved["intrinsics"]
    again = j3d[..., :2] / j3d[..., 2:] * (fx, fy) + (cx, cy)
    np.testing.assert_allclose(again, moved["joints_2d"], atol=1e-9)


def test_a_second_run_keeps_what_it_made_and_skips_a_lying_clip(tmp_path, capsys):
    upright = np.stack([standing(64, 120, 24)] * 4)
    write_clip(tmp_path / "clips", 0, upright)
    write_clip(tmp_path / "clips", 1, np.stack([lying(upright[0])] * 4), dot="pelvis")
    assert cut_clips(tmp_path / "clips", tmp_path / "webcam") == 1
    assert "clip_001 (test/standing): not upright" in capsys.readouterr().err
    first = (tmp_path / "webcam" / "clip_000.npz").read_bytes()
    assert cut_clips(tmp_path / "clips", tmp_path / "webcam") == 0
    assert (tmp_path / "webcam" / "clip_000.npz").read_bytes() == first
    assert not (tmp_path / "webcam" / "clip_001.npz").exists()
    # Other clips into the same folder: refused (it said "done" and kept the first clips' views).
    write_clip(tmp_path / "others", 0, upright)
    with pytest.raises(ValueError, match="holds the webcam views of the clips in .*clips .* not .*others"):
        cut_clips(tmp_path / "others", tmp_path / "webcam")
    # A first run that made no view ties nothing: the next, with the right clips, goes on.
    assert cut_clips(tmp_path / "others", tmp_path / "fresh") == 1
    (tmp_path / "fresh" / "clip_000.npz").unlink()
    assert cut_clips(tmp_path / "clips", tmp_path / "fresh") == 1


@pytest.mark.parametrize("make, args, message", [
    (None, ["--clips", "NOWHERE", "--out", "OUT"], "no clip folder"),
    ("empty", ["--clips", "CLIPS", "--out", "OUT"], "no clip_*.npz"),
    ("broken", ["--clips", "CLIPS", "--out", "OUT"], "cannot read the clip labels"),
    ("missing video", ["--clips", "CLIPS", "--out", "OUT"], "clip_000.mp4 is missing"),
])
def test_cut_clips_refuses_bad_input_with_one_line(tmp_path, make, args, message):
    clips = tmp_path / "clips"
    if make:
        clips.mkdir()
    if make == "broken":
        (clips / "clip_000.npz").write_bytes(b"PK\x03\x04broken")
        (clips / "clip_000.mp4").write_bytes(b"")
    if make == "missing video":
        write_clip(clips, 0, np.stack([standing(64, 120, 24)] * 3))
        (clips / "clip_000.mp4").unlink()
    names = {"NOWHERE": tmp_path / "nowhere", "OUT": tmp_path / "out", "CLIPS": clips}
    r = subprocess.run([sys.executable, "-m", "train.synth.cut_clips", *[str(names.get(a, a)) for a in args]],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.strip().splitlines() if "cutting clips" not in line]
    assert len(lines) == 1 and message in lines[0], r.stderr


def test_cut_clips_will_not_write_over_its_source(tmp_path):
    r = subprocess.run([sys.executable, "-m", "train.synth.cut_clips", "--clips", str(tmp_path),
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--out must differ from --clips" in r.stderr


def test_an_interrupted_encode_leaves_no_video(tmp_path: Path) -> None:
    """A clip cut short by Ctrl-C (74 KB of it) or SIGTERM (48 bytes) was left behind as a broken
    video; the file is written whole or not at all."""
    from train.h264 import write_h264

    def frames(interrupt_after: int):
        for i in range(10):
            if i == interrupt_after:
                raise KeyboardInterrupt
            yield np.full((64, 64, 3), 20 * i, np.uint8)

    out = tmp_path / "clip_000.mp4"
    with pytest.raises(KeyboardInterrupt):
        write_h264(out, frames(5), 64, 25)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="no frames"):
        write_h264(out, iter(()), 64, 25)
    assert list(tmp_path.iterdir()) == []
    assert write_h264(out, frames(99), 64, 25) == 10
    assert [p.name for p in tmp_path.iterdir()] == ["clip_000.mp4"]
