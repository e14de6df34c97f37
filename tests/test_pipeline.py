"""The whole pipeline, end to end: real video files, real processes, the `posecast` command.

The default model is the shipped trained one; the untrained network of configs/model.yaml (what
the default was before weights shipped) is run explicitly with `--model`. Tests of the pipeline's
mechanics that need people in the output pass `--min-score 0`, which reports a person whatever
the network's confidence, so they do not depend on the weights. Every run is checked for
leftovers by the `posecast` fixture (conftest.py): no process of the run alive afterwards, no
shared-memory ring, no socket folder.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import shutil
import signal
import sys
import time
import types
from pathlib import Path

import av
import cv2
import numpy as np
import psutil
import pytest

from conftest import comm_of, is_spawned_child, is_stage_server
from engines.errors import InputError
from streamer.proctitle import comm_name, stage_title
from streamer.stage_server import SERVER_TITLE
from streamer.tracks import read_track
from train.motion import bvh_forward_kinematics, parse_bvh

H36M_ORDER = ["pelvis", "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "spine", "thorax",
              "neck_nose", "head_top", "l_shoulder", "l_elbow", "l_wrist", "r_shoulder", "r_elbow", "r_wrist"]
STAGES = ("capture", "infer", "align", "output")
NOTE_UNTRAINED = "its poses are not meaningful"


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("posecast: error:")]


def assert_clean_stderr(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr


def assert_meta(meta: dict, size: tuple[int, int], trained: bool = True) -> None:
    assert meta["type"] == "meta"
    assert meta["joint_names"] == H36M_ORDER
    assert meta["skeleton"] == "h36m17" and meta["origin"] == "pelvis"
    assert meta["units"] == {"joints_3d": "m", "joints_2d": "px", "t_capture": "s (unix time)"}
    assert meta["axes"] == {"x": "right", "y": "down", "z": "forward", "handedness": "right", "frame": "camera",
                            "units": "m", "up": "-y", "forward": "+z"}
    assert meta["image_size"] == list(size)
    assert meta["model"]["trained"] is trained


def assert_person(p: dict, track: int = 0) -> None:
    j3, j2, conf = np.array(p["joints_3d"]), np.array(p["joints_2d"]), np.array(p["conf"])
    assert j3.shape == (17, 3) and j2.shape == (17, 2) and conf.shape == (17,)
    assert np.all(j3[0] == 0.0)                      # pelvis is the origin
    assert np.isfinite(j3).all() and np.isfinite(j2).all()
    assert ((conf >= 0) & (conf <= 1)).all()
    assert len(p["bbox"]) == 4 and isinstance(p["score"], float) and p["id"] == track


def assert_contiguous(poses: list[dict]) -> None:
    assert [p["seq"] for p in poses] == list(range(len(poses)))


def wait_for_lines(path: Path, n: int, proc, timeout: float = 60.0) -> int:
    """Until `path` has at least n lines (meta included); fails if the run ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            count = path.read_bytes().count(b"\n")
            if count >= n:
                return count
        assert proc.poll() is None, f"posecast ended early ({proc.returncode}): {proc.stderr.read()}"
        time.sleep(0.02)
    pytest.fail(f"{path} did not reach {n} lines in {timeout:.0f} s")


def stage_processes(proc, timeout: float = 30.0) -> dict[str, psutil.Process]:
    """The four stage processes of a running posecast, by name: each names itself posecast[STAGE]
    as it starts (streamer/proctitle.py), which its comm holds cut to 15 bytes. They are forked
    from the stage server (streamer/stage_server.py), a child of the parent."""
    parent = psutil.Process(proc.pid)
    stage_of = {comm_name(stage_title(stage)).decode(): stage for stage in STAGES}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = {stage_of.get(comm_of(c.pid) or ""): c for c in parent.children(recursive=True)}
        found.pop(None, None)
        if len(found) == len(STAGES):
            return {stage: found[stage] for stage in STAGES}
        time.sleep(0.05)
    pytest.fail("the four stage processes did not appear")


# --- the stage processes' names ----------------------------------------------------------------

def test_each_stage_process_is_named_for_its_stage(posecast, clip600: Path, tmp_path: Path) -> None:
    """In ps, top and htop the stages were four alike `python ... spawn_main(...)`: each now names
    itself posecast[STAGE] (the comm cut to the kernel's 15 bytes), the server they are forked from
    posecast[stages], and the parent keeps its name.
    Where setproctitle is installed the command line says it whole, and the environment a
    process started with is still there to read (/proc/PID/environ: the tests find a run's
    processes by it)."""
    track = tmp_path / "t.jsonl"
    proc = posecast.start(["track", clip600, "-o", track, "--batch-size", "1", "--min-score", "0", "--no-progress"],
                          start_new_session=True)
    try:
        wait_for_lines(track, 4, proc)           # every stage is running
        kids = [c for c in psutil.Process(proc.pid).children(recursive=True)
                if "resource_tracker" not in " ".join(c.cmdline())]
        comms = sorted(str(comm_of(c.pid)) for c in kids)
        cmdlines = sorted(" ".join(c.cmdline()).strip() for c in kids)
        parent_comm = comm_of(proc.pid)
        tagged = {p.pid for p in posecast.survivors(proc)}
    finally:
        with contextlib.suppress(ProcessLookupError):      # looked at (or failed to): end the run
            os.killpg(proc.pid, signal.SIGINT)
        r = posecast.finish(proc, timeout=30)
    assert comms == sorted(["posecast[captur", "posecast[infer]", "posecast[align]", "posecast[output",
                            "posecast[stages"])
    assert parent_comm == Path(sys.executable).name[:15]      # `posecast` when started as that
    assert {c.pid for c in kids} <= tagged
    try:
        import setproctitle  # noqa: F401
    except ImportError:
        pass
    else:
        assert cmdlines == sorted([*(stage_title(s) for s in STAGES), SERVER_TITLE])
    assert r.returncode == 130, r.stderr
    assert_clean_stderr(r.stderr)


# --- a normal run ------------------------------------------------------------------------------

