"""BVH track files: the tracked person's motion as an animated skeleton for animation tools.

A `.bvh` track holds one skeleton, the H36M17 joints with their bone lengths (the median over the
frames where the person was found), and one motion row per input frame: the pelvis's position and
every joint's rotation (`streamer.bvh_solve`). Blender, MotionBuilder and Maya import it; game
engines take it through one of those (as FBX or glTF).

Conventions (the common ones of BVH files, e.g. the CMU motion-capture library's):
* Y up, right-handed, centimetres, a person facing the camera facing +Z, their left on +X. The
  camera's axes (x right, y down, z forward) become 100 * (x, -y, -z), a rotation, so left stays
  left; then the camera's tilt is taken out (`level_rotation`): the person's up, as the frames
  where they stand straight show it, is turned onto +Y, so that the ground is level.
* The rest pose is a T-pose: legs straight down, spine straight up, arms out along X.
* The pelvis's position: where the person was in the first frame they were found is the origin;
  after that it follows `root_3d` (the person's place from the camera). The ground (y = 0) is
  ANKLE_HEIGHT_CM below the lower ankle's median height. A model without `root_3d` keeps the
  pelvis in one place.
* Each frame goes in the row of its time (`t_media`, else `t_capture`), 1/fps seconds a row (1/30 s
  where the source has no frame rate); an image folder's images go one a row. Rows with nobody
  found, and those of frames a live source left out as stale, repeat the row of the last pose
  (the first one, before the person is first found), so the animation keeps the video's time.
* One skeleton is one actor: a track whose person id changes is joined, and that is said.
"""

from __future__ import annotations

import io
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from engines.errors import InputError
from engines.skeleton import H36M17, Skeleton
from streamer.axes import axes_spec
from streamer.bvh_solve import bvh_rig, children, local_angles, rig_pose, rotation_channels, smallest_rotation, unit
from streamer.protocol import PoseFrame
from streamer.tracks import TrackWriter, write_whole

log = logging.getLogger(__name__)

DEFAULT_FRAME_TIME_S = 1.0 / 30.0
CAMERA_TO_BVH = np.diag([100.0, -100.0, -100.0])    # camera metres -> BVH centimetres, Y up
MAX_HELD_ROWS = 108_000     # the most rows one gap in time is held for: an hour at 30 fps
ANKLE_HEIGHT_CM = 8.0       # the ankle joint above the sole, where the ground is
# Levelling: a frame shows the person standing straight where the torso is within STRAIGHT_BODY_DEG
# of the line from between the ankles to the pelvis, and a knee within STRAIGHT_KNEE_DEG of straight.
STRAIGHT_BODY_DEG = 20.0
STRAIGHT_KNEE_DEG = 30.0
MIN_STANDING_SHARE = 0.1    # of the frames with a pose, at least this many standing straight
MAX_LEVEL_DEG = 30.0        # the most the camera's up may be from the person's


def hierarchy_text(skeleton: Skeleton, offsets: np.ndarray) -> str:
    """The HIERARCHY section: each joint with its rest offset and channels, leaves as end sites."""
    out = ["HIERARCHY"]

    def joint(j: int, depth: int) -> None:
        pad = "\t" * depth
        kids = children(skeleton, j)
        head = "ROOT" if skeleton.parents[j] < 0 else "JOINT"
        out.append(f"{pad}{head} {skeleton.joint_names[j]}")
        out.append(f"{pad}{{")
        out.append(f"{pad}\tOFFSET " + " ".join(f"{v:.4f}" for v in offsets[j]))
        position = "Xposition Yposition Zposition " if skeleton.parents[j] < 0 else ""
        count = 6 if position else 3
        rotations = " ".join(rotation_channels(skeleton.joint_names[j]))
        out.append(f"{pad}\tCHANNELS {count} {position}{rotations}")
        for k in kids:
            if children(skeleton, k):
                joint(k, depth + 1)
            else:
                out.append(f"{pad}\tEnd Site")
                out.append(f"{pad}\t{{")
                out.append(f"{pad}\t\tOFFSET " + " ".join(f"{v:.4f}" for v in offsets[k]))
                out.append(f"{pad}\t}}")
        out.append(f"{pad}}}")

    joint(skeleton.parents.index(-1), 0)
    return "\n".join(out) + "\n"


