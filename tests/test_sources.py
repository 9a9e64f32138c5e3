"""Pretrained sources in the real layouts (stand-in folders with tiny random weights, saved the
way the hub repositories are): they load through the real loaders, and whatever is missing is
reported at once, with its setting, the subfolder and advice that fits a folder or a hub id."""

from __future__ import annotations

import dataclasses
import shutil

import pytest
import torch

from model import build, encoders
from model.sources import SourcesMissingError, is_hub_id, missing_sources, require_sources

from hub_standins import sd15_folder, tiny


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    """``stable-diffusion-v1-5/`` (unet, vae, text_encoder, tokenizer, scheduler, model_index.json),
    ``animatediff-motion-adapter-v1-5-2/`` and ``dinov2-large/`` as their hub repositories lay them out."""
    root = tmp_path_factory.mktemp("hub")
    cfg = tiny()
    sd = sd15_folder(root / "stable-diffusion-v1-5")
    unet2d = build.build_unet2d(tiny(seed=7))
    adapter = root / "animatediff-motion-adapter-v1-5-2"
    build.build_motion_adapter(cfg, unet2d).save_pretrained(adapter)
    dino = root / "dinov2-large"
    encoders.load_image_encoder(cfg).save_pretrained(dino)
    return {"base_model": sd, "motion_adapter": adapter, "image_encoder": dino}


def test_standins_in_the_real_layouts_load(standins):
    cfg = tiny(**{k: str(v) for k, v in standins.items()}, local_files_only=True)
    assert missing_sources(cfg) == []
    components = build.build_livephoto(cfg)
    # the saved UNet blocks are what the network runs on, exactly
    saved = build.build_unet2d(tiny(seed=7)).state_dict()
    loaded = components.model.unet.state_dict()
    shared = [k for k in saved if k in loaded and "conv_in" not in k]
    assert len(shared) > 0.8 * len(saved) and all(torch.equal(loaded[k], saved[k]) for k in shared)
    # the tokenizer read from vocab.json + merges.txt gives the real CLIP ids
    prompt = "the flag waves in the wind"
    assert components.tokenizer(prompt).input_ids == encoders.build_tokenizer(tiny())(prompt).input_ids


def test_every_missing_component_is_listed_at_once_with_its_subfolder(standins, tmp_path):
    broken = {k: tmp_path / v.name for k, v in standins.items()}
    for key, source in standins.items():
        shutil.copytree(source, broken[key])
    shutil.rmtree(broken["base_model"] / "vae")
    (broken["base_model"] / "tokenizer" / "merges.txt").unlink()
    for weights in broken["image_encoder"].glob("*.safetensors"):
        weights.unlink()
    cfg = tiny(**{k: str(v) for k, v in broken.items()}, local_files_only=True)
    with pytest.raises(SourcesMissingError) as info:
        build.build_livephoto(cfg)
    text = str(info.value)
    assert text.startswith("cannot load 3 pretrained component(s):")
    assert f"VAE (--model.base_model {broken['base_model']}): {broken['base_model']} has no vae/ folder" in text
    assert "CLIP tokenizer" in text and "tokenizer/vocab.json + tokenizer/merges.txt or tokenizer/tokenizer.json" in text
    assert "DINOv2 image encoder (--model.image_encoder" in text and "no weights" in text
    assert "hf download" not in text  # local folders: no hub advice
    assert isinstance(info.value, encoders.WeightsNotFoundError)  # what callers already catch


