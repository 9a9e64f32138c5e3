"""Shared fixtures: one local Ray cluster for the whole pytest run, sample data made once."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


S3_PORT = _free_port()
"""Where tests/test_s3.py starts its S3-compatible server (moto). Ray's workers inherit the
environment at start, so the endpoint and fake credentials are set before the cluster starts;
pyarrow's S3 filesystem (and so Ray Data) reads AWS_ENDPOINT_URL."""


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster started by this pytest process and shut down at its end."""
    import ray

    os.environ.update(
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{S3_PORT}", AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test",
        AWS_DEFAULT_REGION="us-east-1", AWS_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true",
    )
    if not ray.is_initialized():
        # address="local": a new cluster even while another test's ray.cluster_utils.Cluster (which writes
        # /tmp/ray/ray_current_cluster, where a bare ray.init() looks first) is up in another process
        ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session", autouse=True)
def real_time_guard():
    """Keeps the session's processes off SCHED_FIFO (tests/real_time_guard.py says why)."""
    from real_time_guard import RealTimeGuard

    guard = RealTimeGuard().start()
    yield guard
    guard.stop()
    if guard.reset:
        print(f"\nreal-time guard: {guard.reset} SCHED_FIFO/RR thread(s) put back to SCHED_OTHER")


from sample_fixtures import first_run, sample_dir  # noqa: E402,F401  (session fixtures)
