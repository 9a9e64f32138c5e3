"""Configuration of the preprocessing job: one dataclass per stage, two named presets.

Load with :func:`common.config.load_from_argv`::

    python jobs/preprocess.py --preset tiny --input.csv data/videos.csv \\
        --input.video_root data --output.dir out/dataset --flow.backend raft_small
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from common.config import check, check_choice, nested, opt, required
from model.config import ModelConfig, model_preset

WEBVID_COLUMNS = ("videoid", "contentUrl", "duration", "page_dir", "name")
"""The CSV columns read; which of them a row must fill depends on the video source (:meth:`InputConfig.required_fields`)."""


@dataclass
class InputConfig:
    csv: str | None = required("WebVid-style CSV (local path, s3://, gs://, or https://)")
    video_root: str | None = opt(None, "folder holding <page_dir>/<videoid>.mp4 (local, s3://, gs://); None = use contentUrl")
    video_source: Literal["auto", "video_root", "content_url"] = opt(
        "auto", "where a row's video is: video_root/page_dir/videoid.mp4, the contentUrl, or auto (video_root if set)"
    )
    limit: int | None = opt(None, "read only the first N rows (smoke tests); None = all")
    fetch_timeout_s: float = opt(30.0, "remote videos: connect and read timeout of one HTTP attempt, seconds")
    fetch_retries: int = opt(2, "remote videos: further HTTP attempts after a timeout, a dropped connection or a 5xx/429")
    fetch_deadline_s: float = opt(120.0, "remote videos: time for all attempts of one video, seconds")
    max_video_mb: float = opt(512.0, "remote videos: larger ones become 'too_large' error rows (bounds a worker's memory)")
    dedupe: bool = opt(
        True,
        "rows sharing a videoid are processed once (the row first in contentUrl, page_dir, name, duration order); "
        "the others become 'duplicate' error rows. false = every row is processed",
    )

    def __post_init__(self) -> None:
        check(self.limit is None or self.limit > 0, "limit", f"must be a positive integer or null, got {self.limit}")
        check_choice(self.video_source, "video_source", ("auto", "video_root", "content_url"))
        for name in ("fetch_timeout_s", "fetch_deadline_s", "max_video_mb"):
            check(getattr(self, name) > 0, name, f"must be > 0, got {getattr(self, name)}")
        check(self.fetch_retries >= 0, "fetch_retries", f"must be >= 0, got {self.fetch_retries}")
        if self.video_source == "video_root":
            check(self.video_root is not None, "video_root", "is required when video_source is 'video_root'")

    @property
    def uses_video_root(self) -> bool:
        return self.video_source == "video_root" or (self.video_source == "auto" and self.video_root is not None)

    def required_fields(self) -> tuple[str, ...]:
        """CSV fields every row must fill: the id, the caption and what locates the video
        (``duration`` is optional: an empty one is stored as NaN)."""
        return ("videoid", "page_dir", "name") if self.uses_video_root else ("videoid", "contentUrl", "name")


@dataclass
class ClipConfig:
    num_frames: int = opt(16, "frames per clip")
    stride: int = opt(4, "take every stride-th source frame")
    start: Literal["random", "fixed"] = opt("random", "clip start: random (seeded per video) or fixed at start_frame")
    start_frame: int = opt(0, "first frame when start is 'fixed'")
    clips_per_video: int = opt(1, "clips taken from each video (evenly spread windows, random offset inside each)")
    height: int = opt(256, "output frame height (centre crop, then resize)")
    width: int = opt(256, "output frame width")
    seed: int = opt(0, "seed of the random clip starts")
    decode_threads: int = opt(1, "decord decoding threads per task")

    def __post_init__(self) -> None:
        check(self.num_frames >= 2, "num_frames", f"must be >= 2, got {self.num_frames}")
        check(self.stride >= 1, "stride", f"must be >= 1, got {self.stride}")
        check(self.start_frame >= 0, "start_frame", f"must be >= 0, got {self.start_frame}")
        check(self.clips_per_video >= 1, "clips_per_video", f"must be >= 1, got {self.clips_per_video}")
        for name in ("height", "width"):
            value = getattr(self, name)
            check(value >= 8 and value % 8 == 0, name, f"must be a multiple of 8 and >= 8, got {value}")
        check(self.decode_threads >= 0, "decode_threads", f"must be >= 0, got {self.decode_threads}")

    @property
    def span(self) -> int:
        """Source frames a clip covers: (num_frames - 1) * stride + 1."""
        return (self.num_frames - 1) * self.stride + 1


@dataclass
class FlowConfig:
    backend: Literal["raft_large", "raft_small", "farneback"] = opt("raft_large", "optical-flow estimator")
    weights: str | None = opt(None, "RAFT weights file (.pth/.safetensors); None = torchvision's cache")
    allow_random_init: bool = opt(False, "build RAFT with random weights when none are found (plumbing tests only)")
    raft_iters: int = opt(12, "RAFT refinement iterations")
    max_side: int = opt(256, "frames are downscaled so their longer side is at most this before flow")
    num_gpus: float = opt(0.0, "GPUs per RAFT actor")
    num_cpus: float = opt(1.0, "CPUs per RAFT actor")
    actors: int = opt(1, "RAFT actor-pool size (max)")
    batch_size: int = opt(4, "clips per RAFT batch")

    def __post_init__(self) -> None:
        check(self.raft_iters >= 1, "raft_iters", f"must be >= 1, got {self.raft_iters}")
        check(self.max_side >= 32 and self.max_side % 8 == 0, "max_side", f"must be a multiple of 8 and >= 32, got {self.max_side}")
        check(self.num_gpus >= 0, "num_gpus", f"must be >= 0, got {self.num_gpus}")
        check(self.num_cpus > 0, "num_cpus", f"must be > 0, got {self.num_cpus}")
        check(self.actors >= 1, "actors", f"must be >= 1, got {self.actors}")
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")


@dataclass
class IntensityConfig:
    source: Literal["flow", "ssim"] = opt("flow", "score the 10 levels are cut from (flow magnitude, or 1 - SSIM)")
    levels: int = opt(10, "number of intensity levels (1 = static ... N = most motion)")
    bins: str | None = opt(None, "reuse the bin edges of an earlier run (its intensity_bins.json) instead of new quantiles")

    def __post_init__(self) -> None:
        check(self.levels >= 2, "levels", f"must be >= 2, got {self.levels}")


@dataclass
class EncodeConfig:
    captions: bool = opt(True, "store CLIP text embeddings (77, dim) fp16 with token ids and mask")
    latents: bool = opt(False, "store VAE latents of the clip frames (fp16)")
    image_tokens: bool = opt(False, "store DINOv2 patch tokens of each clip's first frame (fp16)")
    store_frames: bool = opt(True, "store the decoded clip frames (uint8) so training can encode on the fly")
    num_gpus: float = opt(0.0, "GPUs per encoder actor")
    num_cpus: float = opt(1.0, "CPUs per encoder actor")
    actors: int = opt(1, "encoder actor-pool size (max)")
    batch_size: int = opt(16, "rows per encoder batch")

    def __post_init__(self) -> None:
        check(self.num_gpus >= 0, "num_gpus", f"must be >= 0, got {self.num_gpus}")
        check(self.num_cpus > 0, "num_cpus", f"must be > 0, got {self.num_cpus}")
        check(self.actors >= 1, "actors", f"must be >= 1, got {self.actors}")
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        check(self.store_frames or self.latents, "store_frames", "must be true when latents is false (training needs frames or latents)")


@dataclass
class OutputConfig:
    dir: str | None = required("output folder (local or s3://...): clips/, errors/, summary.json, intensity_bins.json")
    overwrite: bool = opt(False, "replace an existing output folder (otherwise the job refuses to start)")
    rows_per_file: int = opt(2000, "approximate rows per Parquet file")
    resume: bool = opt(False, "continue an interrupted run in output.dir: skip its finished shards, redo the rest")
    shard_rows: int = opt(20000, "CSV rows per input shard: the unit a resumed run skips (each shard is one pass of the stages)")

    def __post_init__(self) -> None:
        check(self.rows_per_file >= 1, "rows_per_file", f"must be >= 1, got {self.rows_per_file}")
        check(self.shard_rows >= 1, "shard_rows", f"must be >= 1, got {self.shard_rows}")


@dataclass
class DecodeComputeConfig:
    num_cpus: float = opt(1.0, "CPUs per decode / CPU-scoring task")
    batch_size: int = opt(8, "rows per decode / CPU-scoring batch")

    def __post_init__(self) -> None:
        check(self.num_cpus > 0, "num_cpus", f"must be > 0, got {self.num_cpus}")
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")


@dataclass
class PreprocessConfig:
    input: InputConfig = nested(InputConfig, "where the CSV and videos are")
    clip: ClipConfig = nested(ClipConfig, "which frames become a clip")
    flow: FlowConfig = nested(FlowConfig, "optical-flow motion estimator")
    intensity: IntensityConfig = nested(IntensityConfig, "quantisation of motion into levels")
    encode: EncodeConfig = nested(EncodeConfig, "frozen encoders run at preprocessing time")
    decode: DecodeComputeConfig = nested(DecodeComputeConfig, "CPU task sizes")
    model: ModelConfig = nested(ModelConfig, "the model whose encoders embed captions / frames")
    output: OutputConfig = nested(OutputConfig, "where the dataset goes")
    ray_address: str | None = opt(None, "Ray cluster to join; None = the job's cluster or a new local one")
    check_resources: bool = opt(
        True, "stop at start when the stages' CPUs/GPUs cannot fit the cluster (false on an autoscaling cluster that grows later)"
    )

    def __post_init__(self) -> None:
        check(
            (self.clip.height, self.clip.width) == (self.model.resolution, self.model.resolution) or not self.encode.latents,
            "clip.height",
            f"clips of {self.clip.height}x{self.clip.width} do not match model.resolution={self.model.resolution} "
            "(needed when encode.latents is true)",
        )
        check_choice(self.flow.backend, "flow.backend", ("raft_large", "raft_small", "farneback"))


def _tiny() -> dict[str, Any]:
    model = model_preset("tiny")
    return {
        "model": model,
        "clip": {"num_frames": model["num_frames"], "stride": 2, "height": model["resolution"], "width": model["resolution"]},
        "flow": {"backend": "farneback", "allow_random_init": True, "raft_iters": 4, "max_side": 64, "num_cpus": 0.5},
        "encode": {"captions": True, "latents": True, "image_tokens": True, "store_frames": True, "batch_size": 16, "num_cpus": 0.5, "actors": 2},
        "output": {"rows_per_file": 256},
    }


def _sd15() -> dict[str, Any]:
    model = model_preset("sd15")
    return {
        "model": model,
        "clip": {"num_frames": model["num_frames"], "stride": 4, "height": model["resolution"], "width": model["resolution"]},
        "flow": {"backend": "raft_large", "num_gpus": 0.25, "actors": 4, "batch_size": 8},
        "encode": {"latents": True, "image_tokens": True, "store_frames": False, "num_gpus": 0.5, "actors": 2, "batch_size": 32},
    }


def _mini() -> dict[str, Any]:
    """LivePhoto-mini: 32 px, 8 consecutive frames, MiniLM captions, pixel-space "latents"."""
    model = model_preset("mini")
    tiny = _tiny()
    return {
        **tiny,
        "model": model,
        "clip": {"num_frames": model["num_frames"], "stride": 1, "start": "fixed", "height": model["resolution"], "width": model["resolution"]},
        "flow": {**tiny["flow"], "max_side": model["resolution"]},
    }


PRESETS = {"tiny": _tiny, "mini": _mini, "sd15": _sd15}
