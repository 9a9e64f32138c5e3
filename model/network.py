"""The LivePhoto denoising network: an AnimateDiff ``UNetMotionModel`` with the paper's additions.

Built around an unmodified diffusers ``UNetMotionModel`` (SD 1.5 blocks + AnimateDiff motion
modules); the additions are attached, not forked:

* ``conv_in`` widened from 4 to 10 input channels per frame (new channels zero-initialised):
  noised latent (4) | reference latent (4) | frame-embedding map (1) | intensity map (1).
* Content encoder: frozen DINOv2 patch tokens -> trainable ``content_proj`` linear -> a second,
  decoupled cross-attention inside every spatial ``attn2`` (:class:`ContentAttnProcessor`),
  whose output projection starts at zero.
* Text re-weighting (:class:`TextReweighting`): CLIP token embeddings -> transformer encoder
  layers -> linear -> sigmoid, one weight in (0, 1) per token, multiplied onto the embedding.

With the new parts at their initial values the network equals the base ``UNetMotionModel``
fed with the re-weighted text embeddings (``tests/test_model_network.py`` checks this).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention
from diffusers.utils import BaseOutput
from einops import rearrange, repeat
from torch import nn

from model.config import ModelConfig
from model.encoders import TOKENIZER_MAX_LENGTH, SEED_OFFSETS, seeded

TRAINABLE_GROUPS = ("conv_in", "motion", "content", "reweight")
BASE_GROUP = "base"  # the SD blocks; trainable only when built from scratch (tiny)
"""Parameter groups that train; everything else (SD 1.5 blocks) stays frozen."""

def input_channels(cfg: ModelConfig, latent_channels: int = 4) -> int:
    """Channels per frame at the UNet input for the ``use_*`` switches of ``cfg`` (10 with all on
    and 4 latent channels; 3*p*p instead of 4 in pixel space)."""
    return latent_channels * (1 + cfg.use_reference_latent) + int(cfg.use_frame_embedding) + int(cfg.use_intensity)


def frame_embedding(num_frames: int, batch: int, height: int, width: int, *, device=None, dtype=None) -> torch.Tensor:
    """Frame-index map (batch, 1, frames, height, width): 0 at the first frame rising linearly to 1 at the last."""
    ramp = torch.linspace(0.0, 1.0, num_frames, device=device, dtype=torch.float32).to(dtype)
    return repeat(ramp, "f -> b 1 f h w", b=batch, h=height, w=width)


def intensity_map(intensity: torch.Tensor, levels: int, num_frames: int, height: int, width: int, *, dtype=None) -> torch.Tensor:
    """Constant map (batch, 1, frames, height, width) holding ``intensity / levels``: level 1..10 -> 0.1..1.0."""
    scaled = intensity.to(dtype=torch.float32) / levels
    return repeat(scaled.to(dtype), "b -> b 1 f h w", f=num_frames, h=height, w=width)


# --------------------------------------------------------------------------- content encoder


class TextAttnProcessor(nn.Module):
    """SDPA attention of a spatial block with the caption's padding masked out of the keys.

    Installed as the processor of every spatial attention of the UNet (``attn1`` and
    ``attn2``; not the motion modules). The token mask travels as
    ``cross_attention_kwargs={"text_mask": (batch*frames, tokens) bool}``, which diffusers hands
    to both attentions of a transformer block: self-attention (``attn1``) ignores it,
    cross-attention (``attn2``) masks its text keys with it. With ``text_mask=None`` this is
    diffusers' ``AttnProcessor2_0``.
    """

    def __init__(self, text_tokens: int = TOKENIZER_MAX_LENGTH):
        super().__init__()
        self.text_tokens = text_tokens

    @staticmethod
    def _attend(attn: Attention, query, key, value, mask=None) -> torch.Tensor:
        q, k, v = (rearrange(x, "b n (h d) -> b h n d", h=attn.heads) for x in (query, key, value))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=False)
        return rearrange(out, "b h n d -> b n (h d)").to(query.dtype)

    def image_branch(self, attn: Attention, query: torch.Tensor, image: torch.Tensor) -> torch.Tensor | None:
        """Extra attention over image tokens (the content encoder); none here."""
        return None

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        """``hidden_states`` (batch*frames, pixels, channels) -> same layout.

        ``encoder_hidden_states`` (batch*frames, text_tokens [+ image tokens], dim) for
        cross-attention, None for self-attention.
        """
        if attn.spatial_norm is not None or attn.group_norm is not None or attn.residual_connection:
            raise ValueError("TextAttnProcessor: supports plain SD attention blocks only")
        cross = encoder_hidden_states is not None
        if cross:
            text, image = encoder_hidden_states[:, : self.text_tokens], encoder_hidden_states[:, self.text_tokens :]
        else:
            text, image = hidden_states, hidden_states[:, :0]
        mask = None
        if attention_mask is not None:
            batch = hidden_states.shape[0]
            mask = attn.prepare_attention_mask(attention_mask, text.shape[1], batch)
            mask = mask.view(batch, attn.heads, -1, mask.shape[-1])
        elif cross and text_mask is not None:
            if text_mask.shape != text.shape[:2]:
                raise ValueError(f"text_mask: expected shape {tuple(text.shape[:2])}, got {tuple(text_mask.shape)}")
            mask = rearrange(text_mask.to(torch.bool), "b n -> b 1 1 n")
        if cross and attn.norm_cross:
            text = attn.norm_encoder_hidden_states(text)
        query = attn.to_q(hidden_states)
        out = self._attend(attn, query, attn.to_k(text), attn.to_v(text), mask)
        if cross and image.shape[1] > 0:
            extra = self.image_branch(attn, query, image)
            if extra is None:
                raise ValueError("encoder_hidden_states: image tokens given but the content encoder is off")
            out = out + extra
        out = attn.to_out[1](attn.to_out[0](out))
        return out / attn.rescale_output_factor


class ContentAttnProcessor(TextAttnProcessor):
    """:class:`TextAttnProcessor` plus a second, gated cross-attention over image tokens.

    Installed as the processor of every spatial ``attn2`` of the UNet (IP-Adapter style
    decoupled cross-attention). ``encoder_hidden_states`` arrives as
    (batch*frames, text_tokens + image_tokens, dim): the first ``text_tokens`` rows are the
    (re-weighted) text tokens, the rest the projected DINOv2 tokens. Output::

        to_out(attn(q, k(text), v(text), text_mask) + out_ip(attn(q, k_ip(image), v_ip(image))))

    ``to_k_ip`` / ``to_v_ip`` start as copies of the frozen ``to_k`` / ``to_v``; ``out_ip``
    starts at zero, so the processor equals :class:`TextAttnProcessor` at initialisation.
    """

    def __init__(self, attn: Attention, text_tokens: int = TOKENIZER_MAX_LENGTH):
        super().__init__(text_tokens)
        inner_dim = attn.to_k.out_features
        self.to_k_ip = nn.Linear(attn.to_k.in_features, inner_dim, bias=attn.to_k.bias is not None)
        self.to_v_ip = nn.Linear(attn.to_v.in_features, inner_dim, bias=attn.to_v.bias is not None)
        self.to_k_ip.load_state_dict(attn.to_k.state_dict())
        self.to_v_ip.load_state_dict(attn.to_v.state_dict())
        self.out_ip = nn.Linear(inner_dim, inner_dim, bias=False)
        nn.init.zeros_(self.out_ip.weight)

    def image_branch(self, attn: Attention, query: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.out_ip(self._attend(attn, query, self.to_k_ip(image), self.to_v_ip(image)))


def spatial_attentions(unet: nn.Module) -> Iterable[tuple[str, Attention]]:
    """The UNet's spatial attention layers (``...attentions.*.attn1`` / ``attn2``; not motion modules)."""
    for name, module in unet.named_modules():
        if isinstance(module, Attention) and "motion_modules" not in name:
            yield name, module