def test_track_to_every_format_and_overlay(posecast, clip40: Path, tmp_path: Path) -> None:
    r = posecast.run(["track", clip40, "-o", "t.jsonl", "-o", "t.csv", "-o", "t.npz", "-o", "t.bvh",
                      "--overlay", "o.mp4", "--min-score", "0", "--no-progress"])
    assert r.returncode == 0, r.stderr
    assert_clean_stderr(r.stderr)
    assert NOTE_UNTRAINED not in r.stderr                 # the default model is trained
    assert "40 frames" in r.stderr and "person found in 40" in r.stderr

    # JSONL: meta, then exactly one pose line per frame, in order, then the end.
    lines = (tmp_path / "t.jsonl").read_text().splitlines()
    assert len(lines) == 1 + 40 + 1 and json.loads(lines[-1])["reason"] == "end_of_input"
    meta, poses = read_track(tmp_path / "t.jsonl")
    assert meta == json.loads(lines[0])
    assert_meta(meta, (160, 120))
    assert meta["fps"] == pytest.approx(30.0)
    assert_contiguous(poses)
    assert len(poses) == 40
    for i, pose in enumerate(poses):
        assert pose["type"] == "pose" and pose["image_size"] == [160, 120]
        assert pose["t_media"] == pytest.approx(i / 30, abs=1e-3)
        assert len(pose["people"]) == 1
        assert_person(pose["people"][0])
    t_capture = [p["t_capture"] for p in poses]
    assert all(b >= a for a, b in zip(t_capture, t_capture[1:])) and t_capture[-1] > t_capture[0]
    assert abs(t_capture[0] - time.time()) < 300

    # CSV: one row per frame (one person each), the meta in the sidecar.
    with open(tmp_path / "t.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(row["seq"]) for row in rows] == list(range(40))
    assert rows[0]["pelvis_x3d"] == "0.0" and rows[0]["person_id"] == "0"
    assert float(rows[5]["r_wrist_u"]) == pytest.approx(poses[5]["people"][0]["joints_2d"][16][0], abs=0.01)
    assert json.loads((tmp_path / "t.meta.json").read_text())["joint_names"] == H36M_ORDER

    # NPZ: dense arrays, N = 40.
    with np.load(tmp_path / "t.npz") as z:
        assert z["seq"].tolist() == list(range(40))
        assert z["joints_3d"].shape == (40, 17, 3) and z["joints_2d"].shape == (40, 17, 2)
        assert z["conf"].shape == (40, 17) and z["bbox"].shape == (40, 4)
        assert z["found"].all()
        assert np.allclose(z["joints_3d"][:, 0], 0.0)
        assert np.allclose(z["t_media"], np.arange(40) / 30, atol=1e-3)
        assert json.loads(str(z["meta_json"]))["joint_names"] == H36M_ORDER

    # BVH: one row per frame at the clip's rate; the rigid skeleton puts the joints near the track's,
    # once its levelling turn is undone (tests/test_bvh.py checks the geometry exactly).
    from streamer.bvh_solve import best_rotation

    clip = parse_bvh((tmp_path / "t.bvh").read_text())
    assert clip.motion.shape[0] == 40 and clip.frame_time == pytest.approx(1 / 30)
    fk = bvh_forward_kinematics(clip.skeleton, clip.motion)
    from engines.skeleton import H36M17

    names = [n if n in clip.skeleton.names else f"{H36M_ORDER[H36M17.parents[j]]}_End" for j, n in enumerate(H36M_ORDER)]
    got = fk[:, [clip.skeleton.index(n) for n in names]]
    got -= got[:, :1]
    want = np.array([p["people"][0]["joints_3d"] for p in poses]) * [100.0, -100.0, -100.0]
    turn = best_rotation(want.reshape(-1, 3), got.reshape(1, -1, 3))[0]
    assert np.linalg.norm(got - want @ turn.T, axis=-1).mean() < 5.0          # centimetres

    # Overlay: a video with every frame, at the input's size.
    with av.open(str(tmp_path / "o.mp4")) as c:
        frames = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
    assert len(frames) == 40
    assert frames[0].shape == (120, 160, 3)


@pytest.mark.parametrize("batch", [1, 8])
def test_untrained_model_finds_nobody_but_every_frame_has_a_line(posecast, untrained_model, clip40: Path,
                                                                 tmp_path: Path, batch: int) -> None:
    """The untrained model is not sure of anyone at the default thresholds: `people: []`, still
    one line per frame, in order, whatever the batch size; the command line and the meta say
    that the model is untrained."""
    r = posecast.run(["track", clip40, "-o", "t.jsonl", "--batch-size", batch,
                      "--model", untrained_model.checkpoint_path])
    assert r.returncode == 0, r.stderr
    assert_clean_stderr(r.stderr)
    assert NOTE_UNTRAINED in r.stderr
    assert "person found in 0" in r.stderr
    meta, poses = read_track(tmp_path / "t.jsonl")
    assert_meta(meta, (160, 120), trained=False)
    assert len(poses) == 40
    assert_contiguous(poses)
    assert all(p["people"] == [] for p in poses)
    assert [round(p["t_media"] * 30) for p in poses] == list(range(40))


def test_default_model_finds_the_walker_at_default_thresholds(posecast, clip40: Path, tmp_path: Path) -> None:
    """The shipped weights on the synthetic clip: a person in every frame, near the clip's ground
    truth (median joint error 0.018 of the person's height, 0.027 in the worst frame, when
    measured; bounds at about three times that), with no "untrained" note."""
    from streamer.synthclip import WalkScene

    r = posecast.run(["track", clip40, "-o", "t.jsonl", "--no-progress"])
    assert r.returncode == 0, r.stderr
    assert_clean_stderr(r.stderr)
    assert NOTE_UNTRAINED not in r.stderr
    meta, poses = read_track(tmp_path / "t.jsonl")
    assert_meta(meta, (160, 120))
    found = [p for p in poses if p["people"]]
    assert len(found) == len(poses) == 40, r.stderr
    scene = WalkScene(160, 120)
    errors = []
    for p in found:
        truth = scene.joints_2d(p["seq"] / 30)         # frame i is the scene at i / fps
        height = truth[:, 1].max() - truth[:, 1].min()
        errors.append(np.median(np.linalg.norm(np.array(p["people"][0]["joints_2d"]) - truth, axis=1)) / height)
    assert np.median(errors) < 0.05 and max(errors) < 0.1, errors


def test_the_camera_given_is_the_camera_in_the_meta(posecast, clip40: Path, tmp_path: Path) -> None:
    r = posecast.run(["track", clip40, "-o", "a.jsonl", "--no-progress", "--focal", "200", "--principal", "70", "50.5"])
    assert r.returncode == 0, r.stderr
    camera = read_track(tmp_path / "a.jsonl")[0]["camera"]
    assert (camera["fx"], camera["fy"], camera["cx"], camera["cy"]) == (200.0, 200.0, 70.0, 50.5)
    assert camera["focal"] == camera["principal"] == "given"
    r = posecast.run(["track", clip40, "-o", "b.jsonl", "--no-progress"])
    assert r.returncode == 0, r.stderr
    camera = read_track(tmp_path / "b.jsonl")[0]["camera"]
    assert (camera["cx"], camera["cy"]) == (80.0, 60.0) and camera["principal"] == "the image centre"
    assert camera["focal"] == "assumed from a 60 degree field of view"
    # Both run the same frames through the same network: only the camera moved the roots.
    a, b = read_track(tmp_path / "a.jsonl")[1], read_track(tmp_path / "b.jsonl")[1]
    roots = [(x["people"][0]["root_3d"], y["people"][0]["root_3d"]) for x, y in zip(a, b) if x["people"]]
    assert roots and all(ra != rb for ra, rb in roots)


def _write_pngs(folder: Path, n: int, w: int, h: int) -> None:
    from streamer.synthclip import WalkScene

    folder.mkdir()
    scene = WalkScene(w + (w % 2), h + (h % 2))
    for i in range(n):
        image, _ = scene.render_frame(i / 10)
        assert cv2.imwrite(str(folder / f"frame{i + 1}.png"), image[:h, :w])
    (folder / "notes.txt").write_text("not an image")


def test_image_folder_with_odd_size_and_overlay(posecast, tmp_path: Path) -> None:
    _write_pngs(tmp_path / "frames", 5, 161, 121)
    r = posecast.run(["track", "frames", "-o", "t.jsonl", "--overlay", "o.mp4", "--min-score", "0"])
    assert r.returncode == 0, r.stderr
    assert_clean_stderr(r.stderr)
    meta, poses = read_track(tmp_path / "t.jsonl")
    assert_meta(meta, (161, 121))
    assert len(poses) == 5
    assert_contiguous(poses)
    assert all(p["t_media"] is None and len(p["people"]) == 1 for p in poses)
    for k, p in enumerate(poses):
        assert_person(p["people"][0], track=k)                   # each image its own track (shots)
    with av.open(str(tmp_path / "o.mp4")) as c:
        frames = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
    assert len(frames) == 5
    assert frames[0].shape == (122, 162, 3)          # padded to even for yuv420p


def test_an_image_folder_is_shots_unless_told_it_is_a_sequence(posecast, tmp_path: Path) -> None:
    """Shots (the default): each image searched afresh, its person a track of its own. A sequence:
    the region carries, so the walker of these frames is one track."""
    _write_pngs(tmp_path / "frames", 4, 160, 120)
    shots, _ = _person_ids(posecast, tmp_path, "frames", "")
    seq, _ = _person_ids(posecast, tmp_path, "frames", "folder_images: sequence")
    assert (shots, seq) == ([0, 1, 2, 3], [0, 0, 0, 0])


def _person_ids(posecast, tmp_path: Path, source: str, tracking: str) -> tuple[list[int], str]:
    """The person ids `posecast track` gives each frame of `source` (everyone found) with the
    `tracking:` keys given, and its stderr."""
    extra = []
    if tracking:
        (tmp_path / "t.yaml").write_text(f"tracking:\n  {tracking}\n")
        extra = ["--config", "t.yaml"]
    r = posecast.run(["track", source, "-o", "ids.jsonl", "--min-score", "0", *extra])
    assert r.returncode == 0, r.stderr
    _, poses = read_track(tmp_path / "ids.jsonl")
    return [p["people"][0]["id"] for p in poses], r.stderr


def test_a_cut_between_shots_starts_a_track(posecast, tmp_path: Path) -> None:
    """The second shot: the walker's room mirrored and in other colours, from frame 8."""
    from streamer.synthclip import WalkScene

    scene = WalkScene(160, 120)
    with av.open(str(tmp_path / "cut.mp4"), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for i in range(16):
            image, _ = scene.render_frame(i / 10)
            if i >= 8:
                image = np.ascontiguousarray(image[:, ::-1, ::-1])
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    cuts, said = _person_ids(posecast, tmp_path, "cut.mp4", "")
    assert cuts == [0] * 8 + [1] * 8 and "1 cut between shots" in said
    off, said = _person_ids(posecast, tmp_path, "cut.mp4", "shot_cut_diff: 0")
    assert off == [0] * 16 and "between shots" not in said


def test_a_skipped_image_leaves_every_record_named(posecast, tmp_path: Path) -> None:
    # `seq` counts the images read; after an unreadable one, the name says which file is which.
    _write_pngs(tmp_path / "frames", 5, 160, 120)
    (tmp_path / "frames" / "frame3.png").write_bytes(b"not a png")
    r = posecast.run(["track", "frames", "-o", "t.jsonl", "-o", "t.csv", "-o", "t.npz", "--min-score", "0"])
    assert r.returncode == 3, r.stderr                 # the input was damaged: said, and counted
    _, poses = read_track(tmp_path / "t.jsonl")
    assert_contiguous(poses)
    named = ["frame1.png", "frame2.png", "frame4.png", "frame5.png"]
    assert [p["image"] for p in poses] == named
    with np.load(tmp_path / "t.npz") as arrays:
        assert arrays["image"].tolist() == named
    with open(tmp_path / "t.csv") as f:
        assert [row["image"] for row in csv.DictReader(f)] == named


def test_image_folder_of_mixed_sizes_with_overlay(posecast, tmp_path: Path) -> None:
    """Each pose keeps its own image's size; the overlay video takes the largest and pads."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.full((120, 200, 3), 90, np.uint8))
    cv2.imwrite(str(folder / "b.png"), np.full((160, 100, 3), 90, np.uint8))
    r = posecast.run(["track", "mixed", "-o", "t.jsonl", "--overlay", "o.mp4", "--min-score", "0"])
    assert r.returncode == 0, r.stderr
    assert_clean_stderr(r.stderr)
    _, poses = read_track(tmp_path / "t.jsonl")
    assert [p["image_size"] for p in poses] == [[200, 120], [100, 160]]
    with av.open(str(tmp_path / "o.mp4")) as c:
        frames = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
    assert len(frames) == 2 and frames[0].shape == (160, 200, 3)


def test_image_glob(posecast, tmp_path: Path) -> None:
    _write_pngs(tmp_path / "frames", 5, 160, 120)
    (tmp_path / "frames" / "frame1.png").rename(tmp_path / "frames" / "skip1.jpeg.bak")
    r = posecast.run(["track", "frames/frame*.png", "-o", "t.jsonl"])
    assert r.returncode == 0, r.stderr
    _, poses = read_track(tmp_path / "t.jsonl")
    assert len(poses) == 4
    assert_contiguous(poses)


# --- Ctrl-C ------------------------------------------------------------------------------------

def test_ctrl_c_finishes_what_is_in_flight_and_exits_130(posecast, clip600: Path, tmp_path: Path) -> None:
    track = tmp_path / "t.jsonl"
    proc = posecast.start(["track", clip600, "-o", track, "--batch-size", "1", "--min-score", "0"],
                          start_new_session=True)
    wait_for_lines(track, 4, proc)
    os.killpg(proc.pid, signal.SIGINT)             # what the terminal does: the whole group
    r = posecast.finish(proc, timeout=30)
    assert r.returncode == 130, r.stderr
    assert_clean_stderr(r.stderr)
    assert r.stderr.strip().splitlines()[-1] == "posecast: interrupted (SIGINT); everything processed so far was written"
    assert not error_lines(r.stderr)
    meta, poses = read_track(track)
    assert_meta(meta, (320, 240))
    assert 3 <= len(poses) < 600
    assert_contiguous(poses)
    assert re.search(rf"\b{len(poses)} frames in ", r.stderr), r.stderr   # the summary counts the same


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid ...": comm may hold spaces, so split after its ')'.
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return kids


def test_ctrl_c_while_the_stages_start_is_an_interruption_not_a_crash(posecast, clip600: Path, tmp_path: Path) -> None:
    # A stage process imports for a second before it can leave the signal to the parent; a Ctrl-C
    # then killed it with a traceback and the run "failed" (exit 1). Sent as soon as the first
    # stage process exists, it must stop the run as any Ctrl-C does.
    track, overlay = tmp_path / "t.jsonl", tmp_path / "o.mp4"
    proc = posecast.start(["track", clip600, "-o", track, "--overlay", overlay, "--min-score", "0", "--no-progress"],
                          start_new_session=True)
    while not _children(proc.pid) and proc.poll() is None:
        time.sleep(0.002)
    os.killpg(proc.pid, signal.SIGINT)
    r = posecast.finish(proc, timeout=120)
    assert r.returncode == 130, r.stderr
    assert_clean_stderr(r.stderr)
    assert not error_lines(r.stderr)
    # Stopped before its first frame, the run makes no file, and says so in one line: not after
    # "no frame reached the overlay video" and a summary of 0 frames written "-> nowhere".
    if not track.exists():
        assert not overlay.exists()
        assert r.stderr.strip().splitlines() == [
            "posecast: interrupted (SIGINT) before the first frame; no file was written"], r.stderr
    else:
        assert r.stderr.strip().splitlines()[-1] == \
            "posecast: interrupted (SIGINT); everything processed so far was written"
    if track.exists():
        _, poses = read_track(track)
        assert_contiguous(poses)


def test_a_run_under_nohup_outlives_a_hangup(posecast, clip600: Path, tmp_path: Path) -> None:
    # A SIGHUP that was ignored when posecast started (nohup) stays ignored: the run goes on.
    track = tmp_path / "t.jsonl"
    proc = posecast.start(["track", clip600, "-o", track, "--batch-size", "1", "--min-score", "0", "--no-progress"],
                          preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    wait_for_lines(track, 2, proc)
    proc.send_signal(signal.SIGHUP)
    r = posecast.finish(proc, timeout=60)
    assert r.returncode == 0, r.stderr
    assert len(read_track(track)[1]) == 600


def test_sigterm_to_the_group_stops_cleanly_with_files_finished(posecast, clip600: Path, tmp_path: Path) -> None:
    """What `timeout`, systemd and docker do: SIGTERM to every process. The stages leave it to
    the parent, which finishes the frames in flight, closes the overlay video properly and exits
    128 + 15."""
    track, overlay = tmp_path / "t.jsonl", tmp_path / "o.mp4"
    proc = posecast.start(["track", clip600, "-o", track, "--overlay", overlay, "--batch-size", "1",
                           "--min-score", "0"], start_new_session=True)
    wait_for_lines(track, 4, proc)
    os.killpg(proc.pid, signal.SIGTERM)
    r = posecast.finish(proc, timeout=30)
    assert r.returncode == 143, r.stderr
    assert_clean_stderr(r.stderr)
    assert not error_lines(r.stderr)
    _, poses = read_track(track)
    assert_contiguous(poses)
    with av.open(str(overlay)) as container:                 # a finished, decodable video
        frames = sum(1 for _ in container.decode(video=0))
    assert frames == len(poses)


def test_a_hangup_to_the_group_stops_cleanly_without_tracebacks(posecast, clip600: Path, tmp_path: Path) -> None:
    """A closed terminal: SIGHUP to every process, multiprocessing's resource tracker included.
    The tracker ignores SIGINT and SIGTERM but not SIGHUP: killed, it was started again mid-run,
    and the new one printed a traceback for each of the run's semaphores after the one line."""
    track = tmp_path / "t.jsonl"
    proc = posecast.start(["track", clip600, "-o", track, "--batch-size", "1", "--min-score", "0", "--no-progress"],
                          start_new_session=True)
    wait_for_lines(track, 4, proc)
    os.killpg(proc.pid, signal.SIGHUP)
    r = posecast.finish(proc, timeout=30)
    assert r.returncode == 129, r.stderr
    assert_clean_stderr(r.stderr)
    assert "resource_tracker" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1] == "posecast: interrupted (SIGHUP); everything processed so far was written"
    _, poses = read_track(track)
    assert_contiguous(poses)


# --- a stage dies ------------------------------------------------------------------------------

KILLED_HOW = ("(SIGKILL: by another program, or by the system when memory ran out; then close other programs or "
              "give a smaller input)")


@pytest.mark.parametrize("stage", STAGES)
def test_killed_stage_stops_the_run(posecast, clip600: Path, tmp_path: Path, stage: str) -> None:
    track = tmp_path / "t.jsonl"
    proc = posecast.start(["track", clip600, "-o", track, "--batch-size", "1", "--min-score", "0"],
                          start_new_session=True)
    stages = stage_processes(proc)
    wait_for_lines(track, 6, proc)
    stages[stage].send_signal(signal.SIGKILL)
    r = posecast.finish(proc, timeout=30)
    assert r.returncode == 1, r.stderr
    assert_clean_stderr(r.stderr)
    errors = error_lines(r.stderr)
    # SIGKILL is what the system's OOM killer sends: the line says so, and what to do.
    assert errors == [f"posecast: error: the {stage} stage was killed by signal 9 {KILLED_HOW}; the run was stopped"], \
        r.stderr

    data = track.read_text()
    if stage == "output":
        # The writer itself died: the file may end inside a line, every complete line parses.
        complete = data.split("\n")[:-1]
        msgs = [json.loads(line) for line in complete]
        assert msgs[0]["type"] == "meta"
        poses = msgs[1:]
    else:
        assert data.endswith("\n")
        _, poses = read_track(track)
    assert 5 <= len(poses) < 600
    assert_contiguous(poses)


def stage_server(proc) -> psutil.Process:
    """The process a run's stages are forked from (streamer/stage_server.py)."""
    stage_processes(proc)
    (server,) = [c for c in psutil.Process(proc.pid).children() if is_stage_server(c)]
    return server


def test_a_killed_stage_server_is_said_as_such(posecast, clip600: Path, tmp_path: Path) -> None:
    """The stages are forked from one server process. Killed mid-run, it can no longer report
    their exits, which multiprocessing then gives as 255 for each: the line blamed a stage ("the
    capture stage exited with code 255"). It names the server, and the stages, orphaned, still
    end with the run and write every frame they took."""
    track = tmp_path / "t.jsonl"
    proc = posecast.start(["track", clip600, "-o", track, "--batch-size", "1", "--min-score", "0"],
                          start_new_session=True)
    server = stage_server(proc)
    wait_for_lines(track, 6, proc)
    server.send_signal(signal.SIGKILL)
    r = posecast.finish(proc, timeout=30)
    assert r.returncode == 1, r.stderr
    assert_clean_stderr(r.stderr)
    assert error_lines(r.stderr) == [f"posecast: error: the stages' server process ({SERVER_TITLE}) was killed by "
                                     f"signal 9 {KILLED_HOW}; the run was stopped"], r.stderr
    _, poses = read_track(track)
    assert 5 <= len(poses) < 600
    assert_contiguous(poses)


def test_a_stage_stuck_as_its_server_is_killed_does_not_outlive_the_run(posecast, clip600: Path,
                                                                         tmp_path: Path) -> None:
    """A dead server says every stage it forked ended (255), so a stage stuck at that moment (a
    full pipe, a hung read; stopped here) was never killed: the command ended and left it running
    for good, holding the terminal's stderr. It is killed as any stage that does not end is."""
    track = tmp_path / "t.jsonl"
    proc = posecast.start(["track", clip600, "-o", track, "--batch-size", "1", "--min-score", "0"],
                          start_new_session=True)
    server = stage_server(proc)
    wait_for_lines(track, 6, proc)
    stage_processes(proc)["infer"].send_signal(signal.SIGSTOP)
    server.send_signal(signal.SIGKILL)
    r = posecast.finish(proc, timeout=60)      # and no process of the run is left (finish checks)
    assert r.returncode == 1, r.stderr
    assert_clean_stderr(r.stderr)
    assert error_lines(r.stderr) == [f"posecast: error: the stages' server process ({SERVER_TITLE}) was killed by "
                                     f"signal 9 {KILLED_HOW}; the run was stopped"], r.stderr


def test_a_batch_goes_on_with_a_new_stage_server(posecast, clip40: Path, clip600: Path, tmp_path: Path) -> None:
    """The server killed during a batch's first input fails that input alone: the next is forked
    from a new server and tracked whole."""
    first, second = tmp_path / "first.mp4", tmp_path / "second.mp4"
    first.symlink_to(clip600)
    second.symlink_to(clip40)
    proc = posecast.start(["track", first, second, "-o", tmp_path / "{name}.jsonl", "--batch-size", "1",
                           "--min-score", "0", "--no-progress"], start_new_session=True)
    server = stage_server(proc)
    wait_for_lines(tmp_path / "first.jsonl", 6, proc)
    server.send_signal(signal.SIGKILL)
    r = posecast.finish(proc, timeout=60)
    assert r.returncode == 1, r.stderr
    assert_clean_stderr(r.stderr)
    assert "(posecast[stages]) was killed by signal 9" in r.stderr
    _, poses = read_track(tmp_path / "second.jsonl")
    assert len(poses) == 40
    assert_contiguous(poses)


# A TEST DOUBLE's fault, put into every process of a posecast run by Python's sitecustomize hook
# (on the run's PYTHONPATH only): one stage's per-frame (or per-batch) method raises at its N-th call.
FAULTY_STAGE = """
import importlib, os
fault = os.environ.get("POSECAST_TEST_FAULT", "")
if fault:
    where, calls = fault.rsplit(":", 1)
    module, cls, method = where.split(".")
    owner = getattr(importlib.import_module("streamer.stages." + module), cls)
    original, seen = getattr(owner, method), [0]

    def failing(self, *args, **kwargs):
        seen[0] += 1
        if seen[0] == int(calls):
            raise RuntimeError(f"test double: {method} failed at call {calls}")
        return original(self, *args, **kwargs)

    setattr(owner, method, failing)
"""


@pytest.mark.parametrize("stage, method", [("infer", "InferStage._process"), ("align", "AlignStage.align")])
def test_a_failed_stage_writes_every_frame_before_it(posecast, clip600: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch, stage: str, method: str) -> None:
    """The inference or the align stage fails at frame 40 of a file. The 39 frames before it had
    gone on, up to 20 of them held back by the align stage's smoother and refiner: the run stopped
    at once and they were lost. The failing stage now ends the input there, as a failing source
    does (the align stage after sending on what its filters held, unsmoothed): every one is written."""
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(FAULTY_STAGE)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(inject), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("POSECAST_TEST_FAULT", f"{stage}.{method}:40")
    track, video = tmp_path / "t.jsonl", tmp_path / "t.mp4"
    r = posecast.run(["track", clip600, "-o", track, "--overlay", video, "--batch-size", "1", "--no-progress"])
    assert r.returncode == 1, r.stderr
    errors = error_lines(r.stderr)
    name = method.split(".")[1]
    assert len(errors) == 1 and errors[0].startswith(
        f"posecast: error: the {stage} stage failed (RuntimeError: test double: {name} failed at call 40)"), r.stderr
    _, poses = read_track(track)
    assert len(poses) == 39
    assert_contiguous(poses)
    assert all(p["people"] and p["people"][0]["joints_3d"] is not None for p in poses)
    with av.open(str(video)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 39


# The inference stage's second batch takes a while and then fails: meanwhile the capture fills
# the frame ring and waits for a slot, which the frames after the failure never give back.
SLOW_FAULTY_INFER = """
import time
from streamer.stages.infer import InferStage

process, seen = InferStage._process, [0]

def failing(self, *args, **kwargs):
    seen[0] += 1
    if seen[0] == 2:
        time.sleep(2.0)
        raise RuntimeError("test double: the network failed after the ring filled")
    return process(self, *args, **kwargs)

InferStage._process = failing
"""


def test_a_stage_failing_while_the_ring_is_full_ends_the_run_at_once(posecast, clip600: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The capture waited for a free ring slot until the run was aborted, not when it was
    stopped: after a stage failed with the ring full, the run sat out the 10 s grace and ended with
    a second line ("frames in flight did not finish"). A stop now ends the capture's wait."""
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(SLOW_FAULTY_INFER)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(inject), os.environ.get("PYTHONPATH", "")]))
    track = tmp_path / "t.jsonl"
    r = posecast.run(["track", clip600, "-o", track, "--batch-size", "1", "--no-progress"])
    assert r.returncode == 1, r.stderr
    assert "did not finish" not in r.stderr, r.stderr
    errors = error_lines(r.stderr)
    assert len(errors) == 1 and "the network failed after the ring filled" in errors[0], r.stderr
    _, poses = read_track(track)
    assert len(poses) == 1


