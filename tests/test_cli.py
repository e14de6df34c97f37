"""The `posecast` command line: bad input ends with one clear line and exit code 2, never a
traceback; every subcommand's help; the small commands (backends, export, make-clip, demo)."""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import pytest

from streamer.tracks import read_track

SUBCOMMANDS = {
    "track": ["--output", "--overlay", "--model", "--backend", "--batch-size", "--min-score", "--config"],
    "demo": ["--out-dir", "--model", "--min-score"],
    "make-clip": ["--size", "--frames", "--fps", "--seed"],
    "export": ["--output", "--model"],
    "backends": [],
    "bench-network": ["--batch", "--iters", "--precision", "--backend", "--calibration"],
    "convert": ["--output"],
}


def _files(d: Path) -> None:
    """The bad inputs the cases below name, all in the test's folder."""
    (d / "notes.txt").write_text("hello, this is not a video\n")
    (d / "empty.mp4").write_bytes(b"")
    (d / "random.onnx").write_bytes(bytes(range(256)) * 20)
    (d / "random.pt").write_bytes(bytes(range(256)) * 20)
    (d / "model.txt").write_text("a model, honestly\n")
    (d / "bad.yaml").write_text("inference: [\n")
    (d / "unknown.yaml").write_text("inference:\n  nope: 1\n")
    (d / "wrongtype.yaml").write_text("inference:\n  batch_size: lots\n")


CLIP = "{clip}"      # replaced by the session's 40-frame clip

BAD = {
    "missing file": (["missing.mp4", "-o", "t.jsonl"], "no such file"),
    "a dash for standard input": (["-", "-o", "t.jsonl"], "give /dev/stdin"),
    "text file as video": (["notes.txt", "-o", "t.jsonl"], "notes.txt"),
    "empty file": (["empty.mp4", "-o", "t.jsonl"], "empty"),
    "camera index": (["57", "-o", "t.jsonl"], "camera 57"),
    "video device": (["/dev/video57", "-o", "t.jsonl"], "camera 57"),
    "rtsp refused": (["rtsp://127.0.0.1:9/x", "-o", "t.jsonl"], "127.0.0.1"),
    "http refused": (["http://127.0.0.1:9/x.mp4", "-o", "t.jsonl"], "127.0.0.1"),
    "glob matching nothing": (["nothing/*.png", "-o", "t.jsonl"], "nothing/*.png"),
    "folder of videos": ([".", "-o", "t.jsonl"], "give the videos themselves as inputs, which are tracked in turn"),
    "bad yaml": ([CLIP, "-o", "t.jsonl", "--config", "bad.yaml"], "bad.yaml"),
    "unknown config key": ([CLIP, "-o", "t.jsonl", "--config", "unknown.yaml"], "nope"),
    "wrong config type": ([CLIP, "-o", "t.jsonl", "--config", "wrongtype.yaml"], "batch_size"),
    "missing config": ([CLIP, "-o", "t.jsonl", "--config", "missing.yaml"], "missing.yaml"),
    "batch size 0": ([CLIP, "-o", "t.jsonl", "--batch-size", "0"], "--batch-size must be"),
    "random onnx": ([CLIP, "-o", "t.jsonl", "--model", "random.onnx"], "random.onnx"),
    "random pt": ([CLIP, "-o", "t.jsonl", "--model", "random.pt"], "random.pt"),
    "missing model": ([CLIP, "-o", "t.jsonl", "--model", "missing.onnx"], "missing.onnx"),
    "txt model": ([CLIP, "-o", "t.jsonl", "--model", "model.txt"], ".txt"),
    "output folder missing": ([CLIP, "-o", "nowhere/t.jsonl"], "nowhere"),
    "output is a folder": ([CLIP, "-o", "."], "folder"),
    "unknown track extension": ([CLIP, "-o", "t.txt"], ".txt"),
    "track without extension": ([CLIP, "-o", "t"], "'t' has no extension"),
    "bad overlay extension": ([CLIP, "--overlay", "o.avi"], "o.avi"),
    "no outputs": ([CLIP], "nothing to write"),
    "waiting without publishing": ([CLIP, "-o", "t.jsonl", "--wait-subscribers", "1"], "give --publish too"),
    "waiting for -1": ([CLIP, "--publish", "--wait-subscribers", "-1"], "--wait-subscribers must be"),
}


def assert_one_clear_line(stderr: str, mention: str | None = None) -> str:
    assert "Traceback" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("posecast: error:"), stderr
    assert sum(line.startswith("posecast: error:") for line in stderr.splitlines()) == 1, stderr
    if mention is not None:
        assert mention in last, stderr
    return last


# Each is also run as a process of its own: the exit code and stderr a user sees.
BAD_AS_PROCESSES = ("missing file", "random onnx", "bad yaml")


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_track_input(posecast, clip40: Path, tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str],
                         monkeypatch: pytest.MonkeyPatch) -> None:
    """In this process, as `main` gives it (a process each costs seconds of start-up, 27 times),
    and for a few as the command itself."""
    _files(tmp_path)
    args, mention = BAD[case]
    args = [str(clip40) if a == CLIP else a for a in args]
    monkeypatch.chdir(tmp_path)
    code, err = _main_in_process(["track", *args], capsys)
    assert code == 2, err
    assert_one_clear_line(err, mention)
    assert not (tmp_path / "t.jsonl").exists()
    if case in BAD_AS_PROCESSES:
        r = posecast.run(["track", *args], timeout=60)
        assert r.returncode == 2, r.stderr
        assert_one_clear_line(r.stderr, mention)
        assert not (tmp_path / "t.jsonl").exists()


