"""The preprocessed dataset's layout: Parquet columns, array encodings, ``dataset.json``.

``OUT/clips/*.parquet`` (one row per clip):

=================  =======  ====================================================================
column             type     meaning
=================  =======  ====================================================================
videoid            string   the CSV's videoid
caption            string   the CSV's ``name``
page_dir           string   the CSV's page_dir
video_path         string   where the video was read from
duration_s         double   the CSV's duration in seconds
clip_index         int64    0..clips_per_video-1
clip_start         int64    first source frame of the clip
stride             int64    source frames between sampled frames
fps                double   the source video's frame rate
num_frames         int64    frames in the clip
height, width      int64    clip frame size (after centre crop + resize)
flow_score         double   % of the frame diagonal moved per sampled frame (see motion.py)
ssim_score         double   mean SSIM of adjacent frames
intensity_level    int32    1 (static) .. levels (most motion), quantile bins
frames             tensor   uint8 (num_frames, height, width, 3)        [encode.store_frames]
text_embedding     tensor   float16 (tokens, text_dim) text encoder hidden states [encode.captions]
input_ids          tensor   int32 (tokens,) token ids                     [encode.captions]
attention_mask     tensor   uint8 (tokens,)                               [encode.captions]
latents            tensor   float16 (num_frames, 4, h, w), scaled by the VAE scaling_factor [encode.latents]
image_tokens       tensor   float16 (patches, image_dim) DINOv2 tokens of frame 0 [encode.image_tokens]
=================  =======  ====================================================================

The array columns are Arrow tensor columns (Ray Data's ``ArrowTensorTypeV2``: dtype and shape in
the column type), so ``ray.data.read_parquet(...).iter_batches(batch_format="numpy")`` gives
each as one ndarray (batch, *shape) and ``pyarrow`` readers get a fixed-size-list column.
``dataset.json`` also records each one's dtype and shape, to check a dataset against a model
before training. Inside the preprocessing stream (where error rows have no arrays) they travel
as raw C-order bytes; :func:`tensor_columns` turns them into the written tensors.

``OUT/errors/*.parquet``: ``videoid, stage, error, message, video_path`` (one row per failed
CSV row; ``error`` is a reason code from ``pipelines.video.REASONS``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from common.config import to_dict

CLIP_COLUMNS = [
    "videoid", "caption", "page_dir", "video_path", "duration_s", "clip_index", "clip_start", "stride", "fps",
    "num_frames", "height", "width", "flow_score", "ssim_score", "intensity_level",
]
ARRAY_COLUMNS = ["frames", "text_embedding", "input_ids", "attention_mask", "latents", "image_tokens"]
ERROR_COLUMNS = ["videoid", "stage", "error", "message", "video_path"]
DATASET_FORMAT = "livephoto-clips/2"  # /1 stored the arrays as raw bytes


def array_specs(cfg: Any) -> dict[str, dict[str, Any]]:
    """dtype and shape of each binary column this config writes (``cfg``: PreprocessConfig)."""
    from model.encoders import encoder_dims

    c, e = cfg.clip, cfg.encode
    specs: dict[str, dict[str, Any]] = {}
    if e.store_frames:
        specs["frames"] = {"dtype": "uint8", "shape": [c.num_frames, c.height, c.width, 3]}
    if e.captions or e.latents or e.image_tokens:
        dims = encoder_dims(cfg.model)
    if e.captions:
        tokens = cfg.model.text_max_length
        specs["text_embedding"] = {"dtype": "float16", "shape": [tokens, dims["text_dim"]]}
        specs["input_ids"] = {"dtype": "int32", "shape": [tokens]}
        specs["attention_mask"] = {"dtype": "uint8", "shape": [tokens]}
    if e.latents:
        f = dims["vae_factor"]
        specs["latents"] = {"dtype": "float16", "shape": [c.num_frames, dims["latent_channels"], c.height // f, c.width // f]}
    if e.image_tokens:
        specs["image_tokens"] = {"dtype": "float16", "shape": [dims["image_tokens"], dims["image_dim"]]}
    return specs


def decode_array(cell: bytes, spec: dict[str, Any]) -> np.ndarray:
    """A raw-bytes cell of the preprocessing stream -> its array, checking the byte count against the spec."""
    arr = np.frombuffer(cell, dtype=spec["dtype"])
    expected = int(np.prod(spec["shape"]))
    if arr.size != expected:
        raise ValueError(f"array cell has {arr.size} values, dataset.json says shape {spec['shape']}")
    return arr.reshape(spec["shape"])


def tensor_columns(batch: dict[str, np.ndarray], specs: dict[str, dict[str, Any]]) -> dict[str, np.ndarray]:
    """A numpy batch of ok clip rows with each array column (raw bytes) as one ndarray (batch, *shape):
    what Ray Data writes as an Arrow tensor column."""
    out = dict(batch)
    for name, spec in specs.items():
        if name in batch:
            out[name] = np.stack([decode_array(cell, spec) for cell in batch[name]]) if len(batch[name]) else \
                np.zeros((0, *spec["shape"]), spec["dtype"])
    return out


def tensor_values(column: Any, spec: dict[str, Any]) -> np.ndarray:
    """An Arrow tensor column read with pyarrow (a ``ChunkedArray`` or array; Ray's extension
    type or its plain list storage) -> ndarray (rows, *shape) of the spec's dtype."""
    import pyarrow as pa

    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    storage = array.storage if isinstance(array, pa.ExtensionArray) else array
    flat = storage.flatten().to_numpy(zero_copy_only=False)
    return flat.reshape(len(array), *spec["shape"]).astype(spec["dtype"], copy=False)


def dataset_info(cfg: Any, specs: dict[str, Any], bins: dict[str, Any]) -> dict[str, Any]:
    """What ``dataset.json`` holds: format, array specs, columns, intensity bins, configs."""
    return {
        "format": DATASET_FORMAT,
        "arrays": specs,
        "columns": CLIP_COLUMNS + [c for c in ARRAY_COLUMNS if c in specs],
        "intensity": bins,
        "model": to_dict(cfg.model),
        "config": to_dict(cfg),
    }


def read_dataset_info(data_dir: str | Path) -> dict[str, Any]:
    """``dataset.json`` of a preprocessed dataset, with a clear error if it is not one."""
    path = Path(data_dir) / "dataset.json"
    if not path.is_file():
        raise FileNotFoundError(f"{data_dir} is not a preprocessed dataset: no dataset.json (run jobs/preprocess.py first)")
    info = json.loads(path.read_text())
    if info.get("format") != DATASET_FORMAT:
        raise ValueError(f"{path}: format {info.get('format')!r}, expected {DATASET_FORMAT!r}; "
                         "run jobs/preprocess.py again to write this version's layout")
    return info
