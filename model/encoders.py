"""The frozen encoders: tokenizer + text encoder, the VAE, and the DINOv2 image encoder.

Each ``load_*`` takes a :class:`~model.config.ModelConfig` and either loads pretrained
weights (a local diffusers/transformers folder, a hub id, or ``package:<module>/<folder>``,
a folder shipped inside an installed Python package) or, where the config names no
source, builds the tiny random component from a fixed seed. The text encoder is any
transformers encoder (``cfg.text_encoder``: e.g. all-MiniLM-L6-v2 for ``mini``); without one
it is SD 1.5's CLIP (``cfg.base_model``) or a tiny random CLIP. All returned modules are in
``eval()`` mode with ``requires_grad_(False)``.

Sources are resolved and read, with a clear error when absent, by :mod:`model.sources`.
The ``encode_*`` functions are pure tensor functions used by preprocessing (Ray Data
stages), training and the sampling pipeline, so all three encode the same way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gzip
import importlib.util
from pathlib import Path
from typing import Iterator, Sequence, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from model.config import ModelConfig
from model.lora import fuse_loras
from model.single_file import base_configs, load_base_component
from model.sources import WeightsNotFoundError, _how, load_pretrained  # WeightsNotFoundError: what callers catch, also from here

M = TypeVar("M")

TOKENIZER_MAX_LENGTH = 77
"""CLIP's context length (SD 1.5 and the tiny random CLIP); other encoders use ``cfg.text_max_length``."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Offsets added to ModelConfig.seed so each random component has its own stream.
SEED_OFFSETS = {"text_encoder": 1, "vae": 2, "image_encoder": 3, "unet": 4, "motion_adapter": 5, "livephoto": 6}


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block under ``torch.manual_seed(seed)`` without touching the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def frozen(module: M) -> M:
    module.eval()  # type: ignore[attr-defined]
    module.requires_grad_(False)  # type: ignore[attr-defined]
    return module


# --------------------------------------------------------------------------- tokenizer


@functools.lru_cache(maxsize=1)
def _clip_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The real CLIP BPE vocabulary and merges, from the file shipped in the open-clip wheel."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or spec.origin is None:
        raise WeightsNotFoundError("CLIP tokenizer", "open_clip/bpe_simple_vocab_16e6.txt.gz", "pip install open-clip-torch")
    from open_clip.tokenizer import bytes_to_unicode

    path = Path(spec.origin).parent / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(path).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(vocab)}, merges  # type: ignore[return-value]


def build_tokenizer(cfg: ModelConfig):
    """The text encoder's tokenizer (``cfg.text_encoder``), else the base model's CLIP tokenizer,
    else the real CLIP BPE tokenizer built offline. Pads and truncates to ``cfg.text_max_length``."""
    from transformers import AutoTokenizer, CLIPTokenizer

    if cfg.text_encoder is not None:
        tokenizer = load_pretrained(
            "tokenizer", cfg.text_encoder, _how("text_encoder", cfg.text_encoder),
            AutoTokenizer.from_pretrained, local_files_only=cfg.local_files_only,
        )
    elif cfg.base_model is not None:
        tokenizer = load_pretrained(
            "CLIP tokenizer", base_configs(cfg), _how("base_model", cfg.base_model),
            CLIPTokenizer.from_pretrained, subfolder="tokenizer", local_files_only=cfg.local_files_only,
        )
    else:
        vocab, merges = _clip_bpe()
        # vocab=/merges= (not vocab_file=/merges_file=, which transformers 5 silently mis-tokenizes).
        tokenizer = CLIPTokenizer(vocab=dict(vocab), merges=list(merges))
    tokenizer.model_max_length = cfg.text_max_length
    return tokenizer


# --------------------------------------------------------------------------- text encoder


