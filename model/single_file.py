"""Single-file SD 1.5 checkpoints as the base (``--model.base_model model.safetensors``).

Most SD 1.5 fine-tunes are shared as one ``.safetensors`` (or ``.ckpt``) in the original LDM
layout (``model.diffusion_model.*``, ``first_stage_model.*``, ``cond_stage_model.transformer.*``).
diffusers converts such a file component by component (``from_single_file``), given the
diffusers configs the components are built from. Those come from ``cfg.base_config`` (a
diffusers SD 1.5 folder or hub id: only its config and tokenizer files are read), or, by
default, from SD 1.5's own configs, written from the ones in :mod:`model.build` to a folder
of this process: nothing is downloaded, so a single file works offline.

Everything that reads a base *config* (tokenizer, scheduler, sizes) reads :func:`base_configs`;
the weights go through :func:`load_base_component`.

AnimateDiff motion modules are shared the same way (``mm_sd_v15_v2.ckpt``, ``v3_sd15_mm.ckpt``,
``animatediff_lightning_4step_diffusers.safetensors``): :func:`load_motion_adapter_file` reads
the adapter's config off the file itself (levels, channels, layers, mid block, the positional
table's length), so no hub config is needed either.
"""

from __future__ import annotations

import contextlib
import functools
import json
import tempfile
from pathlib import Path
from typing import Any, Iterator

from model.config import ModelConfig

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")


def is_single_file(source: str | None) -> bool:
    """A checkpoint file (by its suffix), not a diffusers folder or a hub id."""
    return source is not None and Path(source).suffix.lower() in SINGLE_FILE_SUFFIXES


def base_configs(cfg: ModelConfig) -> str:
    """Where the base's configs are read: ``base_model`` itself, or for a single file
    ``base_config`` (default: SD 1.5's configs, :func:`sd15_config_folder`)."""
    if not is_single_file(cfg.base_model):
        return cfg.base_model
    return cfg.base_config or str(sd15_config_folder())


@functools.lru_cache(maxsize=1)
def sd15_config_folder() -> Path:
    """SD 1.5's diffusers configs (unet, vae, text_encoder, tokenizer, scheduler; no weights),
    written once per process to a temporary folder from the configs in model/build.py."""
    from transformers import CLIPTextConfig

    from model.build import SD15_SCHEDULER_CONFIG, SD15_TEXT_CONFIG, SD15_UNET_CONFIG, SD15_VAE_CONFIG
    root = Path(tempfile.mkdtemp(prefix="livephoto-sd15-configs-"))
    for sub in ("unet", "vae", "text_encoder", "scheduler"):
        (root / sub).mkdir()
    _write(root / "unet" / "config.json", {"_class_name": "UNet2DConditionModel", **SD15_UNET_CONFIG})
    _write(root / "vae" / "config.json", {"_class_name": "AutoencoderKL", **SD15_VAE_CONFIG})
    _write(root / "scheduler" / "scheduler_config.json", {"_class_name": "PNDMScheduler", **SD15_SCHEDULER_CONFIG})
    CLIPTextConfig(**SD15_TEXT_CONFIG).to_json_file(root / "text_encoder" / "config.json")
    write_clip_tokenizer(root / "tokenizer")
    _write(root / "model_index.json", {"_class_name": "StableDiffusionPipeline"})
    return root


def write_clip_tokenizer(folder: Path) -> None:
    """``tokenizer/`` as the SD 1.5 repository has it (vocab.json, merges.txt, special_tokens_map.json,
    tokenizer_config.json), from the real CLIP BPE that ships in the open-clip wheel."""
    from model.encoders import _clip_bpe

    vocab, merges = _clip_bpe()
    folder.mkdir(parents=True, exist_ok=True)
    _write(folder / "vocab.json", vocab)
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
               "unk_token": "<|endoftext|>"}
    _write(folder / "special_tokens_map.json", special)
    _write(folder / "tokenizer_config.json", {**special, "model_max_length": 77, "tokenizer_class": "CLIPTokenizer"})


def _write(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, default=list) + "\n")


_CHECKPOINTS: dict[str, Any] = {}
"""Single-file bases being built from inside a :func:`read_once` block: path -> its tensors (None until read)."""


@contextlib.contextmanager
def read_once(cfg: ModelConfig) -> Iterator[None]:
    """Within the block, a single-file base (``cfg.base_model``) is read from disk once and shared
    by its UNet, VAE and CLIP; its tensors are let go at the end of the block."""
    path = cfg.base_model
    if not is_single_file(path) or path in _CHECKPOINTS:
        yield
        return
    _CHECKPOINTS[path] = None
    try:
        yield
    finally:
        _CHECKPOINTS.pop(path, None)