@pytest.mark.parametrize("stage, method", [("infer", "InferStage._process"), ("align", "AlignStage.align")])
def test_a_failed_stage_does_not_report_counts_that_never_reached_it(posecast, clip40: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch, stage: str,
                                                                     method: str) -> None:
    """A stage that fails mid-run ends the input itself, without the counts of the stages before
    it: the summary said "0 stale frames dropped" of a live run whatever was dropped, and after an
    align failure `--stats` said 0 network runs. It now says only what it knows."""
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(FAULTY_STAGE)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(inject), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("POSECAST_TEST_FAULT", f"{stage}.{method}:20")
    live = posecast.run(["run", clip40, "--port", "0", "-o", tmp_path / "live.jsonl", "--no-progress"], timeout=120)
    assert live.returncode == 1, live.stderr
    assert re.search(r"^posecast: 19 frames in ", live.stderr, re.M), live.stderr
    assert "stale frames dropped" not in live.stderr, live.stderr
    filed = posecast.run(["track", clip40, "-o", tmp_path / "t.jsonl", "--batch-size", "1", "--stats",
                          "--no-progress"])
    assert filed.returncode == 1, filed.stderr
    if stage == "align":
        assert "network runs: 0" not in filed.stderr
        assert "network runs, searches and tracks: not known" in filed.stderr, filed.stderr
    else:
        assert re.search(r"^network runs: [1-9]", filed.stderr, re.M), filed.stderr    # the tracker counted them


