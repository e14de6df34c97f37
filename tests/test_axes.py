"""Consumer axes (streamer/axes.py): each target's up / forward / right, handedness and units,
checked against expectations written out by hand from the engines' documented conventions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from streamer.axes import AXES, AxesSpec, axes_meta, axes_spec, convert_points
from streamer.protocol import CAMERA_AXES

# Per target, by hand: the target vector of a camera point 1 m up (camera y = -1), 1 m in front
# (camera z = +1) and 1 m to the right (camera x = +1); handedness; units per metre.
EXPECTED = {
    #          up               forward           right            handedness  per metre
    "camera": ((0, -1, 0),      (0, 0, 1),        (1, 0, 0),       "right",    1.0),
    "unity": ((0, 1, 0),        (0, 0, 1),        (1, 0, 0),       "left",     1.0),
    "unreal": ((0, 0, 100),     (100, 0, 0),      (0, 100, 0),     "left",     100.0),
    "godot": ((0, 1, 0),        (0, 0, -1),       (1, 0, 0),       "right",    1.0),
    "blender": ((0, 0, 1),      (0, 1, 0),        (1, 0, 0),       "right",    1.0),
}

CAM_UP, CAM_FORWARD, CAM_RIGHT = np.array([0.0, -1.0, 0.0]), np.array([0.0, 0.0, 1.0]), np.array([1.0, 0.0, 0.0])


def signed_axis(label: str) -> np.ndarray:
    """'+y' -> (0, 1, 0), '-z' -> (0, 0, -1)."""
    v = np.zeros(3)
    v["xyz".index(label[1])] = 1.0 if label[0] == "+" else -1.0
    return v


def test_axes_lists_every_target() -> None:
    assert AXES == ("camera", "unity", "unreal", "godot", "blender")
    assert set(EXPECTED) == set(AXES)


@pytest.mark.parametrize("name", AXES)
def test_up_forward_right_land_on_the_targets_axes(name: str) -> None:
    spec = axes_spec(name)
    up, forward, right, _, per_metre = EXPECTED[name]
    np.testing.assert_array_equal(convert_points(CAM_UP, spec), up)
    np.testing.assert_array_equal(convert_points(CAM_FORWARD, spec), forward)
    np.testing.assert_array_equal(convert_points(CAM_RIGHT, spec), right)
    # The spec's own labels say the same.
    np.testing.assert_array_equal(convert_points(CAM_UP, spec), per_metre * signed_axis(spec.up))
    np.testing.assert_array_equal(convert_points(CAM_FORWARD, spec), per_metre * signed_axis(spec.forward))
    np.testing.assert_array_equal(convert_points(CAM_RIGHT, spec), per_metre * signed_axis(spec.right))


@pytest.mark.parametrize("name", AXES)
def test_determinant_sign_matches_handedness(name: str) -> None:
    """The camera frame is right-handed: a right-handed target is a rotation of it (det +1),
    a left-handed one a mirror (det -1)."""
    spec = axes_spec(name)
    assert spec.handedness == EXPECTED[name][3]
    det = np.linalg.det(spec.matrix)
    assert det == pytest.approx(1.0 if spec.handedness == "right" else -1.0)
    # Orthonormal: a signed permutation, lengths kept before the unit scale.
    np.testing.assert_array_equal(spec.matrix @ spec.matrix.T, np.eye(3))
    # The same from the geometry: the target's axes as directions in the (right-handed) camera
    # frame are the matrix rows; x cross y gives +z for a right-handed target, -z for a left one.
    ex, ey, ez = spec.matrix
    np.testing.assert_array_equal(np.cross(ex, ey), ez if spec.handedness == "right" else -ez)


@pytest.mark.parametrize("name", AXES)
def test_lengths_scale_by_the_unit_factor(name: str) -> None:
    spec = axes_spec(name)
    per_metre = EXPECTED[name][4]
    assert spec.scale == per_metre
    assert spec.units == {1.0: "m", 100.0: "cm"}[per_metre]
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(50, 3))
    np.testing.assert_allclose(np.linalg.norm(convert_points(pts, spec), axis=-1),
                               per_metre * np.linalg.norm(pts, axis=-1), rtol=1e-12)
    # Distances between joints (bone lengths) too.
    np.testing.assert_allclose(np.linalg.norm(np.diff(convert_points(pts, spec), axis=0), axis=-1),
                               per_metre * np.linalg.norm(np.diff(pts, axis=0), axis=-1), rtol=1e-12)


vectors = arrays(np.float64, (4, 3), elements=st.floats(-100, 100))


@settings(deadline=None, max_examples=60)
@given(st.sampled_from(AXES), vectors, vectors, st.floats(-10, 10), st.floats(-10, 10))
def test_conversion_is_linear(name: str, p: np.ndarray, q: np.ndarray, a: float, b: float) -> None:
    spec = axes_spec(name)
    np.testing.assert_allclose(convert_points(a * p + b * q, spec),
                               a * convert_points(p, spec) + b * convert_points(q, spec),
                               rtol=1e-9, atol=1e-9 * spec.scale)
    np.testing.assert_array_equal(convert_points(np.zeros(3), spec), np.zeros(3))


@pytest.mark.parametrize("name", AXES)
def test_shapes_and_dtypes(name: str) -> None:
    spec = axes_spec(name)
    batch = np.random.default_rng(1).normal(size=(2, 5, 17, 3))
    out = convert_points(batch, spec)
    assert out.shape == batch.shape and out.dtype == np.float64
    np.testing.assert_allclose(out[1, 3], convert_points(batch[1, 3], spec))
    assert convert_points(batch.astype(np.float32), spec).dtype == np.float32
    assert convert_points([[0, -1, 0]], spec).dtype == np.float64        # ints -> float64
    assert convert_points(np.zeros((0, 3)), spec).shape == (0, 3)
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        convert_points(np.zeros((17, 2)), spec)


def test_unknown_name_raises_with_the_list() -> None:
    with pytest.raises(ValueError, match="unknown axes 'maya'") as info:
        axes_spec("maya")
    for name in AXES:
        assert name in str(info.value)


def test_specs_are_read_only_values() -> None:
    spec = axes_spec("unreal")
    with pytest.raises(ValueError):
        spec.matrix[0, 0] = 5.0
    assert axes_spec("unreal") == spec and hash(axes_spec("unreal")) == hash(spec)
    assert axes_spec("unity") != axes_spec("godot")
    with pytest.raises(ValueError, match="3x3"):
        AxesSpec("bad", np.eye(2), 1.0, "m", "right", "+y", "+z", "+x")


def test_meta_for_the_camera_agrees_with_the_protocol() -> None:
    meta = axes_meta(axes_spec("camera"))
    for key, value in CAMERA_AXES.items():
        assert meta[key] == value


@pytest.mark.parametrize("name,x,y,z", [
    ("camera", "right", "down", "forward"),
    ("unity", "right", "up", "forward"),
    ("unreal", "forward", "right", "up"),
    ("godot", "right", "up", "back"),
    ("blender", "right", "forward", "up"),
])
def test_meta(name: str, x: str, y: str, z: str) -> None:
    spec = axes_spec(name)
    meta = axes_meta(spec)
    assert set(meta) == {"frame", "x", "y", "z", "handedness", "units", "up", "forward"}
    assert all(isinstance(v, str) for v in meta.values())
    assert (meta["frame"], meta["x"], meta["y"], meta["z"]) == (name, x, y, z)
    assert (meta["handedness"], meta["units"], meta["up"], meta["forward"]) == (
        spec.handedness, spec.units, spec.up, spec.forward)
    # The words and the labels agree: the axis labelled up (forward) has the word up (forward),
    # or down (back) when the label is negative.
    assert meta[spec.up[1]] == ("up" if spec.up[0] == "+" else "down")
    assert meta[spec.forward[1]] == ("forward" if spec.forward[0] == "+" else "back")
