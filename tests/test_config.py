"""The config mechanism: layering, strict keys, types, validation messages, help."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from common.config import ConfigError, flatten, load, parse_argv
from pipelines.config import PRESETS, PreprocessConfig

REQUIRED = {"input.csv": "v.csv", "output.dir": "out"}


def test_layering_defaults_preset_file_cli(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("preset: tiny\nclip:\n  stride: 3\nflow:\n  backend: raft_small\n")
    cfg = load(PreprocessConfig, presets=PRESETS, config_file=path, overrides={**REQUIRED, "flow.backend": "farneback"})
    assert cfg.clip.stride == 3  # file beats preset (tiny: 2)
    assert cfg.flow.backend == "farneback"  # CLI beats file
    assert cfg.model.resolution == 64 and cfg.clip.height == 64  # from the tiny preset
    assert cfg.clip.clips_per_video == 1  # dataclass default


def test_unknown_key_is_an_error_naming_it():
    with pytest.raises(ConfigError, match=r"unknown setting flow\.backnd.*allowed: .*backend"):
        load(PreprocessConfig, presets=PRESETS, preset="tiny", overrides={**REQUIRED, "flow.backnd": "x"})
    with pytest.raises(ConfigError, match="unknown setting nosuch"):
        load(PreprocessConfig, overrides={**REQUIRED, "nosuch.key": 1})


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("clip.stride", "fast", r"clip\.stride: expected an integer"),
        ("clip.stride", 0, r"clip\.stride: must be >= 1, got 0"),
        ("clip.height", 100, r"clip\.height: must be a multiple of 8"),
        ("flow.backend", "pwc", r"flow\.backend: got 'pwc', allowed: raft_large, raft_small, farneback"),
        ("encode.latents", "yes please", r"encode\.latents: expected true or false"),
        ("model.resolution", 30, r"model\.resolution: must be a positive multiple of 8"),
    ],
)
def test_bad_values_name_the_field(key, value, message):
    with pytest.raises(ConfigError, match=message):
        load(PreprocessConfig, presets=PRESETS, preset="tiny", overrides={**REQUIRED, key: value})


def test_elastic_training_needs_a_placement_strategy_that_can_shrink():
    from training.config import PRESETS as TRAIN_PRESETS, TrainConfig

    base = {"data.dir": "d", "output.dir": "o", "scaling.num_workers": 2, "scaling.min_workers": 1}
    with pytest.raises(ConfigError, match=r"scaling\.placement_strategy: must be PACK or SPREAD when min_workers is set.*got STRICT_SPREAD"):
        load(TrainConfig, presets=TRAIN_PRESETS, preset="tiny", overrides={**base, "scaling.placement_strategy": "STRICT_SPREAD"})
    assert load(TrainConfig, presets=TRAIN_PRESETS, preset="tiny", overrides={**base, "scaling.placement_strategy": "SPREAD"}).scaling.min_workers == 1
    # not elastic: every strategy is fine
    load(TrainConfig, presets=TRAIN_PRESETS, preset="tiny", overrides={"data.dir": "d", "output.dir": "o", "scaling.placement_strategy": "STRICT_SPREAD"})


def test_missing_required_and_unknown_preset():
    with pytest.raises(ConfigError, match=r"missing required setting\(s\) input\.csv, output\.dir"):
        load(PreprocessConfig, presets=PRESETS, preset="tiny")
    with pytest.raises(ConfigError, match=r"preset: got 'huge', allowed: tiny, mini, sd15"):
        load(PreprocessConfig, presets=PRESETS, preset="huge", overrides=REQUIRED)


def test_every_job_offers_exactly_the_model_presets():
    from evaluation.config import PRESETS as EVAL_PRESETS
    from training.config import PRESETS as TRAIN_PRESETS
    from model.config import CPU_PRESETS, MODEL_PRESETS, model_preset

    for presets in (PRESETS, TRAIN_PRESETS, EVAL_PRESETS):
        assert tuple(presets) == MODEL_PRESETS
    assert set(CPU_PRESETS) < set(MODEL_PRESETS)
    with pytest.raises(ConfigError, match=r"preset: got 'huge', allowed: tiny, mini, sd15"):
        model_preset("huge")


def test_parse_argv_types_and_errors():
    cfg_file, preset, overrides, wants_help = parse_argv(["--preset", "tiny", "--clip.stride", "3", "--encode.latents=false", "--model.tiny.block_out_channels", "[16, 32]"])
    assert (cfg_file, preset, wants_help) == (None, "tiny", False)
    assert overrides == {"clip.stride": 3, "encode.latents": False, "model.tiny.block_out_channels": [16, 32]}
    with pytest.raises(ConfigError, match="--clip.stride: missing value"):
        parse_argv(["--clip.stride"])
    with pytest.raises(ConfigError, match="unexpected argument 'stray'"):
        parse_argv(["stray"])


def test_flatten_for_mlflow_params():
    cfg = load(PreprocessConfig, presets=PRESETS, preset="tiny", overrides=REQUIRED)
    flat = flatten(cfg)
    assert flat["flow.backend"] == "farneback" and flat["model.resolution"] == 64


def test_job_cli_config_errors_exit_2_with_one_line():
    proc = subprocess.run(
        [sys.executable, "jobs/preprocess.py", "--preset", "tiny", "--input.csv", "x.csv"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "config error: missing required setting(s) output.dir" in proc.stderr
    assert "Traceback" not in proc.stderr
    help_out = subprocess.run([sys.executable, "jobs/preprocess.py", "--help"], capture_output=True, text=True, timeout=120)
    assert help_out.returncode == 0 and "--flow.backend" in help_out.stdout and "optical-flow estimator" in help_out.stdout


CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("path", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_shipped_configs_load(path):
    """Every YAML under configs/ is a valid config of its job (no unknown keys, valid values)."""
    from training.config import PRESETS as TRAIN_PRESETS, TrainConfig

    cls, presets = (TrainConfig, TRAIN_PRESETS) if path.startswith("train") else (PreprocessConfig, PRESETS)
    cfg = load(cls, presets=presets, config_file=CONFIGS / path)
    assert cfg.output.dir