# The align stage's filters fail as they let the last frames go at the end of the input.
FAULTY_END_FLUSH = """
import sys
from streamer.stages.align import AlignStage

flush = AlignStage.flush

def failing(self):
    if sys._getframe(1).f_code.co_name == "run":      # the END's flush, not a new track's
        raise RuntimeError("test double: the filters failed at the end")
    return flush(self)

AlignStage.flush = failing
"""


def test_an_align_stage_failing_at_the_end_writes_every_frame(posecast, clip40: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """At the end of a file the align stage holds the last `filter.file_lag` frames (and the
    refiner's). A failure as it let them go lost them, and the summary: they are sent on as
    measured, as for a failure mid-file, and the run then reports the fault."""
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(FAULTY_END_FLUSH)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(inject), os.environ.get("PYTHONPATH", "")]))
    track = tmp_path / "t.jsonl"
    r = posecast.run(["track", clip40, "-o", track, "--batch-size", "1", "--min-score", "0", "--no-progress"])
    assert r.returncode == 1, r.stderr
    errors = error_lines(r.stderr)
    assert len(errors) == 1 and errors[0].startswith(
        "posecast: error: the align stage failed (RuntimeError: test double: the filters failed at the end)"), r.stderr
    _, poses = read_track(track)
    assert len(poses) == 40
    assert_contiguous(poses)
    assert all(p["people"] and p["people"][0]["joints_3d"] is not None for p in poses)
    assert re.search(r"^posecast: 40 frames in ", r.stderr, re.M), r.stderr     # the summary, as for any end


