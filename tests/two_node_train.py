"""Helper for test_train_job: train on a 2-node cluster simulated with ray.cluster_utils.Cluster.

    python tests/two_node_train.py DATA_DIR OUT_DIR      (prints the run summary as JSON, last line)
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from common.config import load  # noqa: E402
from training.config import PRESETS, TrainConfig  # noqa: E402
from training.run import run  # noqa: E402

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
cluster.add_node(num_cpus=2)
cluster.wait_for_nodes()
try:
    ray.init(address=cluster.address, log_to_driver=False)
    cfg = load(TrainConfig, presets=PRESETS, preset="tiny", overrides={
        "data.dir": sys.argv[1], "output.dir": sys.argv[2], "train.steps": 4, "train.batch_size": 2,
        "scaling.num_workers": 2, "scaling.placement_strategy": "STRICT_SPREAD", "samples.every": 0,
        "train.val_every": 0, "checkpoint.every": 2, "train.log_every": 1,
    })
    summary = run(cfg)
    print("SUMMARY " + json.dumps(summary, default=str), flush=True)  # Ray may print more lines at shutdown
finally:
    ray.shutdown()
    cluster.shutdown()
