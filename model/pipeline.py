"""``LivePhotoPipeline``: photo + motion prompt + intensity -> video, diffusers style.

    pipe = LivePhotoPipeline.from_pretrained("tiny")           # or a save_pretrained folder
    out = pipe(image, "the bear is dancing", intensity=5, seed=0)
    export_video(out.frames[0], "bear.mp4", fps=8)

Sampling: DDIM (or ``ModelConfig.scheduler``) with classifier-free guidance on the text only
(reference latent, intensity map and image tokens go to both branches), started from noise
blended with the DDIM-inverted reference latent (prior inversion, paper Sec. 3.4).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg
from diffusers.utils import BaseOutput
from einops import rearrange, repeat

from common.config import from_dict, to_dict
from model import encoders
from model.build import LivePhotoComponents, assemble_network, build_scheduler
from model.config import ModelConfig, upgrade_saved_config
from model.encoders import frozen
from model.media import center_crop_resize, to_rgb
from model.network import LivePhotoModel
from model.pipeline_inputs import check_embeddings, check_inputs, gather_requests
from model.saving import COMPONENTS, SaveLoadMixin
from model.single_file import read_once
from model.sources import require_sources

DECODE_CHUNK = 16  # frames per VAE decode call


@dataclass
class LivePhotoPipelineOutput(BaseOutput):
    """``frames``: "np" float (batch, frames, height, width, 3) in [0, 1]; "pt" float (batch, frames,
    3, height, width) in [0, 1]; "pil" a list (batch) of lists of PIL images; "latent" (batch, 4,
    frames, h, w). ``token_weights``: (batch, 77) re-weighting of each prompt's tokens, or None.
    A diffusers ``BaseOutput``: ``out.frames``, ``out["frames"]`` and ``out[0]`` are the same."""

    frames: Any
    token_weights: torch.Tensor | None = None


class LivePhotoPipeline(SaveLoadMixin, DiffusionPipeline):
    """Photo + motion prompt + intensity -> video: a diffusers ``DiffusionPipeline``.

    Registered modules, as in AnimateDiff's pipeline: ``unet`` (the ``UNetMotionModel`` with
    LivePhoto's parts installed), ``motion_adapter`` (None once installed: its modules live in
    ``unet``), ``livephoto_adapter`` (:class:`~model.adapter.LivePhotoAdapter`), ``vae``,
    ``text_encoder``, ``tokenizer``, ``image_encoder`` (DINOv2, None when the content encoder is
    off) and ``scheduler``; the pipeline config holds the ``model_config`` (a ModelConfig as a
    dict). ``__init__`` builds every component passed as None from ``model_config`` (the
    pretrained sources it names, or seeds), and accepts ``unet`` as the base
    ``UNet2DConditionModel`` (then joined with ``motion_adapter``) or an assembled
    ``UNetMotionModel``. ``pipe.model`` is the assembled denoiser
    (:class:`~model.network.LivePhotoModel`), sharing the parameters of ``unet`` and
    ``livephoto_adapter``.
    Saving and loading: :class:`~model.saving.SaveLoadMixin`.
    """

    _optional_components = list(COMPONENTS)  # each one left None is built from model_config

    def __init__(
        self, unet=None, motion_adapter=None, livephoto_adapter=None, vae=None, text_encoder=None, tokenizer=None,
        image_encoder=None, scheduler=None, model_config=None,
    ):
        super().__init__()
        cfg = from_dict(ModelConfig, upgrade_saved_config(model_config or {}), prefix="model_config")
        if scheduler is not None and "scheduler" not in (model_config or {}):  # the config names the class when it can
            cfg = replace(cfg, scheduler=type(scheduler).__name__)
        needed = {"unet": unet is None, "motion_adapter": unet is None and motion_adapter is None, "vae": vae is None,
                  "text": text_encoder is None or tokenizer is None, "image_encoder": image_encoder is None}
        require_sources(cfg, tuple(name for name, missing in needed.items() if missing))  # all missing ones at once
        with read_once(cfg):  # a single-file base: one read for its UNet, VAE and CLIP
            self._build(cfg, unet, motion_adapter, livephoto_adapter, vae, text_encoder, tokenizer, image_encoder, scheduler)

    def _build(self, cfg, unet, motion_adapter, livephoto_adapter, vae, text_encoder, tokenizer, image_encoder, scheduler) -> None:
        """``__init__``'s body: build what is None, assemble the network, register the modules."""
        from diffusers import UNetMotionModel

        if cfg.use_content_encoder and image_encoder is None:
            image_encoder = encoders.load_image_encoder(cfg)
        image_dim = image_encoder.config.hidden_size if image_encoder is not None else None
        text_encoder = frozen(text_encoder) if text_encoder is not None else encoders.load_text_encoder(cfg)
        if isinstance(unet, UNetMotionModel):  # assembled already: training's network, or another pipeline's components
            installed = livephoto_adapter is not None and unet.conv_in is livephoto_adapter.conv_in
            alphas = build_scheduler(cfg).alphas_cumprod if cfg.reference_skip else None
            network = LivePhotoModel(cfg, unet, image_dim, alphas, adapter=livephoto_adapter)
            if not installed:
                network.eval()  # a network that trains keeps its mode and trainable flags
        else:
            network = assemble_network(cfg, unet, motion_adapter, livephoto_adapter, image_dim, text_encoder.config.hidden_size)
        self.model = network
        self.register_modules(
            unet=network.unet, motion_adapter=None, livephoto_adapter=network.adapter,
            vae=frozen(vae) if vae is not None else encoders.load_vae(cfg),
            text_encoder=text_encoder,
            tokenizer=tokenizer if tokenizer is not None else encoders.build_tokenizer(cfg),
            image_encoder=frozen(image_encoder) if image_encoder is not None else None,
            scheduler=build_scheduler(cfg, dict(scheduler.config) if scheduler is not None else None),
        )
        self.register_to_config(model_config=to_dict(cfg))

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_components(cls, components: LivePhotoComponents) -> "LivePhotoPipeline":
        """The pipeline around :func:`~model.build.build_livephoto`'s components (training's)."""
        c = components
        return cls(unet=c.model.unet, livephoto_adapter=c.model.adapter, vae=c.vae, text_encoder=c.text_encoder,
                   tokenizer=c.tokenizer, image_encoder=c.image_encoder, scheduler=c.scheduler, model_config=to_dict(c.model.cfg))

    @property
    def cfg(self) -> ModelConfig:
        """The ModelConfig (``self.config`` is the diffusers pipeline config)."""
        return self.model.cfg

    def to(self, device: str | torch.device | torch.dtype | None = None, dtype: torch.dtype | None = None) -> "LivePhotoPipeline":
        """``to("cuda")``, ``to(torch.bfloat16)`` or ``to("cuda", torch.float16)``, as a diffusers pipeline."""
        if isinstance(device, torch.dtype):
            device, dtype = None, device
        for module in (self.unet, self.livephoto_adapter, self.vae, self.text_encoder, self.image_encoder):
            if isinstance(module, torch.nn.Module):
                same = dtype is None or all(p.dtype == dtype for p in module.parameters())  # unet and adapter share some
                module.to(device=device, **({} if same else {"dtype": dtype}))  # diffusers warns on every dtype cast
        return self

    def progress_bar(self, iterable=None, total=None):
        """diffusers' tqdm bar over denoising steps, labelled "denoising"; ``set_progress_bar_config``
        options (e.g. ``disable=True``) apply."""
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, **{"desc": "denoising", **getattr(self, "_progress_bar_config", {})})

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def vae_scale_factor(self) -> int:
        return encoders.vae_scale_factor(self.vae)

    def compile_unet(self, **compile_kwargs) -> "LivePhotoPipeline":
        """``torch.compile`` the denoiser's UNet (``compile_kwargs`` go to ``torch.compile``, e.g.
        ``mode="max-autotune"``). For sampling only: the first call at a new shape compiles (a
        minute or more), later ones run the compiled graph; don't train or ``save_pretrained``
        a compiled pipeline (the weights then sit under ``_orig_mod``)."""
        if not isinstance(self.model.unet, torch._dynamo.eval_frame.OptimizedModule):
            self.model.unet = torch.compile(self.model.unet, **compile_kwargs)
        return self

    # ------------------------------------------------------------------ steps

    @staticmethod
    def preprocess_image(image, height: int, width: int) -> np.ndarray:
        """PIL image / uint8 array -> uint8 (height, width, 3): RGB (alpha over white), centre crop, resize."""
        if image is None:
            raise ValueError("image: required")
        return center_crop_resize(to_rgb(image), height, width)

    @torch.no_grad()
    def encode_prompt(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """CLIP embeddings (batch, 77, dim) in the model dtype and token mask (batch, 77)."""
        out = encoders.encode_prompts(self.tokenizer, self.text_encoder, prompts)
        return out["embeddings"].to(self.device, self.dtype), out["attention_mask"].to(self.device)

    @torch.no_grad()
    def encode_reference(self, images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        """uint8 (batch, H, W, 3) -> VAE posterior-mean latents (batch, 4, h, w) and DINOv2 tokens (batch, patches, dim) | None."""
        latents = encoders.encode_latents(self.vae, encoders.frames_to_pixels(images)).to(self.device, self.dtype)
        tokens = None
        if self.cfg.use_content_encoder:
            pixels = encoders.image_encoder_pixels(images, self.cfg.image_encoder_size)
            tokens = encoders.encode_image_tokens(self.image_encoder, pixels).to(self.device, self.dtype)
        return latents, tokens

    @staticmethod
    def initial_noise(shape: tuple[int, ...], generators: list[torch.Generator | None]) -> torch.Tensor:
        """Unit Gaussian (batch, 4, frames, h, w), drawn on the CPU request by request (device-independent)."""
        return torch.stack([torch.randn(shape, generator=g, dtype=torch.float32) for g in generators])

    @torch.no_grad()
    def invert_reference(self, reference: torch.Tensor, num_inference_steps: int, **conditions) -> torch.Tensor:
        """DDIM inversion of the reference latent (batch, 4, h, w) to the sampler's first timestep.

        The reference runs as a one-frame clip through the LivePhoto network with the
        conditional prompt (no guidance). Returns (batch, 4, h, w).
        """
        from diffusers import DDIMInverseScheduler

        config = dict(self.scheduler.config)
        if config.get("timestep_spacing") not in ("leading", "trailing"):
            config["timestep_spacing"] = "trailing"  # ends at t = T-1 like "linspace" starts there
        inverse = DDIMInverseScheduler.from_config(config)
        inverse.set_timesteps(num_inference_steps, device=self.device)
        latents = rearrange(reference, "b c h w -> b c 1 h w")
        for t in inverse.timesteps:
            noise = self.model(latents, t, reference_latents=reference, **conditions).sample
            latents = inverse.step(noise, t, latents).prev_sample
        return latents[:, :, 0]

    def blend_weights(self, num_frames: int, first: float, last: float) -> torch.Tensor:
        """a_n falling linearly from ``first`` (frame 0) to ``last`` (last frame): (frames,)."""
        return torch.linspace(first, last, num_frames, dtype=torch.float32)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(batch, 4, frames, h, w) -> float (batch, frames, 3, height, width) in [0, 1]."""
        flat = rearrange(latents, "b c f h w -> (b f) c h w")
        pixels = torch.cat([encoders.decode_latents(self.vae, chunk) for chunk in flat.split(DECODE_CHUNK)])
        pixels = ((pixels.float() + 1.0) / 2.0).clamp(0.0, 1.0)
        return rearrange(pixels, "(b f) c h w -> b f c h w", b=latents.shape[0])

    # ------------------------------------------------------------------ __call__

    @torch.no_grad()
    def __call__(
        self,
        image,
        prompt: str | Sequence[str] | None = None,
        intensity: int | Sequence[int] = 5,
        negative_prompt: str | Sequence[str] | None = None,
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 25,
        guidance_scale: float = 7.5,
        guidance_rescale: float = 0.0,
        guidance_interval: tuple[float, float] = (0.0, 1.0),
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        seed: int | Sequence[int] | None = None,
        prior_inversion: bool = True,
        prior_inversion_weights: tuple[float, float] | None = None,
        output_type: str = "np",
        num_videos_per_prompt: int = 1,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        prompt_attention_mask: torch.Tensor | None = None,
        negative_prompt_attention_mask: torch.Tensor | None = None,
        eta: float = 0.0,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
        return_dict: bool = True,
    ) -> LivePhotoPipelineOutput | tuple:
        """Animate ``image`` following ``prompt``.

        ``image``, ``prompt``, ``intensity``, ``negative_prompt``, ``generator`` and ``seed``
        may each be a list: a batch of requests (a length-1 list or a scalar is shared by all).
        ``image`` is a PIL image or a uint8 array (H, W[, 1|3|4]); it is converted to RGB
        (alpha over white), centre-cropped to square and resized to (height, width).
        ``num_frames``, ``height`` and ``width`` default to the model's (``cfg.num_frames``,
        ``cfg.resolution``). ``prior_inversion_weights`` = (first frame, last frame) blend weights, default
        ``(cfg.prior_inversion_first, cfg.prior_inversion_last)``.

        As in diffusers: ``num_videos_per_prompt`` videos per request (copy ``j`` of a request
        with ``seed=s`` uses seed ``s + j``, so copy 0 is the single video; with a generator the
        copies draw from it in turn); ``prompt_embeds`` / ``negative_prompt_embeds`` (batch,
        tokens, dim) in place of the prompts (with optional ``*_attention_mask``, default all
        ones); ``eta`` for DDIM; ``callback_on_step_end(pipe, i, t, tensors)`` after each step,
        given the tensors named in ``callback_on_step_end_tensor_inputs`` (of
        :data:`CALLBACK_TENSORS`) and returning a dict that may replace ``latents``;
        ``return_dict=False`` returns a tuple ``(frames, token_weights)``; ``guidance_rescale``
        (0..1) pulls the guided prediction's spread back to the conditional one's (Lin et al. 2023,
        the zero-terminal-SNR paper, section 3.4; diffusers' ``rescale_noise_cfg``);
        ``guidance_interval=(start, stop)`` guides only steps ``int(start * n) <= i < int(stop * n)``
        of the ``n`` (diffusers' guiders' ``start``/``stop``; Kynkaanniemi et al. 2024 guide only the
        middle-to-high noise levels) and runs the conditional branch alone elsewhere.
        """
        cfg = self.cfg
        num_frames = cfg.num_frames if num_frames is None else num_frames
        height = cfg.resolution if height is None else height
        width = cfg.resolution if width is None else width

        # 1. normalise the batch and check inputs
        req = gather_requests(image, prompt, intensity, negative_prompt, seed, generator, num_videos_per_prompt,
                              prompt_embeds, negative_prompt_embeds, callback_on_step_end_tensor_inputs)
        check_inputs(req.prompts, req.intensities, num_frames, height, width, num_inference_steps, guidance_scale, output_type,
                     guidance_rescale, guidance_interval, levels=cfg.intensity_levels, max_frames=self.model.max_frames)
        generators, batch = req.generators, req.batch
        do_cfg = guidance_scale > 1.0
        device, dtype = self.device, self.dtype
        tokens, dim = cfg.text_max_length, self.model.unet.config.cross_attention_dim

        # 2. preprocess the images and encode the conditions
        images = np.stack([self.preprocess_image(im, height, width) for im in req.images])
        reference, image_tokens = self.encode_reference(images)
        if prompt_embeds is not None:
            text, mask = check_embeddings("prompt_embeds", prompt_embeds, prompt_attention_mask, req.requests, req.copies, tokens, dim)
            text, mask = text.to(device, dtype), mask.to(device)
        else:
            text, mask = self.encode_prompt(req.prompts)
        levels = torch.tensor([int(x) for x in req.intensities], device=device)
        conditions = dict(encoder_hidden_states=text, intensity=levels, image_tokens=image_tokens, attention_mask=mask)
        token_weights = self.model.token_weights(text, mask)

        # 3. timesteps
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps

        # 4. initial latents: per-request noise, blended with the inverted reference (prior inversion)
        f = self.vae_scale_factor
        noise = self.initial_noise((self.model.latent_channels, num_frames, height // f, width // f), generators).to(device)
        if prior_inversion:
            first, last = prior_inversion_weights or (cfg.prior_inversion_first, cfg.prior_inversion_last)
            inverted = self.invert_reference(reference, num_inference_steps, **conditions).float()
            a = self.blend_weights(num_frames, first, last).to(device)
            a = rearrange(a, "f -> 1 1 f 1 1")
            noise = a * repeat(inverted, "b c h w -> b c f h w", f=num_frames) + (1.0 - a) * noise
        latents = (noise * self.scheduler.init_noise_sigma).to(dtype)

        # 5. conditions of both guidance branches: [unconditional; conditional]
        cond_only = dict(conditions, reference_latents=reference)
        if do_cfg:
            if negative_prompt_embeds is not None:
                neg_text, neg_mask = check_embeddings("negative_prompt_embeds", negative_prompt_embeds, negative_prompt_attention_mask,
                                                      req.requests, req.copies, tokens, dim)
                neg_text, neg_mask = neg_text.to(device, dtype), neg_mask.to(device)
            else:
                neg_text, neg_mask = self.encode_prompt(req.negative_prompts)
            both = lambda x: None if x is None else torch.cat([x, x])  # noqa: E731
            branch = dict(
                encoder_hidden_states=torch.cat([neg_text, text]), attention_mask=torch.cat([neg_mask, mask]),
                reference_latents=both(reference), intensity=both(levels), image_tokens=both(image_tokens),
            )
        else:
            branch = cond_only
        step_kwargs: dict[str, Any] = {}
        accepted = inspect.signature(self.scheduler.step).parameters
        if "generator" in accepted and batch == 1:
            step_kwargs["generator"] = generators[0]
        if "eta" in accepted:
            step_kwargs["eta"] = eta

        # 6. denoising loop
        guided = range(int(guidance_interval[0] * len(timesteps)), int(guidance_interval[1] * len(timesteps)))
        with self.progress_bar(total=len(timesteps)) as bar:
            for i, t in enumerate(timesteps):
                guide = do_cfg and i in guided
                model_input = torch.cat([latents, latents]) if guide else latents
                model_input = self.scheduler.scale_model_input(model_input, t)
                noise_pred = self.model(model_input, t, **(branch if guide else cond_only)).sample
                if guide:
                    uncond, cond = noise_pred.chunk(2)
                    noise_pred = uncond + guidance_scale * (cond - uncond)
                    if guidance_rescale > 0:
                        noise_pred = rescale_noise_cfg(noise_pred, cond, guidance_rescale)
                latents = self.scheduler.step(noise_pred, t, latents, **step_kwargs).prev_sample
                if callback_on_step_end is not None:
                    tensors = {"latents": latents, "noise_pred": noise_pred}
                    returned = callback_on_step_end(self, i, t, {k: tensors[k] for k in callback_on_step_end_tensor_inputs})
                    latents = (returned or {}).get("latents", latents)
                bar.update()

        # 7. decode
        if output_type == "latent":
            return self._output(latents, token_weights, return_dict)
        video = self.decode(latents)
        if output_type == "pt":
            frames: Any = video
        else:
            frames = rearrange(video, "b f c h w -> b f h w c").cpu().numpy()
            if output_type == "pil":
                from PIL import Image

                frames = [[Image.fromarray(np.rint(fr * 255).astype(np.uint8)) for fr in clip] for clip in frames]
        return self._output(frames, token_weights, return_dict)

    @staticmethod
    def _output(frames, token_weights, return_dict: bool):
        out = LivePhotoPipelineOutput(frames=frames, token_weights=token_weights)
        return out if return_dict else (frames, token_weights)
