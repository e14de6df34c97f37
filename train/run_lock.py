"""One training run at a time in a run folder.

Two runs given the same --out (a script started twice, a repeated folder) both resumed from the
same last.pt and wrote it in turn, and the log held one run's lines: both ended "successfully"
with a run that was neither. The run holds a POSIX record lock on `OUT/.lock` while it trains:
the kernel lets go of it when the process ends however it ends (SIGKILL included), and unlike an
flock it is not held on by the data loader's worker processes, which a fork would give a copy of
it (a worker left over for a moment after a SIGKILL refused the resume that followed).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from engines.errors import InputError

LOCK_NAME = ".lock"


@contextlib.contextmanager
def run_folder_lock(out: Path) -> Iterator[None]:
    """Holds `out`'s lock while inside; another run of the same folder is one line (exit 2)."""
    path = out / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            by = f" (process {holder})" if holder.isdigit() else ""
            raise InputError(f"another training run is using '{out}'{by}; wait for it to end, or give another "
                             f"--out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)          # and with it the lock


def remove_lock(out: Path) -> None:
    """Takes the lock file away from a folder a run is leaving empty (it failed before writing)."""
    with contextlib.suppress(OSError):
        (out / LOCK_NAME).unlink()
