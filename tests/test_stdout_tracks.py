"""A track on standard output (`-o -`, `listen --record -`): JSONL for a program reading through
a pipe, with the run's own lines on standard error."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import numpy as np

from engines.skeleton import H36M17
from streamer.protocol import PersonPose, PoseFrame, meta_message
from streamer.tracks import open_track_writer, read_track


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def long_track(path: Path, frames: int = 600) -> Path:
    """A recorded .jsonl track far larger than a pipe holds (64 KB on Linux), 30 frames a second."""
    rng = np.random.default_rng(0)
    j = H36M17.num_joints
    with open_track_writer(path, meta_message(H36M17, "long", (320, 240), 30.0, {"name": "m"})) as w:
        for i in range(frames):
            person = PersonPose(0, 0.8, (10.0, 20.0, 110.0, 220.0), rng.normal(0, 0.3, (j, 3)).astype(np.float32),
                                rng.uniform(0, 300, (j, 2)).astype(np.float32), rng.uniform(size=j).astype(np.float32),
                                np.array([0.1, 0.2, 3.0], np.float32))
            w.write(PoseFrame(i, 1000.0 + i / 30, i / 30, (320, 240), [person]))
    return path


def test_a_track_on_standard_output_is_the_track_file_byte_for_byte(posecast, clip40: Path, tmp_path: Path) -> None:
    """Nothing else reaches standard output: not the summary, not a stage's log."""
    track = tmp_path / "t.jsonl"
    r = posecast.run(["track", clip40, "-o", "-", "-o", track, "--min-score", "0", "--no-progress", "-v"])
    assert r.returncode == 0, r.stderr
    assert r.stdout == track.read_text() and len(r.stdout.splitlines()) == 1 + 40 + 1
    assert "-> standard output, " in r.stderr

    c = posecast.run(["convert", track, "-o", "-"])
    assert c.returncode == 0, c.stderr
    assert c.stdout == track.read_text()


def test_a_reader_that_stops_reading_standard_output_ends_the_run_quietly(posecast, clip600: Path) -> None:
    """`posecast track in.mp4 -o - | head`: exit 141 (SIGPIPE's), no line, as any program in a pipeline."""
    proc = posecast.start(["track", clip600, "-o", "-", "--no-progress"])
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith('{"type":"meta"')
    proc.stdout.close()                      # the reader goes away with 600 frames still to come
    r = posecast.finish(proc)
    assert r.returncode == 141 and r.stderr == "", r.stderr


def test_convert_to_a_reader_that_stops_reading_ends_quietly(posecast, tmp_path: Path) -> None:
    """`posecast convert t.jsonl -o - | head`: 141 and no line, as `track -o - | head` (README,
    "Track files"); a file written beside it is finished all the same."""
    track = long_track(tmp_path / "t.jsonl")
    for beside in ([], ["-o", tmp_path / "t.csv"]):
        proc = posecast.start(["convert", track, "-o", "-", *beside])
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith('{"type":"meta"')
        proc.stdout.close()
        r = posecast.finish(proc)
        assert r.returncode == 141 and r.stderr == "", (beside, r.stderr)
    assert len((tmp_path / "t.csv").read_text().splitlines()) == 601


def test_listen_recording_to_a_reader_that_stops_reading_ends_without_an_error(posecast, tmp_path: Path) -> None:
    """`posecast listen --record - | head`: 141 and no error line; its figures go to standard error as ever."""
    track, port = long_track(tmp_path / "t.jsonl"), free_port()
    listener = posecast.start(["listen", "--connect", f"tcp://127.0.0.1:{port}", "--record", "-", "--timeout", 30,
                               "--no-skeleton"])
    time.sleep(1.5)                        # subscribed before the replay starts (ZeroMQ retries the connect)
    player = posecast.start(["replay", track, "--port", port, "--speed", 10])
    assert listener.stdout is not None
    assert listener.stdout.readline().startswith('{"type":"meta"')
    listener.stdout.close()
    rl = posecast.finish(listener, timeout=60)
    posecast.finish(player, timeout=60)
    assert rl.returncode == 141
    assert "error" not in rl.stderr, rl.stderr


def test_standard_output_given_twice_is_one_line(posecast, clip40: Path) -> None:
    r = posecast.run(["track", clip40, "-o", "-", "-o", "-"])
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [
        "posecast: error: standard output ('-o -') is given twice as an output; give it once"], r.stderr


def test_listen_records_to_standard_output_with_its_figures_on_standard_error(posecast, clip40: Path,
                                                                             tmp_path: Path) -> None:
    track, port = tmp_path / "t.jsonl", free_port()
    assert posecast.run(["track", clip40, "-o", track, "--min-score", "0", "--no-progress"]).returncode == 0
    listener = posecast.start(["listen", "--connect", f"tcp://127.0.0.1:{port}", "--record", "-", "--timeout", 30])
    time.sleep(1.5)                        # subscribed before the replay starts (ZeroMQ retries the connect)
    player = posecast.run(["replay", track, "--port", port, "--speed", 4])
    rl = posecast.finish(listener, timeout=60)
    assert player.returncode == 0 and rl.returncode == 0, (player.stderr, rl.stderr)
    recorded = tmp_path / "recorded.jsonl"
    recorded.write_text(rl.stdout)
    meta, poses = read_track(track)
    rmeta, rposes = read_track(recorded)
    assert rmeta == {**meta, "replay": True}
    assert [{k: v for k, v in p.items() if k != "t_publish"} for p in rposes] == poses
    assert "stream 'walk40' ended (end_of_input)" in rl.stderr and "40 msgs" in rl.stderr
    assert rl.stderr.strip().splitlines()[-1] == "posecast: recorded 40 pose messages to standard output (complete)"


def test_a_reader_gone_with_files_beside_it_is_said(posecast, clip600: Path, tmp_path: Path) -> None:
    """The track file beside it stops there too: that is not a pipeline's quiet end, so it is said."""
    track = tmp_path / "t.jsonl"
    proc = posecast.start(["track", clip600, "-o", "-", "-o", track, "--no-progress"])
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith('{"type":"meta"')
    proc.stdout.close()
    r = posecast.finish(proc)
    assert r.returncode == 141
    assert r.stderr.strip().splitlines() == [
        "posecast: error: cannot write the track on standard output: the program reading the pipe went away, so "
        "the run was stopped"], r.stderr


def test_standard_output_into_a_file_without_a_name_is_no_lost_output(tmp_path: Path) -> None:
    """`subprocess.run([... "-o", "-"], stdout=tempfile.TemporaryFile())`, as a program capturing a
    large output does: the file has no name from the start, and its reader holds it. It was taken for
    an output deleted during the run ("output '-' was deleted ...", exit 2), the track all there."""
    import subprocess
    import sys
    import tempfile

    track = long_track(tmp_path / "t.jsonl", frames=20)
    with tempfile.TemporaryFile() as out:
        done = subprocess.run([sys.executable, "-m", "streamer.cli", "convert", str(track), "-o", "-"], stdout=out,
                              stderr=subprocess.PIPE, text=True, timeout=120)
        out.seek(0)
        assert (done.returncode, out.read().decode()) == (0, track.read_text()), done.stderr
