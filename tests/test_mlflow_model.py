"""The MLflow python_function model (model/mlflow_model.py): logged, registered, loaded with
MLflow's own tools, served by ``mlflow models serve`` over real HTTP, and loaded by Serve."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from model.load import pipeline_dir
from model.mlflow_model import encode_video, save_mlflow_model
from model.pipeline import LivePhotoPipeline
from model.media import read_video

STEPS = 2


def png_b64(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """A tiny pipeline logged as the final_model artifact of a run (as training does) and registered."""
    tmp = tmp_path_factory.mktemp("mlflow_model")
    pipe = LivePhotoPipeline.from_pretrained("tiny")
    pipe.save_pretrained(tmp / "pipeline")
    save_mlflow_model(tmp / "pipeline", tmp / "final_model")
    uri = f"sqlite:///{tmp}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    run = client.create_run(client.create_experiment("pyfunc", artifact_location=str(tmp / "artifacts")))
    client.log_artifacts(run.info.run_id, str(tmp / "final_model"), artifact_path="final_model")
    client.set_terminated(run.info.run_id)
    client.create_registered_model("livephoto-pyfunc")
    client.create_model_version("livephoto-pyfunc", f"{run.info.artifact_uri}/final_model", run_id=run.info.run_id)
    return {"uri": uri, "run_id": run.info.run_id, "pipe": pipe, "tmp": tmp}


def images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (80, 96, 3), dtype=np.uint8), np.full((64, 64, 3), 200, np.uint8)]


def expected_gifs(pipe: LivePhotoPipeline, prompts, levels) -> list[str]:
    """What the pipeline itself makes for the same requests, in one batch of the same size (a batch of
    one and the first row of a batch of two may differ in the last bit), encoded as the model encodes it."""
    pipe.set_progress_bar_config(disable=True)
    n = len(prompts)
    frames = pipe(images()[:n], prompts, intensity=levels, num_frames=8, height=64, width=64, num_inference_steps=STEPS,
                  seed=list(range(n))).frames
    return [encode_video(np.rint(v * 255).astype(np.uint8), 8, "gif") for v in frames]


def test_a_registered_version_loads_and_predicts_with_mlflow_tools(registered, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registered["uri"])
    model = mlflow.pyfunc.load_model("models:/livephoto-pyfunc/1")
    schema = model.metadata.get_input_schema()
    assert schema.input_names() == ["image", "prompt", "intensity"]
    assert {p.name for p in model.metadata.get_params_schema().params} >= {"num_inference_steps", "seed", "format"}
    prompts, levels = ["the flag waves", "camera zooms in"], [3, 9]
    table = pd.DataFrame({"image": [png_b64(im) for im in images()], "prompt": prompts, "intensity": levels})
    out = model.predict(table, params={"num_inference_steps": STEPS, "seed": 0})
    assert list(out.columns) == ["video", "format"] and list(out["format"]) == ["gif", "gif"]
    assert list(out["video"]) == expected_gifs(registered["pipe"], prompts, levels)
    path = registered["tmp"] / "out.gif"
    path.write_bytes(base64.b64decode(out["video"][0]))
    assert read_video(path).shape == (8, 64, 64, 3)


def test_bad_rows_name_the_field(registered, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registered["uri"])
    model = mlflow.pyfunc.load_model(f"runs:/{registered['run_id']}/final_model")
    good = png_b64(images()[1])
    with pytest.raises(ValueError, match=r"image \(row 1\): not a base64-encoded image"):
        model.predict(pd.DataFrame({"image": [good, "bm90IGFuIGltYWdl"], "prompt": ["a", "b"], "intensity": [1, 2]}))
    with pytest.raises(ValueError, match="intensity: must be an integer 1..10"):
        model.predict(pd.DataFrame({"image": [good], "prompt": ["a"], "intensity": [11]}))
    with pytest.raises(ValueError, match="format: got 'webm'"):
        model.predict(pd.DataFrame({"image": [good], "prompt": ["a"], "intensity": [1]}), params={"format": "webm"})


def test_serve_loads_the_mlflow_model(registered):
    from model.pipeline import LivePhotoPipeline

    assert pipeline_dir(registered["tmp"] / "final_model") == registered["tmp"] / "final_model" / "artifacts" / "pipeline"
    assert pipeline_dir(registered["tmp"] / "pipeline") == registered["tmp"] / "pipeline"
    pipe = LivePhotoPipeline.from_pretrained("models:/livephoto-pyfunc/1", tracking_uri=registered["uri"])
    assert pipe.cfg == registered["pipe"].cfg


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mlflow_models_serve_answers_over_http(registered):
    port = free_port()
    # as in an activated virtualenv: mlflow runs `uvicorn` from PATH
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    env = {**os.environ, "MLFLOW_TRACKING_URI": registered["uri"], "PATH": path}
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/livephoto-pyfunc/1", "--env-manager", "local",
           "--host", "127.0.0.1", "-p", str(port), "-w", "1"]
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    log = server.stdout.read().decode(errors="replace") if server.poll() is not None else "(still running)"
                    pytest.fail(f"mlflow models serve did not come up: {log[-2000:]}")
                time.sleep(0.5)
        body = {"dataframe_split": {"columns": ["image", "prompt", "intensity"],
                                    "data": [[png_b64(images()[0]), "the flag waves", 3]]},
                "params": {"num_inference_steps": STEPS, "seed": 0}}
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            answer = json.loads(response.read())
        rows = answer["predictions"]
        assert len(rows) == 1 and rows[0]["format"] == "gif"
        assert rows[0]["video"] == expected_gifs(registered["pipe"], ["the flag waves"], [3])[0]
    finally:
        os.killpg(server.pid, 15)  # the server's own process group (gunicorn/uvicorn and its worker)
        server.wait(timeout=30)
