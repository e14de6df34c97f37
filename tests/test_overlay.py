"""Pose drawing and the overlay video."""

from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from engines.errors import InputError, OutputLostError
from engines.skeleton import H36M17
from streamer.overlay import (CENTRE_COLOR, LEFT_COLOR, RIGHT_COLOR, OverlayWriter, draw_pose,
                              draw_status)
from streamer.protocol import PersonPose, PoseFrame

# A front-facing stick figure in a 200x200 image, limbs well apart so bones do not overlap.
FIGURE = {
    "pelvis": (100, 100), "r_hip": (80, 100), "r_knee": (80, 140), "r_ankle": (80, 180),
    "l_hip": (120, 100), "l_knee": (120, 140), "l_ankle": (120, 180), "spine": (100, 80),
    "thorax": (100, 60), "neck_nose": (100, 45), "head_top": (100, 30),
    "l_shoulder": (130, 60), "l_elbow": (150, 60), "l_wrist": (170, 60),
    "r_shoulder": (70, 60), "r_elbow": (50, 60), "r_wrist": (30, 60),
}


def figure(scale: float = 1.0, conf: np.ndarray | None = None) -> PersonPose:
    # FIGURE is in OpenCV's pixel indices; the protocol's coordinates are +0.5 (pixel centres).
    xy = np.array([FIGURE[n] for n in H36M17.joint_names], np.float32) * scale + 0.5
    return PersonPose(id=7, score=0.93, bbox=(20 * scale + 0.5, 20 * scale + 0.5, 180 * scale + 0.5, 190 * scale + 0.5),
                      joints_3d=np.zeros((17, 3), np.float32), joints_2d=xy,
                      conf=np.ones(17, np.float32) if conf is None else conf)


def frame_with(people: list[PersonPose], seq: int = 0, size: tuple[int, int] = (200, 200),
               t_media: float | None = None) -> PoseFrame:
    return PoseFrame(seq=seq, t_capture=0.0, t_media=t_media, image_size=size, people=people)


def decode(path: Path) -> tuple[list[np.ndarray], list[int], Fraction]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        return [f.to_ndarray(format="bgr24") for f in frames], [f.pts for f in frames], stream.average_rate


# --- drawing --------------------------------------------------------------------------------

def test_bones_are_coloured_by_side() -> None:
    image = np.zeros((200, 200, 3), np.uint8)
    draw_pose(image, figure())
    # Bone midpoints: (x, y) -> the expected colour at the centre of an anti-aliased line.
    assert tuple(image[120, 120]) == LEFT_COLOR            # l_hip -> l_knee
    assert tuple(image[160, 120]) == LEFT_COLOR            # l_knee -> l_ankle
    assert tuple(image[60, 160]) == LEFT_COLOR             # l_elbow -> l_wrist
    assert tuple(image[120, 80]) == RIGHT_COLOR            # r_hip -> r_knee
    assert tuple(image[60, 40]) == RIGHT_COLOR             # r_elbow -> r_wrist
    assert tuple(image[70, 100]) == CENTRE_COLOR           # spine -> thorax
    assert tuple(image[38, 100]) == CENTRE_COLOR           # neck_nose -> head_top
    # Joints are drawn as dots a little wider than the bones.
    assert tuple(image[140, 123]) == LEFT_COLOR
    # Away from the figure and its box nothing changes.
    assert not image[150:175, 25:70].any()
    assert not image[195:, :].any()


def test_bbox_and_score_label_are_drawn() -> None:
    image = np.zeros((200, 200, 3), np.uint8)
    draw_pose(image, figure())
    assert image[150, 20].any() and image[190, 100].any()  # left and bottom edges of the box
    assert image[20:35, 20:70].any()                       # the label (inside: the box is near the top)


