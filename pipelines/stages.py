"""Ray Data stages as thin adapters: batch dict in, batch dict out.

CPU stages are plain functions (:func:`decode_batch`, :func:`score_batch_farneback`); stages
that load weights are callable classes that load in ``__init__`` and hand each batch to a
pure function (:class:`RaftScorer` -> ``score_clips_raft``, :class:`FrozenEncoders` ->
:func:`embed_captions` / :func:`encode_clip_arrays`). Tests call all of them without Ray.

Rows flowing between stages share one schema (:data:`STREAM_COLUMNS`). Arrays travel as
raw little-endian bytes whose dtype and shape are fixed for the whole dataset and written to
``dataset.json`` (see :mod:`pipelines.schema`). A row whose ``error`` is not empty is an error
row: later stages pass it through untouched.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import torch

from common.resources import torch_device
from model.config import ModelConfig
from pipelines.config import ClipConfig, FlowConfig, InputConfig
from pipelines.motion import load_raft, score_clip_farneback, score_clips_raft
from pipelines.video import RowError, decode_row

Batch = dict[str, np.ndarray]

# column -> value of an error row (and dtype of the column)
STREAM_COLUMNS: dict[str, Any] = {
    "videoid": "",
    "caption": "",
    "page_dir": "",
    "video_path": "",
    "duration_s": np.nan,
    "clip_index": -1,
    "clip_start": -1,
    "stride": -1,
    "fps": np.nan,
    "num_frames": -1,
    "height": -1,
    "width": -1,
    "frames": None,
    "error": "",
    "stage": "",
    "message": "",
}


BINARY_COLUMNS = ("frames", "text_embedding", "input_ids", "attention_mask", "latents", "image_tokens")


def to_arrow(batch: Batch) -> pa.Table:
    """A stage's output with explicit column types, so an all-error batch (only nulls in the
    array columns) has the same schema as any other batch."""
    columns = {}
    for name, values in batch.items():
        if name in BINARY_COLUMNS:
            columns[name] = pa.array(list(values), type=pa.binary())
        elif values.dtype == object:
            columns[name] = pa.array(list(values), type=pa.string())
        else:
            columns[name] = pa.array(values)
    return pa.table(columns)


def rows_to_batch(rows: list[dict[str, Any]], columns: dict[str, Any]) -> Batch:
    """List of row dicts -> numpy batch with exactly ``columns`` (missing values: the defaults)."""
    out: Batch = {}
    for name, default in columns.items():
        values = [row.get(name, default) for row in rows]
        if default is None or isinstance(default, str):
            arr = np.empty(len(values), dtype=object)
            arr[:] = values
            out[name] = arr
        else:
            out[name] = np.asarray(values, dtype=np.float64 if isinstance(default, float) else np.int64)
    return out


def batch_rows(batch: Batch) -> list[dict[str, Any]]:
    n = len(next(iter(batch.values()))) if batch else 0
    return [{k: v[i] for k, v in batch.items()} for i in range(n)]


def ok_mask(batch: Batch) -> np.ndarray:
    return np.array([e == "" or e is None for e in batch["error"]], dtype=bool)


# --------------------------------------------------------------------------- decode (CPU)


def decode_batch(batch: Batch, input_cfg: InputConfig, clip_cfg: ClipConfig, csv_dir: str) -> pa.Table:
    """CSV rows -> clip rows (``clips_per_video`` per good row) or one error row per bad row."""
    out = []
    for row in batch_rows(batch):
        base = {
            "videoid": str(row.get("videoid") or ""),
            "caption": str(row.get("name") or ""),
            "page_dir": str(row.get("page_dir") or ""),
        }
        try:
            clips = decode_row(row, input_cfg, clip_cfg, csv_dir)
        except RowError as exc:
            out.append({**base, "error": exc.reason, "stage": "decode", "message": str(exc)})
            continue
        for clip in clips:
            frames = clip.pop("frames")
            out.append(
                {
                    **base,
                    **clip,
                    "stride": clip_cfg.stride,
                    "num_frames": frames.shape[0],
                    "height": frames.shape[1],
                    "width": frames.shape[2],
                    "frames": frames.tobytes(),
                }
            )
    return to_arrow(rows_to_batch(out, STREAM_COLUMNS))


def frames_of(batch: Batch, i: int) -> np.ndarray:
    """uint8 (frames, height, width, 3) of row ``i``."""
    shape = (int(batch["num_frames"][i]), int(batch["height"][i]), int(batch["width"][i]), 3)
    return np.frombuffer(batch["frames"][i], dtype=np.uint8).reshape(shape)


# --------------------------------------------------------------------------- motion


def _with_scores(batch: Batch, scores: dict[int, tuple[float, float]]) -> pa.Table:
    n = len(batch["error"])
    flow = np.full(n, np.nan)
    ssim = np.full(n, np.nan)
    for i, (f, s) in scores.items():
        flow[i], ssim[i] = f, s
    return to_arrow({**batch, "flow_score": flow, "ssim_score": ssim})


def score_batch_farneback(batch: Batch, flow_cfg: FlowConfig) -> pa.Table:
    """Adds ``flow_score`` and ``ssim_score`` (NaN on error rows) with OpenCV Farneback."""
    ok = ok_mask(batch)
    return _with_scores(batch, {i: score_clip_farneback(frames_of(batch, i), flow_cfg.max_side) for i in np.flatnonzero(ok)})


class RaftScorer:
    """Actor: RAFT loaded once; each batch gets ``flow_score`` / ``ssim_score``."""

    def __init__(self, flow_cfg: FlowConfig):
        self.cfg = flow_cfg
        self.model = load_raft(flow_cfg, torch_device(flow_cfg.num_gpus))

    def __call__(self, batch: Batch) -> pa.Table:
        idx = list(np.flatnonzero(ok_mask(batch)))
        scores: dict[int, tuple[float, float]] = {}
        # RAFT runs on equal-shaped clips; group rows by frame shape.
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i in idx:
            by_shape.setdefault(frames_of(batch, i).shape, []).append(i)
        for rows in by_shape.values():
            results = score_clips_raft(self.model, [frames_of(batch, i) for i in rows], self.cfg)
            scores.update(zip(rows, results))
        return _with_scores(batch, scores)


# --------------------------------------------------------------------------- encoders


def embed_captions(tokenizer, text_encoder, captions: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CLIP embeddings fp16 (n, 77, dim), token ids int32 (n, 77), attention mask uint8 (n, 77)."""
    from model.encoders import encode_prompts

    out = encode_prompts(tokenizer, text_encoder, captions)
    return (
        out["embeddings"].float().cpu().numpy().astype(np.float16),
        out["input_ids"].numpy().astype(np.int32),
        out["attention_mask"].numpy().astype(np.uint8),
    )


