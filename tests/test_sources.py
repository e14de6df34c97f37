"""Input sources: files, folders, streams, cameras, and every way the input can be bad."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import http.server
import random
import re
import socket
import os
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from conftest import as_mpegts, http_serving_part
from PIL import Image

from engines.errors import InputError
from streamer.config import SourceConfig, load_pipeline_config
from streamer.sources import (
    CameraSource,
    Frame,
    ImageFolderSource,
    StreamSource,
    VideoFileSource,
    open_source,
)
from streamer.synthclip import write_clip

N = 20
W, H = 160, 120
SHIPPED = load_pipeline_config().source
CFG = dataclasses.replace(SHIPPED, open_timeout_s=2.0, read_timeout_s=2.0, max_image_side=1920)
FAST = dataclasses.replace(SHIPPED, open_timeout_s=0.5, read_timeout_s=0.5, max_image_side=1920)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clip(tmp_path_factory.mktemp("clip") / "walk.mp4", W, H, N, fps=30.0)


@pytest.fixture(scope="module")
def reference(clip: Path) -> dict[int, np.ndarray]:
    """The clip's frames by frame number, decoded straight through."""
    with VideoFileSource(clip) as src:
        return {round(f.t_media * 30): f.image.copy() for f in src.frames()}


def frame_no(f: Frame) -> int:
    assert f.t_media is not None
    return round(f.t_media * 30)


def read_all(spec: str | Path, config: SourceConfig = CFG) -> tuple[list[Frame], int]:
    with open_source(str(spec), config) as src:
        frames = [dataclasses.replace(f, image=f.image.copy()) for f in src.frames()]
        return frames, src.corrupt


# ------------------------------------------------------------------------------------------------
# video files


def test_file_yields_every_frame_in_order(clip: Path) -> None:
    with open_source(str(clip), CFG) as src:
        assert isinstance(src, VideoFileSource)
        info = src.info
        frames = list(src.frames())
        assert src.corrupt == 0
    assert (info.name, info.uri, info.live) == ("walk", str(clip), False)
    assert (info.width, info.height, info.frame_count) == (W, H, N)
    assert info.fps == pytest.approx(30.0)
    assert [f.index for f in frames] == list(range(N))
    for f in frames:
        assert f.image.shape == (H, W, 3) and f.image.dtype == np.uint8
        # Rows may be padded (PyAV 18.1.1 gives FFmpeg's padded rows as a view), pixels not:
        # what the capture's one copy into the ring and OpenCV need.
        assert f.image.strides[1:] == (3, 1)
        assert f.scale == 1.0 and f.name is None
    t = np.array([f.t_media for f in frames])
    assert t[0] == pytest.approx(0.0)
    assert (np.diff(t) > 0).all()
    assert [frame_no(f) for f in frames] == list(range(N))


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads through Linux's /proc")
def test_frames_are_converted_by_one_scaler_into_the_pixels_pyav_gives(tmp_path: Path) -> None:
    """A decoded frame's own conversion (`to_ndarray(format="bgr24")`) makes FFmpeg's scaler
    afresh for each frame, with its buffers and, with more than one core, its threads: two new
    threads a frame on two cores. The source keeps one scaler for all, and gives the same pixels."""
    path = write_clip(tmp_path / "walk.mp4", 320, 240, 12, fps=30.0)
    with av.open(str(path)) as container:
        expected = [f.to_ndarray(format="bgr24").copy() for f in container.decode(video=0)]
    images, threads = [], []
    with VideoFileSource(path) as src:
        for f in src.frames():
            images.append(f.image.copy())
            threads.append(set(os.listdir("/proc/self/task")))    # alive while the frame is handed over
    assert len(images) == len(expected) == 12
    for got, want in zip(images, expected):
        np.testing.assert_array_equal(got, want)
    # The scaler's threads start with the first frame; none start after it.
    started_later = set().union(*threads[1:]) - threads[0]
    assert not started_later, f"{len(started_later)} threads started over {len(threads) - 1} frames"


def _held_images_stay_as_decoded(frames: Iterator[Frame]) -> int:
    """Holds each frame's image as given (no copy) while the next is decoded, as the capture's
    reader thread does; checks that decoding on changed none of the images held. The count."""
    held: list[tuple[np.ndarray, np.ndarray]] = []
    for f in frames:
        held.append((f.image, f.image.copy()))
        for image, as_given in held:
            np.testing.assert_array_equal(image, as_given)
    return len(held)


def test_a_frames_image_is_not_overwritten_by_the_next_frame(clip: Path, tmp_path: Path) -> None:
    """The source keeps one converter to BGR for all frames: the image it gave for frame N must
    not be a buffer the converter reuses for frame N+1 (a live source's reader thread decodes the
    next frame while the capture still copies this one). Also where a stream changes size and each
    frame is scaled as well as converted."""
    with VideoFileSource(clip) as src:
        assert _held_images_stay_as_decoded(src.frames()) == N
    a = _ts_segment(tmp_path / "a.ts", 160, 120, 6, (0, 0, 200))
    b = _ts_segment(tmp_path / "b.ts", 96, 64, 6, (0, 200, 0))
    (tmp_path / "ab.ts").write_bytes(a + b)
    with VideoFileSource(tmp_path / "ab.ts") as src:
        assert _held_images_stay_as_decoded(src.frames()) >= 11


def test_truncated_file_yields_frames_before_the_cut(clip: Path, reference: dict,
                                                     tmp_path: Path) -> None:
    data = clip.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    frames, corrupt = read_all(cut)
    assert 0 < len(frames) < N
    assert [f.index for f in frames] == list(range(len(frames)))
    # What it yields is exactly what the whole file holds at those times...
    for f in frames:
        np.testing.assert_array_equal(f.image, reference[frame_no(f)])
    # ...and the rest is counted, not silently missing: the MP4 index knows the length.
    assert len(frames) + corrupt == N


def _noise_clip(path: Path, fmt: str, codec: str, frames: int = 60, rate: int = 30, noise: bool = True) -> Path:
    """`frames` frames at `rate`: noise (large packets, so a cut lands inside the video), or flat
    grey levels."""
    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream(codec, rate=rate)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        rng = np.random.default_rng(0)
        for i in range(frames):
            image = (rng.integers(0, 255, (H, W, 3), dtype=np.uint8) if noise
                     else np.full((H, W, 3), 50 * i % 250, np.uint8))
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts = i
            c.mux(s.encode(frame))
        c.mux(s.encode(None))
    return path


@pytest.mark.parametrize("fmt, codec", [("matroska", "libx264"), ("webm", "libvpx"), ("flv", "flv")])
def test_a_cut_short_file_with_a_stated_duration_counts_its_lost_end(tmp_path: Path, fmt: str, codec: str) -> None:
    """Matroska, WebM and FLV have no frame index, but their header states the duration: a copy
    cut short ends well before it, and the frames it lacks are counted, not silently missing."""
    whole = _noise_clip(tmp_path / f"whole.{fmt}", fmt, codec)
    frames, corrupt = read_all(whole)
    assert (len(frames), corrupt) == (60, 0)
    cut = tmp_path / f"cut.{fmt}"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    frames, corrupt = read_all(cut)
    assert 0 < len(frames) < 50
    assert len(frames) + corrupt == 60       # a damaged last packet is counted once, not again as missing


@pytest.mark.parametrize("fmt, codec", [("matroska", "libx264"), ("flv", "flv")])
def test_a_complete_file_whose_audio_runs_on_or_whose_time_starts_late_is_whole(tmp_path: Path, fmt: str,
                                                                               codec: str) -> None:
    """The file's stated duration covers its audio too, and a Matroska file's counts from 0
    whatever its first timestamp: neither may make a whole video look cut short."""
    for name, audio, start in (("audio", True, 0), ("late", False, 300)):
        path = tmp_path / f"{name}.{fmt}"
        with av.open(str(path), "w", format=fmt) as c:
            v = c.add_stream(codec, rate=30)
            v.width, v.height, v.pix_fmt = W, H, "yuv420p"
            a = c.add_stream("aac" if fmt == "matroska" else "mp3", rate=44100) if audio else None
            for i in range(60):
                frame = av.VideoFrame.from_ndarray(np.full((H, W, 3), 4 * i, np.uint8), format="bgr24")
                frame.pts = start + i
                c.mux(v.encode(frame))
            c.mux(v.encode(None))
            if a is not None:                      # 3 s of silence against the video's 2 s
                for k in range(0, 3 * 44100, 1152):
                    chunk = av.AudioFrame.from_ndarray(np.zeros((1, 1152), np.float32), format="fltp", layout="mono")
                    chunk.sample_rate, chunk.pts = 44100, k
                    c.mux(a.encode(chunk))
                c.mux(a.encode(None))
        frames, corrupt = read_all(path)
        assert (len(frames), corrupt) == (60, 0), name


@pytest.mark.parametrize("fmt, codec", [("matroska", "libx264"), ("matroska", "mpeg4"), ("webm", "libvpx"),
                                        ("flv", "flv")])