@pytest.mark.parametrize("overlay", [False, True], ids=["tracks", "tracks and overlay"])
def test_a_killed_output_stage_says_its_npz_was_lost(posecast, clip600: Path, tmp_path: Path, overlay: bool) -> None:
    track, arrays, video = tmp_path / "t.jsonl", tmp_path / "t.npz", tmp_path / "t.mp4"
    proc = posecast.start(["track", clip600, "-o", track, "-o", arrays, "--batch-size", "1", "--min-score", "0",
                           *(["--overlay", video] if overlay else [])], start_new_session=True)
    stages = stage_processes(proc)
    wait_for_lines(track, 6, proc)
    stages["output"].send_signal(signal.SIGKILL)
    r = posecast.finish(proc, timeout=30)
    assert r.returncode == 1, r.stderr
    assert error_lines(r.stderr) == [
        f"posecast: error: the output stage was killed by signal 9 {KILLED_HOW}; the run was stopped; t.npz could "
        "not be written (.npz and .bvh are written at the end of a run: use .jsonl or .csv for a track that survives a crash)"
        + ("; the overlay video t.mp4 was unfinished and no player could open it, so it was removed" if overlay
           else "")]
    assert not arrays.exists() and not video.exists()


class _HungProcess:
    """A stage process stuck for good (in a write to a pipe nobody reads) until it is killed."""

    exitcode: int | None = None

    def join(self, timeout: float | None = None) -> None:
        pass

    def is_alive(self) -> bool:
        return self.exitcode is None

    def kill(self) -> None:
        self.exitcode = -signal.SIGKILL


