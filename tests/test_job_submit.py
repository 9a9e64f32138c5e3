"""`ray job submit` of the preprocessing and training jobs against a local head this test starts and stops."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from common.raylocal import LocalRayHead
from sample_data import generate

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_preprocess_and_train_jobs_through_ray_job_submit(tmp_path):
    data = tmp_path / "data"
    generate(data, n=10, size=64, num_frames=20, fps=8, seed=1, include_real=False, progress=False)
    out, run_dir = tmp_path / "dataset", tmp_path / "train"

    def submit(head: LocalRayHead, args: list[str]) -> str:
        cmd = [RAY, "job", "submit", "--address", head.dashboard_url, "--working-dir", str(REPO), "--", "python", *args]
        proc = subprocess.run(cmd, env=head.child_env(), capture_output=True, text=True, timeout=360, cwd=REPO)
        log = proc.stdout + proc.stderr
        assert proc.returncode == 0 and "succeeded" in log, log[-3000:]
        return log

    with LocalRayHead(num_cpus=2) as head:
        log = submit(head, [
            "jobs/preprocess.py", "--preset", "tiny", "--input.csv", str(data / "videos.csv"),
            "--input.video_root", str(data / "videos"), "--output.dir", str(out),
        ])
        train_log = submit(head, [
            "jobs/train.py", "--preset", "tiny", "--data.dir", str(out), "--train.steps", "3", "--output.dir", str(run_dir),
            "--samples.every", "0", "--train.val_every", "0", "--train.batch_size", "2",
        ])
        pids = head.pids
    assert f"dataset written to {out}" in log
    assert "trained to step 3" in train_log and (run_dir / "final_model" / "model_index.json").is_file()
    assert (run_dir / "mlflow.db").is_file() and list(run_dir.glob("checkpoints/*/checkpoint_step_00000003"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows_in"] == 10 and summary["rows_ok"] == 10 and summary["rows_accounted"]
    assert pq.read_table(out / "clips").num_rows == 10
    import psutil

    assert not [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
