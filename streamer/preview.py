"""The live preview window: each frame with its 2D skeleton, the rate and the latency.

The OpenCV wheel Posecast depends on is the headless one (no GUI, so it installs on servers), so
the window is drawn with pygame (SDL2), an optional extra: `pip install -e '.[preview]'`. Closing
the window, or pressing q or Esc, ends the run as Ctrl-C does.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque

import cv2
import numpy as np

from engines.errors import InputError
from streamer.overlay import draw_corner_line, draw_pose, draw_status
from streamer.protocol import PoseFrame


RATE_WINDOW = 30          # frames the shown rate is the mean over

# SDL's video drivers that draw into memory. Chosen on purpose (SDL_VIDEODRIVER=dummy, as the
# tests do) they are fine; fallen back to, they mean there is no screen.
OFFSCREEN_DRIVERS = ("offscreen", "dummy")


class PreviewWindow:
    def __init__(self, title: str, width: int, height: int, max_side: int = 960) -> None:
        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
        try:
            import pygame
        except ImportError:
            raise InputError("the preview window needs pygame: pip install -e '.[preview]' "
                             "(or run without --preview)") from None
        self.pygame = pygame
        if (sys.platform.startswith("linux") and not os.environ.get("SDL_VIDEODRIVER")
                and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY")):
            # Said before SDL tries, which prints its own lines about a missing session first.
            raise InputError("cannot open the preview window: there is no display (neither DISPLAY nor "
                             "WAYLAND_DISPLAY is set); run without --preview, from a desktop session, or with "
                             "SDL_VIDEODRIVER naming a console driver such as kmsdrm")
        try:
            pygame.display.init()
            scale = min(1.0, max_side / max(width, height))
            self.size = (max(1, round(width * scale)), max(1, round(height * scale)))
            self.screen = pygame.display.set_mode(self.size)
        except pygame.error as exc:
            raise InputError(f"cannot open the preview window ({exc}); is there a display? "
                             f"(run without --preview on a headless machine)") from None
        driver = pygame.display.get_driver()
        if driver in OFFSCREEN_DRIVERS and not os.environ.get("SDL_VIDEODRIVER"):
            # With no display SDL falls back to drawing into memory: a window nobody sees.
            pygame.display.quit()
            raise InputError(f"cannot open the preview window: there is no display (SDL fell back to its "
                             f"'{driver}' driver); run without --preview, or from a desktop session")
        pygame.display.set_caption(f"posecast: {title}")
        self.width, self.height = width, height
        self.canvas = np.zeros((height, width, 3), np.uint8)
        self.rgb = np.zeros((self.size[1], self.size[0], 3), np.uint8)
        self._shown_at: deque[float] = deque(maxlen=RATE_WINDOW)

    def show(self, image: np.ndarray, frame: PoseFrame, note: str | None = None) -> bool:
        """Draw one frame; False once the user has closed the window (or pressed q / Esc)."""
        ih, iw = image.shape[:2]
        if (ih, iw) != (self.height, self.width):
            self.canvas[:] = 0
        np.copyto(self.canvas[:ih, :iw], image)
        for person in frame.people:
            draw_pose(self.canvas, person)
        draw_status(self.canvas, frame, note)
        draw_corner_line(self.canvas, self._rate_line(frame.t_capture, time.time(), time.monotonic()))
        if self.size != (self.width, self.height):
            cv2.resize(self.canvas, self.size, dst=self.rgb, interpolation=cv2.INTER_AREA)
            cv2.cvtColor(self.rgb, cv2.COLOR_BGR2RGB, dst=self.rgb)
        else:
            cv2.cvtColor(self.canvas, cv2.COLOR_BGR2RGB, dst=self.rgb)
        pg = self.pygame
        surface = pg.image.frombuffer(self.rgb.data, self.size, "RGB")
        self.screen.blit(surface, (0, 0))
        pg.display.flip()
        for event in pg.event.get():
            if event.type == pg.QUIT or (event.type == pg.KEYDOWN and event.key in (pg.K_q, pg.K_ESCAPE)):
                return False
        return True

    def _rate_line(self, t_capture: float, wall: float, mono: float) -> str:
        """The rate frames are shown at (from `mono`, a clock that never steps back) and how old
        this one is as it is drawn (`wall` against its capture time, both time.time())."""
        times = self._shown_at
        times.append(mono)
        span = times[-1] - times[0]
        rate = f"{(len(times) - 1) / span:.1f} fps" if span > 0 else "- fps"
        return f"{rate}  latency {1000.0 * (wall - t_capture):.0f} ms"

    def close(self) -> None:
        self.pygame.display.quit()
