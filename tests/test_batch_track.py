"""`posecast track A B ... -o 'tracks/{name}.jsonl'`: several inputs tracked in turn
(streamer/batch.py): their names, the checks before the first starts, the loop that goes on past
a failing input, and the whole command on real clips."""

from __future__ import annotations

import io
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from engines.errors import ConfigError, InputError, UsageError
from engines.stop_signals import Stopped
from streamer.batch import (BatchItem, CommandFailed, check_apart, input_name, missing_folders, missing_folders_error,
                            plan, run_in_turn)
from streamer.protocol import END_STOPPED, end_message
from streamer.tracks import read_track, track_end


@pytest.mark.parametrize("source, name", [
    ("clips/walk.mp4", "walk"),
    ("walk.take2.mp4", "walk.take2"),
    ("frames/*.png", "frames"),
    ("rtsp://cam.local:554/live", "cam.local_554_live"),
    ("0", "0"),
    ("/dev/video2", "dev_video2"),
    # Never a password or a token in a file's name.
    ("rtsp://bob:hunter2@cam.local:554/live", "cam.local_554_live"),
    ("https://host/clip.mp4?token=SECRET&size=2", "host_clip.mp4_token_size_2"),
    # A pattern in a folder's name too: named by the folder above it, not '*'.
    ("shoots/*/*.png", "shoots"),
])
def test_an_input_is_named_for_its_outputs(source: str, name: str) -> None:
    assert input_name(source) == name


def test_a_folder_is_named_by_itself_even_with_a_dot(tmp_path: Path) -> None:
    (tmp_path / "shoot.v2").mkdir()
    assert input_name(str(tmp_path / "shoot.v2")) == "shoot.v2"
    assert input_name(str(tmp_path / "shoot.v2") + "/") == "shoot.v2"


def test_a_file_with_pattern_characters_is_named_by_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """'take[1].mp4' that exists is read as that file, not as a pattern: so is it named."""
    monkeypatch.chdir(tmp_path)
    for name in ("take[1].mp4", "what?.mp4"):
        (tmp_path / name).write_bytes(b"")
    assert [input_name(s) for s in ("take[1].mp4", "what?.mp4", "take[2].mp4")] == ["take[1]", "what?", tmp_path.name]


def test_a_step_up_is_named_by_the_folder_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """'..' must not become a step up in `-o '{name}/poses.jsonl'`."""
    (tmp_path / "shoot" / "day1").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "shoot" / "day1")
    assert input_name("..") == "shoot" and input_name(".") == "day1"


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


def test_one_file_given_twice_is_said_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "walk.mp4").write_bytes(b"")
    with pytest.raises(UsageError) as exc:
        plan(["walk.mp4", "./walk.mp4"], ["{name}.jsonl"], None)
    assert str(exc.value) == "'walk.mp4' and './walk.mp4' are one file, given twice as an input; give it once"


def _files(folder: Path, *names: str) -> list[str]:
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(name.encode())
    return [str(folder / name) for name in names]


@pytest.mark.parametrize("order", [1, -1])
def test_an_output_that_is_another_input_is_refused(tmp_path: Path, order: int) -> None:
    """walk.mp4's overlay walk_pose.mp4 is the second input: written before it is read, or over
    it after, a recording of the user's would be lost."""
    sources = _files(tmp_path, "walk.mp4", "walk_pose.mp4")[::order]
    with pytest.raises(InputError) as exc:
        check_apart(plan(sources, [], str(tmp_path / "{name}_pose.mp4")))
    assert str(exc.value).startswith(f"'{tmp_path}/walk_pose.mp4', an output of '{tmp_path}/walk.mp4', is the input "
                                     f"'{tmp_path}/walk_pose.mp4': writing it would destroy that input")
    assert (tmp_path / "walk_pose.mp4").read_bytes() == b"walk_pose.mp4"


