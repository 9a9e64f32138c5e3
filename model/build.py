"""Build the LivePhoto network and everything sampling needs; take a trained one apart for saving.

* :func:`build_network` / :func:`assemble_network` - the :class:`~model.network.LivePhotoModel`
  for a ModelConfig: SD 1.5's UNet (or a tiny random one) + a MotionAdapter (AnimateDiff, or
  fresh) + a :class:`~model.adapter.LivePhotoAdapter` (given, or fresh) for the new parts.
* :func:`build_livephoto` - network + VAE + text encoder + tokenizer + DINOv2 + scheduler.
* :func:`build_sd15_architecture` - the sd15-sized components with random weights, no download
  (for the GPU benchmark; not meant to be saved).
* :func:`motion_adapter_of` / :func:`base_unet_of` - a trained network's motion modules as a
  ``MotionAdapter`` and its SD blocks as a ``UNet2DConditionModel``: the components
  ``LivePhotoPipeline.save_pretrained`` writes (model/pipeline.py has the folder layout).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from model import encoders
from model.config import ModelConfig
from model.encoders import SEED_OFFSETS, frozen, seeded
from model.sources import _how, load_pretrained
from model.lora import fuse_loras
from model.network import LivePhotoModel
from model.single_file import base_configs, is_single_file, load_base_component, load_motion_adapter_file, read_once
from model.sources import require_sources

SD15_UNET_CONFIG: dict[str, Any] = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    norm_num_groups=32,
    cross_attention_dim=768,
    attention_head_dim=8,
)
"""``unet/config.json`` of Stable Diffusion 1.5 (the fields that differ from diffusers' defaults)."""

SD15_VAE_CONFIG: dict[str, Any] = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    sample_size=512,
    scaling_factor=0.18215,
)

SD15_TEXT_CONFIG: dict[str, Any] = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768,
)
"""``text_encoder/config.json`` of SD 1.5 (CLIP ViT-L/14's text tower)."""

SD15_SCHEDULER_CONFIG: dict[str, Any] = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    timestep_spacing="leading",
    prediction_type="epsilon",
)
"""Stable Diffusion 1.5's noise schedule, as a DDIM config (used when no base model is given)."""


# --------------------------------------------------------------------------- UNet + motion modules


def build_unet2d(cfg: ModelConfig):
    """SD 1.5's frozen ``UNet2DConditionModel`` from ``cfg.base_model``, or the tiny random one,
    with ``cfg.lora`` fused into it (model/lora.py)."""
    from diffusers import UNet2DConditionModel

    if cfg.base_model is not None:
        return fuse_loras(load_base_component("SD 1.5 UNet", cfg, UNet2DConditionModel, "unet"), cfg, "unet")
    levels = len(cfg.tiny.block_out_channels)
    dims = encoders.encoder_dims(cfg)
    with seeded(cfg.seed + SEED_OFFSETS["unet"]):
        unet = UNet2DConditionModel(
            sample_size=cfg.resolution // dims["vae_factor"],
            in_channels=dims["latent_channels"],
            out_channels=dims["latent_channels"],
            down_block_types=("CrossAttnDownBlock2D",) * (levels - 1) + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (levels - 1),
            block_out_channels=tuple(cfg.tiny.block_out_channels),
            layers_per_block=cfg.tiny.layers_per_block,
            norm_num_groups=cfg.tiny.norm_num_groups,
            cross_attention_dim=dims["text_dim"],
            attention_head_dim=cfg.tiny.attention_head_dim,
        )
    return fuse_loras(unet, cfg, "unet")


