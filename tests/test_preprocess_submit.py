"""`ray job submit -- python jobs/preprocess.py ...` against a local head this test starts and stops."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from common.raylocal import LocalRayHead
from pipelines.sample_data import generate

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_preprocess_job_through_ray_job_submit(tmp_path):
    data = tmp_path / "data"
    generate(data, n=6, size=64, num_frames=20, fps=8, seed=1, include_real=False, progress=False)
    out = tmp_path / "dataset"
    with LocalRayHead(num_cpus=2) as head:
        proc = subprocess.run(
            [
                RAY, "job", "submit", "--address", head.dashboard_url, "--working-dir", str(REPO), "--",
                "python", "jobs/preprocess.py", "--preset", "tiny",
                "--input.csv", str(data / "videos.csv"), "--input.video_root", str(data / "videos"),
                "--output.dir", str(out),
            ],
            env=head.child_env(), capture_output=True, text=True, timeout=360, cwd=REPO,
        )
        pids = head.pids
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "succeeded" in log and f"dataset written to {out}" in log
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows_in"] == 6 and summary["rows_ok"] == 6 and summary["rows_accounted"]
    assert pq.read_table(out / "clips").num_rows == 6
    import psutil

    assert not [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
