"""Configuration of the evaluation job (``jobs/evaluate.py``): one dataclass per part, two presets.

    python jobs/evaluate.py --preset tiny --manifest.csv eval/manifest.csv \\
        --generation.model runs/t1/final_model --output.dir runs/t1/eval

``tiny`` scores with small random CLIP/DINOv2 extractors (plumbing only: their consistency
and CLIP-T numbers mean nothing; flow, PSNR and SSIM do not depend on them). ``sd15`` uses
CLIP ViT-L/14 and DINOv2 ViT-L/14 from the hub or local folders.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from common.config import check, nested, opt, required
from model.config import ModelSources

MANIFEST_COLUMNS = ("image", "prompt", "intensity", "seed")
"""Columns every manifest must have; ``id`` and ``direction`` are optional."""
VIDEO_FORMATS = ("gif", "mp4", "none")


@dataclass
class ManifestConfig:
    csv: str | None = required(
        "evaluation manifest CSV: image (path, relative to the CSV's folder or absolute), prompt, "
        "intensity (1..levels), seed, and optionally id and direction (expected image-space motion: "
        "left/right/up/down/none; default: read from the prompt)"
    )
    limit: int | None = opt(None, "evaluate only the first N rows (smoke tests); None = all")

    def __post_init__(self) -> None:
        check(self.limit is None or self.limit >= 1, "limit", f"must be >= 1 or None, got {self.limit}")


@dataclass
class GenerationConfig:
    model: str | None = required("model to evaluate: mini (shipped) | tiny | sd15 | a save_pretrained folder | a training checkpoint | runs:/... | models:/...")
    tracking_uri: str | None = opt(None, "MLflow tracking URI used to resolve a runs:/ or models:/ model")
    num_frames: int | None = opt(None, "frames per video; None = the model's num_frames")
    resolution: int | None = opt(None, "video height and width; None = the model's resolution")
    num_inference_steps: int = opt(25, "sampler steps")
    guidance_scale: float = opt(7.5, "classifier-free guidance on the text")
    guidance_interval: tuple[float, float] = opt((0.0, 1.0), "(start, stop): guide only sampler steps int(start*n)..int(stop*n)-1 of n")
    prior_inversion: bool = opt(True, "start from noise blended with the inverted reference (the paper's sampling)")
    batch_size: int = opt(8, "manifest rows per model call")
    actors: int = opt(1, "generation actor-pool size (one model copy each)")
    num_gpus: float = opt(0.0, "GPUs per generation actor (0 = CPU)")
    num_cpus: float = opt(1.0, "CPUs per generation actor")
    save_videos: Literal["gif", "mp4", "none"] = opt("gif", "write every generated video to output.dir/videos as gif, mp4, or not at all")
    fps: int = opt(8, "frame rate of the saved videos")

    def __post_init__(self) -> None:
        check(self.num_inference_steps >= 1, "num_inference_steps", f"must be >= 1, got {self.num_inference_steps}")
        check(0.0 <= self.guidance_interval[0] <= self.guidance_interval[1] <= 1.0, "guidance_interval",
              f"must be (start, stop) with 0 <= start <= stop <= 1, got {self.guidance_interval}")
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        check(self.actors >= 1, "actors", f"must be >= 1, got {self.actors}")
        check(self.num_frames is None or self.num_frames >= 2, "num_frames", f"must be >= 2, got {self.num_frames}")
        check(self.resolution is None or (self.resolution > 0 and self.resolution % 8 == 0), "resolution",
              f"must be a positive multiple of 8, got {self.resolution}")
        check(self.save_videos in VIDEO_FORMATS, "save_videos", f"got {self.save_videos!r}, allowed: {', '.join(VIDEO_FORMATS)}")
        check(self.fps >= 1, "fps", f"must be >= 1, got {self.fps}")


@dataclass
class MetricsConfig:
    clip: str | None = opt(None, "CLIP (vision+text) folder or hub id for CLIP consistency and CLIP-T; 'tiny' = random (plumbing); None = skip")
    dino: str | None = opt(None, "DINOv2 folder or hub id for DINO consistency; 'tiny' = random (plumbing); None = skip")
    local_files_only: bool = opt(False, "never contact the hub for the metric encoders")
    flow_max_side: int = opt(256, "frames are downscaled to this longer side before Farneback flow (as preprocessing)")
    min_shift: float = opt(0.1, "mean flow below this many px/frame counts as direction 'none'")
    fvd_real: str | None = opt(None, "preprocessed dataset folder (jobs/preprocess.py output with frames) whose clips are FVD's real set; None = no FVD")
    fvd_i3d: str | None = opt(None, "I3D TorchScript file (i3d_torchscript.pt) for FVD features")
    fvd_max_real: int = opt(512, "at most this many real clips for FVD")

    def __post_init__(self) -> None:
        check((self.fvd_real is None) == (self.fvd_i3d is None), "fvd_i3d",
              "FVD needs both metrics.fvd_real (real clips) and metrics.fvd_i3d (I3D weights); give both or neither")
        check(self.flow_max_side >= 8, "flow_max_side", f"must be >= 8, got {self.flow_max_side}")
        check(self.min_shift >= 0, "min_shift", f"must be >= 0, got {self.min_shift}")
        check(self.fvd_max_real >= 2, "fvd_max_real", f"must be >= 2, got {self.fvd_max_real}")


@dataclass
class EvalMlflowConfig:
    tracking_uri: str | None = opt(None, "MLflow tracking URI; None = sqlite:///<output.dir>/mlflow.db")
    experiment: str = opt("livephoto-eval", "MLflow experiment name")
    run_name: str | None = opt(None, "MLflow run name (default: the output folder's name)")


@dataclass
class EvalOutputConfig:
    dir: str | None = required("output folder: videos/, metrics/ (Parquet), summary.json, report.md and plots")
    overwrite: bool = opt(False, "replace an existing output folder (otherwise the job refuses to start)")
    report_videos: int = opt(8, "videos embedded in report.md (0: none)")

    def __post_init__(self) -> None:
        check(self.report_videos >= 0, "report_videos", f"must be >= 0, got {self.report_videos}")


@dataclass
class EvalConfig:
    manifest: ManifestConfig = nested(ManifestConfig, "what to generate")
    generation: GenerationConfig = nested(GenerationConfig, "the model and how it samples")
    model: ModelSources = nested(ModelSources, "where the model's pretrained parts come from on this machine (None: as saved)")
    metrics: MetricsConfig = nested(MetricsConfig, "metric encoders and settings")
    mlflow: EvalMlflowConfig = nested(EvalMlflowConfig, "experiment tracking")
    output: EvalOutputConfig = nested(EvalOutputConfig, "where results go")
    ray_address: str | None = opt(None, "Ray cluster to join; None = the job's cluster or a new local one")


def _tiny() -> dict[str, Any]:
    return {
        "generation": {"num_inference_steps": 10, "guidance_scale": 4.0, "batch_size": 8, "num_cpus": 1.0},
        "metrics": {"clip": "tiny", "dino": "tiny", "flow_max_side": 64},
    }


def _sd15() -> dict[str, Any]:
    return {
        "generation": {"num_inference_steps": 25, "guidance_scale": 7.5, "batch_size": 8, "num_gpus": 1.0, "actors": 4},
        "metrics": {"clip": "openai/clip-vit-large-patch14", "dino": "facebook/dinov2-large"},
    }


def _mini() -> dict[str, Any]:
    """The shipped LivePhoto-mini at 32 px: its sampler settings (chosen on the training photos,
    docs/BENCHMARKS.md), flow at full resolution."""
    return {
        "generation": {"model": "mini", "num_inference_steps": 4, "guidance_scale": 3.0, "guidance_interval": (0.0, 0.5),
                       "batch_size": 16, "num_cpus": 1.0},
        "metrics": {"clip": "tiny", "dino": "tiny", "flow_max_side": 32},
    }


PRESETS = {"tiny": _tiny, "mini": _mini, "sd15": _sd15}
