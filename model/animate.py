"""Animate one photo from the command line.

    python -m model.animate --model DIR|tiny|sd15 --image photo.jpg --prompt "the bear is dancing" \\
        --intensity 7 --seed 0 --out out.mp4

``--model`` is a ``save_pretrained`` folder or a preset name; ``--model.base_model DIR|FILE`` (and
``--model.base_config``, ``--model.motion_adapter``, ``--model.image_encoder``,
``--model.text_encoder``, ``--model.lora``, ``--model.local_files_only``, the jobs' flags) point
its pretrained parts at folders or single-file checkpoints on this machine, or swap the LoRAs
fused into its base. Writes an MP4 or GIF (by the suffix of ``--out``) and prints the path and
the prompt's token weights.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Sequence

from model.config import ModelSources


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m model.animate", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True,
                   help="mini (the trained model shipped in models/), a save_pretrained folder, a training checkpoint, "
                        "runs:/ or models:/ MLflow URI, a hub id (owner/name), or a preset built fresh: tiny, sd15")
    p.add_argument("--image", required=True, help="input photo (any format Pillow reads)")
    p.add_argument("--prompt", required=True, help="text describing the motion")
    p.add_argument("--intensity", type=int, default=5, help="motion intensity level 1..10")
    p.add_argument("--negative-prompt", default=None, help="negative prompt for guidance")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial noise")
    p.add_argument("--frames", type=int, default=None, help="frames (default: the model's num_frames)")
    p.add_argument("--size", type=int, default=None, help="height = width in pixels (default: the model's resolution)")
    p.add_argument("--steps", type=int, default=25, help="denoising steps")
    p.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale on the text")
    p.add_argument("--guidance-interval", type=float, nargs=2, default=(0.0, 1.0), metavar=("START", "STOP"),
                   help="guide only these fractions of the steps (LivePhoto-mini: 0 0.5 with --steps 4; docs/MODEL.md)")
    p.add_argument("--no-prior-inversion", action="store_true", help="start from plain noise")
    p.add_argument("--fps", type=int, default=8, help="frames per second of the written video")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    p.add_argument("--compile", action="store_true", help="torch.compile the UNet first (pays off on a GPU for long runs)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--out", required=True, help="output video, .mp4 or .gif")
    sources = p.add_argument_group("where the model's pretrained parts come from (default: as the model was saved)")
    for field in dataclasses.fields(ModelSources):
        kind = {"type": _bool} if field.name == "local_files_only" else {}
        sources.add_argument(f"--model.{field.name}", dest=field.name, default=None, help=field.metadata["help"], **kind)
    return p.parse_args(argv)


def _bool(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text.lower() == "true"


def sources_of(args: argparse.Namespace) -> ModelSources:
    from common.config import parse_value

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(ModelSources)}
    if values["lora"] is not None:  # one path, or a YAML list: '[a.safetensors, b.safetensors:0.5]'
        lora = parse_value(values["lora"])
        values["lora"] = tuple(lora) if isinstance(lora, list) else (values["lora"],)
    return ModelSources(**values)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    import torch
    from PIL import Image

    from model.encoders import WeightsNotFoundError
    from model.pipeline import LivePhotoPipeline
    from model.media import export_video

    try:
        pipe = LivePhotoPipeline.from_pretrained(args.model, **sources_of(args).overrides())
    except WeightsNotFoundError as exc:  # every missing part, with what to set (--model.base_model ...)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    pipe.to(args.device, getattr(torch, args.dtype))
    if args.compile:
        pipe.compile_unet()
    pipe.set_progress_bar_config(disable=args.no_progress)
    cfg = pipe.cfg
    size = args.size or cfg.resolution
    try:
        out = pipe(
            Image.open(args.image),
            args.prompt,
            intensity=args.intensity,
            negative_prompt=args.negative_prompt,
            num_frames=args.frames or cfg.num_frames,
            height=size,
            width=size,
            num_inference_steps=args.steps,
            guidance_scale=args.guidance,
            guidance_interval=tuple(args.guidance_interval),
            seed=args.seed,
            prior_inversion=not args.no_prior_inversion,
        )
        path = export_video(out.frames[0], args.out, fps=args.fps)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    if out.token_weights is not None:
        ids = pipe.tokenizer(args.prompt, truncation=True, max_length=pipe.tokenizer.model_max_length).input_ids
        words = pipe.tokenizer.convert_ids_to_tokens(ids)
        weights = out.token_weights[0, : len(words)].float().tolist()
        print("token weights: " + " ".join(f"{w.replace('</w>', '')}={x:.2f}" for w, x in zip(words, weights)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
