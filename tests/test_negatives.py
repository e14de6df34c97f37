"""Person-free crops (train/negatives.py), their loss, their place in the batch sampler, and the
background split they are drawn from."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from train.backgrounds import VAL_BACKGROUNDS, split_backgrounds
from train.datasets import SOURCE_NEGATIVE, MixedBatchSampler, MixedDataset, sample_rng
from train.losses import loss_negative
from train.negatives import NegativeDataset, NegativeOptions, draw_clutter, negative_crop


def write_backgrounds(folder: Path, names: list[str], seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        h, w = rng.integers(90, 200, size=2)
        cv2.imwrite(str(folder / name), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    return folder


# --- the background split ----------------------------------------------------------------

def test_split_backgrounds_keeps_the_held_out_photos_apart(tmp_path: Path) -> None:
    names = ["street.jpg", "room.png", VAL_BACKGROUNDS[0], VAL_BACKGROUNDS[1]]
    folder = write_backgrounds(tmp_path / "bg", names)
    (folder / "notes.txt").write_text("not an image")
    train = {p.name for p in split_backgrounds(folder, "train")}
    val = {p.name for p in split_backgrounds(folder, "val")}
    assert train == {"street.jpg", "room.png"} and val == set(VAL_BACKGROUNDS[:2])


def test_split_backgrounds_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        split_backgrounds(tmp_path / "missing", "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no background images"):
        split_backgrounds(tmp_path / "empty", "train")


# --- the crops ----------------------------------------------------------------------------

def test_negative_crop_shape_and_seeding() -> None:
    photo = np.random.default_rng(1).integers(0, 256, (150, 300, 3), dtype=np.uint8)
    a = negative_crop(photo, 64, np.random.default_rng(5))
    b = negative_crop(photo, 64, np.random.default_rng(5))
    c = negative_crop(photo, 64, np.random.default_rng(6))
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8 and a.flags.c_contiguous
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), size=st.sampled_from([32, 64, 128]))
def test_clutter_always_leaves_a_mark(seed: int, size: int) -> None:
    image = np.zeros((size, size, 3), np.uint8)
    draw_clutter(image, np.random.default_rng(seed))
    assert image.shape == (size, size, 3)
    # Every shape is a few per cent of the side across, centred inside the crop, and never black
    # (greys are at least 10, colours have a value of at least 60).
    assert (image > 0).any()


def test_clutter_probability_zero_leaves_the_photo_alone() -> None:
    photo = np.full((100, 100, 3), 90, np.uint8)
    opts = NegativeOptions(clutter_probability=0.0, noise_probability=0.0)
    crop = negative_crop(photo, 32, np.random.default_rng(0), opts)
    # Only the colour jitter acts on a flat photo: still flat.
    assert crop.reshape(-1, 3).std(axis=0).max() < 1.0


def test_negative_dataset_items(tmp_path: Path) -> None:
    folder = write_backgrounds(tmp_path / "bg", ["a.jpg", "b.jpg"])
    ds = NegativeDataset(split_backgrounds(folder, "train"), input_size=48, seed=3, length=5)
    assert len(ds) == 5
    item = ds[2]
    assert item["image"].shape == (48, 48, 3) and item["image"].dtype == torch.uint8
    assert item["source"] == SOURCE_NEGATIVE and float(item["has_3d"]) == 0.0
    assert float(item["mask_2d"].sum()) == 0.0 and item["joints_3d"].abs().sum() == 0
    assert torch.equal(ds[2]["image"], item["image"])                 # the same crop for the same index
    assert torch.equal(ds.get(2, sample_rng(3, 2))["image"], item["image"])
    with pytest.raises(ValueError, match="no background photos"):
        NegativeDataset([], input_size=48)
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="broken.jpg"):                 # at once, not in a loader worker
        NegativeDataset([tmp_path / "broken.jpg"], input_size=48)


# --- the loss -----------------------------------------------------------------------------

def test_loss_negative_is_zero_for_a_flat_softmax_and_positive_otherwise() -> None:
    flat = torch.zeros(3, 17, 8, 8)
    assert float(loss_negative(flat, torch.tensor([1, 0, 1]))) == pytest.approx(0.0, abs=1e-6)
    peaked = flat.clone()
    peaked[:, :, 2, 3] = 10.0
    assert float(loss_negative(peaked, torch.tensor([1, 1, 1]))) > 5.0
    # Only the negatives count; without any the loss is 0.
    mixed = torch.cat([flat[:1], peaked[:1]])
    assert float(loss_negative(mixed, torch.tensor([True, False]))) == pytest.approx(0.0, abs=1e-6)
    assert float(loss_negative(peaked, torch.tensor([0, 0, 0]))) == 0.0


def test_loss_negative_flattens_the_confidence() -> None:
    from engines.grid import decode

    logits = torch.zeros(1, 17, 8, 8)
    logits[0, :, 4, 4] = 6.0
    logits.requires_grad_(True)
    opt = torch.optim.SGD([logits], lr=100.0)       # the loss averages over 17 joints
    before = decode(torch.softmax(logits.detach().reshape(1, 17, -1), -1).reshape(1, 17, 8, 8).numpy(), 64)[1]
    for _ in range(50):
        opt.zero_grad()
        loss_negative(logits, torch.tensor([1])).backward()
        opt.step()
    after = decode(torch.softmax(logits.detach().reshape(1, 17, -1), -1).reshape(1, 17, 8, 8).numpy(), 64)[1]
    assert before.mean() > 0.85 and after.mean() < 0.2       # 9 of 64 cells: 0.14 when flat


# --- the sampler --------------------------------------------------------------------------

def test_sampler_without_negatives_draws_the_old_stream() -> None:
    old = MixedBatchSampler(100, 20, 0.25, 16, seed=7, steps=5)
    new = MixedBatchSampler(100, 20, 0.25, 16, seed=7, steps=5, n_negative=9, negative_fraction=0.0)
    assert list(old) == list(new)


def test_sampler_mixes_in_negatives() -> None:
    sampler = MixedBatchSampler(100, 20, 0.25, 64, seed=1, steps=40, n_negative=9, negative_fraction=0.1)
    idx = np.array([i for batch in sampler for i, _ in batch])
    negative = idx >= 120
    assert idx.max() < 129 and 0.07 < negative.mean() < 0.13
    people = idx[~negative]
    assert 0.22 < (people >= 100).mean() < 0.28                # real: 0.25 of the people, whatever negatives take
    with pytest.raises(ValueError, match="negative_fraction"):
        MixedBatchSampler(100, 20, 0.25, 8, seed=1, steps=2, n_negative=0, negative_fraction=0.1)
    with pytest.raises(ValueError, match="negative_fraction"):
        MixedBatchSampler(100, 20, 0.25, 8, seed=1, steps=2, n_negative=5, negative_fraction=1.0)


def test_mixed_dataset_reaches_the_negatives_without_real_photos(tmp_path: Path) -> None:
    folder = write_backgrounds(tmp_path / "bg", ["a.jpg"])
    negatives = NegativeDataset(split_backgrounds(folder, "train"), input_size=32, length=4)

    class Synth(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 3

        def get(self, i: int, rng: np.random.Generator) -> dict:
            return {"source": 0}

    mixed = MixedDataset(Synth(), None, seed=0, negative=negatives)
    assert (mixed.n_synth, mixed.n_real, mixed.n_negative) == (3, 0, 4)
    assert mixed[(2, 0)]["source"] == 0 and mixed[(3, 0)]["source"] == SOURCE_NEGATIVE
