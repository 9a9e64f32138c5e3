"""Does the real LivePhoto network listen to its condition? A bare PyTorch loop (no Ray) on
in-memory pans, printing a table of the text path's health and of held-out direction accuracy.

    python benchmarks/text_path.py                          # mini preset, MiniLM captions, normalised gate
    python benchmarks/text_path.py --plain-sigmoid          # the paper's gate: watch it shut
    python benchmarks/text_path.py --condition oracle-all   # a fixed vector per direction in every token slot
    python benchmarks/text_path.py --condition oracle-one   # ... in one slot, the rest empty-caption tokens
    python benchmarks/text_path.py --no-reference-skip      # the network without the reference skip
    python benchmarks/text_path.py --profile                # where a training step's time goes

Data: ``--clips`` pans of the 8 training photos (``sample_data``, image-space
captions, 10 speeds of 0.4-2.0 px/frame at 32 px); evaluation: 2 views of each held-out photo
(chelsea, coffee) x 4 directions at level 7, DDIM 10 steps, guidance 3, direction measured
with the evaluation's Farneback metric. Columns: ``gap`` = |pred(condition) - pred(empty)| /
|pred| at t = 0.9 T (``training.objective.text_path_stats``), ``weight`` = mean token weight,
``copy PSNR at T-1`` = the first frame of the network's one-step clean estimate from pure noise
against the reference photo (``copy_psnr``: what the network copies before any sampler error).
An oracle condition bypasses text on purpose: it is a diagnostic of the network, never a model.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from evaluation.metrics import motion_stats, psnr
from model import encoders as E
from model.build import build_livephoto
from model.config import BASE_GROUP, TRAINABLE_GROUPS, ModelConfig, model_preset
from model.pipeline import LivePhotoPipeline
import sample_data as sd
from training.objective import diffusion_loss, step_generator, text_path_stats

HELD_OUT = ("chelsea", "coffee")
SPEEDS = np.geomspace(0.4, 2.0, 10)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=1400)
    p.add_argument("--clips", type=int, default=1200)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--condition", choices=("minilm", "oracle-all", "oracle-one"), default="minilm")
    p.add_argument("--plain-sigmoid", action="store_true", help="the paper's un-normalised gate (model.reweight_normalize=false)")
    p.add_argument("--no-reference-skip", action="store_true",
                   help="the network without the mini preset's reference skip (model.reference_skip=false)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--profile", action="store_true", help="profile a few training steps and exit")
    return p.parse_args(argv)


def make_clips(n: int, size: int, frames: int, seed: int = 0):
    photos = sd.load_photos()
    names = [p for p in sorted(photos) if p not in HELD_OUT]
    rng = np.random.default_rng(seed)
    clips, captions, levels, directions = [], [], [], []
    for i in range(n):
        name = names[i % len(names)]
        direction = sd.DIRECTIONS[(i // len(names)) % 4]
        level = int(rng.integers(0, 10))
        clips.append(sd.render_clip(photos[name][0], "pan", direction, float(SPEEDS[level]), frames, size, rng))
        content = photos[name][1] if rng.random() < 0.5 else str(rng.choice(sd.EXTRA_CONTENT))
        captions.append(sd.make_caption(content, "pan", direction, 1.0, rng, size, adverbs=False, wording="image"))
        levels.append(level + 1)
        directions.append(direction)
    return np.stack(clips), captions, levels, directions


def oracle(directions, empty: torch.Tensor, mask: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed random unit-scale vector per direction: in every slot, or in slot 1 after the empty caption's."""
    g = torch.Generator().manual_seed(1234)
    table = {d: torch.randn(empty.shape[-1], generator=g) for d in sd.DIRECTIONS}
    out, masks = [], []
    for d in directions:
        if kind == "oracle-all":
            out.append(table[d].expand(empty.shape[1], -1))
            masks.append(torch.ones_like(mask[0]))
        else:
            row = empty[0].clone()
            row[2] = table[d]
            m = mask[0].clone()
            m[2] = 1
            out.append(row)
            masks.append(m)
    return torch.stack(out), torch.stack(masks)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = ModelConfig(**{**model_preset("mini"), "reweight_normalize": not args.plain_sigmoid, "reference_skip": not args.no_reference_skip})
    size, frames = cfg.resolution, cfg.num_frames
    c = build_livephoto(cfg)
    model = c.model
    model.set_trainable([*TRAINABLE_GROUPS, BASE_GROUP])
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_scheduler

    sched = DDPMScheduler.from_config(c.scheduler.config)
    empty = E.encode_prompts(c.tokenizer, c.text_encoder, [""])
    n = 64 if args.profile else args.clips
    started = time.perf_counter()
    clips, captions, levels, directions = make_clips(n, size, frames)
    frames_t = torch.from_numpy(clips)
    with torch.no_grad():
        lat = E.encode_latents(c.vae, E.frames_to_pixels(frames_t.flatten(0, 1)))
        lat = lat.unflatten(0, (n, frames)).permute(0, 2, 1, 3, 4).contiguous()
        tokens = E.encode_image_tokens(c.image_encoder, E.image_encoder_pixels(frames_t[:, 0], cfg.image_encoder_size)).float()
        if args.condition == "minilm":
            enc = E.encode_prompts(c.tokenizer, c.text_encoder, captions)
            emb, mask = enc["embeddings"].float(), enc["attention_mask"]
        else:
            emb, mask = oracle(directions, empty["embeddings"].float(), empty["attention_mask"], args.condition)
    print(f"{n} clips, conditions {tuple(emb.shape)} in {time.perf_counter() - started:.0f} s; "
          f"{sum(p.numel() for p in model.trainable_parameters()) / 1e6:.2f} M trainable parameters", flush=True)
    levels_t = torch.tensor(levels)
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=args.lr, weight_decay=1e-2)
    lrs = get_scheduler("constant_with_warmup", opt, num_warmup_steps=50)
    kwargs = dict(empty_embedding=empty["embeddings"].float(), empty_mask=empty["attention_mask"])

    def batch_at(step: int):
        g = step_generator(0, step, 0, 0)
        idx = torch.randint(0, n, (args.batch_size,), generator=g)
        return g, {"latents": lat[idx], "text_embedding": emb[idx], "attention_mask": mask[idx],
                   "intensity": levels_t[idx], "image_tokens": tokens[idx]}

    def train_step(step: int) -> float:
        g, batch = batch_at(step)
        loss = diffusion_loss(model, batch, sched, g, caption_dropout=0.15, **kwargs)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.trainable_parameters(), 1.0)
        opt.step()
        lrs.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    model.train()
    if args.profile:
        return profile(train_step)
    pipe = LivePhotoPipeline.from_components(c)
    pipe.set_progress_bar_config(disable=True)
    views = evaluation_views(size)
    print("| step | loss | s/step | gap | weight | direction acc. | first-frame PSNR | copy PSNR at T-1 |", flush=True)
    print("| --- | --- | --- | --- | --- | --- | --- | --- |", flush=True)
    window, t_last = [], time.perf_counter()
    for step in range(1, args.steps + 1):
        window.append(train_step(step))
        if step % args.log_every == 0 or step % args.eval_every == 0:
            seconds = (time.perf_counter() - t_last) / len(window)
            model.eval()
            _, batch = batch_at(step)
            stats = text_path_stats(model, batch, sched, step_generator(0, step, 0, -1), **kwargs)
            acc, psnr = evaluate(pipe, views, args, empty) if step % args.eval_every == 0 else ("", "")
            copy = copy_psnr(pipe, views, empty) if step % args.eval_every == 0 else ""
            model.train()
            print(f"| {step} | {np.mean(window):.4f} | {seconds:.2f} | {stats['text_cond_gap']:.4f} | "
                  f"{stats.get('text_token_weight', float('nan')):.3f} | {acc} | {psnr} | {copy} |", flush=True)
            window, t_last = [], time.perf_counter()
    return 0


