"""Metrics for generated clips, as pure functions plus small feature extractors loaded once.

Scales (see ``docs/EVALUATION.md``):

* :func:`frame_consistency` and :func:`clip_text_alignment` return cosine similarity x 100
  (the paper's Table 1/2 scale: LivePhoto DINO 90.8, CLIP 95.2).
* :func:`first_frame_fidelity` returns PSNR in dB (``inf`` for identical images) and SSIM
  in [-1, 1] (greyscale, 11x11 Gaussian window, the same SSIM as motion intensity).
* :func:`motion_stats` returns the motion-intensity flow score (percent of the frame
  diagonal moved per frame) and the mean flow in input pixels per frame.
* :func:`frechet_distance` / :func:`fvd` are the Frechet distance of Gaussian fits; FVD
  proper needs I3D features (:class:`I3DFeatures`, real weights only).

Videos are uint8 ``(frames, height, width, 3)`` RGB throughout; features are
``(items, dim)`` float arrays. Nothing here reads or writes files except the extractors,
which load weights from the path / hub id they are given.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr

from model.config import ModelConfig, model_preset
from model.encoders import (
    SEED_OFFSETS,
    build_tokenizer,
    frozen,
    image_encoder_pixels,
    load_image_encoder,
    load_pretrained,
    seeded,
    tokenize,
)
from pipelines.motion import _resize_frames, farneback_flow, flow_input_size, flow_score, ssim_score

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
TINY = "tiny"
"""``source`` value that builds a small random extractor from fixed seeds (tests, plumbing)."""
EVAL_SEED_OFFSET = 100  # random eval extractors get their own seed stream, apart from the model's
DIRECTIONS = ("left", "right", "up", "down", "none")


# --------------------------------------------------------------------------- input checks


def _video(video: np.ndarray | torch.Tensor, name: str = "video", min_frames: int = 1) -> np.ndarray:
    """``video`` as a uint8 (frames, height, width, 3) array, or a ValueError naming the problem."""
    video = video.numpy() if isinstance(video, torch.Tensor) else np.asarray(video)
    if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3 or video.shape[0] < min_frames:
        raise ValueError(
            f"{name}: expected uint8 (frames >= {min_frames}, height, width, 3), got {video.dtype} {tuple(video.shape)}"
        )
    return video


def _features(features: np.ndarray | torch.Tensor, name: str, min_rows: int) -> np.ndarray:
    """``features`` as a finite float64 (rows, dim) array with at least ``min_rows`` rows."""
    x = features.detach().cpu().double().numpy() if isinstance(features, torch.Tensor) else np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < min_rows or x.shape[1] < 1:
        raise ValueError(f"{name}: expected (rows >= {min_rows}, dim >= 1), got shape {tuple(x.shape)}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: contains NaN or inf")
    return x


def _unit_rows(x: np.ndarray, name: str) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"{name}: a feature vector is all zeros (cosine similarity undefined)")
    return x / norms


# --------------------------------------------------------------------------- consistency / CLIP-T


def frame_consistency(features: np.ndarray | torch.Tensor) -> float:
    """Mean cosine similarity of adjacent frames' features, x 100.

    ``features`` (frames >= 2, dim), one row per frame, e.g. from :class:`ClipImageFeatures`
    (the paper's "CLIP" consistency) or :class:`DinoFeatures` ("DINO"). Returns a float in
    [-100, 100]; 100 means every frame's features point the same way.
    """
    x = _unit_rows(_features(features, "features", 2), "features")
    cos = np.clip(np.sum(x[1:] * x[:-1], axis=-1), -1.0, 1.0)
    return float(100.0 * cos.mean())


def clip_text_alignment(image_feats: np.ndarray | torch.Tensor, text_feat: np.ndarray | torch.Tensor) -> float:
    """CLIP-T: mean over frames of cos(frame embedding, prompt embedding), x 100.

    ``image_feats`` (frames, d) projected CLIP image embeddings, ``text_feat`` (d,) the
    projected CLIP text embedding of the prompt, both from the same :class:`ClipImageFeatures`.
    (CLIPScore's 2.5 * max(cos, 0) is not applied.)
    """
    images = _unit_rows(_features(image_feats, "image_feats", 1), "image_feats")
    text = _features(np.asarray(text_feat.detach().cpu() if isinstance(text_feat, torch.Tensor) else text_feat).reshape(1, -1), "text_feat", 1)
    if text.shape[1] != images.shape[1]:
        raise ValueError(f"text_feat: dim {text.shape[1]} != image_feats dim {images.shape[1]}")
    cos = np.clip(images @ _unit_rows(text, "text_feat")[0], -1.0, 1.0)
    return float(100.0 * cos.mean())


# --------------------------------------------------------------------------- fidelity


def psnr(image: np.ndarray, reference: np.ndarray) -> float:
    """PSNR in dB of two uint8 arrays of equal shape: 10 log10(255^2 / MSE); ``inf`` if identical."""
    mse = float(np.mean((image.astype(np.float64) - reference.astype(np.float64)) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(255.0**2 / mse)


def first_frame_fidelity(video: np.ndarray | torch.Tensor, reference: np.ndarray | torch.Tensor) -> dict[str, float]:
    """How well the first generated frame keeps the input photo.

    ``video`` uint8 (frames, height, width, 3), ``reference`` uint8 (height, width, 3) (the
    photo at the video's size). Returns ``{"psnr": dB over all pixels and channels (inf when
    identical), "ssim": greyscale SSIM in [-1, 1] (1 = identical)}``.
    """
    video = _video(video)
    reference = reference.numpy() if isinstance(reference, torch.Tensor) else np.asarray(reference)
    if reference.dtype != np.uint8 or reference.shape != video.shape[1:]:
        raise ValueError(f"reference: expected uint8 {tuple(video.shape[1:])} (the video's frame shape), got {reference.dtype} {tuple(reference.shape)}")
    first = video[0]
    return {"psnr": psnr(first, reference), "ssim": ssim_score(np.stack([reference, first]))}


# --------------------------------------------------------------------------- motion


def motion_stats(video: np.ndarray | torch.Tensor, max_side: int = 256, min_shift: float = 0.25) -> dict[str, float | str]:
    """Motion magnitude and global direction of a clip from Farneback flow.

    ``video`` uint8 (frames >= 2, height, width, 3). Flow runs at most ``max_side`` px on the
    longer side (as in preprocessing). Returns

    * ``magnitude``: :func:`pipelines.motion.flow_score`, percent of the frame diagonal moved
      per frame (the quantity motion-intensity levels are cut from);
    * ``dx``, ``dy``: mean flow over pairs and pixels in *input* pixels per frame, image
      space (x to the right, y downwards);
    * ``direction``: the larger of |dx|, |dy| as ``"left"`` (dx < 0), ``"right"``, ``"up"``
      (dy < 0) or ``"down"``; ``"none"`` when the mean shift hypot(dx, dy) < ``min_shift`` px
      per frame (a static clip, or motion without net translation such as a zoom).
    """
    video = _video(video, min_frames=2)
    height, width = video.shape[1:3]
    size = flow_input_size(height, width, max_side)
    flows = farneback_flow(_resize_frames(video, size))  # (frames - 1, h, w, 2) in flow pixels
    dx = float(flows[..., 0].mean()) * width / size[1]
    dy = float(flows[..., 1].mean()) * height / size[0]
    if math.hypot(dx, dy) < min_shift:
        direction = "none"
    elif abs(dx) >= abs(dy):
        direction = "left" if dx < 0 else "right"
    else:
        direction = "up" if dy < 0 else "down"
    return {"magnitude": flow_score(flows), "dx": dx, "dy": dy, "direction": direction}


def intensity_tracking(requested: Sequence[float], measured: Sequence[float]) -> float:
    """Spearman rank correlation between requested intensity levels and measured motion.

    ``requested`` (n,) levels (1..10) given to the model, ``measured`` (n,) e.g.
    ``motion_stats(video)["magnitude"]`` of each generated clip. 1.0 = motion grows
    monotonically with the requested level.
    """
    requested, measured = np.asarray(requested, dtype=np.float64), np.asarray(measured, dtype=np.float64)
    if requested.ndim != 1 or requested.shape != measured.shape or requested.size < 2:
        raise ValueError(f"requested/measured: need two 1-D sequences of equal length >= 2, got {requested.shape} and {measured.shape}")
    for name, values in (("requested", requested), ("measured", measured)):
        if np.ptp(values) == 0:
            raise ValueError(f"{name}: all values equal ({values[0]}); rank correlation is undefined")
    return float(spearmanr(requested, measured).statistic)


# --------------------------------------------------------------------------- Frechet distance / FVD


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6) -> float:
    """Frechet distance of N(mu1, sigma1) and N(mu2, sigma2).

    ``mu*`` (d,), ``sigma*`` (d, d). d^2 = |mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 sqrt(sigma1 sigma2)).
    If the product's square root is not finite (singular covariances), ``eps`` is added to
    both diagonals, as pytorch-fid does.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"need mu (d,) and sigma (d, d) of one d; got {mu1.shape}, {sigma1.shape}, {mu2.shape}, {sigma2.shape}")
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(d) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"frechet_distance: sqrtm has a large imaginary part ({np.abs(covmean.imag).max():.3g})")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def gaussian_fit(features: np.ndarray | torch.Tensor, name: str = "features") -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and unbiased covariance (d, d) of ``features`` (n >= 2, d)."""
    x = _features(features, name, 2)
    return x.mean(axis=0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def fvd(features_real: np.ndarray | torch.Tensor, features_fake: np.ndarray | torch.Tensor) -> float:
    """Frechet distance between Gaussian fits of two feature sets.

    ``features_real`` (n, d), ``features_fake`` (m, d), one row per clip. With
    :class:`I3DFeatures` rows this is FVD; with per-frame image features it is a FID.
    Reported FVDs use a few thousand clips: covariance estimates from fewer than d rows are
    rank-deficient and the value is biased upwards.
    """
    mu1, sigma1 = gaussian_fit(features_real, "features_real")
    mu2, sigma2 = gaussian_fit(features_fake, "features_fake")
    if mu1.shape != mu2.shape:
        raise ValueError(f"features_real dim {mu1.shape[0]} != features_fake dim {mu2.shape[0]}")
    return frechet_distance(mu1, sigma1, mu2, sigma2)


# --------------------------------------------------------------------------- feature extractors


def _square_pixels(video: np.ndarray, size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (frames, h, w, 3) -> centre square crop, bicubic resize, normalise: (frames, 3, size, size)."""
    h, w = video.shape[1:3]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    x = torch.from_numpy(np.ascontiguousarray(video[:, top : top + side, left : left + side])).movedim(-1, 1).float() / 255.0
    x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def _how(example: str) -> str:
    return (
        f"Download it on a machine with internet (e.g. `huggingface-cli download {example}`) and pass the local folder, "
        f"or source={TINY!r} for a random extractor (plumbing tests only; its scores mean nothing)."
    )