def test_low_confidence_joints_are_faded() -> None:
    conf = np.ones(17, np.float32)
    conf[H36M17.index("l_ankle")] = 0.1
    image = np.zeros((200, 200, 3), np.uint8)
    draw_pose(image, figure(conf=conf), min_conf=0.5)
    faded = image[160, 120].astype(int)
    assert faded.any() and tuple(faded) != LEFT_COLOR      # still visible, not full colour
    assert faded[0] > faded[2]                             # still reads as the left (blue) side
    assert tuple(image[120, 120]) == LEFT_COLOR            # the confident bone above is unchanged
    # Thin: the faded bone is narrower than the confident one.
    assert np.count_nonzero(image[160, 110:131].any(axis=1)) < np.count_nonzero(image[120, 110:131].any(axis=1))


def test_non_finite_joints_are_skipped() -> None:
    person = figure()
    person.joints_2d[H36M17.index("l_wrist")] = np.nan
    person.joints_2d[H36M17.index("r_wrist")] = (1e12, -1e12)
    image = np.zeros((200, 200, 3), np.uint8)
    draw_pose(image, person)
    assert not image[55:66, 165:176].any()                 # no l_wrist, no l_elbow -> l_wrist bone
    assert tuple(image[120, 120]) == LEFT_COLOR


def test_draw_pose_rejects_non_images() -> None:
    with pytest.raises(ValueError, match="BGR uint8"):
        draw_pose(np.zeros((10, 10), np.uint8), figure())
    with pytest.raises(ValueError, match="BGR uint8"):
        draw_pose(np.zeros((10, 10, 3), np.float32), figure())


def test_status_line_is_top_left_and_small() -> None:
    image = np.zeros((400, 600, 3), np.uint8)
    draw_status(image, frame_with([figure()], seq=123))
    rows, cols = np.nonzero(image.any(axis=2))
    assert rows.max() < 40 and cols.max() < 300 and cols.min() < 20


# --- the overlay video ----------------------------------------------------------------------

@pytest.mark.parametrize("size", [(200, 200), (161, 121), (160, 121), (201, 200), (100, 1), (2, 2)])
def test_overlay_video_decodes_to_every_frame(tmp_path: Path, size: tuple[int, int]) -> None:
    w, h = size
    path = tmp_path / "o.mp4"
    image = np.full((h, w, 3), 60, np.uint8)
    encoded = (w + w % 2, max(4, h + h % 2))            # even, and the 4 rows libx264 needs at least
    with OverlayWriter(path, w, h, fps=25.0) as writer:
        for i in range(12):
            writer.write(image, frame_with([figure(scale=min(w, h) / 200)] if i % 2 else [], seq=i, size=size))
        assert writer.video_size == encoded
    frames, pts, rate = decode(path)
    assert len(frames) == 12
    assert frames[0].shape == (encoded[1], encoded[0], 3)
    assert rate == 25
    assert pts == sorted(pts) and len(set(pts)) == 12
    assert len(set(np.diff(pts).tolist())) == 1            # evenly spaced: frame index x 1/fps


@pytest.mark.parametrize("size", [(200, 200), (200, 202), (626, 417), (160, 121)])
def test_overlay_colours_stay_where_they_were_drawn(tmp_path: Path, size: tuple[int, int]) -> None:
    # A red square on grey: decoded, it is red where it was drawn and nowhere else, and the top rows
    # are grey, at heights 2 more than a multiple of 4 (626x417 pads to 418) as at the others.
    w, h = size
    image = np.full((h, w, 3), 128, np.uint8)
    image[100:140, 60:100] = (0, 0, 255)
    path = tmp_path / "o.mp4"
    with OverlayWriter(path, w, h, fps=25.0) as writer:
        writer.write(image, frame_with([], size=size))
    (frame,), _, _ = decode(path)
    red = (frame[..., 2].astype(int) - frame[..., 1]) > 100
    rows, cols = np.nonzero(red)
    assert 98 <= rows.min() and rows.max() <= 141 and 58 <= cols.min() and cols.max() <= 101
    assert red[104:136, 64:96].all()
    assert np.abs(frame[h - 20:h - 10, w - 20:w - 10].astype(int) - 128).max() < 12


