"""The controllability benchmark's fixed set-up and its results (``benchmarks/controllability.py`` runs it).

The set-up: which photos are held out, the pan speeds, the evaluated levels and wordings, the
ablations and the targets. The results: each evaluation summarised per caption set with 95%
intervals, ``docs/results.json`` and ``docs/RESULTS.md`` (rewritten after every stage, carrying
over the models of an earlier invocation made with the same set-up). ``--render-only`` rewrites
them from an earlier run without running a job.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import sys
from pathlib import Path

import numpy as np

import sample_data

ROOT = Path(__file__).resolve().parents[1]
HELD_OUT = ("chelsea", "coffee")
SIZE, FRAMES = 32, 8
SPEEDS_AT_128 = tuple(round(float(v), 3) for v in np.geomspace(1.6, 8.0, 10))  # 0.4 .. 2.0 px/frame at 32 px
ABLATIONS = {
    "no_reweighting": ({"model.use_text_reweighting": False}, "direction_accuracy", "text re-weighting"),
    "no_intensity": ({"model.use_intensity": False}, "intensity_spearman", "intensity map"),
    "no_content": ({"model.use_content_encoder": False}, "first_frame_psnr", "content encoder"),
}
"""name -> (model flags, the metric the part exists for, the part's name)."""
LEVELS = (1, 3, 5, 7, 9)
"""Requested intensity levels of the main evaluation set (spread over 1..10)."""
EXTRA_LEVEL = 7
PLAIN_PROMPTS = ("the scene drifts {to}", "it moves {d}", "everything in the picture goes {d}", "the photo travels {to}")
"""Plain user wording in image space that no training caption uses ({to}: "to the left" / "upwards")."""
SCHEDULE = "zero terminal SNR, trailing, v-prediction, last DDIM step to the clean estimate"
"""The sampling schedule of every model the benchmark trains (model.build.build_scheduler for the mini preset)."""
TARGETS = {"direction_accuracy": 0.90, "intensity_spearman": 0.90, "first_frame_psnr": 28.0}
SHIP_DIR = ROOT / "models" / "livephoto-mini"



def split_sets(eval_dir: Path) -> dict:
    """The evaluation's per-video table summarised per set (main / plain / camera), with intervals."""
    import pyarrow.parquet as pq

    from evaluation.report import summarize

    table = pq.read_table(eval_dir / "metrics")
    ids = table.column("id").to_pylist()
    result = {}
    for kind in ("main", "plain", "camera"):
        mask = [(i.split("_", 1)[0] == kind) if kind != "main" else not i.startswith(("plain_", "camera_")) for i in ids]
        if any(mask):
            result[kind] = summarize(table.filter(mask))
    return result


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return f"{os.cpu_count()} CPU cores ({cpu}), no GPU, torch {torch.__version__}, {platform.system()} {platform.release()}"


# --------------------------------------------------------------------------- results


def render_only(args: argparse.Namespace, results_dir: Path, out: Path) -> int:
    """RESULTS.md and results.json again from a finished run (same numbers, same command and date):
    models whose evaluation is under ``--out`` are re-summarised, the others kept as they are."""
    old = json.loads((results_dir / "results.json").read_text())
    setup, models = old["setup"], old["models"]
    args.clips, args.batch_size, args.lr = setup["clips"], setup["batch_size"], setup["lr"]
    args.caption_dropout, args.views = setup["caption_dropout"], setup["views"]
    args.inference_steps, args.guidance = setup["inference_steps"], setup["guidance_scale"]
    args.guidance_interval = tuple(setup.get("guidance_interval", (0.0, 1.0)))
    args.schedule = setup["schedule"]  # as it was run (results made before 2026-12-05 end DDIM at alphas_cumprod[0])
    args.steps = models["main"]["training_steps"]
    args.ablation_steps = next((m["training_steps"] for n, m in models.items() if n != "main"), args.ablation_steps)
    evaluations = {name: split_sets(out / "eval" / name) for name in models if (out / "eval" / name / "metrics").exists()}
    carried = {"models": {n: m for n, m in models.items() if n not in evaluations}, "samples": old.get("samples", []),
               "stage_minutes": old["stage_minutes"]}
    timings = {k: v * 60 for k, v in old["stage_minutes"].items()}
    write_results(args, results_dir, out, evaluations, timings, old["total_minutes"] * 60, old["command"], old["date"], carried,
                  old["machine"])
    return 0


def setup_of(args: argparse.Namespace) -> dict:
    """What a result depends on besides the code: the data, the model preset and the evaluation."""
    from model.config import ModelConfig, model_preset

    mini = ModelConfig(**model_preset("mini"))
    return {"clips": args.clips, "resolution": SIZE, "frames": FRAMES, "preset": "mini",
            "unet_channels": list(mini.tiny.block_out_channels), "reference_skip": mini.reference_skip,
            "text_encoder": "all-MiniLM-L6-v2 (pretrained, frozen)", "autoencoder": "pixel (2x2 space-to-depth)",
            "schedule": getattr(args, "schedule", None) or SCHEDULE,
            "held_out_photos": list(HELD_OUT), "speeds_px_per_frame": [round(s * SIZE / 128, 3) for s in SPEEDS_AT_128],
            "batch_size": args.batch_size, "lr": args.lr, "caption_dropout": args.caption_dropout,
            "inference_steps": args.inference_steps, "guidance_scale": args.guidance,
            **({"guidance_interval": list(args.guidance_interval)} if tuple(args.guidance_interval) != (0.0, 1.0) else {}),
            "views": args.views}


def carried_results(args: argparse.Namespace, results_dir: Path, out: Path) -> dict:
    """The models of an earlier invocation (another session, another machine) that ``--out`` no longer
    holds, taken from results.json when it was made with the same set-up and step counts, so the
    benchmark can span sessions without retraining them. ``--fresh`` carries nothing."""
    empty = {"models": {}, "samples": [], "stage_minutes": {}}
    path = results_dir / "results.json"
    if args.fresh or not path.is_file():
        return empty
    old = json.loads(path.read_text())
    old_setup = {k: v for k, v in old.get("setup", {}).items() if k != "eval_videos_per_model"}
    setup = setup_of(args)
    if old_setup != setup:
        changed = sorted(k for k in set(old_setup) | set(setup) if old_setup.get(k) != setup.get(k))
        print(f"==> {path}: made with another set-up ({', '.join(changed)}); nothing carried over", flush=True)
        return empty
    steps = {"main": args.steps, "main_at_ablation_steps": args.ablation_steps, **{a: args.ablation_steps for a in ABLATIONS}}
    # a model this invocation runs is re-read from --out when its evaluation is there; one it does not run (an
    # ablation left out of --ablations) is always carried, so a subset invocation keeps the other entries
    runs = {"main", "main_at_ablation_steps", *args.ablations}
    models = {name: {"date": old["date"], **entry} for name, entry in old.get("models", {}).items()
              if entry.get("training_steps") == steps.get(name)
              and not (name in runs and (out / "eval" / name / "summary.json").exists())}
    if "main" not in models:  # the samples and the comparison baseline belong to the main run
        models.pop("main_at_ablation_steps", None)
    minutes = {k: v for k, v in old.get("stage_minutes", {}).items() if any(k.endswith(f" {n}") for n in models)}
    return {"models": models, "samples": old.get("samples", []) if "main" in models else [], "stage_minutes": minutes}


def _entry(name: str, sets: dict, args, timings: dict, command: str, date: str) -> dict:
    s = sets["main"]
    train_key = "train main" if name == "main_at_ablation_steps" else f"train {name}"
    return {
        "direction_accuracy": s["direction_accuracy"], "direction_accuracy_ci": s["direction_accuracy_ci"],
        "intensity_spearman": s["intensity_spearman"], "intensity_spearman_ci": s["intensity_spearman_ci"],
        "first_frame_psnr": s["psnr"], "first_frame_psnr_ci": s["psnr_ci"], "first_frame_ssim": s["ssim"],
        "videos": s["generated"], "errors": s["errors"],
        "per_level": {k: {"direction_accuracy": v["direction_accuracy"], "flow": v["magnitude"], "net_speed": v["speed"]}
                      for k, v in s["per_level"].items()},
        "direction_none_share": none_share(s),
        "sets": {kind: {"direction_accuracy": v["direction_accuracy"], "direction_accuracy_ci": v["direction_accuracy_ci"],
                        "intensity_spearman": v["intensity_spearman"], "intensity_spearman_ci": v["intensity_spearman_ci"],
                        "first_frame_psnr": v["psnr"], "first_frame_psnr_ci": v["psnr_ci"], "videos": v["generated"]}
                 for kind, v in sets.items()},
        "training_minutes": None if name == "main_at_ablation_steps" else round(timings.get(train_key, 0.0) / 60, 2),
        "training_steps": args.steps if name == "main" else args.ablation_steps,
        "evaluation_minutes": round(timings.get(f"evaluate {name}", 0.0) / 60, 2),
        "command": command, "date": date,
    }


def write_results(args, results_dir: Path, out: Path, evaluations: dict, timings: dict, total: float,
                  command: str | None = None, date: str | None = None, carried: dict | None = None, machine_name: str | None = None) -> None:
    """docs/results.json (machine-readable) and docs/RESULTS.md (tables + GIFs), from the evaluations so far
    and the models ``carried`` over from an earlier invocation."""
    if command is None:
        command = "python benchmarks/controllability.py " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "make bench-control"
    carried = carried or {"models": {}, "samples": [], "stage_minutes": {}}
    date = date or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    results_dir.mkdir(parents=True, exist_ok=True)
    gifs = results_dir / "results"
    if "main" in evaluations:
        shutil.rmtree(gifs, ignore_errors=True)
        gifs.mkdir(parents=True)
        samples = copy_examples(out / "eval" / "main", gifs)
    else:
        samples = carried["samples"]
    models = {**carried["models"], **{name: _entry(name, sets, args, timings, command, date) for name, sets in evaluations.items()}}
    models = dict(sorted(models.items(), key=lambda kv: ["main", "main_at_ablation_steps", *ABLATIONS].index(kv[0])))
    setup = setup_of(args)
    setup["eval_videos_per_model"] = models["main"]["videos"] if "main" in models else None
    doc = {
        "date": date, "machine": machine_name or machine(), "command": command, "total_minutes": round(total / 60, 1), "targets": TARGETS,
        "complete": set(models) >= {"main", *ABLATIONS} | ({"main_at_ablation_steps"} if args.ablation_steps < args.steps else set()),
        "setup": setup,
        "stage_minutes": {**carried["stage_minutes"], **{k: round(v / 60, 2) for k, v in timings.items() if "(before resume)" not in k}},
        "models": models,
        "samples": samples,
    }
    (results_dir / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
    (results_dir / "RESULTS.md").write_text(render_markdown(doc, samples, args))
    print(f"\nwrote {results_dir / 'RESULTS.md'} and {results_dir / 'results.json'} ({total / 60:.1f} min so far)", flush=True)


def copy_examples(eval_dir: Path, gifs: Path) -> list[dict]:
    """One sample per direction at levels 3 and 9 (first view of each held-out photo), copied next to RESULTS.md."""
    import pyarrow.parquet as pq

    rows = [r for r in pq.read_table(eval_dir / "metrics").to_pylist() if r["status"] == "ok" and r["video"]]
    picked = []
    for photo in HELD_OUT:
        for direction in sample_data.DIRECTIONS:
            for level in (3, 9):
                picked += [r for r in rows if r["id"] == f"{photo}_0_{direction}_{level:02d}"][:1]
    examples = []
    for r in picked:
        target = gifs / Path(r["video"]).name
        shutil.copy(eval_dir / r["video"], target)
        ref = eval_dir.parent.parent / "eval_manifest" / Path(r["image"]).name
        ref_target = gifs / ref.name
        if not ref_target.exists():
            shutil.copy(ref, ref_target)
        examples.append({**{k: r[k] for k in ("id", "prompt", "direction", "intensity", "measured_direction", "speed")},
                         "gif": f"results/{target.name}", "ref": f"results/{ref.name}"})
    return examples


def none_share(summary: dict) -> float | None:
    """Share of direction videos whose measured net motion is below ``min_shift`` ('none')."""
    confusion = summary["direction_confusion"]
    total = sum(sum(row.values()) for row in confusion.values())
    return sum(row.get("none", 0) for row in confusion.values()) / total if total else None


def sampling(setup: dict) -> str:
    """How the evaluated videos were sampled, in words."""
    start, stop = setup.get("guidance_interval", (0.0, 1.0))
    guided = "" if (start, stop) == (0.0, 1.0) else f" on steps {start:g}-{stop:g} of the schedule (the rest conditional only)"
    return f"DDIM {setup['inference_steps']} steps, guidance {setup['guidance_scale']}{guided}, prior inversion on"


def _f(value, digits=3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _ci(ci, digits=3) -> str:
    return "n/a" if not ci else f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def render_markdown(doc: dict, examples: list[dict], args) -> str:
    m = doc["models"]
    s = doc["setup"]
    lines = [
        "# Results: the controllability benchmark",
        "",
        "Written by `benchmarks/controllability.py` (never by hand); the same numbers are in",
        "[`results.json`](results.json)." + ("" if doc["complete"] else " **This run is not finished yet: the stages "
                                              "still missing are listed at the end.**"),
        "",
        f"- **Command:** `{doc['command']}`",
        f"- **Machine:** {doc['machine']}",
        f"- **Date:** {doc['date']}; {doc['total_minutes']} min in this invocation",
        f"- **Set-up:** {s['clips']} training clips, {s['resolution']} px, {s['frames']} frames, pans in 4 directions at "
        f"10 speeds ({', '.join(str(v) for v in s['speeds_px_per_frame'])} px/frame) over real photos, captions in "
        f"image-space words; held-out photos {', '.join(s['held_out_photos'])} are never trained on. Model: the `mini` "
        f"preset (UNet channels {s['unet_channels']}, text encoder {s['text_encoder']}, {s['autoencoder']}, {s['schedule']}"
        + (", reference skip (not in the paper)" if s.get("reference_skip") else "") + "); "
        f"batch {s['batch_size']}, lr {s['lr']} constant after warmup, EMA weights (0.995), caption dropout {s['caption_dropout']}, "
        "from step 1000 on 30% of the clips noised at t >= 950 (the mini preset's `train.timestep_bias_*`); "
        f"sampling {sampling(s)}.",
        f"- **Evaluation:** {s['eval_videos_per_model']} videos per model: every direction x levels "
        + ", ".join(map(str, LEVELS)) + f" x {s['views']} views of each held-out photo, one seed per video, prompts in "
        "the training grammar; for the main model also 16 videos in plain wording no training caption uses and 16 in "
        "camera wording. Intervals are 95% (Wilson for accuracies, bootstrap over videos otherwise).",
        "",
    ]
    if "main" not in m:
        return "\n".join(lines + ["The main model has not been evaluated yet.", ""])
    main = m["main"]
    lines += ["## Main model against the targets", "",
              "| metric | target | main model | 95% interval | met |", "| --- | --- | --- | --- | --- |"]
    for key, label, digits in (("direction_accuracy", "direction accuracy (chance 0.25)", 3),
                               ("intensity_spearman", "intensity Spearman (level vs measured flow)", 3),
                               ("first_frame_psnr", "first-frame PSNR (dB)", 2)):
        target, value = doc["targets"][key], main[key]
        met = "yes" if value is not None and value >= target else f"no (short by {_f(target - value, 3) if value is not None else 'n/a'})"
        lines.append(f"| {label} | >= {target} | {_f(value, digits)} | {_ci(main[key + '_ci'], digits)} | {met} |")
    lines += ["", "Other wordings (main model, level 7, same held-out views):", "",
              "| prompts | videos | direction accuracy | 95% interval |", "| --- | --- | --- | --- |"]
    for kind, label in (("main", "training grammar, image space (above)"), ("plain", "plain wording never trained on, e.g. \"it moves up\""),
                        ("camera", "camera wording (\"the camera pans left\" = content moves right), not trained")):
        if kind in main["sets"]:
            e = main["sets"][kind]
            lines.append(f"| {label} | {e['videos']} | {_f(e['direction_accuracy'])} | {_ci(e['direction_accuracy_ci'])} |")
    lines += ["", f"Main model: {main['training_steps']} steps in {main['training_minutes']} min of training "
              f"(stage times: {', '.join(f'{k} {v} min' for k, v in doc['stage_minutes'].items())}).", ""]
    levels = sorted(main["per_level"], key=int)
    lines += ["## Per requested level (main model, training grammar)", "",
              "| level | " + " | ".join(levels) + " |",
              "| --- | " + " | ".join("---" for _ in levels) + " |",
              "| direction accuracy | " + " | ".join(_f(main["per_level"][k]["direction_accuracy"], 2) for k in levels) + " |",
              "| flow magnitude (% diag/frame) | " + " | ".join(_f(main["per_level"][k]["flow"], 2) for k in levels) + " |",
              "| net motion (px/frame) | " + " | ".join(_f(main["per_level"][k]["net_speed"], 2) for k in levels) + " |",
              "| k-th training speed (px/frame) | " + " | ".join(_f(s["speeds_px_per_frame"][int(k) - 1], 2) for k in levels) + " |", "",
              "(Levels are quantiles of the measured flow of the training clips, so level k holds mostly clips of the "
              "k-th speed. A video whose net motion is below 0.1 px/frame (`metrics.min_shift`) counts as direction `none`"
              + (f"; {main['direction_none_share']:.0%} of the main model's do)." if main["direction_none_share"] is not None else ")."), ""]
    ablated = [a for a in ABLATIONS if a in m]
    if True:
        compared = ("the main model itself" if args.ablation_steps == args.steps else
                    "`main_at_ablation_steps`, the main run's checkpoint at that step (EMA weights, as for every model here)")
        lines += ["## Ablations", "",
                  f"Each ablation is the main run with one part switched off, trained for {args.ablation_steps} steps on the "
                  f"main run's schedule (same seeds and learning rate at every step), compared with {compared}.", "",
                  "| model | steps | train min | direction acc. | intensity Spearman | first-frame PSNR | run |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for name, e in m.items():
            minutes = "(checkpoint of main)" if e["training_minutes"] is None else e["training_minutes"]
            lines.append(f"| {name} | {e['training_steps']} | {minutes} | {_f(e['direction_accuracy'])} {_ci(e['direction_accuracy_ci'], 2)} | "
                         f"{_f(e['intensity_spearman'])} {_ci(e['intensity_spearman_ci'], 2)} | "
                         f"{_f(e['first_frame_psnr'], 2)} {_ci(e['first_frame_psnr_ci'], 1)} | {e.get('date', doc['date'])} |")
        lines.append("")
        base = m.get("main_at_ablation_steps", main if args.ablation_steps == args.steps else None)
        for name in ablated:
            _, metric, part = ABLATIONS[name]
            if base is None or base[metric] is None or m[name][metric] is None:
                lines.append(f"- without the {part}: not comparable yet")
                continue
            if base.get("direction_accuracy") is not None and base["direction_accuracy"] < 0.8:
                lines.append(f"- without the {part}: the main checkpoint it is compared with has not learned direction "
                             f"control yet ({_f(base['direction_accuracy'])} < 0.8): not a fair test of the part")
            ours, theirs = base[metric], m[name][metric]
            ours_ci, theirs_ci = base[metric + "_ci"], m[name][metric + "_ci"]
            separated = ours_ci is not None and theirs_ci is not None and theirs_ci[1] < ours_ci[0]
            verdict = "worse, beyond the intervals" if separated else ("worse, within the intervals" if theirs < ours else "not worse")
            lines.append(f"- without the {part}: {metric} {_f(theirs)} vs {_f(ours)} with it: {verdict}")
        missing = [a for a in ABLATIONS if a not in m] + ([] if base is not None else ["main_at_ablation_steps"])
        if missing:
            lines.append(f"- not run yet: {', '.join(missing)} ({args.ablation_steps} steps each, about "
                         f"{args.ablation_steps * 1.6 / 60:.0f} min on this CPU; `make bench-control` resumes here)")
        lines.append("")
    if examples:
        lines += ["## Samples (held-out photos, main model)", "", "| reference | video | prompt | level | measured |", "| --- | --- | --- | --- | --- |"]
        for e in examples:
            lines.append(f"| ![ref]({e['ref']}) | ![{e['id']}]({e['gif']}) | {e['prompt']} (asks {e['direction']}) | "
                         f"{e['intensity']} | {e['measured_direction']}, {_f(e['speed'], 2)} px/frame |")
        lines.append("")
    return "\n".join(lines)