class ClipImageFeatures:
    """CLIP image and text embeddings (projected, as CLIP-T and CLIP consistency use them).

    ``source``: a local folder or hub id of a full CLIP checkpoint (vision + text + tokenizer,
    e.g. ``openai/clip-vit-large-patch14``), or ``"tiny"`` for a small random CLIP built from
    fixed seeds. Missing weights raise :class:`model.encoders.WeightsNotFoundError` naming
    ``source``. Call with uint8 (frames, height, width, 3) -> float32 (frames, proj_dim).
    """

    def __init__(self, source: str, device: str = "cpu", local_files_only: bool = False, batch_size: int = 16):
        from transformers import (
            CLIPTextConfig,
            CLIPTextModelWithProjection,
            CLIPTokenizer,
            CLIPVisionConfig,
            CLIPVisionModelWithProjection,
        )

        self.device, self.batch_size, self.source = device, batch_size, source
        if source == TINY:
            tiny = ModelConfig(**model_preset("tiny"))
            self.tokenizer = build_tokenizer(tiny)
            seed = tiny.seed + EVAL_SEED_OFFSET
            vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                      image_size=32, patch_size=8, projection_dim=16)
            text = CLIPTextConfig(vocab_size=len(self.tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                  num_attention_heads=2, max_position_embeddings=77, projection_dim=16,
                                  bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
            with seeded(seed + SEED_OFFSETS["image_encoder"]):
                self.vision = CLIPVisionModelWithProjection(vision)
            with seeded(seed + SEED_OFFSETS["text_encoder"]):
                self.text_model = CLIPTextModelWithProjection(text)
        else:
            how, kw = _how("openai/clip-vit-large-patch14"), dict(local_files_only=local_files_only)
            self.vision = load_pretrained("CLIP vision", source, how, CLIPVisionModelWithProjection.from_pretrained, **kw)
            self.text_model = load_pretrained("CLIP text", source, how, CLIPTextModelWithProjection.from_pretrained, **kw)
            self.tokenizer = load_pretrained("CLIP tokenizer", source, how, CLIPTokenizer.from_pretrained, **kw)
        self.vision, self.text_model = frozen(self.vision).to(device), frozen(self.text_model).to(device)
        self.image_size = self.vision.config.image_size

    @torch.no_grad()
    def __call__(self, video: np.ndarray | torch.Tensor) -> np.ndarray:
        """uint8 (frames, height, width, 3) -> float32 (frames, proj_dim) image embeddings."""
        video = _video(video)
        out = []
        for start in range(0, len(video), self.batch_size):
            pixels = _square_pixels(video[start : start + self.batch_size], self.image_size, CLIP_MEAN, CLIP_STD)
            out.append(self.vision(pixel_values=pixels.to(self.device)).image_embeds.float().cpu())
        return torch.cat(out).numpy()

    @torch.no_grad()
    def text(self, prompts: Sequence[str]) -> np.ndarray:
        """``prompts`` (n,) -> float32 (n, proj_dim) text embeddings (77 tokens, truncated)."""
        if isinstance(prompts, str) or len(prompts) == 0:
            raise ValueError(f"prompts: expected a non-empty list of strings, got {prompts!r}")
        input_ids, attention_mask = tokenize(self.tokenizer, prompts)
        out = self.text_model(input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device))
        return out.text_embeds.float().cpu().numpy()


class DinoFeatures:
    """DINOv2 CLS-token features, one row per frame (the paper's "DINO" consistency).

    ``source``: a local folder or hub id of a DINOv2 checkpoint (e.g. ``facebook/dinov2-large``,
    the content encoder's), or ``"tiny"`` for the tiny random DINOv2 of ``model_preset("tiny")``.
    Loading goes through :func:`model.encoders.load_image_encoder`, so missing weights raise
    its :class:`~model.encoders.WeightsNotFoundError` naming ``source``. Frames are
    centre-cropped to a square and resized to ``image_size`` (224 for real weights).
    """

    def __init__(self, source: str, device: str = "cpu", local_files_only: bool = False, batch_size: int = 16,
                 image_size: int = 224):
        if source == TINY:
            cfg = ModelConfig(**model_preset("tiny"))
        else:
            cfg = ModelConfig(image_encoder=source, local_files_only=local_files_only, image_encoder_size=image_size)
        self.model = load_image_encoder(cfg).to(device)
        self.image_size, self.device, self.batch_size, self.source = cfg.image_encoder_size, device, batch_size, source

    @torch.no_grad()
    def __call__(self, video: np.ndarray | torch.Tensor) -> np.ndarray:
        """uint8 (frames, height, width, 3) -> float32 (frames, dim) CLS features."""
        video = _video(video)
        h, w = video.shape[1:3]
        side = min(h, w)
        square = video[:, (h - side) // 2 : (h - side) // 2 + side, (w - side) // 2 : (w - side) // 2 + side]
        out = []
        for start in range(0, len(square), self.batch_size):
            pixels = image_encoder_pixels(np.ascontiguousarray(square[start : start + self.batch_size]), self.image_size)
            out.append(self.model(pixel_values=pixels.to(self.device)).last_hidden_state[:, 0].float().cpu())
        return torch.cat(out).numpy()


I3D_URL = "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt"


class I3DFeatures:
    """Kinetics-400 I3D features for FVD, from the TorchScript checkpoint StyleGAN-V published.

    ``path``: the ``i3d_torchscript.pt`` file (a TorchScript port of the TF-Hub I3D used by
    the reference FVD code; download from ``I3D_URL``). There is no random fallback: FVD of
    made-up features means nothing. Call with uint8 (clips, frames, height, width, 3), all
    clips the same shape, frames >= 10 (16 is usual) -> float32 (clips, 400) logits-layer
    features (``return_features=True``; the detector rescales to [-1, 1] and resizes to 224).

    Not run in this repository's tests (no weights here).
    """

    def __init__(self, path: str | Path, device: str = "cpu"):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"I3D weights not found at {str(path)!r}; FVD needs the I3D checkpoint (e.g. StyleGAN-V's "
                f"i3d_torchscript.pt from {I3D_URL}). Download it on a machine with internet and pass its path."
            )
        self.model = torch.jit.load(str(path), map_location=device).eval()
        self.device = device

    @torch.no_grad()
    def __call__(self, clips: np.ndarray | torch.Tensor) -> np.ndarray:
        """uint8 (clips, frames, height, width, 3) -> float32 (clips, feature_dim)."""
        clips = torch.as_tensor(np.asarray(clips))
        if clips.dtype != torch.uint8 or clips.ndim != 5 or clips.shape[-1] != 3:
            raise ValueError(f"clips: expected uint8 (clips, frames, height, width, 3), got {clips.dtype} {tuple(clips.shape)}")
        videos = clips.permute(0, 4, 1, 2, 3).float().to(self.device)  # (clips, 3, frames, h, w) in [0, 255]
        return self.model(videos, rescale=True, resize=True, return_features=True).float().cpu().numpy()
