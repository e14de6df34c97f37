"""Local cameras, through OpenCV."""

from __future__ import annotations

import glob
import os
import re
import sys
import threading
import time
from collections.abc import Iterator

import cv2
import numpy as np

from engines.errors import InputError
from streamer.config import SourceConfig
from streamer.sources.base import Frame, Source, SourceInfo, three_channels
from streamer.sources.images import natural_key

CAMERA_SPEC = re.compile(r"^(?:/dev/video)?(\d+)$")   # '0' or '/dev/video0'


def _present_cameras() -> list[str]:
    return sorted(glob.glob("/dev/video*"), key=natural_key)


class CameraSource(Source):
    """A local camera by index ('0') or device path ('/dev/video0'), through OpenCV."""

    def __init__(self, spec: str, config: SourceConfig) -> None:
        m = CAMERA_SPEC.match(str(spec))
        if not m:
            raise InputError(f"'{spec}' is not a camera (give a number such as 0, or /dev/videoN)")
        n = int(m.group(1))
        self.corrupt = 0
        self._n = n
        self._timeout = config.read_timeout_s
        self._closed = False
        device = f"/dev/video{n}"
        if sys.platform.startswith("linux") and not os.path.exists(device):
            present = _present_cameras()
            found = (f"cameras present: {', '.join(present)}; give one of those" if present else
                     "no cameras found; plug one in, or give a video file or a stream's URL")
            raise InputError(f"camera {n} could not be opened (no {device}; {found})")
        backend = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
        cap = cv2.VideoCapture(n, backend)
        if not cap.isOpened():
            cap.release()
            raise InputError(f"camera {n} could not be opened ({device} is busy, not a capture "
                             f"device, or not accessible to this user)")
        # One buffered frame: a reader that falls behind gets a fresh frame, not a queue of old.
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        first = self._first_frame(cap)
        self._cap = cap
        self._first: tuple[np.ndarray, float] | None = first
        fps = cap.get(cv2.CAP_PROP_FPS)
        h, w = first[0].shape[:2]
        self.info = SourceInfo(name=f"cam{n}", uri=str(spec), live=True, width=w, height=h,
                               fps=float(fps) if fps and fps > 0 else None, frame_count=None)

    def _first_frame(self, cap: cv2.VideoCapture) -> tuple[np.ndarray, float]:
        # Some drivers block forever on a camera that opened but streams nothing: read in a
        # helper thread so opening can give up after the timeout.
        result: list[tuple[bool, np.ndarray | None]] = []
        abandoned = threading.Event()

        def read() -> None:
            try:
                result.append(cap.read())
            except cv2.error:
                result.append((False, None))
            if abandoned.is_set():
                cap.release()                  # the owner gave up; release once read returns

        worker = threading.Thread(target=read, name=f"cam{self._n}-open", daemon=True)
        worker.start()
        worker.join(self._timeout)
        if worker.is_alive():
            abandoned.set()
            raise InputError(f"camera {self._n} opened but sent no frame within "
                             f"{self._timeout:g} s (is another program using it?)")
        ok, image = result[0]
        if not ok or image is None:
            cap.release()
            raise InputError(f"camera {self._n} opened but delivered no frames (is another "
                             f"program using it?)")
        return self._bgr(image), time.time()

    @staticmethod
    def _bgr(image: np.ndarray) -> np.ndarray:
        bgr = three_channels(image)
        return np.ascontiguousarray(image if bgr is None else bgr)

    def frames(self) -> Iterator[Frame]:
        index = 0
        if self._first is not None:
            image, t = self._first
            self._first = None
            yield Frame(image=image, index=index, t_capture=t, t_media=None)
            index += 1
        while True:
            ok, image = self._cap.read()
            if not ok or image is None:
                raise InputError(f"camera {self._n} stopped delivering frames after {index} "
                                 f"(unplugged?); reconnect it and start again")
            yield Frame(image=self._bgr(image), index=index, t_capture=time.time(), t_media=None)
            index += 1

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._cap.release()
