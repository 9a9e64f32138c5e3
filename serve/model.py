"""The model side of the Serve app: the ``LivePhotoModel`` deployment that holds a pipeline
(loaded by ``LivePhotoPipeline.from_pretrained`` from any model source, model/load.py) and
batches requests, and what travels between it and the HTTP ingress (serve/api.py):
:class:`AnimateRequest` in, :class:`AnimateResult` out (plain dataclasses).

:func:`animate_batch` is a plain function (no Ray): tests and the benchmark call it directly;
the deployment only adds ``@serve.batch`` around it.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from ray import serve

from common.config import ConfigError
from common.resources import torch_device
from serve.config import ServeConfig


@dataclass
class AnimateRequest:
    """One checked request. ``image``: uint8 (height, width, 3) RGB, already centre-cropped and
    resized to the model's resolution (the same ``model.media`` functions the pipeline uses)."""

    image: np.ndarray
    prompt: str
    intensity: int
    negative_prompt: str
    num_frames: int
    num_inference_steps: int
    guidance_scale: float
    seed: int
    guidance_interval: tuple[float, float] = (0.0, 1.0)

    def batch_key(self) -> tuple:
        """Requests with equal keys can share one forward (prompts, images, intensities and seeds may differ)."""
        height, width = self.image.shape[:2]
        return (self.num_frames, self.num_inference_steps, float(self.guidance_scale), tuple(self.guidance_interval), height, width)


@dataclass
class AnimateResult:
    """``frames``: uint8 (frames, height, width, 3); ``inference_s``: seconds of the forward that
    made it; ``batch_size``: how many requests shared that forward."""

    frames: np.ndarray
    inference_s: float
    batch_size: int


def animate_batch(pipe, requests: Sequence[AnimateRequest]) -> list[AnimateResult | Exception]:
    """Run ``requests`` in as few forwards as possible: one per group of equal ``batch_key``.

    Returns one entry per request, in order: its frames, or the exception its group raised
    (one bad group never fails the others).
    """
    groups: dict[tuple, list[int]] = collections.defaultdict(list)
    for i, req in enumerate(requests):
        groups[req.batch_key()].append(i)
    results: list[AnimateResult | Exception] = [None] * len(requests)  # type: ignore[list-item]
    for (num_frames, steps, guidance, interval, height, width), index in groups.items():
        group = [requests[i] for i in index]
        start = time.perf_counter()
        try:
            out = pipe(
                image=[r.image for r in group],
                prompt=[r.prompt for r in group],
                intensity=[r.intensity for r in group],
                negative_prompt=[r.negative_prompt for r in group],
                seed=[r.seed for r in group],
                num_frames=num_frames,
                height=height,
                width=width,
                num_inference_steps=steps,
                guidance_scale=guidance,
                guidance_interval=interval,
                output_type="np",
            )
        except Exception as exc:  # noqa: BLE001 - handed back to the request(s) at fault
            if len(index) == 1:
                results[index[0]] = exc
            else:  # find which request failed: run each alone, so the others still get their video
                for i, r in zip(index, group):
                    results[i] = animate_batch(pipe, [r])[0]
            continue
        seconds = time.perf_counter() - start
        frames = np.rint(np.clip(out.frames, 0.0, 1.0) * 255.0).astype(np.uint8)  # (batch, frames, H, W, 3)
        for j, i in enumerate(index):
            results[i] = AnimateResult(frames=frames[j], inference_s=seconds, batch_size=len(index))
    return results


def probe_pipeline(pipe, resolution: int) -> None:
    """One tiny forward (a grey photo, 2 frames, 1 step); raises RuntimeError naming the cause
    if the pipeline cannot run."""
    photo = np.full((resolution, resolution, 3), 128, np.uint8)
    result = animate_batch(pipe, [AnimateRequest(photo, "a photo", 1, "", 2, 1, 1.0, 0)])[0]
    if isinstance(result, Exception):
        raise RuntimeError(f"the pipeline cannot run: {type(result).__name__}: {str(result).splitlines()[0][:300]}") from result


