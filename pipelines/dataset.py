"""The preprocessed dataset: its arrays computed, its Parquet layout, and read back as training batches.

Written by preprocessing (:class:`FrozenEncoders` is the Ray Data stage that adds caption
embeddings, VAE latents and DINOv2 tokens; :func:`tensor_columns` turns the stream's raw bytes
into tensor columns), read by training (:func:`open_dataset` on the driver, :func:`collate` and
:class:`Encoders` on each worker, filling in with the frozen encoders what the dataset did not
precompute) and by evaluation (:func:`read_dataset_info`, :func:`tensor_values`). Training splits
train / validation by a hash of the videoid (:func:`is_val`), so all clips of a video land on one side.

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
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import torch

from common.config import ConfigError, to_dict
from common.resources import torch_device
from model.config import ModelConfig
from pipelines.video import ARRAY_COLUMNS, Batch, frames_of, ok_mask, to_arrow

if TYPE_CHECKING:
    from training.config import DataConfig, TrainConfig

CLIP_COLUMNS = [
    "videoid", "caption", "page_dir", "video_path", "duration_s", "clip_index", "clip_start", "stride", "fps",
    "num_frames", "height", "width", "flow_score", "ssim_score", "intensity_level",
]
ERROR_COLUMNS = ["videoid", "stage", "error", "message", "video_path"]
DATASET_FORMAT = "livephoto-clips/2"  # /1 stored the arrays as raw bytes


# --------------------------------------------------------------------------- written by preprocessing


def embed_captions(tokenizer, text_encoder, captions: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Text-encoder hidden states fp16 (n, tokens, dim), token ids int32 (n, tokens), attention mask
    uint8 (n, tokens); ``tokens`` is ``model.text_max_length`` (77 for CLIP, 32 for mini)."""
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


# --------------------------------------------------------------------------- read back


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


def tensor_values(column: Any, spec: dict[str, Any]) -> np.ndarray:
    """An Arrow tensor column read with pyarrow (a ``ChunkedArray`` or array; Ray's extension
    type or its plain list storage) -> ndarray (rows, *shape) of the spec's dtype."""
    import pyarrow as pa

    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    storage = array.storage if isinstance(array, pa.ExtensionArray) else array
    flat = storage.flatten().to_numpy(zero_copy_only=False)
    return flat.reshape(len(array), *spec["shape"]).astype(spec["dtype"], copy=False)


class DatasetError(ConfigError):
    """The dataset cannot train this model (missing, empty, or built for another model)."""


@dataclass
class OpenedDataset:
    train: Any  # ray.data.Dataset
    val: Any  # ray.data.Dataset | None
    info: dict[str, Any]
    num_train: int
    num_val: int
    files: Any = None  # pyarrow.dataset.Dataset over the same Parquet files, for small reads on the driver
    val_fraction: float = 0.0  # the split actually used (widened for a tiny dataset)


def is_val(videoid: str, fraction: float) -> bool:
    """Deterministic split: a videoid is held out when its CRC32 falls in the first ``fraction``."""
    return (zlib.crc32(str(videoid).encode()) % 10_000) < fraction * 10_000


def _split_column(batch: dict[str, np.ndarray], fraction: float) -> dict[str, np.ndarray]:
    return {**batch, "_val": np.array([is_val(v, fraction) for v in batch["videoid"]], dtype=bool)}


def check_compatible(info: dict[str, Any], model_cfg: Any, text_dim: int, image_dim: int | None) -> None:
    """Raise DatasetError if the dataset's arrays do not fit the model."""
    arrays = info["arrays"]
    if "text_embedding" in arrays and arrays["text_embedding"]["shape"][-1] != text_dim:
        raise DatasetError(
            f"data.dir: caption embeddings are {arrays['text_embedding']['shape'][-1]}-wide but the model's text "
            f"encoder is {text_dim}-wide; preprocess with the same model preset as training"
        )
    if "image_tokens" in arrays and image_dim is not None and arrays["image_tokens"]["shape"][-1] != image_dim:
        raise DatasetError(
            f"data.dir: image tokens are {arrays['image_tokens']['shape'][-1]}-wide but the model's image encoder is "
            f"{image_dim}-wide; preprocess with the same model preset as training"
        )
    shape = (arrays.get("frames") or arrays.get("latents"))["shape"]
    if shape[0] != model_cfg.num_frames:
        raise DatasetError(f"data.dir: clips have {shape[0]} frames but model.num_frames is {model_cfg.num_frames}")
    if "frames" in arrays and tuple(arrays["frames"]["shape"][1:3]) != (model_cfg.resolution, model_cfg.resolution):
        raise DatasetError(
            f"data.dir: frames are {arrays['frames']['shape'][1]}x{arrays['frames']['shape'][2]} but model.resolution "
            f"is {model_cfg.resolution}"
        )


