"""Track file writers (JSONL, CSV, NPZ) and reading JSONL tracks back."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from engines.errors import InputError, OutputLostError, ReaderGoneError
from engines.skeleton import H36M17, Skeleton
from streamer.protocol import PersonPose, PoseFrame, frame_from_message, meta_message, pose_message
from streamer.tracks import ReaderWaitStopped, csv_header, open_track_writer, read_track

J = H36M17.num_joints
META = meta_message(H36M17, "clip.mp4", (640, 480), 30.0, {"name": "test-model"})


def make_person(rng: np.random.Generator, pid: int = 0, num_joints: int = J) -> PersonPose:
    return PersonPose(
        id=pid,
        score=float(rng.uniform()),
        bbox=tuple(float(v) for v in rng.uniform(0, 640, 4)),
        joints_3d=rng.normal(size=(num_joints, 3)).astype(np.float32),
        joints_2d=rng.uniform(0, 640, (num_joints, 2)).astype(np.float32),
        conf=rng.uniform(size=num_joints).astype(np.float32),
    )


def make_frames(n: int, seed: int = 0, empty_every: int = 3) -> list[PoseFrame]:
    """`n` frames; every `empty_every`-th has nobody, and frame 1 has two people."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        people = [] if i % empty_every == 0 else [make_person(rng, 0)]
        if i == 1:
            people.append(make_person(rng, 1))
        frames.append(PoseFrame(seq=i, t_capture=1.7e9 + i / 30, t_media=None if i == 2 else i / 30,
                                image_size=(640, 480), people=people))
    return frames


def lines_of(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


# --- JSONL ----------------------------------------------------------------------------------

def test_jsonl_meta_first_then_one_line_per_frame(tmp_path: Path) -> None:
    frames = make_frames(7)
    path = tmp_path / "t.jsonl"
    with open_track_writer(path, META) as writer:
        for f in frames:
            writer.write(f)
    lines = lines_of(path)
    assert len(lines) == 1 + len(frames)
    assert json.loads(lines[0]) == META
    for line, f in zip(lines[1:], frames):
        assert line == json.dumps(pose_message(f), separators=(",", ":"))
    assert [json.loads(x)["seq"] for x in lines[1:]] == list(range(7))
    assert json.loads(lines[1])["people"] == []          # frame 0 has nobody and is still there


def test_ndjson_extension_is_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "t.NDJSON"
    with open_track_writer(path, META) as writer:
        writer.write(make_frames(1)[0])
    assert json.loads(lines_of(path)[0])["type"] == "meta"


def test_jsonl_read_back(tmp_path: Path) -> None:
    frames = make_frames(5)
    path = tmp_path / "t.jsonl"
    with open_track_writer(path, META) as writer:
        for f in frames:
            writer.write(f)
    meta, poses = read_track(path)
    assert meta == META
    assert poses == [pose_message(f) for f in frames]


finite = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False)


@st.composite
def frames_strategy(draw: st.DrawFn) -> PoseFrame:
    people = []
    for pid in range(draw(st.integers(0, 2))):
        people.append(PersonPose(
            id=pid,
            score=draw(st.floats(0, 1)),
            bbox=tuple(draw(st.lists(finite, min_size=4, max_size=4))),
            joints_3d=draw(arrays(np.float64, (J, 3), elements=finite)),
            joints_2d=draw(arrays(np.float32, (J, 2), elements=st.floats(-1e4, 1e4, width=32))),
            conf=draw(arrays(np.float32, (J,), elements=st.floats(0, 1, width=32))),
            root_3d=draw(st.none() | arrays(np.float32, (3,), elements=st.floats(-1e3, 1e3, width=32))),
        ))
    t_media = draw(st.none() | st.floats(0, 1e5))
    return PoseFrame(seq=draw(st.integers(0, 2**40)), t_capture=draw(st.floats(0, 2e9)), t_media=t_media,
                     image_size=(draw(st.integers(1, 8000)), draw(st.integers(1, 8000))), people=people,
                     image=draw(st.none() | st.text(min_size=1, max_size=8)))


@settings(max_examples=40, deadline=None)
@given(st.lists(frames_strategy(), min_size=1, max_size=4))
def test_jsonl_round_trip_of_any_finite_frames(frames: list[PoseFrame]) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.jsonl"
        with open_track_writer(path, META) as writer:
            for f in frames:
                writer.write(f)
        meta, poses = read_track(path)
    assert meta == META
    assert poses == [pose_message(f) for f in frames]


