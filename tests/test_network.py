"""The network: output shapes per fusion, seeded initialisation, and the ONNX export."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from engines.backends.tensorrt_build import MAX_ONNX_OPSET, default_opset, unsupported_ops
from engines.model_config import ModelConfig
from engines.model_file import INPUT_NAME, METADATA_KEY, OUTPUT_NAMES, ModelInfo, export_onnx, read_onnx_info
from engines.network import PoseNet, build_network

FUSIONS = ("none", "conv", "fc")

# ONNX Runtime vs PyTorch on the same small network, float32 on the CPU.
PROBS_ATOL = 1e-5
OFFSETS_ATOL = 1e-4


def crops(cfg: ModelConfig, batch: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(batch, cfg.input_size, cfg.input_size, 3), dtype=np.uint8)


def run_torch(net: PoseNet, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.inference_mode():
        probs, offsets = net(torch.from_numpy(x))
    return probs.numpy(), offsets.numpy()


@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("batch", [1, 3])
def test_output_shapes_and_probabilities(small_model_config: ModelConfig, fusion: str, batch: int) -> None:
    cfg = dataclasses.replace(small_model_config, fusion=fusion)
    net = build_network(cfg)
    probs, offsets = run_torch(net, crops(cfg, batch))
    j, g, r = 17, cfg.grid_size, len(cfg.roots)
    assert probs.shape == (batch, j, g, g) and probs.dtype == np.float32
    assert offsets.shape == (batch, r, j, 3) and offsets.dtype == np.float32
    assert (probs >= 0).all()
    np.testing.assert_allclose(probs.sum(axis=(-2, -1)), 1.0, atol=1e-5)
    assert np.isfinite(offsets).all()


def test_default_config_shapes() -> None:
    from engines.model_file import default_model_config

    cfg = default_model_config()
    assert cfg.fusion in FUSIONS
    net = build_network(cfg)
    probs, offsets = run_torch(net, crops(cfg, 1))
    assert probs.shape == (1, 17, cfg.grid_size, cfg.grid_size)
    assert offsets.shape == (1, len(cfg.roots), 17, 3)


def test_fusions_build_different_networks(small_model_config: ModelConfig) -> None:
    keys = {f: set(build_network(dataclasses.replace(small_model_config, fusion=f)).state_dict()) for f in FUSIONS}
    assert any(k.startswith("fuse.") for k in keys["conv"]) and not any(k.startswith("fuse.") for k in keys["none"])
    assert any(k.startswith("fuse_fc.") for k in keys["fc"]) and not any(k.startswith("fuse_fc.") for k in keys["conv"])


def _same_weights(a: PoseNet, b: PoseNet) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_build_network_is_deterministic_for_a_seed(small_model_config: ModelConfig) -> None:
    a, b = build_network(small_model_config), build_network(small_model_config)
    assert _same_weights(a, b)
    x = crops(small_model_config, 2)
    for out_a, out_b in zip(run_torch(a, x), run_torch(b, x)):
        np.testing.assert_array_equal(out_a, out_b)
    assert not a.training and not b.training


def test_build_network_differs_across_seeds(small_model_config: ModelConfig) -> None:
    a = build_network(small_model_config)
    b = build_network(dataclasses.replace(small_model_config, seed=small_model_config.seed + 1))
    assert not _same_weights(a, b)
    x = crops(small_model_config, 1)
    assert not np.allclose(run_torch(a, x)[1], run_torch(b, x)[1])


def test_build_network_leaves_the_global_rng_alone(small_model_config: ModelConfig) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_network(small_model_config)
    assert torch.equal(torch.rand(3), expected)


@pytest.fixture(scope="module", params=FUSIONS)
def exported(request, small_model_config: ModelConfig, tmp_path_factory: pytest.TempPathFactory):
    cfg = dataclasses.replace(small_model_config, fusion=request.param, seed=7)
    net = build_network(cfg)
    info = ModelInfo(cfg, weights="untrained (seed 7), test", trained=False)
    path = export_onnx(net, info, tmp_path_factory.mktemp("onnx") / "small.onnx")
    return net, info, path


def test_export_writes_posecast_metadata(exported) -> None:
    net, info, path = exported
    assert path.is_file()
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    meta = {p.key: p.value for p in model.metadata_props}
    assert set(meta) == {METADATA_KEY}
    assert model.producer_name == "posecast"
    assert [i.name for i in model.graph.input] == [INPUT_NAME]
    assert [o.name for o in model.graph.output] == list(OUTPUT_NAMES)
    # Only the weights' file, no temporary files next to it.
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_export_has_a_dynamic_batch_axis(exported) -> None:
    net, info, path = exported
    model = onnx.load(str(path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and not dims[0].HasField("dim_value")
    assert [d.dim_value for d in dims[1:]] == [info.config.input_size, info.config.input_size, 3]
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        x = crops(info.config, batch, seed=batch)
        probs, offsets = session.run(list(OUTPUT_NAMES), {INPUT_NAME: x})
        ref_probs, ref_offsets = run_torch(net, x)
        assert probs.shape == ref_probs.shape and offsets.shape == ref_offsets.shape
        assert probs.shape[0] == offsets.shape[0] == batch
        np.testing.assert_allclose(probs, ref_probs, atol=PROBS_ATOL, rtol=0)
        np.testing.assert_allclose(offsets, ref_offsets, atol=OFFSETS_ATOL, rtol=0)


def input_consumers(model: onnx.ModelProto) -> list[str]:
    return [node.op_type for node in model.graph.node if INPUT_NAME in node.input]


def test_export_is_tensorrt_parser_compatible(exported) -> None:
    _, _, path = exported
    model = onnx.load(str(path))
    assert 0 < default_opset(model) <= MAX_ONNX_OPSET
    assert unsupported_ops(model) == []
    # TensorRT takes a UINT8 input only straight into a Cast (NVIDIA/TensorRT#3985).
    assert input_consumers(model) == ["Cast"]


def test_read_onnx_info_round_trips_model_info(exported) -> None:
    _, info, path = exported
    back = read_onnx_info(path)
    assert back == info
    assert back.config == info.config and back.weights == info.weights and back.trained is False
    assert back.metadata() == info.metadata()


def test_metadata_describes_the_model(exported) -> None:
    _, info, _ = exported
    meta = info.metadata()
    cfg = info.config
    assert meta["joint_names"] == list(cfg.skeleton.joint_names)
    assert meta["parents"] == list(cfg.skeleton.parents)
    assert meta["roots"] == list(cfg.roots)
    assert meta["input"]["shape"] == ["batch", cfg.input_size, cfg.input_size, 3]
    assert meta["grid_size"] == cfg.grid_size


def test_export_replaces_a_file_atomically(small_model_config: ModelConfig, tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(b"old")
    info = ModelInfo(small_model_config, weights="w", trained=False)
    export_onnx(build_network(small_model_config), info, path)
    assert read_onnx_info(path) == info
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_each_roots_offset_from_itself_is_exactly_zero(exported) -> None:
    """Alignment re-expresses rows relative to their own root; the network makes that exact."""
    net, info, path = exported
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    _, offsets = session.run(list(OUTPUT_NAMES), {INPUT_NAME: crops(info.config, 3, seed=11)})
    roots = list(info.config.root_indices)
    assert np.all(offsets[:, np.arange(len(roots)), roots, :] == 0.0)
    others = np.ones(offsets.shape[1:3], dtype=bool)
    others[np.arange(len(roots)), roots] = False
    assert np.all(np.abs(offsets[:, others]) > 0)


@pytest.mark.parametrize("fusion", ["none", "conv", "fc"])
def test_2d_probabilities_feed_the_3d_branch_only_when_fused(small_model_config: ModelConfig, fusion: str) -> None:
    """The paper's key idea, wired: the 3D output depends on the 2D probabilities for `conv` and
    `fc` fusion, and not at all for the `none` baseline."""
    net = build_network(dataclasses.replace(small_model_config, fusion=fusion)).train(False)
    captured = {}

    def keep(module, inputs, output):          # hook the logits: d(offsets)/d(logits) flows through probs
        output.retain_grad()
        captured["logits"] = output

    handle = net.logits.register_forward_hook(keep)
    x = torch.from_numpy(crops(small_model_config, 2, seed=3))
    _, offsets = net(x)
    offsets.sum().backward()
    handle.remove()
    grad = captured["logits"].grad
    if fusion == "none":
        assert grad is None or float(grad.abs().max()) == 0.0
    else:
        assert grad is not None and float(grad.abs().max()) > 0.0


# --- test-time mirroring -------------------------------------------------------------------

def mirror_outputs(cfg: ModelConfig, probs: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What the outputs of a mirrored crop mean for the crop itself: grid columns reversed,
    left and right swapped (joints and roots), x negated."""
    flip = list(cfg.skeleton.flip_permutation)
    roots = list(cfg.root_indices)
    root_flip = [roots.index(flip[i]) for i in roots]
    back = offsets[:, root_flip][:, :, flip].copy()
    back[..., 0] *= -1
    return probs[:, flip][..., ::-1], back


