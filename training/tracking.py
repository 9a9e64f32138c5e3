"""MLflow tracking: the driver opens (or continues) the run, rank 0 logs into it.

Embedded default: ``sqlite:///<output.dir>/mlflow.db`` with artifacts in
``<output.dir>/mlartifacts`` (no server). On a cluster, ``mlflow.tracking_uri`` points at the
server that cluster.yaml starts on the head node.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from common.config import flatten
from training.config import TrainConfig


def tracking_uri(cfg: TrainConfig, out_dir: str) -> str:
    return cfg.mlflow.tracking_uri or f"sqlite:///{os.path.join(out_dir, 'mlflow.db')}"


def start_run(cfg: TrainConfig, out_dir: str, run_id: str | None = None) -> tuple[str, str]:
    """Create the MLflow run (params = the flattened config), or mark a resumed one running again.

    ``run_id`` is the run of the checkpoint resumed from. When this tracking store does not hold
    it (a checkpoint of another output folder or another tracking server), a new run starts,
    tagged ``resumed_from_run`` with that id."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(cfg, out_dir)
    client = MlflowClient(tracking_uri=uri)
    earlier = None
    if run_id is not None:
        try:
            client.get_run(run_id)
        except MlflowException:
            earlier = run_id
        else:
            client.update_run(run_id, status="RUNNING")
            client.set_tag(run_id, "resumed", "true")
            return uri, run_id
    experiment = client.get_experiment_by_name(cfg.mlflow.experiment)
    if experiment is None:
        artifacts = None if cfg.mlflow.tracking_uri else Path(out_dir, "mlartifacts").resolve().as_uri()
        experiment_id = client.create_experiment(cfg.mlflow.experiment, artifact_location=artifacts)
    else:
        experiment_id = experiment.experiment_id
    run = client.create_run(experiment_id, run_name=cfg.mlflow.run_name or Path(out_dir).name,
                            tags={"resumed_from_run": earlier} if earlier else None)
    from mlflow.entities import Param

    params = [Param(k, str(v)[:500]) for k, v in flatten(cfg).items()]
    for i in range(0, len(params), 100):
        client.log_batch(run.info.run_id, params=params[i : i + 100])
    return uri, run.info.run_id


def end_run(uri: str, run_id: str, ok: bool) -> None:
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=uri).set_terminated(run_id, "FINISHED" if ok else "FAILED")


class WorkerTracker:
    """Rank 0's logger: metrics, sample videos every ``samples.every`` steps, the final model."""

    def __init__(self, args: Any, components: Any):
        """``args``: the worker's :class:`~training.loop.WorkerArgs`."""
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=args.tracking_uri)
        self.run_id, self.output_dir = args.run_id, args.output_dir
        self.cfg, self.components = args.cfg, components
        refs = args.sample_references
        self.refs = [np.asarray(r, dtype=np.uint8) for r in refs.get("frames", [])]
        if "latents" in refs:  # no frames stored: the references are the VAE's view of the clips' first frames
            self.refs = [self._decode(np.asarray(z, dtype=np.float32)) for z in refs["latents"]]

    def _decode(self, latent: np.ndarray) -> np.ndarray:
        """A stored first-frame latent (c, h, w) -> uint8 (height, width, 3) through the VAE."""
        import torch

        from model.encoders import decode_latents

        with torch.no_grad():
            pixels = decode_latents(self.components.vae, torch.from_numpy(latent)[None])[0].float()
        return np.rint(((pixels.clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0).cpu().numpy()).astype(np.uint8)

    def log(self, state: Any, metrics: dict[str, float], model: Any, ema: Any) -> None:
        from mlflow.entities import Metric
        import time

        if metrics:
            now = int(time.time() * 1000)
            self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, state.step) for k, v in metrics.items()])
        every = self.cfg.samples.every
        if every and state.step % every == 0:
            self.log_samples(state.step, model)

    def log_samples(self, step: int, model: Any) -> list[str]:
        """One GIF per (reference image, prompt, intensity), same seeds every time."""
        from model.pipeline import LivePhotoPipeline
        from model.media import export_video

        if not self.refs:
            return []
        c, s = self.components, self.cfg.samples
        pipe = LivePhotoPipeline.from_components(dataclasses.replace(c, model=model))  # samples with training's own network
        pipe.set_progress_bar_config(disable=True)
        was_training = model.training
        model.eval()
        names = []
        with tempfile.TemporaryDirectory() as tmp:
            for i, image in enumerate(self.refs):
                n = len(s.prompts)
                out = pipe(
                    [image] * n, list(s.prompts), intensity=list(s.intensities), num_frames=self.cfg.model.num_frames,
                    height=self.cfg.model.resolution, width=self.cfg.model.resolution,
                    num_inference_steps=s.num_inference_steps, guidance_scale=s.guidance_scale, seed=[s.seed] * n,
                    output_type="np",
                )
                for j, (prompt, level) in enumerate(zip(s.prompts, s.intensities)):
                    slug = "".join(ch if ch.isalnum() else "_" for ch in prompt)[:40]
                    path = Path(tmp) / f"img{i}_{slug}_i{level}.gif"
                    export_video(out.frames[j], path, fps=8, format="gif")
                    names.append(path.name)
            self.client.log_artifacts(self.run_id, tmp, artifact_path=f"samples/step_{step:08d}")
        model.train(was_training)
        return names

    def log_replicas(self, state: Any, replicas: list[dict[str, Any]]) -> None:
        """Tag ``replicas.attempt_<restarts>``: the ranks, nodes and weight digests of this attempt's
        workers at its latest checkpoint (an elastic run shows each worker group it ran on)."""
        import json

        self.client.set_tag(self.run_id, f"replicas.attempt_{state.restarts}", json.dumps(replicas))

    def finish(self, state: Any, model: Any, ema: Any, replicas: list[dict[str, Any]]) -> None:
        """Save the final model (EMA weights when on) and log it; optionally register it."""
        import json

        from model.pipeline import LivePhotoPipeline

        self.client.set_tag(self.run_id, "replicas", json.dumps(replicas))

        if ema is not None:
            params = dict(model.named_parameters())
            for name, value in ema.shadow.items():
                params[name].data.copy_(value)
        final = Path(self.output_dir) / "final_model"
        LivePhotoPipeline.from_components(self.components).save_pretrained(final)
        self.client.set_tag(self.run_id, "final_model", str(final))
        self.client.log_metric(self.run_id, "final_step", state.step, step=state.step)
        if self.cfg.mlflow.log_model:  # an MLflow python_function model around the folder (model/mlflow_model.py)
            from model.mlflow_model import save_mlflow_model

            with tempfile.TemporaryDirectory(prefix="livephoto-mlflow-") as tmp:
                logged = save_mlflow_model(final, Path(tmp) / "final_model")
                self.client.log_artifacts(self.run_id, str(logged), artifact_path="final_model")
            if self.cfg.mlflow.register_as:
                run = self.client.get_run(self.run_id)
                source = f"{run.info.artifact_uri}/final_model"
                from mlflow.exceptions import MlflowException

                try:
                    self.client.create_registered_model(self.cfg.mlflow.register_as)
                except MlflowException as exc:  # already registered: add a version to it
                    if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                        raise
                self.client.create_model_version(self.cfg.mlflow.register_as, source, run_id=self.run_id)
