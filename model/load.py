"""The one loader: every way a trained LivePhoto model is named, resolved to its components.

``LivePhotoPipeline.from_pretrained`` calls :func:`load_saved` for anything that is not a preset
or a shipped model name, so the animate CLI, the Serve replicas, the evaluation job and the
benchmarks load models the same way:

* a ``save_pretrained`` folder (``model_index.json`` + component folders; layout in
  :mod:`model.saving`);
* an MLflow model folder around one (``MLmodel`` + ``artifacts/pipeline/``, model/mlflow_model.py);
* a training checkpoint folder (``trainable.safetensors`` + ``state.json``, and ``ema.safetensors``
  when the run kept EMA weights, which are then the ones loaded, as for the run's final model);
* an MLflow URI of any of these (``runs:/<run>/final_model``, ``models:/<name>/<version>``,
  ``models:/<name>@<alias>``, ``mlflow-artifacts:/...``, ``s3://...``), downloaded first;
* a Hugging Face hub id (``owner/name``, what ``LivePhotoPipeline.push_to_hub`` uploaded),
  fetched with ``snapshot_download`` into the hub cache (from the cache alone when
  ``local_files_only`` is set or ``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from common.config import ConfigError, deep_merge, from_dict, to_dict

MLFLOW_SCHEMES = ("runs:/", "models:/", "mlflow-artifacts:/", "s3://", "gs://", "wasbs://", "hdfs://", "file://")
MODEL_INDEX = "model_index.json"
PIPELINE_MODULE = "livephoto_pipeline"
"""The module file ``save_pretrained`` writes beside ``model_index.json`` (diffusers' custom-pipeline convention)."""
PIPELINE_SHIM = (
    "# LivePhoto (arXiv 2312.02928). DiffusionPipeline.from_pretrained(<this folder>, trust_remote_code=True)\n"
    "# imports the pipeline class from the installed livephoto package; this file holds no model code.\n"
    "from model.pipeline import LivePhotoPipeline  # noqa: F401\n"
)
OLD_FORMAT = "livephoto-1"
"""The layout before model_index.json (config.json + livephoto.safetensors): recognised, to say so."""
MLFLOW_ARTIFACT = "pipeline"
"""Name of the ``save_pretrained`` folder among an MLflow model's artifacts (``model.mlflow_model``)."""
CHECKPOINT_TRAINABLE = "trainable.safetensors"
"""A training checkpoint's trainable weights (written by training/checkpoint.py)."""
CHECKPOINT_EMA = "ema.safetensors"
"""Their exponential moving average, when the run keeps one."""
CHECKPOINT_STATE = "state.json"
"""Step, data position, the model config and the MLflow run id of a training checkpoint."""


def model_kind(source: str) -> str:
    """Where a model comes from: ``preset`` (a name in MODEL_PRESETS), ``mlflow`` (an artifact
    or model URI), ``hub`` (``owner/name`` that is no folder here) or ``path``."""
    from model.config import MODEL_PRESETS
    from model.sources import is_hub_id

    if source in MODEL_PRESETS:
        return "preset"
    if source.startswith(MLFLOW_SCHEMES):
        return "mlflow"
    if "/" in source and is_hub_id(source):
        return "hub"
    return "path"


def resolve_model_dir(
    source: str, tracking_uri: str | None = None, download_dir: str | None = None, local_files_only: bool = False,
) -> Path:
    """A local folder for ``source``: MLflow URIs are downloaded (into ``download_dir``), hub ids
    fetched into the hub cache, folders are checked."""
    if model_kind(source) == "hub":
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            return Path(snapshot_download(source, local_files_only=local_files_only))
        except LocalEntryNotFoundError as exc:
            why = "downloads are off" if local_files_only else f"the hub is not reachable ({' '.join(str(exc).split())[:200]})"
            raise ConfigError(
                f"model: {source!r} is no folder on this machine, and as a Hugging Face hub id it is not in the cache "
                f"and {why}. Download it once where there is internet (`hf download {source}`), then pass the "
                "downloaded folder, or copy that cache here and set HF_HOME to it with HF_HUB_OFFLINE=1."
            ) from None
        except Exception as exc:  # RepositoryNotFoundError, HTTP errors, ...
            raise ConfigError(f"model: could not fetch hub id {source!r} ({type(exc).__name__}: {exc})") from None
    if model_kind(source) == "mlflow":
        import mlflow.artifacts

        try:
            uri = _model_version_uri(source, tracking_uri) if source.startswith("models:/") else source
            local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=download_dir, tracking_uri=tracking_uri)
        except Exception as exc:  # MlflowException, OSError, ...: say which URI failed
            raise ConfigError(f"model: could not download {source!r} from MLflow ({type(exc).__name__}: {exc})") from None
        return Path(local)
    path = Path(source).expanduser()
    if not path.is_dir():
        from model.config import MODEL_PRESETS

        raise ConfigError(
            f"model: {source!r} is neither a model name ({', '.join(MODEL_PRESETS)}), an existing folder nor an "
            "MLflow URI (runs:/..., models:/...)"
        )
    return path


