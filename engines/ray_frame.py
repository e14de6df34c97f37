"""The person's ray frame: the frame a model with `offsets_frame: ray` gives its 3D in.

A person off the camera's optical axis is seen obliquely. In the camera's frame their pose is
turned by the angle of the ray they stand on (on the rendered validation images a median 7.0
degrees, 90th percentile 12.6), and nothing in a crop says by how much: the crop shows the
person, not where the camera's axis is. In the frame of a camera turned to look along that ray
the pose is what the crop shows, so the 3D branch has one answer to learn instead of an average
over rays. The pipeline knows where the person is in the frame and the camera's focal length,
and turns the pose back.

The ray goes through the mean of the person's 2D joints: the point the lifter centres its input
on (engines/network.py) and, in a tracked crop, the crop's centre. It does not depend on where a
crop was cut, so a person anywhere in a full-frame search crop gets the same answer. The rotation
is the smallest one that takes the optical axis onto the ray, and it commutes with mirroring:
the mirror image of a view has the mirror rotation, so training's flip augmentation and
test-time mirroring stay exact.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np

# Where a model's 3D offsets are expressed: the camera's frame, or the person's ray frame (above).
OffsetsFrame = Literal["camera", "ray"]
OFFSETS_FRAMES: tuple[str, ...] = get_args(OffsetsFrame)


def ray_rotations(directions: np.ndarray) -> np.ndarray:
    """(..., 3) viewing directions (z > 0) -> (..., 3, 3) rotations R with R @ e_z along the
    direction: R's columns are the ray frame's axes in camera coordinates, so
    x_camera = R @ x_ray and x_ray = R.T @ x_camera."""
    d = np.asarray(directions, dtype=np.float64)
    d = d / np.linalg.norm(d, axis=-1, keepdims=True)
    if np.any(d[..., 2] <= 0.0):
        raise ValueError("a viewing ray must point forward (z > 0)")
    # Rodrigues for the rotation of e_z onto d about the axis e_z x d = (-dy, dx, 0):
    # R = I + [v]x + [v]x^2 / (1 + c), with v = e_z x d and c = d_z.
    vx, vy = -d[..., 1], d[..., 0]
    c = d[..., 2]
    k = 1.0 / (1.0 + c)
    r = np.empty(d.shape[:-1] + (3, 3))
    r[..., 0, 0] = 1.0 - vy * vy * k
    r[..., 0, 1] = vx * vy * k
    r[..., 0, 2] = vy
    r[..., 1, 0] = vx * vy * k
    r[..., 1, 1] = 1.0 - vx * vx * k
    r[..., 1, 2] = -vx
    r[..., 2, 0] = -vy
    r[..., 2, 1] = vx
    r[..., 2, 2] = c
    return r


def person_rotations(joints_2d: np.ndarray, focal: np.ndarray | float, principal: np.ndarray) -> np.ndarray:
    """(..., J, 2) joints in image pixels, the camera's focal length in pixels (scalar or (...,))
    and principal point ((2,) or (..., 2)) -> (..., 3, 3): the rotation of the ray through the
    joints' mean (`ray_rotations`)."""
    centre = np.asarray(joints_2d, dtype=np.float64).mean(axis=-2)
    f = np.asarray(focal, dtype=np.float64)[..., None]
    xy = (centre - np.asarray(principal, dtype=np.float64)) / f
    return ray_rotations(np.concatenate([xy, np.ones(xy.shape[:-1] + (1,))], axis=-1))


def off_axis_degrees(rotations: np.ndarray) -> np.ndarray:
    """(..., 3, 3) `ray_rotations` -> (...,) the angle between each ray and the optical axis."""
    return np.degrees(np.arccos(np.clip(np.asarray(rotations)[..., 2, 2], -1.0, 1.0)))


def fit_pinhole(points_2d: np.ndarray, points_3d: np.ndarray) -> tuple[float, np.ndarray]:
    """The square-pixel pinhole (focal length, principal point (2,)) that projects camera-frame
    `points_3d` (N, 3) onto `points_2d` (N, 2) pixels, by least squares: u = f x/z + cx,
    v = f y/z + cy. Exact for labels made by such a camera (the rendered crops, which do not
    store it); needs at least two points that differ in x/z or y/z."""
    p3 = np.asarray(points_3d, dtype=np.float64)
    p2 = np.asarray(points_2d, dtype=np.float64)
    n = p3[:, :2] / p3[:, 2:3]
    a = np.zeros((2 * len(n), 3))
    a[0::2, 0], a[0::2, 1] = n[:, 0], 1.0
    a[1::2, 0], a[1::2, 2] = n[:, 1], 1.0
    sol, *_ = np.linalg.lstsq(a, p2.reshape(-1), rcond=None)
    return float(sol[0]), sol[1:].copy()


def fit_pinholes(points_2d: np.ndarray, points_3d: np.ndarray) -> np.ndarray:
    """`fit_pinhole` for each of N samples ((N, J, 2), (N, J, 3)) -> (N, 3): focal length, cx, cy."""
    fits = (fit_pinhole(a, b) for a, b in zip(points_2d, points_3d))
    return np.array([[focal, *principal] for focal, principal in fits]).reshape(-1, 3)
