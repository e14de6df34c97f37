"""Writing outputs so that a failure leaves nothing half-done.

A file is written under a new name beside its target and renamed over it only when whole, so a
full disk or a Ctrl-C leaves neither a partial file nor a damaged older one. Folders made for a
run are listed, so that a run that fails before writing anything can take them away again.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def check_writable_folder(folder: Path) -> None:
    """Raises the OSError that making a new file in `folder` would (a read-only or full disk, a
    path through a file); leaves nothing behind. For outputs that are only written at the end
    of a long run, and for outputs opened one after another."""
    with tempfile.TemporaryFile(dir=folder):
        pass


_HINTS = {
    errno.ENOENT: "create the folder first",
    errno.EACCES: "check the folder's permissions or choose another folder",
    errno.EPERM: "check the folder's permissions or choose another folder",
    errno.EISDIR: "that is a folder: give a file name",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.ENOSPC: "free some disk space",
    errno.EROFS: "the file system is read-only: choose another folder",
    errno.EINVAL: "give the name of a regular file",
    errno.EPIPE: "the program reading it went away",
}


def name_removed(fd: int) -> bool:
    """Whether the regular file open as `fd` has no name left: deleted, or its folder removed,
    while a run wrote it, so that what went into it is lost. (A named pipe's reader gets what was
    written without one.)"""
    st = os.fstat(fd)
    return stat.S_ISREG(st.st_mode) and st.st_nlink == 0


def write_hint(err: OSError) -> str:
    """What to do about a failed write, by its errno."""
    return _HINTS.get(err.errno or 0, "check the path")


def unwritable_reason(path: Path, make_folders: bool = False, streamed: bool = False) -> str | None:
    """Why a file could not be written at `path` now, in words to follow "cannot write 'PATH': ";
    None where it could. With `make_folders` the missing folders would be made first, so the
    nearest folder that exists must take a new file. For outputs checked before a long run, or
    before the writers open (and so empty) their files one by one. Leaves nothing behind.

    An output written whole at the end replaces its file (`replaced_when_done`), so it must be a
    regular file; a `streamed` one (written as it goes) may also be a named pipe or a character
    device, as `-o poses.jsonl` made with mkfifo, read by another program."""
    path = Path(path)
    if path.is_dir():
        return "it is a folder; give a file name"
    folder = next((p for p in path.parents if p.exists()), Path(".")) if make_folders else path.parent
    if not folder.exists():
        return f"folder '{folder}' does not exist (create it first)"
    if not folder.is_dir():
        return f"'{folder}' is a file, not a folder"
    try:
        check_writable_folder(folder)
    except OSError as err:
        # The folder is there, so "no such file" means it takes no new files (/proc, /sys).
        hint = "it takes no new files: choose another folder" if err.errno == errno.ENOENT else write_hint(err)
        return f"{err.strerror or err} in '{folder}' ({hint})"
    if path.exists() and not os.access(path, os.W_OK):
        return "the file is read-only (choose another name, or make it writable)"
    if _special(path):
        mode = path.stat().st_mode
        if not (streamed and (stat.S_ISFIFO(mode) or stat.S_ISCHR(mode))):
            return "it is a device or a named pipe, not a file; give a file name" + (
                " (only .jsonl and .csv tracks are written as they go, into a pipe)" if stat.S_ISFIFO(mode) else "")
    return None


def _special(path: Path) -> bool:
    """A device, named pipe or socket: something there that is neither a file nor a folder."""
    return path.exists() and not path.is_file() and not path.is_dir()


def new_file_beside(path: Path) -> Path:
    """A new, empty, hidden file in `path`'s folder. Made with the mode any new file gets here
    (mkstemp's would be owner-only, and the renamed file would keep it)."""
    path = Path(path)
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{os.urandom(4).hex()}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"no free temporary name beside {path}")


@contextmanager
def replaced_when_done(path: Path) -> Iterator[Path]:
    """Yields a new file beside `path` to write; renames it over `path` when the block ends
    without an error, and removes it otherwise. OSErrors reach the caller, who words them.

    A symbolic link is followed: the file it names is replaced and the link kept. Only a regular
    file can be replaced: renaming over a device or a named pipe would silently swap it for a
    file (as root, even /dev/null), so those are refused with EINVAL before anything is written."""
    path = Path(os.path.realpath(path))
    if _special(path):
        raise OSError(errno.EINVAL, "it is a device or a named pipe, not a file", str(path))
    tmp = new_file_beside(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def file_identity(path: Path) -> tuple[int, int] | Path:
    """What names one file: its device and inode where it exists (a hard link is another name
    for the same file, which resolving the path does not show), else its resolved path."""
    try:
        st = path.stat()
    except OSError:
        return path.resolve()
    return (st.st_dev, st.st_ino)


def case_blind(folder: Path) -> bool:
    """Whether `folder` takes two names that differ only in case for one file (macOS and Windows
    by default): outputs named 'A.jsonl' and 'a.jsonl' would then overwrite each other. Tried
    with a file of its own, taken away again; False where none can be made."""
    try:
        probe = new_file_beside(Path(folder) / "case")
    except OSError:
        return False
    try:
        return probe.with_name(probe.name.upper()).exists()
    finally:
        probe.unlink(missing_ok=True)


def make_folders(folder: Path) -> list[Path]:
    """Creates `folder` and its missing parents; returns the ones it created, deepest first.
    OSErrors reach the caller."""
    folder = Path(folder)
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    return created


def remove_if_empty(folders: list[Path]) -> None:
    """Takes away `folders` (deepest first, as `make_folders` lists them) while they are empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def input_overwritten(out: Path, inputs: dict[str, Path | str | None]) -> str | None:
    """Which of `inputs` (named as messages name them, e.g. "the --model file") writing `out`
    would replace: the same file, also through a link or another path to it; None where none."""
    out = Path(out)
    if not out.exists():
        return None
    for name, source in inputs.items():
        if source is not None and Path(source).exists() and os.path.samefile(out, source):
            return name
    return None


def check_report_output(out: Path, flag: str, suffix: str, inputs: dict[str, Path | str | None],
                        make_folders: bool = False) -> str | None:
    """Why a report named `out` (given as `flag`) cannot be written at the end of a run, checked
    before it: its name must end in `suffix` (`--json model.pt` is a typo), its folder must take
    it (or, with `make_folders`, the nearest folder that exists), and it must not be one of the
    run's `inputs` (a list it reads, say); None where it can be written."""
    out = Path(out)
    reason = unwritable_reason(out, make_folders=make_folders)
    if reason is not None:
        return f"cannot write {flag} '{out}': {reason}"
    if out.suffix.lower() != suffix:
        return f"{flag} must name a {suffix} file (got '{out}')"
    same = input_overwritten(out, inputs)
    if same is not None:
        return f"{flag} '{out}' is also {same}; give another name"
    return None
