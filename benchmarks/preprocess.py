"""Preprocessing throughput: the Ray Data pipeline vs each stage alone vs a naive loop.

    python benchmarks/preprocess.py [--data DIR] [--n 64] [--preset tiny] [--num-cpus 2]

Prints clips/s of
* the whole pipeline (pass 1: decode -> motion -> encoders -> Parquet; and end to end with
  pass 2: quantile levels, clips/errors split, summary),
* each stage alone, run by the same Ray Data code on inputs materialised in the object
  store beforehand (decode from the CSV rows; motion from decoded clips; encoders from
  scored clips),
* a naive single-process loop doing the same work the way AnimateDiff's WebVid loader
  does: per video open a VideoReader, get_batch the sampled frames, then label and embed
  that one clip (batch size 1),
* the same pipeline reading every video over HTTP from a local server (``--http``, on by
  default: the download path of ``contentUrl`` rows, timeouts and retries included),
and a projection of hours for WebVid-10M (10.7M clips) from the per-stage figures.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

from common.config import load
from pipelines.config import PRESETS, PreprocessConfig

ROOT = Path(__file__).resolve().parents[1]

WEBVID_CLIPS = 10_700_000


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def stage_rates(cfg: PreprocessConfig) -> dict[str, tuple[int, float]]:
    """(clips, seconds) for each stage alone, inputs materialised first."""

    from pipelines.preprocess import add_decode, add_encoders, add_motion, read_rows

    rows = read_rows(cfg).materialize()
    decoded, t_decode = timed(lambda: add_decode(rows, cfg).materialize())
    n = decoded.count()
    scored, t_motion = timed(lambda: add_motion(decoded, cfg).materialize())
    encoded, t_encode = timed(lambda: add_encoders(scored, cfg).materialize())
    with tempfile.TemporaryDirectory() as tmp:
        _, t_write = timed(lambda: encoded.write_parquet(tmp))
    return {"decode": (n, t_decode), "motion": (n, t_motion), "encoders": (n, t_encode), "write": (n, t_write)}


def http_csv(data: Path, base_url: str) -> Path:
    """A copy of the sample CSV whose contentUrls point at ``base_url`` (the data folder served over HTTP)."""
    import csv

    out = data / "videos_http.csv"
    with open(data / "videos.csv", newline="") as f_in, open(out, "w", newline="") as f_out:
        reader = csv.DictReader(f_in)
        writer = csv.DictWriter(f_out, fieldnames=reader.fieldnames)
        writer.writeheader()
        for row in reader:
            writer.writerow({**row, "contentUrl": f"{base_url}/videos/{row['page_dir']}/{row['videoid']}.mp4"})
    return out


def serve_folder(folder: Path):
    """A threaded HTTP server for ``folder`` on 127.0.0.1 (stopped with ``.shutdown()``)."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def naive_loop(cfg: PreprocessConfig) -> tuple[int, float]:
    """One process, one clip at a time: open, get_batch, crop, flow + SSIM, CLIP/VAE/DINOv2."""
    import pandas as pd

    from model.encoders import build_tokenizer, load_image_encoder, load_text_encoder, load_vae
    from pipelines.motion import score_clip_farneback
    from pipelines.preprocess import csv_folder
    from pipelines.dataset import embed_captions, encode_clip_arrays
    from pipelines.video import RowError, decode_row

    start, clips = time.perf_counter(), 0  # model loading counts, as it does in the pipeline
    tokenizer, text = build_tokenizer(cfg.model), load_text_encoder(cfg.model)
    vae, image = load_vae(cfg.model), load_image_encoder(cfg.model)
    rows = pd.read_csv(cfg.input.csv, dtype=str, keep_default_na=False).to_dict("records")
    for row in rows:
        try:
            decoded = decode_row(row, cfg.input, cfg.clip, csv_folder(cfg))
        except RowError:
            continue
        for clip in decoded:
            score_clip_farneback(clip["frames"], cfg.flow.max_side)
            embed_captions(tokenizer, text, [row["name"]])
            encode_clip_arrays(vae, image, [clip["frames"]], cfg.model.image_encoder_size)
            clips += 1
    return clips, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="runs/bench/sample_data", help="sample data folder (made if missing)")
    parser.add_argument("--n", type=int, default=256, help="synthetic clips when making the sample data")
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    parser.add_argument("--clips-per-video", type=int, default=4, help="clips taken from each video (more clips: start-up amortised)")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    parser.add_argument("--node-cpus", type=int, default=32, help="CPUs of the GPU node the projection assumes")
    parser.add_argument("--http", action=argparse.BooleanOptionalAction, default=True,
                        help="also run the pipeline with every video fetched over HTTP from 127.0.0.1")
    args = parser.parse_args(argv)

    import ray

    from pipelines.preprocess import run
    from sample_data import generate

    data = (ROOT / args.data) if not Path(args.data).is_absolute() else Path(args.data)
    if not (data / "videos.csv").exists():
        generate(data, n=args.n, seed=0, include_real=True, progress=False)
    out = Path(tempfile.mkdtemp(prefix="lp-bench-")) / "dataset"
    cfg = load(
        PreprocessConfig, presets=PRESETS, preset=args.preset,
        overrides={"input.csv": str(data / "videos.csv"), "input.video_root": str(data / "videos"), "output.dir": str(out),
                   "clip.clips_per_video": args.clips_per_video},
    )
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False

    run(cfg)  # warm-up: actor start-up, imports, page cache
    cfg.output.overwrite = True
    summary = run(cfg)
    http_summary = None
    if args.http:
        httpd = serve_folder(data)
        try:
            url = f"http://127.0.0.1:{httpd.server_address[1]}"
            http_cfg = load(PreprocessConfig, presets=PRESETS, preset=args.preset, overrides={
                "input.csv": str(http_csv(data, url)), "input.video_root": None, "output.dir": str(out.with_name("http")),
                "clip.clips_per_video": args.clips_per_video, "output.overwrite": True,
            })
            http_summary = run(http_cfg)
        finally:
            httpd.shutdown()
        assert http_summary["clips_out"] == summary["clips_out"], (http_summary["errors"], summary["errors"])
    stages = stage_rates(cfg)
    naive = naive_loop(cfg)
    ray.shutdown()

    rate = {name: n / s for name, (n, s) in stages.items()}
    pass1 = summary["clips_out"] / summary["pass1_s"]
    whole = summary["clips_out"] / summary["elapsed_s"]
    slowest = min(("decode", "motion", "encoders"), key=lambda k: rate[k])
    naive_rate = naive[0] / naive[1]
    rows = [
        ("pipeline, pass 1 (decode -> motion -> encoders -> parquet)", summary["clips_out"], summary["pass1_s"], pass1),
        ("pipeline, end to end (+ levels, split, summary)", summary["clips_out"], summary["elapsed_s"], whole),
        *([("pipeline, pass 1, every video over HTTP (127.0.0.1)", http_summary["clips_out"], http_summary["pass1_s"],
            http_summary["clips_out"] / http_summary["pass1_s"])] if http_summary else []),
        *[(f"stage alone: {k}", n, s, n / s) for k, (n, s) in stages.items()],
        ("naive single-process loop (AnimateDiff-style)", naive[0], naive[1], naive_rate),
    ]
    print(f"\npreset={args.preset}  data={data}  clips/video={args.clips_per_video}  ray num_cpus={args.num_cpus}  machine={platform.machine()}")
    print(f"{'what':62} {'clips':>6} {'seconds':>8} {'clips/s':>8}")
    for name, n, s, r in rows:
        print(f"{name:62} {n:6d} {s:8.2f} {r:8.2f}")
    print(f"\npipeline pass 1 / slowest stage alone ({slowest}): {pass1 / rate[slowest]:.2f}  (target >= 0.85)")
    print(f"pipeline pass 1 / naive loop:                 {pass1 / naive_rate:.2f}  (target >= 1.5)")
    print(f"\nWebVid-10M projection ({WEBVID_CLIPS:,} clips), linear in CPUs from {args.num_cpus} to {args.node_cpus}:")
    for k in ("decode", "motion", "encoders"):
        hours = WEBVID_CLIPS / (rate[k] * args.node_cpus / args.num_cpus) / 3600
        print(f"  {k:9} {hours:10.1f} h per {args.node_cpus}-CPU node (this preset, on CPU)")
    if http_summary:
        http_rate = http_summary["clips_out"] / http_summary["pass1_s"]
        print(f"pipeline pass 1, HTTP / local files:           {http_rate / pass1:.2f}")
    print(json.dumps({"pass1_clips_per_s": pass1, "stage_clips_per_s": rate, "naive_clips_per_s": naive_rate,
                      "http_pass1_clips_per_s": http_summary and http_summary["clips_out"] / http_summary["pass1_s"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
