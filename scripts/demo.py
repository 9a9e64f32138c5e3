"""The README's main command: the whole system end to end on this machine.

1. starts a private local Ray head (common.raylocal.LocalRayHead; stopped at the end),
2. writes the sample WebVid-style dataset (pipelines.sample_data),
3. submits the preprocessing job with ``ray job submit --working-dir .``,
4. submits the training job (tiny preset) on that dataset, tracked in a sqlite MLflow store,
5. prints where the dataset, the checkpoints, the MLflow run and the trained model are.

    python scripts/demo.py [--out runs/demo] [--n 64] [--steps 60]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common.raylocal import LocalRayHead  # noqa: E402


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def submit(head: LocalRayHead, job_args: list[str]) -> None:
    """``ray job submit`` (waits for the job and streams its logs); raises if it fails."""
    cmd = ["ray", "job", "submit", "--address", head.dashboard_url, "--working-dir", str(ROOT), "--", "python", *job_args]
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, env=head.child_env(), cwd=ROOT, check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/demo", help="folder for everything the demo writes")
    parser.add_argument("--n", type=int, default=64, help="synthetic sample clips")
    parser.add_argument("--steps", type=int, default=60, help="training steps")
    args = parser.parse_args(argv)
    out = (ROOT / args.out).resolve() if not os.path.isabs(args.out) else Path(args.out)
    data, dataset, train = out / "sample_data", out / "dataset", out / "train"

    step(f"sample data -> {data}")
    subprocess.run([sys.executable, "-m", "pipelines.sample_data", "--out", str(data), "--n", str(args.n), "--overwrite"], cwd=ROOT, check=True)

    step("starting a local Ray head")
    with LocalRayHead() as head:
        print(f"Ray dashboard: {head.dashboard_url}", flush=True)
        step("preprocessing job (ray job submit)")
        submit(head, [
            "jobs/preprocess.py", "--preset", "tiny",
            "--input.csv", str(data / "videos.csv"), "--input.video_root", str(data / "videos"),
            "--output.dir", str(dataset), "--output.overwrite", "true",
        ])
        step("training job (ray job submit)")
        if train.exists():
            shutil.rmtree(train)  # the demo always starts a fresh run
        submit(head, [
            "jobs/train.py", "--preset", "tiny", "--data.dir", str(dataset), "--output.dir", str(train),
            "--train.steps", str(args.steps), "--samples.every", str(max(1, args.steps // 2)),
            "--train.val_every", str(max(1, args.steps // 2)), "--checkpoint.every", str(max(1, args.steps // 2)),
        ])
    step("stopped the local Ray head")

    summary = json.loads((dataset / "summary.json").read_text())
    print(f"\nDataset: {dataset}")
    print(f"  clips:   {dataset / 'clips'} ({summary['clips_out']} clips from {summary['rows_ok']} videos)")
    print(f"  errors:  {dataset / 'errors'} ({summary['rows_error']} rows: {summary['errors']})")
    print(f"  summary: {dataset / 'summary.json'}  histogram: {dataset / 'intensity_hist.png'}")
    print(f"  rows_in={summary['rows_in']} accounted={summary['rows_accounted']} elapsed={summary['elapsed_s']} s")
    print(f"\nTraining run: {train}")
    print(f"  checkpoints: {train / 'checkpoints'}")
    print(f"  model:       {train / 'final_model'}  (python -m model.animate --model {train / 'final_model'} --image photo.jpg --prompt ... --out out.mp4)")
    print(f"  MLflow:      mlflow ui --backend-store-uri sqlite:///{train / 'mlflow.db'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
