"""The training objective, plain PyTorch (tests and benchmarks call it without Ray).

Determinism: noise, timesteps and caption dropout of optimizer step ``s`` on rank ``r`` come
from :func:`step_generator` seeded with ``(train.seed, s, r, micro-batch)``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def step_generator(seed: int, step: int, rank: int, micro: int) -> torch.Generator:
    return torch.Generator().manual_seed(hash((seed, step, rank, micro)) & 0x7FFF_FFFF_FFFF)


def diffusion_loss(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    noise_scheduler: Any,
    generator: torch.Generator,
    *,
    empty_embedding: torch.Tensor,
    empty_mask: torch.Tensor | None = None,
    caption_dropout: float,
    noise_offset: float = 0.0,
    min_snr_gamma: float | None = None,
    timestep_bias: tuple[float, int] | None = None,
) -> torch.Tensor:
    """Diffusion MSE of one batch: epsilon prediction (the paper's objective), or the velocity
    when the scheduler's ``prediction_type`` is ``v_prediction`` (``model.prediction_type``).

    ``batch`` holds ``latents`` (b, 4, f, h, w), ``text_embedding`` (b, tokens, d),
    ``attention_mask`` (b, tokens), ``image_tokens`` (b, n, d') or None and ``intensity`` (b,).
    The reference latent is the clip's first-frame latent. Captions are replaced by the empty
    caption (``empty_embedding`` (1, tokens, d), ``empty_mask`` (1, tokens)) with probability
    ``caption_dropout`` (for classifier-free guidance). ``timestep_bias`` = (portion, begin) draws
    that share of the clips' timesteps from [begin, T) (the noisiest steps, where the motion
    must come from the caption; ``train.timestep_bias_*``).
    """
    latents = batch["latents"]
    device = latents.device
    b = latents.shape[0]
    # 1. noise, timesteps and caption dropout from the step's generator (on CPU: device independent)
    noise = torch.randn(latents.shape, generator=generator).to(device)
    if noise_offset:
        noise = noise + noise_offset * torch.randn((b, latents.shape[1], 1, 1, 1), generator=generator).to(device)
    num_timesteps = noise_scheduler.config.num_train_timesteps
    timesteps = torch.randint(0, num_timesteps, (b,), generator=generator)
    drop = (torch.rand(b, generator=generator) < caption_dropout).to(device)
    if timestep_bias is not None and timestep_bias[0] > 0:
        portion, begin = timestep_bias
        if not 0 <= begin < num_timesteps:
            raise ValueError(f"timestep_bias_begin: must be in 0..{num_timesteps - 1}, got {begin}")
        biased = torch.rand(b, generator=generator) < portion
        timesteps = torch.where(biased, torch.randint(begin, num_timesteps, (b,), generator=generator), timesteps)
    timesteps = timesteps.to(device)
    text = torch.where(drop[:, None, None], empty_embedding.to(device).expand_as(batch["text_embedding"]), batch["text_embedding"])
    mask = batch.get("attention_mask")
    if mask is not None:
        if empty_mask is None:
            raise ValueError("empty_mask: required when the batch has an attention_mask")
        mask = torch.where(drop[:, None], empty_mask.to(device).expand_as(mask), mask)
    # 2. noised input and prediction
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    pred = model(
        noisy, timesteps, encoder_hidden_states=text, reference_latents=latents[:, :, 0],
        intensity=batch["intensity"].to(device), image_tokens=batch.get("image_tokens"), attention_mask=mask,
    ).sample
    # 3. MSE against the scheduler's target, optionally min-SNR weighted
    velocity = noise_scheduler.config.prediction_type == "v_prediction"
    target = noise_scheduler.get_velocity(latents, noise, timesteps) if velocity else noise
    per_clip = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3, 4))
    if min_snr_gamma is not None:
        alphas = noise_scheduler.alphas_cumprod.to(device)[timesteps]
        snr = alphas / (1 - alphas)
        per_clip = per_clip * torch.clamp(snr, max=min_snr_gamma) / (snr + 1 if velocity else snr)
    return per_clip.mean()


@torch.no_grad()
def text_path_stats(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    noise_scheduler: Any,
    generator: torch.Generator,
    *,
    empty_embedding: torch.Tensor,
    empty_mask: torch.Tensor | None,
    timestep: int | None = None,
) -> dict[str, float]:
    """Is the network still listening to the caption? Two numbers logged during training.

    * ``text_token_weight``: mean re-weighting weight of the real (unmasked) tokens (absent
      when re-weighting is off); a gate driven towards its floor is closing the text path.
    * ``text_cond_gap``: mean |prediction(caption) - prediction(empty caption)| on this batch,
      noised at ``timestep`` (default 90% of the schedule, where the caption matters most),
      relative to the mean |prediction(caption)|; 0 means the caption is ignored.
    """
    latents = batch["latents"]
    device = latents.device
    b = latents.shape[0]
    t = int(0.9 * (noise_scheduler.config.num_train_timesteps - 1)) if timestep is None else timestep
    timesteps = torch.full((b,), t, dtype=torch.long, device=device)
    noisy = noise_scheduler.add_noise(latents, torch.randn(latents.shape, generator=generator).to(device), timesteps)
    common = dict(reference_latents=latents[:, :, 0], intensity=batch["intensity"].to(device), image_tokens=batch.get("image_tokens"))
    mask = batch.get("attention_mask")
    cond = model(noisy, timesteps, encoder_hidden_states=batch["text_embedding"], attention_mask=mask, **common)
    null_mask = None if mask is None else empty_mask.to(device).expand_as(mask)
    null = model(noisy, timesteps, encoder_hidden_states=empty_embedding.to(device).expand_as(batch["text_embedding"]),
                 attention_mask=null_mask, **common)
    gap = (cond.sample.float() - null.sample.float()).abs().mean() / cond.sample.float().abs().mean().clamp_min(1e-8)
    stats = {"text_cond_gap": float(gap)}
    if cond.token_weights is not None:
        real = torch.ones_like(cond.token_weights, dtype=torch.bool) if mask is None else mask.to(device) > 0
        stats["text_token_weight"] = float(cond.token_weights[real].mean())
    return stats


@torch.no_grad()
def validation_loss(batches, count: int, seed: int, loss_fn) -> float:
    """Mean ``loss_fn(batch, generator)`` over the first ``count`` batches, with fixed noise (comparable over time)."""
    losses = []
    for j, batch in enumerate(batches):
        if j >= count:
            break
        losses.append(loss_fn(batch, step_generator(seed, -1, 0, j)).item())
    return sum(losses) / len(losses) if losses else float("nan")
