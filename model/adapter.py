"""``LivePhotoAdapter``: the parts LivePhoto adds to AnimateDiff, as one diffusers model.

Saved and loaded like AnimateDiff's ``MotionAdapter`` (``save_pretrained`` writes ``config.json``
+ ``diffusion_pytorch_model.safetensors``; ``from_pretrained`` reads them, with ``torch_dtype``,
``variant`` and hub ids as for any diffusers model). It holds:

* ``conv_in``: the UNet's input convolution widened to ``in_channels`` per frame (noised latent |
  reference latent | frame map | intensity map);
* ``content_proj``: DINOv2 patch tokens (``image_dim``) -> the UNet's cross-attention width, and
  ``content_attn``: for each spatial cross-attention (``cross_attentions``, in order) the extra
  key/value/output projections of its image branch (:class:`ImageCrossAttention`);
* ``reweight``: the text re-weighting module (:class:`TextReweighting`).

It also holds the attention processors that run the new parts inside the UNet's spatial
attentions (:class:`TextAttnProcessor`, :class:`ContentAttnProcessor`).

:class:`~model.network.LivePhotoModel` installs these modules into a ``UNetMotionModel`` (they
are shared, not copied), so training updates the adapter and ``save_pretrained`` writes the new
parts alone. :meth:`LivePhotoAdapter.from_unet` makes a fresh one initialised as the paper says:
conv_in's extra channels and every output projection of the image branch at zero.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention_processor import Attention
from diffusers.models.modeling_utils import ModelMixin
from einops import rearrange
from torch import nn

from model.config import ModelConfig
from model.encoders import TOKENIZER_MAX_LENGTH


def input_channels(cfg: ModelConfig, latent_channels: int = 4) -> int:
    """Channels per frame at the UNet input for the ``use_*`` switches of ``cfg`` (10 with all on
    and 4 latent channels; 3*p*p instead of 4 in pixel space)."""
    return latent_channels * (1 + cfg.use_reference_latent) + int(cfg.use_frame_embedding) + int(cfg.use_intensity)


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


class ImageCrossAttention(nn.Module):
    """The image branch of one decoupled cross-attention (IP-Adapter style): key and value
    projections of the image tokens and a zero-initialised output projection."""

    def __init__(self, in_features: int, inner_dim: int, bias: bool = False):
        super().__init__()
        self.to_k_ip = nn.Linear(in_features, inner_dim, bias=bias)
        self.to_v_ip = nn.Linear(in_features, inner_dim, bias=bias)
        self.out_ip = nn.Linear(inner_dim, inner_dim, bias=False)


class LivePhotoAdapter(ModelMixin, ConfigMixin):
    """The new parts of LivePhoto (see the module docstring); built empty from its config, filled
    by ``from_pretrained`` or :meth:`from_unet`."""

    @register_to_config
    def __init__(
        self,
        in_channels: int = 10,
        conv_out_channels: int = 320,
        conv_kernel_size: int = 3,
        conv_padding: int = 1,
        cross_attention_dim: int = 768,
        image_dim: int | None = 1024,
        cross_attentions: Sequence[str] = (),
        cross_attention_inner_dims: Sequence[int] = (),
        cross_attention_bias: bool = False,
        reweight_layers: int | None = 1,
        reweight_heads: int = 8,
        reweight_normalize: bool = True,
    ):
        super().__init__()
        if len(cross_attentions) != len(cross_attention_inner_dims):
            raise ValueError("cross_attention_inner_dims: needs one width per name in cross_attentions")
        self.conv_in = nn.Conv2d(in_channels, conv_out_channels, conv_kernel_size, padding=conv_padding)
        self.content_proj = nn.Linear(image_dim, cross_attention_dim) if image_dim is not None else None
        self.content_attn = nn.ModuleList(
            ImageCrossAttention(cross_attention_dim, inner, cross_attention_bias) for inner in cross_attention_inner_dims
        ) if image_dim is not None else None
        self.reweight = (
            TextReweighting(cross_attention_dim, reweight_layers, reweight_heads, reweight_normalize)
            if reweight_layers is not None else None
        )

    def image_attention(self, name: str) -> ImageCrossAttention | None:
        """The image branch of the spatial cross-attention ``name`` (a module path in the UNet), or None."""
        if self.content_attn is None or name not in self.config.cross_attentions:
            return None
        return self.content_attn[list(self.config.cross_attentions).index(name)]

    @classmethod
    def from_unet(cls, unet, cfg, image_dim: int) -> "LivePhotoAdapter":
        """A fresh adapter for ``unet`` (a 4-channel ``UNetMotionModel``) and the ``use_*``
        switches of ``cfg`` (a ModelConfig), initialised so that the network starts as the base
        UNet: conv_in = the UNet's in its first channels, zeros after; the image branches' key and
        value projections copies of the frozen text ones, their output projections zero."""
        old = unet.conv_in
        cross = list(spatial_cross_attentions(unet)) if cfg.use_content_encoder else []
        adapter = cls(
            in_channels=input_channels(cfg, int(unet.config.out_channels)),
            conv_out_channels=old.out_channels, conv_kernel_size=old.kernel_size[0], conv_padding=old.padding[0],
            cross_attention_dim=int(unet.config.cross_attention_dim),
            image_dim=image_dim if cfg.use_content_encoder else None,
            cross_attentions=[name for name, _ in cross],
            cross_attention_inner_dims=[attn.to_k.out_features for _, attn in cross],
            cross_attention_bias=any(attn.to_k.bias is not None for _, attn in cross),
            reweight_layers=cfg.reweight_layers if cfg.use_text_reweighting else None,
            reweight_heads=cfg.reweight_heads, reweight_normalize=cfg.reweight_normalize,
        )
        if old.weight.dtype != torch.float32 or old.weight.device.type != "cpu":
            adapter.to(device=old.weight.device, dtype=old.weight.dtype)
        with torch.no_grad():
            adapter.conv_in.weight.zero_()
            adapter.conv_in.weight[:, : old.in_channels] = old.weight
            adapter.conv_in.bias.copy_(old.bias)
            for (_, attn), branch in zip(cross, adapter.content_attn or ()):
                branch.to_k_ip.load_state_dict(attn.to_k.state_dict())
                branch.to_v_ip.load_state_dict(attn.to_v.state_dict())
                branch.out_ip.weight.zero_()
        return adapter


# --------------------------------------------------------------------------- attention processors


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

    The projections belong to the :class:`~model.adapter.LivePhotoAdapter` (``content_attn``):
    ``to_k_ip`` / ``to_v_ip`` start as copies of the frozen ``to_k`` / ``to_v``, ``out_ip`` at
    zero, so the processor equals :class:`TextAttnProcessor` at initialisation.
    """

    def __init__(self, branch: ImageCrossAttention, text_tokens: int = TOKENIZER_MAX_LENGTH):
        super().__init__(text_tokens)
        # the adapter's modules themselves (shared, not copied): training the network trains the adapter
        self.to_k_ip, self.to_v_ip, self.out_ip = branch.to_k_ip, branch.to_v_ip, branch.out_ip

    def image_branch(self, attn: Attention, query: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.out_ip(self._attend(attn, query, self.to_k_ip(image), self.to_v_ip(image)))
