"""Aggregate per-video metrics into a summary, a Markdown report with plots, and an MLflow run.

Pure functions of the per-video table (:data:`evaluation.job.RESULT_SCHEMA`) except
:func:`write` (files) and :func:`log_to_mlflow`.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from evaluation.metrics import TINY

MOVING = ("left", "right", "up", "down")
MEAN_COLUMNS = ("psnr", "ssim", "clip_consistency", "dino_consistency", "clip_t", "magnitude", "speed")


def _mean(values: list[Any]) -> float | None:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.mean(finite)) if finite else None


def wilson_interval(successes: int, n: int, z: float = 1.96) -> list[float] | None:
    """95% Wilson score interval of a proportion (sound for small n and for 0 or n successes)."""
    if n == 0:
        return None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def bootstrap_interval(statistic, columns: list[np.ndarray], resamples: int = 1000, seed: int = 0) -> list[float] | None:
    """95% percentile-bootstrap interval of ``statistic(*columns)`` over rows (videos) resampled
    with replacement; resamples where the statistic is undefined (None / nan) are skipped."""
    n = len(columns[0])
    if n < 2:
        return None
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        index = rng.integers(0, n, n)
        value = statistic(*(c[index] for c in columns))
        if value is not None and math.isfinite(value):
            values.append(value)
    if len(values) < resamples // 2:
        return None
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]


def _spearman(levels: np.ndarray, magnitudes: np.ndarray) -> float | None:
    from scipy.stats import spearmanr

    if len(set(levels.tolist())) < 2 or len(set(magnitudes.tolist())) < 2:
        return None
    return float(spearmanr(levels, magnitudes).statistic)


def summarize(table: pa.Table, real_features: np.ndarray | None = None, manifest_rows: int | None = None) -> dict[str, Any]:
    """Aggregate metrics of the per-video ``table``.

    * ``direction_accuracy``: share of videos whose prompt asks for left/right/up/down whose
      dominant measured flow direction is that direction (chance 0.25);
    * ``intensity_spearman``: Spearman correlation of requested level vs measured flow
      magnitude over all generated videos (None with fewer than 2 distinct levels);
    * ``*_ci``: 95% intervals of the headline numbers (Wilson for the direction accuracy,
      bootstrap over videos for the Spearman and the mean PSNR); ``per_level`` adds each
      level's direction accuracy;
    * means of PSNR/SSIM of frame 0, consistency (x100), CLIP-T (x100), magnitude, speed;
    * ``fvd`` when ``real_features`` (I3D of real clips) are given and videos carry I3D features.
    """
    from evaluation.metrics import fvd

    rows = table.to_pylist()
    ok = [r for r in rows if r["status"] == "ok"]
    errors = [r for r in rows if r["status"] != "ok"]
    summary: dict[str, Any] = {
        "rows": len(rows), "generated": len(ok), "errors": len(errors),
        "rows_accounted": manifest_rows is None or len(rows) == manifest_rows,
        "error_examples": [{"id": r["id"], "error": r["error"]} for r in errors[:20]],
    }
    for column in MEAN_COLUMNS:
        summary[column] = _mean([r[column] for r in ok])
    directed = [r for r in ok if r["direction"] in MOVING]
    summary["direction_videos"] = len(directed)
    hits = [r["measured_direction"] == r["direction"] for r in directed]
    summary["direction_accuracy"] = float(np.mean(hits)) if directed else None
    summary["direction_accuracy_ci"] = wilson_interval(int(sum(hits)), len(hits))
    confusion: dict[str, dict[str, int]] = {}
    for r in directed:
        confusion.setdefault(r["direction"], {}).setdefault(r["measured_direction"], 0)
        confusion[r["direction"]][r["measured_direction"]] += 1
    summary["direction_confusion"] = confusion
    levels = [r["intensity"] for r in ok]
    magnitudes = [r["magnitude"] for r in ok]
    level_array, magnitude_array = np.asarray(levels, dtype=float), np.asarray(magnitudes, dtype=float)
    summary["intensity_spearman"] = _spearman(level_array, magnitude_array)
    summary["intensity_spearman_ci"] = (
        bootstrap_interval(_spearman, [level_array, magnitude_array]) if summary["intensity_spearman"] is not None else None
    )
    psnrs = np.asarray([r["psnr"] for r in ok if r["psnr"] is not None and math.isfinite(r["psnr"])], dtype=float)
    summary["psnr_ci"] = bootstrap_interval(lambda x: float(np.mean(x)), [psnrs]) if len(psnrs) else None
    per_level = {}
    for level in sorted(set(levels)):
        chosen = [r for r in ok if r["intensity"] == level]
        per_level[str(level)] = {
            "videos": len(chosen), "magnitude": _mean([r["magnitude"] for r in chosen]),
            "magnitude_std": float(np.std([r["magnitude"] for r in chosen])), "speed": _mean([r["speed"] for r in chosen]),
            "direction_accuracy": _mean([r["measured_direction"] == r["direction"] for r in directed if r["intensity"] == level]),
        }
    summary["per_level"] = per_level
    summary["fvd"] = None
    fake = [np.frombuffer(r["i3d"], dtype=np.float32) for r in ok if r["i3d"] is not None]
    if real_features is not None and len(fake) >= 2:
        summary["fvd"] = fvd(real_features, np.stack(fake))
    return summary


def encoder_note(cfg: Any) -> list[str]:
    """What the numbers can be trusted for, given the metric encoders in use."""
    m = cfg.metrics
    notes = ["First-frame PSNR/SSIM and the flow metrics (direction, magnitude, intensity Spearman) "
             "need no learned encoder: they are meaningful for any model."]
    random_ones = [name for name, source in (("CLIP", m.clip), ("DINOv2", m.dino)) if source == TINY]
    if random_ones:
        notes.insert(0, f"**Not meaningful:** {' and '.join(random_ones)} features here come from small RANDOM "
                        "encoders (source 'tiny'); their consistency and CLIP-T numbers only test the plumbing.")
    skipped = [name for name, source in (("CLIP", m.clip), ("DINOv2", m.dino)) if source is None]
    if skipped:
        notes.append(f"{' and '.join(skipped)} metrics were switched off.")
    notes.append("FVD: " + ("computed with the I3D weights at " + str(m.fvd_i3d) if m.fvd_i3d else "not computed (no I3D weights / real set configured)."))
    return notes


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _plots(out: Path, summary: dict[str, Any], table: pa.Table) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in table.to_pylist() if r["status"] == "ok"]
    names = []
    if rows:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.scatter([r["intensity"] for r in rows], [r["magnitude"] for r in rows], s=10, alpha=0.4, label="videos")
        levels = sorted(summary["per_level"], key=int)
        ax.errorbar([int(k) for k in levels], [summary["per_level"][k]["magnitude"] for k in levels],
                    yerr=[summary["per_level"][k]["magnitude_std"] for k in levels], color="C1", marker="o", label="mean ± std")
        ax.set_xlabel("requested intensity level")
        ax.set_ylabel("measured flow (% of diagonal / frame)")
        ax.set_title(f"intensity control (Spearman {_fmt(summary['intensity_spearman'], 2)})")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "intensity.png", dpi=100)
        plt.close(fig)
        names.append("intensity.png")
    confusion = summary["direction_confusion"]
    if confusion:
        measured = list(MOVING) + ["none"]
        asked = [d for d in MOVING if d in confusion]
        grid = np.array([[confusion[a].get(m, 0) for m in measured] for a in asked])
        fig, ax = plt.subplots(figsize=(4.5, 3.5))
        ax.imshow(grid, cmap="Blues")
        for (i, j), count in np.ndenumerate(grid):
            ax.text(j, i, str(count), ha="center", va="center")
        ax.set_xticks(range(len(measured)), measured)
        ax.set_yticks(range(len(asked)), asked)
        ax.set_xlabel("measured direction")
        ax.set_ylabel("prompt direction")
        ax.set_title(f"direction accuracy {_fmt(summary['direction_accuracy'], 2)}")
        fig.tight_layout()
        fig.savefig(out / "directions.png", dpi=100)
        plt.close(fig)
        names.append("directions.png")
    return names


def pick_examples(table: pa.Table, count: int) -> list[dict[str, Any]]:
    """Up to ``count`` generated videos spread over directions and intensities (deterministic)."""
    rows = [r for r in table.to_pylist() if r["status"] == "ok" and r["video"]]
    rows.sort(key=lambda r: r["id"])
    if len(rows) <= count:
        return rows
    if count <= 0:  # output.report_videos 0: a report without videos
        return []
    step = len(rows) / count
    return [rows[int(i * step)] for i in range(count)]


def write(out: Path, cfg: Any, summary: dict[str, Any], table: pa.Table) -> list[str]:
    """``report.md`` + ``intensity.png`` + ``directions.png`` in ``out``; returns the embedded videos' paths."""
    plots = _plots(out, summary, table)
    lines = [f"# Evaluation of `{cfg.generation.model}`", "",
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; manifest `{cfg.manifest.csv}`; "
             f"{summary['generated']} videos generated, {summary['errors']} errors "
             f"(rows accounted: {summary['rows_accounted']}).", ""]
    lines += [f"> {note}" for note in encoder_note(cfg)] + [""]
    lines += ["| metric | value |", "| --- | --- |"]
    table_rows = [
        ("direction accuracy (chance 0.25)", summary["direction_accuracy"]),
        ("intensity Spearman (level vs flow)", summary["intensity_spearman"]),
        ("first-frame PSNR (dB)", summary["psnr"]), ("first-frame SSIM", summary["ssim"]),
        ("frame consistency, CLIP (x100)", summary["clip_consistency"]),
        ("frame consistency, DINO (x100)", summary["dino_consistency"]),
        ("CLIP-T (x100)", summary["clip_t"]), ("FVD", summary["fvd"]),
        ("mean flow magnitude (% diag / frame)", summary["magnitude"]), ("mean speed (px / frame)", summary["speed"]),
    ]
    lines += [f"| {name} | {_fmt(value)} |" for name, value in table_rows] + [""]
    if summary["per_level"]:
        lines += ["| level | videos | flow magnitude | speed (px/frame) |", "| --- | --- | --- | --- |"]
        lines += [f"| {k} | {v['videos']} | {_fmt(v['magnitude'])} ± {_fmt(v['magnitude_std'])} | {_fmt(v['speed'])} |"
                  for k, v in sorted(summary["per_level"].items(), key=lambda kv: int(kv[0]))] + [""]
    lines += [f"![{name}]({name})" for name in plots] + [""]
    examples = pick_examples(table, cfg.output.report_videos)
    if examples:
        lines += ["## Samples", "", "| video | prompt | intensity | measured |", "| --- | --- | --- | --- |"]
        lines += [f"| ![{r['id']}]({r['video']}) | {r['prompt']} | {r['intensity']} | {r['measured_direction']}, "
                  f"{_fmt(r['speed'], 2)} px/frame |" for r in examples] + [""]
    if summary["error_examples"]:
        lines += ["## Errors", ""] + [f"- `{e['id']}`: {e['error']}" for e in summary["error_examples"]] + [""]
    (out / "report.md").write_text("\n".join(lines))
    return [r["video"] for r in examples]


