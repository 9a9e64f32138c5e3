"""Helper for test_train_job: train on a 2-node cluster simulated with ray.cluster_utils.Cluster.

    python tests/two_node_train.py DATA_DIR OUT_DIR               one worker per node, 4 steps
    python tests/two_node_train.py DATA_DIR OUT_DIR lose-node     elastic (1..2 workers, one per node), 16 steps;
        the worker node is removed once the step-4 checkpoint exists and step 6 is logged

Prints the run summary as JSON on a line starting with SUMMARY (and, with lose-node, the step
logged when the node was removed on a line starting with REMOVED).
"""

import json
import sqlite3
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from common.config import load  # noqa: E402
from training.config import PRESETS, TrainConfig  # noqa: E402
from training.run import run  # noqa: E402

data_dir, out_dir = sys.argv[1], Path(sys.argv[2])
lose_node = sys.argv[3:] == ["lose-node"]


def logged_step() -> int:
    try:
        with sqlite3.connect(f"file:{out_dir}/mlflow.db?mode=ro", uri=True, timeout=1) as db:
            return int(db.execute("select max(step) from metrics where key = 'loss'").fetchone()[0] or 0)
    except (sqlite3.Error, TypeError):
        return 0


def remove_when_running(cluster: Cluster, node) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if list(out_dir.glob("checkpoints/*/checkpoint_step_00000004")) and logged_step() >= 6:
            step = logged_step()
            cluster.remove_node(node)
            print(f"REMOVED {step}", flush=True)
            return
        time.sleep(0.2)


cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
worker_node = cluster.add_node(num_cpus=2)
cluster.wait_for_nodes()
try:
    ray.init(address=cluster.address, log_to_driver=False)
    overrides = {
        "data.dir": data_dir, "output.dir": str(out_dir), "train.steps": 4, "train.batch_size": 2,
        "scaling.num_workers": 2, "scaling.placement_strategy": "STRICT_SPREAD", "samples.every": 0,
        "train.val_every": 0, "checkpoint.every": 2, "train.log_every": 1,
    }
    if lose_node:  # one worker per node (one torch thread each); after the loss, the head's worker goes on
        overrides.update({"train.steps": 16, "checkpoint.every": 4, "scaling.min_workers": 1, "scaling.max_failures": 2})
        threading.Thread(target=remove_when_running, args=(cluster, worker_node), daemon=True).start()
    cfg = load(TrainConfig, presets=PRESETS, preset="tiny", overrides=overrides)
    summary = run(cfg)
    print("SUMMARY " + json.dumps(summary, default=str), flush=True)  # Ray may print more lines at shutdown
finally:
    ray.shutdown()
    cluster.shutdown()
