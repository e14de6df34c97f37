"""`posecast convert`: a .jsonl track written again as .csv, .npz and .bvh."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from engines.errors import InputError
from engines.skeleton import H36M17
from streamer.convert import convert_track
from streamer.protocol import PersonPose, PoseFrame, meta_message
from streamer.tracks import open_track_writer, read_track
from train.motion import parse_bvh

J = H36M17.num_joints


def recorded(path: Path, frames: int = 12) -> Path:
    """A .jsonl track as `track -o` writes it; every third frame has nobody."""
    rng = np.random.default_rng(0)
    with open_track_writer(path, meta_message(H36M17, "clip", (320, 240), 25.0, {"name": "m"})) as w:
        for i in range(frames):
            people = [] if i % 3 == 2 else [
                PersonPose(0, 0.8, (10.0, 20.0, 110.0, 220.0), rng.normal(0, 0.3, (J, 3)).astype(np.float32),
                           rng.uniform(0, 300, (J, 2)).astype(np.float32), rng.uniform(size=J).astype(np.float32),
                           np.array([0.1, 0.2, 3.0], np.float32))]
            w.write(PoseFrame(i, 1000.0 + i / 25, i / 25, (320, 240), people))
    return path


def test_every_format_holds_the_tracks_numbers(tmp_path: Path) -> None:
    track = recorded(tmp_path / "t.jsonl")
    said: list[str] = []
    assert convert_track(track, [tmp_path / "t.csv", tmp_path / "t.npz", tmp_path / "t.bvh"], said.append) == 0
    assert said == [f"12 pose messages from '{track}' -> {tmp_path / 't.csv'}, {tmp_path / 't.npz'}, "
                    f"{tmp_path / 't.bvh'}"]
    meta, poses = read_track(track)
    with np.load(tmp_path / "t.npz") as z:
        assert z["seq"].tolist() == list(range(12))
        assert z["found"].tolist() == [bool(p["people"]) for p in poses]
        people = [p["people"][0] for p in poses if p["people"]]
        for key in ("joints_3d", "joints_2d", "conf", "root_3d", "bbox"):
            want = np.array([person[key] for person in people], np.float32)
            np.testing.assert_array_equal(z[key][z["found"]], want, err_msg=key)
        np.testing.assert_array_equal(z["t_media"], [p["t_media"] for p in poses])
        np.testing.assert_array_equal(z["t_capture"], [p["t_capture"] for p in poses])
        assert json.loads(str(z["meta_json"])) == meta
    with open(tmp_path / "t.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["seq"]) for r in rows] == list(range(12))
    for row, pose in zip(rows, poses):
        assert float(row["t_media"]) == pose["t_media"]
        if pose["people"]:
            assert [float(row[f"root3d_{c}"]) for c in "xyz"] == pose["people"][0]["root_3d"]
    assert json.loads((tmp_path / "t.meta.json").read_text()) == meta
    clip = parse_bvh((tmp_path / "t.bvh").read_text())
    assert len(clip.motion) == 12 and clip.frame_time == pytest.approx(1 / 25)


def test_a_bad_line_is_one_error_and_no_output_is_made(tmp_path: Path) -> None:
    track = recorded(tmp_path / "t.jsonl")
    lines = track.read_text().splitlines()
    broken = json.loads(lines[5])
    broken["people"][0]["joints_3d"] = broken["people"][0]["joints_3d"][:3]
    lines[5] = json.dumps(broken)
    track.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"track file '.*t.jsonl', line 6: .*re-record it"):
        convert_track(track, [tmp_path / "t.npz", tmp_path / "t.csv"], print)
    assert not (tmp_path / "t.npz").exists() and not (tmp_path / "t.csv").exists()
    track.write_text(lines[0] + "\n")
    with pytest.raises(InputError, match="holds no pose messages, only its meta line: nothing to convert"):
        convert_track(track, [tmp_path / "t.npz"], print)


def test_a_last_line_cut_off_mid_write_is_left_out_with_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A recording stopped by a crash or a full disk: its whole frames are converted, and one
    warning line says what was left out (it was an error, and nothing was converted)."""
    from streamer.cli import main

    track = recorded(tmp_path / "t.jsonl")
    with open(track, "r+b") as f:
        f.truncate(track.stat().st_size - 30)                 # the 12th frame's line half written
    assert main(["convert", str(track), "-o", str(tmp_path / "t.npz")]) == 0
    assert capsys.readouterr().err.splitlines() == [
        f"posecast: warning: track file '{track}', line 13: cut off mid-write (the recording stopped there); it is "
        f"left out, and the 11 pose messages before it are read",
        f"posecast: 11 pose messages from '{track}' -> {tmp_path / 't.npz'}"]
    with np.load(tmp_path / "t.npz") as z:
        assert z["seq"].tolist() == list(range(11))


