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
    _head,
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


@pytest.mark.parametrize("damage", ["cut short", "not a PNG", "empty"])
def test_a_damaged_mask_is_one_line_when_the_cutouts_are_loaded(tmp_path: Path, damage: str) -> None:
    """Found before training or an evaluation starts (it was a traceback from a loader worker
    half-way through), with how to make it again; doing that mends it."""
    from train.evaluate import held_out_backdrops

    records, _, out = write_cutouts(tmp_path)
    path = cutout_path(out, records[1])
    data = path.read_bytes()
    path.write_bytes({"cut short": data[:len(data) // 2], "not a PNG": b"not a png", "empty": b""}[damage])
    said = f"the cut-out {path} is damaged: delete it and make it again with python -m train.real_cutouts --out {out}"
    with pytest.raises(InputError) as err:
        Cutouts.load(out, records)
    assert str(err.value) == said
    with pytest.raises(InputError) as err:
        held_out_backdrops(out, records, tmp_path / "bg")          # train.evaluate --real-backdrops
    assert str(err.value) == said
    path.unlink()
    assert make_cutouts(records, out, progress=False) == 1
    assert set(Cutouts.load(out, records).masks) == {r.path.name for r in records}


def test_a_mask_damaged_after_loading_is_still_one_line(tmp_path: Path) -> None:
    records, _, out = write_cutouts(tmp_path, 1)
    backdrops = RealBackdrops(Cutouts.load(out, records), backgrounds(tmp_path), 1.0)
    cutout_path(out, records[0]).write_bytes(b"")
    with pytest.raises(InputError, match=r"is damaged: delete it and make it again with python -m train\.real_cutouts"):
        backdrops.mask_of(records[0].path.name)


def test_the_command_says_what_is_missing_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # Exit 2 and the tool's name, as every python -m train.X tool says a bad input (README).
    assert main(["--real2d", str(tmp_path / "nowhere"), "--out", str(tmp_path / "c"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("python -m train.real_cutouts: error:") and "keypoints.json" in err and "\n" not in err
    with pytest.raises(SystemExit) as stop:
        main(["--bogus", "--out", str(tmp_path / "c")])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and err.startswith("python -m train.real_cutouts: error: unrecognized") and "\n" not in err


def test_sigterm_stops_the_command_in_one_line_keeping_the_masks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture) -> None:
    """`timeout` or a closed terminal stops it as Ctrl-C does (it ended silently, killed outright)."""
    import os
    import signal

    import train.real_cutouts as real_cutouts

    records, _, _ = write_cutouts(tmp_path, 1)
    monkeypatch.setattr(real_cutouts, "load_real2d", lambda folder: records)

    def stopped(*args: object, **kwargs: object) -> int:
        os.kill(os.getpid(), signal.SIGTERM)
        return 0

    class Unhandled(Exception):
        pass

    def unhandled(signum: int, frame: object) -> None:     # in place of dying with the test session
        raise Unhandled("SIGTERM reached the default handling")

    monkeypatch.setattr(real_cutouts, "make_cutouts", stopped)
    before = signal.signal(signal.SIGTERM, unhandled)
    try:
        assert main(["--out", str(tmp_path / "c"), "--no-progress"]) == 143
    finally:
        signal.signal(signal.SIGTERM, before)
    err = capsys.readouterr().err.strip()
    assert err.startswith("python -m train.real_cutouts: stopped by SIGTERM") and "run the same command again" in err
    assert "\n" not in err


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
    assert rng.bit_generator.state == state                  # a photo without a mask draws nothing either


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


def test_a_hand_raised_above_the_shoulders_is_not_taken_for_the_face(tmp_path: Path) -> None:
    """The face points are the box points above the shoulders: a wrist up there pulled the face's
    centre, the end of the head's surely-the-person line, off the face and onto the wall."""
    record, _ = studio_photo(tmp_path / "p.png")
    j2, box = record.joints_2d.copy(), record.box_points.copy()
    wrist = np.array([170.0, 10.0], np.float32)                      # the left hand up and out
    old = j2[H36M17.index("l_wrist")].copy()
    j2[H36M17.index("l_wrist")] = wrist
    box[np.all(np.isclose(box, old), axis=1)] = wrist
    raised = RealRecord(record.path, j2, record.mask, box, W, H)
    _, face = _head(raised)
    np.testing.assert_allclose(face, np.mean(FACE, axis=0), atol=1e-4)


def test_labels_that_join_into_no_limb_give_an_empty_mask(tmp_path: Path) -> None:
    """Two lone joints (a wrist and an ankle): GrabCut had no foreground to start from, and its
    assertion ended `python -m train.real_cutouts` in a traceback."""
    record, _ = studio_photo(tmp_path / "p.png")
    mask = np.zeros(H36M17.num_joints, bool)
    for name in ("l_wrist", "r_ankle"):
        mask[H36M17.index(name)] = True
    lone = RealRecord(record.path, record.joints_2d, mask, record.joints_2d[mask].copy(), W, H)
    cut = person_mask(cv2.imread(str(lone.path)), lone)
    assert cut.shape == (H, W) and not cut.any()


def test_an_empty_mask_leaves_the_photo_on_its_wall(tmp_path: Path) -> None:
    records, _, out = write_cutouts(tmp_path, 1)
    cv2.imwrite(str(cutout_path(out, records[0])), np.zeros((H, W), np.uint8))
    backdrops = RealBackdrops(Cutouts.load(out, records), backgrounds(tmp_path), 1.0)
    crop = np.full((64, 64, 3), 7, np.uint8)
    assert backdrops.apply(crop, np.eye(2, 3), records[0].path.name, np.random.default_rng(0)) is crop


def _real2d(tmp_path: Path) -> Path:
    """A COCO folder of one studio photo."""
    folder = tmp_path / "real2d"
    (folder / "images").mkdir(parents=True)
    record, _ = studio_photo(folder / "images" / "p.png")
    coco_names = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
                  "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
                  "right_knee", "left_ankle", "right_ankle"]
    h36m = {"left_shoulder": "l_shoulder", "right_shoulder": "r_shoulder", "left_elbow": "l_elbow",
            "right_elbow": "r_elbow", "left_wrist": "l_wrist", "right_wrist": "r_wrist", "left_hip": "l_hip",
            "right_hip": "r_hip", "left_knee": "l_knee", "right_knee": "r_knee", "left_ankle": "l_ankle",
            "right_ankle": "r_ankle"}
    kp = []
    for i, name in enumerate(coco_names):
        x, y = FACE[i] if i < 5 else JOINTS[h36m[name]]
        kp += [float(x), float(y), 2]
    (folder / "keypoints.json").write_text(json.dumps({
        "categories": [{"keypoints": coco_names}],
        "images": [{"id": 1, "file_name": "p.png", "width": W, "height": H}],
        "annotations": [{"image_id": 1, "keypoints": kp}]}))
    return folder


def test_a_folder_of_another_version_is_not_carried_on(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Following "make them again" into the same folder kept every old mask (they exist) and
    wrote a manifest of the new version over them: stale masks, taken as new ones."""
    real2d, out = _real2d(tmp_path), tmp_path / "cutouts"
    assert main(["--real2d", str(real2d), "--out", str(out), "--no-progress"]) == 0
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["version"] == CUTOUT_VERSION and manifest["complete"] is True
    (out / MANIFEST).write_text(json.dumps({"version": CUTOUT_VERSION - 1}))
    capsys.readouterr()
    assert main(["--real2d", str(real2d), "--out", str(out), "--no-progress"]) == 2      # bad input: 2, as every tool
    err = capsys.readouterr().err.strip()
    assert "holds cut-outs of version" in err and "delete them" in err and "\n" not in err
    assert json.loads((out / MANIFEST).read_text()) == {"version": CUTOUT_VERSION - 1}


def test_an_unfinished_folder_is_refused(tmp_path: Path) -> None:
    records, _, out = write_cutouts(tmp_path, 1)
    (out / MANIFEST).write_text(json.dumps({"version": CUTOUT_VERSION, "complete": False}))
    with pytest.raises(ValueError, match="unfinished"):
        Cutouts.load(out, records)


def test_evaluate_says_an_unreadable_held_out_background_in_one_line(tmp_path: Path) -> None:
    from train.backgrounds import VAL_BACKGROUNDS
    from train.evaluate import held_out_backdrops

    records, _, out = write_cutouts(tmp_path, 1)
    bg = tmp_path / "bg"
    bg.mkdir()
    (bg / VAL_BACKGROUNDS[0]).write_bytes(b"not a jpeg")
    with pytest.raises(InputError, match=f"--real-backdrops: background .*{VAL_BACKGROUNDS[0]} is not an image"):
        held_out_backdrops(out, records, bg)


def test_against_refuses_the_same_photos_seen_otherwise(tmp_path: Path) -> None:
    from train.eval_against import compare

    def run(split: str, cut: bool) -> dict:
        return {"cut": cut, "real": {"split": split, "2d": {"pck": 0.5},
                                     "per_sample": {"ids": ["a", "b"], "clusters": None, "pck_hits": [1, 2],
                                                    "pck_joints": [2, 2]}}}

    assert len(compare(run("val", False), run("val", False), Path("o.json"))) == 1
    with pytest.raises(InputError, match="split 'val', this run with 'val, before held-out backgrounds'"):
        compare(run("val, before held-out backgrounds", False), run("val", False), Path("o.json"))
    with pytest.raises(InputError, match="--cut"):
        compare(run("val", True), run("val", False), Path("o.json"))


def test_an_evaluation_before_backdrops_resamples_them_with_the_photos(tmp_path: Path) -> None:
    """97 photos before 7 backgrounds share them: the interval and the pairing must resample the
    backgrounds whole, crossed with the photos, or they come out too narrow."""
    from engines.model_file import default_model_config
    from train.evaluate import real_metrics

    records, _, out = write_cutouts(tmp_path, 2)
    backdrops = RealBackdrops(Cutouts.load(out, records), backgrounds(tmp_path), 1.0)
    ds = RealDataset(records, input_size=128, augment=False, seed=0, backdrops=backdrops)
    items = [ds[i] for i in range(2)]
    assert set(backdrops.shown) == {r.path.name for r in records} and set(backdrops.shown.values()) == {"bg.png"}
    cfg = default_model_config()
    rng = np.random.default_rng(0)
    n = len(items)
    result = {"probs": rng.random((n, 17, cfg.grid_size, cfg.grid_size)).astype(np.float32),
              "offsets": np.zeros((n, len(cfg.roots), 17, 3), np.float32),
              "joints_2d": np.stack([it["joints_2d"].numpy() for it in items]),
              "mask_2d": np.stack([it["mask_2d"].numpy() for it in items]),
              "background": np.array(["bg.png", "bg.png"], dtype=object)}
    res = real_metrics(result, cfg)
    assert res["per_sample"]["clusters"] == ["0", "1"] and res["per_sample"]["backgrounds"] == ["bg.png"] * 2



def test_a_bystander_stands_beside_the_person_behind_them_or_now_and_then_in_front(tmp_path: Path) -> None:
    """Another photo's person (painted green here) joins the pasted person: beside them, about
    their height; behind them most of the time (the person whole), in front of them now and then."""
    records, figures = [], []
    for i in range(2):
        r, f = studio_photo(tmp_path / f"photo{i}.png", seed=i)
        if i == 1:
            image = cv2.imread(str(r.path))
            image[f > 0] = (40, 200, 40)
            cv2.imwrite(str(r.path), image)
        records.append(r)
        figures.append(f)
    out = tmp_path / "cutouts"
    make_cutouts(records, out, progress=False)
    (out / MANIFEST).write_text(json.dumps({"version": CUTOUT_VERSION}))
    backdrops = RealBackdrops(Cutouts.load(out, records), backgrounds(tmp_path), 1.0, bystanders=1.0,
                              sources={r.path.name: r.path for r in records})
    image = cv2.imread(str(records[0].path))
    warp = warp_matrix(0.4 * np.eye(2), np.array([28.0, 16.0]))      # the person 96 px tall in the middle
    crop = cv2.warpAffine(image, warp, (128, 128))
    person = cv2.warpAffine(figures[0], warp, (128, 128)) > 0
    inside = cv2.erode(person.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    # The same draws make the same backdrop: the bystander's pixels are what differs from it.
    alone = RealBackdrops(Cutouts.load(out, records), backgrounds(tmp_path), 1.0)
    whole, covered = 0, 0
    for seed in range(24):
        got = backdrops.apply(crop, warp, records[0].path.name, np.random.default_rng(seed)).astype(int)
        before = alone.apply(crop, warp, records[0].path.name, np.random.default_rng(seed)).astype(int)
        ys, xs = np.nonzero(np.abs(got - before).max(axis=2) > 40)
        assert len(ys) > 150                                       # a bystander in every crop
        assert 40 < np.ptp(ys) < 115          # at most about their height (96 px), partly behind them
        assert np.median(got[ys, xs], axis=0).tolist() == pytest.approx([40, 200, 40], abs=25)   # green
        kept = (np.abs(got[inside] - crop[inside]).max(axis=1) <= 1).mean()
        whole += kept > 0.97
        covered += kept < 0.9
    assert whole >= 12 and covered >= 2


def test_bystanders_need_pasted_people_and_two_training_masks(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bystander_fraction > 0 needs paste_fraction > 0"):
        DataSection(synth_dirs=("a",), bystander_fraction=0.5).check()
    with pytest.raises(ValueError, match=r"bystander_fraction: must be in \[0, 1\]"):
        DataSection(synth_dirs=("a",), bystander_fraction=-0.1).check()
    records, _, out = write_cutouts(tmp_path, 2)
    with pytest.raises(ValueError, match="at least two photos to stand by"):
        # The held-out photo's mask is there, but only the training photos may stand by.
        RealBackdrops(Cutouts.load(out, records), backgrounds(tmp_path), 1.0, bystanders=0.5,
                      sources={records[0].path.name: records[0].path})


def test_evaluate_gives_held_out_people_held_out_bystanders(tmp_path: Path) -> None:
    from train.evaluate import build_parser, held_out_backdrops, run

    args = build_parser().parse_args(["--model", "m.pt", "--real2d", str(tmp_path), "--bystanders"])
    with pytest.raises(InputError, match="give --real-backdrops too"):
        run(args)
    records, _, out = write_cutouts(tmp_path, 2)
    bg = tmp_path / "bg"
    bg.mkdir()
    from train.backgrounds import VAL_BACKGROUNDS

    cv2.imwrite(str(bg / VAL_BACKGROUNDS[0]), np.random.default_rng(1).integers(0, 256, (200, 300, 3), np.uint8))
    plain, beside = held_out_backdrops(out, records, bg), held_out_backdrops(out, records, bg, bystanders=True)
    assert plain.bystanders == 0.0 and beside.bystanders == 1.0
    assert beside.sources == {r.path.name: r.path for r in records}     # the evaluated photos' people only
    shown = [RealDataset(records, input_size=128, augment=False, seed=0, backdrops=b)[0]["image"].numpy()
             for b in (plain, beside)]
    assert not np.array_equal(*shown)


@pytest.mark.parametrize("damage", ["missing", "garbled"])
def test_a_bystanders_photo_gone_or_damaged_is_one_line(tmp_path: Path, damage: str) -> None:
    """The bystander's photo is read as training goes (a loader worker): a file deleted or
    overwritten since is one line, as the pasted person's own photo is (RealDataset.load_image),
    not a FileNotFoundError traceback."""
    records, _, out = write_cutouts(tmp_path, 2)
    backdrops = RealBackdrops(Cutouts.load(out, records), backgrounds(tmp_path), 1.0, bystanders=1.0,
                              sources={r.path.name: r.path for r in records})
    image = cv2.imread(str(records[0].path))
    warp = warp_matrix(0.4 * np.eye(2), np.array([28.0, 16.0]))
    crop = cv2.warpAffine(image, warp, (128, 128))
    if damage == "missing":
        records[1].path.unlink()
    else:
        records[1].path.write_bytes(b"not a photo")
    with pytest.raises(InputError, match=f"cannot read the real photo {records[1].path}"):
        for seed in range(8):           # a bystander in every crop: the other photo's person
            backdrops.apply(crop, warp, records[0].path.name, np.random.default_rng(seed))


def _extent(mask: np.ndarray, warp: np.ndarray) -> tuple[float, float, float]:
    """Top, bottom and middle (x) of a photo's mask in a crop's pixels."""
    ys, xs = np.nonzero(mask)
    x = warp[0, 0] * xs + warp[0, 1] * ys + warp[0, 2]
    y = warp[1, 0] * xs + warp[1, 1] * ys + warp[1, 2]
    return float(y.min()), float(y.max()), 0.5 * float(x.min() + x.max())


@pytest.mark.parametrize("flipped", [False, True])
def test_a_bystander_stands_beside_the_person_in_a_mirrored_crop_too(tmp_path: Path, flipped: bool) -> None:
    """Mirrored or not (a flipped crop, and the bystander drawn either way round), the bystander's
    middle is 0.15 to 0.6 of the person's height to one side of theirs, their feet near theirs."""
    records, _, out = write_cutouts(tmp_path, 2)
    backdrops = RealBackdrops(Cutouts.load(out, records), backgrounds(tmp_path), 1.0, bystanders=1.0,
                              sources={r.path.name: r.path for r in records})
    name, size = records[0].path.name, 256       # room on both sides: nothing of the bystander cut off
    mask = backdrops.mask_of(name)
    s, f = 0.5, (-1.0 if flipped else 1.0)
    warp = np.array([[f * s, 0.0, 128.0 - f * s * 90.0], [0.0, s, 60.0]])
    alpha = cv2.warpAffine(mask, warp, (size, size)).astype(np.float32)[..., None] / 255.0
    top, bottom, middle = _extent(mask, warp)
    height = bottom - top + 1
    for seed in range(24):
        placed = backdrops._bystander(name, mask, warp, alpha, np.random.default_rng(seed))
        assert placed is not None
        ys, xs = np.nonzero(placed[1][..., 0] > 0.5)
        aside = abs(0.5 * (xs.min() + xs.max()) - middle) / height
        assert 0.15 - 0.03 < aside < 0.6 + 0.03, (seed, aside)
        assert bottom - 0.15 * height - 3 < ys.max() < bottom + 0.1 * height + 3, seed


class _LowDraws:
    """Each of a bystander's draws at the low end of its range: the smallest, nearest, highest-
    standing bystander (feet 0.15 of the person's height above theirs), behind them."""

    def integers(self, n: int) -> int:
        return 0

    def uniform(self, low: float, high: float) -> float:
        return low

    def random(self) -> float:
        return 0.99

    def choice(self, options: list[float]) -> float:
        return options[0]


@pytest.mark.parametrize("flipped", [False, True])
def test_a_bystander_beside_a_person_the_crop_cuts_is_cut_with_them(tmp_path: Path, flipped: bool) -> None:
    """A crop that cuts its person off (cut_fraction: between hips and knees) shows part of them:
    the bystander is sized and stood by the whole person, so the crop's edge cuts them too. Sized
    by what it showed, they were a whole person smaller than the person, feet standing in the crop."""
    records, _, out = write_cutouts(tmp_path, 2)
    backdrops = RealBackdrops(Cutouts.load(out, records), backgrounds(tmp_path), 1.0, bystanders=1.0,
                              sources={r.path.name: r.path for r in records})
    name, size = records[0].path.name, 128
    mask = backdrops.mask_of(name)
    s, f = 0.8, (-1.0 if flipped else 1.0)
    warp = np.array([[f * s, 0.0, 64.0 - f * s * 90.0], [0.0, s, -15.0]])   # head in, knees down out of the crop
    alpha = cv2.warpAffine(mask, warp, (size, size)).astype(np.float32)[..., None] / 255.0
    top, bottom, _ = _extent(mask, warp)
    assert bottom - 0.15 * (bottom - top) > size + 5            # even the highest-standing bystander's feet are out
    placed = backdrops._bystander(name, mask, warp, alpha, _LowDraws())  # type: ignore[arg-type]
    assert placed is not None
    ys, _ = np.nonzero(placed[1][..., 0] > 0.5)
    assert ys.max() == size - 1                                 # their legs go on past the crop's edge, as the person's
    assert ys.min() < top + 0.25 * (bottom - top) + 3           # three quarters of the person's height at least
