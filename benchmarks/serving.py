"""Serving benchmark (tiny model, CPU by default): HTTP overhead and what batching buys.

    python benchmarks/serving.py [--frames 8] [--steps 4] [--requests 32] [--clients 8] [--cpus 2]

1. latency: one client, sequential requests: POST /v1/animate end to end (decode, queue,
   batch wait, forward, encode, HTTP) vs a direct ``LivePhotoPipeline`` call + ``export_video``
   in this process, same threads. Target: HTTP / direct <= 1.10.
2. throughput: ``--clients`` concurrent clients, ``--requests`` requests, with
   ``max_batch_size=clients`` vs ``max_batch_size=1``, alternating rounds, best of each.
   Target: batched / unbatched >= 1.5.

Starts its own local Ray (``--cpus`` CPUs; the model replica gets all of them) and Serve on a
free port on 127.0.0.1, and shuts both down at the end.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import io
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _photo() -> bytes:
    from PIL import Image

    y, x = np.mgrid[0:96, 0:128]
    img = np.stack([x * 2, y * 2, (x + y) % 255], axis=-1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def direct_call(args, photo: bytes):
    """A function running one direct request: pipeline call + export_video, like the server."""
    import torch
    from PIL import Image

    from model.pipeline import LivePhotoPipeline
    from model.media import export_video

    torch.set_num_threads(args.cpus)
    pipe = LivePhotoPipeline.from_pretrained("tiny")
    pipe.set_progress_bar_config(disable=True)
    res = pipe.cfg.resolution
    tmp = tempfile.mkdtemp(prefix="bench-serve-")

    def call(seed: int) -> None:
        out = pipe(Image.open(io.BytesIO(photo)), "the sea moves", intensity=5, num_frames=args.frames, height=res, width=res,
                   num_inference_steps=args.steps, guidance_scale=7.5, seed=seed)
        export_video(out.frames[0], Path(tmp) / "v.mp4", fps=8)

    return call


def post(url: str, photo: bytes, args, seed: int):
    import httpx

    data = {"prompt": "the sea moves", "num_frames": str(args.frames), "num_inference_steps": str(args.steps), "seed": str(seed)}
    return httpx.post(f"{url}/v1/animate", data=data, files={"image": ("p.jpg", photo, "image/jpeg")}, timeout=600)


def deploy(url_port: int, max_batch_size: int, args) -> None:
    from ray import serve

    from serve.app import build
    from serve.config import ServeConfig

    cfg = ServeConfig(
        model="tiny", num_cpus=float(args.cpus), max_batch_size=max_batch_size, max_ongoing_requests=max(args.clients, 1),
        max_queued_requests=-1, batch_wait_timeout_s=args.batch_wait, request_timeout_s=600.0,
    )
    serve.run(build(cfg), name="bench", route_prefix="/")


def latencies(url: str, photo: bytes, direct, args) -> tuple[float, float]:
    """Median seconds of (direct call, HTTP request), measured alternately so that load from
    other processes on the machine hits both alike."""
    d, h = [], []
    for i in range(args.warmup + args.repeats):
        start = time.perf_counter()
        direct(i)
        mid = time.perf_counter()
        post(url, photo, args, i).raise_for_status()
        end = time.perf_counter()
        if i >= args.warmup:
            d.append(mid - start)
            h.append(end - mid)
    return statistics.median(d), statistics.median(h)


def throughput(url: str, photo: bytes, args) -> tuple[float, float]:
    """(requests per second, mean batch size seen in X-Batch-Size)."""
    for i in range(args.clients):  # warm-up round
        post(url, photo, args, i).raise_for_status()
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
        answers = list(pool.map(lambda i: post(url, photo, args, i), range(args.requests)))
    seconds = time.perf_counter() - start
    for r in answers:
        r.raise_for_status()
    return args.requests / seconds, float(np.mean([int(r.headers["x-batch-size"]) for r in answers]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--repeats", type=int, default=5, help="timed sequential requests for the latency rows")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--requests", type=int, default=32, help="requests of each throughput run")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2, help="alternating batched/unbatched throughput rounds (best of each is shown)")
    p.add_argument("--batch-wait", type=float, default=0.02, help="batch_wait_timeout_s of the app")
    args = p.parse_args(argv)

    import ray
    from ray import serve

    photo = _photo()
    ray.init(num_cpus=args.cpus, num_gpus=0, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        port = _free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        url = f"http://127.0.0.1:{port}"
        deploy(port, args.clients, args)
        direct, http = latencies(url, photo, direct_call(args, photo), args)
        runs: dict[int, list[tuple[float, float]]] = {args.clients: [], 1: []}
        for _ in range(args.rounds):  # alternate batched / unbatched; keep each one's best round
            for size in (args.clients, 1):
                deploy(port, size, args)
                runs[size].append(throughput(url, photo, args))
        (batched, batched_size), (unbatched, unbatched_size) = max(runs[args.clients]), max(runs[1])
    finally:
        serve.shutdown()
        ray.shutdown()

    print(f"\nLivePhoto serving benchmark: tiny model, CPU ({args.cpus} threads), {args.frames} frames, {args.steps} steps, mp4")
    print(f"{'measure':<52}{'value':>12}{'target':>12}")
    print(f"{'direct pipeline call + export_video, median s':<52}{direct:>12.3f}")
    print(f"{'HTTP POST /v1/animate, 1 client, median s':<52}{http:>12.3f}")
    print(f"{'  ratio HTTP / direct':<52}{http / direct:>12.2f}{'<= 1.10':>12}")
    print(f"{f'throughput, {args.clients} clients, batching on, req/s':<52}{batched:>12.2f}   (mean batch {batched_size:.1f})")
    print(f"{f'throughput, {args.clients} clients, max_batch_size=1, req/s':<52}{unbatched:>12.2f}   (mean batch {unbatched_size:.1f})")
    print(f"{'  ratio batched / unbatched':<52}{batched / unbatched:>12.2f}{'>= 1.5':>12}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
