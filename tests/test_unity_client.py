"""The Unity example (docs/clients/unity/PosecastSubscriber.cs), compiled and run under mono.

Unity, NetMQ and AsyncIO are not installed here. tests/unity_client holds stand-ins for exactly
the members of theirs the example uses, with their documented names and signatures, each built
as an assembly of its own (UnityEngine.dll, NetMQ.dll, AsyncIO.dll); NetMQ's socket is libzmq's
beneath, through P/Invoke (pyzmq's copy, or the system's). The example is compiled against them
and Json.NET with Debian's mcs (mono-mcs and libnewtonsoft-json-cil-dev, which `scripts/setup.sh
--tests` installs), warning-free, and Harness.cs runs it as Unity runs a component (Start, Update
about 100 times a second, OnDestroy) against real publishers. Skipped only where mcs is missing.
Also here: that `scripts/setup.sh --tests` installs mcs and Json.NET.
"""

from __future__ import annotations

import ctypes.util
import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import subscriber_output

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "clients" / "unity" / "PosecastSubscriber.cs"
STANDINS = Path(__file__).resolve().parent / "unity_client"
TIMEOUT_S = 60.0
OFFSET = (10.0, 20.0, 30.0)         # where the harness puts the component's GameObject
STAYS = "the last pose stays shown until a new stream starts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _json_net() -> Path:
    found = sorted(Path("/usr/lib/cli").glob("Newtonsoft.Json*/Newtonsoft.Json.dll"))
    assert found, "Json.NET is not installed (Debian: apt-get install libnewtonsoft-json-cil-dev)"
    return found[-1]


def _libzmq() -> str:
    """pyzmq's own libzmq where its wheel bundles one (it is the publisher's), else the system's."""
    import zmq

    bundled = sorted((Path(zmq.__file__).resolve().parents[1] / "pyzmq.libs").glob("libzmq*.so*"))
    found = str(bundled[0]) if bundled else ctypes.util.find_library("zmq")
    assert found, "no libzmq to load (Debian: apt-get install libzmq5)"
    return found