def fresh_motion_adapter(unet2d, max_seq_length: int, seed: int, heads: int = 8):
    """A new ``MotionAdapter`` matching ``unet2d`` (``heads`` attention heads, AnimateDiff's 8 by
    default); each temporal block's ``proj_out`` is zero, as AnimateDiff initialises it, so
    fresh motion modules start as the identity."""
    from diffusers import MotionAdapter

    with seeded(seed):
        adapter = MotionAdapter(
            block_out_channels=tuple(unet2d.config.block_out_channels),
            motion_layers_per_block=unet2d.config.layers_per_block,
            motion_norm_num_groups=unet2d.config.norm_num_groups,
            motion_num_attention_heads=heads,
            motion_max_seq_length=max_seq_length,
        )
    for name, module in adapter.named_modules():
        if name.endswith("proj_out") and isinstance(module, nn.Linear):
            nn.init.zeros_(module.weight)
            nn.init.zeros_(module.bias)
    return adapter


def build_motion_adapter(cfg: ModelConfig, unet2d):
    """AnimateDiff ``MotionAdapter`` from ``cfg.motion_adapter``, or fresh motion modules."""
    from diffusers import MotionAdapter

    if is_single_file(cfg.motion_adapter):  # mm_sd_v15_v2.ckpt and the like
        return load_pretrained(
            "AnimateDiff motion adapter", cfg.motion_adapter, _how("motion_adapter", cfg.motion_adapter),
            load_motion_adapter_file, norm_num_groups=unet2d.config.norm_num_groups, local_files_only=cfg.local_files_only,
        )
    if cfg.motion_adapter is not None:
        return load_pretrained(
            "AnimateDiff motion adapter", cfg.motion_adapter, _how("motion_adapter", cfg.motion_adapter),
            MotionAdapter.from_pretrained, local_files_only=cfg.local_files_only, variant=cfg.variant,
        )
    return fresh_motion_adapter(
        unet2d, cfg.tiny.motion_max_seq_length, cfg.seed + SEED_OFFSETS["motion_adapter"], cfg.tiny.attention_head_dim
    )


def motion_unet(unet2d, adapter):
    """``UNetMotionModel.from_unet2d`` without touching the caller's RNG state (4 input channels)."""
    from diffusers import UNetMotionModel

    with seeded(0):
        return UNetMotionModel.from_unet2d(unet2d, adapter)


def build_base_unet(cfg: ModelConfig):
    """The base AnimateDiff network (SD 1.5 blocks + motion modules, 4 input channels): what
    :class:`LivePhotoModel` extends, and what the zero-init equivalence test compares against."""
    unet2d = build_unet2d(cfg)
    return motion_unet(unet2d, build_motion_adapter(cfg, unet2d))


def build_network(cfg: ModelConfig, image_dim: int | None = None) -> LivePhotoModel:
    """The LivePhoto network for ``cfg`` with fresh new parts, in eval mode (as diffusers'
    ``from_pretrained``; call ``.train()`` to train); trainable groups have ``requires_grad``,
    the rest is frozen."""
    require_sources(cfg)
    return assemble_network(cfg, image_dim=encoders.encoder_dims(cfg)["image_dim"] if image_dim is None else image_dim)


def assemble_network(
    cfg: ModelConfig, unet2d=None, motion_adapter=None, adapter=None, image_dim: int | None = None, text_dim: int | None = None,
) -> LivePhotoModel:
    """``LivePhotoModel`` from its parts, each built from ``cfg`` (sources or seeds) when None:
    the SD blocks ``unet2d`` (``UNet2DConditionModel``), the ``motion_adapter``, and the new
    parts ``adapter`` (a fresh one needs ``image_dim``). ``text_dim``: the text encoder's width
    (read from ``cfg``'s sources when None), which must be the UNet's cross-attention width."""
    unet2d = build_unet2d(cfg) if unet2d is None else unet2d
    motion_adapter = build_motion_adapter(cfg, unet2d) if motion_adapter is None else motion_adapter
    unet = motion_unet(unet2d, motion_adapter)
    text_dim = encoders.encoder_dims(cfg)["text_dim"] if text_dim is None else text_dim
    if text_dim != unet.config.cross_attention_dim:
        raise ValueError(
            f"text_encoder: {cfg.text_encoder!r} gives {text_dim}-wide embeddings but the base UNet's "
            f"cross-attention takes {unet.config.cross_attention_dim}; use a text encoder of that width "
            "(for SD 1.5: its own CLIP ViT-L/14, text_encoder=None)"
        )
    alphas = build_scheduler(cfg).alphas_cumprod if cfg.reference_skip else None
    return LivePhotoModel(cfg, unet, image_dim, alphas, adapter=adapter).eval()


