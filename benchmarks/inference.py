"""Seconds per generated video, and achieved TFLOP/s against the UNet FLOP floor.

    python benchmarks/inference.py                                  # tiny preset on the CPU
    python benchmarks/inference.py --device cuda                    # sd15-sized, random weights, bf16,
                                                                    # eager and torch.compile
    python benchmarks/inference.py --device cpu --preset sd15-arch --steps 1 --frames 2   # smoke

The FLOP floor is one UNet forward (batch 1, ``frames`` frames) counted by
``torch.utils.flop_counter.FlopCounterMode``, times ``steps``, times 2 for classifier-free
guidance; it leaves out prior inversion, the encoders and the VAE decoder, so achieved
TFLOP/s = floor / (seconds per video) is a lower bound on the UNet's real throughput.
``sd15-arch`` builds the SD 1.5 + AnimateDiff + DINOv2-L + CLIP-L network with random
weights (no download): timings are those of the real model, outputs are noise.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from model.build import build_livephoto, build_sd15_architecture
from model.config import ModelConfig, model_preset
from model.pipeline import LivePhotoPipeline

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--preset", default=None, choices=("tiny", "sd15-arch"), help="default: tiny on cpu, sd15-arch on cuda")
    p.add_argument("--frames", type=int, default=None, help="default: 8 (tiny) / 16 (sd15-arch)")
    p.add_argument("--size", type=int, default=None, help="height = width; default: 64 (tiny) / 256 (sd15-arch)")
    p.add_argument("--steps", type=int, default=25, help="DDIM steps")
    p.add_argument("--guidance", type=float, default=7.5, help="CFG scale (> 1 runs both branches)")
    p.add_argument("--dtype", default=None, choices=tuple(DTYPES), help="default: float32 on cpu, bfloat16 on cuda")
    p.add_argument("--compile", default=None, choices=("off", "on", "both"), help="torch.compile the UNet; default: off on cpu, both on cuda")
    p.add_argument("--repeats", type=int, default=3, help="timed videos per row (after one warm-up)")
    p.add_argument("--no-prior-inversion", action="store_true")
    args = p.parse_args(argv)
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        p.error(f"--device {args.device}: CUDA is not available on this machine (use --device cpu)")
    args.preset = args.preset or ("sd15-arch" if cuda else "tiny")
    big = args.preset == "sd15-arch"
    args.frames = args.frames or (16 if big else 8)
    args.size = args.size or (256 if big else 64)
    args.dtype = args.dtype or ("bfloat16" if cuda else "float32")
    args.compile = args.compile or ("both" if cuda else "off")
    return args


def build_pipeline(args) -> LivePhotoPipeline:
    if args.preset == "tiny":
        components = build_livephoto(ModelConfig(**model_preset("tiny")))
    else:
        components = build_sd15_architecture(ModelConfig(resolution=args.size, num_frames=args.frames))
    pipe = LivePhotoPipeline.from_components(components).to(args.device, DTYPES[args.dtype])
    pipe.set_progress_bar_config(disable=True)
    return pipe


def unet_flops_per_video(pipe: LivePhotoPipeline, args) -> float:
    """FLOPs of one UNet forward (batch 1) x steps x (2 with CFG)."""
    from torch.utils.flop_counter import FlopCounterMode

    model, f = pipe.model, pipe.vae_scale_factor
    h = w = args.size // f
    dims = dict(device=pipe.device, dtype=pipe.dtype)
    text_dim = model.unet.config.cross_attention_dim
    tokens = None
    if model.content_proj is not None:
        patches = (model.cfg.image_encoder_size // pipe.image_encoder.config.patch_size) ** 2
        tokens = torch.zeros(1, patches, model.image_dim, **dims)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, 4, args.frames, h, w, **dims), torch.tensor(500, device=pipe.device),
              torch.zeros(1, 77, text_dim, **dims), torch.zeros(1, 4, h, w, **dims),
              torch.tensor([5], device=pipe.device), tokens)
    return counter.get_total_flops() * args.steps * (2 if args.guidance > 1 else 1)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_videos(pipe: LivePhotoPipeline, args, image: np.ndarray) -> list[float]:
    call = dict(num_frames=args.frames, height=args.size, width=args.size, num_inference_steps=args.steps,
                guidance_scale=args.guidance, prior_inversion=not args.no_prior_inversion, output_type="pt")
    pipe(image, "the bear is dancing", seed=0, **call)  # warm-up (and compilation)
    times = []
    for i in range(args.repeats):
        sync(args.device)
        start = time.perf_counter()
        pipe(image, "the bear is dancing", seed=i, **call)
        sync(args.device)
        times.append(time.perf_counter() - start)
    return times


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.backends.cuda.matmul.allow_tf32 = True
    t0 = time.perf_counter()
    pipe = build_pipeline(args)
    print(f"built {args.preset} in {time.perf_counter() - t0:.1f} s on {args.device} ({args.dtype})", flush=True)
    flops = unet_flops_per_video(pipe, args)
    y, x = np.mgrid[0 : args.size, 0 : args.size]
    image = np.stack([x % 256, y % 256, (x + y) % 256], axis=-1).astype(np.uint8)

    rows = []
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
    eager_unet = pipe.model.unet
    for compiled in modes:
        pipe.model.unet = torch.compile(eager_unet) if compiled else eager_unet
        times = time_videos(pipe, args, image)
        median = statistics.median(times)
        rows.append((compiled, median, min(times), flops / median / 1e12))
    pipe.model.unet = eager_unet

    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU ({torch.get_num_threads()} threads)"
    print()
    print(f"device: {device_name}; preset {args.preset}; {args.frames} frames x {args.size}x{args.size}; "
          f"{args.steps} DDIM steps; CFG {args.guidance}; {args.dtype}; prior inversion {not args.no_prior_inversion}")
    print(f"UNet FLOP floor per video: {flops / 1e12:.3f} TFLOP (one forward x {args.steps} steps x {2 if args.guidance > 1 else 1})")
    print()
    print(f"| {'torch.compile':<13} | {'s/video (median)':>16} | {'s/video (min)':>13} | {'TFLOP/s achieved':>16} |")
    print(f"|{'-' * 15}|{'-' * 18}|{'-' * 15}|{'-' * 18}|")
    for compiled, median, best, tflops in rows:
        print(f"| {'on' if compiled else 'off':<13} | {median:>16.3f} | {best:>13.3f} | {tflops:>16.4f} |")


if __name__ == "__main__":
    main()