def _checkpoint_of(path: str, local_files_only: bool) -> Any:
    """The tensors of ``path`` when a :func:`read_once` block holds it (read on first use), else ``path``."""
    from diffusers.loaders.single_file_utils import load_single_file_checkpoint

    if path not in _CHECKPOINTS:
        return path
    if _CHECKPOINTS[path] is None:
        _CHECKPOINTS[path] = load_single_file_checkpoint(path, local_files_only=local_files_only)
    return _CHECKPOINTS[path]


def load_base_component(label: str, cfg: ModelConfig, cls, subfolder: str):
    """One SD 1.5 component's weights: ``cls.from_pretrained(base_model, subfolder=...)``, or
    from a single file through diffusers' converters with the configs of :func:`base_configs`."""
    from model.sources import _how, load_pretrained

    how = _how("base_model", cfg.base_model)
    if not is_single_file(cfg.base_model):
        return load_pretrained(label, cfg.base_model, how, cls.from_pretrained, subfolder=subfolder,
                               local_files_only=cfg.local_files_only, variant=cfg.variant)
    config = base_configs(cfg)
    return load_pretrained(label, cfg.base_model, how, _from_single_file, cls=cls, config=config, subfolder=subfolder,
                           local_files_only=cfg.local_files_only)


def _from_single_file(path: str, cls, config: str, subfolder: str, local_files_only: bool):
    """A diffusers model (UNet, VAE: ``from_single_file``) or the CLIP text encoder of an LDM
    checkpoint, from the tensors :func:`read_once` holds or else from the file."""
    checkpoint = _checkpoint_of(path, local_files_only)
    if hasattr(cls, "from_single_file"):
        return cls.from_single_file(checkpoint, config=config, subfolder=subfolder, local_files_only=local_files_only)
    if not isinstance(checkpoint, dict):
        from diffusers.loaders.single_file_utils import load_single_file_checkpoint

        checkpoint = load_single_file_checkpoint(path, local_files_only=local_files_only)
    return _clip_from_checkpoint(checkpoint, path, cls, config, subfolder, local_files_only)


def _clip_from_checkpoint(checkpoint: dict[str, Any], path: str, cls, config: str, subfolder: str, local_files_only: bool):
    """The CLIP text encoder of an LDM checkpoint (``cond_stage_model.transformer.*``), as diffusers'
    ``StableDiffusionPipeline.from_single_file`` builds it."""
    from diffusers.loaders.single_file_utils import create_diffusers_clip_model_from_ldm

    if not any(k.startswith("cond_stage_model.transformer.") for k in checkpoint):
        raise ValueError(f"{path} holds no SD 1.5 CLIP text encoder (no cond_stage_model.transformer.* tensors)")
    return create_diffusers_clip_model_from_ldm(cls, checkpoint, subfolder=subfolder, config=config,
                                                local_files_only=local_files_only)


def motion_adapter_config(checkpoint: dict[str, Any], norm_num_groups: int, heads: int = 8) -> dict[str, Any]:
    """``MotionAdapter`` settings read off an AnimateDiff checkpoint's tensors. The two that no
    shape shows are AnimateDiff's for every SD 1.5 release: 8 heads, and the UNet's norm groups."""
    def count(prefix: str) -> int:
        found = {k[len(prefix):].split(".")[0] for k in checkpoint if k.startswith(prefix)}
        return len([x for x in found if x.isdigit()])

    levels = count("down_blocks.")
    if levels == 0:
        raise ValueError("no down_blocks.*.motion_modules.* tensors: not an AnimateDiff motion module checkpoint")
    channels = [checkpoint[f"down_blocks.{i}.motion_modules.0.temporal_transformer.norm.weight"].shape[0] for i in range(levels)]
    pe = next(v for k, v in checkpoint.items() if k.endswith("pos_encoder.pe"))
    return dict(
        block_out_channels=tuple(channels),
        motion_layers_per_block=count("down_blocks.0.motion_modules."),
        motion_transformer_layers_per_block=count("down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks."),
        use_motion_mid_block=any(k.startswith("mid_block.motion_modules.") for k in checkpoint),
        motion_max_seq_length=pe.shape[1],
        motion_num_attention_heads=heads,
        motion_norm_num_groups=norm_num_groups,
    )


def load_motion_adapter_file(path: str, norm_num_groups: int, local_files_only: bool = False):
    """An AnimateDiff motion module file as a diffusers ``MotionAdapter`` (``from_single_file``
    with the config read off the file, written to a temporary folder, removed after)."""
    from diffusers import MotionAdapter
    from diffusers.loaders.single_file_utils import load_single_file_checkpoint

    checkpoint = load_single_file_checkpoint(path, local_files_only=local_files_only)
    config = motion_adapter_config(checkpoint, norm_num_groups)
    with tempfile.TemporaryDirectory(prefix="livephoto-motion-adapter-config-") as folder:
        _write(Path(folder) / "config.json", {"_class_name": "MotionAdapter", **config})
        return MotionAdapter.from_single_file(checkpoint, config=folder, local_files_only=True)  # read once
