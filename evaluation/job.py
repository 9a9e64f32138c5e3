"""The evaluation job: a manifest of (image, prompt, intensity, seed) -> videos -> metrics.

Ray Data reads the manifest and streams it through :class:`GenerateAndScore`, an actor pool
(GPU actors when ``generation.num_gpus`` > 0) that holds the model and the metric encoders;
each batch is generated in one sampler call and scored row by row. Per-video metrics go
to Parquet (``metrics/``), then the driver aggregates them (:mod:`evaluation.report`),
computes FVD when configured, writes ``summary.json``, ``report.md`` and plots, and logs
everything to MLflow.

Nothing is lost: a row whose image is missing or unreadable, whose intensity or seed is out
of range, or whose generation fails becomes a row with ``status="error"`` and the reason;
the summary reports ``rows_accounted``.
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from common.config import ConfigError, from_dict, to_dict
from common.resources import torch_device
from evaluation.config import MANIFEST_COLUMNS, EvalConfig

DIRECTION_WORDS = ("left", "right", "up", "down", "none")
RESULT_SCHEMA = pa.schema([
    ("id", pa.string()), ("image", pa.string()), ("prompt", pa.string()), ("intensity", pa.int64()),
    ("seed", pa.int64()), ("direction", pa.string()), ("status", pa.string()), ("error", pa.string()),
    ("video", pa.string()), ("psnr", pa.float64()), ("ssim", pa.float64()), ("magnitude", pa.float64()),
    ("dx", pa.float64()), ("dy", pa.float64()), ("speed", pa.float64()), ("measured_direction", pa.string()),
    ("clip_consistency", pa.float64()), ("dino_consistency", pa.float64()), ("clip_t", pa.float64()),
    ("i3d", pa.binary()), ("seconds", pa.float64()),
])
"""One row per manifest row. ``speed`` = hypot(dx, dy), the mean flow in px/frame; ``magnitude``
the motion-intensity flow score (percent of the diagonal per frame); metric columns are null
for error rows and for encoders that are off; ``i3d`` float32 features when FVD is on."""


# --------------------------------------------------------------------------- manifest


def read_manifest(cfg: EvalConfig) -> list[dict[str, Any]]:
    """Manifest rows as dicts of strings, with ``image`` made absolute and ``id`` filled in.

    A missing file or column stops the job with a :class:`ConfigError` naming
    ``manifest.csv``; bad values in a row are left for the actors to report per row.
    """
    import pandas as pd

    path = Path(cfg.manifest.csv)
    if not path.is_file():
        raise ConfigError(f"manifest.csv: {str(path)!r} does not exist")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, nrows=cfg.manifest.limit)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise ConfigError(f"manifest.csv: {path} is not a readable CSV ({exc})") from None
    missing = [c for c in MANIFEST_COLUMNS if c not in frame.columns]
    if missing:
        raise ConfigError(f"manifest.csv: missing column(s) {', '.join(missing)}; required: {', '.join(MANIFEST_COLUMNS)}")
    if len(frame) == 0:
        raise ConfigError(f"manifest.csv: {path} has no rows")
    rows = []
    for i, row in enumerate(frame.to_dict("records")):
        image = row["image"].strip()
        rows.append({
            "id": row.get("id") or f"{i:06d}",
            "image": str((path.parent / image).resolve()) if image and not Path(image).is_absolute() else image,
            "prompt": row["prompt"], "intensity": row["intensity"], "seed": row["seed"], "direction": row.get("direction", ""),
        })
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise ConfigError("manifest.csv: the id column has duplicates; ids name the output videos and must be unique")
    return rows


def parse_request(row: dict[str, Any], levels: int) -> dict[str, Any]:
    """Check one manifest row; returns typed fields or raises ValueError naming the field."""
    from PIL import Image, UnidentifiedImageError

    from model.media import to_rgb
    from sample_data import caption_direction

    prompt = str(row["prompt"])
    if not prompt.strip():
        raise ValueError("prompt: is empty")
    try:
        intensity = int(str(row["intensity"]).strip())
    except ValueError:
        raise ValueError(f"intensity: must be an integer in 1..{levels}, got {row['intensity']!r}") from None
    if not 1 <= intensity <= levels:
        raise ValueError(f"intensity: must be in 1..{levels}, got {intensity}")
    try:
        seed = int(str(row["seed"]).strip())
    except ValueError:
        raise ValueError(f"seed: must be a non-negative integer, got {row['seed']!r}") from None
    if seed < 0:
        raise ValueError(f"seed: must be >= 0, got {seed}")
    direction = str(row.get("direction") or "").strip().lower() or caption_direction(prompt)
    if direction not in DIRECTION_WORDS + ("in", "out"):
        raise ValueError(f"direction: got {direction!r}, allowed: {', '.join(DIRECTION_WORDS)}, in, out")
    path = Path(str(row["image"]))
    if not path.is_file():
        raise ValueError(f"image: file {str(path)!r} does not exist")
    try:
        with Image.open(path) as handle:
            image = to_rgb(np.asarray(handle.convert("RGBA") if handle.mode in ("P", "LA") else handle))
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"image: {str(path)!r} is not a readable image ({exc})") from None
    return {"prompt": prompt, "intensity": intensity, "seed": seed, "direction": direction, "pixels": image}


# --------------------------------------------------------------------------- the actor


class GenerateAndScore:
    """Ray Data actor: loads the model and metric encoders once; ``__call__`` takes a batch of
    manifest rows (dict of columns) and returns a ``pa.Table`` of :data:`RESULT_SCHEMA`."""

    def __init__(self, cfg: dict[str, Any], out_dir: str):
        import torch

        from evaluation.metrics import ClipImageFeatures, DinoFeatures, I3DFeatures
        from model.pipeline import LivePhotoPipeline

        self.cfg = from_dict(EvalConfig, cfg)
        self.out_dir = Path(out_dir)
        g, m = self.cfg.generation, self.cfg.metrics
        self.device = torch_device(g.num_gpus)
        self.pipe = LivePhotoPipeline.from_pretrained(g.model, tracking_uri=g.tracking_uri, **self.cfg.model.overrides())
        if self.device == "cuda":
            self.pipe.to("cuda", torch.float16)
        model_cfg = self.pipe.cfg
        self.num_frames = g.num_frames or model_cfg.num_frames
        self.resolution = g.resolution or model_cfg.resolution
        self.levels = model_cfg.intensity_levels
        self.clip = ClipImageFeatures(m.clip, self.device, m.local_files_only) if m.clip else None
        self.dino = DinoFeatures(m.dino, self.device, m.local_files_only) if m.dino else None
        self.i3d = I3DFeatures(m.fvd_i3d, self.device) if m.fvd_i3d else None

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        rows = [{k: batch[k][i] for k in batch} for i in range(len(batch["id"]))]
        results: list[dict[str, Any]] = [self._base(r) for r in rows]
        requests = {}
        for i, row in enumerate(rows):
            try:
                requests[i] = parse_request(row, self.levels)
            except ValueError as exc:
                results[i].update(status="error", error=str(exc))
        if requests:
            self._generate(requests, results)
        return pa.Table.from_pylist(results, schema=RESULT_SCHEMA)

    @staticmethod
    def _base(row: dict[str, Any]) -> dict[str, Any]:
        def as_int(value: Any) -> int | None:
            try:
                return int(str(value).strip())
            except ValueError:
                return None

        return {"id": str(row["id"]), "image": str(row["image"]), "prompt": str(row["prompt"]),
                "intensity": as_int(row["intensity"]), "seed": as_int(row["seed"]),
                "direction": str(row.get("direction") or ""), "status": "ok", "error": None}

    def _generate(self, requests: dict[int, dict[str, Any]], results: list[dict[str, Any]]) -> None:
        """1. one sampler call for the batch; 2. score and save each video."""
        from model.media import center_crop_resize

        g = self.cfg.generation
        order = list(requests)
        started = time.perf_counter()
        try:
            out = self.pipe(
                [requests[i]["pixels"] for i in order], [requests[i]["prompt"] for i in order],
                intensity=[requests[i]["intensity"] for i in order], seed=[requests[i]["seed"] for i in order],
                num_frames=self.num_frames, height=self.resolution, width=self.resolution,
                num_inference_steps=g.num_inference_steps, guidance_scale=g.guidance_scale,
                guidance_interval=g.guidance_interval, prior_inversion=g.prior_inversion, output_type="np",
            )
        except Exception as exc:  # noqa: BLE001 - a failed batch becomes error rows, never a crashed job
            for i in order:
                results[i].update(status="error", error=f"generation: {type(exc).__name__}: {exc}")
            return
        per_video = (time.perf_counter() - started) / len(order)
        videos = np.clip(np.round(out.frames * 255.0), 0, 255).astype(np.uint8)
        for i, video in zip(order, videos):
            request = requests[i]
            reference = center_crop_resize(request["pixels"], self.resolution, self.resolution)
            try:
                results[i].update(self.score(video, reference, request["prompt"]))
                results[i].update(direction=request["direction"], seconds=per_video, video=self._save(results[i]["id"], video))
            except Exception as exc:  # noqa: BLE001 - one bad video never fails the batch
                results[i].update(status="error", error=f"scoring: {type(exc).__name__}: {exc}")

    def score(self, video: np.ndarray, reference: np.ndarray, prompt: str) -> dict[str, Any]:
        """Every per-video metric of uint8 ``video`` (frames, h, w, 3) against ``reference`` (h, w, 3)."""
        from evaluation.metrics import clip_text_alignment, first_frame_fidelity, frame_consistency, motion_stats

        m = self.cfg.metrics
        first = first_frame_fidelity(video, reference)
        motion = motion_stats(video, max_side=m.flow_max_side, min_shift=m.min_shift)
        row: dict[str, Any] = {
            "psnr": min(first["psnr"], 100.0), "ssim": first["ssim"], "magnitude": motion["magnitude"],
            "dx": motion["dx"], "dy": motion["dy"], "speed": math.hypot(motion["dx"], motion["dy"]),
            "measured_direction": motion["direction"],
        }
        if self.clip is not None:
            features = self.clip(video)
            row["clip_consistency"] = frame_consistency(features)
            row["clip_t"] = clip_text_alignment(features, self.clip.text([prompt])[0])
        if self.dino is not None:
            row["dino_consistency"] = frame_consistency(self.dino(video))
        if self.i3d is not None:
            row["i3d"] = self.i3d(video[None])[0].astype(np.float32).tobytes()
        return row

    def _save(self, video_id: str, video: np.ndarray) -> str | None:
        from model.media import export_video

        fmt = self.cfg.generation.save_videos
        if fmt == "none":
            return None
        name = f"videos/{video_id}.{fmt}"
        export_video(video, self.out_dir / name, fps=self.cfg.generation.fps)
        return name


# --------------------------------------------------------------------------- driver


def prepare_output(cfg: EvalConfig) -> Path:
    out = Path(cfg.output.dir).resolve()
    if out.exists() and any(out.iterdir()):
        if not cfg.output.overwrite:
            raise ConfigError(f"output.dir: {out} exists and is not empty (set --output.overwrite true to replace it)")
        shutil.rmtree(out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    return out


def real_features(cfg: EvalConfig) -> np.ndarray:
    """I3D features of up to ``metrics.fvd_max_real`` clips of the real dataset (its ``frames``)."""
    import pyarrow.dataset as pads

    from evaluation.metrics import I3DFeatures
    from pipelines.dataset import read_dataset_info, tensor_values

    m = cfg.metrics
    root = Path(m.fvd_real)
    if not (root / "clips").is_dir():
        raise ConfigError(f"metrics.fvd_real: {root} is not a preprocessed dataset (no clips/ folder)")
    info = read_dataset_info(root)
    spec = info["arrays"].get("frames")
    if spec is None:
        raise ConfigError(f"metrics.fvd_real: {root} stores no frames (preprocess with encode.store_frames true)")
    column = pads.dataset(root / "clips", format="parquet").head(m.fvd_max_real, columns=["frames"]).column("frames")
    frames = tensor_values(column, spec)  # only the rows used are read
    i3d = I3DFeatures(m.fvd_i3d)
    return np.concatenate([i3d(frames[s : s + 16]) for s in range(0, len(frames), 16)])


def run(cfg: EvalConfig) -> dict[str, Any]:
    """Generate, score, aggregate, report, log; returns the summary (also in ``summary.json``)."""
    import pyarrow.parquet as pq
    import ray

    from evaluation import report

    started = time.perf_counter()
    rows = read_manifest(cfg)
    out = prepare_output(cfg)
    g = cfg.generation
    ds = ray.data.from_items(rows).map_batches(
        GenerateAndScore,
        fn_constructor_kwargs={"cfg": to_dict(cfg), "out_dir": str(out)},
        batch_size=g.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=g.actors),
        num_gpus=g.num_gpus,
        num_cpus=g.num_cpus,
    )
    ds.write_parquet(str(out / "metrics"))
    table = pq.read_table(out / "metrics", schema=RESULT_SCHEMA)
    real = real_features(cfg) if cfg.metrics.fvd_real else None
    summary = report.summarize(table, real, manifest_rows=len(rows))
    summary.update(seconds=round(time.perf_counter() - started, 1), model=g.model, config=to_dict(cfg))
    videos = report.write(out, cfg, summary, table)
    summary["mlflow"] = report.log_to_mlflow(out, cfg, summary, videos)
    report.write_summary(out, summary)
    return summary