@pytest.fixture(scope="module")
def mirrored_pair(small_model_config: ModelConfig) -> tuple[PoseNet, PoseNet]:
    """The same weights (lifter included) without and with test-time mirroring."""
    cfg = dataclasses.replace(small_model_config, lift_width=16, seed=5)
    plain = build_network(cfg)
    mirrored = PoseNet(dataclasses.replace(cfg, flip_test="all"))
    mirrored.load_state_dict(plain.state_dict())
    return plain, mirrored.eval()


def test_flip_test_averages_the_crop_and_its_mirror(mirrored_pair) -> None:
    plain, mirrored = mirrored_pair
    cfg = plain.cfg
    x = crops(cfg, 3, seed=21)
    probs, offsets = run_torch(mirrored, x)
    p1, o1 = run_torch(plain, x)
    p2, o2 = mirror_outputs(cfg, *run_torch(plain, np.ascontiguousarray(x[:, :, ::-1])))
    np.testing.assert_allclose(probs, (p1 + p2) / 2, atol=1e-6, rtol=0)
    np.testing.assert_allclose(offsets, (o1 + o2) / 2, atol=1e-6, rtol=0)
    assert not np.allclose(offsets, o1, atol=1e-4)          # it does change the result
    np.testing.assert_allclose(probs.sum(axis=(-2, -1)), 1.0, atol=1e-5)
    roots = list(cfg.root_indices)
    assert np.all(offsets[:, np.arange(len(roots)), roots, :] == 0.0)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), batch=st.integers(1, 3))