class BvhTrackWriter(TrackWriter):
    """Keeps each frame's pose (about 250 bytes a frame) and writes the file on `close`, through
    a temporary file and a rename, as the .npz writer does: a BVH's header holds the skeleton and
    the frame count, known only at the end. Working the rotations out then takes its time: about
    5 s and 200 MB at the peak for 30,000 frames (17 minutes at 30 fps) on two cores. `close` may
    be called from a signal handler: a row counts once it is complete."""

    _FIRST_CAPACITY = 256

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        path = Path(path)
        names = [str(n) for n in meta.get("joint_names", [])]
        if names != list(H36M17.joint_names) or list(meta.get("parents", [])) != list(H36M17.parents):
            raise InputError(f"cannot write '{path}': a BVH track needs the {H36M17.name} skeleton, "
                             f"and this stream has {meta.get('skeleton')!r} (use .jsonl, .csv or .npz)")
        self.skeleton = H36M17
        frame_name = (meta.get("axes") or {}).get("frame", "camera")
        try:
            spec = axes_spec(str(frame_name))
        except ValueError as err:
            raise InputError(f"cannot write '{path}': {err}") from None
        # Points arrive as scale * M @ camera (M orthogonal): back to camera, then to BVH (as
        # row vectors: p @ M / scale is the camera point).
        self._to_bvh = (spec.matrix / spec.scale) @ CAMERA_TO_BVH.T
        fps = meta.get("fps")
        ok_fps = isinstance(fps, (int, float)) and not isinstance(fps, bool) and math.isfinite(fps) and fps > 0
        self.frame_time = 1.0 / float(fps) if ok_fps else DEFAULT_FRAME_TIME_S
        super().__init__(path, streamed=False)
        self._closed = False
        self._count = 0
        self._t0 = 0.0                     # the first frame's time, which row 0 is
        j = self.skeleton.num_joints
        self._joints = np.full((self._FIRST_CAPACITY, j, 3), np.nan, np.float32)
        self._root = np.full((self._FIRST_CAPACITY, 3), np.nan, np.float32)
        self._person = -1                  # the person id of the last pose written
        self._changes: list[int] = []      # the rows where another person id began

    def _reserve(self, rows: int) -> None:
        capacity = len(self._joints)
        if self._count + rows <= capacity:
            return
        while capacity < self._count + rows:
            capacity *= 2
        for name in ("_joints", "_root"):
            old = getattr(self, name)
            new = np.full((capacity, *old.shape[1:]), np.nan, np.float32)
            new[:self._count] = old[:self._count]
            setattr(self, name, new)

    def _skipped_rows(self, frame: PoseFrame) -> int:
        """The rows to hold the last pose in before this frame's: a frame goes in the row of its
        time (`t_media`, else `t_capture`, at `frame_time` a row), so frames a live source left
        out as stale, or messages lost on the way, keep the animation's time; an image folder's
        images (no time of their own) go one a row."""
        if not self._count:
            self._t0 = frame.t_media if frame.t_media is not None else frame.t_capture
        if frame.image is not None or not self._count:
            return 0
        t = frame.t_media if frame.t_media is not None else frame.t_capture
        row = round((t - self._t0) / self.frame_time)
        return min(max(0, row - self._count), MAX_HELD_ROWS)

    def write(self, frame: PoseFrame, message: dict[str, Any] | None = None) -> None:
        if self._closed:
            raise ValueError(f"track file '{self.path}' is already closed")
        skipped = self._skipped_rows(frame)
        self._reserve(skipped + 1)
        i = self._count + skipped
        self._joints[self._count:i + 1] = np.nan
        self._root[self._count:i + 1] = np.nan
        if frame.people:
            person = frame.people[0]
            joints = np.asarray(person.joints_3d, np.float64)
            if joints.shape != (self.skeleton.num_joints, 3) or not np.isfinite(joints).all():
                raise ValueError(f"frame {frame.seq}: the pose is not {self.skeleton.num_joints} finite 3D joints")
            self._joints[i] = joints @ self._to_bvh
            if person.root_3d is not None and np.isfinite(person.root_3d).all():
                self._root[i] = np.asarray(person.root_3d, np.float64) @ self._to_bvh
            if self._person >= 0 and person.id != self._person:
                self._changes.append(i)
            self._person = person.id
        self._count = i + 1          # last: the rows only count once they are complete
        self.frames_written += 1

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        n = self._count
        if n == 0:
            return      # as every format: no frame, no file, and one already at that path is kept
        found = np.isfinite(self._joints[:n, 0, 0])
        if not found.any():
            raise InputError(f"'{self.path}' was not written: nobody was found in any of the {n} frames, and a "
                             f"BVH needs a pose (the .jsonl, .csv and .npz formats record frames without one)")
        text = bvh_text(self.skeleton, self._joints[:n].astype(np.float64), self._root[:n].astype(np.float64),
                        self.frame_time)
        if self._changes:
            # One skeleton, one actor: a track that went from one person to another (a crowd, an
            # image folder's unrelated photos) is joined, its root jumping between them.
            log.warning("the person id changed %d time(s) in '%s' (at row %s): a BVH holds one skeleton, so "
                        "their motions are joined, its root jumping between them; for one person's motion, cut "
                        "the video to them, or use .jsonl, whose lines say which person each is",
                        len(self._changes), self.path,
                        ", ".join(map(str, self._changes[:5])) + (", ..." if len(self._changes) > 5 else ""))
        write_whole(self.path, lambda f: f.write(text.encode("ascii")))


