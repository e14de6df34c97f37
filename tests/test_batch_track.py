"""`posecast track A B ... -o 'tracks/{name}.jsonl'`: several inputs tracked in turn
(streamer/batch.py): their names, the checks before the first starts, the loop that goes on past
a failing input, and the whole command on real clips."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest

from engines.errors import InputError, UsageError
from streamer.batch import BatchItem, input_name, plan, run_in_turn
from streamer.tracks import read_track


@pytest.mark.parametrize("source, name", [
    ("clips/walk.mp4", "walk"),
    ("walk.take2.mp4", "walk.take2"),
    ("frames/*.png", "frames"),
    ("rtsp://cam.local:554/live", "cam.local_554_live"),
    ("0", "0"),
    ("/dev/video2", "dev_video2"),
])
def test_an_input_is_named_for_its_outputs(source: str, name: str) -> None:
    assert input_name(source) == name


def test_a_folder_is_named_by_itself_even_with_a_dot(tmp_path: Path) -> None:
    (tmp_path / "shoot.v2").mkdir()
    assert input_name(str(tmp_path / "shoot.v2")) == "shoot.v2"
    assert input_name(str(tmp_path / "shoot.v2") + "/") == "shoot.v2"


def test_name_is_filled_in_every_output_and_other_braces_are_kept() -> None:
    items = plan(["a/walk.mp4", "b/run.mp4"], ["t/{name}.jsonl", "t/{name}{x}.csv"], "o/{name}.mp4")
    assert items == [
        BatchItem("a/walk.mp4", "walk", [Path("t/walk.jsonl"), Path("t/walk{x}.csv")], Path("o/walk.mp4")),
        BatchItem("b/run.mp4", "run", [Path("t/run.jsonl"), Path("t/run{x}.csv")], Path("o/run.mp4")),
    ]
    # One input: {name} is optional, and standard output allowed.
    assert plan(["walk.mp4"], ["-", "{name}.bvh"], None) == [BatchItem("walk.mp4", "walk", [Path("-"), Path("walk.bvh")], None)]


@pytest.mark.parametrize("tracks, overlay, mention", [
    (["t.jsonl"], None, "would all be written to 't.jsonl': put {name} in each output's path"),
    (["{name}.jsonl"], "o.mp4", "would all be written to 'o.mp4'"),
    (["-"], None, "standard output ('-o -') takes one input's track"),
])
def test_several_inputs_need_a_name_in_every_output(tracks: list[str], overlay: str | None, mention: str) -> None:
    with pytest.raises(UsageError) as exc:
        plan(["a.mp4", "b.mp4"], tracks, overlay)
    assert mention in str(exc.value)


def test_two_inputs_of_one_name_are_refused() -> None:
    with pytest.raises(UsageError) as exc:
        plan(["day1/walk.mp4", "day2/walk.mp4"], ["{name}.jsonl"], None)
    assert str(exc.value).startswith("'day1/walk.mp4' and 'day2/walk.mp4' are both named 'walk'")


def _items(*sources: str) -> list[BatchItem]:
    return plan(list(sources), ["{name}.jsonl"], None)


def test_a_failing_input_is_said_and_the_others_go_on() -> None:
    ran: list[str] = []

    def run_one(item: BatchItem) -> int:
        ran.append(item.source)
        if item.name == "b":
            raise InputError("cannot open video 'b.mp4': no such file")
        return 3 if item.name == "c" else 0

    out = io.StringIO()
    code = run_in_turn(_items("a.mp4", "b.mp4", "c.mp4", "d.mp4"), run_one, "posecast", out)
    assert ran == ["a.mp4", "b.mp4", "c.mp4", "d.mp4"]
    assert code == 2                                        # the first failing input's
    assert out.getvalue().splitlines() == [
        "posecast: [1/4] a.mp4",
        "posecast: [2/4] b.mp4",
        "posecast: error: cannot open video 'b.mp4': no such file",
        "posecast: [3/4] c.mp4",
        "posecast: [4/4] d.mp4",
        "posecast: error: 2 of 4 inputs failed: 'b.mp4' (exit code 2), 'c.mp4' (exit code 3); the lines above say "
        "why, and the other 2 were done",
    ]


@pytest.mark.parametrize("code", [130, 143, 129, 141])
def test_a_stop_starts_no_further_input(code: int) -> None:
    ran: list[str] = []

    def run_one(item: BatchItem) -> int:
        ran.append(item.source)
        return code if item.name == "b" else 0

    out = io.StringIO()
    assert run_in_turn(_items("a.mp4", "b.mp4", "c.mp4", "d.mp4"), run_one, "posecast", out) == code
    assert ran == ["a.mp4", "b.mp4"]
    assert out.getvalue().splitlines()[-1] == "posecast: the 2 inputs after 'b.mp4' were not started"


def test_all_done_is_said_and_exits_0() -> None:
    out = io.StringIO()
    assert run_in_turn(_items("a.mp4", "b.mp4"), lambda item: 0, "posecast", out) == 0
    assert out.getvalue().splitlines()[-1] == "posecast: all 2 inputs done"


def _poses(path: Path) -> np.ndarray:
    _, poses = read_track(path)
    return np.array([[person["joints_3d"] for person in p["people"]] for p in poses], np.float64)


def test_several_clips_into_their_own_tracks_as_one_clip_alone(posecast, clip40: Path, tmp_path: Path) -> None:
    """Two clips and a missing one between them: each clip's tracks hold what a run of it alone
    writes; the missing one is said, the run goes on, and the exit code is its."""
    other = tmp_path / "other.mp4"
    shutil.copyfile(clip40, other)
    alone = posecast.run(["track", clip40, "-o", "alone.jsonl", "--no-progress"])
    assert alone.returncode == 0, alone.stderr
    (tmp_path / "tracks").mkdir()
    r = posecast.run(["track", clip40, "missing.mp4", other, "-o", "tracks/{name}.jsonl", "-o", "tracks/{name}.csv",
                      "--no-progress"])
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[0] == f"posecast: [1/3] {clip40}"
    assert "posecast: [2/3] missing.mp4" in lines and f"posecast: [3/3] {other}" in lines
    assert sum(line.startswith("posecast: error:") and "missing.mp4" in line for line in lines) == 2, r.stderr
    assert lines[-1].startswith("posecast: error: 1 of 3 inputs failed: 'missing.mp4' (exit code 2)")
    assert sorted(p.name for p in (tmp_path / "tracks").iterdir()) == [
        "other.csv", "other.jsonl", "other.meta.json", "walk40.csv", "walk40.jsonl", "walk40.meta.json"]
    expected = _poses(tmp_path / "alone.jsonl")
    assert len(expected) == 40
    for name in ("walk40", "other"):
        np.testing.assert_allclose(_poses(tmp_path / "tracks" / f"{name}.jsonl"), expected, atol=1e-6)


def test_an_output_that_cannot_be_written_stops_the_batch_before_its_first_input(posecast, clip40: Path,
                                                                                 tmp_path: Path) -> None:
    other = tmp_path / "other.mp4"
    shutil.copyfile(clip40, other)
    r = posecast.run(["track", clip40, other, "-o", "{name}.jsonl", "--overlay", "nowhere/{name}.mp4", "--no-progress"])
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("posecast: error:")
    assert "nowhere" in r.stderr and "[1/2]" not in r.stderr
    assert not list(tmp_path.glob("*.jsonl"))


def test_several_inputs_do_not_publish(posecast, clip40: Path) -> None:
    r = posecast.run(["track", clip40, clip40, "--publish"])
    assert r.returncode == 2
    assert r.stderr.strip() == ("posecast: error: --publish streams one input, and 2 inputs were given; publish each "
                                "with a command of its own (posecast run for a live stream)")


def test_ctrl_c_keeps_what_the_input_wrote_and_starts_no_other(posecast, clip600: Path, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import time

    from conftest import assert_no_leaks

    other = tmp_path / "other.mp4"
    shutil.copyfile(clip600, other)
    err = tmp_path / "stderr.txt"
    proc = posecast.start(["track", clip600, other, "-o", "{name}.jsonl", "--no-progress"], start_new_session=True,
                          stderr=open(err, "w"))
    first = tmp_path / "walk600.jsonl"
    deadline = time.monotonic() + 60
    while not (first.exists() and first.stat().st_size > 10_000):         # the meta and some poses
        assert proc.poll() is None and time.monotonic() < deadline, err.read_text()
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    said = err.read_text()
    assert_no_leaks(proc.pid, proc.posecast_tag, Path(proc.posecast_tmpdir), said)
    assert proc.returncode == 130, said
    lines = said.strip().splitlines()
    assert lines[-2:] == ["posecast: interrupted (SIGINT); everything processed so far was written",
                          f"posecast: the 1 input after '{clip600}' was not started"], said
    _, poses = read_track(first)
    assert 0 < len(poses) < 600 and [p["seq"] for p in poses] == list(range(len(poses)))
    assert not (tmp_path / "other.jsonl").exists()