def test_frames_a_damaged_middle_took_are_said(tmp_path: Path, fmt: str, codec: str,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """Matroska, WebM and FLV demuxers skip damaged data to the next place they can read, with no
    error: the frames in between are gone, and only their timestamps say so (said, not counted as
    damage: a recording that dropped frames looks the same), or, where the damage runs to the end
    of the video, the stated duration (counted)."""
    whole = _noise_clip(tmp_path / f"whole.{fmt}", fmt, codec)
    data = bytearray(whole.read_bytes())
    start, length = int(len(data) * 0.45), len(data) // 5
    data[start:start + length] = bytes(length)
    damaged = tmp_path / f"damaged.{fmt}"
    damaged.write_bytes(bytes(data))
    with caplog.at_level("WARNING"):
        frames, corrupt = read_all(damaged)
    said = re.findall(r"no frame between [\d.]+ s and [\d.]+ s, where about (\d+) frame\(s\) were due at 30 fps: the file is "
                      r"damaged there, or its recording dropped them", caplog.text)
    assert 0 < len(frames) < 60 and len(frames) + corrupt + sum(map(int, said)) == 60, caplog.text


def _clip_at_times(path: Path, ticks: list[int], rate: int = 30, fmt: str = "matroska",
                   time_base: Fraction | None = None) -> Path:
    """A clip (Matroska by default) whose frames come at `ticks` (in `time_base`, 1/`rate` s by default)."""
    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream("mpeg4", rate=rate)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        if time_base is not None:
            s.codec_context.time_base = time_base
        for i, tick in enumerate(ticks):
            frame = av.VideoFrame.from_ndarray(np.full((H, W, 3), 7 * i % 250, np.uint8), format="bgr24")
            frame.pts = tick
            if time_base is not None:
                frame.time_base = time_base
            c.mux(s.encode(frame))
        c.mux(s.encode(None))
    return path


def test_a_gap_in_a_steady_recording_is_said_and_a_variable_rate_is_left_alone(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A recording at a steady rate with no frames for a third of a second: said, with both causes,
    and not counted as damage. Many gaps are summed up in one more line. A variable-rate
    recording's gaps are its own."""
    steady = _clip_at_times(tmp_path / "steady.mkv", list(range(30)) + list(range(40, 70)))
    with caplog.at_level("WARNING"):
        frames, corrupt = read_all(steady)
    assert (len(frames), corrupt) == (60, 0)
    assert "no frame between 0.97 s and 1.33 s, where about 10 frame(s) were due at 30 fps" in caplog.text
    assert "such gaps" not in caplog.text
    caplog.clear()
    halved = list(range(70)) + list(range(71, 131, 2))      # 30 fps, then 15
    with caplog.at_level("WARNING"):
        frames, corrupt = read_all(_clip_at_times(tmp_path / "halved.mkv", halved))
    assert (len(frames), corrupt) == (100, 0)
    assert caplog.text.count("no frame between") == 1 and "30 such gaps in all, where about 30 frame(s) were due" in caplog.text
    caplog.clear()
    rng = np.random.default_rng(0)
    ticks = np.cumsum(rng.integers(1, 4, 40)).tolist()
    ticks += [ticks[-1] + 15 + k for k in range(10)]
    with caplog.at_level("WARNING"):
        frames, corrupt = read_all(_clip_at_times(tmp_path / "variable.mkv", ticks))
    assert (len(frames), corrupt) == (50, 0) and "no frame between" not in caplog.text


def _jittered_clip(path: Path, frames: list[int], jitter_s: float = 0.008) -> Path:
    """A Matroska clip at 30 fps whose frames (numbered in `frames`) are stamped in ms with a
    jitter of up to `jitter_s`, as phones and browsers stamp theirs."""
    ticks = [round(1000 * (i / 30 + jitter_s * np.sin(1.7 * i))) for i in frames]
    return _clip_at_times(path, ticks, time_base=Fraction(1, 1000))


def test_a_gap_among_jittered_timestamps_is_said_and_the_jitter_is_not(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Timestamps off by up to a quarter of a period either way make no gap; four frames missing
    among them do."""
    with caplog.at_level("WARNING"):
        frames, corrupt = read_all(_jittered_clip(tmp_path / "whole.mkv", list(range(90))))
    assert (len(frames), corrupt) == (90, 0) and "no frame between" not in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        frames, corrupt = read_all(_jittered_clip(tmp_path / "gap.mkv", [i for i in range(90) if not 40 <= i < 44]))
    assert (len(frames), corrupt) == (86, 0)
    assert re.search(r"no frame between 1\.3\d s and 1\.4\d s, where about 4 frame\(s\) were due", caplog.text), caplog.text


def test_mpegts_files_joined_end_to_end_give_every_frame(clip: Path, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """`cat a.ts b.ts`: the demuxer marks the first part's last packet damaged where the second's
    counters restart, but it is whole, and so is its frame."""
    joined = tmp_path / "joined.ts"
    joined.write_bytes(as_mpegts(clip, tmp_path / "a.ts") + as_mpegts(clip, tmp_path / "b.ts", first_pts=N))
    with av.open(str(joined)) as c:
        assert any(p.is_corrupt for p in c.demux(c.streams.video[0]))   # what the test is about
    with caplog.at_level("WARNING"):
        frames, corrupt = read_all(joined)
    assert (len(frames), corrupt) == (2 * N, 0), caplog.text
    alone, _ = read_all(tmp_path / "a.ts")
    np.testing.assert_array_equal(frames[N - 1].image, alone[-1].image)


@pytest.mark.parametrize("at, cut", [(0.3, 30), (0.45, 60), (0.4, 400)])
def test_frames_lost_in_a_damaged_mpegts_file_are_counted(tmp_path: Path, at: float, cut: int,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """`cut` 188-byte TS packets lost at `at` of the file (a lost network chunk): the frames
    they held are counted as damaged (exit 3), the frames around them are kept, and together
    they are all the file's frames."""
    data = _noise_clip(tmp_path / "whole.ts", "mpegts", "libx264").read_bytes()
    start = int(len(data) * at) // 188 * 188
    damaged = tmp_path / "damaged.ts"
    damaged.write_bytes(data[:start] + data[start + cut * 188:])
    with caplog.at_level("WARNING"):
        frames, corrupt = read_all(damaged)
    assert corrupt > 0 and len(frames) + corrupt == 60, caplog.text
    assert re.search(r"about \d+ frame\(s\) lost after damaged data at [\d.]+ s", caplog.text), caplog.text


def _without_video_packets(data: bytes, at: float, count: int) -> bytes:
    """An MPEG-TS file with `count` of its video's 188-byte packets taken out from `at` of them:
    in multiples of 16 the packets' counters still run on, so the demuxer marks nothing."""
    packets = [data[i:i + 188] for i in range(0, len(data), 188)]
    pids = [((p[1] & 0x1F) << 8) | p[2] for p in packets]
    video = max(set(pids), key=pids.count)
    ours = [i for i, pid in enumerate(pids) if pid == video]
    start = int(len(ours) * at)
    dropped = set(ours[start:start + count])
    return b"".join(p for i, p in enumerate(packets) if i not in dropped)


@pytest.mark.parametrize("at, count", [(0.5, 128), (0.6, 64)])
def test_frames_lost_in_mpegts_without_a_mark_are_said(tmp_path: Path, at: float, count: int,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """Damage the demuxer does not mark shows only in the timestamps: the gap is said, as a
    Matroska file's is, and nothing is lost without a word."""
    damaged = tmp_path / "damaged.ts"
    damaged.write_bytes(_without_video_packets(_noise_clip(tmp_path / "whole.ts", "mpegts", "libx264").read_bytes(),
                                               at, count))
    with av.open(str(damaged)) as c:
        assert not any(p.is_corrupt for p in c.demux(c.streams.video[0]))
    with caplog.at_level("WARNING"):
        frames, corrupt = read_all(damaged)
    said = sum(map(int, re.findall(r"where about (\d+) frame\(s\) were due", caplog.text)))
    assert said > 0 and len(frames) + corrupt + said == 60, caplog.text


def test_an_mpegts_recording_begun_between_keyframes_and_joined_to_another_loses_nothing_to_the_join(
        clip: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A DVR capture starts mid-GOP: its first packets give no picture, as they do alone. Joined
    to another file, the join's marked packet is decoded and those first packets are not taken
    for frames the join lost."""
    whole = _noise_clip(tmp_path / "whole.ts", "mpegts", "libx264", noise=False).read_bytes()   # keyframes 25 apart
    head = whole[len(whole) // 5 // 188 * 188:]
    (tmp_path / "head.ts").write_bytes(head)
    alone, alone_corrupt = read_all(tmp_path / "head.ts")
    assert 0 < len(alone) < 60 and alone_corrupt == 0
    joined = tmp_path / "joined.ts"
    joined.write_bytes(head + as_mpegts(clip, tmp_path / "b.ts"))
    with caplog.at_level("WARNING"):
        frames, corrupt = read_all(joined)
    assert (len(frames), corrupt) == (len(alone) + N, 0), caplog.text


def test_frames_stamped_in_decode_order_get_their_decode_times(clip: Path) -> None:
    """AVI stores no presentation times: FFmpeg stamps each H.264 picture with its packet's, in
    decode order, so with B-frames the pts go 1, 3, 4, 2, ... (`ffmpeg -c:v libx264 out.avi`). The
    frames' times are then their dts, as FFmpeg's best-effort timestamp takes them: pts while
    they rise no less often than the dts do."""
    from types import SimpleNamespace

    tb = Fraction(1, 25)
    stamped = [(1, 0), (3, 1), (4, 2), (2, 3), (6, 4), (7, 5), (5, 6), (9, 7)]
    with open_source(str(clip), CFG) as src:
        times = [src._media_time(SimpleNamespace(pts=pts, dts=dts, time_base=tb)) for pts, dts in stamped]
    assert times[:3] == [0.04, 0.12, 0.16]                    # pts, until they go back more than dts
    assert all(b > a for a, b in zip(times[4:], times[5:])) and times[-1] == 7 / 25
    with open_source(str(clip), CFG) as src:                  # in order: the pts, whatever the dts
        assert [src._media_time(SimpleNamespace(pts=k, dts=None, time_base=tb)) for k in range(3)] == [0.0, 0.04, 0.08]


def test_frames_an_avi_recording_dropped_are_said_and_a_cut_short_one_still_counted(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An AVI's index keeps the frames its recording dropped as empty chunks, and its frame count
    includes them: the file is whole (said, exit 0), not 10 frames short. Cut short, the frames
    it lacks past the cut are still counted as lost, and the dropped ones are not."""
    ticks = list(range(30)) + list(range(40, 70))
    avi = _clip_at_times(tmp_path / "dropped.avi", ticks, fmt="avi")
    with av.open(str(avi)) as c:
        assert c.streams.video[0].frames == 70          # FFmpeg's count, the empty chunks included
    with caplog.at_level("WARNING"):
        frames, corrupt = read_all(avi)
    assert (len(frames), corrupt) == (60, 0), caplog.text
    assert "no frame between 0.97 s and 1.33 s, where about 10 frame(s) were due at 30 fps" in caplog.text
    assert "early" not in caplog.text
    caplog.clear()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(avi.read_bytes()[: avi.stat().st_size * 3 // 4])
    with caplog.at_level("WARNING"):
        frames, corrupt = read_all(cut)
    assert 30 < len(frames) < 60 and len(frames) + corrupt == 60, caplog.text


def test_a_file_with_no_complete_frame_is_one_error_and_no_warnings(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    data = _noise_clip(tmp_path / "whole.webm", "webm", "libvpx").read_bytes()
    cut = tmp_path / "cut.webm"
    cut.write_bytes(data[: data.index(b"\x1f\x43\xb6\x75") + 600])    # inside the first cluster's first frame
    with caplog.at_level("WARNING"), pytest.raises(InputError, match="gave no frame to track"):
        read_all(cut)
    assert not [r for r in caplog.records if r.levelname == "WARNING"], caplog.text


def _packets(path: Path) -> list[tuple[int, int]]:
    with av.open(str(path)) as c:
        return [(p.pos, p.size) for p in c.demux(c.streams.video[0]) if p.size]


def test_corrupt_packet_is_skipped_and_counted(clip: Path, reference: dict,
                                               tmp_path: Path) -> None:
    # Overwrite one P-frame's whole packet (inside the data, well after the header). Observed
    # FFmpeg behaviour: that packet fails to decode (InvalidDataError), every other frame decodes
    # (concealment covers the missing reference), and nothing raises.
    pos, size = _packets(clip)[N // 2]
    data = bytearray(clip.read_bytes())
    rng = random.Random(7)
    data[pos:pos + size] = bytes(rng.randrange(256) for _ in range(size))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(data))
    frames, corrupt = read_all(bad)
    assert corrupt >= 1
    assert len(frames) + corrupt == N
    assert [f.index for f in frames] == list(range(len(frames)))
    assert (np.diff([f.t_media for f in frames]) > 0).all()
    # Frames before the damage are intact.
    early = [f for f in frames if frame_no(f) < N // 4]
    assert early
    for f in early:
        np.testing.assert_array_equal(f.image, reference[frame_no(f)])


def test_crude_2kb_overwrite_in_the_middle(clip: Path, tmp_path: Path) -> None:
    data = bytearray(clip.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 2048] = bytes(2048)
    bad = tmp_path / "zeros.mp4"
    bad.write_bytes(bytes(data))
    frames, corrupt = read_all(bad)
    assert corrupt >= 1 and len(frames) > 0
    assert len(frames) + corrupt == N


def test_broken_keyframe_counts_the_frames_that_depend_on_it(clip: Path, tmp_path: Path) -> None:
    # The only keyframe damaged: FFmpeg reports one error, then silently drops every frame that
    # needed it. Those are counted too; with none left, the file gave nothing to track.
    # The damage starts right after the packet's first length field, so the picture's own data
    # cannot be found in it.
    pos, size = _packets(clip)[0]
    data = bytearray(clip.read_bytes())
    data[pos + 4:pos + size // 3] = bytes(random.Random(1).randrange(256) for _ in range(size // 3 - 4))
    bad = tmp_path / "nokey.mp4"
    bad.write_bytes(bytes(data))
    with pytest.raises(InputError, match=f"gave no frame to track: none could be decoded \\(about {N} frame"):
        read_all(bad)


def test_damage_the_decoder_fills_in_is_said(clip: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # The keyframe's picture data damaged past its start: FFmpeg raises nothing and fills the
    # picture in from what it could read. Every frame is there; the damage is still said.
    pos, size = _packets(clip)[0]
    data = bytearray(clip.read_bytes())
    data[pos + size // 3:pos + size] = bytes(random.Random(1).randrange(256) for _ in range(size - size // 3))
    bad = tmp_path / "concealed.mp4"
    bad.write_bytes(bytes(data))
    with caplog.at_level("WARNING"):
        frames, corrupt = read_all(bad)
    assert len(frames) == N and corrupt == 0
    # Said once, when the damaged frame comes, as a live stream needs it (it may never end).
    assert caplog.text.count("was decoded from damaged data") == 1 and "frame 0 (0.000 s) was" in caplog.text
    assert "frame(s) were decoded from damaged data" not in caplog.text


def _bad_file(d: Path, kind: str) -> Path:
    if kind == "missing":
        return d / "missing.mp4"
    if kind == "empty":
        (d / "empty.mp4").write_bytes(b"")
        return d / "empty.mp4"
    if kind == "noise":
        noise = np.random.default_rng(0).integers(0, 256, 40_000, dtype=np.uint8).tobytes()
        (d / "noise.mp4").write_bytes(noise)
        return d / "noise.mp4"
    (d / "notes.txt").write_text("hello world\n" * 100)     # FFmpeg would "play" it as ANSI art
    return d / "notes.txt"


@pytest.mark.parametrize("kind, expect", [
    ("missing", "no such file"),
    ("empty", "empty"),
    ("noise", "not a video file PyAV can read"),
    ("text", "text file"),
])
def test_bad_video_files(tmp_path: Path, kind: str, expect: str) -> None:
    path = _bad_file(tmp_path, kind)
    with pytest.raises(InputError) as err:
        open_source(str(path), CFG)
    assert str(path) in str(err.value) and expect in str(err.value)
    assert "\n" not in str(err.value)


def test_folder_given_to_the_video_reader(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="folder") as err:
        VideoFileSource(tmp_path)
    assert str(tmp_path) in str(err.value)


def test_file_without_a_video_stream(tmp_path: Path) -> None:
    path = tmp_path / "speech.m4a"
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                           layout="mono")
        frame.sample_rate = 16000
        for i in range(5):
            frame.pts = i * 1024
            c.mux(s.encode(frame))
        c.mux(s.encode(None))
    with pytest.raises(InputError, match="no video stream") as err:
        open_source(str(path), CFG)
    assert str(path) in str(err.value) and "audio" in str(err.value)


@pytest.mark.parametrize("degrees, corner", [(0, "top left"), (90, "bottom left"), (180, "bottom right"),
                                             (270, "top right")])
def test_a_phone_clips_rotation_metadata_turns_its_frames_upright(tmp_path: Path, degrees: int,
                                                                  corner: str) -> None:
    """Phones store a portrait clip landscape with a display matrix. Players (FFmpeg's
    autorotation) show it turned counterclockwise by the matrix's angle; so must the tracker, or
    the person lies on their side. A marker stored in the top left corner shows where it went."""
    path = tmp_path / f"phone_{degrees}.mp4"
    stored = np.zeros((48, 64, 3), np.uint8)
    stored[:16, :16] = 255
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        if degrees:
            s.set_display_rotation(degrees)          # counterclockwise, as PyAV reads it back
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(stored, format="bgr24")
            frame.pts = i
            c.mux(s.encode(frame))
        c.mux(s.encode(None))
    src = VideoFileSource(path)
    upright = degrees in (0, 180)
    assert (src.info.width, src.info.height) == ((64, 48) if upright else (48, 64))
    got = list(src.frames())
    src.close()
    frames = [f.upright().copy() for f in got]
    assert len(frames) == 3 and all(f.shape == (src.info.height, src.info.width, 3) for f in frames)
    # What the capture does: the upright picture into its shared-memory slot (a contiguous view
    # of a larger buffer), turned on the way, in its one copy.
    ring = np.zeros(64 * 64 * 3 + 10, np.uint8)
    for f, want in zip(got, frames):
        w, h = f.upright_size
        slot = ring[: h * w * 3].reshape(h, w, 3)
        f.copy_upright_into(slot)
        np.testing.assert_array_equal(slot, want)
    h, w = frames[0].shape[:2]
    quadrants = {"top left": frames[0][:h // 2, :w // 2], "top right": frames[0][:h // 2, w // 2:],
                 "bottom left": frames[0][h // 2:, :w // 2], "bottom right": frames[0][h // 2:, w // 2:]}
    brightest = max(quadrants, key=lambda q: quadrants[q].mean())
    assert brightest == corner


def test_a_turned_frame_keeps_its_picture_after_the_next_is_read(tmp_path: Path) -> None:
    """A live reader thread decodes the next frame while the capture still copies this one: each
    turned frame must own its pixels, not share a buffer the next one is turned into."""
    path = tmp_path / "phone.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.set_display_rotation(270)
        for i in range(4):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 40 + 50 * i, np.uint8), format="bgr24")
            frame.pts = i
            c.mux(s.encode(frame))
        c.mux(s.encode(None))
    src = VideoFileSource(path)
    kept = list(src.frames())                       # no copies: as the live reader hands them over
    src.close()
    assert [round(float(f.upright().mean()) / 10) * 10 for f in kept] == [40, 90, 140, 190]


def test_a_cover_picture_stream_before_the_video_is_not_what_is_tracked(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    """Some files carry a one-frame cover or thumbnail as their first video stream: the tracker
    follows the video players show (FFmpeg's pick), every frame of it, and says so."""
    path = tmp_path / "with_cover.mkv"
    with av.open(str(path), "w") as c:
        cover = c.add_stream("mjpeg", rate=1)
        cover.width, cover.height, cover.pix_fmt = 64, 48, "yuvj420p"
        video = c.add_stream("mpeg4", rate=10)
        video.width, video.height, video.pix_fmt = 96, 64, "yuv420p"
        picture = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="bgr24")
        picture.pts = 0
        c.mux(cover.encode(picture))
        c.mux(cover.encode(None))
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((64, 96, 3), 30 * i, np.uint8), format="bgr24")
            frame.pts = i
            c.mux(video.encode(frame))
        c.mux(video.encode(None))
    src = VideoFileSource(path)
    frames = [f.image.shape for f in src.frames()]
    src.close()
    assert (src.info.width, src.info.height) == (96, 64) and frames == [(64, 96, 3)] * 5
    assert "has 2 video streams; tracking stream #1 (96x64, mpeg4)" in caplog.text


def _browser_webm(path: Path, n: int, fps: float, seed: int = 0) -> Path:
    """A clip as a browser's MediaRecorder writes one: VP8 in WebM, millisecond timestamps that
    jitter by a quarter of a frame, and no DefaultDuration element (blanked to a Void of the same
    length), so that FFmpeg has no rate but the one it guesses from the time base: 1000 fps."""
    rng = np.random.default_rng(seed)
    with av.open(str(path), "w", format="webm") as c:
        s = c.add_stream("libvpx", rate=round(fps))
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.codec_context.time_base = Fraction(1, 1000)
        t = 0.0
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(np.full((H, W, 3), 10 * i % 250, np.uint8), format="bgr24")
            frame.pts, frame.time_base = round(t * 1000), Fraction(1, 1000)
            c.mux(s.encode(frame))
            t += (1.0 + rng.uniform(-0.25, 0.25)) / fps
        c.mux(s.encode(None))
    data = bytearray(path.read_bytes())
    at = data.find(b"\x23\xe3\x83")                 # DefaultDuration's element ID
    assert at >= 0 and data[at + 3] & 0x80
    length = 4 + (data[at + 3] & 0x7F)
    data[at:at + length] = bytes([0xEC, 0x80 | (length - 2)]) + bytes(length - 2)
    path.write_bytes(bytes(data))
    return path


def test_a_browser_recording_gets_the_rate_its_frames_come_at(tmp_path: Path) -> None:
    path = _browser_webm(tmp_path / "browser.webm", 90, 30.0)
    with av.open(str(path)) as c:
        assert c.streams.video[0].guessed_rate == 1000      # what the container alone gives
    with VideoFileSource(path) as src:
        info = src.info
        frames = list(src.frames())
    assert info.fps == pytest.approx(30.0, rel=0.03)
    assert len(frames) == 90 and [f.index for f in frames] == list(range(90))
    assert info.frame_count == pytest.approx(90, abs=3)       # estimated from the duration


def test_a_browser_recording_over_http_ends_as_a_file(tmp_path: Path, http_root: tuple[Path, str]) -> None:
    """Its length used to be estimated at 1000 frames a second, so a complete download of it
    ended with "stream ... ended after 90 frames"."""
    root, base = http_root
    _browser_webm(root / "browser.webm", 90, 30.0)
    with open_source(f"{base}/browser.webm", CFG) as src:
        assert not src.info.live
        assert src.info.fps == pytest.approx(30.0, rel=0.03)
        assert sum(1 for _ in src.frames()) == 90


def test_file_cut_inside_its_header(clip: Path, tmp_path: Path) -> None:
    path = tmp_path / "stub.mp4"
    path.write_bytes(clip.read_bytes()[:200])
    with pytest.raises(InputError) as err:
        open_source(str(path), CFG)
    assert str(path) in str(err.value) and "is cut short" in str(err.value)


def test_a_recording_without_its_index_says_so(tmp_path: Path) -> None:
    """An MP4 written as it records keeps its index ('moov') for the end: cut before it (a camera
    unplugged, a copy cut short), FFmpeg says only "Invalid data"."""
    whole = _noise_clip(tmp_path / "rec.mp4", "mp4", "mpeg4", frames=10, noise=False)   # no faststart
    data = whole.read_bytes()
    assert data.index(b"mdat") < data.index(b"moov")
    for name, end, says in (("cut.mp4", len(data) // 2, "is cut short"),
                            ("unfinished.mp4", data.index(b"moov") - 4, "has no index (no 'moov' box)")):
        path = tmp_path / name
        path.write_bytes(data[:end])
        with pytest.raises(InputError, match=re.escape(says)) as err:
            open_source(str(path), CFG)
        assert str(path) in str(err.value)


# ------------------------------------------------------------------------------------------------
# image folders


def _png(path: Path, w: int, h: int, value: int) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = value
    img[: h // 2, :, 2] = 255 - value                   # not uniform, so resizing shows
    assert cv2.imwrite(str(path), img)
    return img


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    d = tmp_path / "shots"
    d.mkdir()
    _png(d / "img10.png", 40, 30, 10)
    _png(d / "img2.png", 50, 20, 2)
    _png(d / "img1.png", 30, 44, 1)
    cv2.imwrite(str(d / "img3.jpg"), np.full((24, 32, 3), 90, np.uint8))
    (d / "notes.txt").write_text("not an image")
    return d


def test_folder_in_natural_order(folder: Path) -> None:
    with open_source(str(folder), CFG) as src:
        assert isinstance(src, ImageFolderSource)
        info = src.info
        frames = list(src.frames())
        assert src.corrupt == 0
    assert [f.name for f in frames] == ["img1.png", "img2.png", "img3.jpg", "img10.png"]
    assert [f.index for f in frames] == [0, 1, 2, 3]
    assert (info.name, info.live, info.frame_count, info.fps, info.stills) == ("shots", False, 4, None, True)
    assert (info.width, info.height) == (50, 44)               # the largest of each
    assert [f.image.shape for f in frames] == [(44, 30, 3), (20, 50, 3), (24, 32, 3), (30, 40, 3)]
    for f in frames:
        assert f.image.dtype == np.uint8 and f.image.flags["C_CONTIGUOUS"]
        assert f.t_media is None and f.scale == 1.0
    assert frames[0].image[0, 0].tolist() == [1, 0, 254]      # pixels come through as BGR


def test_corrupt_images_are_skipped_and_counted(folder: Path) -> None:
    (folder / "img4.png").write_bytes(b"\x89PNG garbage, no header")   # header unreadable
    good = cv2.imencode(".png", np.full((64, 64, 3), 7, np.uint8))[1].tobytes()
    (folder / "img5.png").write_bytes(good[: len(good) // 2])          # header fine, data cut
    frames, corrupt = read_all(folder)
    assert [f.name for f in frames] == ["img1.png", "img2.png", "img3.jpg", "img10.png"]
    assert corrupt == 2
    assert len(frames) + corrupt == 6


def test_oversize_images_are_scaled_down(tmp_path: Path) -> None:
    d = tmp_path / "big"
    d.mkdir()
    _png(d / "a.png", 256, 128, 50)
    _png(d / "b.png", 60, 60, 60)
    cfg = dataclasses.replace(SHIPPED, open_timeout_s=1, read_timeout_s=1, max_image_side=64)
    with open_source(str(d), cfg) as src:
        assert (src.info.width, src.info.height) == (64, 60)
        frames = list(src.frames())
    assert frames[0].image.shape == (32, 64, 3)
    assert frames[0].scale == pytest.approx(4.0)
    assert frames[1].image.shape == (60, 60, 3) and frames[1].scale == 1.0
    # The image is scaled, not cropped: the top half stays red-ish, the bottom not.
    assert frames[0].image[4, 32, 2] > 200 and frames[0].image[28, 32, 2] < 10


def test_very_large_jpeg_uses_reduced_decoding(tmp_path: Path) -> None:
    path = tmp_path / "huge.jpg"
    cv2.imwrite(str(path), np.full((600, 1000, 3), 128, np.uint8))
    cfg = dataclasses.replace(SHIPPED, open_timeout_s=1, read_timeout_s=1, max_image_side=100)
    frames, corrupt = read_all(path, cfg)
    assert corrupt == 0 and frames[0].image.shape == (60, 100, 3)
    assert frames[0].scale == pytest.approx(10.0)
    assert frames[0].full_size == (1000, 600)


def test_a_scaled_image_keeps_its_own_size(tmp_path: Path) -> None:
    # 1000x667 fits 100 wide as 100x67, and 67 x 10 is 670: the size said is the file's own, 667.
    from streamer.packets import FramePacket

    cv2.imwrite(str(tmp_path / "a.jpg"), np.full((667, 1000, 3), 128, np.uint8))
    cv2.imwrite(str(tmp_path / "b.jpg"), np.full((50, 80, 3), 128, np.uint8))
    cfg = dataclasses.replace(SHIPPED, open_timeout_s=1, read_timeout_s=1, max_image_side=100)
    frames, _ = read_all(tmp_path, cfg)
    assert frames[0].image.shape == (67, 100, 3) and frames[0].full_size == (1000, 667)
    assert frames[1].full_size is None                    # not scaled: its size is the frame's
    packet = FramePacket(0, 0, 67, 100, 0.0, None, frames[0].scale, "a.jpg", False, 1000, 667)
    assert FramePacket(**packet.to_dict()).input_size == (1000, 667)
    assert FramePacket(0, 0, 50, 80, 0.0, None, 1.0).input_size == (80, 50)


def test_a_200_megapixel_photo_is_read(tmp_path: Path) -> None:
    """16320x12240, as 200-megapixel phone cameras write: over Pillow's decompression-bomb limit
    (179 million pixels), which only the header reader meets; OpenCV decodes it reduced."""
    pillow_limit = Image.MAX_IMAGE_PIXELS
    path = tmp_path / "IMG_200MP.jpg"
    Image.new("L", (16320, 12240), 90).save(path, quality=50)
    frames, corrupt = read_all(path, SHIPPED)
    assert corrupt == 0 and frames[0].image.shape == (1440, 1920, 3) and frames[0].scale == pytest.approx(8.5)
    assert Image.MAX_IMAGE_PIXELS == pillow_limit                 # lifted for the header only


def test_an_image_too_large_to_decode_is_said_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not 'damaged': too large, by how much, and what to do. A PNG is decoded whole, so it keeps
    Pillow's limit (a 571 KB PNG can hold 196 million pixels: 600 MB decoded)."""
    import streamer.sources.images as images

    png = tmp_path / "big.png"
    Image.new("L", (300, 200)).save(png)
    monkeypatch.setattr(images, "MAX_WHOLE_DECODE_PIXELS", 50_000)
    with pytest.raises(InputError, match=r"cannot read image '.*big\.png': it has 0.06 million pixels, more than the "
                                         r"0.05 million an image that is not a JPEG may have here \(scale it down first\)"):
        open_source(str(png), SHIPPED)
    jpeg = tmp_path / "big.jpg"
    Image.new("L", (300, 200)).save(jpeg)
    assert read_all(jpeg, SHIPPED)[0][0].image.shape == (200, 300, 3)          # a JPEG's limit is its own


@pytest.mark.parametrize("fmt, suffix", [("JPEG", ".jpg"), ("MPO", ".jpg"), ("PNG", ".png"), ("WEBP", ".webp"),
                                         ("TIFF", ".tif")])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_turned_image_size_is_known_from_the_header(tmp_path: Path, fmt: str, suffix: str,
                                                         orientation: int) -> None:
    """OpenCV turns an image by its EXIF orientation; the size known before decoding must be the
    turned one, or the frame is squeezed into the wrong shape. Phones' photos open in Pillow as
    MPO (a JPEG with a second picture), and PNG and WebP carry EXIF too."""
    path = tmp_path / f"portrait{suffix}"
    exif = Image.Exif()
    exif[0x0112] = orientation                # 5-8 turn by 90 degrees: stored 40x20, shown 20x40
    picture = Image.new("RGB", (40, 20), (10, 200, 30))
    extra = {"save_all": True, "append_images": [picture]} if fmt == "MPO" else {}
    picture.save(path, format=fmt, exif=exif, **extra)
    shown = (20, 40) if orientation >= 5 else (40, 20)
    with open_source(str(path), CFG) as src:
        assert (src.info.width, src.info.height) == shown
        (frame,) = list(src.frames())
    assert frame.image.shape == (shown[1], shown[0], 3)


def test_glob_patterns(folder: Path) -> None:
    frames, _ = read_all(folder / "img*.png")
    assert [f.name for f in frames] == ["img1.png", "img2.png", "img10.png"]
    frames, _ = read_all(folder / "img?.*")
    assert [f.name for f in frames] == ["img1.png", "img2.png", "img3.jpg"]
    with open_source(str(folder / "*.jpg"), CFG) as src:
        assert src.info.name == "shots" and src.info.frame_count == 1


def test_a_recursive_patterns_images_keep_their_folders_in_their_names(tmp_path: Path) -> None:
    """Messages name each image; two 'x.png' in different folders must not share a name."""
    for sub, value in (("a", 10), ("b/c", 20)):
        (tmp_path / sub).mkdir(parents=True)
        _png(tmp_path / sub / "x.png", 30, 20, value)
    frames, _ = read_all(f"{tmp_path}/**/x.png")
    assert [f.name for f in frames] == ["a/x.png", "b/c/x.png"]
    frames, _ = read_all(tmp_path / "a")
    assert [f.name for f in frames] == ["x.png"]


def test_what_a_folder_holds_besides_readable_images(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A JPEG named .jfif is read; a GIF is named in a warning rather than silently left out; a
    broken link named .jpg is an unreadable image, counted; macOS's '._' files are no images."""
    d = tmp_path / "mixed"
    d.mkdir()
    cv2.imwrite(str(d / "a.jpg"), np.full((24, 32, 3), 90, np.uint8))
    (d / "b.jfif").write_bytes((d / "a.jpg").read_bytes())
    Image.new("RGB", (32, 24)).save(d / "c.gif")
    (d / "d.jpg").symlink_to(d / "nowhere.jpg")
    (d / "._a.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (d / "labels.json").write_text("{}")
    with caplog.at_level("WARNING"):
        frames, corrupt = read_all(d)
    assert [f.name for f in frames] == ["a.jpg", "b.jfif"] and corrupt == 1
    (tmp_path / "phone").mkdir()
    (tmp_path / "phone" / "a.HEIC").write_bytes(b"")
    with pytest.raises(InputError, match=r"its 1 picture\(s\) are \.heic; convert them to JPEG or PNG"):
        open_source(str(tmp_path / "phone"), CFG)
    assert any("left out 1 picture(s)" in r.message and ".gif" in r.message for r in caplog.records)
    assert any("d.jpg" in r.message for r in caplog.records)
    assert not any("._a.jpg" in r.message or "labels" in r.message for r in caplog.records)


def test_a_renderers_frames_in_a_folder_are_named_not_silently_left_out(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """TGA and EXR (what renderers write) and other pictures not read here are named in a warning;
    PBM, of the PNM family read already, and Sun rasters are read: both decoders take them."""
    d = tmp_path / "renders"
    d.mkdir()
    pixels = np.full((24, 32, 3), 90, np.uint8)
    for name in ("a.png", "c.ras"):
        cv2.imwrite(str(d / name), pixels)
    Image.fromarray(pixels).convert("1").save(d / "b.pbm")
    for name in ("d.tga", "e.pcx"):
        Image.fromarray(pixels).save(d / name)
    (d / "f.exr").write_bytes(b"v/1\x01")               # only its name counts here
    with caplog.at_level("WARNING"):
        frames, corrupt = read_all(d)
    assert [f.name for f in frames] == ["a.png", "b.pbm", "c.ras"] and corrupt == 0
    assert any("left out 3 picture(s)" in r.message and ".exr, .pcx, .tga" in r.message
               for r in caplog.records), caplog.text


def test_a_folder_of_subfolders_says_how_to_read_them(tmp_path: Path) -> None:
    """A folder is read without its subfolders: one holding images only there says which pattern
    reads them, and that pattern does."""
    for sub in ("p1", "p2"):
        (tmp_path / "set" / sub).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "set" / sub / "a.jpg"), np.full((24, 32, 3), 90, np.uint8))
    spec = str(tmp_path / "set")
    with pytest.raises(InputError, match=r"no images in folder .*its 2 subfolder\(s\) hold 2 image\(s\)") as err:
        open_source(spec, CFG)
    pattern = re.search(r"give the pattern (\S+) to read them", str(err.value))
    assert pattern is not None, err.value
    frames, _ = read_all(pattern[1].strip("'"))
    assert [f.name for f in frames] == ["p1/a.jpg", "p2/a.jpg"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError) as err:
        open_source(str(tmp_path / "empty"), CFG)
    assert "subfolder(s)" not in str(err.value)


def test_an_empty_image_among_good_ones_is_said_to_be_empty(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A 0-byte image (a copy that did not finish) is counted and named as empty, not only as
    having a header that does not read."""
    cv2.imwrite(str(tmp_path / "a.jpg"), np.full((24, 32, 3), 90, np.uint8))
    (tmp_path / "b.jpg").write_bytes(b"")
    with caplog.at_level("WARNING"):
        frames, corrupt = read_all(tmp_path)
    assert [f.name for f in frames] == ["a.jpg"] and corrupt == 1
    assert any("b.jpg" in r.message and "empty (0 bytes)" in r.message for r in caplog.records), caplog.text


@pytest.mark.parametrize("broken", [["a.png"], ["a.png", "b.jpg"]])
def test_no_image_decodes_is_an_input_error(tmp_path: Path, broken: list[str]) -> None:
    """Headers that read but pixels that don't: the input gave nothing to track."""
    d = tmp_path / "d"
    d.mkdir()
    for name in broken:
        good = d / f"good{Path(name).suffix}"
        cv2.imwrite(str(good), np.full((24, 32, 3), 90, np.uint8))
        (d / name).write_bytes(good.read_bytes()[:60])
        good.unlink()
    spec = d / broken[0] if len(broken) == 1 else d
    with pytest.raises(InputError, match="(none of the 2 image.s. in .* could|could not) be decoded") as err:
        read_all(spec)
    assert str(spec) in str(err.value)


def test_a_video_whose_every_frame_is_discarded_is_an_input_error(tmp_path: Path) -> None:
    """An MP4 whose edit list shows none of its frames decodes to nothing: an error, not an empty
    track and exit 0. (H.264 at 100,000 fps comes out of the MP4 muxer so: every packet marked to be
    discarded, as checked below.)"""
    path = _noise_clip(tmp_path / "hidden.mp4", "mp4", "libx264", frames=5, rate=100_000, noise=False)
    with av.open(str(path)) as c:
        assert all(p.is_discard for p in c.demux(c.streams.video[0]) if p.size)
    with pytest.raises(InputError, match="gave no frame to track") as err:
        read_all(path)
    assert str(path) in str(err.value)


def test_an_empty_input_and_a_folder_named_by_digits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty argument (an unset "$VIDEO") is refused, not read as the current folder; a folder
    named '2024' here is that folder, not camera 2024."""
    monkeypatch.chdir(tmp_path)
    _png(tmp_path / "stray.png", 30, 20, 1)
    for empty in ("", "  "):
        with pytest.raises(InputError, match="the input is empty"):
            open_source(empty, CFG)
    (tmp_path / "2024").mkdir()
    _png(tmp_path / "2024" / "x.png", 30, 20, 1)
    with open_source("2024", CFG) as src:
        assert isinstance(src, ImageFolderSource)


def test_a_tiff_of_floats_is_read_as_8_bits(tmp_path: Path) -> None:
    """A grey TIFF of 32-bit floats (as scientific and HDR tools write) passes the header check,
    and OpenCV's colour decoding refuses it: it is read as stored and brought to 8 bits."""
    ramp = np.tile(np.linspace(0.0, 1.0, 64, dtype=np.float32), (48, 1))
    Image.fromarray(ramp, mode="F").save(tmp_path / "ramp.tif")
    Image.fromarray(ramp * 255.0, mode="F").save(tmp_path / "ramp255.tif")
    for name in ("ramp.tif", "ramp255.tif"):
        with ImageFolderSource(str(tmp_path / name)) as src:
            (frame,) = list(src.frames())
        assert frame.image.shape == (48, 64, 3) and frame.image.dtype == np.uint8 and src.corrupt == 0
        np.testing.assert_array_equal(frame.image[:, :, 0], frame.image[:, :, 2])
        assert frame.image[0, 0, 0] == 0 and frame.image[0, -1, 0] == 255
        assert abs(int(frame.image[0, 32, 1]) - round(255 * 32 / 63)) <= 1


def test_as_bgr8_takes_what_opencv_decodes_as_stored() -> None:
    from streamer.sources.images import as_bgr8

    grey16 = np.full((4, 5), 0x8180, np.uint16)
    assert (as_bgr8(grey16) == 0x81).all() and as_bgr8(grey16).shape == (4, 5, 3)
    bgra = np.zeros((4, 5, 4), np.uint8)
    bgra[..., 2], bgra[..., 3] = 200, 255
    assert as_bgr8(bgra).shape == (4, 5, 3) and (as_bgr8(bgra)[..., 2] == 200).all()
    odd = np.array([[np.nan, np.inf, -1.0, 300.0]], np.float32)
    assert as_bgr8(odd)[0, :, 0].tolist() == [0, 255, 0, 255]
    highlight = np.tile(np.linspace(0.0, 1.0, 200, dtype=np.float32), (2, 1))
    highlight[0, 0] = 1.01                       # one pixel past 1 leaves the scale as it is
    assert as_bgr8(highlight)[1, -1, 0] == 255 and as_bgr8(highlight)[0, 0, 0] == 255
    dark = np.full((10, 100), 0.5, np.float32)   # a dark picture of 0-255 values, a few bright
    dark[0, :5] = 250.0
    assert as_bgr8(dark)[5, 5, 0] == 1 and as_bgr8(dark)[0, 0, 0] == 250
    assert as_bgr8(None) is None and as_bgr8(np.zeros((2, 2), np.int32)) is None
    assert as_bgr8(np.zeros((2, 2, 2), np.uint8)) is None


def test_a_reopen_repeats_no_start_up_notice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           caplog: pytest.LogCaptureFixture) -> None:
    """A `--loop` restart or a reconnect opens the input again: what was said at start-up (a
    folder named by digits, pictures left out) is not said again at each pass."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "2024").mkdir()
    _png(tmp_path / "2024" / "x.png", 30, 20, 1)
    Image.new("RGB", (32, 24)).save(tmp_path / "2024" / "c.gif")
    with caplog.at_level("WARNING"):
        open_source("2024", CFG).close()
        said = [r.message for r in caplog.records]
        assert any("read as the folder" in m for m in said) and any("left out 1 picture(s)" in m for m in said)
        caplog.clear()
        with open_source("2024", CFG, reopened=True) as src:
            assert [f.name for f in src.frames()] == ["x.png"]
    assert caplog.records == []


def test_single_image(folder: Path) -> None:
    with open_source(str(folder / "img2.png"), CFG) as src:
        assert isinstance(src, ImageFolderSource)
        assert (src.info.name, src.info.frame_count, src.info.width) == ("img2", 1, 50)
        (frame,) = list(src.frames())
    assert frame.name == "img2.png" and frame.image.shape == (20, 50, 3)


@pytest.mark.parametrize("spec, expect", [
    ("{d}/nothing/*.png", "no images match"),
    ("{d}/empty", "no images in folder"),
    ("{d}/missing.png", "no such file"),
    ("{d}/broken.png", "not an image file"),
    ("{d}/zero.jpg", r"is empty \(0 bytes\)"),
    ("{d}/videos", r"no images, but 2 video\(s\); .* give the videos themselves as inputs, which are tracked in turn "
                   r"\(posecast track .*/videos/\*\.MOV .*/videos/\*\.mp4 -o 'tracks/\{name\}\.jsonl'\)"),
    ("{d}/videos/*.mp4", r"no images, but 1 video\(s\); .* \(posecast track .*/videos/\*\.mp4 -o"),
])
def test_bad_image_inputs(tmp_path: Path, spec: str, expect: str) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "a.mp4").write_bytes(b"")
    (tmp_path / "videos" / "b.MOV").write_bytes(b"")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    (tmp_path / "zero.jpg").write_bytes(b"")
    spec = spec.format(d=tmp_path)
    with pytest.raises(InputError, match=expect) as err:
        open_source(spec, CFG)
    assert spec in str(err.value)


def test_a_pattern_that_matches_no_image_says_what_to_check(tmp_path: Path) -> None:
    """Quoting is no fix (a shell passes a pattern that matches nothing on as it is): a missing
    folder, or the case of the extension, is."""
    (tmp_path / "shots").mkdir()
    Image.new("RGB", (32, 24)).save(tmp_path / "shots" / "a.JPG")
    with pytest.raises(InputError) as err:
        open_source(f"{tmp_path}/nothing/*.png", CFG)
    assert str(err.value) == (f"no images match '{tmp_path}/nothing/*.png': there is no folder '{tmp_path}/nothing' "
                              f"(check the path)")
    with pytest.raises(InputError) as err:
        open_source(f"{tmp_path}/shots/*.jpg", CFG)
    assert str(err.value) == (f"no images match '{tmp_path}/shots/*.jpg' (check the folder and the pattern, whose case "
                              f"counts: '*.jpg' leaves out .JPG files; or give the folder '{tmp_path}/shots' to read "
                              f"every image in it)")
    with open_source(str(tmp_path / "shots"), CFG) as src:      # as it says: the folder takes the .JPG
        assert src.info.frame_count == 1
    # A folder is not read recursively: a pattern over several levels is not told to give one.
    with pytest.raises(InputError) as err:
        open_source(f"{tmp_path}/*/*.jpg", CFG)
    assert "check the folder and the pattern" in str(err.value) and "give the folder" not in str(err.value)


@pytest.mark.parametrize("spec, meant", [
    ("rtsp:/cam/live", "did you mean 'rtsp://cam/live'?"),
    ("rtsp:cam/live", "did you mean 'rtsp://cam/live'?"),
    ("http//host/clip.mp4", "did you mean 'http://host/clip.mp4'?"),
    ("RTMP:/host/app", "did you mean 'rtmp://host/app'?"),
    ("rtsp:/user:secret@cam/live", "did you mean 'rtsp://user:***@cam/live'?"),     # no password said again
    ("http:/host/still.jpg", "did you mean 'http://host/still.jpg'?"),              # read as a picture
    ("http:/host/clip.mp4?token=abc", "did you mean 'http://host/clip.mp4?token=***'?"),   # as a pattern ('?')
    ("foo:/x.mp4", "if it is a URL, it needs '//' after 'foo:'; the streams read are rtsp, "),
    ("C:/videos/a.mp4", None),                 # a Windows drive, not a URL
    ("clip:take1.mp4", None),                  # a file name with a colon
])
def test_a_missing_path_that_looks_like_a_mistyped_url_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                spec: str, meant: str | None) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as err:
        open_source(spec, CFG)
    said = str(err.value)
    shown = spec.replace("secret", "***").replace("token=abc", "token=***")   # no password said, even as typed
    assert said.startswith((f"cannot open video '{shown}': no such file", f"cannot open image '{shown}': no such file",
                            f"no images match '{shown}'")), said
    assert "secret" not in said and "abc" not in said, said
    if meant is None:
        assert "URL" not in said and "did you mean" not in said, said
    else:
        assert f"({meant}" in said and said.endswith(")"), said


def _refused_by_pyav(monkeypatch: pytest.MonkeyPatch) -> None:
    """A video file this user may not read (`chmod 000`, which does not hold for root): PyAV's
    open is refused, as it is then."""
    import errno

    import streamer.sources.video_file as video_file

    def refused(path: str, *args, **kwargs):
        raise av.error.PermissionError(errno.EACCES, "Permission denied", path)

    monkeypatch.setattr(video_file.av, "open", refused)


def test_a_video_that_may_not_be_read_says_to_check_its_permissions(clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _refused_by_pyav(monkeypatch)
    with pytest.raises(InputError) as err:
        open_source(str(clip), CFG)
    assert str(err.value) == f"cannot open video '{clip}': Permission denied (check the file's permissions)"


# ------------------------------------------------------------------------------------------------
# cameras (none on this machine: the failure paths)


@pytest.mark.parametrize("spec", ["57", "/dev/video57"])
def test_missing_camera(spec: str) -> None:
    with pytest.raises(InputError) as err:
        open_source(spec, CFG)
    msg = str(err.value)
    assert "camera 57" in msg and "/dev/video57" in msg
    assert "cameras present" in msg or "no cameras found" in msg


def test_camera_spec_dispatch() -> None:
    with pytest.raises(InputError, match="not a camera"):
        CameraSource("front", CFG)


# ------------------------------------------------------------------------------------------------
# network streams


def test_an_unknown_host_or_a_refused_login_says_how_to_fix_it() -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    with pytest.raises(InputError, match=r"the host name 'no-such-host\.invalid' could not be found: check its "
                                         r"spelling, and the network or DNS"):
        open_source("http://no-such-host.invalid/live.ts", CFG)
    with pytest.raises(InputError) as err:                  # a camera's channel 401, refused: not a login
        open_source("rtsp://127.0.0.1:9/Streaming/Channels/401", CFG)
    assert "refused" in str(err.value).lower() and "user name" not in str(err.value)

    class Login(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="cam"')
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Login)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        with pytest.raises(InputError, match=r"give them in the URL, as scheme://USER:PASS@host/"):
            open_source(f"http://127.0.0.1:{port}/video.mjpg", CFG)
        with pytest.raises(InputError, match=r"refused the user name and password in the URL: check them") as err:
            open_source(f"http://bob:wrong@127.0.0.1:{port}/video.mjpg", CFG)
        assert "wrong" not in str(err.value)
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("url", ["rtsp://127.0.0.1:9/x", "http://127.0.0.1:9/x.mp4",
                                 "tcp://127.0.0.1:9"])
def test_refused_connection(url: str) -> None:
    with pytest.raises(InputError) as err:
        open_source(url, CFG)
    assert url in str(err.value) and "refused" in str(err.value).lower()


@pytest.mark.parametrize("url, expect", [
    ("foo://bar/baz", "unsupported URL scheme 'foo'"),
    ("http://[::1/x", "not a valid URL"),
    ("rtsp://127.0.0.1:abc/x", r"not a valid URL \(Port could not be cast"),   # FFmpeg: "Invalid argument"
    ("rtsp://127.0.0.1:99999/x", r"not a valid URL \(Port out of range"),
])
def test_garbage_urls(url: str, expect: str) -> None:
    with pytest.raises(InputError, match=expect.replace("[", r"\[")) as err:
        open_source(url, CFG)
    assert url in str(err.value)


def test_password_is_not_shown() -> None:
    with pytest.raises(InputError) as err:
        open_source("rtsp://admin:hunter2@127.0.0.1:9/live", CFG)
    assert "hunter2" not in str(err.value) and "admin:***@127.0.0.1" in str(err.value)
    with pytest.raises(InputError) as err:
        open_source("http://127.0.0.1:9/live.ts?channel=2&Token=hunter2&key=", CFG)
    assert "hunter2" not in str(err.value) and "live.ts?channel=2&Token=***&key=***" in str(err.value)


@pytest.mark.parametrize("url, shown", [
    ("rtsp://u:p@cam:554/a?x=1", "rtsp://u:***@cam:554/a?x=1"),
    ("https://host/s.m3u8?sig=abc&expires=9&api_key=z", "https://host/s.m3u8?sig=***&expires=9&api_key=***"),
    ("https://host/s.m3u8?tokenized=1&password", "https://host/s.m3u8?tokenized=1&password"),
    ("https://b.s3.amazonaws.com/v.mp4?X-Amz-Credential=c&X-Amz-Signature=s&X-Amz-Security-Token=t",
     "https://b.s3.amazonaws.com/v.mp4?X-Amz-Credential=***&X-Amz-Signature=***&X-Amz-Security-Token=***"),
    ("http://cam/live#authtoken=abc", "http://cam/live#authtoken=***"),
    ("walk.mp4", "walk.mp4"), ("0", "0"), ("/dev/video0", "/dev/video0"),
])
def test_redacted_urls_keep_everything_but_the_secrets(url: str, shown: str) -> None:
    from streamer.sources import redact_url

    assert redact_url(url) == shown


@pytest.fixture()
def silent_server() -> Iterator[int]:
    """A port that accepts connections and never says anything."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(srv.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield srv.getsockname()[1]
    srv.close()
    for c in held:
        c.close()


@pytest.mark.parametrize("scheme", ["http", "rtsp"])
def test_silent_server_times_out(silent_server: int, scheme: str) -> None:
    url = f"{scheme}://127.0.0.1:{silent_server}/live"
    with pytest.raises(InputError, match="no answer within 0.5 s") as err:
        open_source(url, FAST)
    assert url in str(err.value)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A loopback HTTP server on an ephemeral port serving tmp_path/www."""
    root = tmp_path / "www"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_stream_reads_every_frame(clip: Path, reference: dict,
                                       http_root: tuple[Path, str]) -> None:
    root, base = http_root
    (root / "walk.mp4").write_bytes(clip.read_bytes())
    with open_source(f"{base}/walk.mp4", CFG) as src:
        assert isinstance(src, StreamSource)
        # A file over HTTP has a length: read whole, as a file (no frame dropped to keep up).
        assert (src.info.live, src.info.name, src.info.width, src.info.height) == \
            (False, "127.0.0.1", W, H)
        frames = list(src.frames())        # a stream of known length ends without an error
        assert src.corrupt == 0
    assert [f.index for f in frames] == list(range(N))
    assert [frame_no(f) for f in frames] == list(range(N))
    for f in frames:
        np.testing.assert_array_equal(f.image, reference[frame_no(f)])


def test_a_web_page_is_not_taken_for_a_failed_connection(http_root: tuple[Path, str]) -> None:
    # A camera's login page where its stream was meant: the server answered, so it is not a connection.
    root, base = http_root
    (root / "index.html").write_text("<html><body><h1>Camera login</h1></body></html>\n" * 20)
    with pytest.raises(InputError) as err:
        open_source(f"{base}/index.html", CFG)
    assert str(err.value) == (f"cannot read {base}/index.html: the server answered, but not with a video stream "
                              f"(a web page?); check the URL's path")


@contextlib.contextmanager
def _mjpeg_over_http(clip: Path, period_s: float) -> Iterator[str]:
    """An IP camera's MJPEG over HTTP (multipart/x-mixed-replace): `clip`'s frames as JPEGs, one
    every `period_s`, with no length, as the camera sends them: FFmpeg's mpjpeg demuxer has no
    timestamps to read."""
    with VideoFileSource(clip) as src:
        jpegs = [cv2.imencode(".jpg", f.image)[1].tobytes() for f in src.frames()]

    class Mjpeg(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            with contextlib.suppress(OSError):          # the reader may hang up first
                for jpg in jpegs:
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                                     % len(jpg) + jpg + b"\r\n")
                    self.wfile.flush()
                    time.sleep(period_s)
            self.close_connection = True

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Mjpeg)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/video.mjpg"
    finally:
        server.shutdown()
        server.server_close()


def test_an_mjpeg_camera_over_http_is_timed_by_when_its_frames_come(clip: Path) -> None:
    """FFmpeg numbers MJPEG-over-HTTP frames at 25 fps whatever the camera sends: a 10 fps camera's
    t_media ran at 2.5 times the clock's pace, and a .bvh of 17 s of motion lasted 6.6 s. Like a
    camera's, its frames have no media time (t_capture times them) and its rate is unknown."""
    frames: list[Frame] = []
    with _mjpeg_over_http(clip, 0.05) as url, open_source(url, CFG) as src:
        assert src.info.live and src.info.fps is None
        with pytest.raises(InputError, match="ended after|dropped after"):
            for f in src.frames():
                frames.append(f)
    assert len(frames) >= N // 2
    assert all(f.t_media is None for f in frames)


def test_http_not_found(http_root: tuple[Path, str]) -> None:
    _, base = http_root
    with pytest.raises(InputError, match="404") as err:
        open_source(f"{base}/nothing.mp4", CFG)
    assert f"{base}/nothing.mp4" in str(err.value)


def test_stream_dropping_midway_is_an_error(clip: Path) -> None:
    got = 0
    with http_serving_part(clip.read_bytes(), 0.6) as url:
        with open_source(url, FAST) as src, pytest.raises(InputError) as err:
            for _ in src.frames():
                got += 1
    assert 0 < got < N
    assert url in str(err.value) and ("dropped" in str(err.value) or "ended" in str(err.value))


def _ts_segment(path: Path, w: int, h: int, n: int, bgr: tuple[int, int, int]) -> bytes:
    with av.open(str(path), "w", format="mpegts") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for i in range(n):
            f = av.VideoFrame.from_ndarray(np.full((h, w, 3), bgr, np.uint8), format="bgr24")
            f.pts = i
            c.mux(s.encode(f))
        c.mux(s.encode(None))
    return path.read_bytes()


def test_mid_stream_resolution_change_keeps_the_frame_size(tmp_path: Path, caplog) -> None:
    # Two MPEG-TS segments back to back, the second at a lower resolution: what a broadcast or
    # an adaptive stream does. Frames keep info's size so downstream buffers stay valid.
    a = _ts_segment(tmp_path / "a.ts", 160, 120, 6, (0, 0, 200))
    b = _ts_segment(tmp_path / "b.ts", 96, 64, 6, (0, 200, 0))
    (tmp_path / "ab.ts").write_bytes(a + b)
    with caplog.at_level("WARNING"):
        frames, corrupt = read_all(tmp_path / "ab.ts")
    resized = [r for r in caplog.records if "changed size mid-stream (160x120 to 96x64)" in r.getMessage()]
    assert len(resized) == 1                   # said once, not for every frame
    assert all(f.image.shape == (120, 160, 3) for f in frames)
    green = [f for f in frames if f.image[60, 80, 1] > 150 and f.image[60, 80, 2] < 50]
    assert len(green) >= 5                     # the second segment came through, scaled up
    assert len(frames) + corrupt == 12         # (the join itself may cost a frame: counted)


def test_a_named_pipe_is_read_as_a_video_file(tmp_path: Path) -> None:
    # `mkfifo p.ts; ffmpeg ... -f mpegts p.ts`: a pipe has no size, so it is not "empty".
    data = _ts_segment(tmp_path / "a.ts", 160, 120, 8, (0, 0, 200))
    fifo = tmp_path / "pipe.ts"
    os.mkfifo(fifo)

    def feed() -> None:
        with open(fifo, "wb") as f:
            f.write(data)

    threading.Thread(target=feed, daemon=True).start()
    with open_source(str(fifo), FAST) as src:
        assert isinstance(src, VideoFileSource) and not src.info.live and not src.info.stills
        frames = list(src.frames())
    assert len(frames) + src.corrupt == 8 and len(frames) >= 7


def _with_index_at_end(tmp_path: Path) -> bytes:
    """A clip as most cameras and encoders write MP4, the index (moov) after the frames, and
    larger than what FFmpeg keeps to seek back in (32 KB)."""
    src, dst = write_clip(tmp_path / "start.mp4", 320, 240, 90, fps=30.0), tmp_path / "end.mp4"
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    data = dst.read_bytes()
    assert data.index(b"mdat") < data.index(b"moov") and len(data) > 64_000
    return data


def test_an_mp4_with_its_index_at_the_end_through_a_pipe_says_why(tmp_path: Path) -> None:
    """Read as it arrives, such a file gives no frame: said as that, with the fix, not only as
    'the file is damaged'."""
    data = _with_index_at_end(tmp_path)
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)

    def feed() -> None:
        with contextlib.suppress(BrokenPipeError), open(fifo, "wb") as f:
            f.write(data)

    threading.Thread(target=feed, daemon=True).start()
    with pytest.raises(InputError) as err:
        read_all(fifo, FAST)
    assert "whose index (the 'moov' box) comes after its frames, which cannot be read as it arrives" in str(err.value)
    assert "-movflags +faststart" in str(err.value)


def test_an_mp4_with_its_index_at_the_end_from_a_server_without_ranges_says_why(tmp_path: Path) -> None:
    data = _with_index_at_end(tmp_path)
    with http_serving_part(data, 1.0) as url, pytest.raises(InputError) as err:
        read_all(url, FAST)
    message = str(err.value)
    assert message.startswith(f"{url} gave no frame: ") and "\n" not in message
    assert "if it is an MP4 or MOV file whose index (the 'moov' box) comes after its frames, it can only be read " \
           "from a server that takes range requests" in message and "+faststart" in message


def test_an_mpegts_file_served_with_its_length_is_a_file(tmp_path: Path) -> None:
    """An ordinary web server sends a .ts with its length but takes no range requests, so FFmpeg
    finds no duration: the length says it is a file all the same, read whole, none dropped; cut
    short, it is a dropped connection."""
    clip = write_clip(tmp_path / "c.mp4", 320, 240, 90, fps=30.0)
    data = as_mpegts(clip, tmp_path / "c.ts")
    with http_serving_part(data, 1.0) as url, open_source(url, FAST) as src:
        assert not src.info.live
        frames = list(src.frames())
    assert len(frames) + src.corrupt == 90 and len(frames) >= 88
    with http_serving_part(data, 0.5) as url, pytest.raises(InputError, match="dropped after") as err:
        read_all(url, FAST)
    # `posecast run` reconnects a live stream, not a recording: the line says which this was.
    assert "a stream with a length is read as a recording, which is not reconnected" in str(err.value)


def test_odd_images_among_good_ones_never_stop_a_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A 4000x1 strip (OpenCV's reduced decode would resize it to nothing), a name whose bytes are
    # not UTF-8, and an image whose decoder raises rather than returning None.
    _png(tmp_path / "a.png", 64, 48, 10)
    cv2.imwrite(str(tmp_path / "strip.png"), np.full((1, 4000, 3), 100, np.uint8))
    _png(tmp_path / "c.png", 64, 48, 30)
    os.rename(tmp_path / "c.png", os.fsencode(tmp_path) + b"/lat\xe9.png")
    _png(tmp_path / "z.png", 64, 48, 40)
    real_decode = cv2.imdecode

    def raising(data: np.ndarray, flags: int) -> np.ndarray:
        image = real_decode(data, flags)
        if image is not None and int(image[0, 0, 0]) == 40:
            raise cv2.error("the decoder gave up")
        return image

    monkeypatch.setattr(cv2, "imdecode", raising)
    frames, corrupt = read_all(tmp_path)
    assert [f.name for f in frames] == ["a.png", "lat\\xe9.png", "strip.png"]
    assert frames[2].image.shape == (1, 1920, 3)                 # scaled to fit, not refused
    assert corrupt == 1
    for f in frames:
        f.name.encode("utf-8")                               # a lone surrogate would raise here


def test_a_recursive_pattern_takes_each_image_once_through_linked_folders(tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    _png(tmp_path / "a.png", 30, 20, 10)
    (tmp_path / "sub").mkdir()
    _png(tmp_path / "sub" / "b.png", 30, 20, 20)
    (tmp_path / "self").symlink_to(".")                         # a loop: self/self/self/...
    frames, _ = read_all(f"{tmp_path}/**/*.png")
    assert [f.name for f in frames] == ["a.png", "sub/b.png"]
    assert "through links; each is tracked once" in caplog.text


def test_a_source_name_that_is_not_utf8_is_sent_escaped(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.mp4", W, H, 3, fps=30.0)
    odd = os.fsencode(tmp_path) + b"/lat\xe9.mp4"
    os.rename(clip, odd)
    with open_source(os.fsdecode(odd), CFG) as src:
        assert src.info.name == "lat\\xe9"
        assert src.info.uri.endswith("/lat\\xe9.mp4")


def test_many_skipped_images_are_counted_after_the_first_ten_are_named(tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    _png(tmp_path / "good.png", 30, 20, 10)
    for i in range(14):
        (tmp_path / f"bad{i:02d}.png").write_bytes(b"\x89PNG not really")
    frames, corrupt = read_all(tmp_path)
    assert len(frames) == 1 and corrupt == 14
    named = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped image")]
    assert len(named) == 10
    assert "14 images skipped in all; the first 10 are named above" in caplog.text


def test_a_scaled_images_joints_map_back_by_each_side_of_its_own() -> None:
    from streamer.packets import FramePacket

    packet = FramePacket(0, 0, 67, 100, 0.0, None, 10.0, "a.jpg", False, 1000, 667)
    assert np.allclose(packet.pixel_scale, [10.0, 667 / 67])
    # The bottom-right corner of the fitted picture is the file's own corner.
    assert np.allclose(np.array([100.0, 67.0]) * packet.pixel_scale, [1000.0, 667.0])
    assert np.allclose(FramePacket(0, 0, 50, 80, 0.0, None, 1.0).pixel_scale, [1.0, 1.0])


def test_an_unscaled_frame_s_joints_stay_as_the_network_gave_them() -> None:
    """A float64 scale made the joints float64, and the next crop, cut around them, moved by
    rounding: vtest.avi's track differed from the one before the scale became (2,) in every frame."""
    from streamer.packets import FramePacket
    from tests.test_tracking import SquareNet, frame, tracker

    packet = FramePacket(0, 0, 240, 320, 0.0, None, 1.0)
    assert packet.pixel_scale.dtype == np.float32
    images = [frame((150.0, 110.0)), frame((152.0, 111.0))]
    by_packet = tracker(SquareNet()).process(images, [packet.pixel_scale] * 2)
    by_one = tracker(SquareNet()).process(images, [1.0, 1.0])
    for a, b in zip(by_packet, by_one):
        assert a.joints_2d.dtype == b.joints_2d.dtype == np.float32
        np.testing.assert_array_equal(a.joints_2d, b.joints_2d)


def test_an_image_of_another_size_starts_a_shot(tmp_path: Path) -> None:
    # A folder of a video's frames (tracking.folder_images: sequence) carries the tracked region
    # from image to image; one of another size is no frame of the same video.
    for i, (w, h) in enumerate([(64, 48)] * 3 + [(48, 64)] * 2):
        _png(tmp_path / f"f{i}.png", w, h, 10 * i)
    frames, _ = read_all(tmp_path)
    assert [f.new_shot for f in frames] == [False, False, False, True, False]


def test_a_raw_h264_stream_has_the_rate_its_bitstream_states(tmp_path: Path) -> None:
    """A raw `.h264` stream carries no timestamps, and FFmpeg's demuxer states 25 fps for any: the
    rate is the one in its bitstream (30), as players and ffprobe give it."""
    raw = _noise_clip(tmp_path / "clip.h264", "h264", "libx264", frames=20, noise=False)
    with av.open(str(raw)) as c:
        assert float(c.streams.video[0].average_rate) == 25.0       # the demuxer's default
    with open_source(str(raw), CFG) as src:
        assert src.info.fps == 30.0
        assert len(list(src.frames())) == 20


def test_source_kind_names_every_kind_of_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`source_kind`, which `open_source` opens by and the CLI reads to tell which refiner a run
    uses: a file named like a camera number is a file, a missing picture is still a picture."""
    from streamer.sources import source_kind

    monkeypatch.chdir(tmp_path)
    (tmp_path / "shots").mkdir()
    (tmp_path / "7").write_bytes(b"")                       # a file named like a camera
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "walk.mp4").write_bytes(b"")
    expected = {"0": "camera", "/dev/video2": "camera", "7": "file", "rtsp://host/x": "stream",
                "http://host/a.mp4": "stream", "shots": "images", "a.png": "images", "*.jpg": "images",
                "missing.png": "images", "walk.mp4": "file", "missing.mp4": "file"}
    assert {spec: source_kind(spec) for spec in expected} == expected


def _unreadable_to_this_user(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """`chmod 000 NAME`, which does not hold for root: opening the file is refused."""
    import builtins
    import errno

    real_open = builtins.open

    def refusing_open(file, *args, **kwargs):
        if Path(str(file)).name == name:
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refusing_open)


def test_an_image_that_may_not_be_read_is_said_so_not_called_damaged(folder: Path, monkeypatch: pytest.MonkeyPatch,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    _unreadable_to_this_user(monkeypatch, "img2.png")
    with caplog.at_level("WARNING"):
        frames, corrupt = read_all(folder)
    assert [f.name for f in frames] == ["img1.png", "img3.jpg", "img10.png"] and corrupt == 1
    said = [r.getMessage() for r in caplog.records if "img2.png" in r.getMessage()]
    assert said == [f"skipped image '{folder / 'img2.png'}': cannot open it: Permission denied"], said
    with pytest.raises(InputError, match=r"cannot open image '.*img2\.png': Permission denied \(check the file's "
                                         r"permissions\)"):
        open_source(str(folder / "img2.png"), CFG)