def model_info(pipe, cfg: ServeConfig) -> dict[str, Any]:
    """What is loaded, as ``GET /v1/model`` shows it (no weights paths beyond the configured source)."""
    mcfg = pipe.cfg
    max_frames = int(pipe.model.max_frames)
    if cfg.max_num_frames is not None:
        max_frames = min(max_frames, cfg.max_num_frames)
    return {
        "model": cfg.model,
        "source": cfg.model_kind,
        "resolution": int(mcfg.resolution),
        "num_frames": int(min(mcfg.num_frames, max_frames)),
        "max_frames": max_frames,
        "intensity_levels": int(mcfg.intensity_levels),
        "device": str(pipe.device),
        "dtype": str(pipe.dtype).replace("torch.", ""),
        "scheduler": type(pipe.scheduler).__name__,
    }


@serve.deployment(name="LivePhotoModel")
class LivePhotoModel:
    """Holds the pipeline on its device; ``animate`` calls from all clients are batched."""

    def __init__(self, cfg: ServeConfig):
        import torch

        self.cfg = cfg
        device = torch_device(cfg.device)
        dtype = getattr(torch, cfg.dtype)
        if device == "cpu" and dtype != torch.float32:
            raise ConfigError(f"dtype: must be float32 on cpu, got {cfg.dtype}")
        from model.pipeline import LivePhotoPipeline

        self.pipe = LivePhotoPipeline.from_pretrained(
            cfg.model, tracking_uri=cfg.mlflow_tracking_uri, **cfg.sources.overrides()
        ).to(device, dtype)
        if cfg.compile:
            self.pipe.compile_unet()
        self.pipe.set_progress_bar_config(disable=True)
        self.info = model_info(self.pipe, cfg)
        self.batch_sizes: collections.Counter[int] = collections.Counter()
        self._batched.set_max_batch_size(cfg.max_batch_size)
        self._batched.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)
        self.lock = asyncio.Lock()  # one forward at a time: the scheduler holds per-call state
        self.failure: str | None = None  # why the pipeline cannot run (the replica is then unhealthy)
        self.suspect = False  # a request failed with more than a client error: probe before trusting
        probe_pipeline(self.pipe, self.info["resolution"])  # a replica that cannot run never becomes ready

    async def describe(self) -> dict[str, Any]:
        """Model info plus the batch sizes this replica has seen: ``{requests in one @serve.batch call: count}``."""
        return {
            **self.info,
            "max_batch_size": self.cfg.max_batch_size,
            "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
        }

    async def ready(self) -> bool:
        """True while the pipeline is known to run (``/healthz``)."""
        return self.failure is None

    async def check_health(self) -> None:
        """Called by Serve every ``health_check_period_s``; raising makes Serve replace this replica.

        After a request failed with anything but a client error (``ValueError``), the pipeline
        is probed with one tiny forward; if that fails too, the replica stays unhealthy.
        """
        if self.suspect and self.failure is None:
            async with self.lock:
                try:
                    await asyncio.to_thread(probe_pipeline, self.pipe, self.info["resolution"])
                    self.suspect = False
                except Exception as exc:  # noqa: BLE001 - reported to Serve below
                    self.failure = str(exc)
        if self.failure is not None:
            raise RuntimeError(self.failure)

    async def animate(self, request: AnimateRequest) -> AnimateResult:
        result = await self._batched(request)
        if isinstance(result, Exception):
            raise result
        return result

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05)
    async def _batched(self, requests: list[AnimateRequest]) -> list[AnimateResult | Exception]:
        self.batch_sizes[len(requests)] += 1
        return await self.run(requests)

    async def run(self, requests: list[AnimateRequest]) -> list[AnimateResult | Exception]:
        """One batch through the pipeline; a failure beyond a client error makes the replica suspect."""
        # the forward runs in a thread so this replica keeps accepting (and queueing) requests
        async with self.lock:
            results = await asyncio.to_thread(animate_batch, self.pipe, requests)
        if any(isinstance(r, Exception) and not isinstance(r, ValueError) for r in results):
            self.suspect = True
        return results
