"""A track records how its run ended (`TrackWriter.end`, `track_end`), and `posecast track
--skip-done` reads it to go on with a batch where an earlier run stopped."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from engines.errors import InputError, UsageError
from streamer.batch import BatchItem, check_skip_done, done_before, skip_done
from streamer.protocol import END_FAILED, END_OF_INPUT, END_STOPPED, PoseFrame, end_message, meta_message
from streamer.tracks import open_track_writer, read_track, track_end, track_meta


@pytest.fixture
def meta() -> dict:
    from engines.skeleton import H36M17

    return meta_message(H36M17, "walk", (64, 48), 30.0, {"weights": "test"})


def _write(path: Path, meta: dict, frames: int, reason: str | None) -> None:
    """A track of `frames` frames with nobody in them, its end recorded where `reason` is given."""
    writer = open_track_writer(path, meta)
    for seq in range(frames):
        writer.write(PoseFrame(seq, 100.0 + seq / 30, seq / 30, (64, 48), []))
    if reason is not None:
        writer.end(end_message("walk", reason, writer.frames_written, frames - 1 if frames else None))
    writer.close()


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".npz"])
@pytest.mark.parametrize("reason", [END_OF_INPUT, END_STOPPED, END_FAILED])
def test_each_format_with_a_place_for_it_records_the_end(tmp_path: Path, meta: dict, suffix: str, reason: str) -> None:
    path = tmp_path / f"t{suffix}"
    _write(path, meta, 5, reason)
    assert track_end(path) == end_message("walk", reason, 5, 4)


def test_the_end_does_not_change_what_the_formats_hold(tmp_path: Path, meta: dict) -> None:
    """The .jsonl's poses read back as before; the .csv's rows and the .npz's arrays are the
    same; the .csv's sidecar is its meta, with the end beside it."""
    for reason in (None, END_OF_INPUT):
        folder = tmp_path / str(reason)
        folder.mkdir()
        for suffix in (".jsonl", ".csv", ".npz"):
            _write(folder / f"t{suffix}", meta, 3, reason)
    assert read_track(tmp_path / "None" / "t.jsonl") == read_track(tmp_path / END_OF_INPUT / "t.jsonl")
    assert (tmp_path / "None" / "t.csv").read_text() == (tmp_path / END_OF_INPUT / "t.csv").read_text()
    sidecar = json.loads((tmp_path / END_OF_INPUT / "t.meta.json").read_text())
    assert sidecar.pop("end")["reason"] == END_OF_INPUT and sidecar == meta
    with np.load(tmp_path / "None" / "t.npz") as before, np.load(tmp_path / END_OF_INPUT / "t.npz") as after:
        assert set(after.files) - set(before.files) == {"end_json"}
        for name in before.files:
            np.testing.assert_array_equal(before[name], after[name])


def test_no_end_is_none(tmp_path: Path, meta: dict) -> None:
    """A run that was killed, a .bvh, a file that is not there or not a track: nothing known."""
    for suffix in (".jsonl", ".csv", ".npz"):
        _write(tmp_path / f"t{suffix}", meta, 3, None)
        assert track_end(tmp_path / f"t{suffix}") is None
    (tmp_path / "x.bvh").write_text("HIERARCHY\n")
    (tmp_path / "bad.jsonl").write_bytes(b"\xff\xfe{")
    for name in ("x.bvh", "missing.jsonl", "missing.npz", "bad.jsonl"):
        assert track_end(tmp_path / name) is None


def test_a_track_without_a_frame_makes_no_file_for_its_end(tmp_path: Path, meta: dict) -> None:
    for suffix in (".jsonl", ".csv", ".npz"):
        _write(tmp_path / f"t{suffix}", meta, 0, END_STOPPED)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_run_is_said_when_its_track_is_read(tmp_path: Path, meta: dict) -> None:
    """A stop is how a live run ends, and says nothing; a failure may have cut the input short."""
    said: list[str] = []
    for reason in (END_OF_INPUT, END_STOPPED, END_FAILED):
        _write(tmp_path / f"{reason}.jsonl", meta, 4, reason)
        _, poses = read_track(tmp_path / f"{reason}.jsonl", said.append)
        assert len(poses) == 4
    assert said == [f"track file '{tmp_path / 'failed.jsonl'}': the run that wrote it failed after 4 poses (its end "
                    f"message says so), so it may lack the rest of its input"]


def test_a_message_after_the_end_is_refused(tmp_path: Path, meta: dict) -> None:
    path = tmp_path / "t.jsonl"
    _write(path, meta, 2, END_OF_INPUT)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines + [lines[1]]) + "\n")
    with pytest.raises(InputError, match=r"line 5: a message after the 'end' message"):
        read_track(path)


# --- --skip-done -------------------------------------------------------------------------------

