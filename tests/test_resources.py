"""The fail-fast resource check, on made-up clusters (no Ray)."""

from __future__ import annotations

import pytest

from common.config import ConfigError
from common.resources import Demand, check_fits

CPU_ONLY = [{"CPU": 2.0, "GPU": 0.0}]
GPU_NODES = [{"CPU": 8.0, "GPU": 1.0}, {"CPU": 8.0, "GPU": 1.0}]


def test_demands_that_fit_pass():
    check_fits([Demand("decode", 1.0), Demand("encoders", 0.5)], CPU_ONLY, "lower it")
    check_fits([Demand("workers", 8.0, 1.0, count=2)], GPU_NODES, "lower it")


def test_each_way_of_not_fitting_names_the_asker_and_the_cluster():
    with pytest.raises(ConfigError, match=r"^resources: GPUs requested by raft \(flow.num_gpus\); encoders, but the cluster has "
                                          r"2 CPUs and 0 GPUs on 1 node\(s\) .*; lower it$"):
        check_fits([Demand("raft (flow.num_gpus)", 1, 0.25), Demand("encoders", 1, 0.5)], CPU_ONLY, "lower it")
    with pytest.raises(ConfigError, match=r"workers needs 9 CPUs and 1 GPUs on one node, the largest node has 8 CPUs and 1 GPUs"):
        check_fits([Demand("workers", 9.0, 1.0)], GPU_NODES, "lower it")
    with pytest.raises(ConfigError, match=r"the stages need 3 GPUs at once \(workers 3\), but the cluster has 16 CPUs and 2 GPUs"):
        check_fits([Demand("workers", 1.0, 1.0, count=3)], GPU_NODES, "lower it")
    with pytest.raises(ConfigError, match=r"need 3 CPUs at once \(decode 1 \+ raft 1 \+ encoders 1\)"):
        check_fits([Demand("decode", 1), Demand("raft", 1), Demand("encoders", 1)], CPU_ONLY, "lower it")
    with pytest.raises(ConfigError, match="largest node has 0 CPUs"):
        check_fits([Demand("decode", 1)], [], "lower it")