def test_overlay_default_fps_is_30(tmp_path: Path) -> None:
    path = tmp_path / "o.mp4"
    for fps in (None, 0.0, float("nan")):
        with OverlayWriter(path, 64, 48, fps=fps) as writer:
            for i in range(3):
                writer.write(np.zeros((48, 64, 3), np.uint8), frame_with([], seq=i))
        assert decode(path)[2] == 30


def test_overlay_keeps_ntsc_rates(tmp_path: Path) -> None:
    path = tmp_path / "o.mp4"
    with OverlayWriter(path, 64, 48, fps=30000 / 1001) as writer:
        for i in range(3):
            writer.write(np.zeros((48, 64, 3), np.uint8), frame_with([], seq=i))
    assert decode(path)[2] == Fraction(30000, 1001)


def test_overlay_frames_keep_their_media_times(tmp_path: Path) -> None:
    """A variable-rate input (30 fps, then 15, then a 2 s pause) gives an overlay as long as it,
    each frame at its time from the first; Matroska's millisecond rounding lands on the frame
    grid; a jump back in the times plays on one period later; a frame without a time too."""
    path = tmp_path / "o.mp4"
    times = [5.0, 5.033, 5.067, 5.1, 5.167, 5.233, 7.233, 7.267, 1.0, 1.033, None, 1.1]
    with OverlayWriter(path, 64, 48, fps=30.0) as writer:
        for i, t in enumerate(times):
            writer.write(np.zeros((48, 64, 3), np.uint8), frame_with([], seq=i, t_media=t))
    with av.open(str(path)) as c:
        shown = [f.time for f in c.decode(video=0)]
    period = 1 / 30
    expected = [0, 1, 2, 3, 5, 7, 67, 68, 69, 70, 71, 72]
    assert np.allclose(shown, [k * period for k in expected], atol=1e-4), shown


def test_a_live_overlay_shows_untimed_frames_when_they_were_read(tmp_path: Path) -> None:
    """A 10 fps camera, or MJPEG over HTTP, has no media times and states no rate: its overlay
    played each frame one 30 fps period after the one before, three times too fast. Live, a frame
    without a media time is shown at its capture time; an image folder's still one period on."""
    captured = [1000.0 + 0.1 * i for i in range(5)]
    for live, expected in ((True, [0.0, 0.1, 0.2, 0.3, 0.4]), (False, [k / 30 for k in range(5)])):
        path = tmp_path / f"o_{live}.mp4"
        with OverlayWriter(path, 64, 48, fps=None, live=live) as writer:
            for i, t in enumerate(captured):
                frame = PoseFrame(seq=i, t_capture=t, t_media=None, image_size=(64, 48), people=[])
                writer.write(np.zeros((48, 64, 3), np.uint8), frame)
        with av.open(str(path)) as c:
            shown = [f.time for f in c.decode(video=0)]
        assert np.allclose(shown, expected, atol=2e-3), (live, shown)


def test_overlay_does_not_modify_its_input(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (121, 161, 3), dtype=np.uint8)
    before = image.copy()
    image.setflags(write=False)                            # as a read-only view of shared memory would be
    with OverlayWriter(tmp_path / "o.mp4", 161, 121, None) as writer:
        writer.write(image, frame_with([figure(scale=0.6)], size=(161, 121)))
        writer.write(image[:, :], frame_with([figure(scale=0.6)], seq=1, size=(161, 121)))
    np.testing.assert_array_equal(image, before)