def test_an_input_that_gives_no_frame_is_one_line(posecast, tmp_path: Path) -> None:
    """Images whose headers read but whose pixels don't: the run fails after it started, and says
    so in one line: no summary of nothing, no overlay named that was never written. An earlier
    run's outputs at the same paths are kept as they were, not emptied."""
    import cv2

    d = tmp_path / "shots"
    d.mkdir()
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(d / name), np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8))
        (d / name).write_bytes((d / name).read_bytes()[:400])     # the header, and part of the pixels
    earlier = {tmp_path / name: f"{name} of an earlier run".encode() for name in ("t.jsonl", "t.csv", "t.npz", "o.mp4")}
    for path, data in earlier.items():
        path.write_bytes(data)
    r = posecast.run(["track", str(d), "-o", str(tmp_path / "t.jsonl"), "-o", str(tmp_path / "t.csv"),
                      "-o", str(tmp_path / "t.npz"), "--overlay", str(tmp_path / "o.mp4")], timeout=60)
    assert r.returncode == 2, r.stderr
    assert_one_clear_line(r.stderr, "none of the 2 image(s)")
    assert "frames in" not in r.stderr and "overlay" not in r.stderr, r.stderr
    assert {path: path.read_bytes() for path in earlier} == earlier
    assert not (tmp_path / "t.meta.json").exists()
    (tmp_path / "o.mp4").unlink()
    r = posecast.run(["track", str(d), "-o", str(tmp_path / "t.jsonl"), "--overlay", str(tmp_path / "o.mp4")],
                     timeout=60)
    assert r.returncode == 2 and not (tmp_path / "o.mp4").exists(), r.stderr
    # One image given: its error alone, with no warning about it before.
    for name, says in (("a.png", "could not be decoded"), ("notes.txt.png", "not an image file that can be read")):
        if name == "notes.txt.png":
            (d / name).write_text("not a picture")
        r = posecast.run(["track", str(d / name), "-o", str(tmp_path / "t.jsonl")], timeout=60)
        assert r.returncode == 2 and r.stderr.strip().splitlines() == [assert_one_clear_line(r.stderr, says)], r.stderr


@pytest.mark.parametrize("case", ["camera index", "text file as video", "rtsp refused"])
def test_run_with_a_source_that_cannot_open_says_only_that(posecast, tmp_path: Path, case: str) -> None:
    """`run` binds its port first (a port in use fails at once), but says it is publishing only
    once the source is open: a bad source is one line, not 'publishing on ...' and then the error."""
    import socket

    _files(tmp_path)
    args, mention = BAD[case]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = posecast.run(["run", args[0], "--port", str(port), "--no-progress"], timeout=60)
    assert r.returncode == 2, r.stderr
    assert_one_clear_line(r.stderr, mention)
    assert "publishing" not in r.stderr, r.stderr


def test_the_summary_time_holds_all_the_inference_it_reports(posecast, clip40: Path, tmp_path: Path) -> None:
    """The network runs one frame after another, so the run took at least the sum of its
    per-frame inference times. A clock started after the first frames were processed (40 frames
    fit the ring) reported '40 frames in 0.01 s' beside 9 ms a frame."""
    import re

    r = posecast.run(["track", clip40, "-o", tmp_path / "t.jsonl", "--stats", "--no-progress"])
    assert r.returncode == 0, r.stderr
    frames, seconds = re.search(r"(\d+) frames in ([\d.]+) s", r.stderr).groups()
    n, mean_ms = re.search(r"^infer\.infer\s+(\d+)\s+([\d.]+)", r.stderr, re.M).groups()
    assert int(n) == int(frames) == 40, r.stderr
    busy_s = int(n) * float(mean_ms) / 1000.0
    assert float(seconds) + 0.005 >= busy_s, r.stderr            # + the summary's rounding


@pytest.mark.parametrize("args, mention", [
    (["make-clip", "c.mp4", "--size", "161x120"], "--size"),
    (["make-clip", "c.mp4", "--size", "big"], "--size"),
    (["make-clip", "c.mp4", "--size", "160x120", "--frames", "0"], "--frames"),
    (["make-clip", "nowhere/c.mp4", "--size", "160x120", "--frames", "2"], "nowhere"),
    (["make-clip", "c.avi", "--size", "160x120", "--frames", "2"], "name it .mp4"),
    (["make-clip", "clip", "--size", "160x120", "--frames", "2"], "name it .mp4"),
    (["export", "-o", "nowhere/m.onnx"], "nowhere"),
    (["export", "-o", "m.pt"], "name it .onnx"),
    (["export", "-o", "m.txt"], "name it .onnx"),
    (["export", "-o", "m.onnx", "--model", "random.pt"], "random.pt"),
    (["bench-network", "--batch", "0", "--iters", "1"], "--batch"),
], ids=["odd size", "unparsable size", "zero frames", "clip folder missing", "clip named .avi", "clip without a suffix",
        "export folder missing", "export named .pt", "export named .txt", "export bad checkpoint", "bench batch 0"])
def test_bad_arguments_to_other_commands(posecast, tmp_path: Path, args: list[str], mention: str) -> None:
    _files(tmp_path)
    r = posecast.run(args, timeout=60)
    assert r.returncode == 2, r.stderr
    assert_one_clear_line(r.stderr, mention)


@pytest.mark.parametrize("option, says", [
    (["--min-score", "2"], "posecast: error: --min-score must be between 0 and 1 (got 2.0)"),
    (["--port", "99999"], "posecast: error: --port must be between 1 and 65535, or 0 for any free port (got 99999)"),
    (["--principal", "5", "nan"], "posecast: error: --principal (value 2) must be a finite number (got nan)"),
    (["--focal", "-5"], "posecast: error: --focal must be between 1 and 1,000,000 pixels (got -5.0)"),
    (["--bind", "not here"], "posecast: error: --bind must be an interface's address or name without spaces, such as "
                             "127.0.0.1 (this machine) or 0.0.0.0 (all) (got 'not here')"),
], ids=["min-score", "port", "principal", "focal", "bind"])
def test_a_bad_option_value_is_named_by_the_option(posecast, clip40: Path, tmp_path: Path, option: list[str],
                                                   says: str) -> None:
    """Not by the config key it sets (tracking.detect_min_score), which the user never typed."""
    r = posecast.run(["track", str(clip40), "-o", str(tmp_path / "t.jsonl"), *option])
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [says], r.stderr