def test_jsonl_flushes_every_frame(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    writer = open_track_writer(path, META)
    try:
        for f in make_frames(3):
            writer.write(f)
        # Read through a separate handle, as another process would, before closing.
        lines = lines_of(path)
        assert len(lines) == 1 + 3
        assert [json.loads(x)["type"] for x in lines] == ["meta", "pose", "pose", "pose"]
    finally:
        writer.close()


class _FillsUp:
    """A file that takes `room` more bytes, then fails as a full disk does (part of a write, then
    ENOSPC)."""

    def __init__(self, real, room: int) -> None:
        self.real, self.room = real, room

    def write(self, data) -> int:
        if self.room <= 0:
            raise OSError(28, "No space left on device")
        n = self.real.write(bytes(data[: self.room]))
        self.room -= n
        return n

    def __getattr__(self, name):
        return getattr(self.real, name)


@pytest.mark.parametrize("ext", ["jsonl", "csv"])
def test_a_full_disk_leaves_the_frames_written_before_it(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"t.{ext}"
    frames = make_frames(5, empty_every=100)
    writer = open_track_writer(path, META)
    for f in frames[:3]:
        writer.write(f)
    writer._file = _FillsUp(writer._file, room=100)           # the fourth frame's lines are longer
    with pytest.raises(InputError, match="No space left on device .*free some disk space"):
        writer.write(frames[3])
    writer.close()
    if ext == "jsonl":
        _, poses = read_track(path)
        assert poses == [pose_message(f) for f in frames[:3]]
    else:
        rows = list(csv.reader(path.open()))          # one row per person, so seqs repeat
        assert rows[0][0] == "seq" and sorted({int(r[0]) for r in rows[1:]}) == [f.seq for f in frames[:3]]
        assert all(len(r) == len(rows[0]) for r in rows)


@pytest.mark.parametrize("ext", ["jsonl", "csv", "npz"])
def test_a_track_whose_folder_is_removed_during_the_run_is_said_lost(tmp_path: Path, ext: str) -> None:
    """`rm -rf` of the output folder mid-run: the writer went on into a file no name reaches (an
    .npz has no folder to be written into), so closing says the track is lost, rather than the
    run ending well and naming a file that is not there."""
    folder = tmp_path / "out"
    folder.mkdir()
    path = folder / f"t.{ext}"
    writer = open_track_writer(path, META)
    for f in make_frames(3):
        writer.write(f)
    shutil.rmtree(folder)
    with pytest.raises(OutputLostError) as err:
        writer.close()
    assert err.value.exit_code == 2 and err.value.paths == [str(path)]
    assert str(err.value) == (f"output '{path}' was deleted, or its folder removed, during the run: what was written "
                              f"to it is lost (keep the outputs and their folders until the run ends, then run again)")
    writer.close()                                     # said once
    assert not folder.exists()


def test_a_named_pipe_whose_name_is_removed_still_reaches_its_reader(tmp_path: Path) -> None:
    """A named pipe has no file to lose: its reader gets every frame without the name."""
    fifo = tmp_path / "poses.jsonl"
    os.mkfifo(fifo)
    reader, got = _read_pipe_later(fifo, 0.0, None)
    writer = open_track_writer(fifo, META)
    frames = make_frames(6)
    writer.write(frames[0])
    fifo.unlink()
    for f in frames[1:]:
        writer.write(f)
    writer.close()
    reader.join(10)
    assert len(got) == 1 + 6


def test_close_is_idempotent_and_write_after_close_fails(tmp_path: Path) -> None:
    for ext in ("jsonl", "csv", "npz"):
        writer = open_track_writer(tmp_path / f"t.{ext}", META)
        writer.write(make_frames(1)[0])
        writer.close()
        writer.close()
        with pytest.raises(ValueError, match="closed"):
            writer.write(make_frames(1)[0])


@pytest.mark.parametrize("ext", ["jsonl", "csv", "npz"])
@pytest.mark.parametrize("where", ["joints_3d", "conf", "bbox", "t_capture"])
def test_non_finite_values_are_rejected(tmp_path: Path, ext: str, where: str) -> None:
    frames = make_frames(3, empty_every=100)
    bad = frames[2]
    if where == "bbox":
        bad.people[0].bbox = (0.0, math.inf, 1.0, 1.0)
    elif where == "t_capture":
        bad.t_capture = math.nan
    else:
        getattr(bad.people[0], where)[3] = np.nan
    path = tmp_path / f"t.{ext}"
    with open_track_writer(path, META) as writer:
        writer.write(frames[0])
        writer.write(frames[1])
        with pytest.raises(ValueError, match="non-finite"):
            writer.write(bad)
    # The good frames are there, the bad one left no trace.
    if ext == "jsonl":
        text = path.read_text()
        assert "NaN" not in text and "Infinity" not in text
        assert len(text.splitlines()) == 3
    elif ext == "csv":
        assert [int(r["seq"]) for r in csv.DictReader(path.open())] == [0, 1, 1]   # frame 1: two people
    else:
        with np.load(path) as z:
            assert z["seq"].tolist() == [0, 1]


def test_nan_in_meta_is_rejected(tmp_path: Path) -> None:
    meta = meta_message(H36M17, "cam", (640, 480), math.nan, {})
    with pytest.raises(ValueError, match="non-finite"):
        open_track_writer(tmp_path / "t.jsonl", meta)


# --- reading tracks back --------------------------------------------------------------------

def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def good_lines() -> list[str]:
    return [json.dumps(META)] + [json.dumps(pose_message(f)) for f in make_frames(3)]


def test_read_track_bad_json_names_the_line(tmp_path: Path) -> None:
    lines = good_lines()
    lines[2] = lines[2][:40]                           # cut off, as a crash mid-line would
    path = write_lines(tmp_path / "t.jsonl", lines)
    with pytest.raises(InputError, match="line 3") as err:
        read_track(path)
    assert "\n" not in str(err.value)
    assert "t.jsonl" in str(err.value)


def test_read_track_leaves_out_a_last_line_cut_off_mid_write(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The writers flush after every frame, so a crash or a full disk while recording cuts only
    the last line: every whole frame before it is read, and the cut is said (it was an error, and
    the whole recording could not be replayed or converted)."""
    lines = good_lines()
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(lines) + "\n" + lines[-1][:40], encoding="utf-8")
    said: list[str] = []
    meta, poses = read_track(path, said.append)
    assert meta == json.loads(lines[0]) and poses == [json.loads(line) for line in lines[1:]]
    assert said == [f"track file '{path}', line 5: cut off mid-write (the recording stopped there); it is left out, "
                    f"and the 3 pose messages before it are read"]
    with caplog.at_level("WARNING", logger="streamer.tracks"):
        assert len(read_track(path)[1]) == 3                  # told to the log where no one else is
    assert [r.getMessage() for r in caplog.records] == said
    # Whole lines are read as ever: a last one without its newline, a cut line with one is an error.
    path.write_text("\n".join(lines), encoding="utf-8")
    assert len(read_track(path, said.append)[1]) == 3 and len(said) == 1
    path.write_text("\n".join(lines) + "\n" + lines[-1][:40] + "\n", encoding="utf-8")
    with pytest.raises(InputError, match="line 5: not valid JSON"):
        read_track(path, said.append)
    # Only the last line: a cut one before others is the file damaged otherwise.
    path.write_text("\n".join([*lines[:2], lines[2][:40], lines[3]]), encoding="utf-8")
    with pytest.raises(InputError, match="line 3: not valid JSON"):
        read_track(path, said.append)
    # A cut meta line leaves nothing to read: the error it was.
    path.write_text(lines[0][:40], encoding="utf-8")
    with pytest.raises(InputError, match="line 1: not valid JSON"):
        read_track(path, said.append)
    assert len(said) == 1


def test_read_track_meta_must_come_first(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "t.jsonl", good_lines()[1:])
    with pytest.raises(InputError, match="line 1.*meta"):
        read_track(path)


def test_read_track_rejects_other_messages_and_non_objects(tmp_path: Path) -> None:
    lines = good_lines()
    lines[3] = json.dumps({"type": "meta"})
    with pytest.raises(InputError, match="line 4.*pose"):
        read_track(write_lines(tmp_path / "a.jsonl", lines))
    lines = good_lines()
    lines[2] = "[1, 2]"
    with pytest.raises(InputError, match="line 3.*object"):
        read_track(write_lines(tmp_path / "b.jsonl", lines))


def test_read_track_rejects_nan_literals(tmp_path: Path) -> None:
    lines = good_lines()
    lines[2] = lines[2].replace('"t_capture":', '"t_capture": NaN, "x":', 1)
    with pytest.raises(InputError, match="line 3"):
        read_track(write_lines(tmp_path / "t.jsonl", lines))


def test_read_track_skips_blank_lines_and_counts_them(tmp_path: Path) -> None:
    lines = good_lines()
    lines.insert(2, "")
    lines.append("{oops")
    path = write_lines(tmp_path / "t.jsonl", lines)
    with pytest.raises(InputError, match="line 6"):
        read_track(path)
    path = write_lines(tmp_path / "u.jsonl", good_lines()[:2] + ["", "  "] + good_lines()[2:])
    assert len(read_track(path)[1]) == 3


def test_read_track_empty_missing_newer_schema_and_wrong_format(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(InputError, match="empty"):
        read_track(tmp_path / "empty.jsonl")
    with pytest.raises(InputError, match="cannot read track file .*nope.jsonl"):
        read_track(tmp_path / "nope.jsonl")
    newer = dict(META, schema=99)
    with pytest.raises(InputError, match="schema 99"):
        read_track(write_lines(tmp_path / "new.jsonl", [json.dumps(newer)]))
    no_schema = {k: v for k, v in META.items() if k != "schema"}
    with pytest.raises(InputError, match=r"its meta has no valid schema number \(got None; the file is corrupt"):
        read_track(write_lines(tmp_path / "old.jsonl", [json.dumps(no_schema)]))
    with pytest.raises(InputError, match=r"\.jsonl"):
        read_track(tmp_path / "t.csv")


def test_read_track_of_a_folder_says_it_is_one(tmp_path: Path) -> None:
    """`posecast replay runs/` (or `convert`): not "only .jsonl tracks", which sends the user
    after the file's format; what to give instead, a track in it where there is one."""
    runs = tmp_path / "runs"
    runs.mkdir()
    with pytest.raises(InputError) as err:
        read_track(runs)
    assert str(err.value) == (f"cannot read track file '{runs}': it is a folder (give a .jsonl track file; there is "
                              f"none in it)")
    (runs / "notes.txt").write_text("")
    write_lines(runs / "b.jsonl", [json.dumps(META)])
    write_lines(runs / "a.jsonl", [json.dumps(META)])
    (runs / "old.jsonl").mkdir()                    # named as a track, itself a folder
    with pytest.raises(InputError) as err:
        read_track(runs)
    assert str(err.value) == (f"cannot read track file '{runs}': it is a folder (give a .jsonl track file in it, "
                              f"e.g. '{runs / 'a.jsonl'}')")
    with pytest.raises(InputError, match=r"it is a folder \(give a \.jsonl track file; there is none in it\)"):
        read_track(runs / "old.jsonl")


# --- CSV ------------------------------------------------------------------------------------

TINY = Skeleton(name="tiny", joint_names=("root", "l_arm", "r_arm"), parents=(-1, 0, 0),
                torso=("root",), origin="root")


def test_csv_header_comes_from_the_meta_joint_names(tmp_path: Path) -> None:
    meta = meta_message(TINY, "x", (10, 10), None, {})
    path = tmp_path / "t.csv"
    with open_track_writer(path, meta) as writer:
        writer.write(PoseFrame(0, 1.0, None, (10, 10), []))
    header = next(csv.reader(path.open()))
    assert header == ["seq", "t_capture", "t_media", "person_id", "score",
                      "bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1", "root3d_x", "root3d_y", "root3d_z",
                      "root_x3d", "root_y3d", "root_z3d", "l_arm_x3d", "l_arm_y3d", "l_arm_z3d",
                      "r_arm_x3d", "r_arm_y3d", "r_arm_z3d",
                      "root_u", "root_v", "root_conf", "l_arm_u", "l_arm_v", "l_arm_conf",
                      "r_arm_u", "r_arm_v", "r_arm_conf", "image"]
    assert header == csv_header(list(TINY.joint_names))


def test_csv_rows_sidecar_and_flush(tmp_path: Path) -> None:
    frames = make_frames(6)
    path = tmp_path / "t.csv"
    writer = open_track_writer(path, META)
    for f in frames:
        writer.write(f)
    # Flushed per frame: all rows are on disk before close.
    rows = list(csv.DictReader(path.open()))
    writer.close()

    assert json.loads((tmp_path / "t.meta.json").read_text()) == META
    # Frame 1 has two people, frames 0 and 3 nobody: 7 rows, every frame present, in order.
    assert [int(r["seq"]) for r in rows] == [0, 1, 1, 2, 3, 4, 5]
    empty = rows[0]
    assert empty["person_id"] == "" and empty["pelvis_x3d"] == "" and empty["r_wrist_conf"] == ""
    assert float(empty["t_capture"]) == pytest.approx(frames[0].t_capture)
    assert rows[3]["t_media"] == ""                    # frame 2 has an unknown media time

    for row, (f, k) in zip(rows[1:3], [(frames[1], 0), (frames[1], 1)]):
        p = pose_message(f)["people"][k]
        assert int(row["person_id"]) == p["id"]
        assert float(row["score"]) == p["score"]
        assert [float(row[f"bbox_{c}"]) for c in ("x0", "y0", "x1", "y1")] == p["bbox"]
        for j, name in enumerate(H36M17.joint_names):
            assert [float(row[f"{name}_{c}3d"]) for c in "xyz"] == p["joints_3d"][j]
            assert [float(row[f"{name}_{c}"]) for c in "uv"] == p["joints_2d"][j]
            assert float(row[f"{name}_conf"]) == p["conf"][j]


# --- NPZ ------------------------------------------------------------------------------------

def test_npz_arrays_written_on_close(tmp_path: Path) -> None:
    frames = make_frames(600)                          # past the first buffer size: it must grow
    for f in frames:
        if f.people:
            f.people[0].id = f.seq // 7                # track numbers
    path = tmp_path / "t.npz"
    writer = open_track_writer(path, META)
    for f in frames:
        writer.write(f)
    assert not path.exists()                           # nothing until close
    writer.close()
    assert [p.name for p in tmp_path.iterdir()] == ["t.npz"]   # no temporary file left behind

    n = len(frames)
    with np.load(path, allow_pickle=False) as z:
        assert z["seq"].shape == (n,) and z["seq"].tolist() == list(range(n))
        assert z["t_capture"].shape == (n,) and z["t_media"].shape == (n,)
        assert z["score"].shape == (n,) and z["bbox"].shape == (n, 4)
        assert z["joints_3d"].shape == (n, J, 3) and z["joints_2d"].shape == (n, J, 2)
        assert z["conf"].shape == (n, J)
        assert json.loads(str(z["meta_json"])) == META
        found = z["found"]
        assert found.dtype == bool
        assert found.tolist() == [bool(f.people) for f in frames]
        assert z["person_id"].dtype == np.int64
        assert z["person_id"].tolist() == [f.people[0].id if f.people else -1 for f in frames]
        for name in ("score", "bbox", "joints_3d", "joints_2d", "conf"):
            assert np.isnan(z[name][~found]).all()
            assert np.isfinite(z[name][found]).all()
        assert np.isnan(z["t_media"][2]) and z["t_media"][4] == pytest.approx(4 / 30)
        np.testing.assert_allclose(z["t_capture"], [f.t_capture for f in frames])
        # Several people: the first one is kept.
        first = frames[1].people[0]
        np.testing.assert_array_equal(z["joints_3d"][1], first.joints_3d)
        np.testing.assert_array_equal(z["joints_2d"][1], first.joints_2d)
        np.testing.assert_array_equal(z["conf"][1], first.conf)
        np.testing.assert_allclose(z["bbox"][1], first.bbox, rtol=1e-6)


def test_npz_replaces_an_existing_file_only_on_close(tmp_path: Path) -> None:
    path = tmp_path / "t.npz"
    path.write_bytes(b"old")
    with open_track_writer(path, META) as writer:
        for f in make_frames(3):
            writer.write(f)
        assert path.read_bytes() == b"old"
    with np.load(path) as z:
        assert len(z["seq"]) == 3


@pytest.mark.parametrize("ext", ["jsonl", "csv", "npz"])
def test_a_track_with_no_frame_leaves_the_path_as_it_was(tmp_path: Path, ext: str) -> None:
    """A run that ends before its first frame (its source or model failed) writes nothing: an
    earlier run's track at that path is kept, not emptied, and no file appears where none was."""
    kept, new = tmp_path / f"kept.{ext}", tmp_path / f"new.{ext}"
    kept.write_bytes(b"an earlier run's track")
    for path in (kept, new):
        open_track_writer(path, META).close()
    assert kept.read_bytes() == b"an earlier run's track"
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"kept.{ext}"]      # no CSV sidecar either


def test_npz_with_one_frame_without_a_person(tmp_path: Path) -> None:
    path = tmp_path / "t.npz"
    with open_track_writer(path, META) as writer:
        writer.write(PoseFrame(0, 1.0, None, (10, 10), []))
    with np.load(path) as z:
        assert z["joints_3d"].shape == (1, J, 3) and not z["found"][0]


def test_an_npz_the_disk_cannot_take_fails_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`close` is called on the input's end and again on the stage's way out: a full disk is one
    error, not a second one (or a warning) about the same file."""
    def full(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    path = tmp_path / "t.npz"
    path.write_bytes(b"old")
    writer = open_track_writer(path, META)
    for f in make_frames(3):
        writer.write(f)
    monkeypatch.setattr(np, "savez", full)
    with pytest.raises(InputError, match="No space left on device .*free some disk space"):
        writer.close()
    writer.close()                                     # done: nothing more to say
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["t.npz"]
    with pytest.raises(ValueError, match="closed"):
        writer.write(make_frames(1)[0])


# --- opening --------------------------------------------------------------------------------

def test_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(InputError) as err:
        open_track_writer(tmp_path / "x.txt", META)
    assert str(err.value) == f"unknown track format '.txt' for '{tmp_path / 'x.txt'}' (use .jsonl, .csv, .npz or .bvh)"
    with pytest.raises(InputError, match="no extension"):
        open_track_writer(tmp_path / "x", META)


@pytest.mark.parametrize("ext", ["jsonl", "csv", "npz"])
def test_missing_folder_fails_at_open(tmp_path: Path, ext: str) -> None:
    path = tmp_path / "missing" / f"x.{ext}"
    with pytest.raises(InputError) as err:
        open_track_writer(path, META)
    message = str(err.value)
    assert message.startswith("cannot write track file") and "missing" in message
    assert "create the folder first" in message and "\n" not in message


@pytest.mark.parametrize("ext", ["jsonl", "bvh", "npz"])
def test_a_link_into_a_missing_folder_fails_at_open(tmp_path: Path, ext: str) -> None:
    """The folder checked is the one the link's file is written in: not found only at the end of
    the run, and then said to be removed during it."""
    link = tmp_path / f"x.{ext}"
    link.symlink_to(tmp_path / "missing" / f"x.{ext}")
    with pytest.raises(InputError) as err:
        open_track_writer(link, META)
    assert not isinstance(err.value, OutputLostError)
    assert str(err.value).startswith(f"cannot write track file '{link}'") and "create the folder first" in str(err.value)


@pytest.mark.parametrize("ext", ["jsonl", "npz"])
def test_a_folder_as_the_path_fails_at_open(tmp_path: Path, ext: str) -> None:
    folder = tmp_path / f"x.{ext}"
    folder.mkdir()
    with pytest.raises(InputError, match="cannot write track file"):
        open_track_writer(folder, META)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permissions")
@pytest.mark.parametrize("ext", ["jsonl", "csv", "npz"])
def test_read_only_folder_fails_at_open(tmp_path: Path, ext: str) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(InputError, match="permission"):
            open_track_writer(folder / f"x.{ext}", META)
    finally:
        folder.chmod(0o755)


def test_an_npz_gets_the_mode_of_any_new_file(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        writer = open_track_writer(tmp_path / "t.npz", META)
        writer.write(make_frames(1)[0])
        writer.close()
        text = open_track_writer(tmp_path / "t.jsonl", META)
        text.write(make_frames(1)[0])
        text.close()
    finally:
        os.umask(old)
    assert (tmp_path / "t.npz").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "t.jsonl").stat().st_mode & 0o777 == 0o640


def test_an_image_folder_frame_carries_its_file_name_in_every_format(tmp_path: Path) -> None:
    frames = make_frames(3, empty_every=2)
    frames[1].image = "f005.png"          # a folder's frame; the others come from a video
    for ext in ("jsonl", "csv", "npz"):
        with open_track_writer(tmp_path / f"t.{ext}", META) as writer:
            for f in frames:
                writer.write(f)
    _, poses = read_track(tmp_path / "t.jsonl")
    assert [p.get("image") for p in poses] == [None, "f005.png", None]
    rows = list(csv.DictReader((tmp_path / "t.csv").open()))
    assert {r["seq"]: r["image"] for r in rows} == {str(frames[0].seq): "", str(frames[1].seq): "f005.png",
                                                    str(frames[2].seq): ""}
    with np.load(tmp_path / "t.npz") as arrays:          # no pickle needed
        assert arrays["image"].tolist() == ["", "f005.png", ""]


def _read_pipe_later(fifo: Path, delay_s: float, lines: int | None) -> tuple[threading.Thread, list[bytes]]:
    """A program that opens `fifo` to read after `delay_s` and reads `lines` lines (all, if None),
    then closes it."""
    got: list[bytes] = []

    def read() -> None:
        time.sleep(delay_s)
        with open(fifo, "rb") as f:
            for n, line in enumerate(f):
                got.append(line)
                if lines is not None and n + 1 >= lines:
                    return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return reader, got


def test_a_named_pipe_track_waits_for_its_reader(tmp_path: Path) -> None:
    """`mkfifo poses.jsonl`, posecast started first, the reader a moment later: every frame flows."""
    fifo = tmp_path / "poses.jsonl"
    os.mkfifo(fifo)
    reader, got = _read_pipe_later(fifo, 0.3, None)
    with open_track_writer(fifo, META) as writer:
        for f in make_frames(3):
            writer.write(f)
    reader.join(10)
    assert [json.loads(line)["type"] for line in got] == ["meta", "pose", "pose", "pose"]


def _idle_reader(fifo: Path) -> tuple[threading.Thread, threading.Event, threading.Event]:
    """A program that opens `fifo` to read and takes nothing until `leave` is set, then closes it:
    (its thread, `opened`, `leave`)."""
    opened, leave = threading.Event(), threading.Event()

    def read_nothing() -> None:
        with open(fifo, "rb"):
            opened.set()
            leave.wait(60)

    reader = threading.Thread(target=read_nothing, daemon=True)
    reader.start()
    return reader, opened, leave


class _WriterClock:
    """A track writer's `time`, for tests of its waits: it moves a millisecond a look, and as far
    as it is asked to sleep (sleeping for real at most 10 ms where `real_sleep`, so that a
    named pipe's reader thread gets its turn)."""

    def __init__(self, real_sleep: bool) -> None:
        self.now = 1000.0
        self.real_sleep = real_sleep

    def monotonic(self) -> float:
        self.now += 0.001
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        if self.real_sleep:
            time.sleep(min(seconds, 0.01))


@pytest.mark.parametrize("name", ["poses.jsonl", "poses.csv"])
def test_a_live_runs_named_pipe_leaves_out_whole_frames_for_a_slow_reader(tmp_path: Path, name: str,
                                                                        caplog: pytest.LogCaptureFixture,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """From a live source, a reader that takes nothing while 600 frames come at 30 a second (20 s
    on the writer's clock, far more than the pipe and the writer's 2 s backlog hold) never holds
    the writer back: the frames that did not fit are left out whole and counted, and what the
    reader gets is whole lines, in order."""
    import streamer.tracks as tracks

    clock = _WriterClock(real_sleep=True)         # 1/30 s a frame, advanced below
    monkeypatch.setattr(tracks, "time", clock)
    fifo = tmp_path / name
    os.mkfifo(fifo)
    opened = threading.Event()
    release = threading.Event()
    got: list[bytes] = []

    def slow_reader() -> None:
        with open(fifo, "rb") as f:
            opened.set()
            release.wait(60)
            got.extend(f)

    reader = threading.Thread(target=slow_reader, daemon=True)
    reader.start()
    frames = make_frames(600, empty_every=1000)
    writer = open_track_writer(fifo, META, live=True)
    done = threading.Event()

    def write_all() -> None:
        for f in frames:
            writer.write(f)
            clock.now += 1 / 30
        done.set()

    writing = threading.Thread(target=write_all, daemon=True)
    with caplog.at_level("WARNING"):
        writing.start()
        assert done.wait(60), "a live pipe's writer waited for its reader"
        assert opened.wait(10) and not release.is_set()
        assert writer.frames_left_out > 400 and writer.frames_written + writer.frames_left_out < 600
        release.set()
        writer.close()
        reader.join(30)
    assert writer.frames_written + writer.frames_left_out == 600
    assert caplog.text.count("is slower than the stream: poses are left out of it") == 1
    assert f"{writer.frames_left_out} pose(s) were left out of the named pipe" in caplog.text
    if name.endswith(".jsonl"):
        seqs = [json.loads(line)["seq"] for line in got[1:]]
        assert json.loads(got[0])["type"] == "meta"
    else:
        seqs = [int(line.split(b",")[0]) for line in got[1:]]     # frame 1 has two people: two rows
    assert len(set(seqs)) == writer.frames_written and seqs == sorted(seqs) and seqs[0] == 0
    assert all(line.endswith(b"\n") for line in got)


def test_a_stopped_live_run_gives_its_pipes_reader_a_second_not_five(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """After Ctrl-C the frames still waiting for a reader that takes nothing are left out after
    STOPPED_WAIT_S on the writer's clock, not CLOSE_WAIT_S, so that the run's stop stays quick."""
    import streamer.tracks as tracks

    clock = _WriterClock(real_sleep=False)
    monkeypatch.setattr(tracks, "time", clock)
    monkeypatch.setattr(tracks.select, "select", lambda r, w, x, t: (clock.sleep(t), [], [])[1:])
    fifo = tmp_path / "poses.jsonl"
    os.mkfifo(fifo)
    _, opened, leave = _idle_reader(fifo)
    stopped = {"now": False}
    writer = open_track_writer(fifo, META, cancelled=lambda: stopped["now"], live=True)
    for f in make_frames(200, empty_every=1000):
        writer.write(f)
    assert opened.wait(10) and writer.frames_left_out == 0 and writer.frames_written < 200
    stopped["now"] = True
    started = clock.now
    writer.close()
    leave.set()
    assert tracks.STOPPED_WAIT_S <= clock.now - started < tracks.CLOSE_WAIT_S
    assert writer.frames_written + writer.frames_left_out == 200 and writer.frames_left_out > 0

    # A stop that comes while the end's wait runs cuts it short too.
    fifo2 = tmp_path / "more.jsonl"
    os.mkfifo(fifo2)
    _, opened, leave = _idle_reader(fifo2)
    stopped["now"] = False
    writer = open_track_writer(fifo2, META, cancelled=lambda: stopped["now"], live=True)
    for f in make_frames(200, empty_every=1000):
        writer.write(f)
    looks = {"n": 0}

    def select_then_stop(r, w, x, t):
        looks["n"] += 1
        stopped["now"] = looks["n"] >= 3
        clock.sleep(t)
        return [], [], []

    monkeypatch.setattr(tracks.select, "select", select_then_stop)
    started = clock.now
    writer.close()
    leave.set()
    assert looks["n"] >= 3 and clock.now - started < tracks.STOPPED_WAIT_S + 0.5


def test_a_live_pipes_reader_that_goes_away_at_the_end_is_said_with_what_it_missed(tmp_path: Path) -> None:
    fifo = tmp_path / "poses.jsonl"
    os.mkfifo(fifo)
    reader, opened, leave = _idle_reader(fifo)
    writer = open_track_writer(fifo, META, live=True)
    for f in make_frames(300, empty_every=1000):
        writer.write(f)
    assert opened.wait(10) and writer.frames_written < 300
    waiting = 300 - writer.frames_written - writer.frames_left_out
    leave.set()
    reader.join(10)
    with pytest.raises(ReaderGoneError, match=rf"went away before taking the last {waiting} pose\(s\)"):
        writer.close()
    assert writer.frames_written + writer.frames_left_out == 300


def test_a_named_pipe_without_a_reader_gives_up_when_the_run_stops(tmp_path: Path) -> None:
    fifo = tmp_path / "poses.csv"
    os.mkfifo(fifo)
    stop_at = time.monotonic() + 0.3
    writer = open_track_writer(fifo, META, cancelled=lambda: time.monotonic() > stop_at)
    with pytest.raises(ReaderWaitStopped):          # a stop, not an error of its own
        writer.write(make_frames(1)[0])
    writer.close()
    assert fifo.is_fifo() and sorted(p.name for p in tmp_path.iterdir()) == ["poses.csv"]   # no sidecar


@pytest.mark.parametrize("live", [False, True])
def test_a_named_pipe_whose_reader_goes_away_ends_with_141(tmp_path: Path, live: bool,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """The write's error (exit 141) is the one line: the close (`run`'s live writer included)
    neither counts the poses left out nor raises again about the same pipe."""
    fifo = tmp_path / "poses.jsonl"
    os.mkfifo(fifo)
    reader, got = _read_pipe_later(fifo, 0.0, 2)          # the meta and the first pose, then gone
    writer = open_track_writer(fifo, META, live=live)
    frames = make_frames(200)
    with caplog.at_level("WARNING"):
        with pytest.raises(ReaderGoneError) as err:
            writer.write(frames[0])
            reader.join(10)
            for f in frames[1:]:
                writer.write(f)
        writer.close()
    assert err.value.exit_code == 141 and len(got) == 2 and "left out" not in caplog.text
    assert str(err.value) == (f"cannot write track file '{fifo}': the program reading the pipe went away, so the run "
                              f"was stopped")


def _frame_with_everything(image: str | None = None) -> PoseFrame:
    """A frame whose person has every field, root_3d included, and a media time."""
    person = dataclasses.replace(make_person(np.random.default_rng(3)), root_3d=np.array([0.1, -0.2, 3.0], np.float32))
    return PoseFrame(7, 1.7e9, 0.5, (640, 480), [person], image)


@pytest.mark.parametrize("image", [None, "f005.png"])
def test_frame_from_message_inverts_pose_message(image: str | None) -> None:
    """What convert and the CSV/NPZ/BVH writers read a message back with; a video frame's
    message has no "image" key (docs/protocol.md)."""
    msg = pose_message(_frame_with_everything(image))
    assert pose_message(frame_from_message(msg)) == msg
    assert ("image" in msg) == (image is not None)
    assert msg["t_media"] == 0.5 and msg["people"][0]["root_3d"] == pytest.approx([0.1, -0.2, 3.0])


def test_pose_message_rounds_as_the_protocol_documents() -> None:
    frame = _frame_with_everything()
    person, msg = frame.people[0], pose_message(frame)["people"][0]
    assert msg["joints_3d"][3] == [round(float(v), 4) for v in person.joints_3d[3]]      # 0.1 mm
    assert msg["joints_2d"][3] == [round(float(v), 2) for v in person.joints_2d[3]]
    assert msg["conf"][3] == round(float(person.conf[3]), 4)


def test_root_3d_and_t_media_reach_csv_and_npz(tmp_path: Path) -> None:
    for ext in ("csv", "npz"):
        with open_track_writer(tmp_path / f"t.{ext}", META) as w:
            w.write(_frame_with_everything())
    with open(tmp_path / "t.csv", newline="") as f:
        row = next(csv.DictReader(f))
    assert float(row["t_media"]) == 0.5
    assert [float(row[f"root3d_{c}"]) for c in "xyz"] == pytest.approx([0.1, -0.2, 3.0], abs=1e-6)
    with np.load(tmp_path / "t.npz") as z:
        np.testing.assert_allclose(z["root_3d"][0], [0.1, -0.2, 3.0], rtol=1e-6)
        assert z["t_media"].tolist() == [0.5]


@pytest.mark.parametrize("ext", ["csv", "npz"])
def test_a_person_with_the_wrong_joint_count_is_refused(tmp_path: Path, ext: str) -> None:
    frame = _frame_with_everything()
    frame.people[0] = make_person(np.random.default_rng(3), num_joints=5)
    with open_track_writer(tmp_path / f"t.{ext}", META) as w:
        with pytest.raises(ValueError, match="joints"):
            w.write(frame)


@pytest.mark.parametrize("schema", [0, -1, True])
def test_read_track_refuses_a_schema_that_is_no_version_number(tmp_path: Path, schema: object) -> None:
    path = write_lines(tmp_path / "t.jsonl", [json.dumps(dict(META, schema=schema))])
    with pytest.raises(InputError, match=rf"no valid schema number \(got {schema!r}"):
        read_track(path)


def test_read_track_of_a_binary_file_is_one_input_error(tmp_path: Path) -> None:
    (tmp_path / "t.jsonl").write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(InputError, match="is not UTF-8 text"):
        read_track(tmp_path / "t.jsonl")
