"""The training job's driver: check the inputs, open the MLflow run, launch Ray Train.

Fails at start, with a message naming the setting, for: a missing dataset folder, an empty
dataset, a dataset built for another model (embedding widths, frames, resolution), too few
clips for the workers and batch size, and a ``--resume`` checkpoint of another model config.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from common.config import ConfigError
from common.resources import Demand, check_fits, cluster_nodes
from pipelines.dataset import DatasetError, check_compatible, open_dataset
from training.config import TrainConfig
from training.checkpoint import check_model_config, checkpoint_step
from training.loop import WorkerArgs, train_loop_per_worker
from training.tracking import end_run, start_run


def find_checkpoints(out_dir: str) -> list[Path]:
    """Every checkpoint under ``<out_dir>/checkpoints``, oldest step first."""
    root = Path(out_dir) / "checkpoints"
    found = [p for p in root.glob("*/checkpoint_step_*") if (p / "state.json").is_file()]
    return sorted(found, key=lambda p: (checkpoint_step(p), p.stat().st_mtime))


def resolve_resume(resume: str | None, out_dir: str) -> Path | None:
    if resume is None:
        return None
    if resume == "latest":
        found = find_checkpoints(out_dir)
        if not found:
            raise ConfigError(f"resume: no checkpoint under {out_dir}/checkpoints to resume from")
        return found[-1]
    path = Path(resume)
    if not (path / "state.json").is_file():
        raise ConfigError(f"resume: {resume} is not a training checkpoint folder (no state.json)")
    return path


def sample_references(data: Any, count: int) -> dict[str, Any]:
    """What the sample videos start from: the first frames of the first ``count`` validation clips
    (topped up with training clips), as ``{"frames": [...]}``; where the dataset stores latents
    but no frames (the sd15 preprocessing preset), their first-frame latents, ``{"latents": ...}``,
    which the worker decodes with its VAE. ``{}`` when ``count`` is 0. Reads the Parquet files
    directly (``data.files``), stopping once ``count`` validation clips are found."""
    import numpy as np

    from pipelines.dataset import is_val, tensor_values

    column = "frames" if "frames" in data.info["arrays"] else "latents"
    if count == 0 or column not in data.info["arrays"]:
        return {}
    spec = data.info["arrays"][column]
    val: list = []
    train: list = []
    for batch in data.files.to_batches(columns=["videoid", column], batch_size=64):
        firsts = tensor_values(batch.column(column), spec)[:, 0]  # frame 0 of each clip
        for videoid, first in zip(batch.column("videoid").to_pylist(), firsts):
            held = data.val is not None and is_val(videoid, data.val_fraction)
            (val if held else train).append(first)
        del train[count:]
        if len(val) >= count:
            break
    chosen = (val + train)[:count]
    return {column: np.stack(chosen).astype(np.float32 if column == "latents" else np.uint8)} if chosen else {}


def run(cfg: TrainConfig) -> dict[str, Any]:
    """Train; returns ``{"step", "loss", "checkpoint", "run_id", "tracking_uri", "final_model"}``."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from model.encoders import encoder_dims
    from model.sources import require_sources

    out = os.path.abspath(cfg.output.dir)
    os.makedirs(out, exist_ok=True)
    resume = resolve_resume(cfg.resume, out)
    run_id = None
    if resume is not None:
        run_id = check_model_config(resume, cfg).get("mlflow_run_id")
    if cfg.init_from is not None:
        check_model_config(cfg.init_from, cfg)

    nodes = cluster_nodes()
    if cfg.check_resources:
        scaling = cfg.scaling
        check_fits(
            [Demand("the training workers (scaling.num_workers x scaling.cpus_per_worker, scaling.use_gpu)",
                    scaling.cpus_per_worker, 1.0 if scaling.use_gpu else 0.0, count=scaling.min_workers or scaling.num_workers)],
            nodes, "lower those settings, or run on a cluster that has them",
        )
    require_sources(cfg.model)  # every pretrained part, here on the driver: workers would fail one by one
    data = open_dataset(cfg.data)
    dims = encoder_dims(cfg.model)
    check_compatible(data.info, cfg.model, dims["text_dim"], dims["image_dim"] if cfg.model.use_content_encoder else None)
    needed = cfg.scaling.num_workers * cfg.train.batch_size
    if data.num_train < needed:
        raise DatasetError(
            f"data.dir: {data.num_train} training clips, but {cfg.scaling.num_workers} worker(s) x batch_size "
            f"{cfg.train.batch_size} need at least {needed}"
        )

    if cfg.data.materialize and len(nodes) == 1 and not cfg.scaling.min_workers:
        data.train = data.train.materialize()  # small datasets: epochs re-read the object store, not Parquet
    elif cfg.data.materialize:
        # blocks held by a node that dies go with it, and Ray does not always rebuild them: the
        # restarted workers then wait on them for ever (measured: tests/two_node_train.py lose-node)
        print("training: data.materialize is off on a multi-node or elastic run (a lost node would take its "
              "blocks with it); every epoch re-reads the Parquet files", flush=True)

    uri, run_id = start_run(cfg, out, run_id)
    args = WorkerArgs(cfg, run_id, uri, out, has_val=data.val is not None, resume_from=str(resume) if resume else None,
                      sample_references=sample_references(data, cfg.samples.count))
    ordered = ray.train.DataConfig.default_ingest_options()
    ordered.preserve_order = True  # a fixed order per seed: resumed runs see the same batches
    datasets = {"train": data.train, **({"val": data.val} if data.val is not None else {})}
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"args": args},
        scaling_config=ray.train.ScalingConfig(
            num_workers=(cfg.scaling.min_workers, cfg.scaling.num_workers) if cfg.scaling.min_workers else cfg.scaling.num_workers,
            use_gpu=cfg.scaling.use_gpu,
            resources_per_worker={"CPU": cfg.scaling.cpus_per_worker, **({"GPU": 1} if cfg.scaling.use_gpu else {})},
            placement_strategy=cfg.scaling.placement_strategy,
        ),
        run_config=ray.train.RunConfig(
            name=time.strftime("train-%Y%m%d-%H%M%S"),
            storage_path=os.path.join(out, "checkpoints"),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.checkpoint.num_to_keep),
            failure_config=ray.train.FailureConfig(max_failures=cfg.scaling.max_failures),
        ),
        datasets=datasets,
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"], execution_options=ordered),
    )
    ok = False
    try:
        result = trainer.fit()
        ok = result.error is None
    finally:
        end_run(uri, run_id, ok)
    if result.error is not None:
        raise result.error
    checkpoint = result.checkpoint.path if result.checkpoint is not None else None
    return {
        "step": result.metrics.get("step"), "loss": result.metrics.get("loss"), "checkpoint": checkpoint,
        "run_id": run_id, "tracking_uri": uri, "final_model": os.path.join(out, "final_model"),
        "train_clips": data.num_train, "val_clips": data.num_val,
    }
