"""The LivePhoto denoising network: an AnimateDiff ``UNetMotionModel`` with the paper's additions.

Built around an unmodified diffusers ``UNetMotionModel`` (SD 1.5 blocks + AnimateDiff motion
modules); the additions, one :class:`~model.adapter.LivePhotoAdapter`, are installed into it, not forked:

* ``conv_in`` widened from 4 to 10 input channels per frame (new channels zero-initialised):
  noised latent (4) | reference latent (4) | frame-embedding map (1) | intensity map (1).
* Content encoder: frozen DINOv2 patch tokens -> trainable ``content_proj`` linear -> a second,
  decoupled cross-attention inside every spatial ``attn2`` (:class:`~model.adapter.ContentAttnProcessor`),
  whose output projection starts at zero.
* Text re-weighting (:class:`~model.adapter.TextReweighting`): CLIP token embeddings -> transformer encoder
  layers -> linear -> sigmoid, one weight in (0, 1) per token, multiplied onto the embedding.

With the new parts at their initial values the network equals the base ``UNetMotionModel``
fed with the re-weighted text embeddings (``tests/test_model_network.py`` checks this).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from diffusers.utils import BaseOutput
from einops import repeat
from torch import nn

from model.adapter import (
    ContentAttnProcessor, LivePhotoAdapter, TextAttnProcessor, input_channels, spatial_attentions, spatial_cross_attentions,
)
from model.config import BASE_GROUP, TRAINABLE_GROUPS, ModelConfig
from model.encoders import SEED_OFFSETS, seeded


def frame_embedding(num_frames: int, batch: int, height: int, width: int, *, device=None, dtype=None) -> torch.Tensor:
    """Frame-index map (batch, 1, frames, height, width): 0 at the first frame rising linearly to 1 at the last."""
    ramp = torch.linspace(0.0, 1.0, num_frames, device=device, dtype=torch.float32).to(dtype)
    return repeat(ramp, "f -> b 1 f h w", b=batch, h=height, w=width)


def intensity_map(intensity: torch.Tensor, levels: int, num_frames: int, height: int, width: int, *, dtype=None) -> torch.Tensor:
    """Constant map (batch, 1, frames, height, width) holding ``intensity / levels``: level 1..10 -> 0.1..1.0."""
    scaled = intensity.to(dtype=torch.float32) / levels
    return repeat(scaled.to(dtype), "b -> b 1 f h w", f=num_frames, h=height, w=width)


# --------------------------------------------------------------------------- the network


@dataclass
class LivePhotoOutput(BaseOutput):
    """``sample`` (batch, 4, frames, h, w) noise prediction; ``token_weights`` (batch, tokens) or None."""

    sample: torch.Tensor
    token_weights: torch.Tensor | None = None


class LivePhotoModel(nn.Module):
    """The LivePhoto denoiser: ``UNetMotionModel`` + 10-channel input + content encoder + text re-weighting.

    ``__init__`` takes the base 4-channel ``UNetMotionModel`` and installs the new parts of a
    :class:`~model.adapter.LivePhotoAdapter` into it (the adapter's modules themselves: its
    ``conv_in`` replaces the UNet's, its image branches go into the spatial cross-attentions'
    processors); with ``adapter=None`` a fresh one is made for ``cfg`` (``from_unet``). The
    parameter names are those of the assembled network (``unet.conv_in.*``, ``content_proj.*``,
    ``unet...attn2.processor.to_k_ip.*``, ``reweight.*``): what training checkpoints hold.
    Built by :func:`model.build.build_network` or by ``LivePhotoPipeline``.
    """

    def __init__(
        self, cfg: ModelConfig, unet: nn.Module, image_dim: int | None = None, alphas_cumprod: torch.Tensor | None = None,
        adapter: LivePhotoAdapter | None = None,
    ):
        super().__init__()
        self.cfg = cfg
        self.unet = unet
        if cfg.reference_skip and alphas_cumprod is None:
            raise ValueError("reference_skip: needs the noise schedule's alphas_cumprod")
        # the training / sampling schedule (not a weight: rebuilt from the config, never saved)
        self.register_buffer("alphas_cumprod", None if alphas_cumprod is None else alphas_cumprod.float(), persistent=False)
        if adapter is None:
            if cfg.use_content_encoder and image_dim is None:
                raise ValueError("image_dim: required to build the content encoder's projection")
            with seeded(cfg.seed + SEED_OFFSETS["livephoto"]):
                adapter = LivePhotoAdapter.from_unet(unet, cfg, image_dim)
        self._check_adapter(adapter)
        object.__setattr__(self, "adapter", adapter)  # reachable, not a submodule: its parameters are the ones below
        self.image_dim = adapter.config.image_dim
        self.content_proj = adapter.content_proj
        self.reweight = adapter.reweight
        if unet.conv_in is adapter.conv_in:
            return  # installed already (another wrapper of the same modules, e.g. a pipeline around training's network):
            # its processors, trainable flags and mode are left as they are
        unet.conv_in = adapter.conv_in
        unet.register_to_config(in_channels=adapter.config.in_channels)
        for name, attn in spatial_attentions(unet):
            branch = adapter.image_attention(name) if attn.is_cross_attention else None
            attn.set_processor(ContentAttnProcessor(branch, cfg.text_max_length) if branch else TextAttnProcessor(cfg.text_max_length))
        self.set_trainable(TRAINABLE_GROUPS)

    def _check_adapter(self, adapter: LivePhotoAdapter) -> None:
        """The adapter must match the ``use_*`` switches of ``cfg`` and the UNet it goes into."""
        cfg, config = self.cfg, adapter.config
        problems = []
        if config.in_channels != input_channels(cfg, self.latent_channels):
            problems.append(f"conv_in takes {config.in_channels} channels, the config's inputs are {input_channels(cfg, self.latent_channels)}")
        if (config.image_dim is not None) != cfg.use_content_encoder:
            problems.append(f"content encoder {'present' if config.image_dim is not None else 'absent'}, use_content_encoder={cfg.use_content_encoder}")
        if (config.reweight_layers is not None) != cfg.use_text_reweighting:
            problems.append(f"re-weighting {'present' if config.reweight_layers is not None else 'absent'}, use_text_reweighting={cfg.use_text_reweighting}")
        if config.cross_attention_dim != self.unet.config.cross_attention_dim:
            problems.append(f"width {config.cross_attention_dim}, the UNet's cross-attention {self.unet.config.cross_attention_dim}")
        if config.image_dim is not None:
            names = sorted(name for name, _ in spatial_cross_attentions(self.unet))
            if names != sorted(config.cross_attentions):
                problems.append("its cross-attention layers are not the UNet's")
        if problems:
            raise ValueError("livephoto_adapter: does not fit this model: " + "; ".join(problems))

    # ------------------------------------------------------------------ properties

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def latent_channels(self) -> int:
        """Channels of the latents the network denoises (4 for a VAE, 3*p*p in pixel space)."""
        return int(self.unet.config.out_channels)

    @property
    def max_frames(self) -> int:
        """Longest clip the motion modules' positional embeddings support."""
        return int(self.unet.config.motion_max_seq_length)

    # ------------------------------------------------------------------ forward

    @property
    def text_tokens(self) -> int:
        """Tokens per caption the network takes (``cfg.text_max_length``)."""
        return self.cfg.text_max_length

    def token_weights(self, prompt_embeds: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor | None:
        """Re-weighting of (batch, tokens, dim) text embeddings -> (batch, tokens) in (0, 1]; None when off."""
        return None if self.reweight is None else self.reweight(prompt_embeds, attention_mask)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        reference_latents: torch.Tensor | None = None,
        intensity: torch.Tensor | None = None,
        image_tokens: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> LivePhotoOutput | tuple:
        """Predict the noise of a batch of clips.

        Args:
            sample: noisy latents (batch, 4, frames, h, w).
            timestep: scalar or (batch,) diffusion timesteps.
            encoder_hidden_states: text embeddings (batch, tokens, text_dim), tokens = ``cfg.text_max_length``.
            reference_latents: VAE latent of the reference image (batch, 4, h, w); needed when
                ``use_reference_latent``.
            intensity: motion level per clip (batch,), 1..``intensity_levels`` (int or float);
                needed when ``use_intensity``.
            image_tokens: DINOv2 patch tokens of the reference (batch, patches, image_dim);
                needed when ``use_content_encoder``.
            attention_mask: token mask (batch, tokens), 1 = real token; padding is masked as keys
                in the re-weighting and in every spatial cross-attention. None attends to every
                position (as SD 1.5 does).

        Returns:
            :class:`LivePhotoOutput` with ``sample`` (batch, 4, frames, h, w) and
            ``token_weights`` (batch, tokens) (None when re-weighting is off).
        """
        cfg = self.cfg
        batch, _, frames, height, width = sample.shape
        if encoder_hidden_states.shape[1] != self.text_tokens:
            raise ValueError(f"encoder_hidden_states: expected {self.text_tokens} tokens, got {encoder_hidden_states.shape[1]}")
        if attention_mask is not None and tuple(attention_mask.shape) != (batch, self.text_tokens):
            raise ValueError(f"attention_mask: expected shape ({batch}, {self.text_tokens}), got {tuple(attention_mask.shape)}")

        # 1. text re-weighting: one weight per token, multiplied onto its embedding
        weights = self.token_weights(encoder_hidden_states, attention_mask)
        context = encoder_hidden_states if weights is None else encoder_hidden_states * weights.unsqueeze(-1)

        # 2. content encoder: projected DINOv2 tokens appended after the text tokens
        if self.content_proj is not None:
            if image_tokens is None:
                raise ValueError("image_tokens: required when use_content_encoder is on")
            context = torch.cat([context, self.content_proj(image_tokens.to(context.dtype))], dim=1)

        # 3. the 10-channel input: noised latent | reference latent | frame map | intensity map
        skip = self._reference_skip(sample, timestep, reference_latents) if cfg.reference_skip else None
        channels = [sample if skip is None else sample - skip[0]]
        if cfg.use_reference_latent:
            if reference_latents is None:
                raise ValueError("reference_latents: required when use_reference_latent is on")
            channels.append(repeat(reference_latents.to(sample.dtype), "b c h w -> b c f h w", f=frames))
        if cfg.use_frame_embedding:
            channels.append(frame_embedding(frames, batch, height, width, device=sample.device, dtype=sample.dtype))
        if cfg.use_intensity:
            if intensity is None:
                raise ValueError("intensity: required when use_intensity is on")
            level = torch.as_tensor(intensity, device=sample.device).reshape(-1).expand(batch)
            channels.append(intensity_map(level, cfg.intensity_levels, frames, height, width, dtype=sample.dtype))
        unet_input = torch.cat(channels, dim=1)

        # 4. UNetMotionModel wants the context per frame: (batch*frames, tokens, dim)
        context = repeat(context, "b n d -> (b f) n d", f=frames)
        kwargs = None
        if attention_mask is not None:
            kwargs = {"text_mask": repeat(attention_mask.to(sample.device) > 0, "b n -> (b f) n", f=frames)}
        out = self.unet(unet_input, timestep, encoder_hidden_states=context, cross_attention_kwargs=kwargs).sample
        if skip is not None:
            out = out + skip[1]
        if not return_dict:
            return out, weights
        return LivePhotoOutput(sample=out, token_weights=weights)

    def _reference_skip(self, sample, timestep, reference_latents) -> tuple[torch.Tensor, torch.Tensor]:
        """``cfg.reference_skip``: (what to subtract from the noised input, what to add to the output).

        With x_t = a x_0 + s eps (a = sqrt(alpha_bar_t), s = sqrt(1 - alpha_bar_t)) and the
        residual r = x_0 - ref broadcast over frames, x_t - a ref = a r + s eps is the residual
        noised with the same eps, so the UNet predicts the residual's target and the reference's
        share is added back exactly: epsilon is unchanged (+0), v = v_r - s ref.
        A frame equal to the photo is residual 0: nothing the UNet must reproduce.
        """
        if reference_latents is None:
            raise ValueError("reference_latents: required when use_reference_latent is on")
        frames = sample.shape[2]
        t = torch.as_tensor(timestep, device=self.alphas_cumprod.device).reshape(-1).long().expand(sample.shape[0])
        alpha_bar = self.alphas_cumprod[t].to(sample.device, torch.float32).view(-1, 1, 1, 1, 1)
        ref = repeat(reference_latents.float(), "b c h w -> b c f h w", f=frames)
        out = -(1 - alpha_bar).sqrt() * ref if self.cfg.prediction_type == "v_prediction" else torch.zeros_like(ref)
        return (alpha_bar.sqrt() * ref).to(sample.dtype), out.to(sample.dtype)

    # ------------------------------------------------------------------ training helpers

    @staticmethod
    def group_of(name: str) -> str | None:
        """Trainable group of a parameter / state-dict key, or None for the frozen SD blocks."""
        if name.startswith("unet.conv_in."):
            return "conv_in"
        if ".motion_modules." in name:
            return "motion"
        if name.startswith("content_proj.") or (".attn2.processor." in name and name.startswith("unet.")):
            return "content"
        if name.startswith("reweight."):
            return "reweight"
        return None

    def parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        """``{"conv_in": [(name, param), ...], ..., "frozen": [...]}`` over all parameters."""
        groups: dict[str, list[tuple[str, nn.Parameter]]] = {g: [] for g in (*TRAINABLE_GROUPS, "frozen")}
        for name, param in self.named_parameters():
            groups[self.group_of(name) or "frozen"].append((name, param))
        return groups

    def set_trainable(self, groups: Sequence[str] = TRAINABLE_GROUPS) -> list[nn.Parameter]:
        """``requires_grad`` on for the named groups, off for everything else; returns the trainable params.

        Besides :data:`TRAINABLE_GROUPS`, ``"base"`` names the SD blocks themselves (every
        parameter outside the groups): only for a base built from scratch (the tiny preset),
        where there is nothing pretrained to keep frozen.
        """
        unknown = sorted(set(groups) - set(TRAINABLE_GROUPS) - {BASE_GROUP})
        if unknown:
            raise ValueError(f"trainable: unknown group(s) {', '.join(unknown)}; allowed: {', '.join((*TRAINABLE_GROUPS, BASE_GROUP))}")
        for name, param in self.named_parameters():
            param.requires_grad_((self.group_of(name) or BASE_GROUP) in groups)
        return self.trainable_parameters()

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters with ``requires_grad`` (what the optimizer gets)."""
        return [p for p in self.parameters() if p.requires_grad]

    def _base_trainable(self) -> bool:
        return any(p.requires_grad for n, p in self.named_parameters() if self.group_of(n) is None)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """State-dict entries of all new parts (every group, whatever ``requires_grad`` is), plus
        the SD blocks when they train (``"base"``)."""
        base = self._base_trainable()
        return {k: v for k, v in self.state_dict().items() if self.group_of(k) is not None or base}

    def load_trainable_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load what :meth:`trainable_state_dict` returned: the new parts' keys exactly, and
        either all or none of the SD blocks' keys."""
        keys = self.state_dict().keys()
        new = {k for k in keys if self.group_of(k) is not None}
        base = {k for k in keys if self.group_of(k) is None}
        given = set(state_dict)
        expected = new | base if given & base else new
        missing, unexpected = sorted(expected - given), sorted(given - expected)
        if missing or unexpected:
            raise ValueError(
                f"state_dict: {len(missing)} missing key(s) {missing[:3]}, {len(unexpected)} unexpected key(s) {unexpected[:3]}"
            )
        self.load_state_dict(state_dict, strict=False)

    def enable_gradient_checkpointing(self) -> None:
        """Recompute UNet block activations in the backward pass (delegates to diffusers)."""
        self.unet.enable_gradient_checkpointing()

    def disable_gradient_checkpointing(self) -> None:
        self.unet.disable_gradient_checkpointing()
