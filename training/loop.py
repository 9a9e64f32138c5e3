"""The training loop: a plain PyTorch loop plus Ray Train's additions.

Ray Train's parts are only :func:`ray.train.get_dataset_shard`, :func:`ray.train.torch.prepare_model`,
:func:`ray.train.get_checkpoint` and :func:`ray.train.report`. Everything else (the diffusion
loss, checkpoint files, EMA) is plain PyTorch that tests call without Ray.

Determinism: noise, timesteps and caption dropout of optimizer step ``s`` on rank ``r`` come
from a generator seeded with ``(train.seed, s, r, micro-batch)``, and each epoch's shuffle
from ``(data.shuffle_seed, epoch, r)``; a checkpoint stores the step, the epoch and how many
batches of it were consumed. So a resumed run (one worker) sees the same batches and noise as
an uninterrupted one and reproduces its losses.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from common.config import ConfigError, from_dict
from model.load import CHECKPOINT_EMA, CHECKPOINT_STATE, CHECKPOINT_TRAINABLE
from training.config import TrainConfig
from training.data import collate

TRAINABLE_FILE, EMA_FILE, STATE_FILE = CHECKPOINT_TRAINABLE, CHECKPOINT_EMA, CHECKPOINT_STATE  # model/load.py reads them
OPTIMIZER_FILE = "optimizer.pt"


class CheckpointMismatchError(ConfigError):
    """A checkpoint written for a different model configuration."""


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    epoch: int = 0
    batch_in_epoch: int = 0  # micro-batches of this epoch already consumed
    restarts: int = 0


# --------------------------------------------------------------------------- the objective


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


# --------------------------------------------------------------------------- EMA


class EMA:
    """Exponential moving average of the trainable weights (kept on the model's device)."""

    def __init__(self, named_params: list[tuple[str, torch.nn.Parameter]], decay: float):
        self.decay = decay
        self.shadow = {n: p.detach().clone() for n, p in named_params}

    @torch.no_grad()
    def update(self, named_params: list[tuple[str, torch.nn.Parameter]]) -> None:
        for n, p in named_params:
            self.shadow[n].lerp_(p.detach(), 1 - self.decay)


# --------------------------------------------------------------------------- checkpoints


def save_checkpoint(directory: str | Path, model, optimizer, lr_scheduler, ema: EMA | None, state: TrainState, cfg: TrainConfig, extra: dict) -> None:
    """Trainable weights (safetensors), optimizer + LR schedule (tensors only), EMA, step, data position."""
    from safetensors.torch import save_file

    directory = Path(directory)
    save_file({k: v.detach().contiguous().cpu() for k, v in model.trainable_state_dict().items()}, directory / TRAINABLE_FILE)
    if ema is not None:
        save_file({k: v.contiguous().cpu() for k, v in ema.shadow.items()}, directory / EMA_FILE)
    torch.save({"optimizer": optimizer.state_dict(), "lr_scheduler": lr_scheduler.state_dict(), "torch_rng": torch.get_rng_state()}, directory / OPTIMIZER_FILE)
    meta = {"state": asdict(state), "model": asdict(cfg.model), "trainable": cfg.train.trainable, **extra}
    (directory / STATE_FILE).write_text(json.dumps(meta, indent=2, default=list))


def read_checkpoint_meta(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / STATE_FILE
    if not path.is_file():
        raise CheckpointMismatchError(f"{directory} is not a training checkpoint (no {STATE_FILE})")
    return json.loads(path.read_text())


def load_checkpoint(directory: str | Path, model, optimizer, lr_scheduler, ema: EMA | None, cfg: TrainConfig) -> TrainState:
    """Restore what :func:`save_checkpoint` wrote; a checkpoint of another model config is an error."""
    from safetensors.torch import load_file

    directory = Path(directory)
    meta = check_model_config(directory, cfg)
    model.load_trainable_state_dict(load_file(directory / TRAINABLE_FILE))
    extra = torch.load(directory / OPTIMIZER_FILE, map_location="cpu", weights_only=True)
    if meta["trainable"] == cfg.train.trainable:
        optimizer.load_state_dict(extra["optimizer"])
        lr_scheduler.load_state_dict(extra["lr_scheduler"])
    torch.set_rng_state(extra["torch_rng"])
    if ema is not None and (directory / EMA_FILE).is_file():
        for k, v in load_file(directory / EMA_FILE).items():
            ema.shadow[k].copy_(v)
    return TrainState(**meta["state"])


def check_model_config(directory: str | Path, cfg: TrainConfig) -> dict[str, Any]:
    """The checkpoint's metadata; raise if it was written for another model config."""
    meta = read_checkpoint_meta(directory)
    ours = json.loads(json.dumps(asdict(cfg.model), default=list))
    differing = sorted(k for k in set(ours) | set(meta["model"]) if ours.get(k) != meta["model"].get(k))
    if differing:
        raise CheckpointMismatchError(
            f"checkpoint {directory} was written for another model config; differing fields: "
            + ", ".join(f"model.{k} (checkpoint {meta['model'].get(k)!r}, now {ours.get(k)!r})" for k in differing[:5])
        )
    return meta


def load_weights(directory: str | Path, model, ema: EMA | None, cfg: TrainConfig) -> None:
    """A new stage: only the trainable weights of a checkpoint (no optimizer, step or data position)."""
    from safetensors.torch import load_file

    check_model_config(directory, cfg)
    model.load_trainable_state_dict(load_file(Path(directory) / TRAINABLE_FILE))
    if ema is not None:
        params = dict(model.named_parameters())
        for name in ema.shadow:
            ema.shadow[name].copy_(params[name].detach())


# --------------------------------------------------------------------------- the worker


class Encoders:
    """Fills in what the dataset did not precompute, with the frozen encoders."""

    def __init__(self, components, arrays: dict[str, Any], image_size: int):
        self.c, self.arrays, self.image_size = components, arrays, image_size

    @torch.no_grad()
    def complete(self, batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
        from einops import rearrange

        from model import encoders as E

        out = dict(batch)
        if "latents" not in out:
            frames = out["frames"]  # (b, f, h, w, 3) uint8
            z = E.encode_latents(self.c.vae, E.frames_to_pixels(rearrange(frames, "b f h w c -> (b f) h w c")))
            out["latents"] = rearrange(z.float(), "(b f) c h w -> b c f h w", b=frames.shape[0])
        if "text_embedding" not in out:
            enc = E.encode_prompts(self.c.tokenizer, self.c.text_encoder, out["caption"])
            out["text_embedding"], out["attention_mask"] = enc["embeddings"].float(), enc["attention_mask"]
        if "image_tokens" not in out and self.c.image_encoder is not None:
            first = out["frames"][:, 0]
            out["image_tokens"] = E.encode_image_tokens(self.c.image_encoder, E.image_encoder_pixels(first, self.image_size)).float()
        return {k: (v.to(device) if torch.is_tensor(v) and k != "frames" else v) for k, v in out.items()}


def _iterate(shard, cfg: TrainConfig, epoch: int, rank: int, shuffle: bool):
    kwargs: dict[str, Any] = {"batch_size": cfg.train.batch_size, "batch_format": "numpy", "drop_last": shuffle}
    if shuffle:
        kwargs.update(local_shuffle_buffer_size=cfg.data.shuffle_buffer, local_shuffle_seed=cfg.data.shuffle_seed + 1009 * epoch + rank)
    return shard.iter_batches(**kwargs)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point, run on every worker."""
    import ray.train
    import ray.train.torch
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_scheduler

    from model.build import build_livephoto
    from model.encoders import encode_prompts
    from training.tracking import WorkerTracker

    cfg = from_dict(TrainConfig, config["cfg"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()

    # 1. the model: frozen encoders + the LivePhoto network, trainable groups from the config
    components = build_livephoto(cfg.model)
    model = components.model
    model.set_trainable(cfg.train.trainable)
    if cfg.train.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    for module in (model, components.vae, components.text_encoder, components.image_encoder):
        if module is not None:
            module.to(device)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([p for _, p in named], lr=cfg.optim.lr, betas=cfg.optim.betas, weight_decay=cfg.optim.weight_decay)
    lr_scheduler = get_scheduler(
        cfg.optim.schedule, optimizer, num_warmup_steps=cfg.optim.warmup_steps,
        num_training_steps=cfg.optim.schedule_steps or cfg.train.steps,
    )
    ema = EMA(named, cfg.optim.ema_decay) if cfg.optim.ema_decay else None

    # 2. resume: Ray's latest checkpoint after a failure, else --resume
    state = TrainState()
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = load_checkpoint(directory, model, optimizer, lr_scheduler, ema, cfg)
        state.restarts += 1
    elif config.get("resume_from"):
        state = load_checkpoint(config["resume_from"], model, optimizer, lr_scheduler, ema, cfg)
    elif cfg.init_from:
        load_weights(cfg.init_from, model, ema, cfg)

    replicas, checked_at = None, -1  # the ranks' weights, checked at each checkpoint (check_replicas)
    ddp = ray.train.torch.prepare_model(model, parallel_strategy_kwargs={"find_unused_parameters": False})
    noise_scheduler = DDPMScheduler.from_config(components.scheduler.config)
    empty_prompt = encode_prompts(components.tokenizer, components.text_encoder, [""])
    empty, empty_mask = empty_prompt["embeddings"].float(), empty_prompt["attention_mask"]
    arrays = config["arrays"]
    encoders = Encoders(components, arrays, cfg.model.image_encoder_size)
    autocast = device.type == "cuda" and cfg.train.mixed_precision in ("auto", "bf16")
    tracker = WorkerTracker(config, cfg, components, rank) if rank == 0 else None
    shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val") if config.get("has_val") else None

    def loss_of(batch: dict, gen: torch.Generator, net, step: int = -1) -> torch.Tensor:
        batch = encoders.complete(collate(batch, arrays), device)
        t = cfg.train
        bias = (t.timestep_bias_portion, t.timestep_bias_begin) if step >= t.timestep_bias_from_step else None
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            return diffusion_loss(
                net, batch, noise_scheduler, gen, empty_embedding=empty, empty_mask=empty_mask,
                caption_dropout=t.caption_dropout, noise_offset=t.noise_offset, min_snr_gamma=t.min_snr_gamma,
                timestep_bias=bias,
            )

    # 3. the loop: steps, not epochs; a checkpoint records where in which epoch we are
    accum, micro, window, t_last = cfg.train.grad_accum, 0, [], time.perf_counter()
    while state.step < cfg.train.steps:
        for i, batch in enumerate(_iterate(shard, cfg, state.epoch, rank, shuffle=True)):
            if i < state.batch_in_epoch:
                continue  # resuming: skip the batches this epoch already used
            model.train()
            sync = (micro + 1) % accum == 0
            context = ddp.no_sync() if (not sync and hasattr(ddp, "no_sync")) else _null()
            with context:
                loss = loss_of(batch, step_generator(cfg.train.seed, state.step, rank, micro), ddp, state.step)
                (loss / accum).backward()
            window.append(loss.item())
            state.batch_in_epoch = i + 1
            micro += 1
            if not sync:
                continue
            grad_norm = torch.nn.utils.clip_grad_norm_([p for _, p in named], cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else math.inf)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update(named)
            state.step += 1
            micro = 0

            metrics: dict[str, float] = {}
            if state.step % cfg.train.log_every == 0 or state.step == cfg.train.steps:
                elapsed = time.perf_counter() - t_last
                metrics.update(
                    loss=float(np.mean(window)), lr=lr_scheduler.get_last_lr()[0], grad_norm=float(grad_norm),
                    samples_per_s=len(window) * cfg.train.batch_size * world / max(elapsed, 1e-9), epoch=state.epoch,
                    restarts=state.restarts,
                )
                if device.type == "cuda":
                    metrics["gpu_mem_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
                if rank == 0:
                    model.eval()
                    completed = encoders.complete(collate(batch, arrays), device)
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                        metrics.update(text_path_stats(
                            model, completed, noise_scheduler, step_generator(cfg.train.seed, state.step, rank, -1),
                            empty_embedding=empty, empty_mask=empty_mask,
                        ))
                window, t_last = [], time.perf_counter()
            if val_shard is not None and cfg.train.val_every and state.step % cfg.train.val_every == 0 and rank == 0:
                metrics["val_loss"] = validation_loss(val_shard, cfg, lambda b, g: loss_of(b, g, model))
            if tracker is not None:
                tracker.log(state, metrics, model, ema)
            save = state.step % cfg.checkpoint.every == 0 or state.step == cfg.train.steps
            if save:  # a checkpoint is rank 0's weights: check that every rank holds the same
                replicas, checked_at = check_replicas(named, rank, world, state.step), state.step
                if tracker is not None:
                    tracker.log_replicas(state, replicas)
            report(metrics, state, save, rank, model, optimizer, lr_scheduler, ema, cfg, config)
            if state.step >= cfg.train.steps:
                break
        else:
            state.epoch += 1
            state.batch_in_epoch = 0
    if checked_at != state.step:  # the last step always saves, so this is only a run resumed at its end
        replicas = check_replicas(named, rank, world, state.step)
    if tracker is not None:
        tracker.finish(state, model, ema, replicas)


def check_replicas(named: list[tuple[str, torch.nn.Parameter]], rank: int, world: int, step: int) -> list[dict[str, Any]]:
    """:func:`gather_replicas` (a collective: every rank calls it), raising if the ranks' weights differ."""
    replicas = gather_replicas(named, rank, world)
    if len({r["sha1"] for r in replicas}) > 1:
        raise RuntimeError(f"trainable weights differ between ranks after step {step}: {replicas}")
    return replicas


def gather_replicas(named: list[tuple[str, torch.nn.Parameter]], rank: int, world: int) -> list[dict[str, Any]]:
    """``{"rank", "node", "sha1"}`` of every worker: SHA-1 of its trainable weights' bytes (DDP keeps them identical)."""
    import hashlib

    import ray

    digest = hashlib.sha1()
    for _, p in named:
        digest.update(p.detach().float().cpu().numpy().tobytes())
    mine = {"rank": rank, "node": ray.get_runtime_context().get_node_id(), "sha1": digest.hexdigest()}
    if world == 1:
        return [mine]
    import torch.distributed as dist

    everyone: list[Any] = [None] * world
    dist.all_gather_object(everyone, mine)
    return everyone


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@torch.no_grad()
def validation_loss(val_shard, cfg: TrainConfig, loss_fn) -> float:
    """Mean loss over the first ``val_batches`` validation batches, with fixed noise (comparable over time)."""
    losses = []
    for j, batch in enumerate(_iterate(val_shard, cfg, 0, 0, shuffle=False)):
        if j >= cfg.train.val_batches:
            break
        losses.append(loss_fn(batch, step_generator(cfg.train.seed, -1, 0, j)).item())
    return float(np.mean(losses)) if losses else float("nan")


def report(metrics, state, save, rank, model, optimizer, lr_scheduler, ema, cfg, config) -> None:
    """``ray.train.report`` on every rank; rank 0 attaches a checkpoint every ``checkpoint.every`` steps."""
    import ray.train

    metrics = {**metrics, "step": state.step}
    if not save:
        if metrics.keys() - {"step"}:
            ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if rank == 0:
            save_checkpoint(tmp, model, optimizer, lr_scheduler, ema, state, cfg, {"mlflow_run_id": config.get("run_id")})
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=f"checkpoint_step_{state.step:08d}")


def checkpoint_step(path: str | os.PathLike) -> int:
    return int(read_checkpoint_meta(path)["state"]["step"])
