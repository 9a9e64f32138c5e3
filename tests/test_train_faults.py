"""Training survives faults: a killed Ray Train worker and a lost node (real Ray, CPU, gloo)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from mlflow.tracking import MlflowClient

from train_watch import logged_step, registered_steps
from training.run import find_checkpoints

REPO = Path(__file__).resolve().parents[1]


def history(summary: dict, key: str) -> dict[int, float]:
    client = MlflowClient(tracking_uri=summary["tracking_uri"])
    return {m.step: m.value for m in client.get_metric_history(summary["run_id"], key)}


def _descendants_named(pid: int, needle: str) -> list[psutil.Process]:
    found = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if needle in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            pass
    return found


@pytest.mark.slow
@pytest.mark.timeout(500)
def test_killed_worker_restarts_from_the_last_checkpoint(first_run, tmp_path):
    data, _ = first_run
    out = tmp_path / "run"
    args = [sys.executable, "jobs/train.py", "--preset", "tiny", "--data.dir", str(data), "--output.dir", str(out),
            "--train.steps", "12", "--checkpoint.every", "4", "--samples.every", "0", "--train.val_every", "0",
            "--train.log_every", "1", "--scaling.max_failures", "2"]
    log = open(tmp_path / "log.txt", "w")
    proc = subprocess.Popen(args, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    killed = None
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and killed is None:
        # kill once Ray has registered the step-4 checkpoint and the worker has gone on past it
        if 4 in registered_steps(out) and logged_step(out) >= 6:
            workers = _descendants_named(proc.pid, "RayTrainWorker")
            if workers:
                killed = workers[0].pid
                os.kill(killed, signal.SIGKILL)
        time.sleep(0.2)
    rc = proc.wait(timeout=400)
    text = (tmp_path / "log.txt").read_text()
    assert killed is not None, "never saw the first checkpoint and a training worker to kill\n" + text[-3000:]
    assert rc == 0, text[-3000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{out}/mlflow.db")
    (mlrun,) = client.search_runs([client.get_experiment_by_name("livephoto").experiment_id])
    steps = {m.step for m in client.get_metric_history(mlrun.info.run_id, "loss")}
    assert max(steps) == 12 and mlrun.data.metrics["restarts"] >= 1
    restarted = [m.value for m in client.get_metric_history(mlrun.info.run_id, "restarts")]
    assert restarted[0] == 0 and restarted[-1] >= 1
    assert [p.name for p in find_checkpoints(str(out))][-1] == "checkpoint_step_00000012"


def run_two_node(data: Path, out: Path, timeout: int) -> tuple[str, dict]:
    """Run tests/two_node_train.py in a subprocess (its own 2-node Cluster); return its stdout and summary."""
    script = REPO / "tests" / "two_node_train.py"
    proc = subprocess.run([sys.executable, str(script), str(data), str(out)], cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("SUMMARY ")]
    assert len(lines) == 1, proc.stdout[-4000:]
    return proc.stdout, json.loads(lines[0][len("SUMMARY "):])


@pytest.mark.slow
@pytest.mark.timeout(700)
def test_a_lost_node_resumes_from_the_last_checkpoint(first_run, tmp_path):
    """DDP over gloo with one worker on each node of a 2-node cluster (ray.cluster_utils.Cluster, in a
    subprocess); the worker node is removed after step 3, once Ray has registered the step-2 checkpoint. The run goes
    on with the head's worker alone, from that checkpoint, and ends at step 8."""
    data, _ = first_run
    out, summary = run_two_node(data, tmp_path / "run", timeout=640)
    removed = [int(line.split()[1]) for line in out.splitlines() if line.startswith("REMOVED ")]
    assert removed and 3 <= removed[0] < 8, out[-4000:]  # struck mid-run
    assert summary["step"] == 8
    restarts = history(summary, "restarts")
    assert restarts[8] >= 1, out[-4000:]  # resumed at least once, from a checkpoint
    client = MlflowClient(tracking_uri=summary["tracking_uri"])
    losses = client.get_metric_history(summary["run_id"], "loss")
    assert sorted({m.step for m in losses}) == list(range(1, 9))  # every step logged, none skipped
    tags = client.get_run(summary["run_id"]).data.tags
    before = json.loads(tags["replicas.attempt_0"])  # at the step-2 checkpoint, before the loss
    assert sorted(r["rank"] for r in before) == [0, 1]
    assert len({r["node"] for r in before}) == 2  # one worker per node
    assert len({r["sha1"] for r in before}) == 1  # identical parameters on both ranks
    after = json.loads(tags["replicas"])
    assert [r["rank"] for r in after] == [0]  # the head's worker alone
    assert {r["node"] for r in after} < {r["node"] for r in before}