def test_an_output_of_two_inputs_is_refused(tmp_path: Path) -> None:
    sources = _files(tmp_path, "walk.mp4", "walk_2.mp4")
    with pytest.raises(InputError) as exc:
        check_apart(plan(sources, [str(tmp_path / "{name}.jsonl"), str(tmp_path / "{name}_2.jsonl")], None))
    assert str(exc.value).startswith(f"'{tmp_path}/walk_2.jsonl' would be written by both '{tmp_path}/walk.mp4' and "
                                     f"'{tmp_path}/walk_2.mp4', the second over the first")


def test_csv_meta_files_of_two_inputs_are_refused(tmp_path: Path) -> None:
    """'ax.CSV' (of a) and 'ax.csv' (of ax) are two tracks, but both write their meta to ax.meta.json."""
    sources = _files(tmp_path, "a.mp4", "ax.mp4")
    with pytest.raises(InputError) as exc:
        check_apart(plan(sources, [str(tmp_path / "{name}.csv"), str(tmp_path / "{name}x.CSV")], None))
    assert str(exc.value).startswith(f"'{tmp_path}/ax.meta.json' would be written by both")


def test_names_apart_only_by_case_are_one_file_where_the_folder_takes_them_so(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """day1/Walk.mp4 and day2/walk.mp4 into tracks/{name}.jsonl: two files here, one on macOS."""
    import streamer.batch as batch
    from engines.files import case_blind

    sources = _files(tmp_path, "day1/Walk.mp4", "day2/walk.mp4")
    (tmp_path / "tracks").mkdir()
    items = plan(sources, [str(tmp_path / "tracks" / "{name}.jsonl")], None)
    if not case_blind(tmp_path):
        check_apart(items)                              # two files: both written
    asked: list[Path] = []
    monkeypatch.setattr(batch, "case_blind", lambda folder: asked.append(folder) or True)
    with pytest.raises(InputError) as exc:
        check_apart(items)
    assert str(exc.value).startswith(f"'{tmp_path}/tracks/Walk.jsonl' and '{tmp_path}/tracks/walk.jsonl' would be "
                                     f"written by both")
    assert asked == [tmp_path / "tracks"]             # once per folder
    assert list((tmp_path / "tracks").iterdir()) == []


def test_every_missing_output_folder_is_named_in_one_line(tmp_path: Path) -> None:
    """{name} in a folder's name: one line names them all, and the command that makes them."""
    items = plan(["a.mp4", "b c.mp4"], [str(tmp_path / "{name}" / "poses.jsonl"), str(tmp_path / "{name}.csv")],
                 str(tmp_path / "{name}" / "overlay.mp4"))
    missing = missing_folders(items)
    assert missing == [tmp_path / "a", tmp_path / "b c"]
    assert str(missing_folders_error(missing)) == (
        f"2 output folders do not exist: '{tmp_path}/a', '{tmp_path}/b c' (create them first: "
        f"mkdir -p {tmp_path}/a '{tmp_path}/b c')")


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


@pytest.mark.parametrize("codes, code", [
    ({"a": 3, "c": 2}, 2),         # damaged frames first must not hide an input that gave nothing
    ({"a": 3, "c": 1}, 1),
    ({"a": 2, "c": 3}, 2),
    ({"a": 3, "c": 3}, 3),
    ({"a": 1, "c": 2}, 1),         # otherwise the first failing input's
])
def test_the_exit_code_is_the_first_failure_but_damaged_frames_yield(codes: dict[str, int], code: int) -> None:
    out = io.StringIO()
    assert run_in_turn(_items("a.mp4", "b.mp4", "c.mp4"), lambda item: codes.get(item.name, 0), "posecast", out) == code


@pytest.mark.parametrize("stop, code, said", [
    (KeyboardInterrupt(), 130, "posecast: interrupted"),
    (Stopped(15), 143, "posecast: stopped by SIGTERM"),
])
def test_a_stop_between_two_runs_starts_no_further_input(stop: KeyboardInterrupt, code: int, said: str) -> None:
    """A signal that comes while an input's run is being set up or summed up (the run itself turns
    a stop into its exit code) ends the batch as a stop in a run does, with the failures before."""
    ran: list[str] = []

    def run_one(item: BatchItem) -> int:
        ran.append(item.name)
        if item.name == "c":
            raise stop
        return 2 if item.name == "b" else 0

    out = io.StringIO()
    try:
        assert run_in_turn(_items("a.mp4", "b.mp4", "c.mp4", "d.mp4"), run_one, "posecast", out) == code
    except KeyboardInterrupt:
        pytest.fail("the stop went through the batch, which said nothing of the inputs it did not start")
    assert ran == ["a", "b", "c"]
    assert out.getvalue().splitlines()[-2:] == [
        said, "posecast: the 1 input after 'c.mp4' was not started; before it, 1 input failed: 'b.mp4' (exit code 2)"]


@pytest.mark.parametrize("fail", [CommandFailed(2), ConfigError("refiner 'r.npz' not found")])
def test_a_failure_of_the_commands_starts_no_further_input(fail: Exception) -> None:
    """The backend that cannot start (said by the run, then CommandFailed), or a config error:
    every other input would fail the same way, once each."""
    ran: list[str] = []

    def run_one(item: BatchItem) -> int:
        ran.append(item.name)
        raise fail

    out = io.StringIO()
    assert run_in_turn(_items("a.mp4", "b.mp4", "c.mp4"), run_one, "posecast", out) == 2
    assert ran == ["a"]
    assert out.getvalue().splitlines()[-1] == (
        "posecast: error: the 2 inputs after 'a.mp4' were not started (they would fail the same way: what failed is "
        "the command's settings, model or backend, not the input)")


def test_a_url_is_said_without_its_password() -> None:
    out = io.StringIO()
    items = plan(["rtsp://bob:hunter2@cam/live", "b.mp4"], ["{name}.jsonl"], None)
    assert run_in_turn(items, lambda item: 2 if item.name == "cam_live" else 0, "posecast", out) == 2
    assert "hunter2" not in out.getvalue()
    assert out.getvalue().splitlines()[0] == "posecast: [1/2] rtsp://bob:***@cam/live"


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
    # It says so itself: a later `--skip-done` tracks it again.
    assert track_end(first) == end_message("walk600", END_STOPPED, len(poses), len(poses) - 1)
    assert not (tmp_path / "other.jsonl").exists()


# --- the whole command, its inputs' runs stood in for (no pipeline started) ---------------------

@dataclass
class StandIn:
    """What the runs that stand in for each input's did: the inputs, and the result each gives."""
    ran: list[str] = field(default_factory=list)
    result: object = None


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch, default_model) -> StandIn:
    """Each input's run in `posecast track` replaced by one that records its input and gives
    `result` (success unless a test sets it); the command's own checks are the real ones."""
    import streamer.cli as cli
    from streamer.pipeline import RunResult

    stand_in = StandIn(result=RunResult(exit_code=0))

    def run(source: str, *args: object, **kwargs: object) -> RunResult:
        stand_in.ran.append(source)
        return stand_in.result

    monkeypatch.setattr(cli, "_track", run, raising=False)
    monkeypatch.setattr(cli, "run_track", lambda source, *a, **kw: run(source).exit_code)
    return stand_in


