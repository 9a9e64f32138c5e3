"""LoRAs fused into the frozen SD 1.5 base before anything trains or samples.

A LoRA entry (``ModelConfig.lora``) is a ``.safetensors`` file, a folder holding
``pytorch_lora_weights.safetensors``, or a hub id, optionally followed by ``:<scale>``
(``style.safetensors:0.7``; default 1). diffusers reads both formats people share: its own
(``unet.<module>.lora_A.weight``, as ``save_lora_weights`` writes) and kohya / A1111
(``lora_unet_<module>.lora_down.weight`` + ``.alpha``). Each LoRA is merged into the base
weights at its scale, ``W + scale * alpha / rank * B @ A``: into the UNet through diffusers
(``load_lora_adapter`` + ``fuse_lora``, then its PEFT layers are unloaded) and, where it has
text-encoder layers, into the CLIP text encoder (see :func:`_merge`). The result is a plain
frozen module, so the trainable groups, the saved trainable weights and the sampler are the
same as without it. The layers are checked first: a LoRA for another base (SDXL, SD 2) is an
error naming it, not a silent partial load.

A fused LoRA is part of the base, like ``base_model``: the saved config records the list and
loading a trained model fuses the same LoRAs into the rebuilt base (``--model.lora`` replaces
the list, e.g. a style LoRA for a model trained on plain SD 1.5, as AnimateDiff users do). A
model trained on a random base (``tiny``) saves its full weights, LoRAs included, so loading it
does not fuse them again. AnimateDiff motion LoRAs (``v2_lora_ZoomIn.ckpt``) are not supported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from model.config import ModelConfig

LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
"""The file a LoRA folder or hub repo holds (diffusers' ``save_lora_weights`` name)."""
PREFIXES = {"unet": "unet", "text_encoder": "text_encoder"}


def parse_lora(entry: str) -> tuple[str, float]:
    """``"path[:scale]"`` -> (source, scale); the part after the last ``:`` is a scale only when it is a number."""
    source, sep, tail = entry.rpartition(":")
    if sep and source:
        try:
            return source, float(tail)
        except ValueError:
            pass
    return entry, 1.0


def lora_file(source: str) -> tuple[str, str | None]:
    """(what ``lora_state_dict`` reads, the weight file name inside it): a file is split into
    its folder and name, a folder or hub id reads :data:`LORA_WEIGHTS`."""
    path = Path(source).expanduser()
    if path.is_file():
        return str(path.parent), path.name
    return source, None if path.is_dir() else LORA_WEIGHTS


def lora_problem(source: str) -> str | None:
    """What is missing for a local LoRA source (None when it is there, or it is a hub id)."""
    from model.sources import WEIGHT_SUFFIXES, is_hub_id

    path = Path(source).expanduser()
    if path.is_file():
        return None if path.suffix in WEIGHT_SUFFIXES else f"{source} is not a weights file ({', '.join(WEIGHT_SUFFIXES)})"
    if path.is_dir():
        return None if any(f.suffix == ".safetensors" for f in path.iterdir()) else f"{source} has no *.safetensors"
    if path.suffix in WEIGHT_SUFFIXES or not is_hub_id(source):
        return f"no file or folder {source!r} (and it is not a hub id)"
    return None


def lora_state(entry: str, cfg: ModelConfig, unet_config=None) -> tuple[dict[str, Any], dict[str, float] | None, dict | None]:
    """The LoRA's layers with the ``unet.`` / ``text_encoder.`` prefixes (kohya files converted,
    SGM block names mapped with ``unet_config``), its alphas and its adapter metadata."""
    from diffusers import StableDiffusionPipeline

    from model.encoders import WeightsNotFoundError

    source, _ = parse_lora(entry)
    where, weight_name = lora_file(source)
    try:
        return StableDiffusionPipeline.lora_state_dict(
            where, weight_name=weight_name, local_files_only=cfg.local_files_only, unet_config=unet_config,
            return_lora_metadata=True,
        )
    except (OSError, ValueError, KeyError) as exc:
        raise WeightsNotFoundError(
            "LoRA", entry, "--model.lora takes .safetensors files, folders with pytorch_lora_weights.safetensors "
            "or hub ids, each optionally followed by :<scale>.", exc,
        ) from exc


def fuse_loras(module, cfg: ModelConfig, component: str):
    """Fuse every LoRA of ``cfg.lora`` that has layers for ``component`` (``unet`` or
    ``text_encoder``) into ``module``; raise naming the LoRA when some of its layers do not
    exist in the module (e.g. an SDXL LoRA on SD 1.5). Returns ``module``."""
    if not cfg.lora:
        return module
    prefix = PREFIXES[component] + "."
    names = {name for name, _ in module.named_modules()}
    for i, entry in enumerate(cfg.lora):
        state, alphas, metadata = lora_state(entry, cfg, module.config if component == "unet" else None)
        ours = {k: v for k, v in state.items() if k.startswith(prefix)}
        if not ours:
            continue
        alphas = {k[len(prefix):]: torch.tensor(v) for k, v in (alphas or {}).items() if k.startswith(prefix)}
        peft_state = _peft_state({**{k[len(prefix):]: v for k, v in ours.items()}, **alphas}, component)
        layers = {_module_name(k.split(".lora_")[0], module) for k in peft_state if not k.endswith(".alpha")}
        unknown = sorted(layer for layer in layers if layer not in names)
        if unknown:
            raise ValueError(
                f"lora[{i}]: {entry!r} has {len(unknown)} of {len(layers)} {component} layers this model does not have "
                f"(e.g. {unknown[0]!r}); is it a LoRA for SD 1.5?"
            )
        _, scale = parse_lora(entry)
        if component == "unet":
            name = f"lora_{i}"
            unet_alphas = {prefix + k: float(v) for k, v in alphas.items()} or None
            module.load_lora_adapter(ours, prefix=PREFIXES[component], network_alphas=unet_alphas,
                                     metadata=None if unet_alphas else metadata, adapter_name=name)
            module.fuse_lora(lora_scale=scale, adapter_names=[name])
            module.unload_lora()
        else:
            saved_alpha = (metadata or {}).get(f"{prefix}lora_alpha")  # diffusers files may keep LoraConfig there
            _merge(module, peft_state, scale, None if saved_alpha is None else float(saved_alpha))
    return module


def _peft_state(state: dict[str, Any], component: str) -> dict[str, Any]:
    """A LoRA state dict (prefix removed) with PEFT's ``<module>.lora_A.weight`` / ``lora_B`` keys
    (alphas ``<module>.lora_A.weight.alpha``), converted by diffusers' own converters from kohya
    or older diffusers keys."""
    from diffusers.utils import convert_state_dict_to_diffusers, convert_state_dict_to_peft, convert_unet_state_dict_to_peft
    from diffusers.utils.state_dict_utils import StateDictType

    if any(".lora_A." in k for k in state):
        return state
    if component == "unet":
        return convert_unet_state_dict_to_peft(state)
    old = None if any("lora_linear_layer" in k for k in state) else StateDictType.DIFFUSERS_OLD  # what kohya files become
    return convert_state_dict_to_peft(convert_state_dict_to_diffusers(state, original_type=old))


def _module_name(layer: str, module) -> str:
    """SD 1.5 text-encoder LoRAs name ``text_model.encoder...``; transformers 5's CLIPTextModel is flattened."""
    return layer.removeprefix("text_model.") if not hasattr(module, "text_model") else layer


def _merge(module, state: dict[str, Any], scale: float, saved_alpha: float | None) -> None:
    """``W += scale * alpha / rank * B @ A`` for every layer of a PEFT-format LoRA state dict
    (alpha: the layer's own, else the file's ``lora_alpha``, else the rank).

    The text encoder is merged here rather than through diffusers' ``load_lora_into_text_encoder``:
    that goes through transformers' ``load_adapter``, which asks for a PEFT release newer than
    PyPI has (transformers 5 wants peft >= 0.22; 0.21.2 is the newest)."""
    modules = dict(module.named_modules())
    with torch.no_grad():
        for key in [k for k in state if k.endswith(".lora_A.weight")]:
            layer = key[: -len(".lora_A.weight")]
            down, up = state[key].float(), state[f"{layer}.lora_B.weight"].float()
            rank = down.shape[0]
            alpha = float(state[f"{key}.alpha"]) if f"{key}.alpha" in state else saved_alpha or rank
            target = modules[_module_name(layer, module)].weight
            target += (scale * alpha / rank * (up @ down)).to(target)