def test_flip_test_is_mirror_symmetric(mirrored_pair, seed: int, batch: int) -> None:
    """A model with mirroring answers a mirrored crop with exactly the mirror of its answer."""
    _, mirrored = mirrored_pair
    cfg = mirrored.cfg
    x = crops(cfg, batch, seed=seed)
    probs, offsets = run_torch(mirrored, x)
    mp, mo = mirror_outputs(cfg, *run_torch(mirrored, np.ascontiguousarray(x[:, :, ::-1])))
    np.testing.assert_allclose(mp, probs, atol=1e-6, rtol=0)
    np.testing.assert_allclose(mo, offsets, atol=1e-6, rtol=0)


def test_exact_2d_replaces_the_lifters_input_only(mirrored_pair) -> None:
    """train/evaluate.py --exact-2d: the lifter reads the given joints at full confidence; the 2D
    output stays the network's, and with mirroring the given joints are mirrored with the crop."""
    from engines.network import decode_grid

    plain, mirrored = mirrored_pair
    cfg = plain.cfg
    x = torch.from_numpy(crops(cfg, 2, seed=8))
    exact = torch.rand(2, cfg.skeleton.num_joints, 2) * cfg.input_size
    plain.eval()
    with torch.no_grad():
        p0, o0 = plain(x)
        p1, o1 = plain(x, exact)
        points, conf = decode_grid(p0, cfg.input_size, cfg.grid_size)
        delta = plain.lifter(exact, torch.ones_like(conf)) - plain.lifter(points, conf)
    torch.testing.assert_close(p1, p0, atol=0, rtol=0)
    torch.testing.assert_close(o1 - o0, delta.reshape(o0.shape) * plain.own_root_mask, atol=1e-5, rtol=0)
    # Mirroring: the crop and the mirror of its joints, or the mirrored crop and the joints as they
    # are in it, give mirror answers.
    flip = list(cfg.skeleton.flip_permutation)
    exact_m = exact[:, flip].clone()
    exact_m[..., 0] = cfg.input_size - exact_m[..., 0]
    _, o = run_torch_exact(mirrored, x, exact)
    _, om = mirror_outputs(cfg, *run_torch_exact(mirrored, x.flip(2), exact_m))
    np.testing.assert_allclose(om, o, atol=1e-5, rtol=0)


