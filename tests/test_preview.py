"""The preview window, on SDL's dummy video driver (no display needed)."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
pygame = pytest.importorskip("pygame")

from streamer.preview import PreviewWindow  # noqa: E402
from streamer.protocol import PersonPose, PoseFrame  # noqa: E402


def _frame() -> PoseFrame:
    pts = np.stack([np.linspace(20, 140, 17), np.linspace(20, 100, 17)], axis=1).astype(np.float32)
    person = PersonPose(0, 0.9, (20, 20, 140, 100), np.zeros((17, 3), np.float32), pts, np.ones(17, np.float32))
    return PoseFrame(0, 0.0, None, (160, 120), [person])


def test_shows_frames_until_the_window_is_closed() -> None:
    win = PreviewWindow("test", 160, 120)
    try:
        image = np.full((120, 160, 3), 40, np.uint8)
        assert win.show(image, _frame(), "note")
        assert (image == 40).all()                                  # the ring's frame is not drawn on
        shown = pygame.surfarray.array3d(win.screen)
        assert shown.max() > 40                                     # the skeleton and text were drawn
        pygame.event.post(pygame.event.Event(pygame.QUIT))
        assert not win.show(image, _frame())                        # closed: the run should end
    finally:
        win.close()


def test_no_display_is_one_error_not_an_invisible_window(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SDL_VIDEODRIVER", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    from engines.errors import InputError

    try:
        win = PreviewWindow("headless", 160, 120)
    except InputError as exc:
        assert "there is no display" in str(exc) and "run without --preview" in str(exc)
        return
    driver = pygame.display.get_driver()
    win.close()
    pytest.skip(f"this machine has a screen after all (SDL's '{driver}' driver)")


def test_large_frames_are_scaled_to_fit() -> None:
    win = PreviewWindow("big", 1920, 1080, max_side=960)
    try:
        assert win.size == (960, 540)
        assert win.show(np.zeros((1080, 1920, 3), np.uint8), _frame())
    finally:
        win.close()


def test_run_with_preview_end_to_end(posecast, clip40) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = posecast.run(["run", clip40, "--preview", "--port", port, "--min-score", "0", "--no-progress", "--stats"])
    assert r.returncode == 0, r.stderr
    # Every frame the run processed (a file given to `run` is live: a loaded machine drops some)
    # was shown in the window.
    frames = int(re.search(r"^posecast: (\d+) frames in ", r.stderr, re.M).group(1))
    shown = re.search(r"^output\.preview\s+(\d+)\s", r.stderr, re.M)
    assert shown and int(shown.group(1)) == frames > 0, r.stderr


def test_run_with_preview_and_no_display_is_one_line(posecast, clip40, monkeypatch: pytest.MonkeyPatch) -> None:
    """Said before the publisher announces itself, and before SDL prints its own complaints about a
    missing desktop session."""
    for name in ("SDL_VIDEODRIVER", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    r = posecast.run(["run", clip40, "--preview", "--port", "0", "--no-progress"])
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("posecast: error: cannot open the preview window"), r.stderr


def test_the_window_shows_its_rate_and_the_frame_s_latency() -> None:
    win = PreviewWindow("test", 160, 120)
    try:
        # (capture time, wall clock, monotonic clock) of three frames shown 0.1 s apart
        shown = [(99.98, 100.0, 5.0), (100.05, 100.1, 5.1), (100.15, 100.2, 5.2)]
        lines = [win._rate_line(*times) for times in shown]
        assert lines == ["- fps  latency 20 ms", "10.0 fps  latency 50 ms", "10.0 fps  latency 50 ms"]
    finally:
        win.close()


def test_the_rate_line_is_drawn_in_the_bottom_left_corner() -> None:
    win = PreviewWindow("test", 320, 240)
    try:
        image = np.full((240, 320, 3), 40, np.uint8)
        win.show(image, PoseFrame(0, 0.0, None, (320, 240), []))
        bottom, top_right = win.canvas[200:, :160], win.canvas[60:180, 160:]
        assert (bottom != 40).any() and (top_right == 40).all()
    finally:
        win.close()
