"""The preprocessed Parquet dataset as training batches.

The driver opens the dataset (:func:`open_dataset`: checks ``dataset.json``, splits train /
validation by a hash of the videoid, so all clips of a video land on the same side) and hands
Ray Train the two lazy datasets; each worker iterates its shard and :func:`collate` turns a
numpy batch into tensors. When the dataset lacks latents, tokens or caption embeddings,
:class:`Encoders` fills them in on the worker with the frozen encoders. The array
columns are Arrow tensor columns, so a numpy batch already holds each as one ndarray.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from common.config import ConfigError
from pipelines.schema import read_dataset_info
from training.config import DataConfig, TrainConfig


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
    ``latents`` float32 (batch, 4, frames, h, w), ``text_embedding`` float32 (batch, 77, dim),
    ``attention_mask`` int64 (batch, 77), ``image_tokens`` float32 (batch, patches, dim), plus
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