def spatial_cross_attentions(unet: nn.Module) -> Iterable[tuple[str, Attention]]:
    """The UNet's spatial text cross-attention layers (``...attentions.*.attn2``; not motion modules)."""
    for name, module in spatial_attentions(unet):
        if module.is_cross_attention:
            yield name, module


# --------------------------------------------------------------------------- text re-weighting


class TextReweighting(nn.Module):
    """Per-token weights in (0, 1] for the text encoder's token embeddings (paper Sec. 3.3).

    ``layers`` pre-norm transformer encoder layers -> LayerNorm -> linear -> sigmoid, as the
    paper has it; with ``normalize`` (the default) each caption's weights are then divided by
    the largest weight among its real tokens. The paper's plain sigmoid can close the text
    path: early in training the caption is noise to the network, the gradient drives every
    weight towards 0, the sigmoid saturates, its gradient vanishes, and the gate never
    reopens (measured here: mean weight 8e-5 after 450 steps; docs/MODEL.md). Normalised, the
    strongest token always has weight 1, so the module can only re-weight the caption, not
    switch it off, and a low-saturated sigmoid still passes gradient through the ratios
    (``sigmoid(a) / sigmoid(b)`` tends to ``exp(a - b)``).
    Padding tokens (``attention_mask == 0``) are masked as keys, so they never change the
    weights of the prompt's real tokens; they get a weight of their own, which the
    cross-attention ignores when it is given the mask.
    """

    def __init__(self, dim: int, layers: int, heads: int, normalize: bool = True):
        super().__init__()
        if dim % heads:
            raise ValueError(f"reweight_heads: {heads} does not divide the text width {dim}")
        layer = nn.TransformerEncoderLayer(
            dim, heads, dim_feedforward=4 * dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 1)
        self.normalize = normalize

    def forward(self, prompt_embeds: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``prompt_embeds`` (batch, tokens, dim), ``attention_mask`` (batch, tokens) 1 = real -> (batch, tokens) in (0, 1]."""
        padding = None if attention_mask is None else attention_mask.to(prompt_embeds.device) == 0
        hidden = self.encoder(prompt_embeds, src_key_padding_mask=padding)
        logits = self.head(self.norm(hidden)).float().squeeze(-1)
        if not self.normalize:
            return torch.sigmoid(logits).to(prompt_embeds.dtype)
        log_gate = F.logsigmoid(logits)  # the ratio in log space: exact even where the sigmoid underflows
        real = log_gate if padding is None else log_gate.masked_fill(padding, float("-inf"))
        gate = torch.exp(log_gate - real.amax(dim=1, keepdim=True)).clamp(max=1.0)  # padding may exceed the strongest real token
        return gate.to(prompt_embeds.dtype)


# --------------------------------------------------------------------------- the network


@dataclass
class LivePhotoOutput(BaseOutput):
    """``sample`` (batch, 4, frames, h, w) noise prediction; ``token_weights`` (batch, tokens) or None."""

    sample: torch.Tensor
    token_weights: torch.Tensor | None = None


class LivePhotoModel(nn.Module):
    """The LivePhoto denoiser: ``UNetMotionModel`` + 10-channel input + content encoder + text re-weighting.

    Built by :func:`model.build.build_network` (or ``from_pretrained``); ``__init__`` takes the
    base 4-channel ``UNetMotionModel`` and attaches the new parts per ``cfg.use_*``.
    """

    def __init__(self, cfg: ModelConfig, unet: nn.Module, image_dim: int, alphas_cumprod: torch.Tensor | None = None):
        super().__init__()
        self.cfg = cfg
        self.image_dim = image_dim
        self.unet = unet
        if cfg.reference_skip and alphas_cumprod is None:
            raise ValueError("reference_skip: needs the noise schedule's alphas_cumprod")
        # the training / sampling schedule (not a weight: rebuilt from the config, never saved)
        self.register_buffer("alphas_cumprod", None if alphas_cumprod is None else alphas_cumprod.float(), persistent=False)
        text_dim = unet.config.cross_attention_dim
        tokens = cfg.text_max_length
        with seeded(cfg.seed + SEED_OFFSETS["livephoto"]):
            self._widen_conv_in(input_channels(cfg, self.latent_channels))
            self.content_proj = nn.Linear(image_dim, text_dim) if cfg.use_content_encoder else None
            for _, attn in spatial_attentions(unet):
                content = cfg.use_content_encoder and attn.is_cross_attention
                attn.set_processor(ContentAttnProcessor(attn, tokens) if content else TextAttnProcessor(tokens))
            self.reweight = (
                TextReweighting(text_dim, cfg.reweight_layers, cfg.reweight_heads, cfg.reweight_normalize)
                if cfg.use_text_reweighting else None
            )
        self.set_trainable(TRAINABLE_GROUPS)

    def _widen_conv_in(self, channels: int) -> None:
        """Replace ``unet.conv_in`` by a ``channels``-input conv: pretrained weights in the first 4, zeros after."""
        old = self.unet.conv_in
        if channels == old.in_channels:
            return
        new = nn.Conv2d(channels, old.out_channels, old.kernel_size, old.stride, old.padding)
        new.to(device=old.weight.device, dtype=old.weight.dtype)
        with torch.no_grad():
            new.weight.zero_()
            new.weight[:, : old.in_channels] = old.weight
            new.bias.copy_(old.bias)
        self.unet.conv_in = new
        self.unet.register_to_config(in_channels=channels)

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

    # ------------------------------------------------------------------ save / load

    def save_pretrained(self, directory) -> None:
        """Write ``config.json`` + ``livephoto.safetensors``; see :mod:`model.build` for the layout."""
        from model.build import save_network

        save_network(self, directory)

    @classmethod
    def from_pretrained(cls, directory, **overrides) -> "LivePhotoModel":
        """Inverse of :meth:`save_pretrained`; ``overrides`` replace ModelConfig fields (e.g. ``local_files_only``)."""
        from model.build import load_network

        return load_network(directory, **overrides)
