"""Motion intensity of a clip: optical-flow magnitude (RAFT or Farneback), SSIM, 10 levels.

Scores (both stored per clip):

* ``flow_score`` = mean over adjacent sampled-frame pairs and over pixels of the optical-flow
  magnitude, divided by the frame diagonal, times 100: *percent of the frame diagonal the
  content moves per sampled frame*. Dividing by the diagonal makes it independent of the
  resolution flow runs at; frames are downscaled to at most ``flow.max_side`` first.
* ``ssim_score`` = mean over adjacent pairs of SSIM(x_i, x_i+1) (the paper's measure; 1 =
  identical frames, lower = more motion), computed on greyscale frames with an 11x11 Gaussian
  window (torchmetrics).

Levels: the chosen score (flow, or 1 - SSIM) is cut into ``levels`` bins at the dataset's
quantiles; :func:`assign_levels` gives 1 to a score at or below the lowest edge (so a static
clip, score 0, is level 1) and ``levels`` above the highest.

The Ray Data scoring stage: :func:`score_batch_farneback` (CPU tasks) or :class:`RaftScorer` (an
actor that loads RAFT once); :func:`add_levels` once the dataset's bin edges are known.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import pyarrow as pa
import torch

from common.resources import torch_device
from pipelines.config import FlowConfig
from pipelines.video import Batch, frames_of, ok_mask, to_arrow


# --------------------------------------------------------------------------- flow


RAFT_MIN_SIDE = 128  # RAFT's correlation pyramid needs feature maps of >= 16 px (input / 8)


def flow_input_size(height: int, width: int, max_side: int, min_side: int = 8) -> tuple[int, int]:
    """Size flow is computed at: longer side <= max_side, shorter side >= min_side (wins), multiples of 8.

    The score divides by the diagonal, so resizing does not change it (up to estimator accuracy).
    """
    scale = min(1.0, max_side / max(height, width))
    scale = max(scale, min_side / min(height, width))
    return max(8, int(round(height * scale / 8)) * 8), max(8, int(round(width * scale / 8)) * 8)


def _resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if frames.shape[1:3] == size:
        return frames
    shrink = size[0] <= frames.shape[1]
    return np.stack([cv2.resize(f, (size[1], size[0]), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR) for f in frames])


def farneback_flow(frames: np.ndarray) -> np.ndarray:
    """OpenCV Farneback flow between adjacent frames.

    ``frames`` uint8 (frames, height, width, 3) -> float32 (frames - 1, height, width, 2) in
    pixels (dx, dy) from frame i to frame i + 1.
    """
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    flows = [
        cv2.calcOpticalFlowFarneback(a, b, None, pyr_scale=0.5, levels=3, winsize=9, iterations=3, poly_n=5, poly_sigma=1.1, flags=0)
        for a, b in zip(grey[:-1], grey[1:])
    ]
    return np.stack(flows).astype(np.float32)


def flow_score(flows: np.ndarray | torch.Tensor) -> float:
    """(pairs, height, width, 2) flow in pixels -> percent of the diagonal moved per frame."""
    flows = torch.as_tensor(flows, dtype=torch.float32)
    height, width = flows.shape[1], flows.shape[2]
    magnitude = flows.norm(dim=-1).mean().item()
    return 100.0 * magnitude / math.hypot(height, width)


def load_raft(cfg: FlowConfig, device: str = "cpu") -> torch.nn.Module:
    """torchvision RAFT (large or small) with real weights, or random ones if explicitly allowed.

    Weights come from ``cfg.weights`` (a .pth/.pt state dict, loaded with ``weights_only=True``,
    or .safetensors), else from torchvision's cache (``$TORCH_HOME/hub/checkpoints``), which
    torchvision fills on a machine with internet.
    """
    from torchvision.models import optical_flow

    builder = getattr(optical_flow, cfg.backend)
    weights_enum = {"raft_large": optical_flow.Raft_Large_Weights, "raft_small": optical_flow.Raft_Small_Weights}[cfg.backend]
    model = builder(weights=None, progress=False)
    if cfg.weights is not None:
        path = Path(cfg.weights)
        if not path.is_file():
            raise FileNotFoundError(f"flow.weights: no such file {str(path)!r} (a {cfg.backend} state dict)")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    else:
        weights = weights_enum.DEFAULT
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        if cached.is_file():
            model.load_state_dict(torch.load(cached, map_location="cpu", weights_only=True))
        elif not cfg.allow_random_init:
            raise FileNotFoundError(
                f"flow.backend={cfg.backend}: no RAFT weights. Looked in torchvision's cache at {cached}. "
                f"Download them on a machine with internet (`python -c \"import torchvision; "
                f"torchvision.models.optical_flow.{cfg.backend}(weights='DEFAULT')\"`) and copy the cache, "
                "or pass --flow.weights FILE, or use --flow.backend farneback (no weights needed). "
                "Random weights (--flow.allow_random_init true) are only for plumbing tests."
            )
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model = builder(weights=None, progress=False)
    return model.eval().to(device)


@torch.no_grad()
def raft_flow(model: torch.nn.Module, clips: torch.Tensor, iters: int) -> torch.Tensor:
    """RAFT flow of a batch of clips.

    ``clips`` uint8 (batch, frames, height, width, 3), height/width multiples of 8 ->
    float32 (batch, frames - 1, height, width, 2) in pixels.
    """
    b, f = clips.shape[:2]
    device = next(model.parameters()).device
    x = clips.to(device).permute(0, 1, 4, 2, 3).float() / 127.5 - 1.0  # (b, f, 3, h, w) in [-1, 1]
    first = x[:, :-1].reshape(b * (f - 1), *x.shape[2:])
    second = x[:, 1:].reshape(b * (f - 1), *x.shape[2:])
    flow = model(first, second, num_flow_updates=iters)[-1]  # (b*(f-1), 2, h, w)
    return flow.reshape(b, f - 1, 2, *flow.shape[-2:]).permute(0, 1, 3, 4, 2).float().cpu()


# --------------------------------------------------------------------------- SSIM


def ssim_score(frames: np.ndarray | torch.Tensor) -> float:
    """Mean SSIM of adjacent frames: uint8 (frames, height, width, 3) -> float in [-1, 1]."""
    from torchmetrics.functional.image import structural_similarity_index_measure as ssim

    x = torch.tensor(np.asarray(frames), dtype=torch.float32)  # a copy: decoded frames may be read-only buffers
    grey = (x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114).unsqueeze(1)  # (f, 1, h, w)
    kernel = min(11, (min(grey.shape[-2:]) // 2) * 2 - 1)
    value = ssim(grey[1:], grey[:-1], data_range=255.0, kernel_size=kernel, reduction="elementwise_mean")
    return float(value)


# --------------------------------------------------------------------------- levels


def intensity_value(flow: Any, ssim: Any, source: str) -> Any:
    """What levels are cut from (scalars or arrays): larger = more motion."""
    return flow if source == "flow" else 1.0 - ssim


def compute_bin_edges(values: Sequence[float] | np.ndarray, levels: int) -> list[float]:
    """``levels - 1`` inner edges at the quantiles 1/levels ... (levels-1)/levels."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise ValueError("cannot compute intensity bins: no clip has a finite motion score")
    return [float(q) for q in np.quantile(values, np.arange(1, levels) / levels)]