def load_text_encoder(cfg: ModelConfig):
    """Frozen text encoder; its last hidden states (batch, tokens, dim) feed the UNet's cross-attention.

    ``cfg.text_encoder`` (any transformers encoder, ``AutoModel``), else SD 1.5's CLIP from
    ``cfg.base_model``, else a tiny random CLIP.
    """
    from transformers import AutoModel, CLIPTextConfig, CLIPTextModel

    if cfg.text_encoder is not None:
        model = load_pretrained(
            "text encoder", cfg.text_encoder, _how("text_encoder", cfg.text_encoder),
            AutoModel.from_pretrained, local_files_only=cfg.local_files_only,
        )
        return frozen(fuse_loras(model, cfg, "text_encoder"))
    if cfg.base_model is not None:
        model = load_base_component("CLIP text encoder", cfg, CLIPTextModel, "text_encoder")
        return frozen(fuse_loras(model, cfg, "text_encoder"))
    config = CLIPTextConfig(
        vocab_size=len(_clip_bpe()[0]),
        hidden_size=cfg.tiny.text_hidden_size,
        intermediate_size=cfg.tiny.text_hidden_size * 2,
        num_hidden_layers=cfg.tiny.text_layers,
        num_attention_heads=cfg.tiny.text_heads,
        max_position_embeddings=TOKENIZER_MAX_LENGTH,
        projection_dim=cfg.tiny.text_hidden_size,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )
    with seeded(cfg.seed + SEED_OFFSETS["text_encoder"]):
        model = CLIPTextModel(config)
    return frozen(fuse_loras(model, cfg, "text_encoder"))


def tokenize(tokenizer, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask, both (batch, tokens) int64, padded/truncated to the
    tokenizer's ``model_max_length`` (``cfg.text_max_length``: 77 for CLIP)."""
    length = tokenizer.model_max_length
    out = tokenizer(list(prompts), padding="max_length", max_length=length, truncation=True, return_tensors="pt")
    return out.input_ids, out.attention_mask


def is_clip(text_encoder) -> bool:
    return getattr(text_encoder.config, "model_type", "") == "clip_text_model"


@torch.no_grad()
def encode_prompts(tokenizer, text_encoder, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
    """Token embeddings of ``prompts``.

    Returns ``embeddings`` (batch, tokens, dim) in the encoder's dtype (the last hidden state,
    as Stable Diffusion uses it), ``input_ids`` (batch, tokens) and ``attention_mask``
    (batch, tokens). CLIP runs without the mask, as SD 1.5 does (it is causal, so padding
    never changes a real token); a bidirectional encoder (BERT, MiniLM) gets the mask.
    """
    input_ids, attention_mask = tokenize(tokenizer, prompts)
    device = next(text_encoder.parameters()).device
    kwargs = {} if is_clip(text_encoder) else {"attention_mask": attention_mask.to(device)}
    hidden = text_encoder(input_ids.to(device), **kwargs).last_hidden_state
    return {"embeddings": hidden, "input_ids": input_ids, "attention_mask": attention_mask}


# --------------------------------------------------------------------------- VAE


PIXEL_SCALING = 2.0
"""Latent scale of the pixel autoencoder: pixels in [-1, 1] -> latents in [-2, 2], std near 1."""


class PixelAutoencoder(torch.nn.Module):
    """The identity "autoencoder" of pixel-space diffusion (``ModelConfig.autoencoder="pixel"``).

    Latents are the pixels in [-1, 1], rearranged space-to-depth by ``patch`` (``patch=2``:
    (3, 64, 64) -> (12, 32, 32)), so encode -> decode is exact. It has no weights; it stands
    in for a VAE where none is trained (a random tiny VAE would destroy the images).
    :func:`encode_latents` multiplies by ``scaling_factor`` = :data:`PIXEL_SCALING` as it does
    SD's 0.18215: natural images in [-1, 1] have a standard deviation near 0.5, and the SD
    noise schedule expects unit-variance latents (at half the scale every step's
    signal-to-noise ratio is 4x lower, and the network is slow to learn to use the reference).
    """

    def __init__(self, patch: int = 1):
        super().__init__()
        self.patch = patch
        levels = int(round(np.log2(patch))) + 1
        self.config = _PixelConfig(latent_channels=3 * patch * patch, scaling_factor=PIXEL_SCALING, block_out_channels=(3,) * levels)
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)  # carries device and dtype

    @property
    def device(self) -> torch.device:
        return self._anchor.device

    @property
    def dtype(self) -> torch.dtype:
        return self._anchor.dtype

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.pixel_unshuffle(pixels, self.patch) if self.patch > 1 else pixels

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(latents, self.patch) if self.patch > 1 else latents


@dataclasses.dataclass(frozen=True)
class _PixelConfig:
    latent_channels: int
    scaling_factor: float
    block_out_channels: tuple[int, ...]


def load_vae(cfg: ModelConfig):
    """Frozen ``AutoencoderKL``; SD 1.5's, or a tiny random one; or a :class:`PixelAutoencoder`
    when ``cfg.autoencoder == "pixel"``."""
    from diffusers import AutoencoderKL

    if cfg.autoencoder == "pixel":
        return frozen(PixelAutoencoder(cfg.pixel_patch))

    if cfg.base_model is not None:
        return frozen(load_base_component("VAE", cfg, AutoencoderKL, "vae"))
    channels = tuple(cfg.tiny.vae_block_out_channels)
    with seeded(cfg.seed + SEED_OFFSETS["vae"]):
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * len(channels),
            up_block_types=("UpDecoderBlock2D",) * len(channels),
            block_out_channels=channels,
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=min(32, min(channels)),
            sample_size=cfg.resolution,
        )
    return frozen(vae)