@pytest.mark.parametrize("earlier_error", [None, "the capture stage was killed by signal 9; the run was stopped"])
def test_an_output_stage_killed_for_hanging_says_what_was_lost(tmp_path: Path, earlier_error: str | None) -> None:
    """Stopped (Ctrl-C) while the output stage hung on a write, the run kills it after the grace
    periods: its .npz was never written and its overlay never finished, so the run must not end
    with "everything processed so far was written" and exit 130."""
    import threading

    from streamer.pipeline import Pipeline, RunRequest
    from streamer.stages.base import Control

    video = tmp_path / "o.mp4"
    video.write_bytes(b"an mp4 without its index")
    request = RunRequest(source="x.mp4", model=None, config=None,  # type: ignore[arg-type]
                         tracks=[tmp_path / "t.jsonl", tmp_path / "t.npz"], overlay=video)
    pipeline = Pipeline(request)
    pipeline.control = Control(stop=threading.Event(), abort=threading.Event())  # type: ignore[arg-type]
    pipeline.control.stop.set()
    pipeline.control.abort.set()
    pipeline.result.interrupted = True
    pipeline.result.overlay_opened = True
    pipeline.result.error = earlier_error
    pipeline.procs = {"output": _HungProcess()}
    pipeline._shutdown()
    result = pipeline._finish()
    lost = ("; t.npz could not be written (.npz and .bvh are written at the end of a run: use .jsonl or .csv for a "
            "track that survives a crash); the overlay video o.mp4 was unfinished and no player could open it, so it "
            "was removed")
    if earlier_error is None:
        assert result.exit_code == 1
        assert result.error == "the output stage did not finish writing in time and was killed" + lost
    else:
        assert result.error == earlier_error + lost
    assert not video.exists()