def evaluation_views(size: int):
    photos = sd.load_photos()
    rng = np.random.default_rng(123)
    return [(sd.random_view(photos[name][0], size, rng, (1.0, 1.4)), photos[name][1]) for name in HELD_OUT for _ in range(2)]


@torch.no_grad()
def evaluate(pipe, views, args, empty) -> tuple[str, str]:
    images, prompts, wanted = [], [], []
    for image, content in views:
        for d in sd.DIRECTIONS:
            images.append(image)
            prompts.append(f"{content}, the scene drifts {d}")
            wanted.append(d)
    size, frames = pipe.cfg.resolution, pipe.cfg.num_frames
    if args.condition == "minilm":
        out = pipe(images, prompts, intensity=7, num_frames=frames, height=size, width=size, num_inference_steps=10,
                   guidance_scale=3.0, seed=list(range(len(images))))
        videos = out.frames
    else:  # the oracle condition through the same sampler: the pipeline's prompt embedding replaced
        emb, mask = oracle(wanted, empty["embeddings"].float(), empty["attention_mask"], args.condition)
        original = pipe.encode_prompt
        pipe.encode_prompt = lambda p: (emb, mask) if len(p) == len(wanted) and p[0] != "" else original(p)
        try:
            videos = pipe(images, prompts, intensity=7, num_frames=frames, height=size, width=size, num_inference_steps=10,
                          guidance_scale=3.0, seed=list(range(len(images)))).frames
        finally:
            pipe.encode_prompt = original
    videos = np.rint(videos * 255).astype(np.uint8)
    hits = [motion_stats(v, max_side=32, min_shift=0.1)["direction"] == w for v, w in zip(videos, wanted)]
    first = [psnr(v[0], im) for v, im in zip(videos, images)]
    return f"{np.mean(hits):.2f}", f"{np.mean(first):.1f}"


