"""Stand-ins for the hub repositories, in their real layouts, with tiny random weights: what
tests load through the real loaders in place of SD 1.5, AnimateDiff and DINOv2."""

from __future__ import annotations

from pathlib import Path

from model import build, encoders
from model.config import ModelConfig, model_preset
from model.single_file import write_clip_tokenizer


def tiny(**overrides) -> ModelConfig:
    return ModelConfig(**{**model_preset("tiny"), **overrides})


def sd15_folder(sd: Path, unet_seed: int = 7) -> Path:
    """``stable-diffusion-v1-5/``: unet, vae, text_encoder, tokenizer, scheduler, model_index.json.
    The UNet is built with ``unet_seed`` (not what a config without a base builds: seed 0)."""
    cfg = tiny()
    build.build_unet2d(tiny(seed=unet_seed)).save_pretrained(sd / "unet")
    encoders.load_vae(cfg).save_pretrained(sd / "vae")
    encoders.load_text_encoder(cfg).save_pretrained(sd / "text_encoder")
    write_clip_tokenizer(sd / "tokenizer")
    build.build_scheduler(cfg).save_pretrained(sd / "scheduler")
    (sd / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    return sd


def _resnet_to_ldm(key: str) -> str:
    for ours, theirs in (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
                         ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection")):
        key = key.replace(ours, theirs)
    return key


def unet_to_ldm(state: dict, layers_per_block: int) -> dict:
    """A diffusers ``UNet2DConditionModel`` state dict in the original SD layout
    (``model.diffusion_model.input_blocks.*`` ...), as single-file checkpoints hold it."""
    top = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
           "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    per_down, per_up = layers_per_block + 1, layers_per_block + 1
    has_attention = {int(k.split(".")[1]) for k in state if k.startswith("up_blocks.") and ".attentions." in k}
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        head = next((name for name in top if key.startswith(name + ".")), None)
        if head is not None:
            new = top[head] + key[len(head):]
        elif parts[0] == "down_blocks":
            block, kind, index, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
            if kind == "resnets":
                new = f"input_blocks.{1 + block * per_down + index}.0.{_resnet_to_ldm(rest)}"
            elif kind == "attentions":
                new = f"input_blocks.{1 + block * per_down + index}.1.{rest}"
            else:  # downsamplers.0.conv
                new = f"input_blocks.{1 + block * per_down + layers_per_block}.0.op.{parts[-1]}"
        elif parts[0] == "mid_block":
            kind, index, rest = parts[1], int(parts[2]), ".".join(parts[3:])
            new = f"middle_block.{2 * index if kind == 'resnets' else 1}.{_resnet_to_ldm(rest) if kind == 'resnets' else rest}"
        elif parts[0] == "up_blocks":
            block, kind, index, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
            if kind == "resnets":
                new = f"output_blocks.{block * per_up + index}.0.{_resnet_to_ldm(rest)}"
            elif kind == "attentions":
                new = f"output_blocks.{block * per_up + index}.1.{rest}"
            else:  # upsamplers.0.conv: after the attention when the block has one
                new = f"output_blocks.{block * per_up + layers_per_block}.{2 if block in has_attention else 1}.conv.{parts[-1]}"
        else:
            raise KeyError(key)
        out[f"model.diffusion_model.{new}"] = value
    return out


def vae_to_ldm(state: dict, levels: int) -> dict:
    """A diffusers ``AutoencoderKL`` state dict in the original layout (``first_stage_model.*``;
    decoder levels counted from the bottom; mid-block attention as 1x1 convolutions)."""
    out = {}
    for key, value in state.items():
        new = key.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
        parts = new.split(".")
        if parts[1] in ("down_blocks", "up_blocks"):
            level = int(parts[2]) if parts[1] == "down_blocks" else levels - 1 - int(parts[2])
            where = "down" if parts[1] == "down_blocks" else "up"
            if parts[3] == "resnets":
                new = f"{parts[0]}.{where}.{level}.block.{'.'.join(parts[4:])}"
            else:  # downsamplers.0.conv / upsamplers.0.conv
                new = f"{parts[0]}.{where}.{level}.{'downsample' if where == 'down' else 'upsample'}.conv.{parts[-1]}"
        elif parts[1] == "mid_block":
            if parts[2] == "resnets":
                new = f"{parts[0]}.mid.block_{int(parts[3]) + 1}.{'.'.join(parts[4:])}"
            else:
                rest = ".".join(parts[4:])
                rest = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}[rest.rsplit(".", 1)[0]]
                new = f"{parts[0]}.mid.attn_1.{rest}.{parts[-1]}"
                if value.dim() == 2:
                    value = value[:, :, None, None]
        out[f"first_stage_model.{new}"] = value
    return out


def sd15_single_file(sd: Path, path: Path) -> Path:
    """The stand-in ``sd`` folder's UNet, VAE and CLIP as one original-layout checkpoint at
    ``path`` (``.safetensors``, or ``.ckpt``: a pickled ``{"state_dict": ...}``)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    unet = UNet2DConditionModel.from_pretrained(sd / "unet")
    vae = AutoencoderKL.from_pretrained(sd / "vae")
    text = CLIPTextModel.from_pretrained(sd / "text_encoder")
    state = {**unet_to_ldm(unet.state_dict(), unet.config.layers_per_block),
             **vae_to_ldm(vae.state_dict(), len(vae.config.block_out_channels)),
             **{f"cond_stage_model.transformer.text_model.{k.removeprefix('text_model.')}": v
                for k, v in text.state_dict().items()}}
    state = {k: v.contiguous() for k, v in state.items()}
    if path.suffix == ".ckpt":
        torch.save({"state_dict": state}, path)
    else:
        from safetensors.torch import save_file

        save_file(state, path)
    return path


def motion_adapter_to_original(state: dict, max_seq_length: int) -> dict:
    """A diffusers ``MotionAdapter`` state dict in AnimateDiff's own layout (``mm_sd_v15_v2.ckpt``):
    ``motion_modules.N.temporal_transformer.*``, ``attention_blocks`` / ``norms`` / ``ff_norm``, and
    each attention's sinusoidal ``pos_encoder.pe`` table."""
    import math

    import torch

    out = {}
    for key, value in state.items():
        if ".pos_embed." in key:  # diffusers' buffer; the files hold pos_encoder.pe instead
            continue
        head, sep, rest = key.partition(".motion_modules.")
        index, _, rest = rest.partition(".")
        for ours, theirs in ((".norm1", ".norms.0"), (".norm2", ".norms.1"), (".norm3", ".ff_norm"),
                             (".attn1", ".attention_blocks.0"), (".attn2", ".attention_blocks.1")):
            rest = ("." + rest).replace(ours, theirs)[1:]
        new = f"{head}.motion_modules.{index}.temporal_transformer.{rest}"
        out[new] = value
        if rest.endswith("attention_blocks.0.to_q.weight") or rest.endswith("attention_blocks.1.to_q.weight"):
            dim = value.shape[1]
            position = torch.arange(max_seq_length)[:, None]
            freq = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
            pe = torch.zeros(1, max_seq_length, dim)
            pe[0, :, 0::2], pe[0, :, 1::2] = torch.sin(position * freq), torch.cos(position * freq)
            out[new.replace("to_q.weight", "pos_encoder.pe")] = pe
    return out
