"""The wire protocol: the messages the pipeline emits, one source of truth.

A track file (`.jsonl`) is a recording of exactly these messages: a `meta` message, then one
`pose` message per input frame. The ZeroMQ publisher sends the same dictionaries, msgpack- or
JSON-encoded. `docs/protocol.md` documents them for client writers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engines.skeleton import Skeleton
from streamer.axes import axes_meta, axes_spec

SCHEMA_VERSION = 1
# Topics: each message is [topic, payload], the topic the kind followed by the source's name
# ("pose.cam0"), so that a subscriber picks a kind, or one source, by prefix.
POSE_TOPIC = "pose."
META_TOPIC = "meta."
END_TOPIC = "end."
# Why a publisher ended its stream (an end message's `reason`).
END_OF_INPUT = "end_of_input"     # the file, the replay or the image folder was read to its end
END_STOPPED = "stopped"           # a user stopped it: Ctrl-C, a signal, the preview window closed
END_FAILED = "failed"             # a stage or the source failed (the publisher's own error line says why)
END_REASONS = (END_OF_INPUT, END_STOPPED, END_FAILED)


def topic(prefix: str, source: str = "") -> bytes:
    return f"{prefix}{source}".encode()

# Camera frame of the 3D joints: what the model predicts, before any consumer-axis conversion.
CAMERA_AXES = axes_meta(axes_spec("camera"))


@dataclass
class PersonPose:
    """One person in one frame, in the units of the protocol."""

    id: int
    score: float
    bbox: tuple[float, float, float, float]       # x0, y0, x1, y1 in pixels of the input image
    joints_3d: np.ndarray                         # (J, 3) metres, camera axes, relative to the origin joint
    joints_2d: np.ndarray                         # (J, 2) pixels of the input image
    conf: np.ndarray                              # (J,) in [0, 1]
    root_3d: np.ndarray | None = None             # (3,) the origin joint's position from the camera, same axes


@dataclass
class PoseFrame:
    """The pipeline's result for one input frame (an empty `people` when nobody was found)."""

    seq: int
    t_capture: float
    t_media: float | None
    image_size: tuple[int, int]                   # width, height of the input image
    people: list[PersonPose] = field(default_factory=list)
    # The image file's name, for an image folder: `seq` counts the frames read, so after a
    # skipped (unreadable) image this is what says which file a message describes.
    image: str | None = None


def meta_message(skeleton: Skeleton, source: str, image_size: tuple[int, int],
                 fps: float | None, model: dict[str, Any], axes: dict[str, str] | None = None,
                 camera: dict[str, Any] | None = None) -> dict[str, Any]:
    """Describes the stream: skeleton, units, axes, the camera model, the source and the model."""
    return {
        "type": "meta",
        "schema": SCHEMA_VERSION,
        "source": source,
        "image_size": [int(image_size[0]), int(image_size[1])],
        "fps": fps,
        "skeleton": skeleton.name,
        "joint_names": list(skeleton.joint_names),
        "parents": list(skeleton.parents),
        "origin": skeleton.origin,
        "units": {"joints_3d": (axes or {}).get("units", "m"), "joints_2d": "px", "t_capture": "s (unix time)"},
        "axes": dict(axes) if axes is not None else dict(CAMERA_AXES),
        "camera": camera,
        "model": model,
    }


def end_message(source: str, reason: str, poses: int, last_seq: int | None) -> dict[str, Any]:
    """The publisher's last message: why its stream ended, and how many pose messages it sent in
    its last run (since its last meta), the last with `seq` `last_seq` (None: none sent). A
    subscriber that has seen fewer lost the rest; `seq` alone cannot show a loss at the end."""
    if reason not in END_REASONS:
        raise ValueError(f"an end message's reason is one of {END_REASONS}, not {reason!r}")
    return {"type": "end", "schema": SCHEMA_VERSION, "source": source, "reason": reason,
            "poses": int(poses), "last_seq": None if last_seq is None else int(last_seq)}


def person_dict(person: PersonPose) -> dict[str, Any]:
    return {
        "id": int(person.id),
        "score": round(float(person.score), 4),
        "bbox": [round(float(v), 2) for v in person.bbox],
        "joints_3d": np.round(person.joints_3d.astype(np.float64), 4).tolist(),
        "joints_2d": np.round(person.joints_2d.astype(np.float64), 2).tolist(),
        "conf": np.round(person.conf.astype(np.float64), 4).tolist(),
        **({} if person.root_3d is None else {"root_3d": np.round(person.root_3d.astype(np.float64), 4).tolist()}),
    }


def pose_message(frame: PoseFrame, t_publish: float | None = None) -> dict[str, Any]:
    """One frame's result. `t_publish` is added by the publisher; track files leave it out."""
    msg: dict[str, Any] = {
        "type": "pose",
        "schema": SCHEMA_VERSION,
        "seq": int(frame.seq),
        "t_capture": round(float(frame.t_capture), 6),
        "t_media": None if frame.t_media is None else round(float(frame.t_media), 6),
        "image_size": [int(frame.image_size[0]), int(frame.image_size[1])],
        "people": [person_dict(p) for p in frame.people],
    }
    if frame.image is not None:
        msg["image"] = str(frame.image)
    if t_publish is not None:
        msg["t_publish"] = round(float(t_publish), 6)
    return msg


def frame_from_message(msg: dict[str, Any]) -> PoseFrame:
    """A received or recorded pose message back as a PoseFrame (the inverse of `pose_message`)."""
    people = [
        PersonPose(
            id=int(p["id"]), score=float(p["score"]), bbox=tuple(p["bbox"]),
            joints_3d=np.asarray(p["joints_3d"], dtype=np.float32),
            joints_2d=np.asarray(p["joints_2d"], dtype=np.float32),
            conf=np.asarray(p["conf"], dtype=np.float32),
            root_3d=None if p.get("root_3d") is None else np.asarray(p["root_3d"], dtype=np.float32),
        )
        for p in msg.get("people", [])
    ]
    size = msg.get("image_size") or [0, 0]
    image = msg.get("image")
    return PoseFrame(int(msg["seq"]), float(msg["t_capture"]), msg.get("t_media"), (int(size[0]), int(size[1])), people,
                     None if image is None else str(image))
