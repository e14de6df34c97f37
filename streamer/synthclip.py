"""The built-in demo clip: one procedurally animated person walking in a room, made locally.

The pipeline needs an input that works with no camera and no download, so Posecast renders its
own: a 17-joint (`H36M17`) body with realistic bone lengths walks a slow loop in front of a
pinhole camera, so front, three-quarter, side and back views all appear. The body is drawn as
shaded, tapered capsules with a torso volume and a head, over a perspective floor and wall with
a soft contact shadow, then encoded with libx264.

Because the scene is synthetic, the ground truth is exact: `WalkScene.render_frame(t)` returns
the image and the 17 projected joints, and `WalkScene.joints_3d(t)` the joints in camera
coordinates (metres, the protocol's axes: x right, y down, z forward). The 2D ground truth uses
the protocol's pixel convention: (0.5, 0.5) is the centre of the top-left pixel (drawing uses
OpenCV's, with centres at integers; `PIXEL_CENTRE` converts).

Measured on the 2-core development machine (no GPU, other work running): a 1000x1000, 300-frame
clip renders and encodes in 4.6-6.6 s (per frame: 5-9 ms drawing, ~13 ms colour conversion and
libx264 veryfast; the room is rendered once, ~0.4 s); the default 640x480, 90-frame clip takes
0.6-0.9 s.
"""

from __future__ import annotations

import functools
import logging
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from engines.cache import cache_dir
from engines.files import replaced_when_done
from engines.skeleton import H36M17

log = logging.getLogger(__name__)

# The protocol's 2D coordinates put pixel centres at +0.5; OpenCV draws with centres at integers.
PIXEL_CENTRE = 0.5

DEFAULT_WIDTH, DEFAULT_HEIGHT, DEFAULT_FRAMES, DEFAULT_FPS = 640, 480, 90, 30.0
# What `write_clip` accepts. A side beyond MAX_SIDE would not fit in memory (4096x4096 already
# takes ~5 GB to render its room); MAX_FRAMES is about an hour at 30 fps.
MIN_SIDE, MAX_SIDE = 16, 4096
MIN_FPS, MAX_FPS = 1.0, 240.0
MAX_FRAMES = 100_000
# The memory a clip takes to render, most of it the room's ray-cast in float64 temporaries, as
# measured (peak RSS, `/usr/bin/time -v posecast make-clip ... --frames 2`): 375 MB at 1024x1024,
# 1.27 GB at 2048x2048, 4.84 GB at 4096x4096; this rounds that up a little.
RENDER_BASE_BYTES, RENDER_BYTES_PER_PIXEL = 100_000_000, 300


def render_memory_bytes(width: int, height: int) -> int:
    """About the most memory rendering a `width` x `height` clip takes at once."""
    return RENDER_BASE_BYTES + RENDER_BYTES_PER_PIXEL * width * height


def available_memory_bytes() -> int | None:
    """The memory the system can give a new program without swapping (Linux's MemAvailable), or
    None where that cannot be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None

_J = {name: i for i, name in enumerate(H36M17.joint_names)}

# Bone lengths in metres, close to the Human3.6M subjects' mean skeleton: a ~1.75 m adult
# (head top at about 1.75 m when standing straight).
_BODY_SCALE = 1.0
_PELVIS_TO_SPINE = 0.233
_SPINE_TO_THORAX = 0.257
_THORAX_TO_NOSE = 0.16
_NOSE_TO_HEAD_TOP = 0.13
_SHOULDER_HALF = 0.151
_UPPER_ARM = 0.278
_FOREARM = 0.252
_HIP_HALF = 0.132
_THIGH = 0.442
_SHIN = 0.454
_ANKLE_HEIGHT = 0.08
_FOOT = 0.17

_GAIT_PERIOD_S = 1.1      # one full cycle (two steps): ~110 steps/min, an easy walking cadence
_WALK_SPEED = 0.85        # m/s; matches the stance foot's travel so the feet barely slide
_CAMERA_HEIGHT = 1.2

# Clothing and skin palettes, BGR; the seed picks one of each.
_SHIRTS = [(140, 120, 30), (50, 50, 190), (40, 150, 200), (110, 60, 40), (60, 130, 60),
           (150, 80, 140)]
_TROUSERS = [(110, 70, 40), (80, 110, 140), (75, 75, 80), (120, 85, 60), (90, 100, 70)]
_SKINS = [(150, 180, 225), (120, 150, 200), (80, 110, 160), (60, 80, 115), (170, 195, 235)]
_HAIRS = [(25, 30, 40), (30, 55, 90), (20, 20, 25), (60, 110, 160), (120, 120, 125)]
_SHOES = [(30, 30, 30), (200, 200, 205), (40, 60, 90)]


@dataclass(frozen=True)
class PinholeCamera:
    """A level-rolled camera at (0, height, 0), pitched down by `pitch` radians, looking along +z.

    World axes: x right, y up, z away from the camera; the floor is y = 0.
    """

    f: float
    cx: float
    cy: float
    height: float
    pitch: float

    @property
    def axes(self) -> np.ndarray:
        """Rows: the camera's right, down and forward directions in world axes."""
        s, c = math.sin(self.pitch), math.cos(self.pitch)
        return np.array([[1.0, 0.0, 0.0], [0.0, -c, -s], [0.0, -s, c]])

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """World points (..., 3) -> camera coordinates (x right, y down, z forward), metres."""
        rel = points - np.array([0.0, self.height, 0.0])
        return rel @ self.axes.T

    def project(self, points: np.ndarray) -> np.ndarray:
        """World points (..., 3) -> pixels (..., 2)."""
        cam = self.to_camera(points)
        z = np.maximum(cam[..., 2:3], 1e-6)
        return cam[..., :2] * (self.f / z) + np.array([self.cx, self.cy])


