"""The README's main command: the whole system end to end on this machine.

1. starts a private local Ray head (common.raylocal.LocalRayHead; stopped at the end),
2. writes the sample WebVid-style dataset (sample_data),
3. submits the preprocessing job with ``ray job submit --working-dir .``,
4. submits the training job (tiny preset) on that dataset, tracked in a sqlite MLflow store,
5. serves the trained model with Ray Serve on 127.0.0.1, sends one animation request over
   HTTP and saves the video (plumbing: the tiny preset's random VAE makes noise),
6. serves the shipped LivePhoto-mini (``models/livephoto-mini``) and animates a real photo it
   never trained on under two opposite prompts over HTTP; saves both GIFs and a side-by-side
   strip and prints the direction each one measurably moves,
7. prints where the dataset, the checkpoints, the MLflow run, the model and the videos are
   (``--keep-serving`` keeps the mini server up until Ctrl-C).

    python scripts/demo.py [--out runs/demo] [--n 64] [--steps 60] [--port 8000] [--keep-serving]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from common.raylocal import LocalRayHead


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def submit(head: LocalRayHead, job_args: list[str]) -> None:
    """``ray job submit`` (waits for the job and streams its logs); raises if it fails."""
    cmd = ["ray", "job", "submit", "--address", head.dashboard_url, "--working-dir", str(ROOT), "--", "python", *job_args]
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, env=head.child_env(), cwd=ROOT, check=True)


class Server:
    """``python -m serve --model MODEL`` on the head, stopped (SIGINT) when the block ends."""

    def __init__(self, head: LocalRayHead, model: str, port: int):
        self.cmd = [sys.executable, "-m", "serve", "--model", model, "--port", str(port), "--host", "127.0.0.1"]
        self.head, self.port = head, port

    def __enter__(self) -> "Server":
        print("$ " + " ".join(self.cmd), flush=True)
        self.proc = subprocess.Popen(self.cmd, env=self.head.child_env(), cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        for line in self.proc.stdout:  # wait for "LivePhoto is serving ..."
            print(line, end="", flush=True)
            if "LivePhoto is serving" in line:
                return self
        raise RuntimeError(f"the server exited with code {self.proc.wait()} before it was ready")

    def animate(self, image_png: bytes, prompt: str, target: Path, **fields: str) -> Path:
        import requests

        answer = requests.post(
            f"http://127.0.0.1:{self.port}/v1/animate",
            files={"image": ("photo.png", image_png, "image/png")},
            data={"prompt": prompt, "seed": "0", "format": "gif", **fields},
            timeout=600,
        )
        answer.raise_for_status()
        target.write_bytes(answer.content)
        print(f'POST /v1/animate "{prompt}" -> {answer.status_code}, {len(answer.content)} bytes, seed '
              f"{answer.headers.get('X-Seed')} -> {target}", flush=True)
        return target

    def wait(self) -> None:
        print(f"Page: http://127.0.0.1:{self.port}/ -- serving until Ctrl-C ...", flush=True)
        try:
            self.proc.wait()
        except KeyboardInterrupt:
            pass

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def png(array) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def plumbing_photo(data: Path) -> bytes:
    """A first frame of the sample data as "the photo" for the tiny model."""
    import decord

    return png(decord.VideoReader(str(next((data / "videos").rglob("*.mp4"))))[0].asnumpy())


def mini_photo(size: int = 32) -> tuple[bytes, str]:
    """A view of a real photo LivePhoto-mini never trained on (held out by the benchmark)."""
    import numpy as np

    import sample_data

    name = "chelsea"
    image, content = sample_data.load_photos()[name]
    view = sample_data.random_view(image, size, np.random.default_rng(7), (1.0, 1.2))
    return png(view), content


def measure(gif: Path) -> dict:
    """Direction and net speed of a generated GIF, with the evaluation's flow metric."""
    from evaluation.metrics import motion_stats
    from model.media import read_video

    return motion_stats(read_video(gif), max_side=32, min_shift=0.1)


