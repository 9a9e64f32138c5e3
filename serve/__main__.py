"""Run the Serve app locally (scripts, CI, trying it out):

    python -m serve --model tiny --port 8000
    python -m serve --model runs/demo/train/final_model --max_batch_size 4
    python -m serve --config serve/config.yaml --model runs:/<run_id>/final_model --mlflow_tracking_uri http://...
    python -m serve --model runs/sd15/final_model --model.base_model /data/stable-diffusion-v1-5 --model.local_files_only true

Starts a private Ray instance and Serve on ``--host`` (127.0.0.1) ``--port``, prints the URL
once the app answers, and blocks; SIGINT / SIGTERM shut Serve and Ray down and exit 0.
``--config`` takes a Serve config YAML (the ``args`` of its first application) or a plain
mapping of settings; every other ``--key VALUE`` is a :class:`~serve.config.ServeConfig` field.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Sequence

import yaml

from common.config import ConfigError, check, deep_merge, from_dict, overrides_to_dict, parse_argv, usage
from serve.config import ServeConfig

APP_NAME = "livephoto"


def parse(argv: Sequence[str]) -> tuple[ServeConfig, str, int]:
    """``argv`` -> (config, host, port)."""
    config_file, preset, overrides, wants_help = parse_argv(argv)
    if wants_help:
        print(usage(ServeConfig, None, "python -m serve") + "\n  --host                       \"127.0.0.1\"  address to listen on\n  --port                       8000  HTTP port")
        raise SystemExit(0)
    check(preset is None, "preset", "use --model mini|tiny|sd15|PATH|URI")
    host = str(overrides.pop("host", "127.0.0.1"))
    port = overrides.pop("port", 8000)
    check(isinstance(port, int) and 0 < port < 65536, "port", f"must be 1..65535, got {port!r}")
    args: dict[str, Any] = {}
    if config_file is not None:
        path = Path(config_file)
        check(path.is_file(), "config", f"no such file {config_file!r}")
        data = yaml.safe_load(path.read_text()) or {}
        if isinstance(data, dict) and "applications" in data:
            args = dict((data["applications"] or [{}])[0].get("args") or {})
        else:
            check(isinstance(data, dict), "config", f"{config_file} must hold a mapping")
            args = data
    # --model.base_model DIR (the jobs' flag) is the sources section here: --model itself names the model
    overrides = {("sources." + k[len("model."):] if k.startswith("model.") else k): v for k, v in overrides.items()}
    cfg = from_dict(ServeConfig, deep_merge(args, overrides_to_dict(overrides)))
    check(cfg.model is not None, "model", "required: --model mini|tiny|sd15|PATH|runs:/...|models:/...")
    if cfg.num_gpus is None:  # a local machine without CUDA cannot place a 1-GPU replica
        import torch

        if not torch.cuda.is_available():
            cfg.num_gpus = 0.0
    return cfg, host, port


def wait_ready(url: str, timeout_s: float = 600.0) -> None:
    """Until ``GET {url}/healthz`` answers (serve.run has already waited for the model), or TimeoutError."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout_s:g} s")


def deployment_errors(app_name: str = APP_NAME) -> str:
    """What Serve recorded about the app's failing deployments (their replicas' exceptions), or ''."""
    from ray import serve

    try:
        app = serve.status().applications.get(app_name)
    except Exception:  # noqa: BLE001 - the controller itself may be gone; nothing more to say
        return ""
    if app is None:
        return ""
    failing = [(name, d.message.strip()) for name, d in app.deployments.items() if d.status != "HEALTHY" and d.message]
    return "\n".join(f"deployment {name}: {message}" for name, message in failing)


def main(argv: Sequence[str]) -> int:
    try:
        cfg, host, port = parse(argv)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    import ray
    from ray import serve

    from serve.app import build

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    ray.init(include_dashboard=False, configure_logging=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(build(cfg), name=APP_NAME, route_prefix="/", blocking=False)  # returns when replicas are up
        url = f"http://{host}:{port}"
        wait_ready(url)
        print(f"LivePhoto is serving {cfg.model} at {url}  (page {url}/, API docs {url}/docs); Ctrl-C stops it", flush=True)
        while not stop.wait(1.0):
            pass
        print("shutting down", flush=True)
    except Exception as exc:  # noqa: BLE001 - e.g. the model replica could not load its weights
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        detail = deployment_errors()
        if detail:  # the replica's own exception, which Serve otherwise leaves in a log file
            print(detail, file=sys.stderr)
        return 1
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