@torch.no_grad()
def copy_psnr(pipe, views, empty) -> str:
    """First-frame PSNR of the network's one-step clean estimate at t = T-1 (pure noise under a
    zero-terminal-SNR schedule), against the photo given as the reference: how well the network
    copies the reference, before any sampler error (the sampled first frame can be no better)."""
    images = np.stack([image for image, _ in views])
    reference, tokens = pipe.encode_reference(images)
    frames = pipe.cfg.num_frames
    t = torch.tensor([pipe.scheduler.config.num_train_timesteps - 1])
    alpha = pipe.scheduler.alphas_cumprod[t].to(reference.dtype)
    g = torch.Generator().manual_seed(0)
    x_t = torch.randn((len(images), reference.shape[1], frames, *reference.shape[2:]), generator=g)
    x_t = alpha.sqrt() * reference[:, :, None] + (1 - alpha).sqrt() * x_t
    n = len(images)
    out = pipe.model(x_t, t, reference_latents=reference, encoder_hidden_states=empty["embeddings"].float().expand(n, -1, -1),
                     attention_mask=empty["attention_mask"].expand(n, -1), intensity=torch.full((n,), 7), image_tokens=tokens).sample
    x0 = alpha.sqrt() * x_t - (1 - alpha).sqrt() * out  # the mini preset predicts v
    first = np.rint(pipe.decode(x0[:, :, :1])[:, 0].permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
    return f"{np.mean([psnr(a, b) for a, b in zip(first, images)]):.1f}"


def profile(train_step) -> int:
    from torch.profiler import ProfilerActivity, profile as torch_profile

    for i in range(3):
        train_step(i)
    started = time.perf_counter()
    for i in range(5):
        train_step(i)
    print(f"{(time.perf_counter() - started) / 5:.2f} s per training step")
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        train_step(0)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    return 0


if __name__ == "__main__":
    sys.exit(main())
