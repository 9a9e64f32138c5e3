"""Stand-ins for the hub repositories, in their real layouts, with tiny random weights: what
tests load through the real loaders in place of SD 1.5, AnimateDiff and DINOv2."""

from __future__ import annotations

import json
from pathlib import Path

from model import build, encoders
from model.config import ModelConfig, model_preset


def tiny(**overrides) -> ModelConfig:
    return ModelConfig(**{**model_preset("tiny"), **overrides})


def clip_tokenizer_folder(folder: Path) -> None:
    """tokenizer/ as the SD 1.5 repository has it: vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json."""
    vocab, merges = encoders._clip_bpe()
    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(special))
    (folder / "tokenizer_config.json").write_text(json.dumps({**special, "model_max_length": 77, "tokenizer_class": "CLIPTokenizer"}))


def sd15_folder(sd: Path, unet_seed: int = 7) -> Path:
    """``stable-diffusion-v1-5/``: unet, vae, text_encoder, tokenizer, scheduler, model_index.json.
    The UNet is built with ``unet_seed`` (not what a config without a base builds: seed 0)."""
    cfg = tiny()
    build.build_unet2d(tiny(seed=unet_seed)).save_pretrained(sd / "unet")
    encoders.load_vae(cfg).save_pretrained(sd / "vae")
    encoders.load_text_encoder(cfg).save_pretrained(sd / "text_encoder")
    clip_tokenizer_folder(sd / "tokenizer")
    build.build_scheduler(cfg).save_pretrained(sd / "scheduler")
    (sd / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    return sd