def open_dataset(cfg: DataConfig) -> OpenedDataset:
    """Lazy train / validation datasets of the clip rows, with a clear error for a bad folder."""
    import os

    import pyarrow.dataset
    import ray

    if not os.path.isdir(cfg.dir):
        raise DatasetError(f"data.dir: no such folder {cfg.dir!r}")
    try:
        info = read_dataset_info(cfg.dir)
    except (FileNotFoundError, ValueError) as exc:
        raise DatasetError(f"data.dir: {exc}") from None
    clips_dir = os.path.join(cfg.dir, "clips")
    if not os.path.isdir(clips_dir) or not any(f.endswith(".parquet") for f in os.listdir(clips_dir)):
        raise DatasetError(f"data.dir: {cfg.dir} has no clips (clips/*.parquet); the preprocessing run produced none")
    ds = ray.data.read_parquet(clips_dir).randomize_block_order(seed=cfg.shuffle_seed)
    # the driver's own look at the rows (the split, sample references) reads Parquet directly:
    # one column is a file read, not a Ray Data job
    files = pyarrow.dataset.dataset(clips_dir, format="parquet")
    ids = files.to_table(columns=["videoid"]).column("videoid").to_pandas()
    if len(ids) == 0:
        raise DatasetError(f"data.dir: {cfg.dir} holds 0 clips")
    fraction = cfg.val_fraction
    held = np.array([is_val(v, fraction) for v in ids])
    if fraction > 0 and not held.any() and ids.nunique() > 1:
        # a tiny dataset: widen the hash window just enough to hold out one video
        fraction = (min(zlib.crc32(str(v).encode()) % 10_000 for v in ids.unique()) + 1) / 10_000
        held = np.array([is_val(v, fraction) for v in ids])
    tagged = ds.map_batches(_split_column, fn_kwargs={"fraction": fraction}, batch_format="numpy")
    train = tagged.filter(lambda r: not r["_val"]).drop_columns(["_val"])
    val = tagged.filter(lambda r: r["_val"]).drop_columns(["_val"]) if held.any() else None
    if (~held).sum() == 0:
        raise DatasetError(f"data.dir: every clip was held out for validation (val_fraction={cfg.val_fraction})")
    return OpenedDataset(train, val, info, int((~held).sum()), int(held.sum()), files, fraction)


def collate(batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """A numpy batch of clip rows -> tensors.

    Returns whichever the dataset holds of ``frames`` uint8 (batch, frames, height, width, 3),
    ``latents`` float32 (batch, 4, frames, h, w), ``text_embedding`` float32 (batch, tokens, dim),
    ``attention_mask`` int64 (batch, tokens), ``image_tokens`` float32 (batch, patches, dim), plus
    ``intensity`` int64 (batch,) and ``caption`` (a list of str).
    """
    out: dict[str, Any] = {
        "intensity": torch.as_tensor(np.asarray(batch["intensity_level"], dtype=np.int64)),
        "caption": [str(c) for c in batch["caption"]],
    }
    for name in ("frames", "latents", "text_embedding", "attention_mask", "image_tokens"):
        if name in batch:
            tensor = torch.from_numpy(np.ascontiguousarray(batch[name]).copy())  # (batch, *shape) from the tensor column
            if name == "latents":
                tensor = tensor.float().permute(0, 2, 1, 3, 4)  # (b, f, c, h, w) -> (b, c, f, h, w)
            elif name == "attention_mask":
                tensor = tensor.long()
            elif name != "frames":
                tensor = tensor.float()
            out[name] = tensor
    return out


def iterate_batches(shard, cfg: TrainConfig, epoch: int, rank: int, shuffle: bool):
    """A Ray Data shard's numpy batches; a shuffled epoch's order comes from ``(data.shuffle_seed, epoch, rank)``."""
    kwargs: dict[str, Any] = {"batch_size": cfg.train.batch_size, "batch_format": "numpy", "drop_last": shuffle}
    if shuffle:
        kwargs.update(local_shuffle_buffer_size=cfg.data.shuffle_buffer, local_shuffle_seed=cfg.data.shuffle_seed + 1009 * epoch + rank)
    return shard.iter_batches(**kwargs)


class Encoders:
    """Fills in what the dataset did not precompute, with the frozen encoders."""

    def __init__(self, components, image_size: int):
        self.c, self.image_size = components, image_size

    @torch.no_grad()
    def complete(self, batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
        from einops import rearrange

        from model import encoders as E

        out = dict(batch)
        if "latents" not in out:
            frames = out["frames"]  # (b, f, h, w, 3) uint8
            z = E.encode_latents(self.c.vae, E.frames_to_pixels(rearrange(frames, "b f h w c -> (b f) h w c")))
            out["latents"] = rearrange(z.float(), "(b f) c h w -> b c f h w", b=frames.shape[0])
        if "text_embedding" not in out:
            enc = E.encode_prompts(self.c.tokenizer, self.c.text_encoder, out["caption"])
            out["text_embedding"], out["attention_mask"] = enc["embeddings"].float(), enc["attention_mask"]
        if "image_tokens" not in out and self.c.image_encoder is not None:
            first = out["frames"][:, 0]
            out["image_tokens"] = E.encode_image_tokens(self.c.image_encoder, E.image_encoder_pixels(first, self.image_size)).float()
        return {k: (v.to(device) if torch.is_tensor(v) and k != "frames" else v) for k, v in out.items()}
