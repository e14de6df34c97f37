"""Typed YAML configs: the shipped files, user overrides, and errors a user can act on."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from engines.config import config_path, from_dict, load_config, load_yaml, merge, to_dict
from engines.errors import ConfigError, PosecastError
from engines.model_config import ModelConfig
from streamer.config import PipelineConfig, load_pipeline_config


def write(tmp_path: Path, text: str, name: str = "user.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(call, *args, **kwargs) -> str:
    """The message of the ConfigError that `call` raises; it must be one line."""
    with pytest.raises(ConfigError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message, message
    assert isinstance(info.value, PosecastError) and info.value.exit_code == 2
    return message


def load_model_config(user_file: Path | None = None) -> ModelConfig:
    return load_config(ModelConfig, "model.yaml", user_file)


# --- the shipped configs ----------------------------------------------------------------------

def test_shipped_pipeline_config_loads() -> None:
    cfg = load_pipeline_config()
    assert isinstance(cfg, PipelineConfig)
    assert cfg.inference.backend == "auto"
    assert cfg.inference.batch_size >= 1
    assert cfg.ring.file_slots >= cfg.inference.batch_size + 1
    assert cfg.alignment.method in ("average", "lstsq", "weighted")
    assert 0 <= cfg.tracking.track_min_score <= 1 and cfg.tracking.roi_margin >= 1
    assert isinstance(cfg.source.open_timeout_s, float)


def test_shipped_model_config_loads() -> None:
    cfg = load_model_config()
    assert cfg.input_size == 256 and cfg.grid_size == 32
    assert len(cfg.widths) == 4 and len(cfg.depths) == 4
    assert cfg.fusion in ("none", "conv", "fc")
    assert "pelvis" in cfg.roots
    assert cfg.root_indices == cfg.skeleton.indices(cfg.roots)
    assert isinstance(cfg.widths, tuple) and isinstance(cfg.mean_bgr[0], float)


def test_shipped_configs_round_trip_through_to_dict() -> None:
    for cls, name in ((PipelineConfig, "pipeline.yaml"), (ModelConfig, "model.yaml")):
        cfg = load_config(cls, name)
        assert from_dict(cls, to_dict(cfg)) == cfg
        # Every key of the shipped file is a field, and every field is in the shipped file.
        assert to_dict(cfg).keys() == load_yaml(config_path(name)).keys()


# --- user overrides -----------------------------------------------------------------------------

def test_user_file_overrides_only_the_keys_it_names(tmp_path: Path) -> None:
    default = load_pipeline_config()
    user = write(tmp_path, "tracking:\n  roi_margin: 1.5\ninference:\n  backend: onnxruntime\n")
    cfg = load_pipeline_config(user)
    assert cfg.tracking.roi_margin == 1.5
    assert cfg.inference.backend == "onnxruntime"
    # Untouched keys, in touched and untouched sections, keep the shipped defaults.
    assert cfg.tracking.detect_min_score == default.tracking.detect_min_score
    assert cfg.inference.batch_size == default.inference.batch_size
    assert cfg.ring == default.ring and cfg.source == default.source and cfg.alignment == default.alignment


def test_overrides_lay_over_the_user_file(tmp_path: Path) -> None:
    user = write(tmp_path, "inference:\n  batch_size: 4\n")
    cfg = load_pipeline_config(user, overrides={"inference": {"threads": 1}})
    assert cfg.inference.batch_size == 4 and cfg.inference.threads == 1


def test_an_empty_user_file_changes_nothing(tmp_path: Path) -> None:
    assert load_pipeline_config(write(tmp_path, "# nothing\n")) == load_pipeline_config()


@pytest.mark.parametrize("word", ["off", "no", "false", "Off", "OFF"])
def test_an_unquoted_off_is_the_choice_off(tmp_path: Path, word: str) -> None:
    """YAML 1.1 reads `off` (and no, false) as false; where "off" is a choice, it means that."""
    assert load_pipeline_config(write(tmp_path, f"filter:\n  method: {word}\n")).filter.method == "off"
    assert load_pipeline_config(write(tmp_path, "filter:\n  method: 'off'\n")).filter.method == "off"


def test_a_boolean_is_still_refused_where_off_is_no_choice(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'filter\.method' must be one of .* \(got True\)"):
        load_pipeline_config(write(tmp_path, "filter:\n  method: on\n"))      # "on" is no choice here
    with pytest.raises(ConfigError, match=r"'alignment\.method' must be one of .* \(got False\)"):
        load_pipeline_config(write(tmp_path, "alignment:\n  method: off\n"))


def test_the_principal_point_is_a_pair_or_the_image_centre(tmp_path: Path) -> None:
    assert load_pipeline_config().coordinates.principal_px is None
    cfg = load_pipeline_config(write(tmp_path, "coordinates:\n  principal_px: [300, 250.5]\n"))
    assert cfg.coordinates.principal_px == (300.0, 250.5)


def test_model_config_override(tmp_path: Path) -> None:
    cfg = load_model_config(write(tmp_path, "input_size: 128\ngrid_size: 16\nfusion: fc\n"))
    assert (cfg.input_size, cfg.grid_size, cfg.fusion) == (128, 16, "fc")
    assert cfg.widths == load_model_config().widths


def test_merge_is_recursive_and_does_not_mutate() -> None:
    base = {"a": {"x": 1, "y": 2}, "b": 3}
    out = merge(base, {"a": {"y": 5}, "c": 4})
    assert out == {"a": {"x": 1, "y": 5}, "b": 3, "c": 4}
    assert base == {"a": {"x": 1, "y": 2}, "b": 3}


# --- errors -------------------------------------------------------------------------------------

def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    message = config_error(load_pipeline_config, path)
    assert "not found" in message and str(path) in message


def test_a_folder_is_not_a_config(tmp_path: Path) -> None:
    message = config_error(load_pipeline_config, tmp_path)
    assert str(tmp_path) in message and "is a folder; give a YAML file" in message


def test_an_empty_path_is_not_the_current_folder() -> None:
    assert "the config file's path is empty" in config_error(load_pipeline_config, "")


def test_a_file_that_is_not_utf8_says_so(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("tracking:\n  # r\u00e9glages\n  min_roi_px: 32\n".encode("latin-1"))
    message = config_error(load_pipeline_config, path)
    assert str(path) in message and "is not UTF-8 text" in message and "save it as UTF-8" in message


def test_a_key_given_twice_is_refused(tmp_path: Path) -> None:
    """YAML lets the last one win silently: an edit below an old value would seem to do nothing."""
    path = write(tmp_path, "tracking:\n  min_roi_px: 32\n  roi_margin: 2\n  min_roi_px: 64\n")
    message = config_error(load_pipeline_config, path)
    assert "line 4" in message and "the key 'min_roi_px' is given twice" in message
    assert "unhashable" in config_error(load_pipeline_config, write(tmp_path, "? [a, b]\n: 1\n", "u.yaml"))


def test_anchors_and_merge_keys_share_settings(tmp_path: Path) -> None:
    # '<<: *base' is how YAML shares settings between sections; a key beside it overrides, and is no
    # duplicate. A key twice beside it still is.
    path = write(tmp_path, "x-base: &base {min_roi_px: 40, roi_margin: 1.5}\n"
                           "tracking:\n  <<: *base\n  roi_margin: 2.0\n", "m.yaml")
    data = load_yaml(path)
    assert data["tracking"] == {"min_roi_px": 40, "roi_margin": 2.0}
    path = write(tmp_path, "tracking:\n  <<: {min_roi_px: 40}\n  roi_margin: 2\n  roi_margin: 3\n", "d.yaml")
    assert "the key 'roi_margin' is given twice" in config_error(load_pipeline_config, path)


def test_an_empty_section_changes_nothing(tmp_path: Path) -> None:
    assert load_pipeline_config(write(tmp_path, "tracking:\nfilter:\n  method: off\n")).tracking == \
        load_pipeline_config().tracking


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "inference:\n  batch_size: 8\n  threads: a: b\n")
    message = config_error(load_pipeline_config, path)
    assert str(path) in message and "not valid YAML" in message
    assert "line 3" in message


def test_tab_indentation_is_invalid_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "inference:\n\tbatch_size: 4\n")
    message = config_error(load_pipeline_config, path)
    assert "not valid YAML" in message and "line 2" in message


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    message = config_error(load_pipeline_config, path)
    assert str(path) in message and "mapping" in message


@pytest.mark.parametrize(
    "text, key",
    [
        ("inferenc:\n  batch_size: 4\n", "inferenc"),
        ("inference:\n  batch_sise: 4\n", "inference.batch_sise"),
        ("tracking:\n  roi_margin: 1.5\n  extra: 1\n", "tracking.extra"),
    ],
)
def test_unknown_key(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path, text)
    message = config_error(load_pipeline_config, path)
    assert str(path) in message
    assert f"unknown key '{key}'" in message
    assert "known keys here" in message


@pytest.mark.parametrize(
    "text, suggestion",
    [
        ("inference:\n  batch_sise: 4\n", "did you mean 'batch_size'?"),
        ("trackng:\n  roi_margin: 1.5\n", "did you mean 'tracking'?"),
        ("filter:\n  kalman:\n    proces_noise: 0.1\n", "did you mean 'process_noise'?"),
    ],
)
def test_an_unknown_key_suggests_the_key_it_misspells(tmp_path: Path, text: str, suggestion: str) -> None:
    message = config_error(load_pipeline_config, write(tmp_path, text))
    assert suggestion in message and "known keys here" in message, message


def test_an_unknown_key_far_from_any_suggests_none(tmp_path: Path) -> None:
    message = config_error(load_pipeline_config, write(tmp_path, "inference:\n  zzz: 4\n"))
    assert "did you mean" not in message and "known keys here" in message, message


@pytest.mark.parametrize("text, key", [("1: 2\nfoo: 3\n", "1"), ("inference:\n  7: 2\n  foo: 3\n", "inference.7")])
def test_keys_that_are_numbers_beside_words_are_unknown_keys(tmp_path: Path, text: str, key: str) -> None:
    # sorted() of 1 and 'foo' raised TypeError: a traceback, exit 1.
    message = config_error(load_pipeline_config, write(tmp_path, text))
    assert f"unknown key '{key}'" in message, message


def test_unknown_model_key(tmp_path: Path) -> None:
    path = write(tmp_path, "fusoin: fc\n")
    message = config_error(load_model_config, path)
    assert "unknown key 'fusoin'" in message and "fusion" in message and str(path) in message


@pytest.mark.parametrize(
    "text, key, expected",
    [
        ("inference:\n  batch_size: eight\n", "inference.batch_size", "an integer"),   # string for int
        ("inference:\n  batch_size: '8'\n", "inference.batch_size", "an integer"),     # quoted number
        ("inference:\n  batch_size: true\n", "inference.batch_size", "an integer"),    # bool for int
        ("inference:\n  batch_size: 8.5\n", "inference.batch_size", "an integer"),     # float for int
        ("inference:\n  threads: 2.0\n", "inference.threads", "an integer"),           # float for int
        ("tracking:\n  roi_margin: yes\n", "tracking.roi_margin", "a number"),         # bool for float
        ("tracking:\n  roi_margin: wide\n", "tracking.roi_margin", "a number"),
        ("inference:\n  backend: tensorflow\n", "inference.backend", "one of 'auto'"),
        ("alignment:\n  method: median\n", "alignment.method", "one of"),
        ("tracking:\n  roi_centre: head\n", "tracking.roi_centre", "one of 'torso', 'box'"),
        ("tracking:\n  folder_images: photos\n", "tracking.folder_images", "one of 'shots', 'sequence'"),
        ("tracking: 3\n", "tracking", "a mapping"),
        ("tracking:\n  roi_margin: .nan\n", "tracking.roi_margin", "a finite number"),
        ("tracking:\n  roi_margin: .inf\n", "tracking.roi_margin", "a finite number"),
        ("source:\n  read_timeout_s: .nan\n", "source.read_timeout_s", "a finite number"),
        ("publish:\n  meta_interval_s: .nan\n", "publish.meta_interval_s", "a finite number"),
        ("coordinates:\n  principal_px: [1, 2, 3]\n", "coordinates.principal_px", "a list of 2 items"),
        ("coordinates:\n  principal_px: [5, 1e9]\n", "coordinates.principal_px[1]",
         "a number (got the text '1e9'; YAML reads an exponent as a number only in the form 1.0e+9)"),
        # A quoted number has no exponent to blame.
        ("tracking:\n  roi_margin: '1.5'\n", "tracking.roi_margin", "a number (got the text '1.5'; write it without quotes)"),
    ],
)
def test_wrong_type_names_the_key_and_file(tmp_path: Path, text: str, key: str, expected: str) -> None:
    path = write(tmp_path, text)
    message = config_error(load_pipeline_config, path)
    assert str(path) in message
    assert f"'{key}' must be {expected}" in message


@pytest.mark.parametrize(
    "text, expected",
    [
        ("widths: 24\n", "'widths' must be a list"),
        ("widths: [24, 40, x, 160]\n", "'widths[2]' must be an integer"),
        ("mean_bgr: [1, 2]\n", "'mean_bgr' must be a list of 3 items"),
        ("input_size: 256.0\n", "'input_size' must be an integer"),
        ("fusion: attention\n", "'fusion' must be one of 'none', 'conv', 'fc'"),
    ],
)
def test_wrong_model_types(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    message = config_error(load_model_config, path)
    assert str(path) in message and expected in message


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("inference:\n  batch_size: 0\n", r"inference\.batch_size must be between 1 and 256 \(got 0\)"),
        ("inference:\n  batch_size: 1000\n", r"inference\.batch_size must be between 1 and 256"),
        ("inference:\n  threads: -1\n", r"inference\.threads must be between 0 and 256 \(0: the runtime's default\) \(got -1\)"),
        ("tracking:\n  roi_margin: 0.5\n", r"tracking\.roi_margin must be between 1 and 8 \(got 0\.5\)"),
        ("tracking:\n  detect_min_score: 1.5\n", r"tracking\.detect_min_score must be between 0 and 1"),
        ("tracking:\n  track_min_score: 2\n", r"tracking\.track_min_score must be between 0 and 1"),
        ("tracking:\n  track_min_score: -0.1\n", r"tracking\.track_min_score must be between 0 and 1"),
        ("tracking:\n  refine_min_score: 1.5\n", r"tracking\.refine_min_score must be between 0 and 1"),
        ("tracking:\n  min_roi_px: 8\n", r"tracking\.min_roi_px must be between 16 and 8192 pixels \(got 8\)"),
        ("tracking:\n  new_track_iou: 1.5\n", r"tracking\.new_track_iou must be between 0 and 1 \(got 1\.5\)"),
        ("tracking:\n  takeover_min_iou: -0.2\n", r"tracking\.takeover_min_iou must be between 0 and 1 \(got -0\.2\)"),
        ("tracking:\n  shot_cut_diff: 300\n", r"tracking\.shot_cut_diff must be between 0 \(off\) and 255"),
        ("tracking:\n  shot_cut_ratio: 0.5\n", r"tracking\.shot_cut_ratio must be >= 1 \(got 0\.5\)"),
        ("coordinates:\n  root_min_joints_in_view: -1\n", r"coordinates\.root_min_joints_in_view must be between 0 and 17 joints \(got -1\)"),
        ("alignment:\n  window: 9\n", r"alignment\.window must be between 0 and 4 \(got 9\)"),
        ("ring:\n  live_slots: 1\n", r"ring\.live_slots must be between 2 and 1024 frames \(got 1\)"),
        ("filter:\n  file_lag: -1\n", r"filter\.file_lag must be between 0 and 100 frames"),
        ("filter:\n  file_lag: 0.5\n", r"'filter\.file_lag' must be an integer"),
        ("filter:\n  root:\n    kalman:\n      measurement_noise: 0\n",
         r"filter\.root\.kalman\.measurement_noise must be between 1e-06 and 1000 \(got 0\.0\)"),
        ("filter:\n  root:\n    max_depth_rate: -1\n", r"filter\.root\.max_depth_rate must be between 0 and 100 per second \(0: no bound\) \(got -1\.0\)"),
        ("filter:\n  root:\n    max_depth_rate: .inf\n", r"'filter\.root\.max_depth_rate' must be a finite number"),
        ("coordinates:\n  principal_px: [320, .nan]\n", r"'coordinates\.principal_px\[1\]' must be a finite number"),
        ("coordinates:\n  principal_px: [320]\n", r"'coordinates\.principal_px' must be a list of 2 items"),
        ("coordinates:\n  focal_px: .inf\n", r"'coordinates\.focal_px' must be a finite number"),
        ("source:\n  read_timeout_s: 0\n", r"source\.read_timeout_s must be between 0\.01 and 3600 s \(got 0\.0\)"),
        ("source:\n  max_image_side: 10\n", r"source\.max_image_side must be between 64 and 16384 pixels \(got 10\)"),
        # Values that passed once and then overflowed or underflowed a stage into a traceback.
        ("filter:\n  root:\n    max_depth_rate: 30000\n", r"filter\.root\.max_depth_rate must be between 0 and 100"),
        ("filter:\n  kalman:\n    process_noise: 1.0e+300\n", r"filter\.kalman\.process_noise must be between 1e-06 and 1000"),
        ("filter:\n  kalman:\n    measurement_noise: 1.0e-300\n",
         r"filter\.kalman\.measurement_noise must be between 1e-06 and 1000"),
        ("filter:\n  joints_2d:\n    outlier_gate: 1.0e+300\n", r"filter\.joints_2d\.outlier_gate must be between 0 and 100"),
        ("filter:\n  one_euro:\n    beta: 1.0e+300\n", r"filter\.one_euro\.beta must be between 0 and 10000"),
        ("coordinates:\n  focal_px: 1.0e-300\n", r"coordinates\.focal_px must be between 1 and 1,000,000 pixels"),
        ("coordinates:\n  principal_px: [-100000, 1.0e+30]\n", r"coordinates\.principal_px must be two numbers of pixels within 100000"),
        ("coordinates:\n  root_min_joints_in_view: 100\n", r"coordinates\.root_min_joints_in_view must be between 0 and 17 joints"),
        ("publish:\n  hwm: 3000000000\n", r"publish\.hwm must be between 1 and 1,000,000 messages"),
        ("publish:\n  meta_interval_s: -1\n", r"publish\.meta_interval_s must be between 0\.01 and 3600 s \(got -1\.0\)"),
        ("publish:\n  wait_subscribers: -1\n", r"publish\.wait_subscribers must be between 0 and 1000 subscribers \(got -1\)"),
        # Checked at load, not only by ZeroMQ when publishing (whose error named --bind, not the key).
        ("publish:\n  bind: ''\n", r"publish\.bind must be an interface's address or name without spaces, .* \(got ''\)"),
        ("publish:\n  bind: not an address\n", r"publish\.bind must be .* \(got 'not an address'\)"),
        ("ring:\n  file_slots: 100000\n", r"ring\.file_slots must be between 2 and 1024 frames"),
        ("tracking:\n  roi_margin: 1.0e+9\n", r"tracking\.roi_margin must be between 1 and 8"),
        ("source:\n  open_timeout_s: -1\n", r"source\.open_timeout_s must be between 0\.01 and 3600 s \(got -1\.0\)"),
        # Cross-section rule: the ring must hold a whole batch and one more frame.
        ("inference:\n  batch_size: 8\nring:\n  file_slots: 8\n",
         r"ring\.file_slots \(8\) must exceed inference\.batch_size \(8\)"),
        ("inference:\n  batch_size: 40\n", r"ring\.file_slots \(32\) must exceed inference\.batch_size \(40\): a batch of "
                                       r"at most 31 \(--batch-size\), or more ring\.file_slots in a --config file"),
    ],
)
def test_out_of_range_pipeline_values(tmp_path: Path, text: str, pattern: str) -> None:
    path = write(tmp_path, text)
    message = config_error(load_pipeline_config, path)
    assert message.startswith(f"{path}: "), message
    assert re.search(pattern, message), message


def test_file_slots_one_more_than_batch_is_enough(tmp_path: Path) -> None:
    cfg = load_pipeline_config(write(tmp_path, "inference:\n  batch_size: 8\nring:\n  file_slots: 9\n"))
    assert cfg.ring.file_slots == 9


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("grid_size: 16\n", r"grid_size must be input_size / grid_stride = 32 .*got 16"),
        ("input_size: 128\n", r"grid_size must be input_size / grid_stride = 16 .*got 32"),
        ("input_size: 100\ngrid_size: 12\n", r"input_size must be a multiple of 32"),
        # torch was asked for exabytes: a traceback.
        ("input_size: 99999968\ngrid_size: 12499996\n", r"input_size must be a multiple of 32, from 64 to 1024 \(got 99999968\)"),
        ("roots: [thorax, r_hip]\n", r"roots must include the skeleton origin 'pelvis'"),
        ("roots: [pelvis, chest]\n", r"roots: unknown joint 'chest' \(the h36m17 joints are: pelvis, "),
        ("roots: []\n", r"roots must name at least one joint"),
        ("roots: [pelvis, pelvis]\n", r"roots must not repeat a joint"),
        ("widths: [24, 40, 80]\n", r"widths and depths must each list 4 stages"),
        ("std_bgr: [1, 0, 1]\n", r"std_bgr must be positive"),
    ],
)
def test_out_of_range_model_values(tmp_path: Path, text: str, pattern: str) -> None:
    path = write(tmp_path, text)
    message = config_error(load_model_config, path)
    assert message.startswith(f"{path}: "), message
    assert re.search(pattern, message), message


def test_missing_key_is_reported(tmp_path: Path) -> None:
    data = to_dict(load_pipeline_config())
    del data["tracking"]["roi_margin"]
    with pytest.raises(ConfigError, match=r"mine\.yaml: missing key 'tracking\.roi_margin'"):
        from_dict(PipelineConfig, data, source="mine.yaml")


def test_config_errors_are_distinct_from_bugs() -> None:
    # A field type the loader does not know is a programming error, not the user's.
    @dataclasses.dataclass(frozen=True)
    class Odd:
        value: complex

    with pytest.raises(TypeError):
        from_dict(Odd, {"value": 1})
