"""The real photos' people cut out of their backgrounds (train/real_cutouts.py) and put before others."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from engines.errors import InputError
from engines.skeleton import H36M17
from train.config import DataSection
from train.datasets import RealDataset, warp_matrix
from train.real2d import RealRecord
from train.real_cutouts import (
    CUTOUT_VERSION,
    MANIFEST,
    Cutouts,
    RealBackdrops,
    cutout_path,
    main,
    make_cutouts,
    person_mask,
)

H, W = 240, 180
JOINTS = {   # an upright person, arms a little out, in a 180 x 240 photo
    "pelvis": (90, 130), "r_hip": (78, 130), "r_knee": (76, 172), "r_ankle": (74, 214), "l_hip": (102, 130),
    "l_knee": (104, 172), "l_ankle": (106, 214), "l_shoulder": (110, 72), "l_elbow": (124, 100),
    "l_wrist": (134, 126), "r_shoulder": (70, 72), "r_elbow": (56, 100), "r_wrist": (46, 126),
}
FACE = [(90, 48), (86, 44), (94, 44), (82, 46), (98, 46)]


def studio_photo(path: Path, seed: int = 0) -> tuple[RealRecord, np.ndarray]:
    """A person drawn in a saturated colour before a light, noisy wall, and the drawn figure's mask."""
    rng = np.random.default_rng(seed)
    wall = np.linspace(200, 235, H)[:, None, None] + rng.normal(0, 3, (H, W, 3))
    image = np.clip(wall, 0, 255).astype(np.uint8)
    figure = np.zeros((H, W), np.uint8)
    joints = np.zeros((H36M17.num_joints, 2), np.float32)
    mask = np.zeros(H36M17.num_joints, bool)
    for name, xy in JOINTS.items():
        joints[H36M17.index(name)], mask[H36M17.index(name)] = xy, True
    for j, p in enumerate(H36M17.parents):
        if p >= 0 and mask[j] and mask[p]:
            cv2.line(figure, tuple(map(int, joints[j])), tuple(map(int, joints[p])), 255, 14)
    torso = [JOINTS[n] for n in ("l_shoulder", "r_shoulder", "r_hip", "l_hip")]
    cv2.fillPoly(figure, [np.array(torso, np.int32)], 255)
    cv2.line(figure, (90, 72), (90, 50), 255, 14)
    cv2.circle(figure, (90, 44), 13, 255, -1)
    image[figure > 0] = (40, 60, 170)
    cv2.imwrite(str(path), image)
    box = np.array(FACE + list(JOINTS.values()), np.float32)
    return RealRecord(path, joints, mask, box, W, H), figure


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_person_mask_finds_the_person_on_a_studio_wall(tmp_path: Path) -> None:
    record, figure = studio_photo(tmp_path / "p.png")
    mask = person_mask(cv2.imread(str(record.path)), record)
    assert mask.shape == (H, W) and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 255}
    assert iou(mask, figure) > 0.85


def write_cutouts(tmp_path: Path, n: int = 2) -> tuple[list[RealRecord], list[np.ndarray], Path]:
    records, figures = [], []
    for i in range(n):
        r, f = studio_photo(tmp_path / f"photo{i}.png", seed=i)
        records.append(r)
        figures.append(f)
    out = tmp_path / "cutouts"
    assert make_cutouts(records, out, progress=False) == n
    (out / MANIFEST).write_text(json.dumps({"version": CUTOUT_VERSION}))
    return records, figures, out


def test_make_cutouts_carries_on_where_it_stopped(tmp_path: Path) -> None:
    records, _, out = write_cutouts(tmp_path)
    first = cutout_path(out, records[0])
    stamp = first.stat().st_mtime_ns
    cutout_path(out, records[1]).unlink()
    assert make_cutouts(records, out, progress=False) == 1          # only the missing one
    assert first.stat().st_mtime_ns == stamp
    assert not list(out.glob("*.tmp.png"))
    assert set(Cutouts.load(out, records).masks) == {r.path.name for r in records}


def test_cutouts_are_refused_without_a_manifest_or_of_another_version(tmp_path: Path) -> None:
    records, _, out = write_cutouts(tmp_path, 1)
    (out / MANIFEST).write_text(json.dumps({"version": CUTOUT_VERSION + 1}))
    with pytest.raises(ValueError, match="make them again with python -m train.real_cutouts"):
        Cutouts.load(out, records)
    (out / MANIFEST).unlink()
    with pytest.raises(FileNotFoundError, match="python -m train.real_cutouts --out"):
        Cutouts.load(out, records)


