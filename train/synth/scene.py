"""One synthetic training image: a body, a motion pose, a camera, a look, a background, faults.

The person's scale and place in the 256-pixel image follow what the pipeline feeds the network:
most images are like its tracking crops (the joints' extent is 1/1.15 to 1/1.7 of the side,
centred with some jitter), the rest like its full-frame search (a small person anywhere, sometimes
with letterbox bands). A crop of a pinhole image is a pinhole image with a scaled focal length and
a shifted principal point, so the camera is placed in 3D (distance, height, tilt, roll, the person
off its axis, or a real Human3.6M camera) and the crop is then chosen through the intrinsics.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from engines.skeleton import H36M17
from train.motion import H36MCamera
from train.shards import SynthSample, encode_jpeg
from train.synth.body import REGIONS, BodyBank
from train.synth.render import BodyRenderer, Look, Rendered
from train.synth.retarget import pose_body

_R = {name: i for i, name in enumerate(REGIONS)}
SKIN_TONES = np.array([  # RGB 0..1, light to dark
    [0.96, 0.80, 0.69], [0.92, 0.72, 0.60], [0.87, 0.66, 0.52], [0.78, 0.57, 0.44],
    [0.66, 0.46, 0.34], [0.55, 0.37, 0.26], [0.42, 0.27, 0.19], [0.30, 0.20, 0.14],
])
HAIR = np.array([[0.05, 0.04, 0.03], [0.20, 0.13, 0.07], [0.40, 0.26, 0.13], [0.75, 0.60, 0.35],
                 [0.55, 0.55, 0.55], [0.85, 0.85, 0.82], [0.45, 0.15, 0.07]])
EYES = np.array([[0.08, 0.05, 0.03], [0.20, 0.11, 0.05], [0.32, 0.20, 0.09], [0.32, 0.40, 0.48],
                 [0.28, 0.33, 0.20]])


@dataclass(frozen=True)
class SceneOptions:
    size: int = 256
    search_fraction: float = 0.3          # images like the full-frame search (small person)
    roi_margin: tuple[float, float] = (1.15, 1.7)
    search_extent: tuple[float, float] = (0.12, 0.55)
    h36m_camera_fraction: float = 0.3     # of Human3.6M poses, seen through a real H36M camera
    distance: tuple[float, float] = (1.8, 9.0)
    occluder_probability: float = 0.3
    blur_probability: float = 0.2
    noise_probability: float = 0.3
    jpeg_quality: tuple[int, int] = (45, 95)
    long_hair_probability: float = 0.0    # people with hair down over the neck and shoulders
    face_probability: float = 0.0         # people with eyes, brows and lips painted on the face
    head_turn_probability: float = 0.0    # people whose head is turned on the neck, up to HEAD_TURN_MAX
    bystander_probability: float = 0.0    # tracking crops with a second, unlabelled person beside, before or behind


# Where a bystander stands from the labelled person's middle, metres on the ground: across the
# camera's view (either side) and along it (negative: nearer the camera). Near enough to overlap
# in the image, as people crossing in a street do, never inside the labelled person.
BYSTANDER_ACROSS = (0.0, 1.2)
BYSTANDER_ALONG = (-2.0, 3.0)
BYSTANDER_CLEARANCE = 0.6      # metres: nearer than this both across and along, it is moved along


@dataclass(frozen=True)
class Bystander:
    """A second person for one image: a body of the bank and a mocap pose (world metres)."""
    body: int
    pose: np.ndarray


# A turn of the head on the neck, beyond what the mocap's joints say (they do not say it): up to
# looking over the shoulder, degrees either way.
HEAD_TURN_MAX = 100.0


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    """Clothes: many dark and neutral colours, some saturated ones."""
    if rng.random() < 0.45:
        v = rng.uniform(0.05, 0.9)
        return np.clip(v + rng.normal(0, 0.03, 3), 0, 1)
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(60, 255), rng.uniform(40, 240)]]], np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float64) / 255.0


# Long hair in the body's rest coordinates (x left-right, y front (-) to back (+), z up, metres):
# behind the neck's middle, down from the nape (0.63) by LONG_HAIR_LENGTH, 2 x LONG_HAIR_HALF_WIDTH wide.
LONG_HAIR_BEHIND = -0.01
LONG_HAIR_TOP = 0.63
LONG_HAIR_LENGTH = (0.06, 0.30)
LONG_HAIR_HALF_WIDTH = (0.07, 0.14)


def random_look(rng: np.random.Generator, long_hair_probability: float = 0.0,
                face_probability: float = 0.0) -> Look:
    """A random look; with `long_hair_probability` > 0 (and only then, so the random stream of
    older data sets stays the same) some people get long hair in their hair colour, and with
    `face_probability` > 0 (likewise) some get a face: eyes, brows in their hair colour and lips."""
    n = len(REGIONS)
    a = np.zeros((n, 3))
    b = np.zeros((n, 3))
    pattern = np.zeros(n, np.int64)
    freq = np.full(n, 10.0)
    skin = SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.9, 1.1)
    hair = HAIR[rng.integers(len(HAIR))] if rng.random() > 0.08 else skin

    def garment(regions: list[str]) -> None:
        c1, c2 = _random_colour(rng), _random_colour(rng)
        kind = rng.choice([0, 1, 2, 3, 4], p=[0.5, 0.2, 0.12, 0.1, 0.08])
        f = rng.uniform(6, 30)
        for r in regions:
            a[_R[r]], b[_R[r]], pattern[_R[r]], freq[_R[r]] = c1, c2, kind, f

    for r in ("face", "neck", "hand", "forearm", "shin", "thigh", "upper_arm"):
        a[_R[r]] = b[_R[r]] = skin
    a[_R["scalp"]] = b[_R["scalp"]] = hair
    top = ["chest", "abdomen", "upper_arm"] + (["forearm"] if rng.random() < 0.6 else [])
    if rng.random() < 0.1:                                  # a dress
        garment(top + ["pelvis", "thigh"])
    else:
        garment(top)
        garment(["pelvis", "thigh"] + (["shin"] if rng.random() < 0.75 else []))
    garment(["foot"])
    light = np.array([rng.uniform(-1, 1), rng.uniform(-1, 0.3), -rng.uniform(0.3, 1.0)])
    tint = np.clip(1 + rng.normal(0, 0.08, 3), 0.7, 1.2)
    look = Look(colour_a=np.clip(a, 0, 1), colour_b=np.clip(b, 0, 1), pattern=pattern, freq=freq,
                light_dir=light, light_colour=tint, ambient=float(rng.uniform(0.25, 0.6)))
    if long_hair_probability > 0 and rng.random() < long_hair_probability:
        look.long_hair = np.array([LONG_HAIR_BEHIND, LONG_HAIR_TOP - rng.uniform(*LONG_HAIR_LENGTH),
                                   rng.uniform(*LONG_HAIR_HALF_WIDTH), 1.0])
        look.hair_colour = np.clip(hair, 0, 1)
    if face_probability > 0 and rng.random() < face_probability:
        look.face_on = 1.0
        look.eye_colour = EYES[rng.integers(len(EYES))] * rng.uniform(0.8, 1.2)
        look.brow_colour = np.clip((hair if hair is not skin else skin * 0.6) * rng.uniform(0.6, 0.9), 0, 1)
        look.lip_colour = np.clip(skin * np.array([0.9, 0.6, 0.6]) * rng.uniform(0.75, 1.0), 0, 1)
    return look


def look_at(centre: np.ndarray, target: np.ndarray, roll: float) -> np.ndarray:
    """World -> camera rotation (rows: right, down, forward) for a camera at `centre`, z up."""
    return look_at_batch(np.asarray(centre, np.float64)[None], np.asarray(target, np.float64)[None],
                         np.array([roll], np.float64))[0]


def look_at_batch(centre: np.ndarray, target: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """`look_at` for (N, 3) centres and targets and (N,) rolls: (N, 3, 3) rotations."""
    f = target - centre
    f = f / np.linalg.norm(f, axis=-1, keepdims=True)
    r = np.cross(f, np.array([0.0, 0.0, 1.0]))
    r = r / np.maximum(np.linalg.norm(r, axis=-1, keepdims=True), 1e-9)
    d = np.cross(f, r)
    rot = np.stack([r, d, f], axis=1)
    c, s = np.cos(roll), np.sin(roll)
    z, o = np.zeros_like(roll), np.ones_like(roll)
    roll_m = np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], axis=1)
    return roll_m @ rot


def background_crop(rng: np.random.Generator, backgrounds: list[tuple[str, np.ndarray]],
                    size: int) -> tuple[str, np.ndarray]:
    """(name, BGR image size x size): a random square of a random photo, or now and then a gradient."""
    if rng.random() < 0.04:
        c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        t = np.linspace(0, 1, size)[:, None, None]
        return "gradient", np.broadcast_to(c0 * (1 - t) + c1 * t, (size, size, 3)).astype(np.uint8).copy()
    name, img = backgrounds[rng.integers(len(backgrounds))]
    h, w = img.shape[:2]
    side = int(rng.uniform(0.25, 1.0) * min(h, w))
    y0, x0 = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    crop = cv2.resize(img[y0:y0 + side, x0:x0 + side], (size, size), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    gain = rng.uniform(0.6, 1.3)
    return name, np.clip(crop.astype(np.float32) * gain, 0, 255).astype(np.uint8)


def _camera(rng: np.random.Generator, opts: SceneOptions, joints: np.ndarray,
            cameras: list[H36MCamera]) -> tuple[np.ndarray, np.ndarray]:
    if cameras and rng.random() < opts.h36m_camera_fraction:
        cam = cameras[rng.integers(len(cameras))]
        return cam.R.astype(np.float64), cam.T.astype(np.float64)
    pelvis = joints[H36M17.index("pelvis")]
    ground = min(joints[:, 2].min(), pelvis[2] - 1.2) - 0.08
    lo, hi = np.log(opts.distance[0]), np.log(opts.distance[1])
    dist = float(np.exp(rng.uniform(lo, hi)))
    azim = rng.uniform(0, 2 * np.pi)
    height = ground + rng.uniform(0.3, 2.8)
    centre = np.array([pelvis[0] + dist * np.cos(azim), pelvis[1] + dist * np.sin(azim), height])
    target = pelvis + np.array([0.0, 0.0, rng.uniform(-0.3, 0.4)]) + rng.normal(0, 0.12 * dist, 3) * [1, 1, 0.5]
    return look_at(centre, target, float(rng.normal(0, np.radians(4)))), centre


def random_heading(rng: np.random.Generator, pose: np.ndarray) -> np.ndarray:
    """The mocap pose (world metres, z up) turned about the vertical through its pelvis to a
    random heading."""
    yaw = rng.uniform(0, 2 * np.pi)
    c, s = np.cos(yaw), np.sin(yaw)
    rz = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    pelvis = pose[0].copy()
    return (pose - pelvis) @ rz.T + pelvis


def place_bystander(rng: np.random.Generator, bank: BodyBank, bystander: Bystander, verts: np.ndarray,
                    rot: np.ndarray, centre: np.ndarray) -> np.ndarray | None:
    """The bystander's posed vertices in the camera frame: turned to a random heading, standing on
    the labelled person's ground near them (BYSTANDER_ACROSS, BYSTANDER_ALONG). None where the
    camera looks too steeply down for "across" and "along" to mean anything, or where the
    bystander would stand on or behind the camera."""
    pose = random_heading(rng, np.asarray(bystander.pose, np.float64))
    b_verts, b_joints = pose_body(bank.vertices[bystander.body], bank.joints[bystander.body], bank.part_weights, pose)
    across = rng.choice([-1.0, 1.0]) * rng.uniform(*BYSTANDER_ACROSS)
    along = rng.uniform(*BYSTANDER_ALONG)
    if abs(across) < BYSTANDER_CLEARANCE and abs(along) < BYSTANDER_CLEARANCE:
        along = np.copysign(BYSTANDER_CLEARANCE, along)
    right, forward = rot[0].copy(), rot[2].copy()       # the camera's x and z axes in the world
    right[2] = forward[2] = 0.0
    if min(np.linalg.norm(right), np.linalg.norm(forward)) < 0.2:
        return None
    right, forward = right / np.linalg.norm(right), forward / np.linalg.norm(forward)
    here = verts.mean(axis=0)
    shift = here + across * right + along * forward - b_joints[H36M17.index("pelvis")]
    shift[2] = verts[:, 2].min() - b_verts[:, 2].min()
    b_cam = (b_verts + shift - centre) @ rot.T
    return b_cam if b_cam[:, 2].min() > 0.3 else None


def make_sample(rng: np.random.Generator, opts: SceneOptions, bank: BodyBank, body: int,
                motion_pose: np.ndarray, motion_name: str, renderer: BodyRenderer,
                backgrounds: list[tuple[str, np.ndarray]], cameras: list[H36MCamera],
                bystander: Bystander | None = None) -> SynthSample:
    """One labelled image. With `bystander`, a tracking crop (not a search crop) shows a second
    person of the same scene too, unlabelled, in front of or behind the first by depth; joints it
    hides are not visible. Only tracking crops: there the labelled person is the one the crop is
    centred on, as the tracker's crops are, while in a full-frame search either of two people
    could be the one to find, and labels for just one would teach the network to guess."""
    size = opts.size
    pose = np.asarray(motion_pose, np.float64)
    if not cameras:       # no real camera for this motion: any heading will do
        pose = random_heading(rng, pose)
    # Drawn only when asked for, so the random stream of older data sets stays the same.
    head_turn = 0.0
    if opts.head_turn_probability > 0 and rng.random() < opts.head_turn_probability:
        head_turn = float(np.radians(rng.uniform(-HEAD_TURN_MAX, HEAD_TURN_MAX)))
    verts, joints = pose_body(bank.vertices[body], bank.joints[body], bank.part_weights, pose, head_turn)
    rot, centre = _camera(rng, opts, joints, cameras)
    j_cam = (joints - centre) @ rot.T
    v_cam = (verts - centre) @ rot.T
    if v_cam[:, 2].min() < 0.2:                      # the camera is inside or behind the person
        rot, centre = _camera(rng, opts, joints, [])
        j_cam = (joints - centre) @ rot.T
        v_cam = (verts - centre) @ rot.T

    # Choose the crop through the intrinsics.
    n = j_cam[:, :2] / j_cam[:, 2:3]
    lo, hi = n.min(axis=0), n.max(axis=0)
    extent = float((hi - lo).max())
    search = rng.random() < opts.search_fraction
    if search:
        target_extent = rng.uniform(*opts.search_extent) * size
    else:
        target_extent = size / rng.uniform(*opts.roi_margin)
    f = target_extent / max(extent, 1e-6)
    box = (hi - lo) * f
    if search:
        centre_px = np.array([rng.uniform(min(box[0] / 2, size / 2), max(size - box[0] / 2, size / 2)),
                              rng.uniform(min(box[1] / 2, size / 2), max(size - box[1] / 2, size / 2))])
    else:
        centre_px = size / 2 + rng.normal(0, 0.05 * size, 2)
    c = centre_px - f * (lo + hi) / 2
    intr = (f, f, float(c[0]), float(c[1]))
    j2d = (n * f + c).astype(np.float32)

    look = random_look(rng, opts.long_hair_probability, opts.face_probability)
    out = renderer.render(v_cam.astype(np.float32), intr, look)
    bg_name, bg = background_crop(rng, backgrounds, size)
    other = None
    if bystander is not None and not search:
        b_cam = place_bystander(rng, bank, bystander, verts, rot, centre)
        if b_cam is not None:
            other = renderer.render(b_cam.astype(np.float32), intr,
                                    random_look(rng, opts.long_hair_probability, opts.face_probability))
    img = over(out, bg) if other is None else composite_by_depth(out, other, bg)

    visible = joints_seen(out, j2d, j_cam, other)
    if rng.random() < opts.occluder_probability:
        img, covered = _occlude(rng, img, j2d, target_extent, backgrounds)
        visible &= ~covered
    if search and rng.random() < 0.3:
        img = _letterbox(rng, img, j2d)
    if rng.random() < opts.blur_probability:
        img = _motion_blur(rng, img)
    if rng.random() < opts.noise_probability:
        img = img + rng.normal(0, rng.uniform(1, 7), img.shape)
    img = np.clip(img, 0, 255).astype(np.uint8)
    quality = int(rng.integers(opts.jpeg_quality[0], opts.jpeg_quality[1] + 1))
    return SynthSample(jpeg=encode_jpeg(img, quality), joints_2d=j2d, joints_3d=j_cam.astype(np.float32),
                       visible=visible, motion=motion_name, background=bg_name)


def joints_seen(person: Rendered, j2d: np.ndarray, j_cam: np.ndarray, other: Rendered | None = None) -> np.ndarray:
    """(J,) bool: inside the image, and not behind the body's own surface nor another person's."""
    h, w = person.alpha.shape
    inside = (j2d[:, 0] >= 0) & (j2d[:, 0] < w) & (j2d[:, 1] >= 0) & (j2d[:, 1] < h)
    visible = inside.copy()
    for k in np.flatnonzero(inside):
        x, y = int(j2d[k, 0]), int(j2d[k, 1])
        if np.isfinite(person.depth[y, x]) and person.depth[y, x] < j_cam[k, 2] - 0.15:
            visible[k] = False
        if other is not None and other.alpha[y, x] > 0.5 and other.depth[y, x] < j_cam[k, 2] - 0.05:
            visible[k] = False
    return visible


def over(front: Rendered, back: np.ndarray) -> np.ndarray:
    """A rendered person over `back` (float BGR; premultiplied "over")."""
    return front.rgb[:, :, ::-1].astype(np.float32) + (1.0 - front.alpha[:, :, None]) * back.astype(np.float32)


def composite_by_depth(person: Rendered, other: Rendered, bg: np.ndarray) -> np.ndarray:
    """Two people over a background (float BGR): at each pixel the nearer one over the farther,
    so each hides the other where it stands in front."""
    person_front = over(person, over(other, bg))
    other_front = over(other, over(person, bg))
    return np.where((other.depth < person.depth)[:, :, None], other_front, person_front)


def _occlude(rng: np.random.Generator, img: np.ndarray, j2d: np.ndarray, person: float,
             backgrounds: list[tuple[str, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    size = img.shape[0]
    mask = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(1, 3))):
        anchor = j2d[rng.integers(len(j2d))] + rng.normal(0, 0.1 * person, 2)
        w, h = rng.uniform(0.15, 0.45, 2) * person
        angle = rng.uniform(0, 180)
        pts = cv2.boxPoints(((float(anchor[0]), float(anchor[1])), (float(w), float(h)), float(angle)))
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    _, tex = background_crop(rng, backgrounds, size)
    m = mask.astype(bool)
    img[m] = tex[m]
    xy = np.clip(j2d.astype(np.int64), 0, size - 1)
    covered = m[xy[:, 1], xy[:, 0]]
    return img, covered


def _letterbox(rng: np.random.Generator, img: np.ndarray, j2d: np.ndarray) -> np.ndarray:
    """Black bands like a full frame of another aspect ratio, never over the person."""
    size = img.shape[0]
    axis = int(rng.integers(2))
    lo, hi = float(j2d[:, axis].min()), float(j2d[:, axis].max())
    band = int(min(rng.uniform(0.05, 0.25) * size, lo - 0.1 * size, size - hi - 0.1 * size))
    if band <= 0:
        return img
    if axis == 1:
        img[:band] = 0
        img[size - band:] = 0
    else:
        img[:, :band] = 0
        img[:, size - band:] = 0
    return img


def _motion_blur(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    length = int(rng.integers(3, 10))
    k = np.zeros((length, length), np.float32)
    k[length // 2, :] = 1.0 / length
    rot = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), float(rng.uniform(0, 180)), 1.0)
    k = cv2.warpAffine(k, rot, (length, length))
    k /= max(k.sum(), 1e-6)
    return cv2.filter2D(img, -1, k)