def test_overlay_frames_show_the_pose_in_side_colours(tmp_path: Path) -> None:
    # Big enough that the lines survive H.264's 4:2:0 chroma.
    path = tmp_path / "o.mp4"
    s = 4.0
    image = np.full((800, 800, 3), 40, np.uint8)
    with OverlayWriter(path, 800, 800, 30) as writer:
        for i in range(3):
            writer.write(image, frame_with([figure(scale=s)], seq=i, size=(800, 800)))
    out = decode(path)[0][1].astype(int)

    def patch(x: float, y: float) -> np.ndarray:
        x, y = round(x * s), round(y * s)
        return out[y - 1:y + 2, x - 1:x + 2].reshape(-1, 3).mean(axis=0)

    left, right, centre = patch(120, 120), patch(80, 120), patch(100, 70)
    assert left[0] > left[2] + 80                          # blue-ish: B well above R
    assert right[2] > right[0] + 80                        # orange: R well above B
    assert centre[1] > centre[0] + 80 and centre[1] > centre[2] + 80
    assert np.abs(out[700:780, 20:60] - 40).max() < 8      # the background is left alone
    assert np.abs(out[5:25, 5:60] - 40).max() > 100        # the status line is there


def test_overlay_rejects_wrong_images_and_writes_after_close(tmp_path: Path) -> None:
    writer = OverlayWriter(tmp_path / "o.mp4", 64, 48, None)
    with pytest.raises(ValueError, match="64x48"):
        writer.write(np.zeros((64, 48, 3), np.uint8), frame_with([]))
    writer.write(np.zeros((48, 64, 3), np.uint8), frame_with([]))
    writer.close()
    writer.close()
    with pytest.raises(ValueError, match="closed"):
        writer.write(np.zeros((48, 64, 3), np.uint8), frame_with([]))
    assert len(decode(tmp_path / "o.mp4")[0]) == 1


