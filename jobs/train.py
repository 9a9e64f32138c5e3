"""Training job: the LivePhoto model on a preprocessed dataset, with Ray Train and MLflow.

    ray job submit --working-dir . -- python jobs/train.py --config configs/train_sd15.yaml
    python jobs/train.py --preset tiny --data.dir out/dataset --train.steps 200 --output.dir runs/t1
    python jobs/train.py --preset tiny --data.dir out/dataset --output.dir runs/t1 --resume latest

``--help`` lists every setting.
"""

from __future__ import annotations

import json
import sys

from common.config import load_from_argv, main_with_errors
from training.config import PRESETS, TrainConfig


def main(argv: list[str]) -> dict:
    cfg = load_from_argv(TrainConfig, argv, PRESETS, prog="jobs/train.py")
    import ray

    from training.run import run

    ray.init(address=cfg.ray_address, log_to_driver=True)
    summary = run(cfg)
    print(json.dumps(summary, indent=2, default=str))
    print(f"trained to step {summary['step']}; final model in {summary['final_model']}; MLflow run {summary['run_id']} at {summary['tracking_uri']}")
    return summary


if __name__ == "__main__":
    sys.exit(main_with_errors(main, sys.argv[1:]))