def assign_levels(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Level 1..len(edges)+1: 1 + the number of edges strictly below the value."""
    return (1 + np.searchsorted(np.asarray(edges), np.asarray(values, dtype=np.float64), side="left")).astype(np.int32)


def bins_info(edges: Sequence[float], source: str, levels: int, n_clips: int) -> dict[str, Any]:
    """What ``intensity_bins.json`` holds."""
    return {"source": source, "levels": levels, "method": "quantile", "edges": list(map(float, edges)), "n_clips": n_clips}


def edges_from_info(info: dict[str, Any], source: str, levels: int, where: str = "intensity.bins") -> list[float]:
    """Edges of an earlier run's ``intensity_bins.json``; must match source and level count."""
    edges = info.get("edges", [])
    if info.get("source") != source or info.get("levels") != levels or len(edges) != levels - 1:
        raise ValueError(
            f"{where}: holds source={info.get('source')!r} levels={info.get('levels')!r} with {len(edges)} edges; "
            f"this run wants source={source!r} levels={levels}"
        )
    return [float(e) for e in edges]


# --------------------------------------------------------------------------- per-clip scoring


def score_clip_farneback(frames: np.ndarray, max_side: int) -> tuple[float, float]:
    """(flow_score, ssim_score) of one uint8 (frames, height, width, 3) clip on the CPU."""
    small = _resize_frames(frames, flow_input_size(frames.shape[1], frames.shape[2], max_side))
    return flow_score(farneback_flow(small)), ssim_score(frames)


def score_clips_raft(model: torch.nn.Module, clips: list[np.ndarray], cfg: FlowConfig) -> list[tuple[float, float]]:
    """(flow_score, ssim_score) per clip, RAFT over the batch (clips of equal shape)."""
    size = flow_input_size(clips[0].shape[1], clips[0].shape[2], cfg.max_side, RAFT_MIN_SIDE)
    batch = torch.from_numpy(np.stack([_resize_frames(c, size) for c in clips]))
    flows = raft_flow(model, batch, cfg.raft_iters)
    return [(flow_score(flow), ssim_score(clip)) for flow, clip in zip(flows, clips)]


# --------------------------------------------------------------------------- the scoring stage (Ray Data)


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


def add_levels(batch: Batch, edges: list[float], source: str) -> Batch:
    """Adds ``intensity_level`` (1..levels) from the scores and the dataset's bin edges."""
    values = intensity_value(batch["flow_score"], batch["ssim_score"], source)
    return {**batch, "intensity_level": assign_levels(values, edges)}


# --------------------------------------------------------------------------- the dataset's histogram


def histogram_png(flow: list[float], ssim: list[float], edges: list[float], source: str) -> bytes:
    """The dataset's ``intensity_hist.png``: both scores' histograms, the bin edges on the one that sets the levels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    axes[0].hist(flow, bins=30, color="tab:blue")
    axes[0].set(title="flow_score (% of diagonal / frame)", xlabel="score", ylabel="clips")
    axes[1].hist(ssim, bins=30, color="tab:orange")
    axes[1].set(title="ssim_score (adjacent frames)", xlabel="SSIM")
    edge_axis = axes[0] if source == "flow" else None
    for edge in edges if edge_axis is not None else []:
        edge_axis.axvline(edge, color="k", lw=0.6, ls="--")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()