# --------------------------------------------------------------------------- scheduler


def build_scheduler(cfg: ModelConfig, config: dict[str, Any] | None = None):
    """``cfg.scheduler`` (default DDIM) over ``config`` (a saved scheduler config), else the base
    model's scheduler config, else SD 1.5's betas; the schedule fields of ``cfg``
    (``prediction_type``, ``rescale_betas_zero_snr``, ``timestep_spacing``) always apply, so
    training (which builds its DDPM noise schedule from this scheduler's config) and sampling
    use the same schedule."""
    import diffusers

    if config is not None:
        config = dict(config)
    elif cfg.base_model is not None:
        config = load_pretrained(
            "scheduler config", base_configs(cfg), _how("base_model", cfg.base_model),
            diffusers.DDIMScheduler.load_config, subfolder="scheduler", local_files_only=cfg.local_files_only,
        )
    else:
        config = dict(SD15_SCHEDULER_CONFIG)
    config.update(
        prediction_type=cfg.prediction_type, rescale_betas_zero_snr=cfg.rescale_betas_zero_snr,
        timestep_spacing=cfg.timestep_spacing,
    )
    if cfg.timestep_spacing != "leading":
        config["steps_offset"] = 0  # the offset belongs to "leading" (SD 1.5); trailing ends exactly at T-1
    if cfg.autoencoder == "pixel":
        # pixel latents are bounded: clip each x0 estimate to their range, as pixel-space DDPM/DDIM do; and the
        # last step returns the clean estimate (no VAE decodes away the noise DDIM leaves at alphas_cumprod[0]:
        # +0.4 dB first-frame PSNR for LivePhoto-mini, docs/BENCHMARKS.md)
        config.update(clip_sample=True, clip_sample_range=encoders.PIXEL_SCALING, set_alpha_to_one=True)
    return getattr(diffusers, cfg.scheduler).from_config(config)


# --------------------------------------------------------------------------- all components


@dataclass
class LivePhotoComponents:
    """Everything :class:`~model.pipeline.LivePhotoPipeline` needs (``image_encoder`` is None
    when the content encoder is off)."""

    model: LivePhotoModel
    vae: nn.Module
    text_encoder: nn.Module
    tokenizer: Any
    image_encoder: nn.Module | None
    scheduler: Any


def build_livephoto(cfg: ModelConfig) -> LivePhotoComponents:
    """Network + frozen encoders + scheduler for ``cfg`` (pretrained sources or tiny random); every
    pretrained part is checked first, and all missing ones are reported at once."""
    require_sources(cfg)
    image_encoder = encoders.load_image_encoder(cfg) if cfg.use_content_encoder else None
    image_dim = image_encoder.config.hidden_size if image_encoder is not None else encoders.encoder_dims(cfg)["image_dim"]
    with read_once(cfg):  # a single-file base: one read for its UNet, VAE and CLIP
        return LivePhotoComponents(
            model=build_network(cfg, image_dim),
            vae=encoders.load_vae(cfg),
            text_encoder=encoders.load_text_encoder(cfg),
            tokenizer=encoders.build_tokenizer(cfg),
            image_encoder=image_encoder,
            scheduler=build_scheduler(cfg),
        )


