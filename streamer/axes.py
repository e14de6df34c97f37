"""Poses in a consumer's axes: camera-frame metres -> the frame a game engine or DCC tool expects.

Posecast's 3D output is in the camera frame: x right, y down, z forward (into the scene),
right-handed, metres (`streamer.protocol.CAMERA_AXES`). A consumer wants a world-like frame seen
from the camera: up = -y_camera, forward (from the viewer into the scene) = +z_camera,
right = +x_camera. Each target below is that frame written in the target's own conventions:

| target  | x       | y       | z                 | handedness | units | maps camera (x, y, z) to | det |
|---------|---------|---------|-------------------|------------|-------|--------------------------|-----|
| camera  | right   | down    | forward           | right      | m     | (x, y, z)                | +1  |
| unity   | right   | up      | forward           | left       | m     | (x, -y, z)               | -1  |
| unreal  | forward | right   | up                | left       | cm    | 100 (z, x, -y)           | -1  |
| godot   | right   | up      | back (fwd is -z)  | right      | m     | (x, -y, -z)              | +1  |
| blender | right   | forward | up                | right      | m     | (x, z, -y)               | +1  |

(det: of the 3x3 axis matrix, before the unit scale. The camera frame is right-handed, so a
target with det -1 is left-handed: a mirror, which no rotation can reproduce.)

Sources for the conventions, as the engines document them:
- Unity: left-handed, Y-up, Z-forward (`Vector3.forward` is (0, 0, 1), `Vector3.up` (0, 1, 0),
  `Vector3.right` (1, 0, 0)); 1 unit = 1 m.
- Unreal Engine: left-handed, Z-up, X-forward, Y-right; 1 unit = 1 cm.
- Godot: right-handed, Y-up, -Z forward (`Vector3.FORWARD` is (0, 0, -1); a `Camera3D` looks
  down its -Z), X right; 1 unit = 1 m.
- Blender: right-handed, Z-up, Y-forward (the Front view looks along +Y), X right; 1 unit = 1 m.

Only positions and direction vectors convert this way (p' = scale * M p). A rotation R converts
as M R M^T, and for the left-handed targets that flips the sense of every rotation angle; this
module does not convert rotations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np

AxesName = Literal["camera", "unity", "unreal", "godot", "blender"]
AXES: tuple[str, ...] = get_args(AxesName)

# The camera frame's axes as words, for describing where each target axis points.
_CAMERA_WORDS = (("right", "left"), ("down", "up"), ("forward", "back"))


@dataclass(frozen=True)
class AxesSpec:
    """A target frame: target = scale * matrix @ camera, for points in camera-frame metres.

    up / forward / right name the target's signed axis along the camera's up (-y), forward (+z)
    and right (+x), e.g. "+z" or "-z"."""

    name: str
    matrix: np.ndarray = field(compare=False)     # (3, 3) signed permutation, read-only
    scale: float
    units: str
    handedness: str                                # "right" or "left"
    up: str
    forward: str
    right: str
    # scale * matrix, transposed for row-vector points: the whole map, built once.
    _linear_t: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        m = np.asarray(self.matrix, dtype=np.float64)
        if m.shape != (3, 3):
            raise ValueError(f"axes matrix must be 3x3, got {m.shape}")
        m = m.copy()
        m.setflags(write=False)                   # specs are shared values: nobody may edit one
        linear_t = (m * self.scale).T.copy()
        linear_t.setflags(write=False)
        object.__setattr__(self, "matrix", m)
        object.__setattr__(self, "_linear_t", linear_t)


def _spec(name: str, rows: list[list[float]], scale: float, units: str, handedness: str,
          up: str, forward: str, right: str) -> AxesSpec:
    return AxesSpec(name, np.array(rows, dtype=np.float64), scale, units, handedness, up, forward, right)


def axes_spec(name: str) -> AxesSpec:
    """The spec of a target frame (one of AXES)."""
    # Rows: which camera axis (with sign) each target axis is. Built per call: a few
    # microseconds, and no module-level mutable state.
    if name == "camera":
        return _spec("camera", [[1, 0, 0], [0, 1, 0], [0, 0, 1]], 1.0, "m", "right", "-y", "+z", "+x")
    if name == "unity":
        return _spec("unity", [[1, 0, 0], [0, -1, 0], [0, 0, 1]], 1.0, "m", "left", "+y", "+z", "+x")
    if name == "unreal":
        return _spec("unreal", [[0, 0, 1], [1, 0, 0], [0, -1, 0]], 100.0, "cm", "left", "+z", "+x", "+y")
    if name == "godot":
        return _spec("godot", [[1, 0, 0], [0, -1, 0], [0, 0, -1]], 1.0, "m", "right", "+y", "-z", "+x")
    if name == "blender":
        return _spec("blender", [[1, 0, 0], [0, 0, 1], [0, -1, 0]], 1.0, "m", "right", "+z", "+y", "+x")
    raise ValueError(f"unknown axes '{name}' (choose from {', '.join(AXES)})")


def convert_points(points: np.ndarray, spec: AxesSpec) -> np.ndarray:
    """(..., 3) camera-frame metres -> (..., 3) in the target's axes and units.

    Floating input keeps its dtype (float32 stays float32); anything else becomes float64."""
    p = np.asarray(points)
    if p.shape[-1:] != (3,):
        raise ValueError(f"expected points of shape (..., 3), got {p.shape}")
    if not np.issubdtype(p.dtype, np.floating):
        p = p.astype(np.float64)
    return p @ spec._linear_t.astype(p.dtype, copy=False)


def axes_meta(spec: AxesSpec) -> dict[str, str]:
    """What the protocol's meta message says about the axes: the frame's name, where each of
    its axes points (as seen from the camera), handedness, units, and the up / forward axes."""
    words = []
    for row in spec.matrix:
        k = int(np.flatnonzero(row)[0])
        words.append(_CAMERA_WORDS[k][0 if row[k] > 0 else 1])
    return {"frame": spec.name, "x": words[0], "y": words[1], "z": words[2],
            "handedness": spec.handedness, "units": spec.units, "up": spec.up,
            "forward": spec.forward}