def test_the_command_checks_its_outputs_first(posecast, tmp_path: Path) -> None:
    recorded(tmp_path / "t.jsonl")
    r = posecast.run(["convert", "t.jsonl", "-o", "t.bvh"])
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == "posecast: 12 pose messages from 't.jsonl' -> t.bvh"
    for args, expect in [(["-o", "t.jsonl"], "is both the input and an output"),
                         (["-o", "x.txt"], "unknown track format '.txt'"),
                         ([], "the following arguments are required: -o/--output")]:
        r = posecast.run(["convert", "t.jsonl", *args])
        assert r.returncode == 2 and expect in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = posecast.run(["convert", "t.bvh", "-o", "u.csv"])
    assert r.returncode == 2 and "only .jsonl tracks can be read back" in r.stderr


def test_a_track_with_nobody_is_refused_for_a_bvh_before_anything_is_made(tmp_path: Path) -> None:
    track = tmp_path / "t.jsonl"
    with open_track_writer(track, meta_message(H36M17, "clip", (320, 240), 25.0, {})) as w:
        for i in range(3):
            w.write(PoseFrame(i, 1000.0 + i, i / 25, (320, 240), []))
    with pytest.raises(InputError, match="has nobody in any of its 3 pose messages, and a BVH needs a pose"):
        convert_track(track, [tmp_path / "t.csv", tmp_path / "t.bvh"], print)
    assert not (tmp_path / "t.csv").exists()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full, a device whose every write fails as a full disk")
def test_an_output_that_fills_its_disk_does_not_cut_the_others_short(tmp_path: Path) -> None:
    track = recorded(tmp_path / "t.jsonl")
    (tmp_path / "full.csv").symlink_to("/dev/full")      # its every write: No space left on device
    said: list[str] = []
    with pytest.raises(InputError, match="cannot write track file .*full.csv.*No space left on device"):
        convert_track(track, [tmp_path / "t.npz", tmp_path / "full.csv", tmp_path / "t.bvh"], said.append)
    assert said == []                                    # no "-> ..." success line
    with np.load(tmp_path / "t.npz") as z:
        assert z["seq"].tolist() == list(range(12))
    assert len(parse_bvh((tmp_path / "t.bvh").read_text()).motion) == 12


# --- several tracks ------------------------------------------------------------------------------

