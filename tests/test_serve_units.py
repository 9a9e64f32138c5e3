"""Serve's parts without a Ray cluster: the config, the HTTP API over a fake model (timeouts,
back pressure, body limits), the model sources (preset, save_pretrained folder, training
checkpoint, MLflow runs:/ and models:/) and request grouping in animate_batch."""

from __future__ import annotations

import asyncio
import io
import json
from dataclasses import asdict

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from common.config import ConfigError
from serve.api import Backend, create_app
from serve.app import build_app, model_deployment_options
from serve.config import ServeConfig, serve_config
from model.pipeline import LivePhotoPipeline
from serve.model import animate_batch
from serve.model import AnimateRequest, AnimateResult

INFO = {"model": "tiny", "source": "preset", "resolution": 64, "num_frames": 4, "max_frames": 32, "intensity_levels": 10}


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((40, 60, 3), 128, np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


# --------------------------------------------------------------------------- config


def test_config_checks_fields_loudly():
    cfg = serve_config({"model": "tiny", "max_batch_size": 4})
    assert cfg.replica_num_gpus == 0 and serve_config({"model": "sd15"}).replica_num_gpus == 1
    with pytest.raises(ConfigError, match="unknown setting batch_size"):
        serve_config({"model": "tiny", "batch_size": 4})
    with pytest.raises(ConfigError, match="^model: required"):
        serve_config({})
    with pytest.raises(ConfigError, match="^max_replicas:"):
        serve_config({"model": "tiny", "min_replicas": 3, "max_replicas": 2})
    with pytest.raises(ConfigError, match="^dtype:"):
        serve_config({"model": "tiny", "device": "cpu", "dtype": "float16"})
    with pytest.raises(ConfigError, match="^max_queued_requests:"):
        serve_config({"model": "tiny", "max_queued_requests": -5})
    opts = model_deployment_options(serve_config({"model": "sd15", "max_replicas": 4, "max_queued_requests": 7}))
    assert opts["ray_actor_options"]["num_gpus"] == 1 and opts["autoscaling_config"]["max_replicas"] == 4
    assert opts["max_queued_requests"] == 7 and opts["backpressure_config"]["retry_after_s"] == 5
    assert opts["max_constructor_retry_count"] == 3
    with pytest.raises(ConfigError, match="^max_constructor_retries:"):
        serve_config({"model": "tiny", "max_constructor_retries": 0})
    with pytest.raises(ConfigError, match="^default_guidance_interval:"):
        serve_config({"model": "tiny", "default_guidance_interval": [0.5, 0.2]})


def test_config_yaml_builds_an_app():
    import yaml

    data = yaml.safe_load(open("serve/config.yaml"))
    app = data["applications"][0]
    assert app["import_path"] == "serve.app:build_app"
    serve_config(app["args"])  # every key is a ServeConfig field
    assert build_app({**app["args"], "model": "tiny", "num_gpus": 0, "dtype": "float32"}) is not None


def test_main_parses_flags_and_serve_config_yaml():
    from serve.__main__ import parse

    cfg, host, port = parse(["--model", "tiny", "--port", "8123", "--max_batch_size", "2"])
    assert (cfg.model, cfg.max_batch_size, host, port) == ("tiny", 2, "127.0.0.1", 8123)
    cfg, _, _ = parse(["--config", "serve/config.yaml", "--model", "tiny", "--dtype", "float32"])
    assert cfg.max_replicas == 4 and cfg.model == "tiny"
    # the jobs' --model.<source> flags set where the model's pretrained parts come from
    cfg, _, _ = parse(["--model", "mini", "--model.text_encoder", "/models/minilm", "--model.local_files_only", "true"])
    assert cfg.model == "mini" and cfg.sources.overrides() == {"text_encoder": "/models/minilm", "local_files_only": True}
    with pytest.raises(ConfigError, match="unknown setting sources.vae"):
        parse(["--model", "mini", "--model.vae", "x"])
    with pytest.raises(ConfigError, match="^model: required"):
        parse(["--port", "8000"])
    with pytest.raises(ConfigError, match="^port:"):
        parse(["--model", "tiny", "--port", "http"])


# --------------------------------------------------------------------------- the API over a fake model


def _client(behaviour, **cfg) -> TestClient:
    async def animate(req: AnimateRequest) -> AnimateResult:
        return await behaviour(req)

    async def describe():
        return dict(INFO, batch_sizes={})

    config = ServeConfig(model="tiny", **cfg)
    return TestClient(create_app(config, Backend(animate, describe), api_key=config.api_key))


def _post(client: TestClient, **fields):
    return client.post("/v1/animate", data={"prompt": "the sea", **fields}, files={"image": ("p.jpg", _jpeg(), "image/jpeg")})


def test_request_reaches_the_model_checked_and_preprocessed():
    seen = []

    async def ok(req):
        seen.append(req)
        return AnimateResult(np.zeros((req.num_frames, 64, 64, 3), np.uint8), 0.5, 1)

    r = _post(_client(ok), intensity="9", seed="7", guidance_scale="2", format="gif")
    assert r.status_code == 200 and r.headers["content-type"] == "image/gif" and r.headers["x-seed"] == "7"
    r = _post(_client(ok), guidance_stop="0.5")
    assert r.status_code == 200
    req, half = seen
    assert req.image.shape == (64, 64, 3) and req.image.dtype == np.uint8  # centre-cropped + resized
    assert (req.intensity, req.seed, req.guidance_scale, req.num_frames, req.negative_prompt) == (9, 7, 2.0, 4, "")
    assert req.guidance_interval == (0.0, 1.0) and half.guidance_interval == (0.0, 0.5)  # the server's default, then the request's


def test_timeout_is_504_and_back_pressure_is_503_with_retry_after():
    from ray.serve.exceptions import BackPressureError

    async def slow(req):
        await asyncio.sleep(5)

    async def full(req):
        raise BackPressureError(num_queued_requests=3, max_queued_requests=2)

    async def pipeline_error(req):
        raise ValueError("num_frames: must be 1..8 (the motion modules' maximum), got 9")

    r = _post(_client(slow, request_timeout_s=0.2))
    assert r.status_code == 504 and r.json()["detail"].startswith("request:")
    r = _post(_client(full, retry_after_s=3))
    assert r.status_code == 503 and r.headers["retry-after"] == "3" and r.json()["detail"].startswith("model:")
    r = _post(_client(pipeline_error))
    assert r.status_code == 422 and r.json()["detail"].startswith("num_frames:")


def test_an_unexpected_model_error_is_a_json_500_and_healthz_reports_readiness():
    async def broken(req):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    r = _post(_client(broken))
    assert r.status_code == 500 and r.json()["detail"] == "model: RuntimeError: CUDA error: an illegal memory access was encountered"

    async def describe():
        return dict(INFO, batch_sizes={})

    def client(ready) -> TestClient:
        return TestClient(create_app(ServeConfig(model="tiny", retry_after_s=2, health_timeout_s=0.2), Backend(broken, describe, ready)))

    async def yes():
        return True

    async def no():
        return False

    async def slow():
        await asyncio.sleep(5)

    async def gone():
        from ray.serve.exceptions import DeploymentUnavailableError

        raise DeploymentUnavailableError("LivePhotoModel")

    assert client(yes).get("/healthz").json() == {"status": "ok", "model": "ready"}
    assert client(slow).get("/healthz").json() == {"status": "ok", "model": "busy"}
    for ready in (no, gone):
        r = client(ready).get("/healthz")
        assert r.status_code == 503 and r.json()["status"] == "unavailable" and r.headers["retry-after"] == "2"
    assert client(no).get("/livez").json() == {"status": "ok"}


def test_model_replica_health_follows_whether_the_pipeline_runs():
    """The deployment's class outside Serve: healthy after its start-up probe; a request that
    fails with more than a client error makes check_health probe again; a pipeline that really
    cannot run (its UNet's input conv emptied) leaves the replica unhealthy."""
    import torch

    from serve.model import LivePhotoModel

    replica = LivePhotoModel.func_or_class(ServeConfig(model="tiny"))

    async def scenario():
        assert await replica.ready()
        await replica.check_health()
        request = AnimateRequest(np.full((64, 64, 3), 90, np.uint8), "the sea", 5, "", 2, 1, 1.0, 0)
        assert (await replica.run([request]))[0].frames.shape == (2, 64, 64, 3)
        await replica.check_health()
        bad_input = AnimateRequest(np.full((64, 64, 3), 90, np.uint8), "the sea", 5, "", 99, 1, 1.0, 0)
        assert isinstance((await replica.run([bad_input]))[0], ValueError) and not replica.suspect  # a client error
        replica.pipe.model.unet.conv_in.weight.data = torch.empty(0)
        assert isinstance((await replica.run([request]))[0], RuntimeError)
        assert replica.suspect
        with pytest.raises(RuntimeError, match="the pipeline cannot run: RuntimeError"):
            await replica.check_health()
        assert not await replica.ready()

    asyncio.run(scenario())


def test_chunked_body_over_the_limit_is_413():
    async def never(req):
        raise AssertionError("must not be called")

    client = _client(never, max_image_bytes=2048)

    def chunks():
        for _ in range(100):
            yield b"x" * 1024

    r = client.post("/v1/animate", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413 and r.json()["detail"].startswith("request:")


# --------------------------------------------------------------------------- model sources and batching


@pytest.fixture(scope="module")
def tiny():
    pipe = LivePhotoPipeline.from_pretrained("tiny")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _requests(n: int, **kw) -> list[AnimateRequest]:
    img = np.tile(np.arange(0, 256, 4, dtype=np.uint8)[None, :, None], (64, 1, 3))
    base = dict(prompt="the sea", intensity=5, negative_prompt="", num_frames=4, num_inference_steps=2, guidance_scale=2.0)
    return [AnimateRequest(image=img, **{**base, "seed": i, **kw}) for i in range(n)]


def test_animate_batch_groups_requests_that_can_share_a_forward(tiny):
    reqs = _requests(3) + _requests(1, num_frames=6) + _requests(1, prompt="   ")  # the last one fails its check
    out = animate_batch(tiny, reqs)
    assert isinstance(out[4], ValueError) and str(out[4]).startswith("prompt:")
    assert [r.batch_size for r in out[:4]] == [1, 1, 1, 1]  # the bad request's group fell back to one by one
    out = animate_batch(tiny, reqs[:4] + _requests(1, guidance_interval=(0.0, 0.5)))
    assert [r.batch_size for r in out] == [3, 3, 3, 1, 1]  # another guidance interval is another forward
    assert [r.frames.shape for r in out[:4]] == [(4, 64, 64, 3)] * 3 + [(6, 64, 64, 3)]
    assert out[0].frames.dtype == np.uint8
    alone = animate_batch(tiny, _requests(1))[0]
    assert np.abs(alone.frames.astype(int) - out[0].frames.astype(int)).max() <= 1  # batching does not change the video


def test_model_sources_folder_checkpoint_and_mlflow(tiny, tmp_path):
    import mlflow
    from mlflow.tracking import MlflowClient
    from safetensors.torch import save_file

    reqs = _requests(1)
    expected = animate_batch(tiny, reqs)[0].frames
    # a save_pretrained folder
    folder = tmp_path / "final_model"
    tiny.save_pretrained(folder)
    assert np.array_equal(animate_batch(LivePhotoPipeline.from_pretrained(str(folder)), reqs)[0].frames, expected)
    # a training checkpoint: trainable.safetensors + state.json with the ModelConfig
    ckpt = tmp_path / "checkpoint_000010"
    ckpt.mkdir()
    save_file({k: v.contiguous() for k, v in tiny.model.trainable_state_dict().items()}, ckpt / "trainable.safetensors")
    (ckpt / "state.json").write_text(json.dumps({"model": asdict(tiny.cfg), "state": {}}, default=list))
    assert np.array_equal(animate_batch(LivePhotoPipeline.from_pretrained(str(ckpt)), reqs)[0].frames, expected)
    # MLflow: runs:/<id>/final_model and models:/<name>/<version>
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("serve-test", artifact_location=str(tmp_path / "artifacts"))
    run = client.create_run(exp)
    client.log_artifacts(run.info.run_id, str(folder), artifact_path="final_model")
    client.set_terminated(run.info.run_id)
    pipe = LivePhotoPipeline.from_pretrained(f"runs:/{run.info.run_id}/final_model", tracking_uri=uri)
    assert np.array_equal(animate_batch(pipe, reqs)[0].frames, expected)
    client.create_registered_model("livephoto-test")
    version = client.create_model_version("livephoto-test", f"{run.info.artifact_uri}/final_model", run_id=run.info.run_id)
    pipe = LivePhotoPipeline.from_pretrained(f"models:/livephoto-test/{version.version}", tracking_uri=uri)
    assert np.array_equal(animate_batch(pipe, reqs)[0].frames, expected)
    assert mlflow.get_tracking_uri() != uri  # no global MLflow state changed
    # what is not a model is a config error naming the field
    with pytest.raises(ConfigError, match="^model:"):
        LivePhotoPipeline.from_pretrained(str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="^model:"):
        LivePhotoPipeline.from_pretrained(f"runs:/{'0' * 32}/final_model", tracking_uri=uri)
