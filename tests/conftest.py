"""Shared fixtures: one local Ray cluster for the whole pytest run, sample data made once."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster started by this pytest process and shut down at its end."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    yield ray
    ray.shutdown()


from sample_fixtures import first_run, sample_dir  # noqa: E402,F401  (session fixtures)
