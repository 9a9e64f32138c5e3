"""The training job on real Ray Train (CPU, gloo), real Parquet and real MLflow (sqlite)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from common.config import load
from training.config import PRESETS, TrainConfig
from pipelines.dataset import DatasetError
from training.checkpoint import CheckpointMismatchError
from training.run import find_checkpoints, run

QUIET = {"samples.every": 0, "train.val_every": 0, "checkpoint.every": 1000, "train.log_every": 1}


def train_config(data_dir: Path, out: Path, **overrides) -> TrainConfig:
    base = {"data.dir": str(data_dir), "output.dir": str(out), **QUIET}
    return load(TrainConfig, presets=PRESETS, preset="tiny", overrides={**base, **overrides})


def history(summary: dict, key: str) -> dict[int, float]:
    client = MlflowClient(tracking_uri=summary["tracking_uri"])
    return {m.step: m.value for m in client.get_metric_history(summary["run_id"], key)}


TRACKED = {"samples.every": 15, "train.val_every": 15, "checkpoint.every": 15, "optim.schedule_steps": 30,
           "train.text_path_every": 15}


@pytest.fixture(scope="module")
def tracked_run(first_run, tmp_path_factory):
    """One 30-step run shared by the tests below (a Ray Train run costs ~30 s to start here)."""
    data, _ = first_run
    out = tmp_path_factory.mktemp("tracked") / "run"
    return out, run(train_config(data, out, **TRACKED, **{"train.steps": 30}))


@pytest.mark.slow
def test_loss_falls_and_the_run_is_tracked(tracked_run):
    out, summary = tracked_run
    assert summary["step"] == 30
    loss = history(summary, "loss")
    assert sorted(loss) == list(range(1, 31))
    first, last = np.mean([loss[s] for s in range(1, 6)]), np.mean([loss[s] for s in range(26, 31)])
    assert last <= 0.5 * first, f"loss {first:.3f} -> {last:.3f}"
    client = MlflowClient(tracking_uri=summary["tracking_uri"])
    mlrun = client.get_run(summary["run_id"])
    assert mlrun.info.status == "FINISHED" and summary["tracking_uri"] == f"sqlite:///{out}/mlflow.db"
    assert mlrun.data.params["train.steps"] == "30" and mlrun.data.params["model.resolution"] == "64"
    assert {"lr", "grad_norm", "samples_per_s", "val_loss"} <= set(mlrun.data.metrics)
    assert sorted(history(summary, "val_loss")) == [15, 30]
    # the text path's health, probed every text_path_every steps (not at every logged step)
    for key in ("text_cond_gap", "text_token_weight"):
        assert sorted(history(summary, key)) == [15, 30], key
    assert 0 < mlrun.data.metrics["text_token_weight"] <= 1 and mlrun.data.metrics["text_cond_gap"] > 0
    samples = [a.path for a in client.list_artifacts(summary["run_id"], "samples/step_00000015")]
    assert len(samples) == 4 and all(p.endswith(".gif") for p in samples)  # 2 images x 2 prompts
    # the final model is logged as an MLflow python_function model around the save_pretrained folder
    logged = {a.path for a in client.list_artifacts(summary["run_id"], "final_model")}
    assert {"final_model/MLmodel", "final_model/artifacts"} <= logged
    import mlflow.pyfunc

    pyfunc = mlflow.pyfunc.load_model(f"{mlrun.info.artifact_uri}/final_model")
    assert pyfunc.metadata.get_input_schema().input_names() == ["image", "prompt", "intensity"]
    # the final model loads through the model's own loader and animates
    from model.pipeline import LivePhotoPipeline

    pipe = LivePhotoPipeline.from_pretrained(summary["final_model"])
    video = pipe(np.zeros((64, 64, 3), np.uint8), "the camera pans left", intensity=4, num_frames=8, height=64, width=64,
                 num_inference_steps=2, seed=0).frames
    assert video.shape == (1, 8, 64, 64, 3)
    assert [p.name for p in find_checkpoints(str(out))] == ["checkpoint_step_00000015", "checkpoint_step_00000030"]


@pytest.mark.slow
def test_resume_reproduces_the_uninterrupted_losses(first_run, tracked_run, tmp_path):
    """A run stopped at its step-15 checkpoint (the shared run's folder as it stood then: that
    checkpoint and the MLflow store) and resumed with ``resume: latest`` continues the same MLflow
    run and logs the uninterrupted run's losses for steps 16-20 (the same LR schedule through
    optim.schedule_steps: 30; five steps show it as well as fifteen, at a third of the cost)."""
    data, _ = first_run
    full_out, full = tracked_run
    (step15,) = [p for p in find_checkpoints(str(full_out)) if p.name == "checkpoint_step_00000015"]
    out = tmp_path / "b"
    shutil.copytree(step15, out / "checkpoints" / step15.parent.name / step15.name)
    shutil.copy(full_out / "mlflow.db", out / "mlflow.db")
    quiet = {**TRACKED, "samples.every": 0, "train.val_every": 0, "train.text_path_every": 0,  # none of these touch the training
             "mlflow.log_model": False}  # the copied run's artifacts live in the shared run's folder: leave them
    resumed = run(train_config(data, out, **quiet, **{"train.steps": 20, "resume": "latest"}))
    assert resumed["run_id"] == full["run_id"] and resumed["step"] == 20  # the same MLflow run continues
    assert resumed["tracking_uri"] == f"sqlite:///{out}/mlflow.db"
    client = MlflowClient(tracking_uri=resumed["tracking_uri"])
    assert client.get_run(resumed["run_id"]).data.tags["resumed"] == "true"
    logged: dict[int, list[float]] = {}
    for m in client.get_metric_history(resumed["run_id"], "loss"):
        logged.setdefault(m.step, []).append(m.value)
    assert [len(logged[s]) for s in range(1, 31)] == [1] * 15 + [2] * 5 + [1] * 10  # 16-20: the first run's and the resumed one's
    for s in range(16, 21):
        np.testing.assert_allclose(logged[s][0], logged[s][1], rtol=1e-4, err_msg=f"step {s}")


def test_bad_inputs_fail_at_start(ray_cluster, first_run, tmp_path):
    data, _ = first_run
    with pytest.raises(DatasetError, match="data.dir: no such folder"):
        run(train_config(tmp_path / "nope", tmp_path / "o1"))
    empty = tmp_path / "empty"
    (empty / "clips").mkdir(parents=True)
    shutil.copy(data / "dataset.json", empty / "dataset.json")
    with pytest.raises(DatasetError, match="has no clips"):
        run(train_config(empty, tmp_path / "o2"))
    with pytest.raises(DatasetError, match="caption embeddings are 32-wide but the model's text encoder is 64-wide"):
        run(train_config(data, tmp_path / "o3", **{"model.tiny.text_hidden_size": 64}))
    with pytest.raises(DatasetError, match="need at least 400"):
        run(train_config(data, tmp_path / "o4", **{"train.batch_size": 400}))
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "state.json").write_text(json.dumps({"state": {"step": 3}, "model": {"reweight_layers": 2}, "trainable": []}))
    with pytest.raises(CheckpointMismatchError, match="written for another model config"):
        run(train_config(data, tmp_path / "o5", resume=str(checkpoint)))
    assert not list((tmp_path / "o5").glob("*.db"))  # nothing was started