def test_a_killed_resource_tracker_leaves_no_tracebacks(posecast, clip600: Path, tmp_path: Path) -> None:
    """multiprocessing's resource tracker killed mid-run (SIGKILL, the OOM killer): the run goes on
    and ends as usual. The tracker started again at the end knew none of the run's semaphores and
    printed a KeyError traceback for each (twelve), and a warning, after the summary."""
    track = tmp_path / "t.jsonl"
    proc = posecast.start(["track", clip600, "-o", track, "--batch-size", "1", "--min-score", "0", "--no-progress"],
                          start_new_session=True)
    stage_processes(proc)
    wait_for_lines(track, 6, proc)
    (tracker,) = [c for c in psutil.Process(proc.pid).children()
                  if "resource_tracker" in " ".join(c.cmdline())]
    tracker.send_signal(signal.SIGKILL)
    r = posecast.finish(proc, timeout=120)
    assert r.returncode == 0, r.stderr
    assert_clean_stderr(r.stderr)
    assert "UserWarning" not in r.stderr and "KeyError" not in r.stderr, r.stderr
    assert len(read_track(track)[1]) == 600


def test_killed_parent_stops_the_stages(posecast, clip600: Path, tmp_path: Path) -> None:
    """SIGKILL (or the OOM killer) on the parent: nobody is left to abort the run, so each stage
    watches for its parent's death and stops by itself instead of running on alone (to the end
    of the file here; forever on a camera). Nor can the parent remove the run's socket folder
    as it does at the end of a run: the stages that outlive it do as they exit."""
    track = tmp_path / "t.jsonl"
    proc = posecast.start(["track", clip600, "-o", track, "--batch-size", "1", "--min-score", "0"],
                          start_new_session=True)
    try:
        stages = list(stage_processes(proc).values())
        wait_for_lines(track, 6, proc)
        folders = list(Path(proc.posecast_tmpdir).glob("posecast-*"))
        assert len(folders) == 1 and (folders[0] / "output.sock").exists()   # the run's, in use
        proc.kill()
        proc.wait(timeout=10)
        gone, alive = psutil.wait_procs(stages, timeout=15)
        assert not alive, [p.cmdline() for p in alive]
        assert not folders[0].exists(), sorted(p.name for p in folders[0].iterdir())
        lines = track.read_text().split("\n")[:-1]
        assert 6 <= len(lines) < 550, "the stages ran on after their parent died"
        assert all(json.loads(line) for line in lines)
        # The ring goes with the resource tracker; no process remains.
        deadline = time.monotonic() + 10
        while posecast.survivors(proc) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not posecast.survivors(proc)
        assert not list(Path("/dev/shm").glob(f"posecast-{proc.pid}-*"))
        # The tracker cleans up after the killed parent without a word: it printed "UserWarning:
        # resource_tracker: There appear to be 12 leaked semaphore objects ..." (four lines) after
        # the shell's "Killed".
        stderr = proc.stderr.read()
        assert "UserWarning" not in stderr and "leaked" not in stderr, stderr
        assert_clean_stderr(stderr)
    finally:
        for p in posecast.survivors(proc):
            p.kill()
        proc.stdout.close()
        proc.stderr.close()
        shutil.rmtree(proc.posecast_tmpdir, ignore_errors=True)


# --- a stage fails -----------------------------------------------------------------------------

def test_stage_error_in_process_exit_2_and_no_leak(default_model, tmp_path: Path) -> None:
    """A source that cannot be opened fails in the capture stage; the run ends with its message."""
    from streamer.config import load_pipeline_config
    from streamer.pipeline import Pipeline, RunRequest
    from streamer.sources import open_source

    config = load_pipeline_config()
    missing = str(tmp_path / "missing.mp4")
    with pytest.raises(InputError) as expected:
        open_source(missing, config.source)
    me = psutil.Process()
    before = {c.pid for c in me.children(recursive=True)}

    pipeline = Pipeline(RunRequest(source=missing, model=default_model, config=config,
                                   tracks=[tmp_path / "t.jsonl"], progress=False))
    result = pipeline.run()

    assert result.exit_code == 2
    assert result.error_stage == "capture"
    assert result.error == str(expected.value)
    assert result.traceback is None
    assert result.summary is None
    assert result.stage_exit_codes["capture"] == 2
    assert all(code == 0 for name, code in result.stage_exit_codes.items() if name != "capture")
    assert not (tmp_path / "t.jsonl").exists()          # nothing was started, nothing written
    assert not Path("/dev/shm", pipeline.ring_name).exists()
    assert not pipeline.ipc_dir.exists()
    deadline = time.monotonic() + 5.0
    while True:
        # The stage processes; the test process's own resource tracker lives as long as it does.
        stray = [c for c in me.children(recursive=True) if c.pid not in before and c.is_running()
                 and c.status() != psutil.STATUS_ZOMBIE and is_spawned_child(c) and not is_stage_server(c)]
        if not stray or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert not stray, [c.cmdline() for c in stray]