def build_sd15_architecture(cfg: ModelConfig | None = None) -> LivePhotoComponents:
    """sd15-sized components with random weights and no download (GPU benchmark only).

    SD 1.5 UNet + default (v1.5-sized) MotionAdapter + SD VAE + CLIP ViT-L/14 text +
    DINOv2 ViT-L/14, all from configs written in code. ``cfg`` supplies the ``use_*``
    switches and geometry; its source fields are ignored. Not meant for ``save_pretrained``.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, Dinov2Config, Dinov2Model

    cfg = cfg or ModelConfig(resolution=256, num_frames=16)
    seed = cfg.seed
    with seeded(seed + SEED_OFFSETS["unet"]):
        unet2d = UNet2DConditionModel(**SD15_UNET_CONFIG)
    adapter = fresh_motion_adapter(unet2d, 32, seed + SEED_OFFSETS["motion_adapter"])
    unet = motion_unet(unet2d, adapter)
    del unet2d, adapter
    with seeded(seed + SEED_OFFSETS["vae"]):
        vae = AutoencoderKL(**SD15_VAE_CONFIG)
    with seeded(seed + SEED_OFFSETS["text_encoder"]):
        text_encoder = CLIPTextModel(CLIPTextConfig(**SD15_TEXT_CONFIG))
    image_encoder = None
    if cfg.use_content_encoder:
        with seeded(seed + SEED_OFFSETS["image_encoder"]):
            image_encoder = frozen(Dinov2Model(Dinov2Config(
                hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, mlp_ratio=4, patch_size=14,
                image_size=518,
            )))
    return LivePhotoComponents(
        model=LivePhotoModel(cfg, unet, image_dim=1024).eval(),
        vae=frozen(vae),
        text_encoder=frozen(text_encoder),
        tokenizer=encoders.build_tokenizer(ModelConfig()),
        image_encoder=image_encoder,
        scheduler=build_scheduler(ModelConfig(scheduler=cfg.scheduler)),
    )


# --------------------------------------------------------------------------- export


def motion_adapter_of(unet) -> Any:
    """The motion modules of a ``UNetMotionModel`` as a ``MotionAdapter`` (copies of the weights,
    in the UNet's dtype): what ``LivePhotoPipeline.save_pretrained`` writes to ``motion_adapter/``."""
    from diffusers import MotionAdapter

    c = unet.config
    with seeded(0):
        adapter = MotionAdapter(
            block_out_channels=tuple(c.block_out_channels), motion_layers_per_block=c.layers_per_block,
            motion_transformer_layers_per_block=c.temporal_transformer_layers_per_block,
            motion_mid_block_layers_per_block=c.mid_block_layers,
            motion_transformer_layers_per_mid_block=c.temporal_transformer_layers_per_mid_block,
            motion_num_attention_heads=c.motion_num_attention_heads, motion_norm_num_groups=c.norm_num_groups,
            motion_max_seq_length=c.motion_max_seq_length, use_motion_mid_block=c.use_motion_mid_block,
        )
    adapter.load_state_dict({k: v for k, v in unet.state_dict().items() if ".motion_modules." in k})  # strict: every key
    return adapter if unet.dtype == torch.float32 else adapter.to(unet.dtype)


def base_unet_of(model: LivePhotoModel) -> Any:
    """The SD blocks of the network as a 4-channel ``UNet2DConditionModel`` (copies): what
    ``save_pretrained`` writes to ``unet/`` when the base has no source or was trained. Its
    ``conv_in`` is the first latent channels of the adapter's."""
    unet2d = build_unet2d(replace(model.cfg, lora=()))  # the base's architecture (its weights are replaced)
    state = {
        k: v for k, v in model.unet.state_dict().items()
        if ".motion_modules." not in k and ".processor." not in k and not k.startswith("conv_in.")
    }
    missing, unexpected = unet2d.load_state_dict(state, strict=False)
    if sorted(missing) != ["conv_in.bias", "conv_in.weight"] or unexpected:
        raise ValueError(f"unet: the network's SD blocks do not match the base architecture ({missing[:3]}, {unexpected[:3]})")
    conv = model.unet.conv_in
    with torch.no_grad():
        unet2d.conv_in.weight.copy_(conv.weight[:, : unet2d.config.in_channels])
        unet2d.conv_in.bias.copy_(conv.bias)
    return unet2d if model.dtype == unet2d.dtype else unet2d.to(model.dtype)
