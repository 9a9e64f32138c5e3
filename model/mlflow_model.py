"""LivePhoto as an MLflow model (``python_function`` flavour): image, prompt, intensity -> video.

    save_mlflow_model(pipeline_dir, "out/model")                   # MLmodel + the pipeline folder
    model = mlflow.pyfunc.load_model("models:/livephoto/1")         # or runs:/<id>/final_model
    model.predict(pd.DataFrame({"image": [png_b64], "prompt": ["the flag waves"], "intensity": [5]}),
                  params={"num_inference_steps": 10, "seed": 0})    # -> DataFrame: video (base64), format

``mlflow models serve -m <uri> --env-manager local`` serves it over HTTP (``/invocations``,
``dataframe_split`` JSON with the image as a base64 PNG/JPEG string). The saved model holds the
``save_pretrained`` folder as its artifact ``pipeline`` and this package's ``model/`` and
``common/`` code, so it loads without this repository checked out; its pip requirements are the
versions installed when it was saved. Training logs every final model this way
(``training.tracking``), and Serve loads these folders too (``model.load.pipeline_dir``).
"""

from __future__ import annotations

import base64
import io
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from common.resources import torch_device
from model.load import MLFLOW_ARTIFACT as ARTIFACT
from model.load import read_model_config

VIDEO_FORMATS = ("gif", "mp4")
REQUIREMENTS = ("torch", "diffusers", "transformers", "safetensors", "einops", "numpy", "pillow", "av", "tqdm", "mlflow", "pandas")
PACKAGES = ("model", "common")
"""This project's packages the model's code needs (``model/`` imports only ``common.config``)."""


def signature(num_frames: int, default_steps: int = 25, default_guidance: float = 7.5):
    """Inputs: one row per request (``image`` base64 PNG/JPEG, ``prompt``, ``intensity`` 1..10);
    params: the sampler settings shared by a call; output: ``video`` (base64) and its ``format``."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string", "image"), ColSpec("string", "prompt"), ColSpec("long", "intensity")]),
        outputs=Schema([ColSpec("string", "video"), ColSpec("string", "format")]),
        params=ParamSchema([
            ParamSpec("num_inference_steps", "long", default_steps),
            ParamSpec("guidance_scale", "double", default_guidance),
            ParamSpec("seed", "long", 0),
            ParamSpec("num_frames", "long", num_frames),
            ParamSpec("negative_prompt", "string", ""),
            ParamSpec("fps", "long", 8),
            ParamSpec("format", "string", "gif"),
        ]),
    )


def _requirements(text_encoder: str | None, lora: tuple[str, ...] = ()) -> list[str]:
    names = list(REQUIREMENTS) + (["peft"] if lora else [])  # diffusers fuses LoRAs through PEFT
    if text_encoder and text_encoder.startswith("package:"):  # e.g. the MiniLM wheel of the mini preset
        names.append(text_encoder[len("package:"):].split("/", 1)[0].replace("_", "-"))
    found = []
    for name in names:
        try:
            found.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    return found


def save_mlflow_model(pipeline_dir: str | Path, path: str | Path) -> Path:
    """Write an MLflow model folder at ``path`` around the ``save_pretrained`` folder ``pipeline_dir``."""
    import mlflow.pyfunc

    cfg = read_model_config(pipeline_dir)
    root = Path(__file__).resolve().parents[1]
    mlflow.pyfunc.save_model(
        path=str(path),
        python_model=LivePhotoPythonModel(),
        artifacts={ARTIFACT: str(pipeline_dir)},
        code_paths=[str(root / p) for p in PACKAGES],
        signature=signature(cfg.num_frames),
        pip_requirements=_requirements(cfg.text_encoder, cfg.lora),
    )
    return Path(path)


def decode_image(value: Any, row: int):
    """A base64 string (or raw bytes) of a PNG/JPEG/... -> PIL image; ValueError naming the row."""
    from PIL import Image, UnidentifiedImageError

    try:
        data = base64.b64decode(value, validate=True) if isinstance(value, str) else bytes(value)
        image = Image.open(io.BytesIO(data))
        image.load()
        return image
    except (ValueError, TypeError, UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"image (row {row}): not a base64-encoded image file ({type(exc).__name__}: {exc})") from None


def encode_video(frames: np.ndarray, fps: int, fmt: str) -> str:
    """uint8 (frames, height, width, 3) -> base64 of a GIF / MP4 file."""
    import tempfile

    from model.media import export_video

    with tempfile.TemporaryDirectory() as tmp:
        path = export_video(frames, Path(tmp) / f"video.{fmt}", fps=fps)
        return base64.b64encode(path.read_bytes()).decode("ascii")


try:  # the class needs mlflow; the rest of the package must not
    from mlflow.pyfunc import PythonModel
except ImportError:  # pragma: no cover - mlflow is a pinned dependency
    PythonModel = object


class LivePhotoPythonModel(PythonModel):
    """``python_function`` wrapper over :class:`~model.pipeline.LivePhotoPipeline` (CPU, or CUDA when present)."""

    def load_context(self, context) -> None:
        from model.pipeline import LivePhotoPipeline

        self.pipe = LivePhotoPipeline.from_pretrained(context.artifacts[ARTIFACT])
        self.pipe.to(torch_device("auto"))
        self.pipe.set_progress_bar_config(disable=True)
        self.defaults = {p.name: p.default for p in signature(self.pipe.cfg.num_frames).params}

    def predict(self, context, model_input, params: dict[str, Any] | None = None):
        import pandas as pd

        params = {**self.defaults, **(params or {})}
        if params["format"] not in VIDEO_FORMATS:
            raise ValueError(f"format: got {params['format']!r}, allowed: {', '.join(VIDEO_FORMATS)}")
        frame = pd.DataFrame(model_input)
        missing = [c for c in ("image", "prompt", "intensity") if c not in frame.columns]
        if missing:
            raise ValueError(f"model_input: missing column(s) {', '.join(missing)}; expected image, prompt, intensity")
        if frame.empty:
            raise ValueError("model_input: no rows")
        images = [decode_image(v, i) for i, v in enumerate(frame["image"])]
        size = self.pipe.cfg.resolution
        out = self.pipe(
            images, [str(p) for p in frame["prompt"]], intensity=[int(v) for v in frame["intensity"]],
            negative_prompt=str(params["negative_prompt"]), num_frames=int(params["num_frames"]), height=size, width=size,
            num_inference_steps=int(params["num_inference_steps"]), guidance_scale=float(params["guidance_scale"]),
            seed=[int(params["seed"]) + i for i in range(len(images))],
        )
        videos = np.rint(np.asarray(out.frames) * 255).astype(np.uint8)
        fmt = str(params["format"])
        return pd.DataFrame({"video": [encode_video(v, int(params["fps"]), fmt) for v in videos], "format": [fmt] * len(videos)})