def vae_scale_factor(vae) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


def frames_to_pixels(frames: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 (..., height, width, 3) -> float (..., 3, height, width) in [-1, 1]."""
    x = torch.tensor(np.asarray(frames)) if isinstance(frames, np.ndarray) else frames
    x = x.movedim(-1, -3).float()
    return x / 127.5 - 1.0


@torch.no_grad()
def encode_latents(vae, pixels: torch.Tensor, generator: torch.Generator | None = None, sample: bool = False) -> torch.Tensor:
    """VAE latents of images.

    ``pixels`` (n, 3, height, width) in [-1, 1] -> (n, 4, height/f, width/f), already
    multiplied by the VAE's ``scaling_factor``. ``sample=False`` takes the posterior mean
    (deterministic, what preprocessing stores); ``sample=True`` draws from the posterior.
    """
    if isinstance(vae, PixelAutoencoder):
        return vae.encode_pixels(pixels.to(device=vae.device, dtype=vae.dtype)) * vae.config.scaling_factor
    param = next(vae.parameters())
    dist = vae.encode(pixels.to(device=param.device, dtype=param.dtype)).latent_dist
    z = dist.sample(generator) if sample else dist.mean
    return z * vae.config.scaling_factor


@torch.no_grad()
def decode_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    """(n, 4, h, w) scaled latents -> (n, 3, height, width) images in [-1, 1]."""
    if isinstance(vae, PixelAutoencoder):
        return vae.decode_latents(latents.to(device=vae.device, dtype=vae.dtype) / vae.config.scaling_factor)
    param = next(vae.parameters())
    return vae.decode(latents.to(device=param.device, dtype=param.dtype) / vae.config.scaling_factor).sample


# --------------------------------------------------------------------------- DINOv2


def load_image_encoder(cfg: ModelConfig):
    """Frozen DINOv2 (``Dinov2Model``): ViT-L/14 for sd15, a tiny random one otherwise."""
    from transformers import Dinov2Config, Dinov2Model

    if cfg.image_encoder is not None:
        model = load_pretrained(
            "DINOv2 image encoder", cfg.image_encoder, _how("image_encoder", cfg.image_encoder),
            Dinov2Model.from_pretrained, local_files_only=cfg.local_files_only,
        )
        return frozen(model)
    config = Dinov2Config(
        hidden_size=cfg.tiny.image_hidden_size,
        num_hidden_layers=cfg.tiny.image_layers,
        num_attention_heads=cfg.tiny.image_heads,
        mlp_ratio=2,
        patch_size=cfg.tiny.image_patch_size,
        image_size=cfg.image_encoder_size,
    )
    with seeded(cfg.seed + SEED_OFFSETS["image_encoder"]):
        model = Dinov2Model(config)
    return frozen(model)


def image_encoder_pixels(images: torch.Tensor | np.ndarray, size: int) -> torch.Tensor:
    """uint8 (batch, height, width, 3) -> ImageNet-normalised (batch, 3, size, size) float.

    The images are already centre-cropped squares (preprocessing and serving crop the same
    way), so a plain bicubic resize keeps the whole frame.
    """
    x = (torch.tensor(np.asarray(images)) if isinstance(images, np.ndarray) else images).movedim(-1, 1).float() / 255.0
    x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def encode_image_tokens(image_encoder, pixels: torch.Tensor) -> torch.Tensor:
    """DINOv2 patch tokens: (batch, 3, size, size) -> (batch, patches, dim), CLS token dropped."""
    param = next(image_encoder.parameters())
    hidden = image_encoder(pixel_values=pixels.to(device=param.device, dtype=param.dtype)).last_hidden_state
    return hidden[:, 1:]


def encoder_dims(cfg: ModelConfig) -> dict[str, int]:
    """Output sizes of the frozen encoders, read from configs only (no weights are loaded).

    ``text_dim`` (CLIP width), ``latent_channels``, ``vae_factor`` (pixels per latent),
    ``image_tokens`` (DINOv2 patches at ``image_encoder_size``), ``image_dim`` (DINOv2 width).
    diffusers and transformers are imported only where a pretrained config is read: the tiny and
    mini presets' drivers (training, preprocessing) then skip ~7 s of imports.
    """
    from model.sources import require_sources

    require_sources(cfg, ("vae", "text", "image_encoder"))  # every missing one at once, before any config is read
    text_dim, vae_levels, latent_channels = cfg.tiny.text_hidden_size, len(cfg.tiny.vae_block_out_channels), 4
    if cfg.base_model is not None:
        how, configs = _how("base_model", cfg.base_model), base_configs(cfg)
        if cfg.autoencoder == "vae":
            from diffusers import AutoencoderKL

            vae = load_pretrained("VAE config", configs, how, AutoencoderKL.load_config,
                                  subfolder="vae", local_files_only=cfg.local_files_only)
            vae_levels, latent_channels = len(vae["block_out_channels"]), vae["latent_channels"]
        if cfg.text_encoder is None:
            from transformers import CLIPTextConfig

            text = load_pretrained("CLIP text encoder config", configs, how, CLIPTextConfig.from_pretrained,
                                   subfolder="text_encoder", local_files_only=cfg.local_files_only)
            text_dim = text.hidden_size
    if cfg.text_encoder is not None:
        from transformers import AutoConfig

        text = load_pretrained("text encoder config", cfg.text_encoder, _how("text_encoder", cfg.text_encoder),
                               AutoConfig.from_pretrained, local_files_only=cfg.local_files_only)
        text_dim = text.hidden_size
    if cfg.autoencoder == "pixel":
        vae_levels, latent_channels = int(round(np.log2(cfg.pixel_patch))) + 1, 3 * cfg.pixel_patch**2
    if cfg.image_encoder is not None and cfg.use_content_encoder:
        from transformers import Dinov2Config

        image = load_pretrained("DINOv2 config", cfg.image_encoder, _how("image_encoder", cfg.image_encoder),
                                Dinov2Config.from_pretrained, local_files_only=cfg.local_files_only)
        image_dim, patch = image.hidden_size, image.patch_size
    else:
        image_dim, patch = cfg.tiny.image_hidden_size, cfg.tiny.image_patch_size
    return {
        "text_dim": text_dim,
        "latent_channels": latent_channels,
        "vae_factor": 2 ** (vae_levels - 1),
        "image_tokens": (cfg.image_encoder_size // patch) ** 2,
        "image_dim": image_dim,
    }
