"""engines/files.py: the check every output gets before a run writes it, and the hint a failed
write carries. Each reason must fit after "cannot write 'PATH': " as one line."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

import engines.files as files
from engines.files import unwritable_reason, write_hint


def test_a_file_in_a_folder_that_takes_it_has_no_reason(tmp_path: Path) -> None:
    assert unwritable_reason(tmp_path / "out.npz") is None
    (tmp_path / "old.npz").write_bytes(b"x")
    assert unwritable_reason(tmp_path / "old.npz") is None
    assert [p.name for p in tmp_path.iterdir()] == ["old.npz"]        # the trial file is gone


def test_what_cannot_be_written_says_why(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file.txt"
    blocker.write_text("")
    assert unwritable_reason(tmp_path) == "it is a folder; give a file name"
    assert unwritable_reason(tmp_path / "missing" / "out.npz") == \
        f"folder '{tmp_path / 'missing'}' does not exist (create it first)"
    # Folders that would be made first: the nearest one that exists must take the file.
    assert unwritable_reason(tmp_path / "missing" / "deeper" / "out.json", make_folders=True) is None
    assert unwritable_reason(blocker / "sub" / "out.json", make_folders=True) == f"'{blocker}' is a file, not a folder"
    assert unwritable_reason(blocker / "out.json") == f"'{blocker}' is a file, not a folder"


def test_a_folder_that_refuses_a_new_file_gives_the_systems_words_and_a_hint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(folder: Path) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files, "check_writable_folder", full)
    reason = unwritable_reason(tmp_path / "out.npz")
    assert reason == f"{os.strerror(errno.ENOSPC)} in '{tmp_path}' (free some disk space)"


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_a_folder_that_exists_but_takes_no_file_is_not_called_missing() -> None:
    reason = unwritable_reason(Path("/proc/posecast-out.mp4")) or ""
    assert "/proc" in reason and "takes no new files" in reason and "create" not in reason, reason


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write a read-only file")
def test_a_read_only_file_is_named(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    out.write_text("")
    out.chmod(0o444)
    assert "read-only" in (unwritable_reason(out) or "")


@pytest.mark.parametrize("code,hint", [(errno.ENOENT, "create the folder first"), (errno.ENOSPC, "free some disk space"),
                                       (errno.EROFS, "read-only"), (errno.EIO, "check the path"), (None, "check the path")])
def test_write_hints_by_errno(code: int | None, hint: str) -> None:
    assert hint in write_hint(OSError(code, "x") if code is not None else OSError("x"))


def test_a_named_pipe_takes_only_a_streamed_output(tmp_path: Path) -> None:
    """`mkfifo poses.jsonl` and a reader: a track written as it goes flows through. An output
    written whole and renamed into place would silently swap the pipe for a file instead."""
    fifo = tmp_path / "poses.jsonl"
    os.mkfifo(fifo)
    assert unwritable_reason(fifo, streamed=True) is None
    assert "named pipe" in (unwritable_reason(fifo) or "")
    with pytest.raises(OSError) as err:
        with files.replaced_when_done(fifo):
            pass
    assert err.value.errno == errno.EINVAL and "give the name of a regular file" in write_hint(err.value)
    assert fifo.is_fifo() and sorted(p.name for p in tmp_path.iterdir()) == ["poses.jsonl"]


def test_a_device_is_refused_for_every_output_but_a_streamed_one() -> None:
    assert "device" in (unwritable_reason(Path("/dev/null")) or "")
    assert unwritable_reason(Path("/dev/null"), streamed=True) is None


def test_a_symbolic_link_is_written_through(tmp_path: Path) -> None:
    """`latest.npz -> runs/7.npz`: the file it names is replaced, the link stays a link."""
    (tmp_path / "runs").mkdir()
    target = tmp_path / "runs" / "7.npz"
    target.write_bytes(b"old")
    link = tmp_path / "latest.npz"
    link.symlink_to(target)
    with files.replaced_when_done(link) as tmp:
        tmp.write_bytes(b"new")
    assert link.is_symlink() and target.read_bytes() == b"new"
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["7.npz"]