def run_torch_exact(net: PoseNet, x: torch.Tensor, exact: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        probs, offsets = net(x.contiguous(), exact)
    return probs.numpy(), offsets.numpy()


def test_flip_test_is_off_while_training(mirrored_pair) -> None:
    # Copies: a forward pass in train mode updates BatchNorm's running statistics.
    plain, mirrored = (copy.deepcopy(net).train() for net in mirrored_pair)
    x = torch.from_numpy(crops(plain.cfg, 2, seed=4))
    with torch.no_grad():
        a, b = plain(x), mirrored(x)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert a[0].shape[0] == 2


def test_flip_test_follows_the_training_flip_convention(mirrored_pair) -> None:
    """Tied to train/datasets.py's mirror augmentation rather than to the implementation: the
    mirror's contribution has its mean position (over the whole grid: linear in the probabilities,
    so no near-tie of an untrained network's peaks matters) at flip_joints_2d of the mirror's, and
    its offsets from each root are flip_joints_3d of the mirror's offsets from that root's mirror."""
    from engines.grid import cell_centres
    from train.datasets import flip_joints_2d, flip_joints_3d

    def mean_position(probs: np.ndarray) -> np.ndarray:
        centres = cell_centres(probs.shape[-1], size)
        return np.stack([(probs.sum(axis=-2) * centres).sum(-1), (probs.sum(axis=-1) * centres).sum(-1)], axis=-1)

    plain, mirrored = mirrored_pair
    cfg, size = plain.cfg, plain.cfg.input_size
    x = crops(cfg, 2, seed=8)
    probs, offsets = run_torch(mirrored, x)
    p1, o1 = run_torch(plain, x)
    p2, o2 = run_torch(plain, np.ascontiguousarray(x[:, :, ::-1]))
    back_probs, back_offsets = 2 * probs - p1, 2 * offsets - o1          # the mirror's contribution
    points, mirror_points = mean_position(back_probs), mean_position(p2)
    for b in range(len(x)):
        np.testing.assert_allclose(points[b], flip_joints_2d(mirror_points[b], size), atol=1e-3)
    names = cfg.skeleton.joint_names
    for r, root in enumerate(cfg.roots):
        other = root.replace("l_", "#").replace("r_", "l_").replace("#", "r_")
        np.testing.assert_allclose(back_offsets[:, r], flip_joints_3d(o2[:, list(cfg.roots).index(other)]),
                                   atol=1e-5)
        assert other in names


def test_flip_test_exports_to_onnx(mirrored_pair, tmp_path: Path) -> None:
    _, mirrored = mirrored_pair
    info = ModelInfo(mirrored.cfg, weights="mirrored, test", trained=False)
    path = export_onnx(mirrored, info, tmp_path / "mirrored.onnx")
    assert read_onnx_info(path).config.flip_test == "all"
    model = onnx.load(str(path))
    assert unsupported_ops(model) == [] and input_consumers(model) == ["Cast"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 4):
        x = crops(info.config, batch, seed=30 + batch)
        probs, offsets = session.run(list(OUTPUT_NAMES), {INPUT_NAME: x})
        ref_probs, ref_offsets = run_torch(mirrored, x)
        np.testing.assert_allclose(probs, ref_probs, atol=PROBS_ATOL, rtol=0)
        np.testing.assert_allclose(offsets, ref_offsets, atol=OFFSETS_ATOL, rtol=0)


def test_flip_test_needs_mirror_closed_roots(small_model_config: ModelConfig) -> None:
    cfg = dataclasses.replace(small_model_config, roots=("pelvis", "l_hip"), flip_test="3d")
    with pytest.raises(ValueError, match="flip_test needs the roots"):
        cfg.check()
    dataclasses.replace(cfg, flip_test="none").check()
    with pytest.raises(ValueError, match="flip_test must be one of none, 3d, all"):
        dataclasses.replace(small_model_config, flip_test="yes").check()


def test_flip_test_3d_mirrors_the_offsets_and_keeps_the_crops_own_2d(mirrored_pair) -> None:
    """`3d`: the tracker's points and score come from the crop alone, the 3D from both views."""
    plain, mirrored = mirrored_pair
    three_d = PoseNet(dataclasses.replace(plain.cfg, flip_test="3d"))
    three_d.load_state_dict(plain.state_dict())
    x = crops(plain.cfg, 3, seed=12)
    probs, offsets = run_torch(three_d.eval(), x)
    p_plain, _ = run_torch(plain, x)
    _, o_all = run_torch(mirrored, x)
    np.testing.assert_allclose(probs, p_plain, atol=1e-6, rtol=0)
    np.testing.assert_allclose(offsets, o_all, atol=1e-6, rtol=0)


# --- the finer grid (grid_stride 4) --------------------------------------------------------

def fine_config(cfg: ModelConfig, **changes) -> ModelConfig:
    fine = dataclasses.replace(cfg, grid_stride=4, grid_size=cfg.input_size // 4, **changes)
    fine.check()
    return fine


def randomise_fine_correction(net: PoseNet, seed: int) -> None:
    """The correction starts at zero; tests of what it computes need it non-zero."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.logits_fine.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))


@pytest.mark.parametrize("fusion", FUSIONS)
def test_fine_grid_starts_as_the_coarse_model(small_model_config: ModelConfig, fusion: str) -> None:
    """A stride-8 model's weights in a stride-4 network give the same outputs: each 2 x 2 block of
    fine cells sums to the coarse cell's probability, and the 3D branch is unchanged (no lifter;
    the lifter reads the decoded joints, which the finer grid moves)."""
    coarse_cfg = dataclasses.replace(small_model_config, fusion=fusion, seed=3)
    coarse = build_network(coarse_cfg)
    fine = build_network(fine_config(coarse_cfg))
    missing, unexpected = fine.load_state_dict(coarse.state_dict(), strict=False)
    assert unexpected == [] and {k.split(".")[0] for k in missing} == {"lat4", "head2d_fine", "logits_fine"}
    x = crops(coarse_cfg, 2, seed=4)
    p8, o8 = run_torch(coarse, x)
    p4, o4 = run_torch(fine, x)
    g = coarse_cfg.grid_size
    assert p4.shape == (2, 17, 2 * g, 2 * g)
    pooled = p4.reshape(2, 17, g, 2, g, 2).sum(axis=(3, 5))
    np.testing.assert_allclose(pooled, p8, atol=1e-6, rtol=0)
    np.testing.assert_allclose(o4, o8, atol=1e-6, rtol=0)
    # Within a coarse cell the four fine cells are equal until the correction trains.
    np.testing.assert_allclose(p4[..., 0::2, 0::2], p4[..., 1::2, 1::2], atol=1e-7, rtol=0)


def test_fine_grid_correction_moves_mass_within_and_across_cells(small_model_config: ModelConfig) -> None:
    fine = build_network(fine_config(small_model_config, seed=3))
    randomise_fine_correction(fine, 0)
    probs, _ = run_torch(fine, crops(fine.cfg, 2, seed=4))
    # An untrained network's probabilities are near uniform: compare log-probabilities.
    assert np.abs(np.log(probs[..., 0::2, 0::2]) - np.log(probs[..., 1::2, 1::2])).max() > 1e-3
    np.testing.assert_allclose(probs.sum(axis=(-2, -1)), 1.0, atol=1e-5)


def test_fine_grid_with_lifter_and_mirroring_exports_to_onnx(small_model_config: ModelConfig, tmp_path: Path) -> None:
    cfg = fine_config(small_model_config, lift_width=16, seed=5, flip_test="all")
    net = build_network(cfg)
    randomise_fine_correction(net, 1)
    info = ModelInfo(cfg, weights="fine grid, test", trained=False)
    path = export_onnx(net, info, tmp_path / "fine.onnx")
    back = read_onnx_info(path).config
    assert (back.grid_stride, back.grid_size) == (4, cfg.input_size // 4)
    model = onnx.load(str(path))
    assert unsupported_ops(model) == [] and input_consumers(model) == ["Cast"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = crops(cfg, 3, seed=8)
    probs, offsets = session.run(list(OUTPUT_NAMES), {INPUT_NAME: x})
    ref_probs, ref_offsets = run_torch(net, x)
    assert probs.shape == (3, 17, cfg.grid_size, cfg.grid_size)
    np.testing.assert_allclose(probs, ref_probs, atol=PROBS_ATOL, rtol=0)
    np.testing.assert_allclose(offsets, ref_offsets, atol=OFFSETS_ATOL, rtol=0)
    # Mirroring stays exact on the finer grid: a mirrored crop gets the mirrored answer.
    mp, mo = mirror_outputs(cfg, *run_torch(net, np.ascontiguousarray(x[:, :, ::-1])))
    np.testing.assert_allclose(mp, ref_probs, atol=1e-6, rtol=0)
    np.testing.assert_allclose(mo, ref_offsets, atol=1e-6, rtol=0)


def test_grid_stride_is_checked(small_model_config: ModelConfig) -> None:
    with pytest.raises(ValueError, match="grid_stride must be one of 8, 4"):
        dataclasses.replace(small_model_config, grid_stride=2, grid_size=32).check()
    with pytest.raises(ValueError, match="grid_size must be input_size / grid_stride = 16"):
        dataclasses.replace(small_model_config, grid_stride=4).check()
