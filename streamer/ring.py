"""The frame ring: fixed slots of shared memory that frames are copied into once.

The parent names the ring; the capture stage creates it once it knows the frame size; the other
stages attach. Slots are handed out in order (slot = seq mod slots) and given back in order by the
last stage to read them, through a counting semaphore of free slots: a frame's pixels never travel
through a socket, only its slot number does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from multiprocessing import shared_memory

import numpy as np

from engines.errors import PosecastError


class RingTooLargeError(PosecastError):
    exit_code = 2


@dataclass(frozen=True)
class RingSpec:
    name: str
    slots: int
    height: int
    width: int

    @property
    def slot_bytes(self) -> int:
        return self.height * self.width * 3


class FrameRing:
    """A view of the shared ring. `create` owns nothing more than the first mapping: the parent
    process unlinks the segment by name at the end, whoever created it, so a crashed stage cannot
    leak it."""

    def __init__(self, spec: RingSpec, create: bool) -> None:
        self.spec = spec
        size = max(spec.slot_bytes * spec.slots, 1)
        self._shm = shared_memory.SharedMemory(name=spec.name, create=create, size=size)
        self._array = np.ndarray((spec.slots, spec.slot_bytes), dtype=np.uint8, buffer=self._shm.buf)

    def view(self, slot: int, height: int | None = None, width: int | None = None) -> np.ndarray:
        """The (height, width, 3) image in `slot` (the full slot size by default)."""
        h = self.spec.height if height is None else height
        w = self.spec.width if width is None else width
        return self._array[slot, : h * w * 3].reshape(h, w, 3)

    def close(self) -> None:
        if self._shm is not None:
            self._array = None  # drop the numpy view first, or close() fails with exported buffers
            self._shm.close()
            self._shm = None


SHM_DIR = "/dev/shm"


def shm_free_bytes() -> int | None:
    """Free space where POSIX shared memory lives, or None where that cannot be known."""
    try:
        st = os.statvfs(SHM_DIR)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def fit_slots(wanted: int, minimum: int, slot_bytes: int, free_bytes: int | None) -> int:
    """How many slots to create: `wanted`, fewer when shared memory is short (never below
    `minimum`). A ring larger than /dev/shm would not fail at creation but with SIGBUS on the first
    write to a page that does not fit: decide here, where the error can still be explained."""
    if free_bytes is None:
        return wanted
    usable = int(free_bytes * 0.9) // max(slot_bytes, 1)
    if usable >= wanted:
        return wanted
    if usable >= minimum:
        return usable
    raise RingTooLargeError(
        f"not enough shared memory for the frame ring: {minimum} frames of {slot_bytes / 1e6:.1f} MB need "
        f"{minimum * slot_bytes / 1e6:.0f} MB, {SHM_DIR} has {free_bytes / 1e6:.0f} MB free "
        f"(give it more, e.g. docker run --shm-size=1g, or use a smaller input)")


def unlink_ring(name: str) -> bool:
    """Remove the named segment if it exists. True when something was removed."""
    try:
        shm = shared_memory.SharedMemory(name=name, create=False)
    except FileNotFoundError:
        return False
    shm.close()
    shm.unlink()
    return True
