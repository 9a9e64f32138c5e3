"""The app builder: ``serve run serve/config.yaml`` / ``serve deploy serve/config.yaml`` call
``serve.app:build_app(args)``; ``python -m serve`` and the tests call it too. ``serve.app:app`` is
the shipped mini model bound with default settings (for ``serve run`` / ``serve build``).

    LivePhotoIngress (HTTP, CPU)  --handle-->  LivePhotoModel (weights on GPU, @serve.batch)
"""

from __future__ import annotations

import os
from typing import Any

from ray import serve

from serve.api import LivePhotoIngress
from serve.config import ServeConfig, serve_config
from serve.model import LivePhotoModel

API_KEY_ENV = "LIVEPHOTO_API_KEY"


def model_deployment_options(cfg: ServeConfig) -> dict[str, Any]:
    """Replica resources, autoscaling and the queue bound of the model deployment."""
    return dict(
        ray_actor_options={"num_gpus": cfg.replica_num_gpus, "num_cpus": cfg.num_cpus},
        autoscaling_config={
            "min_replicas": cfg.min_replicas,
            "initial_replicas": max(1, cfg.min_replicas),
            "max_replicas": cfg.max_replicas,
            "target_ongoing_requests": cfg.target_ongoing_requests,
        },
        health_check_period_s=cfg.health_check_period_s,
        max_constructor_retry_count=cfg.max_constructor_retries,
        max_ongoing_requests=cfg.max_ongoing_requests,
        max_queued_requests=cfg.max_queued_requests,
        # the queue bound is checked on the ingress's handle; the ingress answers a JSON 503
        # with Retry-After (this setting is what Serve's own proxy would send otherwise)
        backpressure_config={"status_code": 503, "retry_after_s": cfg.retry_after_s},
    )


def build(cfg: ServeConfig, api_key: str | None = None) -> serve.Application:
    """The bound app for a checked config; ``api_key`` overrides ``cfg.api_key``."""
    model = LivePhotoModel.options(**model_deployment_options(cfg)).bind(cfg)
    ingress = LivePhotoIngress.options(num_replicas=cfg.ingress_replicas)
    return ingress.bind(model, cfg, api_key or cfg.api_key or os.environ.get(API_KEY_ENV) or None)


def build_app(args: dict[str, Any]) -> serve.Application:
    """Serve's app builder: ``args`` are :class:`~serve.config.ServeConfig` fields (``model`` required)."""
    return build(serve_config(dict(args)))


app = build_app({"model": "mini"})
"""The shipped LivePhoto-mini with default settings, bound (nothing loads until Serve deploys it):
``serve run serve.app:app``, or ``serve build serve.app:app -o config.yaml`` to write a config to edit.
Other models: ``serve run serve/config.yaml`` (args of :func:`build_app`) or ``python -m serve``."""
