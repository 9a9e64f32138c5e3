"""What ``LivePhotoPipeline.__call__`` accepts: a batch of requests made of scalars and lists, and
the checks that raise a short ValueError naming the first bad field (diffusers' ``check_inputs``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

OUTPUT_TYPES = ("np", "pt", "pil", "latent")
CALLBACK_TENSORS = ("latents", "noise_pred")
"""What ``callback_on_step_end`` may ask for (``callback_on_step_end_tensor_inputs``) and return."""


@dataclass
class Requests:
    """One entry per video to make: ``requests`` requests x ``copies`` (``num_videos_per_prompt``),
    copy ``j`` of request ``i`` at index ``i * copies + j``. ``prompts`` holds None where
    ``prompt_embeds`` stands in for the prompt."""

    images: list
    prompts: list
    intensities: list
    negative_prompts: list
    generators: list
    requests: int
    copies: int

    @property
    def batch(self) -> int:
        return self.requests * self.copies


def _as_list(value, name: str) -> list:
    if isinstance(value, (list, tuple)):
        if len(value) == 0:
            raise ValueError(f"{name}: is an empty list")
        return list(value)
    return [value]


def _broadcast(values: dict[str, list]) -> int:
    """The batch size: every list has length 1 or the same length N."""
    lengths = {name: len(v) for name, v in values.items() if len(v) != 1}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{k}={n}" for k, n in lengths.items())
        raise ValueError(f"{next(iter(lengths))}: batch sizes differ ({detail})")
    return max(lengths.values(), default=1)


def gather_requests(image, prompt, intensity, negative_prompt, seed, generator, num_videos_per_prompt: int,
                    prompt_embeds=None, negative_prompt_embeds=None, callback_tensors=("latents",)) -> Requests:
    """Scalars and lists -> one list per field, each as long as the batch; a length-1 list or a
    scalar is shared by all. Copy ``j`` of a request with ``seed=s`` draws from seed ``s + j``;
    with a generator the copies draw from it in turn."""
    if seed is not None and generator is not None:
        raise ValueError("seed: give seed or generator, not both")
    if (prompt is None) == (prompt_embeds is None):
        raise ValueError("prompt: give prompt or prompt_embeds, exactly one")
    if negative_prompt is not None and negative_prompt_embeds is not None:
        raise ValueError("negative_prompt: give negative_prompt or negative_prompt_embeds, not both")
    if not isinstance(num_videos_per_prompt, int) or num_videos_per_prompt < 1:
        raise ValueError(f"num_videos_per_prompt: must be an integer >= 1, got {num_videos_per_prompt!r}")
    unknown = [name for name in callback_tensors if name not in CALLBACK_TENSORS]
    if unknown:
        raise ValueError(f"callback_on_step_end_tensor_inputs: unknown {unknown}; allowed: {', '.join(CALLBACK_TENSORS)}")
    lists = {
        "image": _as_list(image, "image"),
        "prompt": _as_list(prompt, "prompt"),
        "intensity": _as_list(intensity, "intensity"),
        "negative_prompt": _as_list(negative_prompt if negative_prompt is not None else "", "negative_prompt"),
        "seed": _as_list(seed, "seed"),
        "generator": _as_list(generator, "generator"),
    }
    if isinstance(prompt_embeds, torch.Tensor) and prompt_embeds.dim() == 3 and prompt_embeds.shape[0] > 1:
        lists["prompt"] = [None] * prompt_embeds.shape[0]  # the embeddings' batch counts like a list of prompts
    requests = _broadcast(lists)
    lists = {k: v * requests if len(v) == 1 else v for k, v in lists.items()}
    n = num_videos_per_prompt
    if seed is not None:
        generators = [torch.Generator().manual_seed(int(s) + j) for s in lists["seed"] for j in range(n)]
    else:
        generators = [g for g in lists["generator"] for _ in range(n)]
    copies = {k: [x for x in v for _ in range(n)] for k, v in lists.items()}
    return Requests(images=copies["image"], prompts=copies["prompt"], intensities=copies["intensity"],
                    negative_prompts=copies["negative_prompt"], generators=generators, requests=requests, copies=n)


def check_inputs(prompts, intensities, num_frames, height, width, num_inference_steps, guidance_scale, output_type,
                 guidance_rescale: float, guidance_interval: tuple[float, float], *, levels: int, max_frames: int) -> None:
    """Raise a short ValueError naming the first bad field."""
    for prompt in prompts:
        if prompt is None:  # prompt_embeds given instead
            continue
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"prompt: must be a non-empty string, got {prompt!r}")
    for level in intensities:
        if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or not 1 <= level <= levels:
            raise ValueError(f"intensity: must be an integer 1..{levels}, got {level!r}")
    if not isinstance(num_frames, int) or not 1 <= num_frames <= max_frames:
        raise ValueError(f"num_frames: must be 1..{max_frames} (the motion modules' maximum), got {num_frames}")
    for name, size in (("height", height), ("width", width)):
        if not isinstance(size, int) or size <= 0 or size % 8:
            raise ValueError(f"{name}: must be a positive multiple of 8, got {size}")
    if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
        raise ValueError(f"num_inference_steps: must be >= 1, got {num_inference_steps}")
    if guidance_scale < 0:
        raise ValueError(f"guidance_scale: must be >= 0, got {guidance_scale}")
    if not 0.0 <= guidance_rescale <= 1.0:
        raise ValueError(f"guidance_rescale: must be 0..1, got {guidance_rescale}")
    if len(guidance_interval) != 2 or not 0.0 <= guidance_interval[0] <= guidance_interval[1] <= 1.0:
        raise ValueError(f"guidance_interval: must be (start, stop) with 0 <= start <= stop <= 1, got {guidance_interval!r}")
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"output_type: got {output_type!r}, allowed: {', '.join(OUTPUT_TYPES)}")


def check_embeddings(name: str, embeds, mask: torch.Tensor | None, requests: int, copies: int, tokens: int, dim: int):
    """``prompt_embeds`` (requests or 1, tokens, dim) and its mask (default: every token counts),
    checked against what the network attends to; returns both expanded to (requests * copies, ...)."""
    if not isinstance(embeds, torch.Tensor) or embeds.dim() != 3 or tuple(embeds.shape[1:]) != (tokens, dim):
        shape = tuple(embeds.shape) if isinstance(embeds, torch.Tensor) else type(embeds).__name__
        raise ValueError(f"{name}: must be a tensor (batch, {tokens}, {dim}) as encode_prompt returns, got {shape}")
    if embeds.shape[0] not in (1, requests):
        raise ValueError(f"{name}: batch {embeds.shape[0]} does not match the other inputs' {requests}")
    if mask is None:
        mask = torch.ones(embeds.shape[:2], dtype=torch.long)
    if tuple(mask.shape) != tuple(embeds.shape[:2]):
        raise ValueError(f"{name.replace('embeds', 'attention_mask')}: must be (batch, {tokens}), got {tuple(mask.shape)}")
    expand = requests // embeds.shape[0]
    return (embeds.repeat(expand, 1, 1).repeat_interleave(copies, 0),
            mask.repeat(expand, 1).repeat_interleave(copies, 0))