def _mcs(mcs: str, out: Path, sources: list[Path], references: list[Path], *options: str) -> str:
    r = subprocess.run([mcs, "-nologo", *options, f"-out:{out}", *(f"-r:{p}" for p in references),
                        *map(str, sources)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"mcs failed to build {out.name}:\n{r.stdout}{r.stderr}"
    return r.stdout + r.stderr


@pytest.fixture(scope="session")
def unity_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The harness, built with the example; skipped only when there is no C# compiler."""
    mcs = shutil.which("mcs")
    if mcs is None:
        pytest.skip("no C# compiler (`mcs`) on this machine (Debian: apt-get install mono-mcs libnewtonsoft-json-cil-dev)")
    d = tmp_path_factory.mktemp("unity-client")
    json_net = d / "Newtonsoft.Json.dll"           # beside the harness, where mono looks for it
    shutil.copyfile(_json_net(), json_net)
    unity, netmq, asyncio = d / "UnityEngine.dll", d / "NetMQ.dll", d / "AsyncIO.dll"
    for dll in (unity, netmq, asyncio):
        _mcs(mcs, dll, [STANDINS / f"{dll.stem}.cs"], [], "-target:library")
    # Unity compiles a project's scripts into Assembly-CSharp.dll.
    example = d / "Assembly-CSharp.dll"
    said = _mcs(mcs, example, [EXAMPLE], [unity, netmq, asyncio, json_net], "-target:library", "-warn:4")
    assert "warning" not in said, f"PosecastSubscriber.cs compiles with warnings:\n{said}"
    harness = d / "harness.exe"
    _mcs(mcs, harness, [STANDINS / "Harness.cs"], [unity, example, json_net])
    (d / "NetMQ.dll.config").write_text(
        f'<configuration>\n  <dllmap dll="libzmq" target="{_libzmq()}"/>\n</configuration>\n')
    return harness


def _run(posecast, harness: Path, until: str, publishers: list[list[str]], *flags: str) -> tuple[list[str], list]:
    """Starts the harness (it connects until a publisher binds), then each of `publishers` in
    turn, on one port, each to its end; the harness's console lines and its `joints` lines."""
    port = free_port()
    sub = subprocess.Popen(["mono", str(harness), f"tcp://127.0.0.1:{port}", until, *flags],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for command in publishers:
            done = posecast.finish(posecast.start([*command, "--port", str(port)]), timeout=TIMEOUT_S)
            assert done.returncode == 0, done.stderr
        out, err = subscriber_output(sub, TIMEOUT_S, "the harness")
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait(timeout=10)
    assert sub.returncode == 0 and err == "", f"exit {sub.returncode}\nstdout:\n{out}\nstderr:\n{err}"
    lines = out.splitlines()
    joints = [json.loads(line[len("joints "):]) for line in lines if line.startswith("joints ")]
    return [line for line in lines if not line.startswith("joints ")], joints


def _placed(person: dict, at_root: bool) -> np.ndarray:
    """Where the example puts a person's joints: the GameObject's place, plus root_3d with placeAtRoot."""
    root = np.asarray(person["root_3d"]) if at_root and person.get("root_3d") is not None else np.zeros(3)
    return np.asarray(OFFSET) + root + np.asarray(person["joints_3d"])


def _poses(track: Path) -> list[dict]:
    return [m for m in map(json.loads, track.read_text().splitlines()) if m["type"] == "pose"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3 s clip (160x120, 30 fps): long enough for the publisher to send its meta again."""
    from streamer.synthclip import write_clip

    return write_clip(tmp_path_factory.mktemp("unity-clip") / "walk.mp4", 160, 120, frames=90, fps=30)


def test_unity_client_shows_a_live_run_to_its_end(posecast, unity_client: Path, clip: Path, tmp_path: Path) -> None:
    """`posecast run` in Unity's axes: said once (the meta comes again every 2 s), the joints
    placed as the last pose says, and the end said with the poses sent and received."""
    track = tmp_path / "live.jsonl"
    logs, joints = _run(posecast, unity_client, "1",
                        [["run", str(clip), "--encoding", "json", "--axes", "unity", "--wait-subscribers", "1",
                          "-o", str(track), "--no-progress"]], "--place-at-root")
    poses = _poses(track)
    assert poses and poses[-1]["people"], "the clip's last frame shows its person"
    sent = len(poses)
    assert logs == ["[Log] Posecast: showing the stream 'walk'",
                    f"[Log] Posecast: the stream 'walk' ended (end_of_input): {sent} pose messages sent, "
                    f"{sent} received here; {STAYS}"], logs
    assert len(joints) == 2, "a joints line after the end, and one at the stop"
    expected = _placed(poses[-1]["people"][0], at_root=True)
    for shown in joints:
        np.testing.assert_allclose(shown, expected, atol=1e-4)


def _write_track(path: Path, axes: str, seed: int, poses: int = 20) -> Path:
    """A camera's track (t_media null) of `poses` frames 10 ms apart: the 8th shows nobody, every
    third has no root_3d, the last has one."""
    from engines.skeleton import H36M17
    from streamer.axes import axes_meta, axes_spec
    from streamer.protocol import PersonPose, PoseFrame, meta_message, pose_message

    rng = np.random.default_rng(seed)
    meta = meta_message(H36M17, "cam0", (320, 240), None, {"weights": "test", "trained": False},
                        axes=axes_meta(axes_spec(axes)))
    lines = [meta]
    for seq in range(poses):
        people = [] if seq == 7 else [PersonPose(
            0, 0.8, (10.0, 20.0, 110.0, 220.0), rng.normal(0, 0.3, (17, 3)), rng.uniform(0, 240, (17, 2)),
            rng.uniform(0.5, 1.0, 17), None if seq % 3 == 1 else rng.normal(0, 2, 3))]
        lines.append(pose_message(PoseFrame(seq, 1_700_000_000.0 + seq * 0.01, None, (320, 240), people)))
    path.write_text("".join(json.dumps(m) + "\n" for m in lines))
    return path


def test_unity_client_refuses_what_it_cannot_show_and_waits_for_the_next_stream(
        posecast, unity_client: Path, tmp_path: Path) -> None:
    """One harness, three publishers in turn on one port: msgpack (said once, whatever the count
    of its messages), JSON in the camera's axes (refused: no joint moves), then JSON in Unity's
    axes, which is shown: after an end the component waits for the next stream."""
    unity = _write_track(tmp_path / "unity.jsonl", "unity", seed=1)
    camera = _write_track(tmp_path / "camera.jsonl", "camera", seed=2)
    logs, joints = _run(posecast, unity_client, "2",
                        [["replay", str(unity), "--encoding", "msgpack"],
                         ["replay", str(camera), "--encoding", "json"],
                         ["replay", str(unity), "--encoding", "json"]], "--place-at-root")
    ended = f"20 pose messages sent, 20 received here; {STAYS}"
    assert logs == [
        "[Error] Posecast: the payload is not JSON; run the publisher with --encoding json",
        "[Error] Posecast: the stream's axes are 'camera', not Unity's; run the publisher with --axes unity",
        f"[Log] Posecast: the stream 'cam0' ended (end_of_input): {ended}",
        "[Log] Posecast: showing the stream 'cam0'",
        f"[Log] Posecast: the stream 'cam0' ended (end_of_input): {ended}",
    ], logs
    assert len(joints) == 3
    assert joints[0] == [[0.0, 0.0, 0.0]] * 17, "a stream in the camera's axes moved the joints"
    expected = _placed(_poses(unity)[-1]["people"][0], at_root=True)
    np.testing.assert_allclose(joints[1], expected, atol=1e-4)
    np.testing.assert_allclose(joints[2], expected, atol=1e-4)


def test_unity_client_says_a_malformed_endpoint_in_one_line(unity_client: Path) -> None:
    """The receiver thread's failure is one error line, not an exception on a thread."""
    sub = subprocess.run(["mono", str(unity_client), "127.0.0.1:5556", "error"], capture_output=True, text=True,
                         timeout=TIMEOUT_S)
    assert sub.returncode == 0 and sub.stderr == "", sub
    logs = [line for line in sub.stdout.splitlines() if not line.startswith("joints ")]
    assert len(logs) == 1 and logs[0].startswith("[Error] Posecast: receiving from '127.0.0.1:5556' failed: "), logs
    assert logs[0].endswith("(an endpoint is tcp://HOST:PORT)"), logs


def _setup_sandbox(tmp_path: Path, apt_fails: bool = False) -> tuple[Path, Path, dict[str, str]]:
    """scripts/setup.sh in a folder of its own, with a .venv it takes as installed, and a PATH of
    stand-ins: apt-get (which writes down what it was asked, and fails where told to), ldconfig
    (no EGL library known), sudo; no mcs. The script, its apt-get log, and the environment to run it in."""
    root = tmp_path / "checkout"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "setup.sh", root / "scripts" / "setup.sh")
    (root / "pyproject.toml").write_text("")
    venv_bin = root / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    log = tmp_path / "apt-get.log"
    (venv_bin / "python").write_text("#!/bin/sh\nexit 0\n")
    apt_get = f'echo "$*" >> {log}' + ("; exit 100" if apt_fails else "")
    for name, body in (("apt-get", apt_get), ("ldconfig", "exit 0"), ("sudo", 'exec "$@"')):
        (bin_ / name).write_text(f"#!/bin/sh\n{body}\n")
    for path in (*venv_bin.iterdir(), *bin_.iterdir()):
        path.chmod(0o755)
    for tool in ("dirname", "grep", "id", "touch", "rm", "tail"):
        found = shutil.which(tool) or shutil.which(tool, path=os.defpath)
        assert found, f"no `{tool}` to run scripts/setup.sh with"
        (bin_ / tool).symlink_to(found)
    for extras in ("test", "test,train"):                 # installed after pyproject.toml was written
        stamp = root / ".venv" / f".posecast-installed-{extras}"
        stamp.touch()
        os.utime(stamp, (os.path.getmtime(root / "pyproject.toml") + 10,) * 2)
    return root / "scripts" / "setup.sh", log, {"PATH": str(bin_), "HOME": str(tmp_path)}


@pytest.mark.parametrize("option, installed", [
    ("--tests", "libegl1 libegl-mesa0 libgl1-mesa-dri mono-mcs libnewtonsoft-json-cil-dev"),
    ("--train", "libegl1 libegl-mesa0 libgl1-mesa-dri"),
    ("", None),
])
def test_setup_installs_mcs_and_json_net_for_the_tests(tmp_path: Path, option: str, installed: str | None) -> None:
    """`scripts/setup.sh --tests` (CI: .ci/run, through scripts/test.sh) installs what this test
    needs where mcs is missing, in the one apt-get call that installs the renderer's libraries."""
    script, log, env = _setup_sandbox(tmp_path)
    r = subprocess.run(["/bin/bash", str(script), *([option] if option else [])], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    asked = log.read_text().splitlines() if log.exists() else []
    assert asked == ([] if installed is None else ["update -qq", f"install -y -qq {installed}"]), asked


def test_setup_says_in_one_line_what_it_could_not_install(tmp_path: Path) -> None:
    script, _, env = _setup_sandbox(tmp_path, apt_fails=True)
    r = subprocess.run(["/bin/bash", str(script), "--tests"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        "setup.sh: cannot install Debian's libegl1 libegl-mesa0 libgl1-mesa-dri mono-mcs libnewtonsoft-json-cil-dev "
        "(headless OpenGL for the renderer and its tests; mcs and Json.NET for the Unity example's test): "
        "install them, then run this again"], r.stderr
