"""What travels from the HTTP ingress to the model deployment and back (plain dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class AnimateRequest:
    """One checked request. ``image``: uint8 (height, width, 3) RGB, already centre-cropped and
    resized to the model's resolution (the same ``model.image`` functions the pipeline uses)."""

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
