"""Fail fast when a job's stages cannot fit the Ray cluster it joined.

Ray queues a task or actor whose resources no node offers and waits for them forever (it only
warns that the job "may hang"). A job instead lists what it needs at the same time, as
:class:`Demand` rows named after the settings that ask for them, and :func:`check_fits` raises
a :class:`~common.config.ConfigError` within seconds of start, naming those settings and the
cluster's resources. On an autoscaling cluster that starts smaller than it will grow, the
jobs' ``check_resources: false`` turns the check off.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.config import ConfigError


@dataclass(frozen=True)
class Demand:
    what: str
    """Who asks, with the settings that set the amount, e.g. ``"RAFT actor (flow.num_cpus, flow.num_gpus)"``."""
    cpus: float
    gpus: float = 0.0
    count: int = 1
    """Copies that must run at once (e.g. training workers); each must fit on one node."""


def cluster_nodes() -> list[dict[str, float]]:
    """CPU and GPU totals of each alive node of the connected cluster."""
    import ray

    return [
        {"CPU": float(n["Resources"].get("CPU", 0.0)), "GPU": float(n["Resources"].get("GPU", 0.0))}
        for n in ray.nodes() if n.get("Alive")
    ]


def _describe(nodes: list[dict[str, float]]) -> str:
    cpus, gpus = sum(n["CPU"] for n in nodes), sum(n["GPU"] for n in nodes)
    return f"the cluster has {cpus:g} CPUs and {gpus:g} GPUs on {len(nodes)} node(s)"


def check_fits(demands: list[Demand], nodes: list[dict[str, float]], hint: str) -> None:
    """Raise ConfigError unless every demand fits on some node and all of them fit at once.

    ``hint`` is the way out the message ends with (which settings to lower).
    """
    have = _describe(nodes) + " (check_resources false skips this check on an autoscaling cluster)"
    gpu_asks = [d for d in demands if d.gpus > 0]
    if gpu_asks and not any(n["GPU"] > 0 for n in nodes):
        names = "; ".join(d.what for d in gpu_asks)
        raise ConfigError(f"resources: GPUs requested by {names}, but {have}; {hint}")
    for d in demands:
        if not any(n["CPU"] >= d.cpus and n["GPU"] >= d.gpus for n in nodes):
            biggest = max(nodes, key=lambda n: (n["CPU"], n["GPU"]), default={"CPU": 0.0, "GPU": 0.0})
            raise ConfigError(
                f"resources: {d.what} needs {d.cpus:g} CPUs and {d.gpus:g} GPUs on one node, the largest node has "
                f"{biggest['CPU']:g} CPUs and {biggest['GPU']:g} GPUs; {hint}"
            )
    for key, name in (("CPU", "cpus"), ("GPU", "gpus")):
        need = sum(getattr(d, name) * d.count for d in demands)
        total = sum(n[key] for n in nodes)
        if need > total + 1e-9:
            parts = " + ".join(f"{d.what} {getattr(d, name) * d.count:g}" for d in demands if getattr(d, name) > 0)
            raise ConfigError(f"resources: the stages need {need:g} {key}s at once ({parts}), but {have}; {hint}")


def torch_device(requested: str | float = "auto") -> str:
    """The torch device a stage runs on: ``"auto"`` (or a GPU count > 0) is CUDA when this process
    sees a GPU, else the CPU; a GPU count of 0 is the CPU; any other string is used as given."""
    import torch

    if isinstance(requested, str) and requested != "auto":
        return requested
    wants_gpu = requested == "auto" or float(requested) > 0
    return "cuda" if wants_gpu and torch.cuda.is_available() else "cpu"

