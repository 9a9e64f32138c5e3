"""LivePhoto-mini, the trained model shipped in models/livephoto-mini: it loads by name on a
fresh clone (no training), is small, documents itself, and moves a photo it never saw the
way the text says."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from evaluation.metrics import motion_stats
from model.config import MINILM, ModelConfig, model_preset, shipped_model_dir
from model.pipeline import LivePhotoPipeline
import sample_data

REPO = Path(__file__).resolve().parents[1]
DIRECTORY = REPO / "models" / "livephoto-mini"


@pytest.fixture(scope="module")
def pipe():
    pipe = LivePhotoPipeline.from_pretrained("mini")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_shipped_folder_is_small_safetensors_with_a_model_card():
    assert shipped_model_dir("mini") == DIRECTORY
    files = [p for p in DIRECTORY.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 30 * 2**20
    assert not [p for p in files if p.suffix in (".bin", ".pt", ".ckpt", ".pkl")]
    for config in [p for p in files if p.suffix == ".json"]:  # nothing that names a folder of the machine it was made on
        assert not [v for v in json.loads(config.read_text()).values() if isinstance(v, str) and v.startswith("/")], config
    card = (DIRECTORY / "README.md").read_text()
    for words in ("32x32 px, 8 frames", "direction accuracy", "first-frame PSNR", "What it cannot do", "all-MiniLM-L6-v2"):
        assert words in card


def test_loads_by_name_with_the_mini_architecture(pipe):
    cfg, preset = pipe.cfg, ModelConfig(**model_preset("mini"))
    for field in ("resolution", "num_frames", "autoencoder", "pixel_patch", "prediction_type", "rescale_betas_zero_snr",
                  "timestep_spacing", "text_max_length", "tiny"):
        assert getattr(cfg, field) == getattr(preset, field), field
    assert cfg.text_encoder == MINILM and type(pipe.text_encoder).__name__ == "BertModel"
    assert pipe.scheduler.config.prediction_type == "v_prediction"


def _view() -> np.ndarray:
    image = sample_data.load_photos()["chelsea"][0]  # held out of LivePhoto-mini's training
    return sample_data.random_view(image, 32, np.random.default_rng(7), (1.0, 1.2))


@pytest.mark.slow
def test_moves_a_held_out_photo_the_way_the_text_says(pipe):
    """The demo's photo under opposite prompts: the measured horizontal flow has opposite signs
    and the intended direction; frame 0 stays close to the photo."""
    view = _view()
    prompts = ["a tabby cat with green eyes, the scene drifts to the left", "a tabby cat with green eyes, the scene drifts to the right"]
    out = pipe([view, view], prompts, intensity=8, num_frames=8, height=32, width=32, num_inference_steps=10,
               guidance_scale=3.0, seed=[0, 0])
    videos = np.rint(out.frames * 255).astype(np.uint8)
    left, right = (motion_stats(v, max_side=32, min_shift=0.1) for v in videos)
    assert left["dx"] < 0 < right["dx"], (left, right)
    assert (left["direction"], right["direction"]) == ("left", "right")
    mse = float(np.mean((videos[:, 0].astype(float) - view.astype(float)) ** 2))
    assert 10 * np.log10(255.0**2 / mse) > 15.0


@pytest.mark.slow
def test_animate_cli_takes_the_shipped_name(tmp_path):
    photo = tmp_path / "photo.png"
    from PIL import Image

    Image.fromarray(_view()).save(photo)
    out = tmp_path / "out.gif"
    proc = subprocess.run(
        [sys.executable, "-m", "model.animate", "--model", "mini", "--image", str(photo), "--prompt", "it moves up",
         "--intensity", "6", "--steps", "4", "--guidance", "3", "--no-progress", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    from model.media import read_video

    assert read_video(out).shape == (8, 32, 32, 3)
    assert "token weights:" in proc.stdout and "up=" in proc.stdout