def write_summary(out: Path, summary: dict[str, Any]) -> None:
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")


def log_to_mlflow(out: Path, cfg: Any, summary: dict[str, Any], videos: list[str]) -> dict[str, str]:
    """One MLflow run: params = the flattened config, metrics = the numeric summary,
    artifacts = report, plots, summary, per-video Parquet and the report's videos."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    from common.config import flatten

    uri = cfg.mlflow.tracking_uri or f"sqlite:///{out / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(cfg.mlflow.experiment)
    if experiment is None:
        artifacts = None if cfg.mlflow.tracking_uri else (out / "mlartifacts").as_uri()
        experiment_id = client.create_experiment(cfg.mlflow.experiment, artifact_location=artifacts)
    else:
        experiment_id = experiment.experiment_id
    run = client.create_run(experiment_id, run_name=cfg.mlflow.run_name or out.name)
    run_id = run.info.run_id
    ok = False
    try:
        params = [Param(k, str(v)[:500]) for k, v in flatten(cfg).items()]
        for i in range(0, len(params), 100):
            client.log_batch(run_id, params=params[i : i + 100])
        now = int(time.time() * 1000)
        numeric = {k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None}
        client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in numeric.items() if math.isfinite(float(v))])
        write_summary(out, summary)
        for name in ("report.md", "summary.json", "intensity.png", "directions.png"):
            if (out / name).is_file():
                client.log_artifact(run_id, str(out / name))
        client.log_artifacts(run_id, str(out / "metrics"), "metrics")
        for video in videos:
            client.log_artifact(run_id, str(out / video), "videos")
        ok = True
    finally:
        client.set_terminated(run_id, "FINISHED" if ok else "FAILED")
    return {"tracking_uri": uri, "run_id": run_id}