def _main(argv: list[object], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from streamer.cli import main

    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("option, said", [
    (["--model", "missing.onnx"], "posecast: error: model file not found: missing.onnx"),
    (["--config", "bad.yaml"], "posecast: error: bad.yaml: 'filter.method' must be one of"),
    (["--config", "publishes.yaml"], "posecast: error: --config publishes.yaml publishes (publish.enabled), which "
                                     "streams one input, and 3 inputs were given"),
])
def test_the_config_and_the_model_are_the_commands_said_once_before_any_input(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], runs: StandIn,
        option: list[str], said: str) -> None:
    """A bad model or config is the command's: one line before the first input, not one per input
    (3 lines and a list of 3 failures), and a config that publishes is refused as --publish is."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text("filter:\n  method: bogus\n")
    (tmp_path / "publishes.yaml").write_text("publish:\n  enabled: true\n")
    code, err = _main(["track", "a.mp4", "b.mp4", "c.mp4", "-o", "{name}.jsonl", *option], capsys)
    assert code == 2
    assert err.strip().startswith(said) and len(err.strip().splitlines()) == 1, err
    assert runs.ran == []


def test_missing_output_folders_are_all_said_before_any_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str],
                                                              runs: StandIn) -> None:
    """`-o '{name}/poses.jsonl'`: folders are not made (as with one input), and one line names
    them all, where naming the first alone would take a run per folder to find them."""
    monkeypatch.chdir(tmp_path)
    code, err = _main(["track", "walk.mp4", "run.mp4", "-o", "{name}/poses.jsonl"], capsys)
    assert code == 2 and runs.ran == []
    assert err.strip() == ("posecast: error: 2 output folders do not exist: 'walk', 'run' (create them first: "
                           "mkdir -p walk run)")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_backend_that_cannot_start_starts_no_further_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str],
                                                             runs: StandIn) -> None:
    """The inference stage fails before any frame only where its backend cannot start: the
    others would fail so too, each after a pipeline's start-up, each with the same line."""
    from streamer.pipeline import RunResult

    monkeypatch.chdir(tmp_path)
    runs.result = RunResult(exit_code=2, error="TensorRT backend unavailable", error_stage="infer")
    code, err = _main(["track", "a.mp4", "b.mp4", "c.mp4", "-o", "{name}.jsonl"], capsys)
    assert code == 2 and runs.ran == ["a.mp4"]
    assert err.strip().splitlines()[-1] == (
        "posecast: error: the 2 inputs after 'a.mp4' were not started (they would fail the same way: what failed is "
        "the command's settings, model or backend, not the input)")


