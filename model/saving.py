"""How a :class:`~model.pipeline.LivePhotoPipeline` is saved and loaded, as a diffusers pipeline.

:class:`SaveLoadMixin` gives the pipeline ``from_pretrained`` (shipped models, presets, and every
saved form :mod:`model.load` resolves), ``save_pretrained`` and ``push_to_hub``.

``save_pretrained`` layout (``model_index.json`` + one folder per saved component)::

    model_index.json        components as [library, class] ([null, null]: rebuilt from
                            model_config at load), "model_config", and "_class_name"
                            ["livephoto_pipeline", "LivePhotoPipeline"]
    livephoto_pipeline.py   two lines importing this class, so that
                            DiffusionPipeline.from_pretrained(DIR, trust_remote_code=True) works
    livephoto_adapter/      the new parts (always)
    motion_adapter/         the trained motion modules as an AnimateDiff MotionAdapter (always)
    scheduler/              (always)
    unet/                   the SD blocks, only when they have no source or were trained
    vae/, text_encoder/, tokenizer/, image_encoder/   only those built from a seed
                            (tiny sizes); pretrained ones are referenced by model_config
                            (base_model, text_encoder, image_encoder: hub id or path),
                            overridable at load (from_pretrained(DIR, base_model=...))
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from diffusers.models.modeling_utils import ModelMixin

from common.config import ConfigError, from_dict, to_dict
from model.build import base_unet_of, motion_adapter_of
from model.config import MODEL_PRESETS, SHIPPED_MODELS, ModelConfig, model_preset, shipped_model_dir
from model.load import MODEL_INDEX, PIPELINE_MODULE, PIPELINE_SHIM, load_saved, read_model_config

COMPONENTS = ("unet", "motion_adapter", "livephoto_adapter", "vae", "text_encoder", "tokenizer", "image_encoder", "scheduler")
"""The pipeline's registered modules (also accepted by ``from_pretrained`` to replace saved ones)."""
UNTRAINED_OK = ("tiny",)
"""Presets whose fresh weights are expected to be random (plumbing); any other preset built fresh is warned about."""
UNTRAINED_WARNING = (
    "{name!r} builds LivePhoto from its pretrained parts with the new parts untrained (text re-weighting at its "
    "initial values, reference / intensity channels of conv_in at zero): its videos do not start at the photo nor "
    "follow the intensity. Train it (jobs/train.py --preset {name}) and load the run's final_model, or use 'mini'."
)


