"""Square crops: the image <-> crop transform, cutting pixels, and the box around a 2D pose."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from engines.crop import CropTransform, box_around, points_bbox

SETTINGS = settings(deadline=None, max_examples=60)

finite = dict(allow_nan=False, allow_infinity=False)


@SETTINGS
@given(
    st.floats(-2000, 4000, **finite), st.floats(-2000, 4000, **finite),       # box centre
    st.floats(8, 4000, **finite),                                           # box side
    st.sampled_from([64, 128, 256, 257]),
    st.lists(st.tuples(st.floats(-5000, 5000, **finite), st.floats(-5000, 5000, **finite)), min_size=1, max_size=20),
)
def test_to_crop_to_image_round_trip(cx: float, cy: float, side: float, size: int, pts) -> None:
    t = CropTransform.from_box(cx, cy, side, size)
    # The transform returns float32: allow float32 rounding of the largest coordinate in play.
    tol = 1e-6 * (5000 + abs(cx) + abs(cy) + side) + 1e-4
    image_pts = np.array(pts)
    np.testing.assert_allclose(t.to_image(t.to_crop(image_pts)), image_pts, rtol=0, atol=tol)
    crop_pts = np.array(pts) / 20.0
    np.testing.assert_allclose(t.to_crop(t.to_image(crop_pts)), crop_pts, rtol=0, atol=tol * t.scale)
    # The box's centre goes to the crop's centre; its sides are `side` long and centred on it.
    np.testing.assert_allclose(t.to_crop(np.array([cx, cy])), [size / 2, size / 2], atol=tol * t.scale)
    x0, y0, x1, y1 = t.box()
    np.testing.assert_allclose([x1 - x0, y1 - y0], [side, side], rtol=0, atol=tol)
    np.testing.assert_allclose([(x0 + x1) / 2, (y0 + y1) / 2], [cx, cy], rtol=0, atol=tol)


@pytest.mark.parametrize("width, height", [(640, 480), (480, 640), (1920, 1080), (300, 300), (101, 37)])
@pytest.mark.parametrize("size", [64, 256])
def test_full_frame_letterboxes_the_whole_image_centred(width: int, height: int, size: int) -> None:
    t = CropTransform.full_frame(width, height, size)
    assert t.scale == pytest.approx(size / max(width, height))
    np.testing.assert_allclose(t.to_crop(np.array([width / 2, height / 2])), [size / 2, size / 2], atol=1e-4)
    (x0, y0), (x1, y1) = t.to_crop(np.array([[0.0, 0.0], [width, height]]))
    # The long side fills the crop exactly, the short side is centred with equal bars.
    assert min(x0, y0) == pytest.approx(0.0, abs=1e-3)
    assert max(x1, y1) == pytest.approx(size, abs=1e-3)
    assert x0 == pytest.approx(size - x1, abs=1e-3) and y0 == pytest.approx(size - y1, abs=1e-3)
    assert x0 >= -1e-3 and y0 >= -1e-3 and x1 <= size + 1e-3 and y1 <= size + 1e-3

    # Cutting a white image: white inside the letterbox, black bars outside.
    image = np.full((height, width, 3), 255, np.uint8)
    out = np.full((size, size, 3), 7, np.uint8)
    t.cut(image, out)
    inside = out[int(np.ceil(y0)) + 1:int(np.floor(y1)) - 1, int(np.ceil(x0)) + 1:int(np.floor(x1)) - 1]
    assert inside.size and (inside == 255).all()
    if y0 > 1.5:
        assert (out[: int(np.floor(y0)) - 1] == 0).all() and (out[int(np.ceil(y1)) + 1:] == 0).all()
    if x0 > 1.5:
        assert (out[:, : int(np.floor(x0)) - 1] == 0).all() and (out[:, int(np.ceil(x1)) + 1:] == 0).all()


def _blob_image(width: int, height: int, x: float, y: float, sigma: float) -> np.ndarray:
    """Black BGR image with a Gaussian dot centred on pixel (x, y), in the red channel only."""
    yy, xx = np.mgrid[0:height, 0:width]
    dot = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2))
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 2] = np.round(255 * dot).astype(np.uint8)
    return image


def _centroid(channel: np.ndarray) -> np.ndarray:
    """Intensity-weighted centre (x, y) in pixel indices."""
    w = channel.astype(np.float64)
    w = np.where(w > 0.05 * w.max(), w, 0.0)
    yy, xx = np.mgrid[0:channel.shape[0], 0:channel.shape[1]]
    return np.array([(w * xx).sum(), (w * yy).sum()]) / w.sum()


@settings(deadline=None, max_examples=50)
@given(
    st.integers(160, 480), st.integers(160, 480),          # image size
    st.floats(0.1, 0.9), st.floats(0.1, 0.9),              # dot position, fraction of the image
    st.floats(0.5, 3.0),                                   # crop scale (crop px per image px)
    st.floats(-0.4, 0.4), st.floats(-0.4, 0.4),            # dot position inside the crop, fraction
    st.sampled_from([64, 128]),
)
def test_cut_samples_the_right_pixels(width: int, height: int, fx: float, fy: float, scale: float,
                                      ox: float, oy: float, size: int) -> None:
    # The dot sits at image pixel (x, y) (pixel centres at +0.5 in continuous coordinates).
    x, y = round(fx * (width - 1)), round(fy * (height - 1))
    sigma = max(2.0, 2.0 / scale)        # visible after the crop's resampling at any scale
    margin = 4 * sigma
    if not (margin <= x <= width - 1 - margin and margin <= y <= height - 1 - margin):
        x, y = width // 2, height // 2
    image = _blob_image(width, height, x, y, sigma)
    side = size / scale
    # A box placing the dot at (0.5 + ox, 0.5 + oy) of the crop, the dot well inside it.
    cx = x + 0.5 - ox * side
    cy = y + 0.5 - oy * side
    t = CropTransform.from_box(cx, cy, side, size)
    out = np.zeros((size, size, 3), np.uint8)
    t.cut(image, out)
    expected = t.to_crop(np.array([x + 0.5, y + 0.5])) - 0.5     # continuous -> pixel index
    # The dot must lie wholly inside the crop (a clipped dot's centroid is biased).
    assume((margin * scale + 1 < expected).all() and (expected < size - 1 - margin * scale).all())
    assert out[..., :2].max() == 0, "channel order: the dot is in the red (last) channel only"
    found = _centroid(out[..., 2])
    np.testing.assert_allclose(found, expected, atol=1.0)
    # Tighter than the spec's 1 px: a half-pixel convention error would show as ~0.5 (scale - 1).
    np.testing.assert_allclose(found, expected, atol=0.25)


def test_cut_identity_copies_the_image() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    t = CropTransform(1.0, 0.0, 0.0, 64)
    out = np.zeros_like(image)
    t.cut(image, out)
    np.testing.assert_array_equal(out, image)
    # A shift by whole pixels moves the pixels by as much.
    t = CropTransform(1.0, -10.0, -5.0, 32)
    out = np.zeros((32, 32, 3), np.uint8)
    t.cut(image, out)
    np.testing.assert_array_equal(out, image[5:37, 10:42])


def test_cut_is_black_outside_the_image() -> None:
    image = np.full((20, 20, 3), 200, np.uint8)
    t = CropTransform.from_box(0.0, 0.0, 40.0, 40)          # centred on the top-left corner
    out = np.full((40, 40, 3), 9, np.uint8)
    t.cut(image, out)
    assert (out[:19, :] == 0).all() and (out[:, :19] == 0).all()
    assert (out[21:40, 21:40] == 200).all()


def test_box_around_margin_and_min_side() -> None:
    pts = np.array([[100.0, 200.0], [160.0, 260.0], [130.0, 380.0]])     # extent 60 x 180
    conf = np.ones(3)
    cx, cy, side = box_around(pts, conf, margin=1.5, min_side=64)
    assert (cx, cy) == pytest.approx((130.0, 290.0))
    assert side == pytest.approx(180 * 1.5)
    cx, cy, side = box_around(pts, conf, margin=1.0, min_side=64)
    assert side == pytest.approx(180.0)
    # min_side wins for a small pose.
    _, _, side = box_around(pts, conf, margin=1.5, min_side=500)
    assert side == 500
    small = np.array([[10.0, 10.0], [12.0, 11.0]])
    cx, cy, side = box_around(small, np.ones(2), margin=2.0, min_side=64)
    assert (cx, cy, side) == pytest.approx((11.0, 10.5, 64.0))


def test_box_around_ignores_low_confidence_joints() -> None:
    pts = np.array([[100.0, 100.0], [200.0, 150.0], [900.0, 900.0], [-500.0, 0.0]])
    conf = np.array([0.9, 0.8, 0.01, 0.04])
    cx, cy, side = box_around(pts, conf, margin=1.0, min_side=16, min_conf=0.05)
    assert (cx, cy, side) == pytest.approx((150.0, 125.0, 100.0))
    # With fewer than two confident joints there is nothing to go on: all joints are used.
    conf = np.array([0.9, 0.01, 0.01, 0.01])
    cx, cy, side = box_around(pts, conf, margin=1.0, min_side=16)
    assert (cx, cy, side) == pytest.approx((200.0, 450.0, 1400.0))


def test_box_around_centres_on_the_torso_across_the_image() -> None:
    # A torso at x 100-120 and an arm drawn out to x 300 (to someone beside the person).
    pts = np.array([[100.0, 100.0], [120.0, 100.0], [110.0, 200.0], [300.0, 150.0]])
    conf = np.array([0.9, 0.9, 0.9, 0.8])
    cx, cy, side = box_around(pts, conf, margin=1.0, min_side=16, centre_joints=(0, 1, 2))
    assert (cx, cy, side) == pytest.approx((110.0, 150.0, 200.0))      # the side still spans the arm
    assert box_around(pts, conf, margin=1.0, min_side=16)[0] == pytest.approx(200.0)
    # Confidence weights the torso joints; unsure ones (under min_conf) do not count.
    conf = np.array([0.9, 0.3, 0.01, 0.8])
    cx, _, _ = box_around(pts, conf, margin=1.0, min_side=16, centre_joints=(0, 1, 2))
    assert cx == pytest.approx((0.9 * 100 + 0.3 * 120) / 1.2)
    # With no confident torso joint the middle of the extent is all there is.
    pts = np.vstack([pts, [[140.0, 300.0]]])                            # and a sure foot
    conf = np.array([0.01, 0.02, 0.0, 0.8, 0.9])
    cx, _, _ = box_around(pts, conf, margin=1.0, min_side=16, centre_joints=(0, 1, 2))
    assert cx == pytest.approx(220.0)


@SETTINGS
@given(st.lists(st.tuples(st.floats(-1e4, 1e4, **finite), st.floats(-1e4, 1e4, **finite), st.floats(0.0, 1.0)),
                min_size=17, max_size=17))
def test_box_around_torso_centre_keeps_the_box_and_lies_among_the_torso(joints: list) -> None:
    pts = np.array([[x, y] for x, y, _ in joints])
    conf = np.array([c for _, _, c in joints])
    torso = (0, 1, 4, 8, 11, 14)
    plain = box_around(pts, conf, 1.35, 64)
    cx, cy, side = box_around(pts, conf, 1.35, 64, centre_joints=torso)
    assert (cy, side) == (plain[1], plain[2])
    sure = [j for j in torso if conf[j] >= 0.05]
    if sure:
        xs = pts[sure, 0]
        assert xs.min() - 1e-6 <= cx <= xs.max() + 1e-6
    else:
        assert cx == plain[0]


def test_points_bbox() -> None:
    assert points_bbox(np.array([[3.0, 4.0], [-1.0, 9.0], [2.0, 2.0]])) == (-1.0, 2.0, 3.0, 9.0)
