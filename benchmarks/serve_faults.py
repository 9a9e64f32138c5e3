"""Serve under load and faults (tiny model, CPU): a soak with a queue cap, then a killed replica.

    python benchmarks/serve_faults.py [--requests 200] [--clients 8] [--cpus 2]

1. soak: ``--requests`` POST /v1/animate from ``--clients`` concurrent clients against one
   model replica with ``max_ongoing_requests=4`` and ``max_queued_requests=4``: every answer
   must be 200 or 503 (counted), and the replica's resident memory is sampled after each tenth
   of the requests (it should stay flat);
2. fault: one slow request in flight, the replica's process SIGKILLed: seconds until that
   client has its 503, seconds until ``/healthz`` says ``ready`` again, and the status of the
   next request.

Starts its own local Ray and Serve on a free port on 127.0.0.1 and shuts both down at the end.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import io
import os
import platform
import signal
import socket
import sys
import time
from collections import Counter

import numpy as np

AUTH = {"Authorization": "Bearer bench-key-0123456789"}


def _photo() -> bytes:
    from PIL import Image

    y, x = np.mgrid[0:72, 0:96]
    buf = io.BytesIO()
    Image.fromarray(np.stack([x * 2, y * 3, (x + y) % 255], axis=-1).astype(np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def replica_process(app: str):
    """The model replica: a descendant of this process, found by Ray's process title."""
    import psutil

    for proc in psutil.Process().children(recursive=True):
        try:
            if f"ServeReplica:{app}:LivePhotoModel" in " ".join(proc.cmdline()):
                return proc
        except psutil.Error:
            continue
    raise RuntimeError("no model replica process found")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--cpus", type=int, default=2)
    args = p.parse_args(argv)

    import httpx
    import ray
    from ray import serve

    from serve.app import build
    from serve.config import ServeConfig

    cfg = ServeConfig(model="tiny", num_cpus=1.0, max_batch_size=4, max_ongoing_requests=4, max_queued_requests=4,
                      retry_after_s=1, batch_wait_timeout_s=0.05, default_num_inference_steps=2, request_timeout_s=120.0,
                      api_key=AUTH["Authorization"].split()[1])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    photo = _photo()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build(cfg), name="bench-faults", route_prefix="/")
        proc = replica_process("bench-faults")

        def one(i: int, fields: dict | None = None) -> int:
            with httpx.Client(base_url=url, headers=AUTH, timeout=120) as c:
                data = {"prompt": "the flag waves", "num_frames": "4", "num_inference_steps": "2", "seed": str(i),
                        "format": "gif", **(fields or {})}
                return c.post("/v1/animate", data=data, files={"image": ("p.jpg", photo, "image/jpeg")}).status_code

        one(0)  # warm-up
        rss = [proc.memory_info().rss / 2**20]
        codes: Counter[int] = Counter()
        started = time.perf_counter()
        tenth = max(1, args.requests // 10)
        with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
            for chunk in range(0, args.requests, tenth):
                codes.update(pool.map(one, range(chunk, min(args.requests, chunk + tenth))))
                rss.append(proc.memory_info().rss / 2**20)
        soak_s = time.perf_counter() - started

        # fault: kill the replica under a slow request
        with httpx.Client(base_url=url, headers=AUTH, timeout=120) as c, concurrent.futures.ThreadPoolExecutor(1) as pool:
            slow = pool.submit(one, 1, {"num_frames": "8", "num_inference_steps": "40"})
            time.sleep(1.5)
            killed = time.perf_counter()
            os.kill(proc.pid, signal.SIGKILL)
            status = slow.result(timeout=120)
            to_503 = time.perf_counter() - killed
            while c.get("/healthz").json().get("model") != "ready":
                time.sleep(0.2)
            to_ready = time.perf_counter() - killed
            after = one(2)
    finally:
        serve.shutdown()
        ray.shutdown()

    print(f"\nmachine: {os.cpu_count()} CPUs, {platform.machine()}; tiny model, 4 frames, 2 steps; replica: "
          f"max_ongoing_requests={cfg.max_ongoing_requests}, max_queued_requests={cfg.max_queued_requests}")
    print(f"{'soak':32} {args.requests} requests, {args.clients} concurrent, {soak_s:.1f} s")
    print(f"{'  answers':32} " + ", ".join(f"{k}: {v}" for k, v in sorted(codes.items())))
    print(f"{'  replica RSS MiB (each tenth)':32} " + " ".join(f"{m:.0f}" for m in rss))
    print(f"{'  RSS growth, last - first tenth':32} {rss[-1] - rss[1]:+.1f} MiB")
    print(f"{'fault: SIGKILL mid-request':32} in-flight answer {status} after {to_503:.1f} s; "
          f"/healthz ready after {to_ready:.1f} s; next request {after}")
    ok = set(codes) <= {200, 503} and status == 503 and after == 200
    print("all answers 200 or 503, the killed request 503, the next 200:", "yes" if ok else "NO")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
