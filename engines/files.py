"""Writing outputs so that a failure leaves nothing half-done.

A file is written under a new name beside its target and renamed over it only when whole, so a
full disk or a Ctrl-C leaves neither a partial file nor a damaged older one. Folders made for a
run are listed, so that a run that fails before writing anything can take them away again.
"""

from __future__ import annotations

import os
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
    without an error, and removes it otherwise. OSErrors reach the caller, who words them."""
    tmp = new_file_beside(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
