"""Training survives faults: a killed Ray Train worker, then a lost node, in one run (real Ray, CPU, gloo)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from training.run import find_checkpoints

REPO = Path(__file__).resolve().parents[1]


def history(summary: dict, key: str) -> dict[int, float]:
    client = MlflowClient(tracking_uri=summary["tracking_uri"])
    return {m.step: m.value for m in client.get_metric_history(summary["run_id"], key)}


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
def test_a_killed_worker_and_a_lost_node_resume_from_the_last_checkpoint(first_run, tmp_path):
    """DDP over gloo with one worker on each node of a 2-node cluster (ray.cluster_utils.Cluster, in a
    subprocess: tests/two_node_train.py). A training worker is SIGKILLed after step 3, once Ray has
    registered the step-2 checkpoint: the worker group restarts on both nodes from it. Then the
    worker node is removed after that attempt's step-4 checkpoint: the run goes on with the head's
    worker alone, from that checkpoint, and ends at step 10 with every step logged."""
    data, _ = first_run
    out, summary = run_two_node(data, tmp_path / "run", timeout=640)
    killed = [int(line.split()[1]) for line in out.splitlines() if line.startswith("KILLED ")]
    removed = [int(line.split()[1]) for line in out.splitlines() if line.startswith("REMOVED ")]
    assert killed and 3 <= killed[0] < 10, out[-4000:]  # struck mid-run
    assert removed and 5 <= removed[0] < 10, out[-4000:]
    assert summary["step"] == 10
    restarts = history(summary, "restarts")
    assert restarts[10] >= 2, out[-4000:]  # resumed after each strike, from a checkpoint
    assert restarts[1] == 0
    client = MlflowClient(tracking_uri=summary["tracking_uri"])
    losses = client.get_metric_history(summary["run_id"], "loss")
    assert sorted({m.step for m in losses}) == list(range(1, 11))  # every step logged, none skipped
    tags = client.get_run(summary["run_id"]).data.tags
    for attempt in ("replicas.attempt_0", "replicas.attempt_1"):  # before the kill; after it, before the node loss
        replicas = json.loads(tags[attempt])
        assert sorted(r["rank"] for r in replicas) == [0, 1], attempt
        assert len({r["node"] for r in replicas}) == 2, attempt  # one worker per node
        assert len({r["sha1"] for r in replicas}) == 1, attempt  # identical parameters on both ranks
    after = json.loads(tags["replicas"])
    assert [r["rank"] for r in after] == [0]  # the head's worker alone
    assert {r["node"] for r in after} < {r["node"] for r in json.loads(tags["replicas.attempt_1"])}
    assert [p.name for p in find_checkpoints(str(tmp_path / "run"))][-1] == "checkpoint_step_00000010"
