"""Training data: shards, the real 2D set, datasets and augmentation, the mixed loader, losses."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from engines.grid import soft_labels
from engines.skeleton import H36M17
from train.datasets import (
    CUT_BAND,
    CUT_HELD_OUT,
    CUT_LEVEL,
    CUT_MARGIN,
    CutView,
    RealDataset,
    SyntheticDataset,
    flip_image,
    flip_joints_2d,
    flip_joints_3d,
    cut_box,
    make_loader,
    real_crop_transform,
)
from train.losses import loss_2d, loss_3d, loss_twin, offsets_target, soft_label_targets, twin_regions
from train.real2d import (
    NEAR_DUPLICATES,
    RealRecord,
    coco_to_h36m,
    default_data_root,
    load_real2d,
    split_real,
    suspicious_labels,
)
from train.shards import ShardSet, ShardWriter, SynthSample, decode_jpeg, encode_jpeg
from poses import LEGS, standing

S = 64                       # tiny synthetic crops
FOCAL = 60.0
J = H36M17.num_joints
IDX = H36M17.index
UNLABELLED_REAL = {"spine", "thorax", "neck_nose", "head_top"}
REAL_DIR = default_data_root() / "real2d_fashion"
needs_real = pytest.mark.skipif(not (REAL_DIR / "keypoints.json").exists(), reason="real2d_fashion data not found")


# --- helpers -----------------------------------------------------------------------------------

def project(joints_3d: np.ndarray, size: int = S, f: float = FOCAL) -> np.ndarray:
    """Pinhole with the principal point at the crop centre."""
    j = np.asarray(joints_3d, np.float64)
    return (f * j[:, :2] / j[:, 2:3] + size / 2.0).astype(np.float32)


def blob_image(h: int, w: int, centre: np.ndarray, sigma: float) -> np.ndarray:
    """Black image with a white gaussian dot at continuous `centre` (pixel centres at +0.5)."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    v = np.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2 * sigma ** 2))
    return np.repeat((255 * v).astype(np.uint8)[..., None], 3, axis=2)


def blob_centre(image: np.ndarray) -> np.ndarray:
    """Intensity-weighted centroid of the bright dot, continuous coordinates."""
    g = image.astype(np.float64).mean(axis=2)
    w = np.clip(g - 0.25 * g.max(), 0, None)
    ys, xs = np.mgrid[0:g.shape[0], 0:g.shape[1]].astype(np.float64) + 0.5
    return np.array([(w * xs).sum(), (w * ys).sum()]) / w.sum()


def make_sample(rng: np.random.Generator, dot_joint: int | None = None) -> SynthSample:
    """A random pose 2.5-3.5 m away, projected at the crop centre; the image is noise, or black
    with one dot on `dot_joint`."""
    j3 = np.column_stack([rng.uniform(-0.6, 0.6, J), rng.uniform(-0.8, 0.8, J), rng.uniform(2.5, 3.5, J)])
    j2 = project(j3)
    if dot_joint is None:
        image = cv2.GaussianBlur(rng.integers(0, 256, (S, S, 3), dtype=np.uint8), (0, 0), 2)
    else:
        image = blob_image(S, S, j2[dot_joint], 1.6)
    return SynthSample(
        jpeg=encode_jpeg(image, 95), joints_2d=j2, joints_3d=j3.astype(np.float32),
        visible=rng.random(J) < 0.8, motion=f"walk_{rng.integers(100)}", background=f"bg{rng.integers(5)}.jpg",
    )


def write_shard(writer: ShardWriter, k: int, count: int, base_seed: int = 7) -> None:
    """Shard k from its own seed, as a generator does."""
    rng = np.random.default_rng([base_seed, k])
    for _ in range(count):
        writer.add(make_sample(rng))