def test_the_command_says_what_is_missing_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["--real2d", str(tmp_path / "nowhere"), "--out", str(tmp_path / "c"), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "keypoints.json" in err and "\n" not in err


def backgrounds(tmp_path: Path) -> list[Path]:
    rng = np.random.default_rng(9)
    path = tmp_path / "bg.png"
    cv2.imwrite(str(path), rng.integers(0, 256, (200, 300, 3), dtype=np.uint8))
    return [path]


def test_a_backdrop_replaces_everything_but_the_person(tmp_path: Path) -> None:
    records, figures, out = write_cutouts(tmp_path, 1)
    backdrops = RealBackdrops(Cutouts.load(out, records), backgrounds(tmp_path), 1.0)
    image = cv2.imread(str(records[0].path))
    a, t = 0.5 * np.eye(2), np.array([8.0, 4.0])
    warp = warp_matrix(a, t)
    crop = cv2.warpAffine(image, warp, (128, 128))
    out_crop = backdrops.apply(crop, warp, records[0].path.name, np.random.default_rng(0))
    person = cv2.warpAffine(figures[0], warp, (128, 128)) > 0
    inside = cv2.erode(person.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    outside = cv2.dilate(person.astype(np.uint8), np.ones((9, 9), np.uint8)) == 0
    kept = np.abs(out_crop[inside].astype(int) - crop[inside]).max(axis=1) <= 1
    assert kept.mean() > 0.97                                                        # the person stays
    assert np.abs(out_crop[outside].astype(int) - crop[outside]).mean() > 30        # the wall is gone


def test_no_backdrop_draws_nothing_at_fraction_zero_or_without_a_mask(tmp_path: Path) -> None:
    records, _, out = write_cutouts(tmp_path, 1)
    crop = np.full((64, 64, 3), 7, np.uint8)
    rng = np.random.default_rng(3)
    state = rng.bit_generator.state
    none = RealBackdrops(Cutouts.load(out, records), backgrounds(tmp_path), 0.0)
    assert none.apply(crop, np.eye(2, 3), records[0].path.name, rng) is crop
    assert rng.bit_generator.state == state
    every = RealBackdrops(Cutouts.load(out, records), backgrounds(tmp_path), 1.0)
    assert every.apply(crop, np.eye(2, 3), "another.jpg", rng) is crop


def test_an_evaluation_s_backdrops_are_the_same_in_any_order(tmp_path: Path) -> None:
    records, _, out = write_cutouts(tmp_path, 2)
    backdrops = RealBackdrops(Cutouts.load(out, records), backgrounds(tmp_path), 1.0)
    ds = RealDataset(records, input_size=64, augment=False, seed=0, backdrops=backdrops)
    forward = [ds[i]["image"].numpy() for i in (0, 1)]
    again = RealDataset(records, input_size=64, augment=False, seed=0, backdrops=backdrops)
    backward = [again[i]["image"].numpy() for i in (1, 0)][::-1]
    plain = RealDataset(records, input_size=64, augment=False, seed=0)
    assert all(np.array_equal(f, b) for f, b in zip(forward, backward))
    assert not np.array_equal(forward[0], plain[0]["image"].numpy())


def test_a_recipe_that_pastes_needs_its_masks_and_backgrounds() -> None:
    with pytest.raises(ValueError, match="paste_fraction > 0 needs real_cutouts_dir and backgrounds_dir"):
        DataSection(synth_dirs=("a",), paste_fraction=0.5, backgrounds_dir="bg").check()
    with pytest.raises(ValueError, match=r"paste_fraction: must be in \[0, 1\]"):
        DataSection(synth_dirs=("a",), paste_fraction=1.5).check()


def test_evaluate_asks_for_the_sets_backdrops_need(tmp_path: Path) -> None:
    from train.evaluate import build_parser, run

    args = build_parser().parse_args(["--model", "m.pt", "--real2d", str(tmp_path), "--real-backdrops",
                                      str(tmp_path)])
    with pytest.raises(InputError, match="give --real2d and --backgrounds too"):
        run(args)
