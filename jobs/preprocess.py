"""Preprocessing job: WebVid-style CSV + videos -> a training-ready Parquet dataset.

    ray job submit --working-dir . -- python jobs/preprocess.py --config configs/preprocess_sd15.yaml
    python jobs/preprocess.py --preset tiny --input.csv data/videos.csv --input.video_root data \\
        --output.dir out/dataset

``--help`` lists every setting. See pipelines/dataset.py for the output layout.
"""

from __future__ import annotations

import json
import sys

from common.config import load_from_argv, main_with_errors
from pipelines.config import PRESETS, PreprocessConfig


def main(argv: list[str]) -> dict:
    cfg = load_from_argv(PreprocessConfig, argv, PRESETS, prog="jobs/preprocess.py")
    import ray

    from pipelines.preprocess import run

    ray.init(address=cfg.ray_address, log_to_driver=True)
    summary = run(cfg)
    shown = {k: v for k, v in summary.items() if k != "intensity"}
    shown["intensity_edges"] = [round(e, 4) for e in summary["intensity"]["edges"]]
    print(json.dumps(shown, indent=2))
    print(f"dataset written to {summary['output']} (clips/, errors/, summary.json, intensity_bins.json, dataset.json)")
    return summary


if __name__ == "__main__":
    sys.exit(main_with_errors(main, sys.argv[1:]))