def _bytes_column(n: int, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    col = np.empty(n, dtype=object)
    col[:] = None
    for i, v in zip(rows, values):
        col[i] = np.ascontiguousarray(v).tobytes()
    return col


def encode_clip_arrays(vae, image_encoder, clips: list[np.ndarray], image_size: int) -> tuple[list, list]:
    """VAE latents fp16 (frames, 4, h, w) per clip and DINOv2 tokens fp16 (patches, dim) of frame 0.

    Either encoder may be ``None`` (its list is then empty).
    """
    from model.encoders import encode_image_tokens, encode_latents, frames_to_pixels, image_encoder_pixels

    lat_out, tok_out = [], []
    if vae is not None:
        for clip in clips:
            z = encode_latents(vae, frames_to_pixels(clip))
            lat_out.append(z.float().cpu().numpy().astype(np.float16))
    if image_encoder is not None:
        first = np.stack([clip[0] for clip in clips])
        t = encode_image_tokens(image_encoder, image_encoder_pixels(first, image_size))
        tok_out = list(t.float().cpu().numpy().astype(np.float16))
    return lat_out, tok_out


class FrozenEncoders:
    """Actor: the frozen encoders a config asks for, loaded once.

    Adds ``text_embedding``, ``input_ids``, ``attention_mask`` (captions), ``latents`` (VAE)
    and ``image_tokens`` (DINOv2 of frame 0); error rows get nulls.
    """

    def __init__(self, model_cfg: ModelConfig, captions: bool, latents: bool, image_tokens: bool, num_gpus: float = 0.0):
        from model.encoders import build_tokenizer, load_image_encoder, load_text_encoder, load_vae

        device = torch_device(num_gpus)
        dtype = torch.float16 if device == "cuda" else torch.float32
        self.tokenizer = build_tokenizer(model_cfg) if captions else None
        self.text_encoder = load_text_encoder(model_cfg).to(device, dtype) if captions else None
        self.vae = load_vae(model_cfg).to(device, dtype) if latents else None
        self.image_encoder = load_image_encoder(model_cfg).to(device, dtype) if image_tokens else None
        self.image_size = model_cfg.image_encoder_size

    def __call__(self, batch: Batch) -> pa.Table:
        n = len(batch["error"])
        rows = np.flatnonzero(ok_mask(batch))
        out = dict(batch)
        if self.text_encoder is not None:
            captions = [str(batch["caption"][i]) for i in rows]
            emb, ids, mask = embed_captions(self.tokenizer, self.text_encoder, captions) if len(rows) else ([], [], [])
            out["text_embedding"] = _bytes_column(n, rows, emb)
            out["input_ids"] = _bytes_column(n, rows, ids)
            out["attention_mask"] = _bytes_column(n, rows, mask)
        if self.vae is not None or self.image_encoder is not None:
            clips = [frames_of(batch, i) for i in rows]
            lat, tok = encode_clip_arrays(self.vae, self.image_encoder, clips, self.image_size) if len(rows) else ([], [])
            if self.vae is not None:
                out["latents"] = _bytes_column(n, rows, lat)
            if self.image_encoder is not None:
                out["image_tokens"] = _bytes_column(n, rows, tok)
        return to_arrow(out)


def add_levels(batch: Batch, edges: list[float], source: str) -> Batch:
    """Adds ``intensity_level`` (1..levels) from the scores and the dataset's bin edges."""
    from pipelines.motion import assign_levels, intensity_value

    values = intensity_value(batch["flow_score"], batch["ssim_score"], source)
    return {**batch, "intensity_level": assign_levels(values, edges)}