def test_an_overlay_without_frames_leaves_the_path_as_it_was(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A run stopped before its first frame: no empty, unplayable video appears, and an earlier
    run's video at that path is kept."""
    with OverlayWriter(tmp_path / "o.mp4", 64, 48, None):
        pass
    assert not (tmp_path / "o.mp4").exists()
    assert "no frame reached the overlay video" in caplog.text
    (tmp_path / "kept.mp4").write_bytes(b"an earlier run's video")
    OverlayWriter(tmp_path / "kept.mp4", 64, 48, None).close(input_failed=True)
    assert (tmp_path / "kept.mp4").read_bytes() == b"an earlier run's video"


class _StreamThatCannotEncode:
    """An encoder that fails on the first frame (a full disk as its first packet goes out)."""

    def __init__(self, real) -> None:
        self.real = real
        self.codec_context = real.codec_context

    def encode(self, frame):
        raise OSError(28, "No space left on device", "o.mp4")      # as PyAV's error, with the file


def test_an_overlay_through_a_link_removes_the_file_not_the_link(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """`--overlay latest.mp4` linked to a run's folder: a video that cannot be made goes from
    there; the link is the user's and stays."""
    (tmp_path / "runs").mkdir()
    link = tmp_path / "latest.mp4"
    link.symlink_to(tmp_path / "runs" / "7.mp4")
    writer = OverlayWriter(link, 64, 48, None)
    start = writer._start

    def start_then_fail():
        container, stream = start()
        writer._stream = _StreamThatCannotEncode(stream)
        return container, writer._stream

    monkeypatch.setattr(writer, "_start", start_then_fail)
    with pytest.raises(InputError, match="No space left"):
        writer.write(np.zeros((48, 64, 3), np.uint8), frame_with([]))
    assert (tmp_path / "runs" / "7.mp4").is_file()          # made at the first frame
    writer.close()
    assert link.is_symlink() and not (tmp_path / "runs" / "7.mp4").exists()


def test_a_frame_that_cannot_be_written_is_said_once_and_its_video_removed(tmp_path: Path) -> None:
    """A disk that fills after some frames: the frame's error says the video is removed, and
    closing removes it without a second line about the same video."""
    path = tmp_path / "o.mp4"
    writer = OverlayWriter(path, 64, 48, None)
    for _ in range(3):
        writer.write(np.zeros((48, 64, 3), np.uint8), frame_with([]))
    assert writer._stream is not None
    writer._stream = _StreamThatCannotEncode(writer._stream)
    with pytest.raises(InputError) as err:
        writer.write(np.zeros((48, 64, 3), np.uint8), frame_with([]))
    # In the tracks' words, without PyAV's "[Errno 28] ...: 'o.mp4'".
    assert str(err.value) == (f"cannot write overlay video '{path}': No space left on device (free some disk space); "
                              f"the unfinished video is removed")
    writer.close()
    assert not path.exists()


def test_the_overlay_says_when_its_file_is_made(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The pipeline removes an unfinished overlay only once told the file was made: not before
    the first frame (an earlier run's video there is kept), and at once when it is."""
    path, made = tmp_path / "o.mp4", []
    writer = OverlayWriter(path, 64, 48, None, on_made=lambda: made.append(path.is_file()))
    assert made == []
    for i in range(2):
        writer.write(np.zeros((48, 64, 3), np.uint8), frame_with([], seq=i))
    writer.close()
    assert made == [True]
    # A first frame whose file cannot be made: its error says so; no warning that no frame came.
    (tmp_path / "gone").mkdir()
    writer = OverlayWriter(tmp_path / "gone" / "o.mp4", 64, 48, None)
    (tmp_path / "gone").rmdir()
    with pytest.raises(InputError, match="cannot write overlay video"):
        writer.write(np.zeros((48, 64, 3), np.uint8), frame_with([]))
    writer.close()
    assert "no frame reached the overlay video" not in caplog.text


def test_overlay_output_that_cannot_be_created(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist \\(create it first\\)") as err:
        OverlayWriter(tmp_path / "missing" / "o.mp4", 64, 48, None)
    assert "\n" not in str(err.value) and "missing" in str(err.value)
    with pytest.raises(InputError, match=r"use \.mp4"):
        OverlayWriter(tmp_path / "o.unknownext", 64, 48, None)
    assert not (tmp_path / "o.unknownext").exists()
    (tmp_path / "dir.mp4").mkdir()
    with pytest.raises(InputError, match="folder"):
        OverlayWriter(tmp_path / "dir.mp4", 64, 48, None)


def test_a_smaller_image_sits_top_left_on_black(tmp_path: Path) -> None:
    """Image folders mix sizes; the overlay video has the largest, smaller frames are padded."""
    writer = OverlayWriter(tmp_path / "o.mp4", 64, 48, None)
    writer.write(np.full((48, 64, 3), 200, np.uint8), frame_with([]))
    writer.write(np.full((20, 30, 3), 200, np.uint8), frame_with([]))
    writer.close()
    frames = decode(tmp_path / "o.mp4")[0]
    small = frames[1]
    assert small[12:18, 4:24].mean() > 150            # the image, top-left (below the status text)
    assert small[30:46, 40:62].mean() < 30            # black where it does not reach


class _ContainerThatCannotFinish:
    """An output container whose trailer (the index a player needs) hits a full disk."""

    def __init__(self, real) -> None:
        self.real = real

    def mux(self, packet) -> None:
        self.real.mux(packet)

    def close(self) -> None:
        self.real.close()
        raise OSError(28, "No space left on device", "o.mp4")


def test_an_overlay_that_cannot_be_finished_is_one_error_and_no_broken_file(tmp_path: Path) -> None:
    path = tmp_path / "o.mp4"
    writer = OverlayWriter(path, 64, 48, fps=30.0)
    for i in range(3):
        writer.write(np.zeros((48, 64, 3), np.uint8), frame_with([], seq=i))
    writer._container = _ContainerThatCannotFinish(writer._container)
    with pytest.raises(InputError) as err:
        writer.close()
    assert str(err.value) == (f"cannot finish overlay video '{path}': No space left on device (free some disk space); "
                              f"the unfinished video was removed")
    assert not path.exists()
    writer.close()                                         # idempotent, even after a failure


def test_an_overlay_whose_folder_is_removed_during_the_run_is_said_lost(tmp_path: Path) -> None:
    """`rm -rf` of the output folder mid-run: the encoder went on into a file no name reaches;
    closing says the video is lost rather than that it was written."""
    folder = tmp_path / "out"
    folder.mkdir()
    path = folder / "o.mp4"
    writer = OverlayWriter(path, 64, 48, fps=30.0)
    writer.write(np.zeros((48, 64, 3), np.uint8), frame_with([], seq=0))   # no packet out yet
    shutil.rmtree(folder)
    for i in range(1, 3):
        writer.write(np.zeros((48, 64, 3), np.uint8), frame_with([], seq=i))
    with pytest.raises(OutputLostError) as err:
        writer.close()
    assert err.value.exit_code == 2 and err.value.paths == [str(path)]
    assert not folder.exists()


def test_an_overlay_deleted_before_its_first_packet_is_not_made_again(tmp_path: Path) -> None:
    """The encoder holds its first frames back for a while: the file it writes is the one made
    at the first frame, so deleting it then loses the video as deleting it later does."""
    path = tmp_path / "o.mp4"
    writer = OverlayWriter(path, 64, 48, fps=30.0)
    writer.write(np.zeros((48, 64, 3), np.uint8), frame_with([], seq=0))
    path.unlink()
    for i in range(1, 60):
        writer.write(np.zeros((48, 64, 3), np.uint8), frame_with([], seq=i))
    with pytest.raises(OutputLostError):
        writer.close()
    assert not path.exists()


def test_an_overlay_renamed_during_the_run_is_not_said_lost(tmp_path: Path) -> None:
    """A name still reaches a video moved during the run: it is finished there, whole, and no
    error says it was lost (as a renamed track file is not)."""
    path, moved = tmp_path / "o.mp4", tmp_path / "moved.mp4"
    writer = OverlayWriter(path, 64, 48, fps=30.0)
    writer.write(np.zeros((48, 64, 3), np.uint8), frame_with([], seq=0))
    path.rename(moved)
    for i in range(1, 3):
        writer.write(np.zeros((48, 64, 3), np.uint8), frame_with([], seq=i))
    writer.close()
    with av.open(str(moved)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 3


def test_the_output_stage_closes_everything_even_after_a_failure(capsys) -> None:
    from streamer.closing import close_all

    closed = []

    def fails(name: str):
        def close() -> None:
            closed.append(name)
            raise InputError(f"{name} failed")
        return close

    with pytest.raises(InputError, match="track failed"):
        close_all([fails("track"), lambda: closed.append("overlay"), fails("publisher"), lambda: closed.append("zmq")])
    assert closed == ["track", "overlay", "publisher", "zmq"]
    assert "publisher failed" in capsys.readouterr().err       # the later failure is not lost either


def test_outputs_lost_together_are_one_line(capsys) -> None:
    """A folder removed with several outputs in it is one mistake: one error names them all, and
    nothing more is said about them."""
    from streamer.closing import close_all

    def lost(name: str):
        def close() -> None:
            raise OutputLostError([name])
        return close

    with pytest.raises(OutputLostError) as err:
        close_all([lost("out/a.jsonl"), lambda: None, lost("out/a.npz"), lost("out/a.mp4")])
    assert err.value.paths == ["out/a.jsonl", "out/a.npz", "out/a.mp4"]
    assert str(err.value).startswith("outputs 'out/a.jsonl', 'out/a.npz' and 'out/a.mp4' were deleted, or their "
                                     "folder removed, during the run: what was written to them is lost")
    assert capsys.readouterr().err == ""
    # With another failure first, that one is the error, and the lost outputs its one warning.
    def full() -> None:
        raise InputError("disk full")

    with pytest.raises(InputError, match="disk full"):
        close_all([full, lost("out/a.jsonl"), lost("out/a.npz")])
    assert capsys.readouterr().err.count("\n") == 1
