"""The training loop: a plain PyTorch loop plus Ray Train's additions.

Ray Train's parts are only :func:`ray.train.get_dataset_shard`, :func:`ray.train.torch.prepare_model`,
:func:`ray.train.get_checkpoint` and :func:`ray.train.report`. The objective
(``training/objective.py``) and the checkpoints (``training/checkpoint.py``) are plain PyTorch
that tests call without Ray.

Determinism: each epoch's shuffle comes from ``(data.shuffle_seed, epoch, rank)`` and each step's
noise from :func:`~training.objective.step_generator`; a checkpoint stores where in which epoch
the run is, so a resumed run (one worker) reproduces an uninterrupted one's losses.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from training.checkpoint import EMA, TrainState, check_replicas, load_checkpoint, load_weights, report
from training.config import TrainConfig
from pipelines.dataset import Encoders, collate, iterate_batches
from training.objective import diffusion_loss, step_generator, text_path_stats, validation_loss


@dataclass
class WorkerArgs:
    """What the driver (training/run.py) hands every worker."""

    cfg: TrainConfig
    run_id: str
    tracking_uri: str
    output_dir: str
    has_val: bool = False
    resume_from: str | None = None
    sample_references: dict[str, np.ndarray] = field(default_factory=dict)
    """``{"frames": uint8 (n, height, width, 3)}`` or ``{"latents": float32 (n, c, h, w)}`` (training/run.py)."""


def train_loop_per_worker(config: dict[str, WorkerArgs]) -> None:
    """Ray Train entry point, run on every worker: ``config["args"]`` is the :class:`WorkerArgs`."""
    import ray.train
    import ray.train.torch
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_scheduler

    from model.build import build_livephoto
    from model.encoders import encode_prompts
    from training.tracking import WorkerTracker

    args: WorkerArgs = config["args"]
    cfg = args.cfg
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
    elif args.resume_from:
        state = load_checkpoint(args.resume_from, model, optimizer, lr_scheduler, ema, cfg)
    elif cfg.init_from:
        load_weights(cfg.init_from, model, ema, cfg)

    replicas, checked_at = None, -1  # the ranks' weights, checked at each checkpoint (check_replicas)
    ddp = ray.train.torch.prepare_model(model, parallel_strategy_kwargs={"find_unused_parameters": False})
    noise_scheduler = DDPMScheduler.from_config(components.scheduler.config)
    empty_prompt = encode_prompts(components.tokenizer, components.text_encoder, [""])
    empty, empty_mask = empty_prompt["embeddings"].float(), empty_prompt["attention_mask"]
    encoders = Encoders(components, cfg.model.image_encoder_size)
    autocast = device.type == "cuda" and cfg.train.mixed_precision in ("auto", "bf16")
    tracker = WorkerTracker(args, components) if rank == 0 else None
    shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val") if args.has_val else None

    def loss_of(batch: dict, gen: torch.Generator, net, step: int = -1) -> torch.Tensor:
        batch = encoders.complete(collate(batch), device)
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
        for i, batch in enumerate(iterate_batches(shard, cfg, state.epoch, rank, shuffle=True)):
            if i < state.batch_in_epoch:
                continue  # resuming: skip the batches this epoch already used
            model.train()
            sync = (micro + 1) % accum == 0
            context = ddp.no_sync() if (not sync and hasattr(ddp, "no_sync")) else contextlib.nullcontext()
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
                window, t_last = [], time.perf_counter()
            if rank == 0 and cfg.train.text_path_every and state.step % cfg.train.text_path_every == 0:
                model.eval()
                completed = encoders.complete(collate(batch), device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                    metrics.update(text_path_stats(
                        model, completed, noise_scheduler, step_generator(cfg.train.seed, state.step, rank, -1),
                        empty_embedding=empty, empty_mask=empty_mask,
                    ))
            if val_shard is not None and cfg.train.val_every and state.step % cfg.train.val_every == 0 and rank == 0:
                metrics["val_loss"] = validation_loss(iterate_batches(val_shard, cfg, 0, 0, shuffle=False), cfg.train.val_batches,
                                                      cfg.train.seed, lambda b, g: loss_of(b, g, model))
            if tracker is not None:
                tracker.log(state, metrics, model, ema)
            save = state.step % cfg.checkpoint.every == 0 or state.step == cfg.train.steps
            if save:  # a checkpoint is rank 0's weights: check that every rank holds the same
                replicas, checked_at = check_replicas(named, rank, world, state.step), state.step
                if tracker is not None:
                    tracker.log_replicas(state, replicas)
            report(metrics, state, save, rank, model, optimizer, lr_scheduler, ema, cfg, args.run_id)
            if state.step >= cfg.train.steps:
                break
        else:
            state.epoch += 1
            state.batch_in_epoch = 0
    if checked_at != state.step:  # the last step always saves, so this is only a run resumed at its end
        replicas = check_replicas(named, rank, world, state.step)
    if tracker is not None:
        tracker.finish(state, model, ema, replicas)