def strip(gifs: list[Path], target: Path, scale: int = 4) -> Path:
    """One row of frames per GIF, upscaled ``scale`` times (nearest), as a PNG."""
    import numpy as np
    from PIL import Image

    from model.media import read_video

    rows = [np.concatenate(list(read_video(g)), axis=1) for g in gifs]
    grid = np.concatenate(rows, axis=0)
    Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST).save(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/demo", help="folder for everything the demo writes")
    parser.add_argument("--n", type=int, default=64, help="synthetic sample clips")
    parser.add_argument("--steps", type=int, default=60, help="training steps")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port of the server")
    parser.add_argument("--keep-serving", action="store_true", help="keep the server up until Ctrl-C")
    args = parser.parse_args(argv)
    out = (ROOT / args.out).resolve() if not os.path.isabs(args.out) else Path(args.out)
    data, dataset, train = out / "sample_data", out / "dataset", out / "train"

    step(f"sample data -> {data}")
    subprocess.run([sys.executable, "-m", "sample_data", "--out", str(data), "--n", str(args.n), "--overwrite"], cwd=ROOT, check=True)

    step("starting a local Ray head")
    with LocalRayHead() as head:
        print(f"Ray dashboard: {head.dashboard_url}", flush=True)
        step("preprocessing job (ray job submit)")
        submit(head, [
            "jobs/preprocess.py", "--preset", "tiny",
            "--input.csv", str(data / "videos.csv"), "--input.video_root", str(data / "videos"),
            "--output.dir", str(dataset), "--output.overwrite", "true",
        ])
        step("training job (ray job submit)")
        if train.exists():
            shutil.rmtree(train)  # the demo always starts a fresh run
        submit(head, [
            "jobs/train.py", "--preset", "tiny", "--data.dir", str(dataset), "--output.dir", str(train),
            "--train.steps", str(args.steps), "--samples.every", str(max(1, args.steps // 2)),
            "--train.val_every", str(max(1, args.steps // 2)), "--checkpoint.every", str(max(1, args.steps // 2)),
        ])
        step("serving the model just trained (python -m serve) and animating one photo over HTTP")
        with Server(head, str(train / "final_model"), args.port) as server:
            video = server.animate(plumbing_photo(data), "the camera pans left", out / "animation.gif",
                                   intensity="7", num_inference_steps="10")
        step("serving the shipped LivePhoto-mini (models/livephoto-mini) and animating a photo it never saw")
        photo, content = mini_photo()
        (out / "mini_photo.png").write_bytes(photo)
        prompts = {"left": f"{content}, the scene drifts to the left", "right": f"{content}, the scene drifts to the right"}
        with Server(head, "mini", args.port) as server:
            # mini's sampler settings, chosen on its training photos (docs/BENCHMARKS.md)
            gifs = {d: server.animate(photo, p, out / f"mini_{d}.gif", intensity="8", num_inference_steps="4",
                                      guidance_scale="3", guidance_stop="0.5") for d, p in prompts.items()}
            if args.keep_serving:
                server.wait()
    step("stopped the local Ray head")

    summary = json.loads((dataset / "summary.json").read_text())
    print(f"\nDataset: {dataset}")
    print(f"  clips:   {dataset / 'clips'} ({summary['clips_out']} clips from {summary['rows_ok']} videos)")
    print(f"  errors:  {dataset / 'errors'} ({summary['rows_error']} rows: {summary['errors']})")
    print(f"  summary: {dataset / 'summary.json'}  histogram: {dataset / 'intensity_hist.png'}")
    print(f"  rows_in={summary['rows_in']} accounted={summary['rows_accounted']} elapsed={summary['elapsed_s']} s")
    print(f"\nTraining run: {train}")
    print(f"  checkpoints: {train / 'checkpoints'}")
    print(f"  model:       {train / 'final_model'}  (python -m model.animate --model {train / 'final_model'} --image photo.jpg --prompt ... --out out.mp4)")
    print(f"  MLflow:      mlflow ui --backend-store-uri sqlite:///{train / 'mlflow.db'}")
    print(f"\nAnimation over HTTP by the model just trained: {video}  (the tiny preset's VAE is random: it is noise)")
    print(f"\nLivePhoto-mini on a photo it never saw ({out / 'mini_photo.png'}):")
    for direction, gif in gifs.items():
        m = measure(gif)
        print(f'  "{prompts[direction]}" -> {gif}: measured {m["direction"]} (dx {m["dx"]:+.2f}, dy {m["dy"]:+.2f} px/frame)')
    print(f"  side by side: {strip(list(gifs.values()), out / 'mini_strip.png')}")
    print(f"Page: python -m serve --model mini --port {args.port}, then http://127.0.0.1:{args.port}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
