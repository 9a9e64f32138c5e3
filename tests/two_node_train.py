"""Helper for test_train_faults: train on a 2-node cluster simulated with ray.cluster_utils.Cluster,
SIGKILL a training worker, then lose the worker node, in one run.

    python tests/two_node_train.py DATA_DIR OUT_DIR

Two 2-CPU workers on two 3-CPU nodes (so one worker a node, and a CPU left for Ray Data's tasks),
DDP over gloo, elastic (``scaling.min_workers 1``), 10 steps, a checkpoint every 2.

1. Once Ray has registered the step-2 checkpoint and step 3 is logged, one training worker
   process is SIGKILLed (as the kernel's OOM killer would): Ray restarts the worker group on both
   nodes from that checkpoint.
2. Once that attempt has logged step 5 and Ray has registered its step-4 checkpoint, the worker
   node is removed: the run goes on with the head's worker alone (docs/RELIABILITY.md).

Prints the step logged at each strike on lines starting with KILLED and REMOVED, and the run
summary as JSON on a line starting with SUMMARY.
"""

import json
import os
import sys
import threading
import time
from pathlib import Path

import psutil
import ray
from ray.cluster_utils import Cluster

from common.config import load
from train_watch import logged_step, registered_steps, restarted_step  # tests/: this script's folder
from training.config import PRESETS, TrainConfig
from training.run import run

data_dir, out_dir = sys.argv[1], Path(sys.argv[2])


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + 600
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {what}")
        time.sleep(0.2)


def training_workers() -> list[psutil.Process]:
    found = []
    for child in psutil.Process().children(recursive=True):  # the Cluster's processes are this script's
        try:
            if "RayTrainWorker" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            pass
    return found


def strike(cluster: Cluster, node) -> None:
    wait_for(lambda: 2 in registered_steps(out_dir) and logged_step(out_dir) >= 3 and training_workers(),
             "the step-2 checkpoint and a training worker")
    step, victim = logged_step(out_dir), training_workers()[0]
    victim.kill()
    print(f"KILLED {step} pid {victim.pid}", flush=True)
    wait_for(lambda: restarted_step(out_dir, 1) >= 5 and 4 in registered_steps(out_dir), "step 5 of the restarted attempt")
    step = logged_step(out_dir)
    cluster.remove_node(node)
    print(f"REMOVED {step}", flush=True)


overrides = {
    "data.dir": data_dir, "output.dir": str(out_dir), "train.steps": 10, "train.batch_size": 2,
    "train.val_every": 0, "train.log_every": 1, "samples.every": 0, "checkpoint.every": 2,
    "scaling.num_workers": 2, "scaling.min_workers": 1, "scaling.cpus_per_worker": 2,
    "scaling.placement_strategy": "SPREAD", "scaling.max_failures": 3,
}
# How long Ray Train waits for a worker group that cannot start (default 60 s): right after the
# loss its view of the cluster may still count the removed node; the next try then fits.
os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "30")
cpus = 3
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": cpus})
worker_node = cluster.add_node(num_cpus=cpus)
cluster.wait_for_nodes()
try:
    ray.init(address=cluster.address, log_to_driver=False)
    cfg = load(TrainConfig, presets=PRESETS, preset="tiny", overrides=overrides)
    threading.Thread(target=strike, args=(cluster, worker_node), daemon=True).start()
    summary = run(cfg)
    print("SUMMARY " + json.dumps(summary, default=str), flush=True)  # Ray may print more lines at shutdown
finally:
    ray.shutdown()
    cluster.shutdown()
