"""Evaluation job: generate videos for a manifest with a trained model and score them.

    ray job submit --working-dir . -- python jobs/evaluate.py --preset sd15 \\
        --manifest.csv eval/manifest.csv --generation.model runs:/<run_id>/final_model --output.dir eval/out
    python jobs/evaluate.py --preset tiny --manifest.csv m.csv --generation.model runs/t1/final_model --output.dir runs/t1/eval

Writes ``videos/``, ``metrics/`` (Parquet, one row per manifest row), ``summary.json``,
``report.md`` with plots, and an MLflow run. ``--help`` lists every setting.
"""

from __future__ import annotations

import sys
from pathlib import Path

from common.config import load_from_argv, main_with_errors
from evaluation.config import PRESETS, EvalConfig


def main(argv: list[str]) -> dict:
    cfg = load_from_argv(EvalConfig, argv, PRESETS, prog="jobs/evaluate.py")
    import ray

    from evaluation.job import run

    ray.init(address=cfg.ray_address, log_to_driver=True)
    summary = run(cfg)
    keys = ("generated", "errors", "rows_accounted", "direction_accuracy", "intensity_spearman", "psnr", "ssim",
            "clip_consistency", "dino_consistency", "clip_t", "fvd", "seconds")
    for key in keys:
        print(f"{key:>20}: {summary[key]}")
    print(f"report: {Path(cfg.output.dir).resolve() / 'report.md'}; MLflow run {summary['mlflow']['run_id']} at {summary['mlflow']['tracking_uri']}")
    return summary


if __name__ == "__main__":
    sys.exit(main_with_errors(main, sys.argv[1:]))