def test_an_overlay_over_another_input_is_refused_before_any_run(posecast, clip40: Path, tmp_path: Path) -> None:
    """`--overlay '{name}_pose.mp4'` with walk.mp4 and walk_pose.mp4, a recording of the user's:
    walk.mp4's overlay would replace it before it is tracked."""
    walk, pose = tmp_path / "walk.mp4", tmp_path / "walk_pose.mp4"
    shutil.copyfile(clip40, walk)
    shutil.copyfile(clip40, pose)
    with open(pose, "ab") as f:
        f.write(b"the user's own")
    before = pose.read_bytes()
    r = posecast.run(["track", "walk.mp4", "walk_pose.mp4", "--overlay", "{name}_pose.mp4", "--no-progress"])
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == ("posecast: error: 'walk_pose.mp4', an output of 'walk.mp4', is the input "
                                "'walk_pose.mp4': writing it would destroy that input; name the outputs apart from the "
                                "inputs (in a folder of their own, for instance)")
    assert pose.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["walk.mp4", "walk_pose.mp4"]


def test_inputs_after_an_option_are_inputs_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """argparse takes one run of positionals: `track a.mp4 -o X b.mp4` left b.mp4 'unrecognized'."""
    import argparse

    from streamer import cli

    seen: list[list[str]] = []

    def cmd_track(args: argparse.Namespace) -> int:
        seen.append(args.input)
        return 0

    monkeypatch.setattr(cli, "cmd_track", cmd_track)
    assert cli.main(["track", "a.mp4", "-o", "x/{name}.jsonl", "b.mp4", "c.mp4", "--no-progress"]) == 0
    assert seen == [["a.mp4", "b.mp4", "c.mp4"]]
    with pytest.raises(SystemExit) as exc:                      # an unknown option is still refused
        cli.main(["track", "a.mp4", "-o", "x/{name}.jsonl", "b.mp4", "--bogus"])
    assert exc.value.code == 2