class SaveLoadMixin:
    """``from_pretrained`` / ``save_pretrained`` / ``push_to_hub`` for LivePhotoPipeline (before
    ``DiffusionPipeline`` in its bases, so that these override diffusers' own, which they call)."""

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | Path = "tiny", torch_dtype: torch.dtype | None = None,
        tracking_uri: str | None = None, **kwargs,
    ):
        """A shipped model (``mini``: the trained LivePhoto-mini in ``models/``), a preset built
        with fresh weights (``tiny`` random, ``sd15`` from the pretrained SD 1.5 parts, its
        LivePhoto parts untrained), or a saved model (:mod:`model.load`: a ``save_pretrained``
        folder or hub id, an MLflow model folder around one, a training checkpoint folder, or an
        MLflow URI of any of them, resolved at ``tracking_uri``).

        ``kwargs``: ModelConfig fields (``base_model=``, ``variant="fp16"``,
        ``local_files_only=True``, ``lora=[...]``, ...) override the saved ``model_config``;
        components (``scheduler=``, ``vae=``, ...) replace the saved ones, as in diffusers.
        ``torch_dtype`` casts every component (default float32, as diffusers)."""
        # a component object replaces the saved one; scheduler="DPMSolverMultistepScheduler" (a string) is the ModelConfig field
        components = {name: kwargs.pop(name) for name in COMPONENTS if name in kwargs and not isinstance(kwargs[name], str)}
        source, overrides = str(pretrained_model_name_or_path), kwargs
        if "scheduler" in components:  # its class becomes the config's; its schedule fields still come from the config
            overrides["scheduler"] = type(components["scheduler"]).__name__
        if not Path(source).exists() and source in SHIPPED_MODELS:
            pipe = cls.from_folder(shipped_model_dir(source), overrides, components)
        elif not Path(source).exists() and source in MODEL_PRESETS:
            if source not in UNTRAINED_OK:
                warnings.warn(UNTRAINED_WARNING.format(name=source), UserWarning, stacklevel=2)
            cfg = from_dict(ModelConfig, {**model_preset(source), **overrides}, prefix="model")
            pipe = cls(model_config=to_dict(cfg), **components)
        else:
            pipe = load_saved(cls, source, tracking_uri, overrides, components)
        return pipe.to(torch_dtype or torch.float32)

    @classmethod
    def from_folder(cls, directory: str | Path, overrides: dict[str, Any] | None = None, components: dict[str, Any] | None = None):
        """A ``save_pretrained`` folder on this machine (layout in this module's docstring)."""
        directory = Path(directory)
        cfg = read_model_config(directory, overrides or {})
        shim = directory / f"{PIPELINE_MODULE}.py"
        if not shim.is_file() or shim.read_text() != PIPELINE_SHIM:
            raise ConfigError(
                f"model: {shim} is not the file LivePhotoPipeline.save_pretrained writes; if you trust the folder's code, "
                "load it with DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)"
            )
        variant = cfg.variant if cfg.variant and any(directory.glob(f"*/*.{cfg.variant}.*")) else None
        return super().from_pretrained(
            str(directory), model_config=to_dict(cfg), variant=variant, local_files_only=True, trust_remote_code=True,
            **(components or {}),
        )

    def saved_components(self) -> dict[str, Any]:
        """What :meth:`save_pretrained` writes, by component name (None: rebuilt from model_config at load)."""
        cfg, model = self.cfg, self.model
        base_saved = cfg.base_model is None or model._base_trainable()
        text_saved = cfg.base_model is None and cfg.text_encoder is None
        return {
            "unet": base_unet_of(model) if base_saved else None,
            "motion_adapter": motion_adapter_of(self.unet),
            "livephoto_adapter": self.livephoto_adapter,
            "vae": self.vae if cfg.base_model is None and cfg.autoencoder == "vae" else None,
            "text_encoder": self.text_encoder if text_saved else None,
            "tokenizer": self.tokenizer if text_saved else None,
            "image_encoder": self.image_encoder if cfg.image_encoder is None else None,
            "scheduler": self.scheduler,
        }

    def save_pretrained(
        self, save_directory: str | Path, safe_serialization: bool = True, variant: str | None = None,
        push_to_hub: bool = False, repo_id: str | None = None, **hub_kwargs,
    ) -> None:
        """``model_index.json`` + the component folders of :meth:`saved_components` (layout in
        this module's docstring); ``variant`` names the weight files (``*.fp16.safetensors``). With
        ``push_to_hub=True`` the folder is then uploaded to ``repo_id`` (see :meth:`push_to_hub`)."""
        import diffusers
        from diffusers.pipelines.pipeline_loading_utils import _fetch_class_library_tuple

        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        index: dict[str, Any] = {"_class_name": [PIPELINE_MODULE, type(self).__name__], "_diffusers_version": diffusers.__version__}
        for name, part in self.saved_components().items():
            if part is None:
                index[name] = [None, None]
                continue
            weights = {"variant": variant} if hasattr(part, "state_dict") else {}
            if isinstance(part, ModelMixin):
                weights["safe_serialization"] = safe_serialization
            part.save_pretrained(directory / name, **weights)
            index[name] = list(_fetch_class_library_tuple(part))
        index["model_config"] = to_dict(self.cfg)
        (directory / MODEL_INDEX).write_text(json.dumps(index, indent=2) + "\n")
        (directory / f"{PIPELINE_MODULE}.py").write_text(PIPELINE_SHIM)
        if push_to_hub:
            if not repo_id:
                raise ValueError("repo_id: required with push_to_hub=True (e.g. 'you/livephoto-flags')")
            self.push_to_hub(repo_id, folder=directory, **hub_kwargs)

    def push_to_hub(self, repo_id: str, folder: str | Path | None = None, private: bool | None = None,
                    token: str | None = None, commit_message: str = "Upload LivePhoto model") -> str:
        """Upload the ``save_pretrained`` folder (written to a temporary one when ``folder`` is
        None) to the hub repo ``repo_id`` (created if missing); ``from_pretrained(repo_id)`` loads
        it back. A model on a pretrained base uploads its trainable parts only; its config names
        the base, which the loading machine must have (or point ``base_model=`` at). Returns the commit URL."""
        import tempfile

        from huggingface_hub import HfApi

        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="livephoto-push-") as tmp:
            if folder is None:
                folder = tmp
                self.save_pretrained(folder)
            info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=commit_message)
        return str(getattr(info, "commit_url", info))