def held_index(have: np.ndarray) -> np.ndarray:
    """For each row, the row whose value it shows: its own where `have`, else the last one that
    has one, or the first before any (`have` must hold at least one)."""
    idx = np.where(have, np.arange(len(have)), -1)
    idx = np.maximum.accumulate(idx)
    idx[idx < 0] = int(np.flatnonzero(have)[0])
    return idx


def level_rotation(skeleton: Skeleton, joints: np.ndarray) -> np.ndarray | None:
    """(3, 3) the rotation that turns the person's up, as the frames where they stand straight
    show it, onto +Y: a pitched or rolled camera's tilt taken out, so that the ground is level.
    A frame shows it where the torso is in line with the line from between the ankles to the
    pelvis and one knee at least is straight; its up is from between the ankles to the thorax.
    Walking, the feet are as often ahead as behind, so the middle mean of those is upright; no
    foot is chosen by which looks lower, which a pitched camera would get wrong.
    `joints` (N, J, 3) in BVH axes. None where too few frames show the person standing straight
    (MIN_STANDING_SHARE), or their up is more than MAX_LEVEL_DEG from the camera's (a person
    lying stretched out would look straight too): the camera's axes are kept then."""
    i = skeleton.index
    between = (joints[:, i("l_ankle")] + joints[:, i("r_ankle")]) / 2.0
    torso = unit(joints[:, i("thorax")] - joints[:, i("pelvis")])
    standing = _angle_deg(torso, unit(joints[:, i("pelvis")] - between)) < STRAIGHT_BODY_DEG
    straightest = np.minimum(*(_angle_deg(unit(joints[:, i(s + "knee")] - joints[:, i(s + "hip")]),
                                          unit(joints[:, i(s + "ankle")] - joints[:, i(s + "knee")]))
                               for s in ("l_", "r_")))
    standing &= straightest < STRAIGHT_KNEE_DEG
    if standing.sum() < max(1, MIN_STANDING_SHARE * len(joints)):
        return None
    up = unit(_middle_mean(unit(joints[standing, i("thorax")] - between[standing])))
    camera_up = np.array([0.0, 1.0, 0.0])
    if _angle_deg(up, camera_up) > MAX_LEVEL_DEG:
        return None
    return smallest_rotation(up[None], camera_up[None])[0]


def _middle_mean(values: np.ndarray) -> np.ndarray:
    """(3,) the mean of each column's middle half: a walk's feet are ahead as often as behind,
    two clusters whose median jumps from one to the other as a frame comes or goes, while a
    plain mean would follow the odd wrong frame."""
    ordered = np.sort(values, axis=0)
    quarter = len(ordered) // 4
    return ordered[quarter:len(ordered) - quarter].mean(axis=0)


def _angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.degrees(np.arccos(np.clip(np.sum(a * b, axis=-1), -1.0, 1.0)))


def bvh_text(skeleton: Skeleton, joints: np.ndarray, root: np.ndarray, frame_time: float,
             level: bool = True) -> str:
    """The whole BVH file for `skeleton`'s joints (N, J, 3) relative to the origin joint and root
    positions (N, 3), both in BVH axes and centimetres, NaN where not known. Rows with no pose
    show the one `held_index` says; rows with no root, likewise (the origin where none has one).
    `level`: take the camera's tilt out (`level_rotation`); False keeps the camera's axes."""
    found = np.isfinite(joints[:, 0, 0])
    shown = held_index(found)
    posed = joints[found]                                  # each pose once: a held row repeats it
    has_root = np.isfinite(root[:, 0])
    place = root[held_index(has_root)] if has_root.any() else np.zeros_like(root)
    turn = level_rotation(skeleton, posed) if level else None
    if turn is not None:
        posed, place = posed @ turn.T, place @ turn.T
    rig, source = bvh_rig(skeleton)
    posed = posed[:, source]
    origin = rig.parents.index(-1)
    posed = posed - posed[:, origin:origin + 1]
    offsets, rot = rig_pose(rig, posed)
    rank = np.cumsum(found) - 1                            # each found row's place among the posed
    ankles = [rig.index(n) for n in ("l_ankle", "r_ankle")]
    place = place[found]
    # The ground: ANKLE_HEIGHT_CM under the lower ankle's median height.
    place[:, 1] += ANKLE_HEIGHT_CM - float(np.median(place[:, 1] + posed[:, ankles, 1].min(axis=1)))
    # Where the person first was is above the origin.
    place[:, [0, 2]] -= place[0, [0, 2]]
    angles = local_angles(rig, rot)
    rows = np.concatenate([place[rank[shown]], angles[rank[shown]]], axis=1)
    buf = io.StringIO()
    buf.write(hierarchy_text(rig, offsets))
    buf.write(f"MOTION\nFrames: {len(rows)}\nFrame Time: {frame_time:.8f}\n")
    np.savetxt(buf, rows, fmt="%.4f", delimiter=" ")
    return buf.getvalue()
