"""The README's main command: the whole system end to end on this machine.

1. starts a private local Ray head (common.raylocal.LocalRayHead; stopped at the end),
2. writes the sample WebVid-style dataset (pipelines.sample_data),
3. submits the preprocessing job with ``ray job submit --working-dir .``,
4. submits the training job (tiny preset) on that dataset, tracked in a sqlite MLflow store,
5. serves the trained model with Ray Serve on 127.0.0.1, sends one animation request over
   HTTP and saves the video,
6. prints where the dataset, the checkpoints, the MLflow run, the model and the video are, and
   the URL of the page (``--keep-serving`` keeps the server up until Ctrl-C).

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
sys.path.insert(0, str(ROOT))

from common.raylocal import LocalRayHead  # noqa: E402


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def submit(head: LocalRayHead, job_args: list[str]) -> None:
    """``ray job submit`` (waits for the job and streams its logs); raises if it fails."""
    cmd = ["ray", "job", "submit", "--address", head.dashboard_url, "--working-dir", str(ROOT), "--", "python", *job_args]
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, env=head.child_env(), cwd=ROOT, check=True)


def serve_and_animate(head: LocalRayHead, model: Path, data: Path, video: Path, port: int, keep: bool) -> Path:
    """Start ``python -m serve`` on the head, POST one photo to /v1/animate, save the GIF, stop the server."""
    import requests

    cmd = [sys.executable, "-m", "serve", "--model", str(model), "--port", str(port), "--host", "127.0.0.1"]
    print("$ " + " ".join(cmd), flush=True)
    server = subprocess.Popen(cmd, env=head.child_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in server.stdout:  # wait for "LivePhoto is serving ..."
            print(line, end="", flush=True)
            if "LivePhoto is serving" in line:
                break
        else:
            raise RuntimeError(f"the server exited with code {server.wait()} before it was ready")
        photo = next((data / "videos").rglob("*.mp4"))
        import decord
        from PIL import Image
        import io

        frame = decord.VideoReader(str(photo))[0].asnumpy()  # a first frame of the sample data as "the photo"
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="PNG")
        answer = requests.post(
            f"http://127.0.0.1:{port}/v1/animate",
            files={"image": ("photo.png", buf.getvalue(), "image/png")},
            data={"prompt": "the camera pans left", "intensity": "7", "seed": "0", "format": "gif", "num_inference_steps": "10"},
            timeout=600,
        )
        answer.raise_for_status()
        video.write_bytes(answer.content)
        print(f"POST /v1/animate -> {answer.status_code}, {len(answer.content)} bytes, seed {answer.headers.get('X-Seed')}", flush=True)
        print(f"Page: http://127.0.0.1:{port}/", flush=True)
        if keep:
            print("serving until Ctrl-C ...", flush=True)
            try:
                server.wait()
            except KeyboardInterrupt:
                pass
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
    return video


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
    subprocess.run([sys.executable, "-m", "pipelines.sample_data", "--out", str(data), "--n", str(args.n), "--overwrite"], cwd=ROOT, check=True)

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
        step("serving the trained model (python -m serve) and animating one photo over HTTP")
        video = serve_and_animate(head, train / "final_model", data, out / "animation.gif", args.port, args.keep_serving)
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
    print(f"\nAnimation over HTTP: {video}")
    print(f"Page: http://127.0.0.1:{args.port}/  (start it again with: python -m serve --model {train / 'final_model'} --port {args.port})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
