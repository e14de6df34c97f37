"""Whether a message is one of the protocol's (docs/protocol.md), and why not.

Anyone may publish on the port a subscriber connects to: another program, or an older or newer
Posecast. `listen` skips what it cannot use, counted, instead of failing on it; `replay` refuses a
track line that is not usable before it publishes anything.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from streamer.protocol import END_REASONS, SCHEMA_VERSION, PersonPose, frame_from_message
from streamer.publish import decode


class NotPosecast(ValueError):
    """A received message that is not one of the protocol's. `str()` says why, for the user."""


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _meta_problem(msg: dict[str, Any]) -> str | None:
    """Why a meta message cannot describe poses (None: it can). It names the joints and their
    bones, and it must be writable as a track's first line (JSON, finite numbers)."""
    names, parents = msg.get("joint_names"), msg.get("parents")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        return "a meta message without a list of 'joint_names'"
    if (not isinstance(parents, list) or len(parents) != len(names)
            or not all(isinstance(i, int) and -1 <= i < len(names) for i in parents)):
        return "a meta message whose 'parents' do not match its 'joint_names'"
    try:
        json.dumps(msg, allow_nan=False)
    except (TypeError, ValueError):
        return "a meta message with a value JSON cannot hold (bytes, NaN or Infinity)"
    return None


_INT64 = range(-(2 ** 63), 2 ** 63)      # what the .npz writer stores seq and person ids in


def pose_problem(msg: dict[str, Any], joints: int | None) -> str | None:
    """Why a pose message cannot be shown or recorded (None: it can). `joints`: the count the
    stream's meta gives, once it is known. The checks are what the statistics, the skeleton
    drawing and every track writer rely on, so nothing past here fails on a stranger's message."""
    if not isinstance(msg.get("seq"), int) or msg["seq"] not in _INT64 or not _finite(msg.get("t_capture")):
        return "a pose message without an integer 'seq' and a finite 't_capture'"
    for key in ("t_media", "t_publish"):
        if msg.get(key) is not None and not _finite(msg[key]):
            return f"a pose message whose '{key}' is not a finite number"
    if not isinstance(msg.get("people"), list) or not all(isinstance(p, dict) for p in msg["people"]):
        return "a pose message without a list of 'people'"
    try:
        # A huge number becomes Infinity in float32, as the .npz writer stores it: found below.
        with np.errstate(over="ignore", invalid="ignore"):
            frame = frame_from_message(msg)
            problems = [_person_problem(person, joints) for person in frame.people]
    except (KeyError, TypeError, ValueError, IndexError, OverflowError):
        return "a pose message with a malformed person (see docs/protocol.md)"
    problem = next((p for p in problems if p is not None), None)
    if problem is not None:
        return problem
    try:
        json.dumps(msg, allow_nan=False)       # what a .jsonl recording writes: finite numbers only
    except (TypeError, ValueError):
        return "a pose message with a value JSON cannot hold (bytes, NaN or Infinity)"
    return None


def _person_problem(person: PersonPose, joints: int | None) -> str | None:
    n = len(person.conf)
    if (person.conf.shape != (n,) or person.joints_3d.shape != (n, 3) or person.joints_2d.shape != (n, 2)
            or len(person.bbox) != 4 or (person.root_3d is not None and person.root_3d.shape != (3,))):
        return "a pose message whose person's arrays do not fit together (see docs/protocol.md)"
    if person.id not in _INT64:
        return "a pose message with a person 'id' out of range"
    numbers = [person.joints_3d, person.joints_2d, person.conf,
               np.asarray([person.score, *person.bbox], dtype=np.float32)]
    if person.root_3d is not None:
        numbers.append(person.root_3d)
    if not all(np.isfinite(a).all() for a in numbers):
        return "a pose message with a number that is not finite (the protocol allows only finite values)"
    if joints is not None and n != joints:
        return f"a pose message with {n} joints where the stream's meta names {joints}"
    return None


def _end_problem(msg: dict[str, Any]) -> str | None:
    """Why an end message cannot say how its stream ended (None: it can)."""
    poses, last = msg.get("poses"), msg.get("last_seq")
    if msg.get("reason") not in END_REASONS:
        return f"an end message whose 'reason' is not one of {', '.join(END_REASONS)}"
    if not isinstance(poses, int) or isinstance(poses, bool) or poses < 0:
        return "an end message without a count of 'poses'"
    if last is not None and (not isinstance(last, int) or isinstance(last, bool) or last not in _INT64):
        return "an end message whose 'last_seq' is not an integer or null"
    return None


def parse_message(parts: list[bytes], joints: int | None = None) -> dict[str, Any]:
    """A received ZeroMQ message as a protocol map (streamer/protocol.py), or `NotPosecast`.

    Anyone may publish on the port a subscriber connects to: another program, or an older or
    newer Posecast. `listen` skips what it cannot use instead of failing on it."""
    if len(parts) != 2:
        raise NotPosecast(f"a ZeroMQ message of {len(parts)} part(s), not [topic, payload]")
    try:
        msg = decode(parts[1])
    except Exception:      # noqa: BLE001 - msgpack and json raise many types on garbage; all mean this
        raise NotPosecast("a payload that is neither msgpack nor JSON") from None
    problem = message_problem(msg, joints)
    if problem is not None:
        raise NotPosecast(problem)
    return msg


def message_problem(msg: Any, joints: int | None = None) -> str | None:
    """Why a decoded message is not a usable protocol message (None: it is). `listen` skips
    such messages; `replay` refuses a track line that is one, before it publishes anything."""
    if not isinstance(msg, dict) or msg.get("type") not in ("meta", "pose", "end"):
        return "a payload that is not a Posecast 'meta', 'pose' or 'end' map"
    schema = msg.get("schema")
    if not isinstance(schema, int) or isinstance(schema, bool):
        return f"a {msg['type']} message without an integer 'schema'"
    if schema > SCHEMA_VERSION:
        return f"schema {schema}, newer than this version reads (up to {SCHEMA_VERSION}; upgrade Posecast)"
    if msg["type"] == "end":
        return _end_problem(msg)
    return _meta_problem(msg) if msg["type"] == "meta" else pose_problem(msg, joints)