def test_a_stage_that_cannot_be_started_ends_the_run_in_one_line(default_model, clip40: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Starting a stage process can fail (no more processes or file descriptors for this user, the
    stage server killed meanwhile): multiprocessing's OSError or EOFError went up as a traceback.
    The run now ends in one line naming the stage, and the stages started before it end too."""
    import errno

    from streamer.config import load_pipeline_config
    from streamer.pipeline import Pipeline, RunRequest

    pipeline = Pipeline(RunRequest(source=str(clip40), model=default_model, config=load_pipeline_config(),
                                   tracks=[tmp_path / "t.jsonl"], progress=False))
    real_process = pipeline.ctx.Process

    def process(*args, **kwargs):
        proc = real_process(*args, **kwargs)
        if kwargs.get("name") == "posecast-align":
            def refused() -> None:
                raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
            proc.start = refused
        return proc

    monkeypatch.setattr(pipeline, "ctx", types.SimpleNamespace(Process=process, Pipe=pipeline.ctx.Pipe,
                                                               Semaphore=pipeline.ctx.Semaphore,
                                                               RawValue=pipeline.ctx.RawValue))
    result = pipeline.run()
    assert result.exit_code == 1
    assert result.error_stage == "align"
    assert result.error == ("the align stage could not be started (Resource temporarily unavailable); the run was "
                            "stopped: close other programs, or raise the limits (ulimit -u, ulimit -n), and run the "
                            "command again")
    assert set(result.stage_exit_codes) == {"capture", "infer"}
    assert not Path("/dev/shm", pipeline.ring_name).exists()
    assert not pipeline.ipc_dir.exists()


# --- damaged input -----------------------------------------------------------------------------

def _clip(path: Path, frames: int) -> Path:
    from streamer.synthclip import write_clip

    return write_clip(path, 160, 120, frames=frames, fps=30)


def _skipped(stderr: str) -> int:
    m = re.search(r"posecast: error: (\d+) frame\(s\) or image\(s\) of .* were damaged or missing and have no "
                  r"pose \(the warnings above say where\); the other (\d+) frames were processed \(exit code 3\)",
                  stderr)
    assert m, stderr
    return int(m.group(1))


def test_corrupt_video_every_decodable_frame_gets_a_line_exit_3(posecast, tmp_path: Path) -> None:
    clip = _clip(tmp_path / "clip.mp4", 60)
    data = bytearray(clip.read_bytes())
    rng = np.random.default_rng(1)
    for frac in (0.4, 0.55, 0.7):                         # well after the header (faststart: index first)
        start = int(len(data) * frac)
        data[start:start + 2048] = rng.integers(0, 256, 2048, dtype=np.uint8).tobytes()
    (tmp_path / "bad.mp4").write_bytes(bytes(data))

    r = posecast.run(["track", "bad.mp4", "-o", "t.jsonl"])
    assert r.returncode == 3, r.stderr
    assert_clean_stderr(r.stderr)
    assert r.stderr.strip().splitlines()[-1].startswith("posecast: error:")
    skipped = _skipped(r.stderr)
    _, poses = read_track(tmp_path / "t.jsonl")
    assert_contiguous(poses)
    assert len(poses) + skipped == 60                     # every frame: a line, or counted as skipped
    assert 0 < len(poses) < 60
    shown = [round(p["t_media"] * 30) for p in poses]
    assert shown == sorted(set(shown)) and set(shown) <= set(range(60))
    assert shown[:10] == list(range(10))                  # the undamaged start is all there


def test_truncated_video_processes_the_frames_before_the_cut(posecast, tmp_path: Path) -> None:
    clip = _clip(tmp_path / "clip.mp4", 60)
    data = clip.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: int(len(data) * 0.6)])

    r = posecast.run(["track", "cut.mp4", "-o", "t.jsonl"])
    assert r.returncode == 3, r.stderr                    # the index promised 60 frames
    assert_clean_stderr(r.stderr)
    skipped = _skipped(r.stderr)
    _, poses = read_track(tmp_path / "t.jsonl")
    assert_contiguous(poses)
    assert len(poses) + skipped == 60
    shown = [round(p["t_media"] * 30) for p in poses]
    assert 10 < len(shown) < 60
    assert shown == sorted(set(shown))
    # Everything up to the cut, in order (a frame decoded out of order near the cut may follow).
    assert shown[: len(shown) - 1] == list(range(len(shown) - 1))


@pytest.mark.parametrize("ending", [None, "abort", "stop"])
def test_a_live_capture_waits_for_the_stages_after_it(ending: str | None) -> None:
    """A live source starts reading only once every stage after the capture has marked itself
    ready (Control.ready), so that no frame is dropped to their start; a run stopped or aborted
    meanwhile ends the wait."""
    import multiprocessing as mp
    import threading

    from streamer.config import load_pipeline_config
    from streamer.stages.base import Control
    from streamer.stages.capture import CaptureStage

    ctx = mp.get_context("spawn")
    control = Control.shared(ctx)
    capture = CaptureStage("0", load_pipeline_config(), "ring", ctx.Semaphore(0), "inproc://x", control,
                           None, stages_after=3)  # type: ignore[arg-type]
    control.mark_ready()
    control.mark_ready()                        # two of three: still waiting
    if ending is None:
        later = threading.Timer(0.3, control.mark_ready)
    else:
        later = threading.Timer(0.3, (control.abort if ending == "abort" else control.stop).set)
    later.start()
    try:
        assert capture._wait_for_stages() == {None: None, "abort": "aborted", "stop": "stopped"}[ending]
    finally:
        later.cancel()
    assert not control.ready.acquire(timeout=0)     # nothing left over for a later wait


def _remove_from_a_child(folder: str) -> None:
    from streamer.process import remove_if_orphaned

    remove_if_orphaned(Path(folder))


def test_a_stage_leaves_the_socket_folder_to_a_living_parent(tmp_path: Path) -> None:
    # Only an orphaned stage removes it: with the parent alive, other stages may still bind there.
    import multiprocessing

    folder = tmp_path / "posecast-x"
    folder.mkdir()
    child = multiprocessing.get_context("spawn").Process(target=_remove_from_a_child, args=(str(folder),))
    child.start()
    child.join(60)
    assert child.exitcode == 0 and folder.is_dir()


def test_an_output_stage_failure_marked_also_joins_the_run_s_line() -> None:
    """A track that failed while the run went on, then a source that failed: the run's line is
    the source's, with the track's after it (exit code the first's); an error not so marked
    (a consequence of the first) is left out."""
    import threading

    from streamer.pipeline import Pipeline
    from streamer.stages.base import Control

    pipeline = Pipeline(None)  # type: ignore[arg-type]     # _on_report reads no request
    pipeline.control = Control(stop=threading.Event(), abort=threading.Event())
    pipeline._on_report("error", "capture", {"message": "cannot read 'in.mp4': the stream dropped", "exit_code": 2,
                                             "drained": True})
    pipeline._on_report("error", "output", {"message": "cannot write track file 'a.jsonl': No space left on device "
                                                       "(free some disk space); it holds the first 3 frames",
                                            "exit_code": 2, "also": True})
    pipeline._on_report("error", "align", {"message": "a consequence", "exit_code": 1})
    assert pipeline.result.error == ("cannot read 'in.mp4': the stream dropped; also, cannot write track file "
                                     "'a.jsonl': No space left on device (free some disk space); it holds the first 3 "
                                     "frames")
    assert (pipeline.result.exit_code, pipeline.result.error_stage) == (2, "capture")
