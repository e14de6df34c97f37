"""The pipeline's configuration (`configs/pipeline.yaml`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from engines.align import Method as AlignMethod
from engines.backends.base import BackendName, Precision
from engines.config import check_range, load_config
from engines.skeleton import H36M17
from streamer.axes import AxesName
from streamer.filters import FilterConfig
# The most frames per network call, and CPU threads for the network, any command accepts: more
# threads than this only fight over the cores (and a typo like 10000 would start them all).
MAX_BATCH_SIZE = 256
MAX_THREADS = 256
MAX_PRINCIPAL_PX = 100_000  # a principal point farther off than this is a typo, not a crop
MAX_SLOTS = 1024          # frames a ring may hold: 3.4 GB of shared memory at 1080p
MAX_PORT = 65535          # TCP's last port; ZeroMQ would take a larger one modulo 65536 (99999 is 34463)


@dataclass(frozen=True)
class InferenceConfig:
    backend: Literal["auto", BackendName]          # a Literal within a Literal: one flat set of choices
    batch_size: int           # file sources: frames per network call
    threads: int              # CPU threads for the network (0: the runtime's default)
    precision: Precision
    device: Literal["auto", "cpu", "cuda"]
    calibration: str | None   # TensorRT int8: a video or image folder of typical scenes

    def check(self) -> None:
        check_range("batch_size", self.batch_size, 1, MAX_BATCH_SIZE)
        check_range("threads", self.threads, 0, MAX_THREADS, " (0: the runtime's default)")


@dataclass(frozen=True)
class TrackingConfig:
    detect_min_score: float   # full-frame search: mean joint confidence that counts as a person
    track_min_score: float    # below this the person is lost and searched for again
    roi_margin: float         # region of interest side = margin x the 2D pose's extent
    min_roi_px: int           # smallest region of interest, pixels of the input image
    search_tiles: int         # a search also looks at n x n overlapping tiles (1: the full frame only)
    research_every: int       # frames between full-frame searches run beside tracking (0: never)
    switch_margin: float      # such a search takes over when its score beats the track's by this
    # A weaker search candidate (from this score up to detect_min_score) is looked at in a crop
    # around it, and counts as a person where that crop reaches detect_min_score.
    refine_min_score: float
    # Where the next region of interest is centred across the image: "torso" on the torso joints
    # (the skeleton's `torso`), "box" on the middle of the 2D joints' extent.
    roi_centre: Literal["torso", "box"]
    # Where a full-frame search gives a person whose 2D box overlaps the last frame's by less than
    # this (intersection over union), a new track starts: a new person id, and the temporal
    # filters start afresh. 0: a track ends only at a frame with nobody found.
    new_track_iou: float
    # A periodic search that takes over from a track still found continues it only where its person's
    # 2D box overlaps the last one's by this much; elsewhere a new track starts. 0: it always continues.
    takeover_min_iou: float
    # An image folder's images: "shots" (unrelated photos: each searched for afresh, its own track)
    # or "sequence" (a video's frames: the region carries from one image to the next).
    folder_images: Literal["shots", "sequence"]
    # A video's hard cut between shots (streamer/shot_cuts.py): a frame whose 32 x 32 thumbnail
    # differs from the last one's by a mean over shot_cut_diff grey levels and over shot_cut_ratio
    # times the recent frames' differences is searched afresh and starts a track. 0: off.
    shot_cut_diff: float
    shot_cut_ratio: float

    def check(self) -> None:
        for name in ("detect_min_score", "track_min_score", "refine_min_score"):
            check_range(name, getattr(self, name), 0.0, 1.0)
        check_range("search_tiles", self.search_tiles, 1, 4)
        if self.research_every < 0:
            raise ValueError(f"research_every must be >= 0 (got {self.research_every})")
        check_range("switch_margin", self.switch_margin, 0.0, 1.0)
        if not 0.0 <= self.shot_cut_diff <= 255.0:
            raise ValueError(f"shot_cut_diff must be between 0 (off) and 255 (got {self.shot_cut_diff})")
        if self.shot_cut_ratio < 1.0:
            raise ValueError(f"shot_cut_ratio must be >= 1 (got {self.shot_cut_ratio})")
        for name in ("new_track_iou", "takeover_min_iou"):
            check_range(name, getattr(self, name), 0.0, 1.0)
        # A region 8 times the person's extent already shrinks them to an eighth of the crop.
        check_range("roi_margin", self.roi_margin, 1.0, 8.0)
        check_range("min_roi_px", self.min_roi_px, 16, 8192, " pixels")


@dataclass(frozen=True)
class AlignmentConfig:
    method: AlignMethod
    window: int               # 2D decoding: expectation over +-window 8-pixel cells of the crop around the peak

    def check(self) -> None:
        check_range("window", self.window, 0, 4)


@dataclass(frozen=True)
class RingConfig:
    file_slots: int           # frames in flight for file sources (>= 2 batches keeps inference fed)
    live_slots: int           # frames in flight for live sources: small, so latency stays low

    def check(self) -> None:
        for name in ("file_slots", "live_slots"):
            check_range(name, getattr(self, name), 2, MAX_SLOTS, " frames")


@dataclass(frozen=True)
class SourceConfig:
    open_timeout_s: float     # network streams: give up connecting after this long
    read_timeout_s: float     # network streams and cameras: a read that takes longer is a fault
    max_image_side: int       # image folders: larger images are scaled down to this side
    reconnect: bool           # live sources: reopen a camera or stream that drops (posecast run: on)
    reconnect_max_s: float    # longest wait between reopening attempts (they back off up to it)
    loop: bool                # posecast run on a file: start again at its end, forever

    def check(self) -> None:
        for name in ("open_timeout_s", "read_timeout_s", "reconnect_max_s"):
            check_range(name, getattr(self, name), 0.01, 3600.0, " s")
        check_range("max_image_side", self.max_image_side, 64, 16384, " pixels")


@dataclass(frozen=True)
class CoordinatesConfig:
    axes: AxesName
    focal_px: float | None    # the camera's focal length in pixels; None: assumed from hfov_deg
    hfov_deg: float           # horizontal field of view assumed when focal_px is unknown
    # Where the optical axis meets the image, in pixels; None: the image centre. A frame cut
    # off-centre from a larger one (a cropped or zoomed stream) has it elsewhere.
    principal_px: tuple[float, float] | None
    # root_3d's depth is solved from the joints inside the image where at least this many are
    # (the ones outside are guesses; 0: from every joint).
    root_min_joints_in_view: int

    def check(self) -> None:
        check_range("root_min_joints_in_view", self.root_min_joints_in_view, 0, H36M17.num_joints, " joints")
        if self.focal_px is not None:
            check_range("focal_px", self.focal_px, 1.0, 1_000_000, " pixels")
        if self.principal_px is not None and not all(abs(v) <= MAX_PRINCIPAL_PX for v in self.principal_px):
            raise ValueError(f"principal_px must be two numbers of pixels within {MAX_PRINCIPAL_PX:g} of the image's "
                             f"corner (got {list(self.principal_px)})")
        check_range("hfov_deg", self.hfov_deg, 10.0, 170.0)


@dataclass(frozen=True)
class PublishConfig:
    enabled: bool             # `posecast run` publishes; `posecast track` only with --publish
    bind: str                 # interface to listen on: 127.0.0.1 (this machine), 0.0.0.0 (all)
    port: int
    encoding: Literal["msgpack", "json"]
    hwm: int                  # messages queued per subscriber before a slow one loses messages
    meta_interval_s: float    # meta is also re-sent this often (and to every new subscriber)
    wait_subscribers: int = 0  # hold the first frame until this many subscribers read the poses

    def check(self) -> None:
        # Checked here, not first by ZeroMQ when publishing: a bad value in a --config file is then
        # named by its key, and also where this command does not publish.
        if not self.bind or any(c.isspace() for c in self.bind):
            raise ValueError(f"bind must be an interface's address or name without spaces, such as 127.0.0.1 "
                             f"(this machine) or 0.0.0.0 (all) (got {self.bind!r})")
        if not 0 <= self.port <= MAX_PORT:
            raise ValueError(f"port must be between 1 and {MAX_PORT}, or 0 for any free port (got {self.port})")
        check_range("hwm", self.hwm, 1, 1_000_000, " messages")
        check_range("meta_interval_s", self.meta_interval_s, 0.01, 3600.0, " s")
        check_range("wait_subscribers", self.wait_subscribers, 0, 1000, " subscribers")

    @property
    def endpoint(self) -> str:
        return f"tcp://{self.bind}:{self.port or '*'}"


@dataclass(frozen=True)
class PipelineConfig:
    inference: InferenceConfig
    tracking: TrackingConfig
    alignment: AlignmentConfig
    filter: FilterConfig
    coordinates: CoordinatesConfig
    ring: RingConfig
    source: SourceConfig
    publish: PublishConfig

    def check(self) -> None:
        if self.ring.file_slots < self.inference.batch_size + 1:
            raise ValueError(
                f"ring.file_slots ({self.ring.file_slots}) must exceed inference.batch_size "
                f"({self.inference.batch_size}): a batch of at most {self.ring.file_slots - 1} (--batch-size), "
                f"or more ring.file_slots in a --config file"
            )


def load_pipeline_config(user_file: str | Path | None = None,
                         overrides: dict[str, Any] | None = None) -> PipelineConfig:
    return load_config(PipelineConfig, "pipeline.yaml", user_file, overrides)