@dataclass(frozen=True)
class Appearance:
    shirt: tuple[int, int, int]
    trousers: tuple[int, int, int]
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    shoes: tuple[int, int, int]


@dataclass
class BodyPose:
    """One instant of the walk, world coordinates (metres)."""

    joints: np.ndarray        # (17, 3) H36M17 joints
    toes: np.ndarray          # (2, 3) right, left toe tips (drawing only; not skeleton joints)
    forward: np.ndarray       # (3,) walking direction, unit, horizontal
    left: np.ndarray          # (3,) the body's left, unit, horizontal


def _wrapped_bump(x: float, centre: float, width: float) -> float:
    """A Gaussian bump on the unit circle of gait phase (so phase 0.99 is next to 0.01)."""
    d = (x - centre + 0.5) % 1.0 - 0.5
    return math.exp(-(d / width) ** 2)


class WalkScene:
    """The demo scene: a fixed camera, a room, and one person walking an elliptical loop.

    The static background (ray-cast floor and wall) is rendered once; each frame then copies it
    and draws the body, which is what keeps a 1000x1000 clip cheap to render.
    """

    def __init__(self, width: int = DEFAULT_WIDTH, height: int = DEFAULT_HEIGHT,
                 seed: int = 0) -> None:
        if width < 16 or height < 16:
            raise ValueError(f"clip size must be at least 16x16 (got {width}x{height})")
        self.width, self.height, self.seed = width, height, seed
        rng = np.random.default_rng(seed)
        self.look = Appearance(
            shirt=_SHIRTS[rng.integers(len(_SHIRTS))],
            trousers=_TROUSERS[rng.integers(len(_TROUSERS))],
            skin=_SKINS[rng.integers(len(_SKINS))],
            hair=_HAIRS[rng.integers(len(_HAIRS))],
            shoes=_SHOES[rng.integers(len(_SHOES))],
        )
        f = 1.1 * width
        # Distance that makes a standing adult ~62% of the frame height, kept in a sane range.
        self.distance = float(np.clip(f * 1.75 / (0.62 * height), 3.0, 6.0))
        pitch = math.atan2(_CAMERA_HEIGHT - 0.88, self.distance)   # aim at the body's middle
        self.camera = PinholeCamera(f=f, cx=(width - 1) / 2, cy=(height - 1) / 2,
                                    height=_CAMERA_HEIGHT, pitch=pitch)
        # The loop's width keeps the walker inside ~+-28% of the frame width from the centre.
        self.loop_rx = 0.25 * self.distance
        self.loop_rz = 0.15 * self.distance
        # Start on the far right, heading towards the camera: three-quarter, front, side and
        # back views follow within the first few seconds.
        self._arc_table = self._build_arc_table(0.5 + float(rng.uniform(-0.15, 0.15)))
        self._gait_offset = float(rng.uniform(0.0, 1.0))
        self.wall_z = self.distance + self.loop_rz + 2.5

    @functools.cached_property
    def background(self) -> np.ndarray:
        """The static room, rendered on first use: ground-truth-only users never pay for it."""
        return self._render_background(np.random.default_rng((self.seed, 1)))

    # ----------------------------------------------------------------------------------------
    # motion

    def _ellipse(self, psi: np.ndarray | float) -> np.ndarray:
        psi = np.asarray(psi, dtype=np.float64)
        return np.stack([self.loop_rx * np.cos(psi), np.zeros_like(psi),
                         self.distance + self.loop_rz * np.sin(psi)], axis=-1)

    def _build_arc_table(self, psi0: float) -> tuple[np.ndarray, np.ndarray]:
        # Walking at constant speed needs the loop's angle as a function of arc length.
        psi = psi0 - np.linspace(0.0, 2 * math.pi, 2049)   # decreasing angle: clockwise from above
        pts = self._ellipse(psi)
        seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
        s = np.concatenate([[0.0], np.cumsum(seg)])
        return s, psi

    def _place(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Floor position and heading (unit) at time t."""
        s_tab, psi_tab = self._arc_table
        perimeter = s_tab[-1]
        s = (_WALK_SPEED * t) % perimeter
        psi = float(np.interp(s, s_tab, psi_tab))
        pos = self._ellipse(psi)
        tangent = np.array([self.loop_rx * math.sin(psi), 0.0, -self.loop_rz * math.cos(psi)])
        return pos, tangent / np.linalg.norm(tangent)

    def pose(self, t: float) -> BodyPose:
        """The body at time t (seconds): a walk cycle along the loop."""
        base, fwd = self._place(t)
        left = np.array([-fwd[2], 0.0, fwd[0]])
        up = np.array([0.0, 1.0, 0.0])
        phase = (t / _GAIT_PERIOD_S + self._gait_offset) % 1.0
        k = _BODY_SCALE

        def leg(ph: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            # Sagittal-plane angles (radians): hip flexion peaks near heel strike (phase 0),
            # the knee bends a little on loading and a lot (~60 deg) in swing.
            a = 2 * math.pi * ph
            hip = 0.12 + 0.32 * math.cos(a - 0.25)
            knee = 0.06 + 0.25 * _wrapped_bump(ph, 0.13, 0.08) + 1.0 * _wrapped_bump(ph, 0.72, 0.12)
            shin = hip - knee
            knee_p = np.array([math.sin(hip), -math.cos(hip)]) * _THIGH * k
            ankle_p = knee_p + np.array([math.sin(shin), -math.cos(shin)]) * _SHIN * k
            foot = 0.6 * shin + 0.15 * math.sin(a)
            toe_p = ankle_p + np.array([math.cos(foot), math.sin(foot) - 0.25]) * _FOOT * k
            return knee_p, ankle_p, toe_p

        legs = {"r": leg(phase), "l": leg((phase + 0.5) % 1.0)}
        # Pelvis height: the lower ankle rests on the floor, which gives the natural bob.
        lowest = min(legs["r"][1][1], legs["l"][1][1])
        pelvis_h = _ANKLE_HEIGHT - lowest
        sway = 0.02 * math.sin(2 * math.pi * phase)               # weight shift over stance
        pelvis = base + up * pelvis_h + left * sway

        j = np.zeros((17, 3))
        toes = np.zeros((2, 3))
        j[_J["pelvis"]] = pelvis
        twist = 0.08 * math.cos(2 * math.pi * phase)              # pelvis rotates with the stride
        for side, sign, toe_row in (("r", -1.0, 0), ("l", 1.0, 1)):
            hip_dir = left * math.cos(twist) + fwd * math.sin(twist)
            hip = pelvis + sign * hip_dir * _HIP_HALF * k
            knee_p, ankle_p, toe_p = legs[side]
            j[_J[f"{side}_hip"]] = hip
            j[_J[f"{side}_knee"]] = hip + fwd * knee_p[0] + up * knee_p[1]
            j[_J[f"{side}_ankle"]] = hip + fwd * ankle_p[0] + up * ankle_p[1]
            toes[toe_row] = hip + fwd * toe_p[0] + up * toe_p[1]

        lean = 0.06 + 0.015 * math.cos(4 * math.pi * phase)
        spine_dir = up * math.cos(lean) + fwd * math.sin(lean)
        j[_J["spine"]] = pelvis + spine_dir * _PELVIS_TO_SPINE * k
        j[_J["thorax"]] = j[_J["spine"]] + spine_dir * _SPINE_TO_THORAX * k
        nod = 0.03 * math.sin(4 * math.pi * phase)
        neck_dir = 0.9 * up + (0.42 + nod) * fwd
        neck_dir /= np.linalg.norm(neck_dir)
        j[_J["neck_nose"]] = j[_J["thorax"]] + neck_dir * _THORAX_TO_NOSE * k
        j[_J["head_top"]] = j[_J["neck_nose"]] + (0.96 * up - 0.28 * fwd) * _NOSE_TO_HEAD_TOP * k

        shoulder_twist = -1.5 * twist                             # shoulders counter-rotate
        for side, sign in (("r", -1.0), ("l", 1.0)):
            sdir = left * math.cos(shoulder_twist) + fwd * math.sin(shoulder_twist)
            shoulder = j[_J["thorax"]] + sign * sdir * _SHOULDER_HALF * k - up * 0.02
            # Arms swing opposite to the same-side leg; the elbow bends more on the forward swing.
            ph = phase if side == "l" else (phase + 0.5) % 1.0
            swing = 0.32 * math.cos(2 * math.pi * ph - 0.25)
            elbow_bend = 0.25 + 0.3 * max(0.0, math.cos(2 * math.pi * ph - 0.25))
            out = sign * left * 0.1
            upper = fwd * math.sin(swing) - up * math.cos(swing) + out
            upper /= np.linalg.norm(upper)
            fore_a = swing + elbow_bend
            fore = fwd * math.sin(fore_a) - up * math.cos(fore_a) + out * 0.5
            fore /= np.linalg.norm(fore)
            j[_J[f"{side}_shoulder"]] = shoulder
            j[_J[f"{side}_elbow"]] = shoulder + upper * _UPPER_ARM * k
            j[_J[f"{side}_wrist"]] = j[_J[f"{side}_elbow"]] + fore * _FOREARM * k
        return BodyPose(joints=j, toes=toes, forward=fwd, left=left)

    def joints_2d(self, t: float) -> np.ndarray:
        """(17, 2) pixel positions of the H36M17 joints at time t."""
        return self.camera.project(self.pose(t).joints) + PIXEL_CENTRE

    def joints_3d(self, t: float) -> np.ndarray:
        """(17, 3) joints at time t in camera coordinates, metres (x right, y down, z forward)."""
        return self.camera.to_camera(self.pose(t).joints)

    # ----------------------------------------------------------------------------------------
    # background

    def _render_background(self, rng: np.random.Generator) -> np.ndarray:
        """Ray-cast the floor (tiles) and the wall: real perspective, analytic anti-aliasing."""
        cam, h, w = self.camera, self.height, self.width
        u = (np.arange(w, dtype=np.float64) - cam.cx) / cam.f
        v = (np.arange(h, dtype=np.float64) - cam.cy) / cam.f
        uu, vv = np.meshgrid(u, v)
        axes = cam.axes                                   # rows: right, down, forward
        dirs = uu[..., None] * axes[0] + vv[..., None] * axes[1] + axes[2]
        dy, dz = dirs[..., 1], dirs[..., 2]
        t_wall = self.wall_z / np.maximum(dz, 1e-9)
        t_floor = np.where(dy < -1e-9, cam.height / np.maximum(-dy, 1e-9), np.inf)
        on_floor = t_floor < t_wall
        t_hit = np.where(on_floor, t_floor, t_wall)
        wx = dirs[..., 0] * t_hit
        wy = cam.height + dy * t_hit
        wz = dz * t_hit

        img = np.zeros((h, w, 3), np.float64)

        # Floor: 0.6 m tiles with grout lines, per-tile tint, darker with distance.
        tile = 0.6
        fx, fz = wx / tile, wz / tile
        fp = np.hypot(*np.gradient(fx)) + np.hypot(*np.gradient(fz)) + 1e-6   # tiles per pixel
        grout = np.zeros_like(fx)
        for g in (fx, fz):
            dist = np.abs(g - np.round(g))
            half = 0.012 / tile
            cover = np.clip((half - dist) / fp + 0.5, 0.0, 1.0)
            # Far away a line is thinner than a pixel: blend to its mean coverage, no moire.
            cover = cover + (2 * half - cover) * np.clip(fp * 1.5 - 0.2, 0.0, 1.0)
            grout = np.maximum(grout, cover)
        tints = rng.uniform(-0.06, 0.06, size=(64, 64))
        tint = tints[np.floor(fx).astype(np.int64) % 64, np.floor(fz).astype(np.int64) % 64]
        floor_base = np.array([150.0, 170.0, 185.0])      # warm light stone, BGR
        shade = 1.0 + tint - 0.035 * np.clip(wz - 2.0, 0.0, 12.0) - 0.05 * np.abs(wx) / 4.0
        floor = floor_base * shade[..., None]
        floor = floor * (1 - grout[..., None] * 0.35)
        # Contact darkening where the floor meets the wall.
        floor *= (1 - 0.25 * np.exp(-np.clip(self.wall_z - wz, 0, None) / 0.25))[..., None]

        # Wall: a painted wall with a faint vertical texture, a skirting board and a door.
        wall_base = np.array([170.0, 190.0, 200.0])
        stripes = rng.normal(0.0, 1.0, size=512)
        stripe = np.interp((wx * 40.0) % 512, np.arange(512), stripes) * 0.012
        wall_shade = 1.0 - 0.04 * np.abs(wx) / 2.0 + stripe - 0.03 * np.clip(wy - 1.5, 0, None)
        wall = wall_base * wall_shade[..., None]
        skirting = wy < 0.12
        wall[skirting] = np.array([225.0, 228.0, 230.0]) * (0.9 + 0.4 * wy[skirting, None])
        door_x = float(rng.uniform(-2.2, -1.2) if rng.integers(2) else rng.uniform(1.2, 2.2))
        door = (np.abs(wx - door_x) < 0.45) & (wy < 2.05)
        frame = (np.abs(wx - door_x) < 0.5) & (wy < 2.1) & ~door
        wall[frame] = np.array([235.0, 238.0, 240.0])
        grain = 1.0 + 0.03 * np.sin(wx[door] * 90.0)                  # wood-ish vertical grain
        wall[door] = np.array([95.0, 120.0, 150.0]) * grain[:, None]
        pic_x = -door_x * 0.8
        picture = (np.abs(wx - pic_x) < 0.4) & (np.abs(wy - 1.55) < 0.3)
        pic_frame = (np.abs(wx - pic_x) < 0.45) & (np.abs(wy - 1.55) < 0.35) & ~picture
        wall[pic_frame] = np.array([40.0, 50.0, 60.0])
        grad = np.clip((wy - 1.25) / 0.6, 0, 1)
        wall[picture] = (np.array([150.0, 110.0, 60.0]) * (1 - grad[picture, None])
                         + np.array([200.0, 200.0, 180.0]) * grad[picture, None])

        img = np.where(on_floor[..., None], floor, wall)
        # Soft vignette: a lens look, and it keeps the eye on the middle of the frame.
        r2 = uu ** 2 + vv ** 2
        img *= (1.0 - 0.25 * r2 / max(r2.max(), 1e-9))[..., None]
        img += rng.normal(0.0, 1.2, size=img.shape)                 # film grain, fixed per seed
        out = np.clip(img, 0, 255).astype(np.uint8)
        return cv2.GaussianBlur(out, (0, 0), 0.6)

    # ----------------------------------------------------------------------------------------
    # drawing

    def render_frame(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """The frame at time t (seconds): (image (H, W, 3) uint8 BGR, joints (17, 2) pixels)."""
        body = self.pose(t)
        img = self.background.copy()
        self._draw_shadow(img, body)
        self._draw_body(img, body)
        return img, self.camera.project(body.joints) + PIXEL_CENTRE

    def _draw_shadow(self, img: np.ndarray, body: BodyPose) -> None:
        centre = body.joints[_J["pelvis"]] * np.array([1.0, 0.0, 1.0])
        ang = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        ring = (centre + np.cos(ang)[:, None] * body.forward * 0.42
                + np.sin(ang)[:, None] * body.left * 0.28)
        pts = self.camera.project(ring)
        blur = max(1.0, float(np.ptp(pts[:, 0])) * 0.12)
        pad = int(math.ceil(3 * blur)) + 1
        x0 = max(int(pts[:, 0].min()) - pad, 0)
        y0 = max(int(pts[:, 1].min()) - pad, 0)
        x1 = min(int(pts[:, 0].max()) + pad + 1, self.width)
        y1 = min(int(pts[:, 1].max()) + pad + 1, self.height)
        if x1 <= x0 or y1 <= y0:
            return
        # A blur this wide needs no full resolution: blur a 1/4-size mask and scale it up, which
        # makes the shadow ~10x cheaper (it was most of the drawing time at 1000x1000).
        down = 4 if blur >= 4 else 1
        small = (max((x1 - x0) // down, 1), max((y1 - y0) // down, 1))
        mask = np.zeros((small[1], small[0]), np.float32)
        scale = np.array(small) / (x1 - x0, y1 - y0)
        cv2.fillPoly(mask, [_fixed((pts - (x0, y0)) * scale)], 1.0, cv2.LINE_AA, _SHIFT)
        mask = cv2.GaussianBlur(mask, (0, 0), blur / down)
        if down > 1:
            mask = cv2.resize(mask, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
        roi = img[y0:y1, x0:x1]
        roi[:] = (roi * (1.0 - 0.45 * mask[..., None])).astype(np.uint8)

    def _draw_body(self, img: np.ndarray, body: BodyPose) -> None:
        cam, look, k = self.camera, self.look, _BODY_SCALE
        j, fwd, left, up = body.joints, body.forward, body.left, np.array([0.0, 1.0, 0.0])
        depth = cam.to_camera(j)[:, 2]
        items: list[tuple[float, Callable[[], None]]] = []

        def capsule(a: np.ndarray, b: np.ndarray, ra: float, rb: float,
                    colour: tuple[int, int, int]) -> None:
            za, zb = cam.to_camera(a)[2], cam.to_camera(b)[2]
            pa, pb = cam.project(a), cam.project(b)
            items.append(((za + zb) / 2, lambda: _shaded_capsule(
                img, pa, pb, cam.f * ra / za, cam.f * rb / zb, colour)))

        for side in ("r", "l"):
            hip, knee, ankle = (j[_J[f"{side}_{n}"]] for n in ("hip", "knee", "ankle"))
            toe = body.toes[0 if side == "r" else 1]
            capsule(hip, knee, 0.085 * k, 0.062 * k, look.trousers)
            capsule(knee, ankle, 0.058 * k, 0.042 * k, look.trousers)
            capsule(ankle + (toe - ankle) * 0.1, toe, 0.045 * k, 0.035 * k, look.shoes)
            shoulder, elbow, wrist = (j[_J[f"{side}_{n}"]] for n in ("shoulder", "elbow", "wrist"))
            capsule(shoulder, elbow, 0.055 * k, 0.045 * k, look.shirt)
            capsule(elbow, wrist, 0.038 * k, 0.03 * k, look.skin)
            hand = wrist + (wrist - elbow) / np.linalg.norm(wrist - elbow) * 0.06 * k
            capsule(wrist, hand, 0.035 * k, 0.04 * k, look.skin)

        # The torso and hips are volumes: hulls of points on their front and back surfaces, so
        # they look right from the front (wide) and from the side (deep) alike.
        pelvis, spine, thorax = j[_J["pelvis"]], j[_J["spine"]], j[_J["thorax"]]
        rs, ls = j[_J["r_shoulder"]], j[_J["l_shoulder"]]
        rh, lh = j[_J["r_hip"]], j[_J["l_hip"]]
        across = (ls - rs) / np.linalg.norm(ls - rs)
        shirt_pts = [ls + up * 0.035, rs + up * 0.035, ls - across * 0.02 - up * 0.12,
                     rs + across * 0.02 - up * 0.12, spine + left * 0.13, spine - left * 0.13,
                     pelvis + left * 0.145 + up * 0.06, pelvis - left * 0.145 + up * 0.06,
                     thorax + up * 0.04]
        hips_pts = [lh + left * 0.05, rh - left * 0.05, pelvis + up * 0.08 + left * 0.15,
                    pelvis + up * 0.08 - left * 0.15, pelvis - up * 0.1 + left * 0.05,
                    pelvis - up * 0.1 - left * 0.05]

        def volume(points: list[np.ndarray], depth_front: float, depth_back: float
                   ) -> np.ndarray:
            p = np.array(points)
            return cam.project(np.concatenate([p + fwd * depth_front, p - fwd * depth_back]))

        torso_z = float(depth[[_J["pelvis"], _J["spine"], _J["thorax"]]].mean())
        hips_2d = volume(hips_pts, 0.1, 0.1)
        shirt_2d = volume(shirt_pts, 0.11, 0.09)
        def draw_torso() -> None:
            _shaded_hull(img, hips_2d, look.trousers)
            _shaded_hull(img, shirt_2d, look.shirt)

        items.append((torso_z, draw_torso))

        # Neck and head: drawn just after the torso; hair behind or in front of the face by depth.
        nose, top = j[_J["neck_nose"]], j[_J["head_top"]]
        head_axis = (top - nose) / np.linalg.norm(top - nose)
        head_c = top - head_axis * 0.105 - fwd * 0.01
        neck_a, neck_b = thorax + up * 0.02, head_c - head_axis * 0.04
        hair_c = head_c - fwd * 0.02 + head_axis * 0.018
        na, nb = cam.project(neck_a), cam.project(neck_b)
        nz = cam.to_camera(neck_a)[2]
        head_parts = sorted(
            [(cam.to_camera(hair_c)[2], hair_c, 0.09, 0.108, look.hair),
             (cam.to_camera(head_c)[2], head_c, 0.08, 0.11, look.skin)],
            key=lambda p: -p[0])

        def draw_head() -> None:
            _shaded_capsule(img, na, nb, cam.f * 0.052 / nz, cam.f * 0.048 / nz, look.skin)
            for z, centre, rw, rh_, colour in head_parts:
                # A head is nearly as deep as it is wide: its width on screen barely changes
                # with the view, so the ellipse's width is the projected radius itself.
                c2 = cam.project(centre)
                a2 = cam.project(centre + head_axis * rh_) - c2
                axes = (cam.f * rw / z, float(np.hypot(*a2)))
                angle = math.degrees(math.atan2(a2[1], a2[0])) + 90.0
                _shaded_ellipse(img, c2, axes, angle, colour)

        items.append((torso_z - 1e-3, draw_head))
        for _, draw in sorted(items, key=lambda it: -it[0]):     # painter's order: far first
            draw()


# ----------------------------------------------------------------------------------------------
# drawing helpers: sub-pixel positions (shift), anti-aliased, three-tone shading lit from the
# upper left so limbs read as round.

_SHIFT = 4
_ONE = 1 << _SHIFT
_LIGHT = np.array([-0.6, -0.8])


def _fixed(pts: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(pts) * _ONE).astype(np.int32).reshape(-1, 1, 2)


def _tone(colour: tuple[int, int, int], k: float) -> tuple[int, int, int]:
    if k <= 1.0:
        return tuple(int(c * k) for c in colour)                     # type: ignore[return-value]
    return tuple(int(c + (255 - c) * (k - 1.0)) for c in colour)     # type: ignore[return-value]


def _capsule_poly(pa: np.ndarray, pb: np.ndarray, ra: float, rb: float) -> np.ndarray:
    d = pb - pa
    n = np.array([-d[1], d[0]]) / max(float(np.hypot(*d)), 1e-6)
    return np.array([pa + n * ra, pb + n * rb, pb - n * rb, pa - n * ra])


def _shaded_capsule(img: np.ndarray, pa: np.ndarray, pb: np.ndarray, ra: float, rb: float,
                    colour: tuple[int, int, int]) -> None:
    d = pb - pa
    n = np.array([-d[1], d[0]]) / max(float(np.hypot(*d)), 1e-6)
    if n @ _LIGHT < 0:
        n = -n                                                       # the side facing the light
    for scale, offset, tone in ((1.0, 0.0, 0.62), (0.78, 0.16, 1.0), (0.32, 0.45, 1.25)):
        ra_s, rb_s = max(ra * scale, 0.5), max(rb * scale, 0.5)
        qa, qb = pa + n * ra * offset, pb + n * rb * offset
        c = _tone(colour, tone)
        cv2.fillConvexPoly(img, _fixed(_capsule_poly(qa, qb, ra_s, rb_s)), c, cv2.LINE_AA, _SHIFT)
        for q, r in ((qa, ra_s), (qb, rb_s)):
            cv2.circle(img, tuple(int(v) for v in np.round(q * _ONE)), int(round(r * _ONE)), c,
                       -1, cv2.LINE_AA, _SHIFT)


def _shaded_hull(img: np.ndarray, pts: np.ndarray, colour: tuple[int, int, int]) -> None:
    hull = cv2.convexHull(pts.astype(np.float32)).reshape(-1, 2)
    centre = hull.mean(axis=0)
    size = float(np.ptp(hull, axis=0).min())
    for scale, offset, tone in ((1.0, 0.0, 0.62), (0.86, 0.05, 1.0), (0.45, 0.16, 1.18)):
        q = centre + (hull - centre) * scale + _LIGHT * size * offset
        cv2.fillConvexPoly(img, _fixed(q), _tone(colour, tone), cv2.LINE_AA, _SHIFT)


def _shaded_ellipse(img: np.ndarray, centre: np.ndarray, axes: tuple[float, float],
                    angle: float, colour: tuple[int, int, int]) -> None:
    for scale, offset, tone in ((1.0, 0.0, 0.66), (0.84, 0.12, 1.0), (0.4, 0.4, 1.2)):
        c = centre + _LIGHT * min(axes) * offset
        ax = tuple(max(int(round(a * scale * _ONE)), 1) for a in axes)
        cv2.ellipse(img, (int(round(c[0] * _ONE)), int(round(c[1] * _ONE))), ax, angle, 0, 360,
                    _tone(colour, tone), -1, cv2.LINE_AA, _SHIFT)


# ----------------------------------------------------------------------------------------------
# files


def render_frame(t: float, width: int = DEFAULT_WIDTH, height: int = DEFAULT_HEIGHT,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One frame of the clip `write_clip(width=..., height=..., seed=...)` at time t (seconds).

    Builds the scene each call (tens of milliseconds); use `WalkScene` for many frames.
    """
    return WalkScene(width, height, seed).render_frame(t)


def write_clip(path: Path, width: int = DEFAULT_WIDTH, height: int = DEFAULT_HEIGHT,
               frames: int = DEFAULT_FRAMES, fps: float = DEFAULT_FPS, seed: int = 0,
               progress: bool = False) -> Path:
    """Render the walking-person clip to `path` (H.264 in MP4, yuv420p) and return the path.

    Frame i shows `WalkScene(width, height, seed).render_frame(i / fps)`. The clip is encoded
    under a temporary name in `path`'s folder and renamed into place when whole: a failure (a
    full disk, Ctrl-C) leaves no partial file, and whatever `path` held before stays as it was.
    """
    path = Path(path)
    check_clip_arguments(width, height, frames, fps, seed)
    scene = WalkScene(width, height, seed)
    with replaced_when_done(path) as tmp:
        _encode(tmp, scene, frames, fps, progress)
    return path


def check_clip_arguments(width: int, height: int, frames: int, fps: float, seed: int) -> None:
    """ValueError for a clip `write_clip` cannot make (before any work or any file)."""
    if width % 2 or height % 2:
        raise ValueError(f"width and height must be even for yuv420p (got {width}x{height})")
    if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
        raise ValueError(f"width and height must be between {MIN_SIDE} and {MAX_SIDE} (got {width}x{height})")
    if not 1 <= frames <= MAX_FRAMES:
        raise ValueError(f"frames must be between 1 and {MAX_FRAMES} (got {frames})")
    if not MIN_FPS <= fps <= MAX_FPS:         # also false for nan
        raise ValueError(f"fps must be between {MIN_FPS:g} and {MAX_FPS:g} (got {fps:g})")
    if seed < 0:
        raise ValueError(f"seed must be >= 0 (got {seed})")


def _encode(path: Path, scene: WalkScene, frames: int, fps: float, progress: bool) -> None:
    rate = Fraction(fps).limit_denominator(1001)
    # faststart puts the index first: a truncated or half-downloaded file stays readable, and
    # the file can be streamed over HTTP progressively.
    with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = scene.width, scene.height, "yuv420p"
        stream.codec_context.gop_size = max(1, int(round(2 * fps)))   # a keyframe every 2 s
        # One encoder thread: x264's output depends on its thread count, and one thread keeps the
        # demo clip closest to the same file everywhere (on a loaded CI machine two encodes still
        # differed slightly). Encoding 90 frames of 640x480 still takes well under a second.
        stream.options = {"crf": "20", "preset": "veryfast", "threads": "1"}
        for i in range(frames):
            image, _ = scene.render_frame(i / fps)
            # OpenCV's BT.601 limited-range I420 is what decoders assume for untagged H.264,
            # and it is ~10x faster than letting swscale convert from bgr24.
            yuv = cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420)
            frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
            frame.pts = i
            frame.time_base = 1 / rate
            container.mux(stream.encode(frame))
            if progress:
                sys.stderr.write(f"\rrendering the clip: frame {i + 1}/{frames}")
                sys.stderr.flush()
        container.mux(stream.encode(None))
    if progress:
        sys.stderr.write("\n")


def default_clip_path() -> Path:
    return cache_dir("demo") / f"walk_{DEFAULT_WIDTH}x{DEFAULT_HEIGHT}_{DEFAULT_FRAMES}.mp4"


def _is_whole(clip: Path) -> bool:
    """Whether every frame the clip's index lists is in the file (a copy cut short, a disk that
    filled up, would otherwise fail every demo). Reads packets, decodes nothing."""
    try:
        with av.open(str(clip)) as container:
            stream = container.streams.video[0]
            listed = stream.frames
            present = sum(1 for packet in container.demux(stream) if packet.size)
    except (av.FFmpegError, OSError, IndexError):
        return False
    return listed > 0 and present == listed


def ensure_default_clip(progress: bool = False) -> Path:
    """The default demo clip, rendered on first use (and again if the cached one is damaged)."""
    path = default_clip_path()
    if path.is_file() and path.stat().st_size > 0:
        if _is_whole(path):
            return path
        log.warning("the cached demo clip %s is damaged; rendering it again", path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Render under a temporary name and rename: an interrupted run never leaves a half file
    # where the next run would trust it, and concurrent first runs don't clobber each other.
    with replaced_when_done(path) as tmp:
        write_clip(tmp, progress=progress)
    return path
