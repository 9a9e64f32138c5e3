"""Where does a model's first-frame error come from? Sampler settings against the photo it must keep.

    python benchmarks/first_frame.py                 # the shipped LivePhoto-mini
    python benchmarks/first_frame.py --model runs/control/runs/main/final_model --views 4

For ``--views`` random views of each held-out photo (chelsea, coffee; never trained on) and four
prompts, it samples the model under several settings and prints, per setting, the first frame's
PSNR against the photo (what the controllability benchmark reports), the share of videos that move
the way their prompt says (level 5, the evaluation's flow metric), the PSNR between adjacent
generated frames, the mean colour offset and the RMS error of the first frame. Reference rows
give the PSNR of the photo against itself blurred, to tell blur from grain: a blurry first frame
scores like a blurred photo; grain (noise the network did not remove) shows as a large RMS error
with a small colour offset and adjacent frames that differ as much as frame 0 differs from the photo.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter

from evaluation.metrics import motion_stats, psnr
from model.pipeline import LivePhotoPipeline
import sample_data

HELD_OUT = ("chelsea", "coffee")
# plain image-space wording, one prompt per direction (the direction each asks for)
PROMPTS = {"the scene drifts to the left": "left", "it moves up": "up", "the picture slides right": "right",
           "everything sinks down": "down"}
# (DDIM steps, guidance, prior inversion, guidance rescale, guidance interval): the benchmark's setting first
FULL = (0.0, 1.0)
SETTINGS = ((10, 3.0, True, 0.0, FULL), (10, 1.0, True, 0.0, FULL), (30, 3.0, True, 0.0, FULL), (10, 3.0, False, 0.0, FULL),
            (10, 3.0, True, 0.7, FULL), (10, 3.0, True, 1.0, FULL), (10, 3.0, True, 0.0, (0.0, 0.5)),
            (10, 3.0, True, 0.0, (0.0, 0.3)), (10, 5.0, True, 0.0, (0.0, 0.5)), (6, 3.0, True, 0.0, (0.0, 0.5)),
            (20, 3.0, True, 0.0, (0.0, 0.5)), (10, 3.0, False, 0.0, (0.0, 0.5)))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="mini", help="a preset name, a final_model folder or an MLflow URI")
    p.add_argument("--views", type=int, default=2, help="random views of each photo")
    p.add_argument("--photos", default=",".join(HELD_OUT),
                   help="comma-separated photo names (default: the held-out ones), or 'train' for the 8 the models trained on "
                        "(a first frame much better there than on held-out photos means the model memorised photos "
                        "instead of learning to copy the reference)")
    p.add_argument("--settings", type=int, default=len(SETTINGS), help="run only the first N sampler settings (1 = the benchmark's)")
    p.add_argument("--only", type=lambda text: [int(x) for x in text.split(",")], default=None,
                   help="comma-separated indices into the settings (0 = the benchmark's), in place of --settings")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    return p.parse_args(argv)


def as_uint8(frames) -> np.ndarray:
    frames = np.asarray(frames)
    return frames if frames.dtype == np.uint8 else (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)


def blurred(image: np.ndarray, sigma: float) -> np.ndarray:
    return np.clip(gaussian_filter(image.astype(float), (sigma, sigma, 0)), 0, 255).round().astype(np.uint8)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = LivePhotoPipeline.from_pretrained(args.model)
    photos = sample_data.load_photos()
    names = [n for n in sorted(photos) if n not in HELD_OUT] if args.photos == "train" else args.photos.split(",")
    unknown = sorted(set(names) - set(photos))
    if unknown:
        raise SystemExit(f"--photos: unknown {', '.join(unknown)}; allowed: 'train' or names from {', '.join(sorted(photos))}")
    rng = np.random.default_rng(args.seed)
    views = [sample_data.random_view(photos[name][0], args.size, rng, (1.0, 1.4)) for name in names for _ in range(args.views)]

    rows = []
    for steps, guidance, prior, rescale, interval in [SETTINGS[i] for i in args.only] if args.only else SETTINGS[: args.settings]:
        first, adjacent, offset, rms, hits = [], [], [], [], []
        for i, view in enumerate(views):
            for prompt, wanted in PROMPTS.items():
                out = pipe(Image.fromarray(view), prompt, intensity=5, num_frames=args.frames, height=args.size, width=args.size,
                           num_inference_steps=steps, guidance_scale=guidance, seed=i, prior_inversion=prior,
                           guidance_rescale=rescale, guidance_interval=interval)
                video = as_uint8(out.frames[0])
                hits.append(motion_stats(video, max_side=args.size, min_shift=0.1)["direction"] == wanted)
                error = video[0].astype(float) - view.astype(float)
                first.append(psnr(video[0], view))
                adjacent.append(np.mean([psnr(video[k], video[k + 1]) for k in range(len(video) - 1)]))
                offset.append(np.abs(error.mean(axis=(0, 1))).max())
                rms.append(np.sqrt((error ** 2).mean()))
        rows.append((f"DDIM {steps}, guidance {guidance}, prior inversion {'on' if prior else 'off'}"
                     + (f", guidance rescale {rescale}" if rescale else "")
                     + (f", guided steps {interval[0]:g}-{interval[1]:g}" if interval != FULL else ""),
                     np.mean(first), np.mean(adjacent), np.mean(offset), np.mean(rms), np.mean(hits)))

    print(f"\nmodel {args.model}: {len(views)} views of {', '.join(names)} x {len(PROMPTS)} prompts, {args.size} px, {args.frames} frames\n")
    print("| setting | first-frame PSNR (dB) | adjacent frames PSNR (dB) | max channel offset (/255) | RMS error (/255) | direction |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, first, adjacent, offset, rms, direction in rows:
        print(f"| {name} | {first:.2f} | {adjacent:.2f} | {offset:.1f} | {rms:.1f} | {direction:.2f} |")
    for sigma in (0.5, 0.8, 1.2):
        score = np.mean([psnr(blurred(v, sigma), v) for v in views])
        print(f"| reference: the photo blurred, sigma {sigma} px | {score:.2f} | | | | |")


if __name__ == "__main__":
    main()