def test_a_hub_id_not_in_the_cache_while_offline_gets_hf_download_advice(standins, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache" / "hub"))
    cfg = tiny(base_model="stable-diffusion-v1-5/stable-diffusion-v1-5", motion_adapter=str(standins["motion_adapter"]),
                local_files_only=True)
    with pytest.raises(SourcesMissingError) as info:
        require_sources(cfg)
    text = str(info.value)
    assert "SD 1.5 UNet (--model.base_model stable-diffusion-v1-5/stable-diffusion-v1-5): hub id" in text
    assert "unet/config.json is not in the Hugging Face cache" in text
    assert "`hf download stable-diffusion-v1-5/stable-diffusion-v1-5`" in text and "huggingface-cli" not in text
    # with downloads on, an uncached hub id is left to from_pretrained (it downloads it)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert missing_sources(tiny(base_model="stable-diffusion-v1-5/stable-diffusion-v1-5")) == []


def test_a_missing_folder_is_not_called_a_hub_id(tmp_path):
    assert is_hub_id("guoyww/animatediff-motion-adapter-v1-5-2")
    assert not is_hub_id(str(tmp_path / "nope")) and not is_hub_id("./weights/sd15")
    cfg = tiny(motion_adapter=str(tmp_path / "nope"))
    with pytest.raises(SourcesMissingError, match=r"no folder .*nope.* \(and it is not a hub id\)") as info:
        require_sources(cfg)
    assert "Folders: check the path" in str(info.value) and "hf download" not in str(info.value)


def test_preprocessing_checks_only_the_encoders_it_runs(standins, tmp_path):
    """encoder_dims (what preprocessing calls first) needs the VAE, text and image encoders, not the UNet."""
    sd = tmp_path / "sd"
    shutil.copytree(standins["base_model"], sd)
    shutil.rmtree(sd / "unet")
    cfg = tiny(base_model=str(sd), local_files_only=True)
    assert encoders.encoder_dims(cfg)["text_dim"] == 32
    with pytest.raises(SourcesMissingError, match=r"SD 1.5 UNet .* has no unet/ folder"):
        build.build_livephoto(cfg)


def test_encoder_dims_of_a_preset_without_pretrained_parts_imports_neither_diffusers_nor_transformers():
    """A tiny-preset driver (training, preprocessing) reads its sizes from the config alone, so it
    does not pay diffusers' and transformers' imports (~7 s on 2 cores); checked in a new process."""
    import subprocess
    import sys

    code = ("import sys; from common.config import load; from training.config import PRESETS, TrainConfig; "
            "from model.encoders import encoder_dims; "
            "cfg = load(TrainConfig, presets=PRESETS, preset='tiny', overrides={'data.dir': 'd', 'output.dir': 'o'}); "
            "print(encoder_dims(cfg.model)['text_dim'], sorted(m for m in ('diffusers', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[-2] == "32 []", out.stdout


def test_a_model_saved_with_a_local_base_loads_where_the_base_lives_elsewhere(standins, tmp_path, capsys):
    """Trained with --model.base_model pointing at a folder that is gone where the model is used:
    the error names it; --model.base_model (the same flag in animate, serve and evaluate) points
    the saved model at the base's folder on this machine."""
    from model import animate
    from model.pipeline import LivePhotoPipeline
    from serve.__main__ import parse

    here = tmp_path / "here"
    shutil.copytree(standins["base_model"], here)
    pipe = LivePhotoPipeline.from_components(build.build_livephoto(tiny(base_model=str(here), local_files_only=True)))
    pipe.save_pretrained(tmp_path / "model")
    there = tmp_path / "there"
    here.rename(there)
    with pytest.raises(SourcesMissingError, match=rf"SD 1.5 UNet \(--model.base_model {here}\): no folder"):
        LivePhotoPipeline.from_pretrained(tmp_path / "model")
    moved = LivePhotoPipeline.from_pretrained(tmp_path / "model", base_model=str(there))
    assert moved.cfg.base_model == str(there)
    saved, loaded = pipe.model.state_dict(), moved.model.state_dict()
    assert saved.keys() == loaded.keys() and all(torch.equal(saved[k], loaded[k]) for k in saved)
    served = LivePhotoPipeline.from_pretrained(str(tmp_path / "model"), base_model=str(there))
    assert all(torch.equal(saved[k], v) for k, v in served.model.state_dict().items())
    cfg, _, _ = parse(["--model", str(tmp_path / "model"), "--model.base_model", str(there), "--model.local_files_only", "true"])
    assert cfg.model == str(tmp_path / "model") and cfg.sources.overrides() == {"base_model": str(there), "local_files_only": True}

    photo = tmp_path / "photo.png"
    from PIL import Image

    Image.new("RGB", (80, 64), (200, 120, 40)).save(photo)
    common = ["--model", str(tmp_path / "model"), "--image", str(photo), "--prompt", "it moves left", "--frames", "2",
              "--steps", "1", "--no-progress", "--out", str(tmp_path / "out.gif")]
    capsys.readouterr()
    assert animate.main(common) == 2
    err = capsys.readouterr().err
    assert "error: cannot load 4 pretrained component(s)" in err and str(here) in err and "Traceback" not in err
    assert "scheduler config" not in err  # the saved model brings its own scheduler
    assert animate.main(common + ["--model.base_model", str(there)]) == 0
    assert (tmp_path / "out.gif").is_file()


def test_a_fresh_sd15_is_announced_as_untrained(tmp_path, monkeypatch):
    from model.pipeline import LivePhotoPipeline

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.warns(UserWarning, match=r"'sd15' builds LivePhoto .* new parts untrained"):
        with pytest.raises(SourcesMissingError, match="hf download stable-diffusion-v1-5/stable-diffusion-v1-5"):
            LivePhotoPipeline.from_pretrained("sd15", local_files_only=True)


def test_evaluate_takes_the_same_source_flags():
    from common.config import load
    from evaluation.config import PRESETS, EvalConfig

    cfg = load(EvalConfig, presets=PRESETS, preset="mini", overrides={
        "manifest.csv": "m.csv", "output.dir": "out", "model.base_model": "/data/sd15", "model.local_files_only": True})
    assert cfg.generation.model == "mini" and cfg.model.overrides() == {"base_model": "/data/sd15", "local_files_only": True}


def test_a_job_reports_missing_weights_in_its_message_not_a_traceback(tmp_path, capsys):
    from common.config import main_with_errors

    cfg = tiny(base_model=str(tmp_path / "sd15"), motion_adapter=str(tmp_path / "adapter"))
    assert main_with_errors(lambda argv: require_sources(cfg), []) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot load 6 pretrained component(s):") and "--model.motion_adapter" in err


def test_an_fp16_variant_folder_loads_with_variant_and_torch_dtype(standins, tmp_path):
    """The hub's fp16 branches: every weight file named *.fp16.safetensors; --model.variant fp16."""
    from diffusers import AutoencoderKL, MotionAdapter, UNet2DConditionModel
    from transformers import CLIPTextModel

    from model.pipeline import LivePhotoPipeline

    sd, adapter = tmp_path / "sd-fp16", tmp_path / "adapter-fp16"
    shutil.copytree(standins["base_model"], sd, ignore=shutil.ignore_patterns("*.safetensors"))
    for cls, sub in ((UNet2DConditionModel, "unet"), (AutoencoderKL, "vae"), (CLIPTextModel, "text_encoder")):
        cls.from_pretrained(standins["base_model"] / sub).to(torch.float16).save_pretrained(sd / sub, variant="fp16")
    MotionAdapter.from_pretrained(standins["motion_adapter"]).to(torch.float16).save_pretrained(adapter, variant="fp16")
    assert sorted(f.name for f in (sd / "unet").iterdir()) == ["config.json", "diffusion_pytorch_model.fp16.safetensors"]
    cfg = tiny(base_model=str(sd), motion_adapter=str(adapter), local_files_only=True)
    found = {(part.label, problem) for part, _, problem in missing_sources(cfg)}
    assert ("SD 1.5 UNet", f"{sd} has no weights in unet/ (*.safetensors or *.bin)") not in found  # the file is there ...
    with pytest.raises(encoders.WeightsNotFoundError, match="SD 1.5 UNet"):  # ... but without --model.variant nothing loads it
        build.build_livephoto(cfg)
    assert missing_sources(dataclasses.replace(cfg, variant="fp16")) == []
    assert ("SD 1.5 UNet", f"{standins['base_model']} has no fp16 variant in unet/ (*.fp16.safetensors; --model.variant)") in {
        (p.label, problem) for p, _, problem in missing_sources(tiny(base_model=str(standins["base_model"]), variant="fp16"))}
    pipe = LivePhotoPipeline.from_pretrained("tiny", base_model=str(sd), motion_adapter=str(adapter), variant="fp16",
                                             local_files_only=True, torch_dtype=torch.float32)
    assert pipe.dtype == torch.float32 and pipe.vae.dtype == torch.float32
    reference = build.build_unet2d(tiny(seed=7)).state_dict()
    loaded = build.build_unet2d(tiny(base_model=str(sd), variant="fp16", local_files_only=True)).state_dict()
    assert all(torch.equal(loaded[k].float(), reference[k].half().float()) for k in reference)