def _item(tmp_path: Path, *suffixes: str, overlay: bool = False) -> BatchItem:
    return BatchItem("walk.mp4", "walk", [tmp_path / f"walk{s}" for s in suffixes],
                     tmp_path / "walk.mp4" if overlay else None)


def test_an_input_is_done_where_every_output_is_there_and_its_tracks_end_with_the_input(
        tmp_path: Path, meta: dict) -> None:
    item = _item(tmp_path, ".jsonl", ".npz", ".bvh")
    assert not done_before(item)
    _write(tmp_path / "walk.jsonl", meta, 3, END_OF_INPUT)
    _write(tmp_path / "walk.npz", meta, 3, END_OF_INPUT)
    assert not done_before(item)                  # the .bvh is missing
    (tmp_path / "walk.bvh").write_text("HIERARCHY\n")
    assert done_before(item)
    for reason in (END_STOPPED, END_FAILED, None):
        _write(tmp_path / "walk.npz", meta, 3, reason)
        assert not done_before(item), reason
    assert done_before(_item(tmp_path, ".jsonl", ".bvh"))
    assert not done_before(_item(tmp_path, ".jsonl", overlay=True))


def test_an_input_newer_than_its_outputs_is_not_done(tmp_path: Path, meta: dict) -> None:
    """A video recorded again since its tracks were written is tracked again, as `make` would."""
    import os

    video = tmp_path / "walk.mp4"
    video.write_bytes(b"")
    item = BatchItem(str(video), "walk", [tmp_path / "walk.jsonl", tmp_path / "walk.csv"], None)
    _write(tmp_path / "walk.jsonl", meta, 3, END_OF_INPUT)
    _write(tmp_path / "walk.csv", meta, 3, END_OF_INPUT)
    os.utime(video, (1_000_000, 1_000_000))
    assert done_before(item)
    os.utime(tmp_path / "walk.meta.json", (999_999, 999_999))      # the CSV's sidecar counts too
    assert not done_before(item)
    os.utime(video, (999_000, 999_000))
    assert done_before(item)


def test_tracks_made_with_another_model_or_in_other_axes_are_not_done(tmp_path: Path, meta: dict) -> None:
    import io

    from streamer.batch import MadeWith

    item = _item(tmp_path, ".jsonl", ".npz")
    made = {**meta, "model": {"weights": "stage 1", "file": "a.onnx"}}
    _write(tmp_path / "walk.jsonl", made, 3, END_OF_INPUT)
    _write(tmp_path / "walk.npz", made, 3, END_OF_INPUT)
    assert done_before(item, MadeWith("a.onnx", "stage 1", "camera"))
    for other in (MadeWith("a.onnx", "stage 1", "unity"), MadeWith("b.onnx", "stage 1", "camera"),
                  MadeWith("a.onnx", "stage 2", "camera")):
        assert not done_before(item, other)
        out = io.StringIO()
        assert skip_done([item], "posecast", out, other) == [item]
        assert out.getvalue() == ("posecast: 1 input's tracks were made with another model or in other axes: "
                                  "tracked again (--skip-done)\n")


def test_skip_done_needs_a_track_that_records_its_end(tmp_path: Path) -> None:
    for suffixes in ([".bvh"], []):
        with pytest.raises(UsageError, match="--skip-done tells an input done by the end its .jsonl, .csv or .npz"):
            check_skip_done(_item(tmp_path, *suffixes, overlay=True))
    with pytest.raises(UsageError):
        check_skip_done(BatchItem("walk.mp4", "walk", [Path("-")], None))
    check_skip_done(_item(tmp_path, ".csv"))


def test_the_inputs_skipped_are_said_in_one_line(tmp_path: Path, meta: dict) -> None:
    import io

    items = []
    for k in range(6):
        items.append(BatchItem(f"c{k}.mp4", f"c{k}", [tmp_path / f"c{k}.jsonl"], None))
        if k != 2:
            _write(tmp_path / f"c{k}.jsonl", meta, 2, END_OF_INPUT)
    out = io.StringIO()
    assert skip_done(items, "posecast", out) == [items[2]]
    assert out.getvalue() == ("posecast: skipping 5 of 6 inputs tracked to their end before (--skip-done): 'c0.mp4', "
                              "'c1.mp4', 'c3.mp4' and 2 more\n")
    out = io.StringIO()
    assert skip_done(items[:2], "posecast", out) == []
    assert "all 2 inputs were tracked to their end before" in out.getvalue()
    out = io.StringIO()
    assert skip_done(items[2:3], "posecast", out) == [items[2]] and out.getvalue() == ""


# --- the whole command --------------------------------------------------------------------------