def write_dataset(out: Path, total: int, shard_size: int, meta: dict) -> None:
    writer = ShardWriter(out, shard_size, meta)
    for k in range(writer.shard_index, -(-total // shard_size)):
        write_shard(writer, k, min(shard_size, total - k * shard_size))
    writer.close()


def assert_same_samples(a: ShardSet, b: ShardSet) -> None:
    assert len(a) == len(b)
    for i in range(len(a)):
        assert a.jpeg(i) == b.jpeg(i)
        sa, sb = a.get(i), b.get(i)
        for key in ("joints_2d", "joints_3d", "visible", "motion", "background"):
            np.testing.assert_array_equal(sa[key], sb[key])


# --- shards ------------------------------------------------------------------------------------

def test_shards_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    samples = [make_sample(rng) for _ in range(7)]
    images = [decode_jpeg(s.jpeg) for s in samples]
    meta = {"renderer": "test", "size": [S, S], "seed": 7}
    with ShardWriter(tmp_path / "d", shard_size=3, meta=meta) as w:
        for s in samples:
            w.add(s)
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert manifest["meta"] == meta and manifest["total"] == 7
    assert [s["count"] for s in manifest["shards"]] == [3, 3, 1]
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [
        "manifest.json", "shard_00000.npz", "shard_00001.npz", "shard_00002.npz"]
    with np.load(tmp_path / "d" / "shard_00001.npz") as z:
        assert set(z.files) == {"jpeg", "offsets", "joints_2d", "joints_3d", "visible", "motion", "background"}
        assert z["jpeg"].dtype == np.uint8 and z["offsets"].dtype == np.int64 and len(z["offsets"]) == 4

    ds = ShardSet([tmp_path / "d"])
    assert len(ds) == 7
    for i, s in enumerate(samples):
        got = ds.get(i)
        assert ds.jpeg(i) == s.jpeg
        np.testing.assert_array_equal(got["image"], images[i])
        assert got["image"].shape == (S, S, 3) and got["image"].dtype == np.uint8
        np.testing.assert_array_equal(got["joints_2d"], s.joints_2d)
        np.testing.assert_array_equal(got["joints_3d"], s.joints_3d)
        np.testing.assert_array_equal(got["visible"], s.visible)
        assert got["motion"] == s.motion and got["background"] == s.background
    # Several directories read as one.
    both = ShardSet([tmp_path / "d", tmp_path / "d"])
    assert len(both) == 14 and both.jpeg(10) == samples[3].jpeg
    with pytest.raises(IndexError):
        ds.get(7)


def test_shards_resume_reproduces_an_uninterrupted_run(tmp_path: Path) -> None:
    meta = {"seed": 7, "size": S}
    write_dataset(tmp_path / "whole", total=8, shard_size=3, meta=meta)

    # A run killed while filling shard 2 (shards 0 and 1 written, 2 samples of shard 2 pending).
    out = tmp_path / "resumed"
    w = ShardWriter(out, 3, meta)
    write_shard(w, 0, 3)
    write_shard(w, 1, 3)
    write_shard(w, 2, 2)
    del w
    assert ShardWriter.completed_shards(out) == 2
    assert not list(out.glob("*.tmp"))
    # Resumed; killed again by an error (the context manager does not write the partial shard).
    with pytest.raises(RuntimeError), ShardWriter(out, 3, meta) as w:
        assert w.shard_index == 2
        write_shard(w, 2, 1)
        raise RuntimeError("killed")
    assert ShardWriter.completed_shards(out) == 2
    write_dataset(out, total=8, shard_size=3, meta=meta)
    assert json.loads((out / "manifest.json").read_text())["total"] == 8
    assert_same_samples(ShardSet([out]), ShardSet([tmp_path / "whole"]))

    # A finished directory's partial last shard is dropped and regenerated on resume.
    assert ShardWriter.completed_shards(out) == 2
    write_dataset(out, total=8, shard_size=3, meta=meta)
    assert_same_samples(ShardSet([out]), ShardSet([tmp_path / "whole"]))
    assert ShardWriter.completed_shards(tmp_path / "new") == 0


def test_a_complete_set_is_left_as_it_is(tmp_path: Path) -> None:
    # 8 images in shards of 3 end with a partial shard of 2: asked for 8 again, or fewer, nothing
    # is rendered again or taken away; asked for more, the partial shard is rendered again whole.
    meta = {"seed": 7, "size": S}
    out = tmp_path / "d"
    write_dataset(out, total=8, shard_size=3, meta=meta)
    before = {p.name: p.read_bytes() for p in out.glob("shard_*.npz")}
    for count in (8, 5, 3):
        w = ShardWriter(out, 3, meta, count=count)
        assert w.shard_index == 3 and w.total == 8
        w.close()
        assert {p.name: p.read_bytes() for p in out.glob("shard_*.npz")} == before
    assert ShardWriter(out, 3, meta, count=9).shard_index == 2            # more: shard 2 again
    assert not (out / "shard_00002.npz").exists()
    # A set of one partial shard (4 of 6) asked for 3, or 4: it holds them already.
    write_dataset(tmp_path / "one", total=4, shard_size=6, meta=meta)
    for count in (3, 4):
        assert ShardWriter(tmp_path / "one", 6, meta, count=count).shard_index == 1
    assert (tmp_path / "one" / "shard_00000.npz").exists()


def test_shards_refuse_other_settings(tmp_path: Path) -> None:
    write_dataset(tmp_path / "d", total=4, shard_size=2, meta={"seed": 7, "size": [S, S]})
    ShardWriter(tmp_path / "d", 2, {"size": (S, S), "seed": 7}).close()     # same meta after JSON
    with pytest.raises(ValueError, match=r"different settings \(seed 7 there, 8 now\)"):
        ShardWriter(tmp_path / "d", 2, {"seed": 8, "size": [S, S]})
    with pytest.raises(ValueError, match="shard_size"):
        ShardWriter(tmp_path / "d", 3, {"seed": 7, "size": [S, S]})
    assert len(ShardSet([tmp_path / "d"])) == 4
    with pytest.raises(FileNotFoundError):
        ShardSet([tmp_path / "nothing"])


def test_a_set_without_images_is_named_in_one_line(tmp_path: Path) -> None:
    """A render stopped before its first shard leaves a manifest of no shards. Training, its
    validation and train.evaluate read such a set through ShardSet: one line naming the folder and
    the way out, not numpy's "need at least one array to concatenate" at the first validation."""
    from engines.errors import InputError

    ShardWriter(tmp_path / "empty", 2, {"seed": 7})       # what generate leaves when stopped at once
    with pytest.raises(InputError, match="no images in .*empty: its manifest lists no shards") as err:
        ShardSet([tmp_path / "empty"])
    assert "\n" not in str(err.value) and "python -m train.synth.generate" in str(err.value)
    with pytest.raises(InputError, match="no images"):
        SyntheticDataset([tmp_path / "empty"], input_size=64, augment=False)
    write_dataset(tmp_path / "full", total=2, shard_size=2, meta={"seed": 7})
    assert len(ShardSet([tmp_path / "empty", tmp_path / "full"])) == 2     # one empty set among others is harmless


@pytest.mark.parametrize("damage, says", [
    ("truncated", "is damaged"), ("missing", "is missing"), ("miscounted", "holds 2 samples where its manifest says 5"),
    ("manifest_text", "not a readable shard manifest"), ("manifest_shape", "not a shard manifest")])
def test_a_damaged_set_is_named_in_one_line(tmp_path: Path, damage: str, says: str) -> None:
    """A shard or manifest damaged on disk (a full disk, a copy cut short) is an error the user can
    act on, whichever program reads it, not a traceback from numpy or json."""
    from engines.errors import InputError

    d = tmp_path / "d"
    write_dataset(d, total=4, shard_size=2, meta={"seed": 7})
    shard = d / "shard_00001.npz"
    manifest = d / "manifest.json"
    if damage == "truncated":
        shard.write_bytes(shard.read_bytes()[:100])
    elif damage == "missing":
        shard.unlink()
    elif damage == "miscounted":
        m = json.loads(manifest.read_text())
        m["shards"][1]["count"] = 5
        manifest.write_text(json.dumps(m))
    elif damage == "manifest_text":
        manifest.write_text('{"meta": {"seed": 7}, "shards": [')
    else:
        manifest.write_text(json.dumps({"meta": {}, "shards": {"file": "shard_00000.npz"}}))
    with pytest.raises(InputError, match=says) as err:
        ds = ShardSet([d])
        for i in range(len(ds)):
            ds.get(i)
    assert "\n" not in str(err.value) and "render the set again" in str(err.value)


def test_a_damaged_shard_read_in_a_loader_worker_is_still_one_line(tmp_path: Path) -> None:
    """torch re-raises a worker's error with the worker's whole traceback as its message; the
    training command prints the message, so the loader gives back the line it was raised with."""
    from engines.errors import InputError

    d = tmp_path / "d"
    write_dataset(d, total=8, shard_size=2, meta={})
    shard = d / "shard_00001.npz"
    shard.write_bytes(shard.read_bytes()[:100])
    loader = make_loader(SyntheticDataset([d], input_size=S, augment=False), None, real_fraction=0.0,
                         batch_size=8, num_workers=1, seed=0, steps=1)
    with pytest.raises(InputError) as err:
        for _ in loader:
            pass
    assert str(err.value).startswith(f"shard {shard} is damaged") and "\n" not in str(err.value)


# --- flip --------------------------------------------------------------------------------------

def test_flip_permutation_swaps_sides() -> None:
    perm = H36M17.flip_permutation
    assert perm[IDX("l_wrist")] == IDX("r_wrist") and perm[IDX("pelvis")] == IDX("pelvis")
    assert sorted(perm) == list(range(J))


def test_flip_is_an_involution_and_keeps_2d_and_3d_consistent() -> None:
    rng = np.random.default_rng(1)
    for _ in range(5):
        s = make_sample(rng)
        image = decode_jpeg(s.jpeg)
        np.testing.assert_allclose(project(s.joints_3d), s.joints_2d, atol=1e-4)
        fi, f2, f3 = flip_image(image), flip_joints_2d(s.joints_2d, S), flip_joints_3d(s.joints_3d)
        # The mirrored pose projects onto the mirrored 2D joints, joint by joint.
        np.testing.assert_allclose(project(f3), f2, atol=1e-3)
        # Left and right really swapped: an l_ joint of the mirror is the original r_ one.
        np.testing.assert_allclose(f3[IDX("l_wrist")], s.joints_3d[IDX("r_wrist")] * [-1, 1, 1], atol=1e-6)
        # Negative controls: the check above fails without the permutation or off by a pixel.
        no_perm = s.joints_2d.copy()
        no_perm[:, 0] = S - no_perm[:, 0]
        assert np.abs(project(f3) - no_perm).max() > 1.0
        assert np.abs(project(f3) - (f2 - [1, 0])).max() > 0.99
        # Involution.
        np.testing.assert_array_equal(flip_image(fi), image)
        np.testing.assert_allclose(flip_joints_2d(f2, S), s.joints_2d, atol=1e-5)
        np.testing.assert_allclose(flip_joints_3d(f3), s.joints_3d, atol=0)


def test_synthetic_dataset_augmentation_keeps_labels_on_the_image(tmp_path: Path) -> None:
    """Through the dataset (JPEG, flip, colour jitter): the dot drawn on l_wrist is where the
    output says l_wrist is, or r_wrist after a mirror; 3D still projects onto 2D."""
    rng = np.random.default_rng(2)
    dot = IDX("l_wrist")
    samples = [make_sample(rng, dot_joint=dot) for _ in range(4)]
    with ShardWriter(tmp_path / "d", 10, {}) as w:
        for s in samples:
            w.add(s)
    ds = SyntheticDataset([tmp_path / "d"], input_size=S, augment=True, seed=0)
    plain = SyntheticDataset([tmp_path / "d"], input_size=S, augment=False)
    flips = 0
    for i in range(len(ds)):
        p = plain[i]
        np.testing.assert_array_equal(p["joints_2d"].numpy(), samples[i].joints_2d)
        assert p["has_3d"].item() == 1.0 and p["source"] == 0 and p["mask_2d"].sum() == J
        for draw in range(6):
            out = ds.get(i, np.random.default_rng([draw, i]))
            assert out["image"].shape == (S, S, 3) and out["image"].dtype == torch.uint8
            j2, j3 = out["joints_2d"].numpy(), out["joints_3d"].numpy()
            np.testing.assert_allclose(project(j3), j2, atol=1e-3)
            flipped = bool(np.abs(j3 - samples[i].joints_3d).max() > 0)
            flips += flipped
            where = j2[IDX("r_wrist") if flipped else dot]
            assert np.linalg.norm(blob_centre(out["image"].numpy()) - where) < 0.1
    assert 0 < flips < 24


def test_synthetic_mask_is_inside_the_crop(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    s = make_sample(rng)
    s.joints_2d[0] = [-0.5, 10]
    s.joints_2d[1] = [10, S]
    s.joints_2d[2] = [S - 0.01, 0.0]
    with ShardWriter(tmp_path / "d", 10, {}) as w:
        w.add(s)
    out = SyntheticDataset([tmp_path / "d"], input_size=S, augment=False)[0]
    m = out["mask_2d"].numpy()
    assert m.dtype == np.float32 and m[0] == 0 and m[1] == 0 and m[2] == 1 and m[3:].all()


# --- the mixed loader --------------------------------------------------------------------------

def fake_real_records(tmp_path: Path, n: int = 5) -> list[RealRecord]:
    rng = np.random.default_rng(4)
    records = []
    for i in range(n):
        h, w = 120, 90
        path = tmp_path / f"real{i}.jpg"
        cv2.imwrite(str(path), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        kp = np.column_stack([rng.uniform(20, 70, 17), rng.uniform(10, 110, 17), np.full(17, 2)])
        joints, mask = coco_to_h36m(kp)
        records.append(RealRecord(path, joints, mask, kp[:, :2].astype(np.float32), w, h))
    return records


def batches(loader) -> list[dict]:
    return [{k: v.clone() for k, v in b.items()} for b in loader]


def assert_same_batches(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for k in x:
            assert torch.equal(x[k], y[k]), k


def test_mixed_loader_is_deterministic_and_resumable(tmp_path: Path) -> None:
    write_dataset(tmp_path / "d", total=10, shard_size=4, meta={})
    synth = SyntheticDataset([tmp_path / "d"], input_size=S, augment=True)
    real = RealDataset(fake_real_records(tmp_path), input_size=S, augment=True)
    kw = {"real_fraction": 0.4, "batch_size": 6, "seed": 11, "steps": 8}
    full = batches(make_loader(synth, real, num_workers=0, **kw))
    assert len(full) == 8
    b = full[0]
    assert b["image"].shape == (6, S, S, 3) and b["image"].dtype == torch.uint8
    assert b["joints_2d"].shape == (6, J, 2) and b["mask_2d"].shape == (6, J)
    assert b["joints_3d"].shape == (6, J, 3) and b["has_3d"].shape == (6,)
    sources = torch.cat([x["source"] for x in full])
    has_3d = torch.cat([x["has_3d"] for x in full])
    assert torch.equal(has_3d, (sources == 0).float())
    assert 0.15 < sources.float().mean() < 0.65
    # Same stream again, restarted in the middle, and with worker processes.
    assert_same_batches(full, batches(make_loader(synth, real, num_workers=0, **kw)))
    assert_same_batches(full[5:], batches(make_loader(synth, real, num_workers=0, start_step=5, **kw)))
    assert_same_batches(full[2:], batches(make_loader(synth, real, num_workers=2, start_step=2, **kw)))
    other = batches(make_loader(synth, real, num_workers=0, **{**kw, "seed": 12}))
    assert not torch.equal(other[0]["image"], full[0]["image"])
    only_real = batches(make_loader(synth, real, num_workers=0, **{**kw, "real_fraction": 1.0, "steps": 2}))
    assert all((x["source"] == 1).all() for x in only_real)
    only_synth = batches(make_loader(synth, None, num_workers=0, **{**kw, "real_fraction": 0.0, "steps": 2}))
    assert all((x["source"] == 0).all() for x in only_synth)
    with pytest.raises(ValueError):
        make_loader(synth, None, real_fraction=0.5, batch_size=2, num_workers=0, seed=0, steps=1)


# --- losses ------------------------------------------------------------------------------------

@pytest.mark.parametrize("grid,size", [(32, 256), (8, 64), (5, 100), (1, 16)])
def test_soft_label_targets_match_the_numpy_labels(grid: int, size: int) -> None:
    rng = np.random.default_rng(5)
    pts = rng.uniform(-0.2 * size, 1.2 * size, (3, J, 2)).astype(np.float32)
    centres = (np.arange(grid) + 0.5) * size / grid
    pts[0, :4] = [[centres[0], centres[-1]], [0, 0], [size, size], [centres[grid // 2], size / 2]]
    pts[1, :3] = [[size / 2, size / 2], [size - 1e-3, 1e-3], [centres[-1] + 1e-4, centres[0] - 1e-4]]
    got = soft_label_targets(torch.from_numpy(pts), grid, size)
    assert got.shape == (3, J, grid, grid) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), soft_labels(pts, grid, size), atol=2e-6)
    np.testing.assert_allclose(got.sum(dim=(-1, -2)).numpy(), 1.0, atol=1e-5)


def test_loss_2d_is_minimal_at_the_target() -> None:
    rng = np.random.default_rng(6)
    pts = torch.from_numpy(rng.uniform(0, 64, (2, J, 2)).astype(np.float32))
    t = soft_label_targets(pts, 8, 64)
    mask = torch.ones(2, J)
    best = torch.log(t + 1e-12).requires_grad_(True)
    loss = loss_2d(best, t, mask)
    entropy = -(t * torch.log(t.clamp_min(1e-30))).sum(dim=(-1, -2)).mean()
    assert abs(loss.item() - entropy.item()) < 1e-4
    loss.backward()
    assert best.grad.abs().max() < 1e-6
    for _ in range(20):
        noisy = best.detach() + 0.3 * torch.randn_like(best)
        assert loss_2d(noisy, t, mask) > loss + 1e-4
    # Masked joints do not count; no joint at all gives 0 (with a gradient).
    logits = torch.randn(2, J, 8, 8, requires_grad=True)
    mask[1, :] = 0
    other = logits.detach().clone()
    other[1] += torch.randn(J, 8, 8)
    assert torch.allclose(loss_2d(logits, t, mask), loss_2d(other, t, mask))
    zero = loss_2d(logits, t, torch.zeros(2, J))
    zero.backward()
    assert zero.item() == 0.0


def test_loss_2d_either_side_takes_the_better_assignment_per_sample() -> None:
    rng = np.random.default_rng(7)
    flip = H36M17.flip_permutation
    pts = torch.from_numpy(rng.uniform(0, 64, (3, J, 2)).astype(np.float32))
    t = soft_label_targets(pts, 8, 64)
    mask = torch.ones(3, J)
    mask[2, H36M17.index("l_wrist")] = 0          # an unlabelled joint moves with its label
    # Sample 0 predicts its labels, 1 and 2 predict them mirrored (left on right's place).
    logits = torch.log(t + 1e-6)
    logits[1:] = logits[1:, list(flip)]
    plain = loss_2d(logits, t, mask)
    neither = torch.zeros(3, dtype=torch.bool)
    assert torch.equal(loss_2d(logits, t, mask, neither, flip), plain)
    only_0 = torch.tensor([True, False, False])
    assert torch.allclose(loss_2d(logits, t, mask, only_0, flip), plain)
    every = torch.ones(3, dtype=torch.bool)
    relaxed = loss_2d(logits, t, mask, every, flip)
    assert relaxed < plain - 1.0
    # Every sample now at its best assignment: the same as the labels exchanged where they fit.
    exchanged_t = t.clone()
    exchanged_t[1:] = t[1:, list(flip)]
    exchanged_mask = mask.clone()
    exchanged_mask[1:] = mask[1:, list(flip)]
    assert torch.allclose(relaxed, loss_2d(logits, exchanged_t, exchanged_mask))
    with pytest.raises(ValueError, match="flip_permutation"):
        loss_2d(logits, t, mask, every)


def _pose_apart(grid: int, size: int) -> torch.Tensor:
    """A pose whose every joint lies in its own column, 4 cells from the next: each joint is far
    from its twin."""
    cell = size / grid
    x = (np.arange(J) * 4 % grid + 0.5) * cell
    y = (np.arange(J) * 4 // grid * 4 + 0.5) * cell
    return torch.from_numpy(np.stack([x, y], -1)[None].astype(np.float32))


def test_twin_regions_hold_the_twin_s_place_and_never_the_joint_s_own() -> None:
    grid, size = 32, 128
    flip = H36M17.flip_permutation
    pts = _pose_apart(grid, size)
    t = soft_label_targets(pts, grid, size)
    region = twin_regions(t, flip)
    near = torch.nn.functional.max_pool2d((t > 0).float(), 3, stride=1, padding=1)
    for j in range(J):
        if flip[j] == j:                                   # the spine and the head have no twin
            assert region[0, j].sum() == 0
            continue
        assert torch.equal(region[0, j], near[0, flip[j]])  # far apart: the whole 3x3-grown twin label
        assert (region[0, j] * (t[0, j] > 0)).sum() == 0
    # Twins at the same place (feet together): nothing is left to penalise.
    together = pts.clone()
    for j in range(J):
        if flip[j] > j:
            together[0, flip[j]] = pts[0, j]
    assert twin_regions(soft_label_targets(together, grid, size), flip).sum() == 0


def test_loss_twin_penalises_the_mass_on_the_twin_only() -> None:
    grid, size = 32, 128
    flip = H36M17.flip_permutation
    pts = _pose_apart(grid, size)
    t = soft_label_targets(pts, grid, size)
    mask = torch.ones(1, J)
    own = torch.log(t + 1e-9)
    assert loss_twin(own, t, mask, flip).item() < 1e-6
    # Every joint with a twin puts its mass on the twin's label: a collision.
    swapped = torch.log(t[:, list(flip)] + 1e-9)
    collided = loss_twin(swapped, t, mask, flip)
    assert collided.item() > 10.0                         # -log(1 - q) with q near 1
    # Half the mass on the twin: exactly -log(1/2) for the joints that have one.
    half = torch.log(0.5 * t + 0.5 * t[:, list(flip)] + 1e-12)
    assert abs(loss_twin(half, t, mask, flip).item() - np.log(2.0)) < 1e-4
    # Masked joints, or joints whose twin is masked, do not count; none at all gives 0.
    l_wrist, r_wrist = H36M17.index("l_wrist"), H36M17.index("r_wrist")
    one = torch.zeros(1, J)
    one[0, l_wrist] = one[0, r_wrist] = 1.0
    mixed = own.clone()
    mixed[0, l_wrist] = swapped[0, l_wrist]
    assert loss_twin(mixed, t, one, flip) > 5.0
    one[0, r_wrist] = 0.0
    assert loss_twin(mixed, t, one, flip).item() == 0.0
    logits = torch.randn(1, J, grid, grid, requires_grad=True)
    loss = loss_twin(logits, t, mask, flip)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_offsets_and_loss_3d() -> None:
    roots = (0, 8, 1, 4, 14, 11)
    j3 = torch.randn(3, J, 3)
    target = offsets_target(j3, roots)
    assert target.shape == (3, len(roots), J, 3)
    for r, root in enumerate(roots):
        assert torch.allclose(target[:, r], j3 - j3[:, root:root + 1])
        assert target[:, r, root].abs().max() == 0
    has = torch.tensor([1.0, 0.0, 1.0])
    assert loss_3d(target, target, has).item() == 0.0
    pred = target + 0.1
    assert abs(loss_3d(pred, target, has).item() - 0.03) < 1e-6      # 3 x 0.1^2
    moved = pred.clone()
    moved[1] += 5.0                                                 # a sample without 3D
    assert torch.allclose(loss_3d(moved, target, has), loss_3d(pred, target, has))
    assert loss_3d(moved, target, torch.zeros(3)).item() == 0.0


def test_losses_fit_the_network(small_model_config, tmp_path: Path) -> None:
    from engines.network import build_network

    cfg = small_model_config
    write_dataset(tmp_path / "d", total=4, shard_size=4, meta={})
    synth = SyntheticDataset([tmp_path / "d"], input_size=cfg.input_size)
    real = RealDataset(fake_real_records(tmp_path, 3), input_size=cfg.input_size)
    batch = next(iter(make_loader(synth, real, 0.5, 4, 0, seed=0, steps=1)))
    net = build_network(cfg).train()
    logits, offsets = net.forward_logits(batch["image"])
    l2 = loss_2d(logits, soft_label_targets(batch["joints_2d"], cfg.grid_size, cfg.input_size), batch["mask_2d"])
    l3 = loss_3d(offsets, offsets_target(batch["joints_3d"], cfg.root_indices), batch["has_3d"])
    (l2 + l3).backward()
    assert torch.isfinite(l2) and torch.isfinite(l3) and l2 > 0


# --- the real 2D set ---------------------------------------------------------------------------

@needs_real
def test_real_records_map_coco_to_h36m() -> None:
    records = load_real2d(REAL_DIR)
    assert len(records) == 1000
    expected = np.array([n not in UNLABELLED_REAL for n in H36M17.joint_names])
    raw = json.loads((REAL_DIR / "keypoints.json").read_text())
    by_name = {im["file_name"]: im["id"] for im in raw["images"]}
    kp = {a["image_id"]: np.array(a["keypoints"]).reshape(17, 3) for a in raw["annotations"]}
    for r in records[::50]:
        assert r.path.exists()
        k = kp[by_name[r.path.name]]
        np.testing.assert_allclose(r.joints_2d[IDX("l_shoulder")], k[5, :2], atol=1e-3)
        np.testing.assert_allclose(r.joints_2d[IDX("r_ankle")], k[16, :2], atol=1e-3)
    for r in records:
        np.testing.assert_array_equal(r.mask, expected)          # pelvis + 12, no spine/thorax/neck/head
        np.testing.assert_allclose(r.joints_2d[0], (r.joints_2d[IDX("l_hip")] + r.joints_2d[IDX("r_hip")]) / 2, atol=1e-3)
    # COCO "left" is the person's left: mostly frontal studio photos show it on the image's right.
    ls = np.array([r.joints_2d[IDX("l_shoulder"), 0] > r.joints_2d[IDX("r_shoulder"), 0] for r in records])
    lh = np.array([r.joints_2d[IDX("l_hip"), 0] > r.joints_2d[IDX("r_hip"), 0] for r in records])
    assert ls.mean() > 0.9 and lh.mean() > 0.9
    # ~2 % have broken leg labels (points in the background or on the head).
    bad = [r.path.name for r in records if suspicious_labels(r)]
    assert 10 <= len(bad) <= 40
    assert any(n.startswith("4dc06ae7-") for n in bad)      # its r_ankle lies in the background


@needs_real
def test_real_split_is_deterministic_by_image() -> None:
    records = load_real2d(REAL_DIR)
    train, val = split_real(records, 0.1, seed=0)
    # 100 drawn; 3 of them have a copy under another name among the training photos, and train.
    assert len(train) == 903 and len(val) == 97
    assert not {r.path.name for r in train} & {r.path.name for r in val}
    held_out = {r.path.name for r in val}
    for group in NEAR_DUPLICATES:                 # no copy on both sides
        assert set(group) <= held_out or not set(group) & held_out
    assert sum(bool(set(group) & {r.path.name for r in train}) for group in NEAR_DUPLICATES) == 3
    shuffled = [records[i] for i in np.random.default_rng(9).permutation(len(records))]
    train2, val2 = split_real(shuffled, 0.1, seed=0)
    assert [r.path.name for r in val2] == [r.path.name for r in val]
    assert [r.path.name for r in train2] == [r.path.name for r in train]
    assert {r.path.name for r in split_real(records, 0.1, seed=1)[1]} != {r.path.name for r in val}


@needs_real
def test_real_crops_contain_every_label_without_augmentation() -> None:
    records = load_real2d(REAL_DIR)
    for r in records:                         # the geometry alone, for all of them
        a, t, flipped, _ = real_crop_transform(r.box_points, 256, None, augment=False)
        j = r.joints_2d[r.mask] @ a.T + t
        assert not flipped and ((j >= 0) & (j < 256)).all()
    ds = RealDataset(records[::100], input_size=256, augment=False)
    for i in range(len(ds)):
        out = ds[i]
        assert out["image"].shape == (256, 256, 3) and out["image"].dtype == torch.uint8
        assert out["mask_2d"].sum().item() == 13 and out["source"] == 1 and out["has_3d"].item() == 0
        assert (out["mask_2d"].numpy() == records[i * 100].mask).all()
        assert out["joints_3d"].abs().max() == 0


class DotRealDataset(RealDataset):
    """The real labels over a black image with a dot drawn on one joint."""

    def __init__(self, records, joint: int, **kw) -> None:
        super().__init__(records, **kw)
        self.joint = joint

    sigma = 2.0                                  # image pixels; set per draw

    def load_image(self, i: int) -> np.ndarray:
        r = self.records[i]
        return blob_image(r.height, r.width, r.joints_2d[self.joint], self.sigma)


@needs_real
def test_real_keypoints_land_on_the_warped_image() -> None:
    """The warp (rotation, shift, scale, mirror, pixel centres) moves image and labels alike."""
    records = load_real2d(REAL_DIR)[::97]
    dot = IDX("l_wrist")
    ds = DotRealDataset(records, dot, input_size=128, augment=True)
    checked = flips = 0
    for i in range(len(ds)):
        for draw in range(3):
            seed = [i, draw]
            a, _, flipped, _ = real_crop_transform(records[i].box_points, 128, np.random.default_rng(seed), True)
            ds.sigma = 2.0 / np.sqrt(abs(np.linalg.det(a)))   # 2 crop pixels
            out = ds.get(i, np.random.default_rng(seed))
            j = IDX("r_wrist") if flipped else dot          # the dot's joint after the mirror
            if out["mask_2d"][j] == 0:
                continue
            where = out["joints_2d"][j].numpy()
            if not (4 < where).all() or not (where < 124).all():
                continue
            assert np.linalg.norm(blob_centre(out["image"].numpy()) - where) < 0.1, (i, draw)
            checked += 1
            flips += flipped
    assert checked >= 20 and 0 < flips < checked


@needs_real
def test_real_dataset_with_augmentation() -> None:
    records = load_real2d(REAL_DIR)[:40]
    ds = RealDataset(records, input_size=256, augment=True, seed=0)
    sums = []
    for i in range(len(ds)):
        out = ds[i]
        m = out["mask_2d"].numpy()
        assert set(np.flatnonzero(m)) <= {k for k, n in enumerate(H36M17.joint_names) if n not in UNLABELLED_REAL}
        sums.append(m.sum())
    assert np.mean(np.array(sums) == 13) > 0.7


# --- people cut off by the frame's lower edge (a webcam at a desk) --------------------------------

def hip_knee(pose: np.ndarray) -> tuple[float, float]:
    return (float(pose[[IDX("l_hip"), IDX("r_hip")], 1].mean()),
            float(pose[[IDX("l_knee"), IDX("r_knee")], 1].mean()))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), torso=st.floats(20.0, 200.0), x=st.floats(-500.0, 500.0))
def test_cut_box_cuts_between_hips_and_knees_around_what_is_above(seed: int, torso: float, x: float) -> None:
    pose = standing(x, 1000.0, torso)
    view = cut_box(pose, np.ones(J, bool), np.random.default_rng(seed))
    hip_y, knee_y = hip_knee(pose)
    bottom, top = view.centre[1] + view.side / 2, view.centre[1] - view.side / 2
    assert hip_y + CUT_LEVEL[0] * (knee_y - hip_y) - 1e-9 <= view.cut_y <= hip_y + CUT_LEVEL[1] * (knee_y - hip_y) + 1e-9
    assert -1e-9 <= bottom - view.cut_y <= CUT_BAND[1] * view.side         # the crop ends at the cut, or in a band
    above = pose[pose[:, 1] < view.cut_y]
    assert len(above) == J - 4                                    # everything but knees and ankles
    assert (above[:, 1] > top).all() and (np.abs(above[:, 0] - view.centre[0]) < view.side / 2).all()
    # The margin: what is above the cut spans 1/CUT_MARGIN of the side down to the cut, or less.
    extent = max(np.ptp(above[:, 0]), view.cut_y - above[:, 1].min())
    assert CUT_MARGIN[0] - 1e-9 <= (view.cut_y - top) / extent <= CUT_MARGIN[1] + 1e-9


def test_cut_box_without_a_generator_is_the_held_out_middle() -> None:
    pose = standing(300.0, 900.0, 100.0)
    view = cut_box(pose, np.ones(J, bool), None)
    hip_y, knee_y = hip_knee(pose)
    assert view.cut_y == pytest.approx(hip_y + CUT_HELD_OUT[0] * (knee_y - hip_y))
    assert view.centre[1] + view.side / 2 == pytest.approx(view.cut_y)     # no band
    assert view.centre[0] == pytest.approx(300.0)


def test_a_cut_view_blacks_out_what_lies_below_the_cut() -> None:
    view = CutView(np.array([50.0, 50.0]), 100.0, 80.0)        # image rows 0..100, the frame ends at 80
    a, t = view.transform(10)
    crop = np.full((10, 10, 3), 200, np.uint8)
    view.blank_below_cut(crop, a, t)
    assert (crop[8:] == 0).all() and (crop[:8] == 200).all()   # crop rows 8 and 9 have centres at 85 and 95


def test_cut_box_leaves_people_who_are_not_upright_whole() -> None:
    pose = standing(0.0, 0.0, 100.0)
    lying = pose[:, ::-1].copy()                                # head to the left
    upside_down = pose * np.array([1.0, -1.0])                  # a handstand
    assert cut_box(lying, np.ones(J, bool), None) is None
    assert cut_box(upside_down, np.ones(J, bool), None) is None
    no_hips = np.ones(J, bool)
    no_hips[IDX("l_hip")] = False
    assert cut_box(pose, no_hips, None) is None
    # Sitting, knees at the hips' height: the cut still falls below the hips.
    sitting = pose.copy()
    sitting[[IDX("l_knee"), IDX("r_knee")], 1] = sitting[IDX("l_hip"), 1]
    assert cut_box(sitting, np.ones(J, bool), None).cut_y > sitting[IDX("l_hip"), 1]


def _shard(path: Path, poses: list[np.ndarray], dot: int, size: int = 256) -> None:
    """Rendered-like samples: a black image with one dot on joint `dot`."""
    with ShardWriter(path, 10, {}) as w:
        for pose in poses:
            j3 = np.column_stack([(pose - size / 2) / 100.0, np.full(J, 3.0)]).astype(np.float32)
            w.add(SynthSample(jpeg=encode_jpeg(blob_image(size, size, pose[dot], 2.5), 98),
                              joints_2d=pose.astype(np.float32), joints_3d=j3, visible=np.ones(J, bool),
                              motion="m", background="b"))


def test_synthetic_cut_crops_keep_labels_on_the_image_and_leave_the_legs_at_the_edge(tmp_path: Path) -> None:
    dot = IDX("l_wrist")
    tracking = standing(128.0, 230.0, 0.21 * 256)                   # spans about 0.8 of the image
    small = standing(128.0, 150.0, 0.05 * 256)                      # a search-like image: stays whole
    _shard(tmp_path / "d", [tracking, small], dot)
    whole = SyntheticDataset([tmp_path / "d"], input_size=128, augment=False)
    held_out = SyntheticDataset([tmp_path / "d"], input_size=128, augment=False, cut_fraction=1.0)
    training = SyntheticDataset([tmp_path / "d"], input_size=128, augment=True, cut_fraction=1.0)
    out = held_out[0]
    mask, edge = out["mask_2d"].numpy(), out["edge_2d"].numpy()
    assert (mask + edge == 1).all()
    assert {H36M17.joint_names[k] for k in np.flatnonzero(edge)} == set(LEGS)
    assert np.linalg.norm(blob_centre(out["image"].numpy()) - out["joints_2d"][dot].numpy()) < 0.15
    # The person is larger in the cut crop than in the whole one.
    assert np.ptp(out["joints_2d"][mask > 0, 1].numpy()) > 1.2 * np.ptp(whole[0]["joints_2d"][mask > 0, 1].numpy())
    for key in ("image", "joints_2d", "mask_2d", "edge_2d"):
        np.testing.assert_array_equal(held_out[1][key].numpy(), whole[1][key].numpy())
    assert whole[0]["edge_2d"].sum() == 0
    for draw in range(8):
        got = training.get(0, np.random.default_rng(draw))
        j = got["joints_2d"].numpy()
        mirrored = j[IDX("r_wrist"), 1] < j[IDX("l_wrist"), 1]      # the left wrist is the higher one
        where = j[IDX("r_wrist") if mirrored else dot]
        assert np.linalg.norm(blob_centre(got["image"].numpy()) - where) < 0.3
        assert got["edge_2d"].sum() >= 2 and got["mask_2d"].sum() + got["edge_2d"].sum() == J


def test_real_cut_crops_mark_labelled_legs_as_edge_joints_only(tmp_path: Path) -> None:
    h, w = 900, 600
    pose = standing(300.0, 850.0, 180.0)
    mask = np.ones(J, bool)
    for name in ("spine", "thorax", "neck_nose", "head_top", "pelvis"):
        mask[IDX(name)] = False                                     # COCO has no label for these
    face = pose[[IDX("neck_nose"), IDX("head_top")]]
    path = tmp_path / "p.jpg"
    path.write_bytes(b"")                                           # DotRealDataset draws its own image
    records = [RealRecord(path, pose.astype(np.float32), mask, np.concatenate([pose[mask], face]).astype(np.float32),
                          w, h)]
    dot = IDX("l_wrist")
    held_out = DotRealDataset(records, dot, input_size=128, augment=False, cut_fraction=1.0)
    held_out.sigma = 6.0                                            # image pixels: about 2 crop pixels
    out = held_out[0]
    m, e = out["mask_2d"].numpy(), out["edge_2d"].numpy()
    assert {H36M17.joint_names[k] for k in np.flatnonzero(e)} == set(LEGS)
    assert not (m * e).any() and not (e[~mask]).any() and (m + e == mask).all()
    assert np.linalg.norm(blob_centre(out["image"].numpy()) - out["joints_2d"][dot].numpy()) < 0.15
    training = DotRealDataset(records, dot, input_size=128, augment=True, cut_fraction=1.0)
    training.sigma = 6.0
    mirrored = 0
    for draw in range(8):
        got = training.get(0, np.random.default_rng(draw))
        j = got["joints_2d"].numpy()
        flipped = bool(j[IDX("r_wrist"), 1] < j[IDX("l_wrist"), 1])
        mirrored += flipped
        assert np.linalg.norm(blob_centre(got["image"].numpy()) - j[IDX("r_wrist") if flipped else dot]) < 0.3
        assert got["edge_2d"].sum() >= 2
    assert 0 < mirrored < 8


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_cut_fraction_out_of_range_is_refused(tmp_path: Path, value: float) -> None:
    with pytest.raises(ValueError, match="cut_fraction must be in"):
        RealDataset([], cut_fraction=value)
