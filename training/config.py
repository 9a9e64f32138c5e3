"""Configuration of the training job: one dataclass per component, ``tiny`` and ``sd15`` presets.

    python jobs/train.py --preset tiny --data.dir out/dataset --train.steps 200 --output.dir runs/t1
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from common.config import check, nested, opt, required
from model.config import BASE_GROUP, TRAINABLE_GROUPS, ModelConfig, model_preset

TRAINABLE_CHOICES = (*TRAINABLE_GROUPS, BASE_GROUP)


@dataclass
class DataConfig:
    dir: str | None = required("preprocessed dataset (the output.dir of jobs/preprocess.py)")
    val_fraction: float = opt(0.1, "share of videoids held out for validation (split by a hash of the videoid)")
    shuffle_seed: int = opt(0, "seed of the block order and of each epoch's local shuffle")
    shuffle_buffer: int = opt(64, "rows in each worker's local shuffle buffer")
    materialize: bool = opt(False, "hold the training set in the object store (small datasets: cheaper epochs)")

    def __post_init__(self) -> None:
        check(0.0 <= self.val_fraction < 1.0, "val_fraction", f"must be in [0, 1), got {self.val_fraction}")
        check(self.shuffle_buffer >= 1, "shuffle_buffer", f"must be >= 1, got {self.shuffle_buffer}")


@dataclass
class TrainLoopConfig:
    steps: int = opt(1000, "optimizer steps in total (a resumed run ends at this step too)")
    batch_size: int = opt(4, "clips per worker per micro-batch")
    grad_accum: int = opt(1, "micro-batches per optimizer step")
    seed: int = opt(0, "seed of noise, timesteps and caption dropout (per step and rank)")
    trainable: list[str] = opt(list(TRAINABLE_GROUPS), f"parts that train: {', '.join(TRAINABLE_CHOICES)}")
    caption_dropout: float = opt(0.5, "probability of training a clip with the empty caption (classifier-free guidance)")
    noise_offset: float = opt(0.0, "offset noise strength (0 = off)")
    min_snr_gamma: float | None = opt(None, "min-SNR loss weighting gamma (None = plain MSE)")
    timestep_bias_portion: float = opt(
        0.0, "share of clips whose timestep is drawn from [timestep_bias_begin, T) instead of [0, T): the highest noise, "
             "where x_t tells the least about the motion and the caption must (0 = uniform timesteps)"
    )
    timestep_bias_begin: int = opt(950, "first timestep of the biased range")
    timestep_bias_from_step: int = opt(0, "optimizer step from which the timestep bias applies (a curriculum: 0 = from the start)")
    mixed_precision: Literal["auto", "bf16", "no"] = opt("auto", "bf16 autocast on GPU when auto; never on CPU")
    gradient_checkpointing: bool = opt(False, "recompute UNet activations in the backward pass")
    log_every: int = opt(10, "steps between metric reports")
    text_path_every: int = opt(
        50, "steps between the text-path probes logged with the metrics (text_token_weight, text_cond_gap; two extra "
            "forward passes each, on rank 0); 0 = never"
    )
    val_every: int = opt(100, "steps between validation losses (0 = never)")
    val_batches: int = opt(4, "validation batches per evaluation")

    def __post_init__(self) -> None:
        check(self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        check(self.grad_accum >= 1, "grad_accum", f"must be >= 1, got {self.grad_accum}")
        bad = [t for t in self.trainable if t not in TRAINABLE_CHOICES]
        check(not bad and self.trainable, "trainable", f"got {self.trainable}, allowed: {', '.join(TRAINABLE_CHOICES)}")
        check(0.0 <= self.caption_dropout <= 1.0, "caption_dropout", f"must be in [0, 1], got {self.caption_dropout}")
        check(self.min_snr_gamma is None or self.min_snr_gamma > 0, "min_snr_gamma", f"must be > 0 or null, got {self.min_snr_gamma}")
        check(0.0 <= self.timestep_bias_portion <= 1.0, "timestep_bias_portion", f"must be in [0, 1], got {self.timestep_bias_portion}")
        check(0 <= self.timestep_bias_begin, "timestep_bias_begin", f"must be >= 0, got {self.timestep_bias_begin}")
        check(0 <= self.timestep_bias_from_step, "timestep_bias_from_step", f"must be >= 0, got {self.timestep_bias_from_step}")
        check(self.log_every >= 1, "log_every", f"must be >= 1, got {self.log_every}")
        check(self.text_path_every >= 0, "text_path_every", f"must be >= 0, got {self.text_path_every}")
        check(self.val_every >= 0, "val_every", f"must be >= 0, got {self.val_every}")


@dataclass
class OptimConfig:
    lr: float = opt(1e-4, "AdamW learning rate")
    weight_decay: float = opt(1e-2, "AdamW weight decay")
    betas: tuple[float, float] = opt((0.9, 0.999), "AdamW betas")
    schedule: Literal["constant", "cosine"] = opt("cosine", "learning-rate schedule after warmup")
    warmup_steps: int = opt(100, "linear warmup steps")
    schedule_steps: int | None = opt(
        None, "steps the LR schedule spans (None = train.steps); a run stopped early at train.steps follows a longer run's schedule exactly"
    )
    grad_clip: float = opt(1.0, "max gradient norm (0 = no clipping)")
    ema_decay: float | None = opt(None, "EMA of the trainable weights (e.g. 0.999; None = off)")

    def __post_init__(self) -> None:
        check(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        check(self.warmup_steps >= 0, "warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        check(self.schedule_steps is None or self.schedule_steps >= 1, "schedule_steps", f"must be >= 1 or null, got {self.schedule_steps}")
        check(self.grad_clip >= 0, "grad_clip", f"must be >= 0, got {self.grad_clip}")
        check(self.ema_decay is None or 0 < self.ema_decay < 1, "ema_decay", f"must be in (0, 1) or null, got {self.ema_decay}")


@dataclass
class SamplesConfig:
    every: int = opt(500, "steps between sample videos logged to MLflow (0 = never)")
    count: int = opt(2, "validation clips used as reference images (the same ones every time)")
    prompts: list[str] = opt(["the camera pans left", "the camera zooms in"], "prompts, one video per (image, prompt)")
    intensities: list[int] = opt([3, 8], "intensity per prompt (same length as prompts)")
    num_inference_steps: int = opt(10, "DDIM steps of the sample videos")
    guidance_scale: float = opt(7.5, "classifier-free guidance of the sample videos")
    seed: int = opt(0, "sampling seed (fixed, so the progression can be watched)")

    def __post_init__(self) -> None:
        check(self.every >= 0, "every", f"must be >= 0, got {self.every}")
        check(len(self.prompts) == len(self.intensities), "intensities", "needs one value per prompt")
        check(self.num_inference_steps >= 1, "num_inference_steps", f"must be >= 1, got {self.num_inference_steps}")


@dataclass
class CheckpointingConfig:
    every: int = opt(500, "steps between checkpoints (the last step always checkpoints)")
    num_to_keep: int = opt(3, "checkpoints kept (the latest ones)")

    def __post_init__(self) -> None:
        check(self.every >= 1, "every", f"must be >= 1, got {self.every}")
        check(self.num_to_keep >= 1, "num_to_keep", f"must be >= 1, got {self.num_to_keep}")


@dataclass
class ScalingSettings:
    num_workers: int = opt(1, "training workers (one per GPU on a GPU cluster)")
    use_gpu: bool = opt(False, "one GPU per worker (NCCL); CPU workers use gloo")
    cpus_per_worker: float = opt(1.0, "CPUs reserved per worker")
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_SPREAD", "STRICT_PACK"] = opt("PACK", "how workers spread over nodes")
    max_failures: int = opt(2, "worker/node failures survived by restarting from the latest checkpoint")
    min_workers: int | None = opt(
        None,
        "elastic training: after a lost node, go on from the latest checkpoint with as few as this many workers "
        "(and grow back to num_workers when nodes return); None = always num_workers (wait for a replacement node)",
    )

    def __post_init__(self) -> None:
        check(self.num_workers >= 1, "num_workers", f"must be >= 1, got {self.num_workers}")
        check(self.min_workers is None or 1 <= self.min_workers <= self.num_workers, "min_workers",
              f"must be in 1..num_workers ({self.num_workers}) or null, got {self.min_workers}")
        check(self.cpus_per_worker > 0, "cpus_per_worker", f"must be > 0, got {self.cpus_per_worker}")
        check(self.max_failures >= -1, "max_failures", f"must be >= -1 (-1 = unlimited), got {self.max_failures}")
        # Ray Train sizes an elastic group by the free CPUs/GPUs it sees, not by node count: a strict
        # strategy can then ask for a group that never fits and retry forever (60 s per attempt).
        check(self.min_workers is None or self.placement_strategy in ("PACK", "SPREAD"), "placement_strategy",
              f"must be PACK or SPREAD when min_workers is set (elastic training sizes the group by free "
              f"resources, which a {self.placement_strategy} group may never fit), got {self.placement_strategy}")


@dataclass
class MlflowSettings:
    tracking_uri: str | None = opt(None, "MLflow tracking URI; None = sqlite:///<output.dir>/mlflow.db")
    experiment: str = opt("livephoto", "MLflow experiment name")
    run_name: str | None = opt(None, "MLflow run name (default: the output folder's name)")
    log_model: bool = opt(True, "log the final model as an MLflow python_function model (artifact final_model: MLmodel + the folder)")
    register_as: str | None = opt(None, "also register the final model under this name in the model registry")


@dataclass
class TrainOutputConfig:
    dir: str | None = required("run folder: checkpoints, the final model and (by default) the MLflow store")


@dataclass
class TrainConfig:
    data: DataConfig = nested(DataConfig, "the preprocessed dataset")
    train: TrainLoopConfig = nested(TrainLoopConfig, "the training loop")
    optim: OptimConfig = nested(OptimConfig, "optimizer and schedule")
    samples: SamplesConfig = nested(SamplesConfig, "sample videos logged during training")
    checkpoint: CheckpointingConfig = nested(CheckpointingConfig, "checkpoints")
    scaling: ScalingSettings = nested(ScalingSettings, "workers and fault tolerance")
    mlflow: MlflowSettings = nested(MlflowSettings, "experiment tracking")
    model: ModelConfig = nested(ModelConfig, "the LivePhoto model")
    output: TrainOutputConfig = nested(TrainOutputConfig, "where the run goes")
    resume: str | None = opt(None, "continue a stopped run: a checkpoint folder, or 'latest' (newest in output.dir)")
    init_from: str | None = opt(None, "start a new stage from a checkpoint's weights (fresh optimizer, step 0, new MLflow run)")
    ray_address: str | None = opt(None, "Ray cluster to join; None = the job's cluster or a new local one")
    check_resources: bool = opt(
        True, "stop at start when the workers' CPUs/GPUs cannot fit the cluster (false on an autoscaling cluster that grows later)"
    )

    def __post_init__(self) -> None:
        check(self.resume is None or self.init_from is None, "init_from", "give resume or init_from, not both")


def _tiny() -> dict[str, Any]:
    return {
        "model": model_preset("tiny"),
        # the tiny "SD" blocks are random, so nothing pretrained needs protecting: train them too
        "train": {"steps": 200, "batch_size": 4, "trainable": list(TRAINABLE_CHOICES),
                  "log_every": 5, "val_every": 50, "val_batches": 2},
        "optim": {"lr": 1e-3, "warmup_steps": 10, "schedule": "cosine"},
        "samples": {"every": 100, "count": 2, "num_inference_steps": 4},
        "checkpoint": {"every": 50, "num_to_keep": 2},
        "data": {"shuffle_buffer": 16, "materialize": True},
    }


def _sd15() -> dict[str, Any]:
    return {
        "model": model_preset("sd15"),
        "train": {"steps": 100_000, "batch_size": 4, "trainable": list(TRAINABLE_GROUPS),
                  "gradient_checkpointing": True, "log_every": 50, "val_every": 1000},
        "optim": {"lr": 1e-4, "warmup_steps": 500, "ema_decay": 0.9999},
        "samples": {"every": 2000, "count": 4, "num_inference_steps": 25},
        "checkpoint": {"every": 2000, "num_to_keep": 3},
        "scaling": {"num_workers": 8, "use_gpu": True, "cpus_per_worker": 8, "max_failures": 3},
    }


def _mini() -> dict[str, Any]:
    """LivePhoto-mini (trained from scratch on a CPU; see docs/MODEL.md): every part trains,
    warmup then a constant learning rate with EMA weights for sampling (a run can be extended
    or stopped early on the same schedule), light caption dropout."""
    tiny = _tiny()
    return {
        **tiny,
        "model": model_preset("mini"),
        "train": {**tiny["train"], "steps": 2000, "batch_size": 8, "caption_dropout": 0.15, "log_every": 10,
                  "text_path_every": 10, "val_every": 0,
                  "timestep_bias_portion": 0.3, "timestep_bias_begin": 950, "timestep_bias_from_step": 1000},
        "optim": {"lr": 1e-3, "warmup_steps": 50, "schedule": "constant", "ema_decay": 0.995},
        "samples": {"every": 200, "count": 2, "num_inference_steps": 10, "guidance_scale": 3.0,
                    "prompts": ["the scene drifts to the left", "the scene drifts to the right"], "intensities": [7, 7]},
        "checkpoint": {"every": 200, "num_to_keep": 2},
    }


PRESETS = {"tiny": _tiny, "mini": _mini, "sd15": _sd15}
