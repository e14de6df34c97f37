"""The `posecast` command line: bad input ends with one clear line and exit code 2, never a
traceback; every subcommand's help; the small commands (backends, export, make-clip, demo)."""

from __future__ import annotations

from pathlib import Path

import av
import pytest

from streamer.tracks import read_track

SUBCOMMANDS = {
    "track": ["--output", "--overlay", "--model", "--backend", "--batch-size", "--min-score", "--config"],
    "demo": ["--out-dir", "--model", "--min-score"],
    "make-clip": ["--size", "--frames", "--fps", "--seed"],
    "export": ["--output", "--model"],
    "backends": [],
    "bench-network": ["--batch", "--iters", "--precision", "--backend"],
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
    "text file as video": (["notes.txt", "-o", "t.jsonl"], "notes.txt"),
    "empty file": (["empty.mp4", "-o", "t.jsonl"], "empty"),
    "camera index": (["57", "-o", "t.jsonl"], "camera 57"),
    "video device": (["/dev/video57", "-o", "t.jsonl"], "camera 57"),
    "rtsp refused": (["rtsp://127.0.0.1:9/x", "-o", "t.jsonl"], "127.0.0.1"),
    "http refused": (["http://127.0.0.1:9/x.mp4", "-o", "t.jsonl"], "127.0.0.1"),
    "glob matching nothing": (["nothing/*.png", "-o", "t.jsonl"], "nothing/*.png"),
    "bad yaml": ([CLIP, "-o", "t.jsonl", "--config", "bad.yaml"], "bad.yaml"),
    "unknown config key": ([CLIP, "-o", "t.jsonl", "--config", "unknown.yaml"], "nope"),
    "wrong config type": ([CLIP, "-o", "t.jsonl", "--config", "wrongtype.yaml"], "batch_size"),
    "missing config": ([CLIP, "-o", "t.jsonl", "--config", "missing.yaml"], "missing.yaml"),
    "batch size 0": ([CLIP, "-o", "t.jsonl", "--batch-size", "0"], "batch_size"),
    "random onnx": ([CLIP, "-o", "t.jsonl", "--model", "random.onnx"], "random.onnx"),
    "random pt": ([CLIP, "-o", "t.jsonl", "--model", "random.pt"], "random.pt"),
    "missing model": ([CLIP, "-o", "t.jsonl", "--model", "missing.onnx"], "missing.onnx"),
    "txt model": ([CLIP, "-o", "t.jsonl", "--model", "model.txt"], ".txt"),
    "output folder missing": ([CLIP, "-o", "nowhere/t.jsonl"], "nowhere"),
    "output is a folder": ([CLIP, "-o", "."], "folder"),
    "unknown track extension": ([CLIP, "-o", "t.txt"], ".txt"),
    "bad overlay extension": ([CLIP, "--overlay", "o.avi"], "o.avi"),
    "no outputs": ([CLIP], "nothing to write"),
    "min score above 1": ([CLIP, "-o", "t.jsonl", "--min-score", "2"], "min_score"),
}


def assert_one_clear_line(stderr: str, mention: str | None = None) -> str:
    assert "Traceback" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("posecast: error:"), stderr
    assert sum(line.startswith("posecast: error:") for line in stderr.splitlines()) == 1, stderr
    if mention is not None:
        assert mention in last, stderr
    return last


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_track_input(posecast, clip40: Path, tmp_path: Path, case: str) -> None:
    _files(tmp_path)
    args, mention = BAD[case]
    args = [str(clip40) if a == CLIP else a for a in args]
    r = posecast.run(["track", *args], timeout=60)
    assert r.returncode == 2, r.stderr
    assert_one_clear_line(r.stderr, mention)
    assert not (tmp_path / "t.jsonl").exists()


@pytest.mark.parametrize("args, mention", [
    (["make-clip", "c.mp4", "--size", "161x120"], "--size"),
    (["make-clip", "c.mp4", "--size", "big"], "--size"),
    (["make-clip", "c.mp4", "--size", "160x120", "--frames", "0"], "--frames"),
    (["make-clip", "nowhere/c.mp4", "--size", "160x120", "--frames", "2"], "nowhere"),
    (["export", "-o", "nowhere/m.onnx"], "nowhere"),
    (["export", "-o", "m.onnx", "--model", "random.pt"], "random.pt"),
    (["bench-network", "--batch", "0", "--iters", "1"], "--batch"),
], ids=["odd size", "unparsable size", "zero frames", "clip folder missing", "export folder missing",
        "export bad checkpoint", "bench batch 0"])
def test_bad_arguments_to_other_commands(posecast, tmp_path: Path, args: list[str], mention: str) -> None:
    _files(tmp_path)
    r = posecast.run(args, timeout=60)
    assert r.returncode == 2, r.stderr
    assert_one_clear_line(r.stderr, mention)


def test_argparse_errors_exit_2_without_traceback(posecast) -> None:
    r = posecast.run(["track", "x.mp4", "-o", "t.jsonl", "--batch-size", "many"])
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "--batch-size" in r.stderr.strip().splitlines()[-1]
    r = posecast.run(["no-such-command"])
    assert r.returncode == 2 and "Traceback" not in r.stderr


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
    assert "130 interrupted" in text and "3 corrupt frames were skipped" in text


def test_backends_lists_onnxruntime_cpu(posecast) -> None:
    r = posecast.run(["backends"])
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert any(line.startswith("onnxruntime:cpu") for line in lines), r.stdout
    assert lines[-1].startswith("auto -> ")


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


def test_demo(posecast, tmp_path: Path, _session_cache: Path) -> None:
    r = posecast.run(["demo", "--out-dir", "out"], timeout=180)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert "not meaningful" not in r.stderr                  # the shipped model is trained
    meta, poses = read_track(tmp_path / "out" / "demo.jsonl")
    assert len((tmp_path / "out" / "demo.jsonl").read_text().splitlines()) == 91
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


def test_ring_fits_the_shared_memory_there_is() -> None:
    import pytest

    from streamer.ring import RingTooLargeError, fit_slots

    mb = 1_000_000
    assert fit_slots(24, 9, 3 * mb, None) == 24                  # unknown: as configured
    assert fit_slots(24, 9, 3 * mb, 1000 * mb) == 24
    assert fit_slots(24, 9, 3 * mb, 40 * mb) == 12               # fewer slots, still >= a batch
    with pytest.raises(RingTooLargeError, match="shm-size"):
        fit_slots(24, 9, 3 * mb, 20 * mb)
