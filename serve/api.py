"""The HTTP side of the Serve app: the FastAPI API (checks every field, decodes the photo,
encodes the video) and the ``LivePhotoIngress`` deployment that forwards checked requests to
the ``LivePhotoModel`` deployment.

:func:`create_app` is plain FastAPI over two async callables (``animate``, ``describe``), so
it can be tested without Ray; the deployment passes calls to the model's handle.
"""

from __future__ import annotations

import asyncio
import io
import logging
import math
import re
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

import numpy as np
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from ray import serve

from serve.config import ServeConfig
from serve.page import PAGE_HTML
from serve.schema import AnimateRequest, AnimateResult

logger = logging.getLogger("ray.serve")

IMAGE_FORMATS = ("JPEG", "PNG", "WEBP")
VIDEO_TYPES = {"mp4": "video/mp4", "gif": "image/gif"}
FORM_FIELDS = (
    "image", "prompt", "negative_prompt", "intensity", "num_frames", "num_inference_steps",
    "guidance_scale", "seed", "fps", "format",
)
MAX_SEED = 2**32 - 1
MAX_FPS = 60
OPEN_PATHS = ("/", "/healthz", "/livez", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc")
_INT = re.compile(r"[+-]?\d{1,20}")


class ApiError(Exception):
    """A client mistake: answered as ``{"detail": "field: message"}`` with ``status``."""

    def __init__(self, status: int, field: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(f"{field}: {message}")
        self.status, self.field, self.message, self.headers = status, field, message, headers

    def response(self) -> JSONResponse:
        return JSONResponse({"detail": str(self)}, status_code=self.status, headers=self.headers)


# --------------------------------------------------------------------------- field checks


def parse_int(value: str | None, field: str, low: int, high: int, default: int | None) -> int | None:
    """An integer form field in [low, high]; ``default`` when absent or blank."""
    if value is None or value.strip() == "":
        return default
    text = value.strip()
    if not _INT.fullmatch(text) or not low <= int(text) <= high:
        raise ApiError(422, field, f"must be an integer {low}..{high}, got {value!r}")
    return int(text)


def parse_float(value: str | None, field: str, low: float, high: float, default: float) -> float:
    if value is None or value.strip() == "":
        return default
    try:
        number = float(value.strip())
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or not low <= number <= high:
        raise ApiError(422, field, f"must be a number {low:g}..{high:g}, got {value!r}")
    return number


def parse_text(value: str | None, field: str, max_chars: int, required: bool) -> str:
    text = (value or "").strip()
    if required and not text:
        raise ApiError(422, field, "required: a non-empty text")
    if len(text) > max_chars:
        raise ApiError(422, field, f"must be at most {max_chars} characters, got {len(text)}")
    return text


def decode_image(data: bytes, resolution: int, max_pixels: int) -> np.ndarray:
    """JPEG/PNG/WebP bytes -> uint8 (resolution, resolution, 3): EXIF orientation applied, RGB
    (alpha over white), centre-cropped and resized exactly like training frames
    (:func:`model.image.to_rgb` + :func:`model.image.center_crop_resize`, as the pipeline does).

    The pixel count is read from the header and checked before any pixel is decoded.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    from model.image import center_crop_resize, to_rgb

    if not data:
        raise ApiError(400, "image", "is empty (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ApiError(415, "image", f"is not an image; allowed: {', '.join(IMAGE_FORMATS)}") from None
    except Image.DecompressionBombError:
        raise ApiError(413, "image", f"has more than {max_pixels} pixels") from None
    if image.format not in IMAGE_FORMATS:
        raise ApiError(415, "image", f"format {image.format} is not supported; allowed: {', '.join(IMAGE_FORMATS)}")
    width, height = image.size
    if width * height > max_pixels:
        raise ApiError(413, "image", f"is {width}x{height} = {width * height} pixels, more than the limit of {max_pixels}")
    try:
        image.load()
    except Image.DecompressionBombError:
        raise ApiError(413, "image", f"has more than {max_pixels} pixels") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ApiError(400, "image", f"is truncated or corrupt ({exc})") from None
    if width == 0 or height == 0:
        raise ApiError(400, "image", f"is empty ({width}x{height})")
    image = ImageOps.exif_transpose(image)
    return center_crop_resize(to_rgb(image), resolution, resolution)


def encode_video(frames: np.ndarray, fps: int, fmt: str) -> bytes:
    """uint8 (frames, height, width, 3) -> MP4 (H.264 yuv420p) or GIF bytes (model.video_io)."""
    from model.video_io import export_video

    with tempfile.TemporaryDirectory(prefix="livephoto-video-") as tmp:
        path = export_video(frames, Path(tmp) / f"video.{fmt}", fps=fps, format=fmt)
        return path.read_bytes()


def _json_error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


# --------------------------------------------------------------------------- guard middleware


class Guard:
    """ASGI middleware run before any body is read: the API key on /v1/*, then the body size.

    A body without Content-Length is read up to the limit and replayed, so no upload larger
    than ``max_body`` is ever parsed.
    """

    def __init__(self, app, api_key: str | None, max_body: int):
        self.app, self.api_key, self.max_body = app, api_key, max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        path = scope.get("path", "")
        if self.api_key and path not in OPEN_PATHS:
            scheme, _, token = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), self.api_key.encode()):
                response = _json_error(401, "authorization: missing or wrong API key; send 'Authorization: Bearer KEY'", {"WWW-Authenticate": "Bearer"})
                return await response(scope, receive, send)
        length = headers.get("content-length")
        too_large = _json_error(413, f"request: body larger than {self.max_body} bytes")
        if length is not None:
            if not length.isdigit():
                return await _json_error(400, "content-length: not a number")(scope, receive, send)
            if int(length) > self.max_body:
                return await too_large(scope, receive, send)
            return await self.app(scope, receive, send)
        if scope.get("method") in ("GET", "HEAD", "OPTIONS", "DELETE"):
            return await self.app(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body:
                return await too_large(scope, receive, send)
            more = message.get("more_body", False)
        body, done = b"".join(chunks), False

        async def replay():
            nonlocal done
            if done:
                return await receive()
            done = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)


# --------------------------------------------------------------------------- the API


@dataclass
class Backend:
    """What the API needs from the model: ``animate(AnimateRequest) -> AnimateResult`` and
    ``describe() -> dict`` (model_info plus batch statistics)."""

    animate: Callable[[AnimateRequest], Awaitable[AnimateResult]]
    describe: Callable[[], Awaitable[dict[str, Any]]]
    ready: Callable[[], Awaitable[bool]] | None = None
    """Whether a model replica can run the pipeline now (None: always, for tests without Ray)."""


def _remote_cause(exc: BaseException) -> BaseException:
    """A RayTaskError's original exception (its message without the remote traceback)."""
    return getattr(exc, "cause", None) or exc


def create_app(cfg: ServeConfig, backend: Backend, api_key: str | None = None) -> FastAPI:
    """The FastAPI app: ``GET /``, ``GET /healthz``, ``GET /v1/model``, ``POST /v1/animate``."""
    from ray.exceptions import ActorUnavailableError, RayActorError
    from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

    retry = {"Retry-After": str(cfg.retry_after_s)}
    gone = (DeploymentUnavailableError, RayActorError, ActorUnavailableError)
    """The model replica is not there: not started yet, or died mid-request (Serve restarts it)."""

    app = FastAPI(
        title="LivePhoto",
        description="Animate a photo: a prompt that describes the motion and a motion intensity 1..10 -> a short video.",
        version="1",
    )
    info: dict[str, Any] = {}

    async def model_info() -> dict[str, Any]:
        if not info:
            info.update({k: v for k, v in (await backend.describe()).items() if k not in ("batch_sizes",)})
        return info

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError):
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(x) for x in first.get("loc", ()) if x not in ("body", "query", "header")]
        field = ".".join(loc) or "request"
        message = first.get("msg", "invalid")
        if field == "image":
            message = f"must be a file upload (multipart/form-data); {message}"
        return _json_error(422, f"{field}: {message}")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE_HTML)

    @app.get("/livez")
    async def livez() -> dict[str, str]:
        """Liveness: the ingress answers (no model call, no API key)."""
        return {"status": "ok"}

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        """Readiness (no API key): 200 while a model replica can run the pipeline (``model``:
        ``ready``, or ``busy`` when every replica is occupied); 503 with Retry-After while none can."""
        if backend.ready is None:
            return JSONResponse({"status": "ok", "model": "ready"})
        try:
            ok = await asyncio.wait_for(backend.ready(), timeout=cfg.health_timeout_s)
        except (asyncio.TimeoutError, BackPressureError):
            return JSONResponse({"status": "ok", "model": "busy"})
        except gone as exc:
            return JSONResponse({"status": "unavailable", "model": f"no replica: {type(exc).__name__}"}, 503, headers=retry)
        if not ok:
            return JSONResponse({"status": "unavailable", "model": "the pipeline failed its check"}, 503, headers=retry)
        return JSONResponse({"status": "ok", "model": "ready"})

    @app.get("/v1/model")
    async def get_model() -> dict[str, Any]:
        """What is loaded: source, resolution, default and maximum frames, intensity levels,
        request limits, and the batch sizes one model replica has run."""
        try:
            described = await backend.describe()
        except BackPressureError:
            raise ApiError(503, "model", "busy; retry later", retry) from None
        except gone:
            raise ApiError(503, "model", "not available (starting or restarting); retry later", retry) from None
        return {
            **described,
            "limits": {
                "max_num_inference_steps": cfg.max_num_inference_steps,
                "max_guidance_scale": cfg.max_guidance_scale,
                "max_prompt_chars": cfg.max_prompt_chars,
                "max_image_bytes": cfg.max_image_bytes,
                "max_image_pixels": cfg.max_image_pixels,
                "image_formats": list(IMAGE_FORMATS),
                "video_formats": list(VIDEO_TYPES),
                "max_fps": MAX_FPS,
            },
            "defaults": {
                "intensity": 5,
                "num_inference_steps": cfg.default_num_inference_steps,
                "guidance_scale": cfg.default_guidance_scale,
                "fps": cfg.default_fps,
                "format": "mp4",
            },
        }

    @app.post(
        "/v1/animate",
        response_class=Response,
        responses={
            200: {"content": {"video/mp4": {}, "image/gif": {}}, "description": "the video; headers X-Seed, X-Inference-Seconds, X-Batch-Size"},
            400: {"description": "corrupt or truncated image"},
            401: {"description": "missing or wrong API key"},
            413: {"description": "image or request too large"},
            415: {"description": "not a JPEG, PNG or WebP image"},
            422: {"description": "a field out of range (the message names it)"},
            503: {"description": "queue full: retry after Retry-After seconds"},
            504: {"description": "timed out"},
        },
    )
    async def animate(
        request: Request,
        image: UploadFile | None = File(None, description="the photo: JPEG, PNG or WebP"),
        prompt: str | None = Form(None, description="the motion, e.g. 'the flag waves'"),
        negative_prompt: str | None = Form(None, description="what to steer away from (classifier-free guidance)"),
        intensity: str | None = Form(None, description="motion intensity, integer 1..levels (default 5)"),
        num_frames: str | None = Form(None, description="frames of the video (default: the model's)"),
        num_inference_steps: str | None = Form(None, description="denoising steps"),
        guidance_scale: str | None = Form(None, description="text guidance scale"),
        seed: str | None = Form(None, description=f"0..{MAX_SEED}; random when not given (reported in X-Seed)"),
        fps: str | None = Form(None, description=f"frames per second 1..{MAX_FPS}"),
        format: str | None = Form(None, description="mp4 (default) or gif"),  # noqa: A002
    ) -> Response:
        """Animate a photo. multipart/form-data; answers the video bytes."""
        start = time.perf_counter()
        # 1. the form: no unknown fields, an image present
        form = await request.form()
        unknown = sorted(set(form.keys()) - set(FORM_FIELDS))
        if unknown:
            raise ApiError(422, unknown[0], f"unknown field; allowed: {', '.join(FORM_FIELDS)}")
        if image is None or not hasattr(image, "read"):
            raise ApiError(422, "image", f"required: a {', '.join(IMAGE_FORMATS)} file")
        # 2. the text fields, against the loaded model
        model = await model_info()
        fmt = (format or "mp4").strip().lower()
        if fmt not in VIDEO_TYPES:
            raise ApiError(422, "format", f"got {format!r}, allowed: {', '.join(VIDEO_TYPES)}")
        text = parse_text(prompt, "prompt", cfg.max_prompt_chars, required=True)
        negative = parse_text(negative_prompt, "negative_prompt", cfg.max_prompt_chars, required=False)
        level = parse_int(intensity, "intensity", 1, model["intensity_levels"], 5)
        frames = parse_int(num_frames, "num_frames", 2, model["max_frames"], model["num_frames"])
        steps = parse_int(num_inference_steps, "num_inference_steps", 1, cfg.max_num_inference_steps, cfg.default_num_inference_steps)
        guidance = parse_float(guidance_scale, "guidance_scale", 0.0, cfg.max_guidance_scale, cfg.default_guidance_scale)
        rate = parse_int(fps, "fps", 1, MAX_FPS, cfg.default_fps)
        used_seed = parse_int(seed, "seed", 0, MAX_SEED, None)
        if used_seed is None:
            used_seed = secrets.randbelow(MAX_SEED + 1)
        # 3. the photo: size, header, decode, crop + resize to the model's resolution
        data = await image.read(cfg.max_image_bytes + 1)
        if len(data) > cfg.max_image_bytes:
            raise ApiError(413, "image", f"larger than {cfg.max_image_bytes} bytes")
        pixels = await asyncio.to_thread(decode_image, data, model["resolution"], cfg.max_image_pixels)
        req = AnimateRequest(pixels, text, level, negative, frames, steps, guidance, used_seed)
        # 4. the model (batched with other requests), bounded by the queue and the timeout
        try:
            result = await asyncio.wait_for(backend.animate(req), timeout=cfg.request_timeout_s)
        except asyncio.TimeoutError:
            return _json_error(504, f"request: no video within {cfg.request_timeout_s:g} s; retry later or ask for fewer frames/steps")
        except BackPressureError:
            return _json_error(503, "model: queue full; retry later", retry)
        except DeploymentUnavailableError:
            return _json_error(503, "model: not available yet; retry later", retry)
        except (RayActorError, ActorUnavailableError) as exc:
            logger.warning("model replica lost during a request: %s", str(exc).splitlines()[0][:300])
            return _json_error(503, "model: the replica running this request stopped and is being restarted; retry later", retry)
        except ValueError as exc:  # the pipeline's own input check (names the field)
            return _json_error(422, str(_remote_cause(exc)).splitlines()[0])
        except Exception as exc:  # noqa: BLE001 - a JSON answer, never a bare 500
            cause = _remote_cause(exc)
            logger.exception("animate failed")
            return _json_error(500, f"model: {type(cause).__name__}: {str(cause).splitlines()[0][:300] if str(cause) else ''}")
        # 5. the video
        video = await asyncio.to_thread(encode_video, result.frames, rate, fmt)
        headers = {
            "X-Seed": str(used_seed),
            "X-Inference-Seconds": f"{result.inference_s:.3f}",
            "X-Batch-Size": str(result.batch_size),
            "X-Total-Seconds": f"{time.perf_counter() - start:.3f}",
            "X-Num-Frames": str(int(result.frames.shape[0])),
            "Content-Disposition": f'inline; filename="livephoto-{used_seed}.{fmt}"',
        }
        return Response(video, media_type=VIDEO_TYPES[fmt], headers=headers)

    app.add_middleware(Guard, api_key=api_key, max_body=cfg.max_request_bytes)
    return app


@serve.deployment(name="LivePhotoIngress", ray_actor_options={"num_cpus": 0}, max_ongoing_requests=256)
@serve.ingress()
class LivePhotoIngress:
    """HTTP ingress: checks requests, hands them to the model deployment, encodes the video."""

    def __init__(self, model, cfg: ServeConfig, api_key: str | None = None):
        from PIL import Image

        self.model, self.cfg, self.api_key = model, cfg, api_key
        # PIL's own decompression-bomb check (in this replica's process), behind decode_image's
        Image.MAX_IMAGE_PIXELS = cfg.max_image_pixels

    async def _animate(self, req: AnimateRequest) -> AnimateResult:
        return await self.model.animate.remote(req)

    async def _describe(self) -> dict[str, Any]:
        return await self.model.describe.remote()

    async def _ready(self) -> bool:
        return await self.model.ready.remote()

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_app(self.cfg, Backend(self._animate, self._describe, self._ready), self.api_key)