def _model_version_uri(source: str, tracking_uri: str | None) -> str:
    """``models:/<name>/<version>`` or ``models:/<name>@<alias>`` -> the version's artifact URI
    (looked up in the registry at ``tracking_uri``, which also serves as the registry URI)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    rest = source[len("models:/") :].strip("/")
    if "@" in rest:
        name, alias = rest.split("@", 1)
        return client.get_model_version_by_alias(name, alias).source
    name, _, version = rest.rpartition("/")
    if not name or not version.isdigit():
        raise ConfigError(f"model: expected models:/<name>/<version> or models:/<name>@<alias>, got {source!r}")
    return client.get_model_version_download_uri(name, version)


def is_checkpoint(directory: Path) -> bool:
    return (directory / CHECKPOINT_STATE).is_file() and (directory / CHECKPOINT_TRAINABLE).is_file()


def pipeline_dir(directory: str | Path) -> Path:
    """The ``save_pretrained`` folder inside an MLflow model folder (``MLmodel`` +
    ``artifacts/pipeline/``, written by ``model.mlflow_model``), else ``directory`` itself."""
    directory = Path(directory)
    inner = directory / "artifacts" / MLFLOW_ARTIFACT
    return inner if (directory / "MLmodel").is_file() and inner.is_dir() else directory


def read_model_config(directory: str | Path, overrides: dict[str, Any] | None = None):
    """The ModelConfig of a ``save_pretrained`` folder (its ``model_index.json``), ``overrides`` applied."""
    from model.config import ModelConfig, upgrade_saved_config
    from model.encoders import WeightsNotFoundError

    directory = Path(directory)
    path = directory / MODEL_INDEX
    if not path.is_file():
        old = directory / "config.json"
        if old.is_file() and json.loads(old.read_text()).get("format") == OLD_FORMAT:
            raise ConfigError(
                f"model: {directory} was saved in the old {OLD_FORMAT!r} layout (config.json + livephoto.safetensors), "
                f"which this version no longer reads; re-save it with the version that wrote it, or retrain"
            )
        raise WeightsNotFoundError("LivePhoto model", str(directory), f"Expected {MODEL_INDEX} written by LivePhotoPipeline.save_pretrained.")
    index = json.loads(path.read_text())
    if "model_config" not in index:
        raise ConfigError(f"model: {path} has no 'model_config': not a LivePhoto pipeline (its _class_name is {index.get('_class_name')!r})")
    return from_dict(ModelConfig, deep_merge(upgrade_saved_config(index["model_config"]), overrides or {}), prefix="model")


def load_saved(pipeline_cls, source: str, tracking_uri: str | None = None, overrides: dict[str, Any] | None = None,
               components: dict[str, Any] | None = None):
    """``pipeline_cls`` (``LivePhotoPipeline``) of a saved model (any form in the module
    docstring); ``overrides`` (ModelConfig fields, e.g. ``base_model``) say where its pretrained
    parts come from on this machine, ``components`` replace saved ones."""
    from model.encoders import WeightsNotFoundError

    overrides = overrides or {}
    with tempfile.TemporaryDirectory(prefix="livephoto-model-") as tmp:
        offline = bool(overrides.get("local_files_only"))
        directory = pipeline_dir(resolve_model_dir(source, tracking_uri, tmp, offline))  # MLflow model -> its folder
        if is_checkpoint(directory):
            return _load_checkpoint(pipeline_cls, directory, overrides, components or {})
        try:
            return pipeline_cls.from_folder(directory, overrides, components)
        except WeightsNotFoundError as exc:
            if exc.component == "LivePhoto model":  # no model_index.json: not a model folder at all
                raise ConfigError(f"model: {source!r} is not a LivePhoto save_pretrained folder or training checkpoint ({exc})") from None
            raise  # the model is fine; its pretrained parts are missing here (the message lists them)
        except (OSError, KeyError) as exc:
            raise ConfigError(f"model: {source!r} is not a LivePhoto save_pretrained folder or training checkpoint ({exc})") from None


def _load_checkpoint(pipeline_cls, directory: Path, overrides: dict[str, Any], components: dict[str, Any]):
    """A training checkpoint: rebuild the pipeline from its ModelConfig, load the trained weights
    (their EMA where the run kept one, as the run's final model does)."""
    from safetensors.torch import load_file

    from model.config import ModelConfig, upgrade_saved_config

    meta = json.loads((directory / CHECKPOINT_STATE).read_text())
    if "model" not in meta:
        raise ConfigError(f"model: {directory / CHECKPOINT_STATE} has no 'model' section; not a training checkpoint")
    cfg = from_dict(ModelConfig, deep_merge(upgrade_saved_config(meta["model"]), overrides), prefix="model")
    pipe = pipeline_cls(model_config=to_dict(cfg), **components)
    state = load_file(directory / CHECKPOINT_TRAINABLE)
    if (directory / CHECKPOINT_EMA).is_file():
        state.update(load_file(directory / CHECKPOINT_EMA))
    pipe.model.load_trainable_state_dict(state)
    return pipe
