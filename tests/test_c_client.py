"""The C subscriber example (docs/clients/c/posecast_sub.c) against a live publisher.

The program is built with the system's `cc` and libzmq (Debian: libzmq3-dev, which `.ci/run`
installs), warning-free with the flags its header gives. A `posecast replay` of a small recorded
track publishes JSON; the C client must print one correct line per pose message (checked
against the track file), the meta line, and exit 0 after COUNT messages. A msgpack stream must
end it with exit code 2 and one line saying to use `--encoding json`; Ctrl-C with exit code 130.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import subscriber_output

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "docs" / "clients" / "c" / "posecast_sub.c"
CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-O2"]
TIMEOUT_S = 30.0
PELVIS, HEAD_TOP = 0, 10

POSE_LINE = re.compile(
    r"^seq=(\d+) people=(\d+) pelvis_2d=(\S+),(\S+) head_top_3d=(\S+),(\S+),(\S+) latency_ms=(\S+)$")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def c_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """posecast_sub, compiled; skipped only when there is no C compiler or no libzmq to build with."""
    cc = shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler (`cc`) on this machine (Debian: apt-get install gcc libzmq3-dev)")
    out = tmp_path_factory.mktemp("c-client") / "posecast_sub"
    build = subprocess.run([cc, *CFLAGS, str(SOURCE), "-lzmq", "-o", str(out)],
                           capture_output=True, text=True, timeout=120)
    if build.returncode != 0 and ("zmq.h" in build.stderr or "-lzmq" in build.stderr):
        pytest.skip(f"libzmq headers or library missing (apt-get install libzmq3-dev): {build.stderr.strip()}")
    assert build.returncode == 0, f"posecast_sub.c does not compile:\n{build.stderr}"
    assert build.stderr.strip() == "", f"posecast_sub.c compiles with warnings:\n{build.stderr}"
    return out


@pytest.fixture(scope="session")
def json_track(tmp_path_factory: pytest.TempPathFactory, _session_cache: Path, default_model) -> Path:
    """A 30-frame track recorded from a 160x120 synthetic clip (every frame has a person)."""
    d = tmp_path_factory.mktemp("c-client-track")
    env = dict(os.environ)                      # POSECAST_CACHE: the session's cache (conftest.py)
    for args in (["make-clip", "clip.mp4", "--size", "160x120", "--frames", "30"],
                 ["track", "clip.mp4", "-o", "t.jsonl", "--min-score", "0", "--no-progress"]):
        r = subprocess.run([sys.executable, "-m", "streamer.cli", *args], cwd=d, env=env,
                           capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, f"posecast {args[0]} failed:\n{r.stderr}"
    return d / "t.jsonl"


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)


def _run_against_replay(posecast, c_client: Path, track: Path, encoding: str, count: int):
    return _run_against(posecast, c_client, ["replay", str(track), "--encoding", encoding, "--speed", "1"], count)


def _run_against(posecast, c_client: Path, command: list[str], count: int):
    """Starts the C client first (it reconnects until the publisher binds), then `posecast
    COMMAND --port PORT`; the client's exit code, stdout and stderr."""
    port = free_port()
    sub = subprocess.Popen([str(c_client), f"tcp://127.0.0.1:{port}", str(count)], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    pub = None
    try:
        pub = posecast.start([*command, "--port", str(port)])
        out, err = subscriber_output(sub, TIMEOUT_S, "posecast_sub")
        done = posecast.finish(pub, timeout=TIMEOUT_S)
        pub = None
        assert done.returncode == 0, done.stderr
        return sub.returncode, out, err
    finally:
        _stop(sub)
        _stop(pub)


def test_c_client_prints_a_replayed_json_stream(posecast, c_client: Path, json_track: Path) -> None:
    poses = {m["seq"]: m for m in map(json.loads, json_track.read_text().splitlines()) if m["type"] == "pose"}
    code, out, err = _run_against_replay(posecast, c_client, json_track, "json", 10)
    assert code == 0, f"exit {code}\nstdout:\n{out}\nstderr:\n{err}"

    lines = out.splitlines()
    assert "meta source=clip joints=17 axes=camera units=m replay" in lines, out
    pose_lines = [ln for ln in lines if ln.startswith("seq=")]
    assert len(pose_lines) == 10, out
    assert len(lines) == 11, f"only the meta line and the pose lines are expected:\n{out}"
    seqs = []
    for line in pose_lines:
        m = POSE_LINE.match(line)
        assert m, f"malformed line: {line!r}"
        seq, people = int(m[1]), int(m[2])
        u, v, x, y, z = (float(g) for g in m.groups()[2:7])
        assert all(math.isfinite(f) for f in (u, v, x, y, z)), line
        # A replay keeps the recorded t_capture: t_publish - t_capture is no latency there.
        assert m[8] == "-", line
        # The values are the recorded ones (replay publishes the track's messages as they are).
        sent = poses[seq]
        person = sent["people"][0]
        assert people == len(sent["people"]) == 1, line
        assert (u, v) == pytest.approx(person["joints_2d"][PELVIS], abs=0.006), line
        assert (x, y, z) == pytest.approx(person["joints_3d"][HEAD_TOP], abs=6e-5), line
        seqs.append(seq)
    assert seqs == sorted(set(seqs)), f"seq numbers must increase: {seqs}"


def test_c_client_prints_a_live_stream_s_latency(posecast, c_client: Path, json_track: Path) -> None:
    clip = json_track.with_name("clip.mp4")
    code, out, err = _run_against(posecast, c_client, ["run", str(clip), "--encoding", "json",
                                                       "--wait-subscribers", "1", "--no-progress"], 5)
    assert code == 0, f"exit {code}\nstdout:\n{out}\nstderr:\n{err}"
    lines = out.splitlines()
    meta = "meta source=clip joints=17 axes=camera units=m"
    assert meta in lines, out
    after_meta = lines[lines.index(meta) + 1:]
    assert after_meta, out
    for line in after_meta:
        m = POSE_LINE.match(line)
        assert m, f"malformed line: {line!r}"
        # Live, t_publish is stamped after t_capture on the same clock: a latency of a few ms.
        assert 0 <= float(m[8]) < 60_000, line


def test_c_client_stops_at_the_stream_s_end(posecast, c_client: Path, json_track: Path) -> None:
    """COUNT 0 runs until the publisher's end message, which says why and how many poses it sent."""
    code, out, err = _run_against_replay(posecast, c_client, json_track, "json", 0)
    assert code == 0, f"exit {code}\nstdout:\n{out}\nstderr:\n{err}"
    lines = out.splitlines()
    assert lines[-1] == "end reason=end_of_input sent=30 received=30", out
    assert sum(line.startswith("seq=") for line in lines) == 30, out


def test_c_client_refuses_msgpack(posecast, c_client: Path, json_track: Path) -> None:
    code, out, err = _run_against_replay(posecast, c_client, json_track, "msgpack", 10)
    assert code == 2, f"exit {code}\nstdout:\n{out}\nstderr:\n{err}"
    assert "seq=" not in out
    assert len(err.strip().splitlines()) == 1 and "--encoding json" in err, err


def _catches_sigint(pid: int) -> bool:
    """Whether the process has installed its SIGINT handler (Linux: SigCgt in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)))
    return False


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc to see the handler")
def test_c_client_ctrl_c_exits_130(c_client: Path) -> None:
    sub = subprocess.Popen([str(c_client), f"tcp://127.0.0.1:{free_port()}", "0"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not _catches_sigint(sub.pid):
            assert sub.poll() is None and time.monotonic() < deadline, "posecast_sub never set up its SIGINT handler"
            time.sleep(0.02)
        sub.send_signal(signal.SIGINT)
        out, err = sub.communicate(timeout=5)
        assert sub.returncode == 130, f"exit {sub.returncode}\n{err}"
        assert "interrupted" in err and out == ""
    finally:
        _stop(sub)