def test_a_config_file_s_bad_value_is_still_named_by_its_key(posecast, clip40: Path, tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("tracking:\n  detect_min_score: 3\n")
    r = posecast.run(["track", str(clip40), "-o", str(tmp_path / "t.jsonl"), "--config", str(tmp_path / "c.yaml"),
                      "--min-score", "0.5"])
    assert r.returncode == 2, r.stderr
    assert_one_clear_line(r.stderr, "c.yaml: tracking.detect_min_score must be between 0 and 1 (got 3.0)")


def test_argparse_errors_are_one_line_and_exit_2(posecast) -> None:
    """argparse's usage block is left out: its error was the last of up to 14 lines."""
    for args, line in [
        (["track", "x.mp4", "-o", "t.jsonl", "--batch-size", "many"],
         "posecast track: error: argument --batch-size: invalid int value: 'many' (see `posecast track --help`)"),
        (["no-such-command"], "posecast: error: argument COMMAND: invalid choice: 'no-such-command' (choose from "),
        # An option the command does not take: said with that command's name.
        (["track", "x.mp4", "-o", "t.jsonl", "--bogus"],
         "posecast track: error: unrecognized arguments: --bogus (see `posecast track --help`)"),
        (["evaluate"], "posecast evaluate: error: the following arguments are required: --model (see "),
        (["train", "--steps", "x"], "posecast train: error: argument --steps: invalid int value: 'x' (see "),
    ]:
        r = posecast.run(args)
        assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and r.stderr.startswith(line), (args, r.stderr)


def test_a_calibration_source_that_will_not_be_read_is_said(posecast, clip40: Path, tmp_path: Path) -> None:
    r = posecast.run(["track", clip40, "-o", tmp_path / "t.jsonl", "--calibration", "nowhere/scenes",
                      "--no-progress"], timeout=120)
    assert r.returncode == 0, r.stderr
    assert ("posecast: note: the calibration source 'nowhere/scenes' is not read: it is only for building a "
            "TensorRT int8 engine (--precision int8) on an NVIDIA GPU") in r.stderr.splitlines()


def test_every_option_that_sets_a_config_key_is_one_the_pipeline_commands_take() -> None:
    """The overrides are read by attribute name: a renamed option would silently stop setting its key."""
    from streamer.cli import CONFIG_OPTIONS, _overrides, build_parser

    values = {"--backend": ["auto"], "--device": ["cpu"], "--precision": ["fp32"], "--calibration": ["c.mp4"],
              "--batch-size": ["2"], "--threads": ["2"], "--align": ["average"], "--filter": ["off"],
              "--axes": ["unity"], "--loop": [], "--focal": ["500"], "--principal": ["1", "2"], "--publish": [],
              "--bind": ["127.0.0.1"], "--port": ["0"], "--encoding": ["json"], "--wait-subscribers": ["1"],
              "--min-score": ["0.5"]}
    parser = build_parser()
    for section, key, option in CONFIG_OPTIONS:
        given = [option, *values[option]]
        takers = []
        for command in ("track", "run", "bench", "demo"):
            args, unknown = parser.parse_known_args([command, *(["x.mp4"] if command != "demo" else []), *given])
            if not unknown and key in _overrides(args).get(section, {}):
                takers.append(command)
        assert takers, f"{option} ({section}.{key}) is taken by no pipeline command"


@pytest.mark.parametrize("command, hidden, offered", [
    ("track", [], ["--publish", "--batch-size", "--stats"]),
    ("run", ["--publish", "--batch-size"], ["--stats", "--port"]),      # always publishes; a file goes frame by frame
    ("bench", ["--publish", "--stats"], ["--batch-size", "--port"]),    # always publishes, always prints the timings
])
def test_each_pipeline_command_offers_the_options_it_heeds(command: str, hidden: list[str],
                                                           offered: list[str]) -> None:
    """What a command does not heed is not offered in its help, but still accepted: scripts
    written for earlier versions pass it."""
    from streamer.cli import build_parser

    given = [a for o in hidden for a in ((o, "8") if o == "--batch-size" else (o,))]
    args, unknown = build_parser().parse_known_args([command, "x.mp4", *given])
    assert unknown == []
    shown = args.command_parser.format_help()
    assert not [o for o in hidden if o in shown] and all(o in shown for o in offered)
    assert args.publish == (command != "track" or "--publish" in hidden) and args.stats == (command == "bench")


def test_run_says_it_ignores_a_batch_size(posecast, clip40: Path) -> None:
    r = posecast.run(["run", clip40, "--port", "0", "--batch-size", "8", "--no-progress"], timeout=120)
    assert r.returncode == 0, r.stderr
    assert ("posecast: note: --batch-size is ignored by `run`: a live source (a file played as one too) goes one "
            "frame at a time") in r.stderr.splitlines()


def test_a_file_named_like_an_option_gets_a_hint(posecast, tmp_path: Path) -> None:
    (tmp_path / "-take1.mp4").write_bytes(b"")
    for args in (["track", "-take1.mp4"], ["track", "x.mp4", "-take1.mp4"]):
        r = posecast.run(args)
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert r.stderr.strip().splitlines()[-1] == ("posecast: '-take1.mp4' was read as an option; to give that "
                                                     "file, write ./-take1.mp4 (or put -- before it)")


def test_help(posecast) -> None:
    r = posecast.run(["--help"])
    assert r.returncode == 0
    for name in SUBCOMMANDS:
        assert name in r.stdout


@pytest.mark.parametrize("command", list(SUBCOMMANDS))
def test_subcommand_help(posecast, command: str) -> None:
    r = posecast.run([command, "--help"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"usage: posecast {command}")
    for option in SUBCOMMANDS[command]:
        assert option in r.stdout


def test_track_help_explains_inputs_and_exit_codes(posecast) -> None:
    r = posecast.run(["track", "--help"])
    text = " ".join(r.stdout.split())
    assert "rtsp" in text and "camera index" in text and "glob" in text
    assert "130 interrupted" in text and "3 frames were damaged or missing" in text


@pytest.mark.parametrize("command, codes", [
    ("track", ["0 done", "1 a stage failed", "2 bad input", "3 frames were damaged", "130 interrupted", "141 the reader"]),
    ("run", ["0 done", "1 a stage failed", "2 bad input", "port in use", "3 frames were damaged", "130 interrupted",
             "141 the reader"]),
    ("listen", ["0 done", "2 bad arguments", "3 a recording that lost messages", "130 interrupted",
                "141 the reader of a recording"]),
    ("replay", ["0 done", "2 bad arguments, a track that cannot be read or the port in use", "130 interrupted"]),
    ("convert", ["0 done", "2 bad arguments, a track that cannot be read or an output that cannot be written",
                 "130 interrupted", "141 the reader of an output written into a named pipe"]),
])
def test_the_commands_that_end_with_several_codes_list_them_in_their_help(command: str, codes: list[str],
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from streamer.cli import main

    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Exit codes: " in text and all(code in text for code in codes), text
    if command in ("replay", "convert"):       # no stages, no video: no 1 or 3
        assert "stage failed" not in text and "damaged" not in text, text


def test_a_pattern_the_shell_expanded_is_told_to_be_quoted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """`posecast track frames/*.png` unquoted: the shell gives every name, which `track` would take
    as several inputs and the commands of one input refuse; quoting is what passes the pattern on
    whole."""
    from streamer.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "frames").mkdir()
    for name in ("a.png", "b.png", "c.png"):
        (tmp_path / "frames" / name).write_bytes(b"")
    advice = ("3 image files were given, but they are read as one input: give their folder, or a pattern in quotes "
              "('frames/*.png') so that posecast, not the shell, expands it")
    code = main(["track", "frames/a.png", "frames/b.png", "frames/c.png", "-o", "{name}.jsonl"])
    assert code == 2
    assert assert_one_clear_line(capsys.readouterr().err) == f"posecast: error: {advice}"
    assert list(tmp_path.glob("*.jsonl")) == []
    with pytest.raises(SystemExit) as exc:
        main(["bench", "frames/a.png", "frames/b.png", "frames/c.png"])
    assert exc.value.code == 2
    said = capsys.readouterr().err.strip().splitlines()
    assert said[0].startswith("posecast bench: error: unrecognized arguments: frames/b.png frames/c.png")
    assert said[1:] == [f"posecast: {advice}"]
    with pytest.raises(SystemExit):
        main(["bench", "frames/a.png", "--bogus"])           # one image: nothing to say about patterns
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


@pytest.mark.parametrize("command", [["replay"], ["convert", "-o", "x.csv"]])
def test_a_folder_given_as_the_track_is_said_to_be_one(command: list[str], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "take1.jsonl").write_text("")
    code, err = _main_in_process([command[0], "runs", *command[1:]], capsys)
    assert code == 2
    assert assert_one_clear_line(err) == ("posecast: error: cannot read track file 'runs': it is a folder (give a "
                                          ".jsonl track file in it, e.g. 'runs/take1.jsonl')")
    assert not (tmp_path / "x.csv").exists()


def test_backends_lists_onnxruntime_cpu(posecast) -> None:
    r = posecast.run(["backends"])
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert any(line.startswith("onnxruntime:cpu") for line in lines), r.stdout
    assert lines[-1].startswith("auto -> ")


def test_a_tiled_search_is_one_network_call_at_batch_size_1(posecast, clip40: Path, tmp_path: Path) -> None:
    """With search_tiles 3 a search is 10 crops; the tracker ran them one call each at the default
    batch size of 1 (63 calls for 20 frames and 4 searches, where 27 are enough)."""
    (tmp_path / "tiles.yaml").write_text("tracking:\n  search_tiles: 3\n  research_every: 5\n")
    r = posecast.run(["track", str(clip40), "-o", "t.jsonl", "--config", "tiles.yaml", "--stats"])
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stderr.splitlines() if x.startswith("network runs:"))
    runs, searches = int(line.split()[2]), int(line.split("full-frame searches: ")[1].split()[0])
    assert searches >= 2 and runs <= 40 + 2 * searches, line     # a call per frame, a search, its refined crop


@pytest.mark.parametrize("backend, file", [("torch", "default.pt"), ("onnxruntime", ".onnx")])
def test_bench_network_names_the_file_its_backend_runs(posecast, backend: str, file: str) -> None:
    r = posecast.run(["bench-network", "--backend", backend, "--batch", "1", "--iters", "1", "--warmup", "0"])
    assert r.returncode == 0, r.stderr
    heading = r.stdout.splitlines()[0]
    assert heading.startswith(f"backend {backend} (cpu); model ") and file in heading, heading
    # Per frame and per second from one statistic, the median call.
    assert r.stdout.splitlines()[1].split() == ["batch", "p50", "ms", "p99", "ms", "mean", "ms", "ms/frame", "frames/s"]
    batch, p50, _, _, per_frame, per_s = map(float, r.stdout.splitlines()[2].split())
    # p50 is printed to 0.01 ms: on a fast call (under a millisecond) that rounding alone moves
    # 1000 / p50 by more than 1%, and frames/s is printed to 0.1 (a loaded machine's 291 ms: 3.4).
    assert per_frame == pytest.approx(p50, abs=0.01) and per_s == pytest.approx(1000 / p50, rel=0.01 + 0.005 / p50, abs=0.05)


def test_bench_network_calibration_is_for_int8(posecast, clip40: Path) -> None:
    r = posecast.run(["bench-network", "--batch", "1", "--iters", "1", "--calibration", clip40])
    assert r.returncode == 2 and "--calibration is for --precision int8" in r.stderr
    from engines.backends import nvidia_gpu_present

    if nvidia_gpu_present():
        return                          # there, TensorRT would build an int8 engine from it
    # Without an NVIDIA GPU int8 runs on the CPU in fp32: the source is not read, and that is said.
    r = posecast.run(["bench-network", "--batch", "1", "--iters", "1", "--precision", "int8", "--calibration", "x.mp4"])
    assert r.returncode == 0 and "the calibration source 'x.mp4' is not read" in r.stderr


def test_export_writes_a_posecast_onnx(posecast, tmp_path: Path, default_model, untrained_model) -> None:
    from engines.model_file import read_onnx_info

    r = posecast.run(["export", "-o", "m.onnx"])
    assert r.returncode == 0, r.stderr
    info = read_onnx_info(tmp_path / "m.onnx")
    assert info.config == default_model.info.config
    assert info.trained is True                          # the shipped weights
    assert "sha256" in r.stderr
    r = posecast.run(["export", "-o", "u.onnx", "--model", untrained_model.checkpoint_path])
    assert r.returncode == 0, r.stderr
    info = read_onnx_info(tmp_path / "u.onnx")
    assert info.config == untrained_model.info.config
    assert info.trained is False


def test_make_clip(posecast, tmp_path: Path) -> None:
    r = posecast.run(["make-clip", "c.mp4", "--size", "128x96", "--frames", "6", "--fps", "25"])
    assert r.returncode == 0, r.stderr
    with av.open(str(tmp_path / "c.mp4")) as c:
        stream = c.streams.video[0]
        frames = [f for f in c.decode(stream)]
        assert float(stream.average_rate) == pytest.approx(25.0)
    assert len(frames) == 6
    assert (frames[0].width, frames[0].height) == (128, 96)


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP"])
def test_a_stop_signal_mid_write_leaves_no_partial_file(posecast, tmp_path: Path, signame: str) -> None:
    """SIGTERM (a service manager, `timeout`) and SIGHUP (a closed terminal) end a one-shot
    command as Ctrl-C does: one line, 128 + the signal, and the half-written clip removed."""
    import signal
    import time

    proc = posecast.start(["make-clip", "c.mp4", "--size", "640x480", "--frames", "3000"])
    deadline = time.monotonic() + 60.0
    while not any(p.name.endswith(".tmp") for p in tmp_path.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "make-clip ended before the test could stop it"
    proc.send_signal(getattr(signal, signame))
    r = posecast.finish(proc)
    assert r.returncode == 128 + getattr(signal, signame)
    assert r.stderr.strip().splitlines() == [f"posecast: stopped by {signame}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_demo(posecast, tmp_path: Path, _session_cache: Path) -> None:
    r = posecast.run(["demo", "--out-dir", "out"], timeout=180)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert "not meaningful" not in r.stderr                  # the shipped model is trained
    meta, poses = read_track(tmp_path / "out" / "demo.jsonl")
    assert len((tmp_path / "out" / "demo.jsonl").read_text().splitlines()) == 1 + 90 + 1    # meta, poses, end
    assert meta["image_size"] == [640, 480]
    assert meta["model"]["trained"] is True
    assert [p["seq"] for p in poses] == list(range(90))
    # The configured thresholds (no --min-score 0): the trained model finds the walker in most frames.
    assert all(len(p["people"]) <= 1 for p in poses)
    assert sum(len(p["people"]) == 1 for p in poses) > len(poses) // 2
    with av.open(str(tmp_path / "out" / "demo_overlay.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 90
    # The clip is rendered into POSECAST_CACHE (the session's), never the user's cache.
    assert list((_session_cache / "demo").glob("*.mp4"))


@pytest.mark.parametrize("shipped, args, min_score", [
    (False, [], 0.0),                        # no trained weights: show what the untrained network outputs
    (True, [], None),                        # the shipped trained model: the configured thresholds
    (False, ["--model", "mine.pt"], None),   # the user's model: the configured thresholds
    (False, ["--min-score", "0.5"], 0.5),    # a --min-score given is kept
], ids=["no shipped weights", "shipped weights", "own model", "min score given"])
def test_demo_min_score(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, shipped: bool, args: list[str],
                        min_score: float | None) -> None:
    """`demo` lowers the thresholds to 0 only for the untrained built-in model (no weights shipped)."""
    import engines.models as models
    import streamer.cli as cli
    import streamer.synthclip as synthclip

    weights = tmp_path / "weights" / "default.pt"
    if shipped:
        weights.parent.mkdir()
        weights.write_bytes(b"")
    monkeypatch.setattr(models, "SHIPPED_DEFAULT", weights)
    monkeypatch.setattr(synthclip, "ensure_default_clip", lambda progress=False: tmp_path / "demo.mp4")
    seen = []
    monkeypatch.setattr(cli, "run_track", lambda source, tracks, overlay, a, **kw: seen.append(a.min_score) or 0)
    parsed = cli.build_parser().parse_args(["demo", "--out-dir", str(tmp_path / "out"), *args])
    assert parsed.func(parsed) == 0
    assert seen == [min_score]


def test_an_output_that_is_the_input_is_refused(posecast, clip40, tmp_path) -> None:
    import shutil

    victim = tmp_path / "victim.mp4"
    shutil.copyfile(clip40, victim)
    before = victim.read_bytes()
    r = posecast.run(["track", victim, "--overlay", victim])
    assert r.returncode == 2 and "both the input and an output" in r.stderr.strip().splitlines()[-1]
    assert victim.read_bytes() == before
    r = posecast.run(["track", victim, "-o", tmp_path / "a.jsonl", "-o", tmp_path / "a.jsonl"])
    assert r.returncode == 2 and "given twice" in r.stderr
    # Another name for the same file (a hard link) is the same file: resolving paths does not show it.
    os.link(victim, tmp_path / "linked.jsonl")
    os.link(victim, tmp_path / "linked.mp4")
    for option, linked in (("-o", "linked.jsonl"), ("--overlay", "linked.mp4")):
        r = posecast.run(["track", victim, option, tmp_path / linked])
        assert r.returncode == 2 and "both the input and an output" in r.stderr.strip().splitlines()[-1], r.stderr
        assert victim.read_bytes() == before
    other = tmp_path / "other.jsonl"
    other.write_text("")
    os.link(other, tmp_path / "other2.jsonl")
    r = posecast.run(["track", victim, "-o", other, "-o", tmp_path / "other2.jsonl"])
    assert r.returncode == 2 and "given twice" in r.stderr
    # A CSV's meta sidecar named as an output is not "given twice": the user gave it once.
    r = posecast.run(["track", victim, "-o", tmp_path / "t.csv", "-o", tmp_path / "t.meta.json"])
    assert r.returncode == 2 and "is where the CSV track" in r.stderr and "t.csv" in r.stderr, r.stderr


@pytest.mark.parametrize("late", ["-o", "--overlay"])
def test_an_output_that_cannot_be_written_leaves_the_others_as_they_were(posecast, clip40, tmp_path, late) -> None:
    # The writers empty their files as they open them: an earlier output must not be emptied for a
    # later one that fails. A path under a file fails even for root (CI), as a read-only folder would.
    keep_jsonl, keep_csv = tmp_path / "keep.jsonl", tmp_path / "keep.csv"
    keep_jsonl.write_text("a track from before\n")
    keep_csv.write_text("another\n")
    blocker = tmp_path / "not_a_folder.txt"
    blocker.write_text("")
    bad = blocker / ("out.npz" if late == "-o" else "out.mp4")
    r = posecast.run(["track", clip40, "-o", keep_jsonl, "-o", keep_csv, late, bad, "--no-progress"])
    assert r.returncode == 2, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("posecast: error: cannot write") and str(bad) in line and "Traceback" not in r.stderr
    assert keep_jsonl.read_text() == "a track from before\n" and keep_csv.read_text() == "another\n"


def test_a_csv_whose_meta_sidecar_cannot_be_written_leaves_the_others_as_they_were(posecast, clip40,
                                                                                   tmp_path) -> None:
    """A CSV writes its meta beside itself, in '<stem>.meta.json': that file is checked with the
    outputs named, before any of them is opened (and emptied)."""
    keep = tmp_path / "keep.jsonl"
    keep.write_text("a track from before\n")
    (tmp_path / "side.meta.json").mkdir()
    r = posecast.run(["track", clip40, "-o", keep, "-o", tmp_path / "side.csv", "--no-progress"])
    assert r.returncode == 2, r.stderr
    assert_one_clear_line(r.stderr, "side.meta.json")
    assert keep.read_text() == "a track from before\n" and not (tmp_path / "side.csv").exists()


def test_ring_fits_the_shared_memory_there_is() -> None:
    import pytest

    from streamer.ring import RingTooLargeError, fit_slots

    mb = 1_000_000
    assert fit_slots(24, 9, 3 * mb, None) == 24                  # unknown: as configured
    assert fit_slots(24, 9, 3 * mb, 1000 * mb) == 24
    assert fit_slots(24, 9, 3 * mb, 40 * mb) == 12               # fewer slots, still >= a batch
    with pytest.raises(RingTooLargeError, match="shm-size"):
        fit_slots(24, 9, 3 * mb, 20 * mb)


# --- failures of the small commands: one line, exit 2, nothing lost, nothing partial -------------
# Unwritable paths are a path under a regular file: that fails for root too (CI runs as root, where
# a read-only folder made with chmod would be written anyway). A full disk is an OSError(ENOSPC)
# raised in the middle of the write, after part of the file has gone out.

def _blocker(d: Path) -> Path:
    blocker = d / "not_a_folder.txt"
    blocker.write_text("")
    return blocker


def _disk_full(*args: object, **kwargs: object) -> None:
    import errno
    import os

    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _main_in_process(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """`posecast ARGV` in this process (to fake a full disk, or to spare a process start-up); its
    exit code and stderr."""
    from streamer.cli import main

    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("args, mention", [
    (["make-clip", "c.mp4", "--fps", "inf"], "--fps"),
    (["make-clip", "c.mp4", "--fps", "nan"], "--fps"),
    (["make-clip", "c.mp4", "--fps", "1e-9"], "--fps"),
    (["make-clip", "c.mp4", "--fps", "1000"], "--fps"),
    (["make-clip", "c.mp4", "--seed", "-1"], "--seed"),
    (["make-clip", "c.mp4", "--size", "100000x100000"], "--size"),
    (["make-clip", "c.mp4", "--size", "64x8192"], "--size"),
    (["make-clip", "c.mp4", "--frames", "100000000"], "--frames"),
    (["make-clip", "not_a_folder.txt/c.mp4", "--size", "64x64", "--frames", "1"], "not_a_folder.txt/c.mp4"),
    (["export", "-o", "not_a_folder.txt/m.onnx"], "not_a_folder.txt/m.onnx"),
    (["demo", "--out-dir", "not_a_folder.txt"], "not_a_folder.txt"),
    (["demo", "--out-dir", "not_a_folder.txt/d"], "not_a_folder.txt/d"),
    (["bench-network", "--batch", "100000", "--iters", "1"], "--batch"),
    (["bench-network", "--batch", "1", "257", "--iters", "1"], "256"),
    (["bench-network", "--threads", "10000", "--iters", "1"], "--threads"),
    (["bench-network", "--threads", "-1", "--iters", "1"], "--threads"),
    (["bench-network", "--iters", "99999999999"], "--iters must be between 1 and 100000"),
], ids=["fps inf", "fps nan", "fps tiny", "fps huge", "negative seed", "huge size", "one side too large",
        "too many frames", "clip under a file", "export under a file", "demo dir is a file",
        "demo dir under a file", "bench batch huge", "bench batch above the cap", "bench threads huge",
        "bench threads negative", "bench iters huge"])
def test_bad_arguments_and_unwritable_outputs_are_one_line(posecast, tmp_path: Path, args: list[str],
                                                           mention: str) -> None:
    _blocker(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    r = posecast.run(args, timeout=60)
    assert r.returncode == 2, r.stderr
    assert_one_clear_line(r.stderr, mention)
    assert sorted(p.name for p in tmp_path.iterdir()) == before        # nothing written, nothing created


@pytest.mark.parametrize("command", ["track", "run"])
def test_threads_are_capped_for_the_pipeline_too(posecast, clip40: Path, command: str) -> None:
    args = [command, clip40, "-o", "t.jsonl", "--threads", "10000", "--no-progress"]
    r = posecast.run(args, timeout=60)
    assert r.returncode == 2, r.stderr
    assert_one_clear_line(r.stderr, "threads must be between 0 and 256")
    help_text = " ".join(posecast.run([command, "--help"]).stdout.split())
    assert "at most 256" in help_text


def test_make_clip_on_a_full_disk_leaves_no_partial_file_and_keeps_the_old_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import streamer.synthclip as synthclip

    real_encode = synthclip._encode

    def encode_then_fill_the_disk(path: Path, *args: object) -> None:
        Path(path).write_bytes(b"\0" * 4096)          # part of the clip has gone out
        _disk_full()

    dest = tmp_path / "c.mp4"
    dest.write_bytes(b"the user's clip")
    monkeypatch.setattr(synthclip, "_encode", encode_then_fill_the_disk)
    code, err = _main_in_process(["make-clip", dest, "--size", "64x64", "--frames", "2"], capsys)
    assert code == 2
    assert "No space left" in assert_one_clear_line(err, str(dest))
    assert dest.read_bytes() == b"the user's clip"
    assert [p.name for p in tmp_path.iterdir()] == ["c.mp4"]            # no temporary left
    # And when it works, the clip replaces the old file, with the permissions of a plain new file.
    monkeypatch.setattr(synthclip, "_encode", real_encode)
    code, err = _main_in_process(["make-clip", dest, "--size", "64x64", "--frames", "2"], capsys)
    assert code == 0, err
    with av.open(str(dest)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["c.mp4"]
    assert dest.stat().st_mode & 0o777 == 0o666 & ~_umask()


def test_make_clip_larger_than_the_memory_is_refused_before_it_renders(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A 4096x4096 clip takes about 5 GB to render: on a smaller machine the OOM killer ended it
    part-way, without a word. With too little memory available it is one line, before any work."""
    import streamer.synthclip as synthclip

    assert synthclip.render_memory_bytes(4096, 4096) > 4.84e9 > synthclip.render_memory_bytes(2048, 2048)
    monkeypatch.setattr(synthclip, "available_memory_bytes", lambda: 2_000_000_000)
    monkeypatch.setattr(synthclip, "_encode", lambda *a: pytest.fail("rendered anyway"))
    dest = tmp_path / "big.mp4"
    code, err = _main_in_process(["make-clip", dest, "--size", "4096x4096", "--frames", "2"], capsys)
    assert code == 2
    line = assert_one_clear_line(err, "4096x4096")
    assert "needs about 5.1 GB of memory to render, and 2.0 GB is available: give a smaller --size" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full, a device whose every write fails as a full disk")
def test_a_track_on_a_full_disk_fails_the_run_but_the_other_track_is_whole(posecast, clip40: Path,
                                                                          tmp_path: Path) -> None:
    """`posecast track IN -o full/a.jsonl -o b.jsonl`: the run goes on to the input's end with
    b.jsonl, then exits 2 with one line naming a.jsonl, why, and what it holds. (The run ended at
    a.jsonl's first frame, and b.jsonl held that frame alone.)"""
    (tmp_path / "full.jsonl").symlink_to("/dev/full")      # its every write: No space left on device
    r = posecast.run(["track", clip40, "-o", "full.jsonl", "-o", "whole.jsonl", "--no-progress"])
    assert r.returncode == 2, r.stderr
    assert assert_one_clear_line(r.stderr) == (
        "posecast: error: cannot write track file 'full.jsonl': No space left on device (free some disk space); "
        "it holds none of the 40 frames, and 'whole.jsonl' got all 40 frames")
    meta, poses = read_track(tmp_path / "whole.jsonl")
    assert [p["seq"] for p in poses] == list(range(40))


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_export_on_a_full_disk_leaves_no_partial_file_and_keeps_the_old_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], default_model) -> None:
    import shutil

    real_copy = shutil.copyfile

    def copy_then_fill_the_disk(src: object, dst: object, **kwargs: object) -> None:
        Path(str(dst)).write_bytes(Path(str(src)).read_bytes()[:16384])
        _disk_full()

    dest = tmp_path / "m.onnx"
    dest.write_bytes(b"the user's model")
    monkeypatch.setattr(shutil, "copyfile", copy_then_fill_the_disk)
    code, err = _main_in_process(["export", "-o", dest], capsys)
    assert code == 2
    assert "No space left" in assert_one_clear_line(err, str(dest))
    assert dest.read_bytes() == b"the user's model"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]
    monkeypatch.setattr(shutil, "copyfile", real_copy)
    code, err = _main_in_process(["export", "-o", dest], capsys)
    assert code == 0, err
    assert dest.read_bytes() == default_model.onnx_path.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_export_onto_the_model_itself_is_refused(posecast, tmp_path: Path, untrained_model) -> None:
    import shutil

    assert posecast.run(["export", "-o", "m.onnx"]).returncode == 0
    before = (tmp_path / "m.onnx").read_bytes()
    r = posecast.run(["export", "-o", "m.onnx", "--model", "m.onnx"])
    assert r.returncode == 2, r.stderr
    assert_one_clear_line(r.stderr, "model file itself")
    assert (tmp_path / "m.onnx").read_bytes() == before
    # A checkpoint is never overwritten with its own export (refused for its name first).
    shutil.copyfile(untrained_model.checkpoint_path, tmp_path / "mine.pt")
    before = (tmp_path / "mine.pt").read_bytes()
    r = posecast.run(["export", "-o", "mine.pt", "--model", "mine.pt"])
    assert r.returncode == 2, r.stderr
    assert_one_clear_line(r.stderr, "name it .onnx")
    assert (tmp_path / "mine.pt").read_bytes() == before


@pytest.mark.parametrize("existed", [False, True])
def test_a_failed_demo_leaves_no_folder_it_created(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                   existed: bool) -> None:
    import streamer.cli as cli
    import streamer.synthclip as synthclip

    out = tmp_path / "new" / "out"
    if existed:
        out.mkdir(parents=True)
    monkeypatch.setattr(synthclip, "ensure_default_clip", lambda progress=False: tmp_path / "demo.mp4")
    monkeypatch.setattr(cli, "run_track", lambda *a, **kw: 2)
    parsed = cli.build_parser().parse_args(["demo", "--out-dir", str(out)])
    assert parsed.func(parsed) == 2
    assert out.is_dir() == existed and (tmp_path / "new").is_dir() == existed


def test_demo_with_a_bad_config_is_one_line_before_the_clip(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A misspelt --config key is the demo's one line: no clip is rendered (or announced) first."""
    import streamer.synthclip as synthclip

    rendered: list[bool] = []
    monkeypatch.setattr(synthclip, "ensure_default_clip",
                        lambda progress=False: rendered.append(True) or tmp_path / "demo.mp4")
    (tmp_path / "c.yaml").write_text("inference:\n  batch_sise: 2\n")
    code, err = _main_in_process(["demo", "--out-dir", tmp_path / "out", "--config", tmp_path / "c.yaml"], capsys)
    assert code == 2 and not rendered
    assert_one_clear_line(err, "inference.batch_sise")
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_demo_with_an_unwritable_cache_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import streamer.synthclip as synthclip

    monkeypatch.setattr(synthclip, "ensure_default_clip", _disk_full)
    code, err = _main_in_process(["demo", "--out-dir", tmp_path / "out"], capsys)
    assert code == 2
    assert_one_clear_line(err, "POSECAST_CACHE")
    assert not (tmp_path / "out").exists()


# `posecast evaluate` and `posecast train` print their errors as `posecast evaluate: error: ...`.

def assert_one_delegated_line(stderr: str, command: str, mention: str) -> None:
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert lines[-1].startswith(f"posecast {command}: error:") and mention in lines[-1], stderr
    assert sum(": error:" in line for line in lines) == 1, stderr


@pytest.mark.parametrize("extra, mention", [
    (["--json", "not_a_folder.txt/e.json"], "not_a_folder.txt/e.json"),
    (["--json", "not_a_folder.txt/sub/e.json"], "not_a_folder.txt/sub/e.json"),
    (["--json", "."], "cannot write --json '.': it is a folder"),
    (["--batch-size", "0"], "--batch-size"),
    (["--threads", "1000"], "--threads must be between 0 and 256"),
], ids=["json under a file", "json deeper under a file", "json is a folder", "batch size 0", "threads 1000"])
def test_evaluate_refuses_bad_outputs_and_arguments_before_evaluating(posecast, tmp_path: Path, default_model,
                                                                      extra: list[str], mention: str) -> None:
    # The synthetic folder does not exist: the check comes before any data (or the model) is read.
    _blocker(tmp_path)
    r = posecast.run(["evaluate", "--model", default_model.checkpoint_path, "--synth-val", "missing_shards",
                      "--no-progress", *extra], timeout=60)
    assert r.returncode == 2, r.stderr
    assert_one_delegated_line(r.stderr, "evaluate", mention)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not_a_folder.txt"]


def test_evaluate_json_on_a_full_disk_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from engines.errors import InputError
    from train.evaluate import check_json_output, write_json

    dest = tmp_path / "sub" / "e.json"
    check_json_output(dest, {})                           # a folder to be created is fine
    assert not (tmp_path / "sub").exists()
    write_json(dest, {"a": 1.0})
    assert dest.read_text() == '{\n "a": 1.0\n}\n'
    monkeypatch.setattr(os, "replace", _disk_full)
    with pytest.raises(InputError, match="No space left.*not written"):
        write_json(dest, {"a": 2.0})
    assert dest.read_text() == '{\n "a": 1.0\n}\n'
    assert [p.name for p in dest.parent.iterdir()] == ["e.json"]


def test_train_into_an_unwritable_folder_is_one_line(posecast, tmp_path: Path) -> None:
    _blocker(tmp_path)
    r = posecast.run(["train", "--out", "not_a_folder.txt/run", "--no-progress"], timeout=60)
    assert r.returncode == 2, r.stderr
    assert_one_delegated_line(r.stderr, "train", "not_a_folder.txt/run")
    r = posecast.run(["train", "--out", "not_a_folder.txt", "--no-progress"], timeout=60)
    assert r.returncode == 2, r.stderr
    assert_one_delegated_line(r.stderr, "train", "is a file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not_a_folder.txt"]


@pytest.mark.parametrize("existed", [False, True])
def test_a_failed_train_leaves_no_folder_it_created(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    existed: bool) -> None:
    import train.train as tt
    from engines.errors import InputError
    from train.config import load_train_config

    def no_data(*args: object) -> None:
        raise FileNotFoundError("no shard folder matches missing/*")

    out = tmp_path / "runs" / "r1"
    if existed:
        out.mkdir(parents=True)
    monkeypatch.setattr(tt, "build_data", no_data)
    with pytest.raises(InputError, match="training data"):
        tt.train(load_train_config(None), out, progress=False)
    assert out.is_dir() == existed and (tmp_path / "runs").is_dir() == existed


def test_a_reader_that_goes_away_ends_posecast_quietly(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import sys

    from streamer.cli import main

    class ClosedPipe:
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self) -> None:
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["backends"]) == 141
    assert capsys.readouterr().err == ""


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux's /dev/full (a device always full)")
@pytest.mark.parametrize("unbuffered", ["", "1"])
def test_a_full_standard_output_is_one_line(unbuffered: str) -> None:
    """`posecast backends > out.txt` on a full disk (/dev/full stands in for it): one line and
    exit 2, not print()'s OSError traceback, and none again from Python flushing it at exit."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONUNBUFFERED": unbuffered}
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "streamer.cli", "backends"], stdout=full,
                              stderr=subprocess.PIPE, text=True, env=env, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr == ("posecast: error: cannot write to standard output: No space left on device "
                           "(free some disk space)\n")


def test_a_closed_standard_output_is_no_traceback() -> None:
    """`posecast backends >&-`: Python starts with sys.stdout None; print() then writes nothing,
    and the final flush must not fail on None."""
    import os
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "streamer.cli", "backends"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, timeout=120, preexec_fn=lambda: os.close(1))
    assert (done.returncode, done.stderr) == (0, "")


@pytest.mark.parametrize("args", [["track", "locked/a.jpg", "-o", "t.jsonl"],
                                  ["track", "a.jpg", "-o", "locked/t.jsonl"],
                                  ["convert", "locked/t.jsonl", "-o", "t.csv"]])
def test_a_path_in_a_folder_that_may_not_be_entered_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys,
                                                                tmp_path: Path, args: list[str]) -> None:
    """`chmod -x locked` (as root, where permissions do not hold, stood in for by its stat's error):
    Path.exists() and is_file() raise PermissionError on anything inside, before any check of
    the input or the outputs can name the problem."""
    import errno
    import pathlib

    from streamer.cli import main

    real_stat = pathlib.Path.stat

    def stat(self: pathlib.Path, *a, **kw):
        if self.parts[:1] == ("locked",) and len(self.parts) > 1:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_stat(self, *a, **kw)

    monkeypatch.chdir(tmp_path)
    (tmp_path / "locked").mkdir()
    (tmp_path / "a.jpg").write_bytes(b"")
    monkeypatch.setattr(pathlib.Path, "stat", stat)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("posecast: error: permission denied: 'locked/") and err.count("\n") == 1, err


def test_the_version_says_which_posecast_ran_where(capsys: pytest.CaptureFixture[str]) -> None:
    """A bug report needs the version; `posecast --version` said "the following arguments are
    required: COMMAND"."""
    import importlib.metadata
    import platform

    from streamer.cli import main

    with pytest.raises(SystemExit) as ended:
        main(["--version"])
    assert ended.value.code == 0
    out = capsys.readouterr().out
    assert out == (f"posecast {importlib.metadata.version('posecast')} (Python {platform.python_version()}, "
                   f"{platform.system()} {platform.machine()})\n")


@pytest.mark.parametrize("source, live, said", [
    ("walk.mp4", False, "file (as fast as possible)"),
    ("walk.mp4", True, "file, live (played at its frame rate)"),
    ("0", False, "camera (live: its newest frame each time)"),
    ("/dev/video2", True, "camera (live: its newest frame each time)"),
    ("frames/*.png", False, "images (as fast as possible)"),
    ("rtsp://cam.local/s", False, "network stream (a recording as fast as possible; a live one: its newest frame "
                                  "each time)"),
])
def test_bench_says_how_it_reads_its_input(source: str, live: bool, said: str) -> None:
    """A camera is live whatever --live says: `bench 0` once said 'file (as fast as possible)'."""
    from streamer.cli import bench_mode

    assert bench_mode(source, live) == said
