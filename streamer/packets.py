"""What travels between stages: small msgpack maps, never pixels.

Arrays ride as raw float32 bytes (their shapes are fixed by the model's metadata). Every frame
packet keeps `seq`, `t_capture`, the ring slot and the frame size, so any stage can say how old
its frame is and where its pixels are.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import msgpack
import numpy as np

from streamer.protocol import END_FAILED, END_OF_INPUT, END_STOPPED

START, FRAME, RESULT, END = "start", "frame", "result", "end"
# msgpack's packer starts with a 256 KiB buffer, made afresh for every message: four a frame. A
# packet is at most a few KiB, and the buffer grows where one is larger.
PACK_BUFFER_BYTES = 4096


def pack(kind: str, body: dict[str, Any]) -> bytes:
    return msgpack.packb({"k": kind, **body}, use_bin_type=True, buf_size=PACK_BUFFER_BYTES)


def unpack(data: bytes) -> tuple[str, dict[str, Any]]:
    msg = msgpack.unpackb(data, raw=False)
    return msg.pop("k"), msg


def array_bytes(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a, dtype=np.float32).tobytes()


def bytes_array(b: bytes, shape: tuple[int, ...]) -> np.ndarray:
    return np.frombuffer(b, dtype=np.float32).reshape(shape)


@dataclass
class FramePacket:
    """A frame in the ring."""

    seq: int
    slot: int
    height: int
    width: int
    t_capture: float
    t_media: float | None
    scale: float                       # input-image pixels per ring pixel (1 unless downscaled)
    image: str | None = None           # the image file's name (image folders), else None
    new_shot: bool = False             # starts a new shot whatever the picture (a looped file's restart)
    full_width: int = 0                # the input image's own size, where it was scaled down; else 0
    full_height: int = 0

    def to_dict(self) -> dict[str, Any]:
        # Its fields are scalars: a shallow copy (asdict's deep one costs ten times as much, three
        # times a frame).
        return dict(vars(self))

    @property
    def input_size(self) -> tuple[int, int]:
        """(width, height) of the input image, before any scaling down."""
        if self.full_width:
            return self.full_width, self.full_height
        return round(self.width * self.scale), round(self.height * self.scale)

    @property
    def pixel_scale(self) -> np.ndarray:
        """(2,) input-image pixels per ring pixel across and down: a scaled-down image's two sides
        were rounded apart (1000x667 fitted to 100x67 is 10 across but 9.96 down). float32, as the
        joints it scales are: float64 would make them float64, and the tracker's next crop, cut
        around them, would move by rounding (vtest.avi's track differed in every frame)."""
        if self.full_width:
            return np.array([self.full_width / self.width, self.full_height / self.height], np.float32)
        return np.array([self.scale, self.scale], np.float32)


@dataclass
class ResultPacket:
    """The network's result for one frame, decoded to image pixels (infer -> align -> output)."""

    frame: FramePacket
    found: bool
    score: float
    joints_2d: np.ndarray              # (J, 2) input-image pixels
    conf: np.ndarray                   # (J,)
    offsets_3d: np.ndarray             # (R, J, 3) metres, in the model's offsets_frame
    joints_3d: np.ndarray | None = None  # (J, 3) metres, origin-relative, set by the align stage
    root_3d: np.ndarray | None = None    # (3,) metres, the origin joint from the camera, set by the align stage
    track: int = -1                    # the tracker's track number (streamer/tracking.py); -1 with nobody found

    def to_dict(self) -> dict[str, Any]:
        return {
            "frame": self.frame.to_dict(),
            "found": self.found,
            "score": self.score,
            "joints_2d": array_bytes(self.joints_2d),
            "conf": array_bytes(self.conf),
            "offsets_3d": array_bytes(self.offsets_3d),
            "joints_3d": None if self.joints_3d is None else array_bytes(self.joints_3d),
            "root_3d": None if self.root_3d is None else array_bytes(self.root_3d),
            "track": self.track,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], num_joints: int, num_roots: int) -> "ResultPacket":
        j3 = d.get("joints_3d")
        root = d.get("root_3d")
        return cls(
            frame=FramePacket(**d["frame"]),
            found=d["found"],
            score=d["score"],
            joints_2d=bytes_array(d["joints_2d"], (num_joints, 2)),
            conf=bytes_array(d["conf"], (num_joints,)),
            offsets_3d=bytes_array(d["offsets_3d"], (num_roots, num_joints, 3)),
            joints_3d=None if j3 is None else bytes_array(j3, (num_joints, 3)),
            root_3d=None if root is None else bytes_array(root, (3,)),
            track=int(d.get("track", -1)),
        )


@dataclass(frozen=True)
class StepStats:
    """Milliseconds one step took a frame over a run (the most recent samples: `StageTimer`)."""

    n: int
    mean: float
    p50: float
    p95: float


StageTimings = dict[str, StepStats]          # step name -> its milliseconds


# The end's reason where the inference or the align stage failed: it ends the input itself, so
# that the frames already past it are written before the run reports the fault.
INFERENCE_FAILED = "inference failed"
ALIGN_FAILED = "alignment failed"
# The reasons for which the input did not end as it should have (the overlay says nothing more).
FAILED_ENDS = ("source failed", INFERENCE_FAILED, ALIGN_FAILED, "stopped", "aborted")


def published_end_reason(reason: str) -> str:
    """The end message's reason (`protocol.END_REASONS`) for an end packet's: subscribers are
    told whether the input ended, a user stopped it, or something failed (the run's error line
    says what)."""
    return {"end of input": END_OF_INPUT, "stopped": END_STOPPED}.get(reason, END_FAILED)


@dataclass
class EndPacket:
    """The end of the input, flowing down the chain: the capture's counts, then what each later
    stage adds (its timings; the infer stage its network and tracker counts)."""

    reason: str                        # "end of input", "stopped", "source failed", ...
    frames: int                        # frames the capture admitted
    dropped: int = 0                   # stale live frames dropped on purpose
    corrupt: int = 0                   # corrupt packets or images skipped
    reconnects: int = 0                # times a live source was reopened
    timings: dict[str, StageTimings] = field(default_factory=dict)   # stage -> step -> stats
    network_runs: int = 0              # network calls, searches included
    searches: int = 0                  # full-frame searches
    switches: int = 0                  # searches that took over from the track
    tracks: int = 0                    # person ids given
    shot_cuts: int = 0                 # cuts between shots found

    @property
    def capture_counted(self) -> bool:
        """Whether the capture's counts (dropped, corrupt, reconnects) came with it: not where a
        later stage failed and ended the input itself."""
        return self.reason not in (INFERENCE_FAILED, ALIGN_FAILED)

    @property
    def tracker_counted(self) -> bool:
        """Whether the inference stage's counts (network runs, searches, tracks, shot cuts) came
        with it: not where the align stage failed and ended the input itself."""
        return self.reason != ALIGN_FAILED

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EndPacket":
        timings = {stage: {step: StepStats(**stats) for step, stats in steps.items()}
                   for stage, steps in d.get("timings", {}).items()}
        return cls(**{**d, "timings": timings})


@dataclass
class RunSummary:
    """What the output stage reports once it has written the last frame."""

    frames: int                        # frames written (every admitted frame, unless a stage failed)
    found: int                         # frames with a person
    seconds: float                     # from the capture's first read to the last frame written
    live: bool
    end: EndPacket                     # the chain's counts and every stage's timings

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("nan")