def test_a_run_records_its_end_and_convert_passes_it_on(posecast, clip40: Path, tmp_path: Path) -> None:
    r = posecast.run(["track", clip40, "-o", "w.jsonl", "-o", "w.csv", "-o", "w.npz", "--no-progress"])
    assert r.returncode == 0, r.stderr
    ended = end_message("walk40", END_OF_INPUT, 40, 39)
    assert [track_end(tmp_path / f"w.{s}") for s in ("jsonl", "csv", "npz")] == [ended] * 3
    assert json.loads((tmp_path / "w.jsonl").read_text().splitlines()[-1]) == ended
    r = posecast.run(["convert", "w.jsonl", "-o", "c.npz", "-o", "c.jsonl"])
    assert r.returncode == 0, r.stderr
    assert track_end(tmp_path / "c.npz") == track_end(tmp_path / "c.jsonl") == ended


def test_skip_done_goes_on_where_a_stopped_batch_stopped(posecast, clip40: Path, tmp_path: Path) -> None:
    clips = []
    for k in range(3):
        clips.append(tmp_path / f"c{k}.mp4")
        shutil.copyfile(clip40, clips[-1])
    r = posecast.run(["track", *clips, "-o", "{name}.jsonl", "--no-progress"])
    assert r.returncode == 0, r.stderr
    # c1 as a run stopped part-way leaves it; c2 as a run killed leaves it (no end).
    stopped = tmp_path / "c1.jsonl"
    lines = stopped.read_text().splitlines()
    stopped.write_text("\n".join(lines[:10] + [json.dumps(end_message("c1", END_STOPPED, 9, 8))]) + "\n")
    killed = tmp_path / "c2.jsonl"
    killed.write_text("\n".join(killed.read_text().splitlines()[:-1]) + "\n")
    r = posecast.run(["track", *clips, "-o", "{name}.jsonl", "--skip-done", "--no-progress"])
    assert r.returncode == 0, r.stderr
    said = r.stderr.strip().splitlines()
    assert said[0] == f"posecast: skipping 1 of 3 inputs tracked to their end before (--skip-done): '{clips[0]}'"
    assert said[1] == f"posecast: [1/2] {clips[1]}" and f"posecast: [2/2] {clips[2]}" in said
    assert said[-1].startswith("posecast: all 2 inputs done: 80 frames in ") and said[-1].endswith(
        " frames/s with each input's start"), said[-1]
    assert all(len(read_track(tmp_path / f"c{k}.jsonl")[1]) == 40 for k in range(3))
    r = posecast.run(["track", *clips, "-o", "{name}.jsonl", "--skip-done", "--no-progress"])
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == ("posecast: all 3 inputs were tracked to their end before, as their tracks record; "
                                "nothing to do (--skip-done)")
    r = posecast.run(["track", clips[0], "-o", "c0.jsonl", "-o", "c0.bvh", "--skip-done", "--no-progress"])
    assert r.returncode == 0 and "[1/1]" not in r.stderr and (tmp_path / "c0.bvh").is_file(), r.stderr
    r = posecast.run(["track", clips[0], "-o", "c0.jsonl", "-o", "c0.bvh", "--skip-done", "--no-progress"])
    assert r.returncode == 0 and r.stderr.strip() == (f"posecast: '{clips[0]}' was tracked to its end before, as its "
                                                      f"tracks record; nothing to do (--skip-done)"), r.stderr
    r = posecast.run(["track", clips[0], "-o", "c0.jsonl", "--skip-done", "--axes", "unity", "--no-progress"])
    assert r.returncode == 0 and "made with another model or in other axes: tracked again" in r.stderr, r.stderr
    assert track_meta(tmp_path / "c0.jsonl")["axes"]["frame"] == "unity"
    r = posecast.run(["track", *clips, "-o", "{name}.bvh", "--skip-done"])
    assert r.returncode == 2 and r.stderr.startswith("posecast: error: --skip-done tells an input done"), r.stderr


def test_convert_from_a_named_pipe_passes_the_end_on(tmp_path: Path, meta: dict) -> None:
    """A pipe is read once: the end comes from that one pass (a second open would wait for a
    writer for ever)."""
    import os
    import threading

    from streamer.convert import convert_track

    source = tmp_path / "src.jsonl"
    _write(source, meta, 3, END_OF_INPUT)
    pipe = tmp_path / "pipe.jsonl"
    os.mkfifo(pipe)
    assert track_end(pipe) is None                # not opened: nothing would write it
    writer = threading.Thread(target=lambda: pipe.write_bytes(source.read_bytes()), daemon=True)
    converting = threading.Thread(target=convert_track, args=(pipe, [tmp_path / "out.npz"], lambda _: None),
                                  daemon=True)
    writer.start()
    converting.start()
    converting.join(timeout=30)
    alive = converting.is_alive()
    if alive:
        with open(pipe, "wb"):                    # let it go: a second writer for its second open
            pass
    assert not alive, "convert opened the pipe a second time"
    assert track_end(tmp_path / "out.npz") == end_message("walk", END_OF_INPUT, 3, 2)