def _convert(argv: list[object], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    from streamer.cli import main

    code = main(["convert", *(str(a) for a in argv)])
    return code, capsys.readouterr().err.strip().splitlines()


def test_several_tracks_each_into_outputs_of_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """As `track` of several inputs: {name} in every output, a track that fails is said and the
    others go on, the exit code is the failure's; each output is what converting its track alone
    writes. Tracks may come after the options too."""
    monkeypatch.chdir(tmp_path)
    recorded(tmp_path / "a.jsonl", 12)
    recorded(tmp_path / "b.jsonl", 9)
    (tmp_path / "out").mkdir()
    code, said = _convert(["a.jsonl", "missing.jsonl", "-o", "out/{name}.npz", "-o", "out/{name}.bvh", "b.jsonl"],
                          capsys)
    assert code == 2
    assert said[0] == "posecast: [1/3] a.jsonl" and "posecast: [3/3] b.jsonl" in said
    assert said[-1].startswith("posecast: error: 1 of 3 inputs failed: 'missing.jsonl' (exit code 2)")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.bvh", "a.npz", "b.bvh", "b.npz"]
    convert_track(tmp_path / "b.jsonl", [tmp_path / "alone.npz"], lambda _: None)
    with np.load(tmp_path / "out" / "b.npz") as batch, np.load(tmp_path / "alone.npz") as alone:
        assert batch["joints_3d"].shape == (9, J, 3)
        np.testing.assert_array_equal(batch["joints_3d"], alone["joints_3d"])


def test_several_tracks_need_a_name_in_every_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    recorded(tmp_path / "a.jsonl")
    recorded(tmp_path / "b.jsonl")
    code, said = _convert(["a.jsonl", "b.jsonl", "-o", "bvh/x.bvh"], capsys)
    assert code == 2 and said == ["posecast: error: 2 inputs would all be written to 'bvh/x.bvh': put {name} in each "
                                  "output's path, which becomes each input's name (-o 'bvh/{name}.bvh')"]
    # An output that is another of the inputs is refused before anything is written.
    code, said = _convert(["a.jsonl", "b.jsonl", "-o", "{name}.csv", "-o", "{name}.jsonl"], capsys)
    assert code == 2 and len(said) == 1 and "is both the input and an output" in said[0], said
    assert not list(tmp_path.glob("*.csv"))


# --- a stop (Ctrl-C, SIGTERM, SIGHUP) ------------------------------------------------------------

def _stopping(monkeypatch: pytest.MonkeyPatch, suffix: str, when: str, after: int = 0) -> None:
    """The output named `suffix` sends this process SIGINT, as a Ctrl-C would come: in its
    `after`-th write ("write") or as it is closed ("close")."""
    import signal

    import streamer.convert as convert
    real_open = convert.open_track_writer

    def open_stopping(path: Path, meta: dict, **kwargs: object):
        writer = real_open(path, meta, **kwargs)
        if path.suffix != suffix:
            return writer
        real = getattr(writer, "write_message" if when == "write" else "close")
        calls = [0]

        def stopping(*args: object) -> object:
            calls[0] += 1
            if calls[0] == after + 1 or when == "close":
                os.kill(os.getpid(), signal.SIGINT)
            return real(*args)

        setattr(writer, "write_message" if when == "write" else "close", stopping)
        return writer

    monkeypatch.setattr(convert, "open_track_writer", open_stopping)


def test_a_stop_while_writing_ends_every_output_with_the_messages_so_far(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The outputs hold the first messages, each whole, and the one line says so: an .npz or a
    .bvh of part of the track looks whole but for its length."""
    track = recorded(tmp_path / "t.jsonl")
    _stopping(monkeypatch, ".csv", "write", after=5)
    said: list[str] = []
    try:
        code = convert_track(track, [tmp_path / "t.bvh", tmp_path / "t.csv", tmp_path / "t.npz"], said.append)
    except KeyboardInterrupt:
        pytest.fail("the Ctrl-C came out of convert_track as a KeyboardInterrupt")
    assert code == 130
    assert said == [f"interrupted (SIGINT) after 6 of the 12 pose messages of '{track}'; '{tmp_path / 't.bvh'}', "
                    f"'{tmp_path / 't.csv'}', '{tmp_path / 't.npz'}' hold those alone (convert it again for the "
                    f"whole track)"]
    with np.load(tmp_path / "t.npz") as z:
        assert z["seq"].tolist() == list(range(6))
    assert len(parse_bvh((tmp_path / "t.bvh").read_text()).motion) == 6
    with open(tmp_path / "t.csv", newline="") as f:
        assert [int(r["seq"]) for r in csv.DictReader(f)] == list(range(6))


def test_a_stop_while_a_bvh_is_closed_loses_no_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ctrl-C during the .bvh's solve at the end (seconds for a long track) used to come out of
    its close as a KeyboardInterrupt: the .bvh and every output closed after it were lost."""
    track = recorded(tmp_path / "t.jsonl")
    _stopping(monkeypatch, ".bvh", "close")
    said: list[str] = []
    try:
        code = convert_track(track, [tmp_path / "t.bvh", tmp_path / "t.npz"], said.append)
    except KeyboardInterrupt:
        pytest.fail("the Ctrl-C came out of convert_track as a KeyboardInterrupt")
    assert code == 130
    assert said == ["interrupted (SIGINT) while the outputs were closed; they were finished, with all 12 pose "
                    "messages"]
    with np.load(tmp_path / "t.npz") as z:
        assert z["seq"].tolist() == list(range(12))
    assert len(parse_bvh((tmp_path / "t.bvh").read_text()).motion) == 12


def test_standard_output_is_named_so_in_the_summary(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """As `track -o -` says it ("-> standard output"), not "-> -"."""
    track = recorded(tmp_path / "t.jsonl")
    said: list[str] = []
    assert convert_track(track, [Path("-"), tmp_path / "t.csv"], said.append) == 0
    assert said == [f"12 pose messages from '{track}' -> standard output, {tmp_path / 't.csv'}"]
    assert capfd.readouterr().out == track.read_text()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_stop_ends_the_wait_for_a_named_pipes_reader(tmp_path: Path) -> None:
    """`convert t.jsonl -o pipe.jsonl` (mkfifo) with no reader yet waits for one; Ctrl-C ends the
    wait, and an output beside it keeps the message it got."""
    import signal
    import threading

    track = recorded(tmp_path / "t.jsonl")
    os.mkfifo(tmp_path / "pipe.jsonl")
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    said: list[str] = []
    timer.start()
    try:
        code = convert_track(track, [tmp_path / "t.npz", tmp_path / "pipe.jsonl"], said.append)
    except KeyboardInterrupt:
        pytest.fail("the Ctrl-C came out of convert_track as a KeyboardInterrupt")
    finally:
        timer.cancel()
    assert code == 130
    assert said == [f"interrupted (SIGINT) after 1 of the 12 pose messages of '{track}'; '{tmp_path / 't.npz'}' "
                    f"holds those alone (convert it again for the whole track)"]
    with np.load(tmp_path / "t.npz") as z:
        assert z["seq"].tolist() == [0]


def _pipe_full(read_fd: int, proc: object, timeout_s: float = 60.0) -> None:
    """Waits until the writer of the pipe at `read_fd` is blocked in a write: the pipe holds more
    than half what it can (it fills by pages, never to the byte) and has taken nothing for a
    second, and where the kernel says where the process waits, it says a pipe's write."""
    import fcntl
    import struct
    import termios
    import time

    size = fcntl.fcntl(read_fd, 1032)          # F_GETPIPE_SZ (Linux)
    deadline = time.monotonic() + timeout_s
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline and proc.poll() is None:       # type: ignore[attr-defined]
        held = struct.unpack("i", fcntl.ioctl(read_fd, termios.FIONREAD, b"\0\0\0\0"))[0]
        if held != last:
            last, since = held, time.monotonic()
        elif held > size // 2 and time.monotonic() - since >= 1.0 and _waits_in_a_pipe_write(proc.pid):  # type: ignore[attr-defined]
            return
        time.sleep(0.05)
    pytest.fail(f"the pipe never filled (it holds {last} bytes): convert ended or did not start")


def _waits_in_a_pipe_write(pid: int) -> bool:
    """Whether the kernel function the process sleeps in is a pipe's write; True where it does
    not say (/proc/PID/wchan reads "0" under some kernels' settings)."""
    try:
        wchan = Path(f"/proc/{pid}/wchan").read_text().strip()
    except OSError:
        return True
    return wchan in ("", "0") or "pipe_write" in wchan


@pytest.mark.skipif(not os.path.exists("/proc/self"), reason="needs Linux's pipe size (F_GETPIPE_SZ)")
@pytest.mark.parametrize("into", ["stdout", "fifo"])
def test_a_stop_ends_a_write_that_waits_for_a_pipes_reader(tmp_path: Path, into: str) -> None:
    """`timeout 60 posecast convert t.jsonl -o - | stalled` (or -o fifo.jsonl with a stalled reader):
    the write waits for the reader, and a SIGTERM only noted left it waiting for ever, since Python
    resumes the write after such a handler; it must end the command, 143 and its one line."""
    import signal
    import subprocess
    import sys

    track = recorded(tmp_path / "t.jsonl", frames=2000)          # far more than a pipe holds
    fifo = tmp_path / "pipe.jsonl"
    output = "-" if into == "stdout" else str(fifo)
    if into == "fifo":
        os.mkfifo(fifo)
    beside = tmp_path / "t.npz"             # before the pipe: it must not get the message the pipe was stopped in
    proc = subprocess.Popen([sys.executable, "-m", "streamer.cli", "convert", str(track), "-o", str(beside), "-o",
                             output],
                            stdout=subprocess.PIPE if into == "stdout" else subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    reader = None
    try:
        if into == "fifo":
            reader = os.open(fifo, os.O_RDONLY)           # opened, never read: a stalled program
        _pipe_full(proc.stdout.fileno() if reader is None else reader, proc)
        proc.send_signal(signal.SIGTERM)
        try:
            err = _stderr_after(proc)        # its track not read: a reader that reads lets a noted stop in
        except subprocess.TimeoutExpired:
            pytest.fail("convert went on waiting for the pipe's reader after SIGTERM")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if reader is not None:
            os.close(reader)
    assert proc.returncode == 143, err
    shown = "standard output" if into == "stdout" else f"'{fifo}'"
    assert err.startswith("posecast: interrupted (SIGTERM) after ") and err.count("\n") == 1, err
    written = int(err.split(" after ")[1].split(" of ")[0])
    assert err == (f"posecast: interrupted (SIGTERM) after {written} of the 2000 pose messages of '{track}'; "
                   f"'{beside}', {shown} hold those alone (convert it again for the whole track)\n")
    with np.load(beside) as z:
        assert z["seq"].tolist() == list(range(written))


def _stderr_after(proc: object) -> str:
    """Its standard error once it ends, without reading its track's pipe."""
    proc.wait(timeout=60)                                 # type: ignore[attr-defined]
    return proc.stderr.read()                             # type: ignore[attr-defined]
