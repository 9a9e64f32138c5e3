"""``ServeConfig``: everything the Serve app is built from, validated like every other config.

The same fields are the ``args`` of ``serve/config.yaml`` (``serve deploy`` / ``serve run``)
and the ``--key VALUE`` flags of ``python -m serve``; an unknown key is an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common.config import ConfigError, check, check_choice, from_dict, nested, opt, required
from model.config import CPU_PRESETS, ModelSources
from model.load import model_kind

DTYPES = ("float32", "float16", "bfloat16")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class ServeConfig:
    """The LivePhoto Serve app: which model, how its replicas scale, and the HTTP API's limits."""

    # --- the model
    model: str = required("mini (shipped, trained) | tiny | sd15 | a save_pretrained folder | a training checkpoint folder | runs:/<run_id>/final_model | models:/<name>/<version> | a hub id owner/name (push_to_hub)")
    sources: ModelSources = nested(
        ModelSources, "where the model's pretrained parts come from on this machine (flags: --model.base_model DIR, ...)"
    )
    mlflow_tracking_uri: str | None = opt(None, "MLflow tracking URI used to resolve runs:/ and models:/ URIs (None: MLflow's default / MLFLOW_TRACKING_URI)")
    device: str = opt("auto", "torch device of the model replicas: auto (cuda when there is a GPU), cpu, cuda")
    dtype: str = opt("float32", "weights dtype on the device: float32, float16, bfloat16 (float16/bfloat16 on cuda only)")
    compile: bool = opt(False, "torch.compile each replica's UNet (GPU: faster sampling; the replica's start-up probe pays the compile)")

    # --- model replicas
    num_gpus: float | None = opt(None, "GPUs per model replica (None: 0 for tiny and mini, 1 otherwise)")
    num_cpus: float = opt(1.0, "CPUs per model replica")
    min_replicas: int = opt(1, "autoscaling: fewest model replicas")
    max_replicas: int = opt(1, "autoscaling: most model replicas")
    target_ongoing_requests: float = opt(4.0, "autoscaling: ongoing requests per replica the autoscaler aims for")
    max_ongoing_requests: int = opt(8, "requests one model replica works on at once (>= max_batch_size for full batches)")
    max_queued_requests: int = opt(16, "requests waiting for a model replica beyond which the API answers 503 + Retry-After (-1: unbounded)")
    retry_after_s: int = opt(5, "the Retry-After header (seconds) of a 503 answer")
    max_batch_size: int = opt(8, "most requests run in one batch (@serve.batch); 1 turns batching off")
    batch_wait_timeout_s: float = opt(0.05, "how long a batch waits to fill up before it runs")
    ingress_replicas: int = opt(1, "HTTP ingress replicas (CPU only)")

    # --- request defaults and limits
    default_num_inference_steps: int = opt(25, "denoising steps when a request gives none")
    max_num_inference_steps: int = opt(100, "most denoising steps a request may ask for")
    default_guidance_scale: float = opt(7.5, "classifier-free guidance scale when a request gives none")
    max_guidance_scale: float = opt(30.0, "largest guidance scale a request may ask for")
    default_guidance_interval: tuple[float, float] = opt(
        (0.0, 1.0), "(start, stop) fractions of the steps that are guided when a request gives no guidance_start / guidance_stop")
    max_num_frames: int | None = opt(None, "most frames a request may ask for (None: the motion modules' maximum)")
    default_fps: int = opt(8, "frames per second of the video when a request gives none")
    max_prompt_chars: int = opt(500, "longest prompt / negative prompt in characters")
    max_image_bytes: int = opt(20 * 1024 * 1024, "largest uploaded image file in bytes (413 beyond)")
    max_image_pixels: int = opt(40_000_000, "largest image width * height, read from the header before decoding (413 beyond)")
    request_timeout_s: float = opt(300.0, "a request still waiting for its video after this many seconds gets 504")
    health_timeout_s: float = opt(5.0, "/healthz waits this long for a model replica's answer (then reports it busy)")
    health_check_period_s: float = opt(10.0, "Serve calls each model replica's check_health this often; a failing replica is restarted")
    max_constructor_retries: int = opt(3, "a model replica that fails to start (e.g. weights missing) is retried this often before the app fails")
    api_key: str | None = opt(None, "when set (or LIVEPHOTO_API_KEY is set where the app is built), /v1/* needs 'Authorization: Bearer KEY'")

    def __post_init__(self) -> None:
        if self.model is not None:
            check(isinstance(self.model, str) and self.model.strip() != "", "model", "must name a preset, a folder or an MLflow URI")
        check_choice(self.device, "device", DEVICES)
        check_choice(self.dtype, "dtype", DTYPES)
        check(self.device != "cpu" or self.dtype == "float32", "dtype", f"must be float32 on cpu, got {self.dtype}")
        check(self.num_gpus is None or self.num_gpus >= 0, "num_gpus", f"must be >= 0, got {self.num_gpus}")
        check(self.num_cpus >= 0, "num_cpus", f"must be >= 0, got {self.num_cpus}")
        check(self.min_replicas >= 0, "min_replicas", f"must be >= 0, got {self.min_replicas}")
        check(self.max_replicas >= max(1, self.min_replicas), "max_replicas", f"must be >= max(1, min_replicas={self.min_replicas}), got {self.max_replicas}")
        check(self.target_ongoing_requests > 0, "target_ongoing_requests", f"must be > 0, got {self.target_ongoing_requests}")
        check(self.max_ongoing_requests >= 1, "max_ongoing_requests", f"must be >= 1, got {self.max_ongoing_requests}")
        check(self.max_queued_requests == -1 or self.max_queued_requests >= 0, "max_queued_requests", f"must be >= 0 or -1, got {self.max_queued_requests}")
        check(self.retry_after_s >= 0, "retry_after_s", f"must be >= 0, got {self.retry_after_s}")
        check(self.max_batch_size >= 1, "max_batch_size", f"must be >= 1, got {self.max_batch_size}")
        check(self.batch_wait_timeout_s >= 0, "batch_wait_timeout_s", f"must be >= 0, got {self.batch_wait_timeout_s}")
        check(self.ingress_replicas >= 1, "ingress_replicas", f"must be >= 1, got {self.ingress_replicas}")
        check(self.max_num_inference_steps >= 1, "max_num_inference_steps", f"must be >= 1, got {self.max_num_inference_steps}")
        check(
            1 <= self.default_num_inference_steps <= self.max_num_inference_steps,
            "default_num_inference_steps", f"must be 1..max_num_inference_steps={self.max_num_inference_steps}, got {self.default_num_inference_steps}",
        )
        start, stop = self.default_guidance_interval
        check(0.0 <= start <= stop <= 1.0, "default_guidance_interval",
              f"must be (start, stop) with 0 <= start <= stop <= 1, got {self.default_guidance_interval}")
        check(self.max_guidance_scale >= 0, "max_guidance_scale", f"must be >= 0, got {self.max_guidance_scale}")
        check(
            0 <= self.default_guidance_scale <= self.max_guidance_scale,
            "default_guidance_scale", f"must be 0..max_guidance_scale={self.max_guidance_scale}, got {self.default_guidance_scale}",
        )
        check(self.max_num_frames is None or self.max_num_frames >= 2, "max_num_frames", f"must be >= 2, got {self.max_num_frames}")
        check(1 <= self.default_fps <= 60, "default_fps", f"must be 1..60, got {self.default_fps}")
        check(self.max_prompt_chars >= 1, "max_prompt_chars", f"must be >= 1, got {self.max_prompt_chars}")
        check(self.max_image_bytes >= 1024, "max_image_bytes", f"must be >= 1024, got {self.max_image_bytes}")
        check(self.max_image_pixels >= 64 * 64, "max_image_pixels", f"must be >= 4096, got {self.max_image_pixels}")
        check(self.request_timeout_s > 0, "request_timeout_s", f"must be > 0, got {self.request_timeout_s}")
        check(self.health_timeout_s > 0, "health_timeout_s", f"must be > 0, got {self.health_timeout_s}")
        check(self.health_check_period_s > 0, "health_check_period_s", f"must be > 0, got {self.health_check_period_s}")
        check(self.max_constructor_retries >= 1, "max_constructor_retries", f"must be >= 1, got {self.max_constructor_retries}")
        check(self.api_key is None or len(self.api_key) >= 8, "api_key", "must be at least 8 characters")

    @property
    def model_kind(self) -> str:
        return model_kind(self.model)

    @property
    def replica_num_gpus(self) -> float:
        if self.num_gpus is not None:
            return self.num_gpus
        return 0.0 if self.model in CPU_PRESETS else 1.0

    @property
    def max_request_bytes(self) -> int:
        """The whole multipart body may exceed the image by this much (the text fields)."""
        return self.max_image_bytes + 64 * 1024


def serve_config(args: dict[str, Any]) -> ServeConfig:
    """``args`` of a Serve config YAML -> a checked :class:`ServeConfig` (``model`` required)."""
    if not isinstance(args, dict):
        raise ConfigError(f"args: expected a mapping of settings, got {args!r}")
    cfg = from_dict(ServeConfig, args)
    check(cfg.model is not None, "model", "required: mini | tiny | sd15 | a folder | an MLflow URI")
    return cfg
