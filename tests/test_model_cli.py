"""model/ as a package: the animate CLI end to end, cross-process determinism, no Ray imports."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from model.pipeline import LivePhotoPipeline
from model.media import read_video

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("ray", "torch.distributed")


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_model_package_imports_no_ray_or_distributed():
    files = sorted((ROOT / "model").glob("*.py"))
    assert len(files) >= 6
    for path in files:
        for name in imported_modules(path):
            assert not any(name == f or name.startswith(f + ".") for f in FORBIDDEN), f"{path.name} imports {name}"
        assert ".cuda()" not in path.read_text(), path.name


def test_cli_end_to_end_on_a_saved_tiny_model(tmp_path):
    """Save tiny in this process, animate in a subprocess; the mp4 decodes to the requested frames
    and matches this process's pipeline run of the same seed."""
    pipe = LivePhotoPipeline.from_pretrained("tiny")
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(tmp_path / "tiny")
    y, x = np.mgrid[0:48, 0:64]
    photo = np.stack([x * 3, y * 4, np.full_like(x, 90)], axis=-1).astype(np.uint8)
    Image.fromarray(photo).convert("RGBA").save(tmp_path / "photo.png")
    out = tmp_path / "out.mp4"
    cmd = [
        sys.executable, "-m", "model.animate", "--model", str(tmp_path / "tiny"), "--image", str(tmp_path / "photo.png"),
        "--prompt", "the bear is dancing", "--intensity", "7", "--seed", "0", "--frames", "4", "--steps", "2",
        "--out", str(out),
    ]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "wrote" in result.stdout and "token weights: " in result.stdout
    assert "denoising" in result.stderr  # the tqdm bar
    video = read_video(out)
    assert video.shape == (4, 64, 64, 3)
    here = pipe(Image.open(tmp_path / "photo.png"), "the bear is dancing", intensity=7, seed=0, num_frames=4,
                height=64, width=64, num_inference_steps=2).frames[0]
    assert np.abs(video.astype(float) - here * 255).mean() < 16  # equal up to H.264 loss on noise-like frames



def test_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    from model.animate import main

    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "photo.png")
    args = ["--model", "tiny", "--image", str(tmp_path / "photo.png"), "--prompt", "a dog runs", "--intensity", "12",
            "--frames", "2", "--steps", "1", "--no-progress", "--out", str(tmp_path / "out.mp4")]
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == "error: intensity: must be an integer 1..10, got 12"
    assert not (tmp_path / "out.mp4").exists()


def tiny_state_hash() -> str:
    """sha256 over every tensor of the tiny preset's components (network and frozen encoders)."""
    import hashlib

    from model.build import build_livephoto
    from model.config import ModelConfig, model_preset

    c = build_livephoto(ModelConfig(**model_preset("tiny")))
    h = hashlib.sha256()
    for module in (c.model, c.vae, c.text_encoder, c.image_encoder):
        for k, v in sorted(module.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def test_two_processes_build_bit_identical_tiny_models():
    code = "from tests.test_model_cli import tiny_state_hash; print(tiny_state_hash())"
    other = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    assert other.stdout.strip() == tiny_state_hash()
