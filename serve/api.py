"""The HTTP side of the Serve app: the FastAPI API (a Pydantic form checks every field, the
photo is decoded, the video encoded in memory) and the ``LivePhotoIngress`` deployment that
forwards checked requests to the ``LivePhotoModel`` deployment.

:func:`create_app` is plain FastAPI over two async callables (``animate``, ``describe``), so
it can be tested without Ray; the deployment passes calls to the model's handle.
"""

import asyncio
import io
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Annotated, Any, Awaitable, Callable, Literal

import numpy as np
from fastapi import Depends, FastAPI, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from serve.config import ServeConfig
from serve.page import PAGE_HTML
from serve.model import AnimateRequest, AnimateResult

logger = logging.getLogger("ray.serve")

IMAGE_FORMATS = ("JPEG", "PNG", "WEBP")
VIDEO_TYPES = {"mp4": "video/mp4", "gif": "image/gif"}
MAX_SEED = 2**32 - 1
MAX_FPS = 60


class ApiError(Exception):
    """A client mistake: answered as ``{"detail": "field: message"}`` with ``status``."""

    def __init__(self, status: int, field: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(f"{field}: {message}")
        self.status, self.field, self.message, self.headers = status, field, message, headers

    def response(self) -> JSONResponse:
        return JSONResponse({"detail": str(self)}, status_code=self.status, headers=self.headers)


def animate_form(cfg: ServeConfig) -> type[BaseModel]:
    """The ``POST /v1/animate`` form, with this server's limits as field bounds. The bounds that
    depend on the loaded model (intensity levels, most frames) are checked by :meth:`checked`."""

    class AnimateForm(BaseModel):
        model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

        image: UploadFile = Field(description="the photo: JPEG, PNG or WebP")
        prompt: str = Field(min_length=1, max_length=cfg.max_prompt_chars, description="the motion, e.g. 'the flag waves'")
        negative_prompt: str = Field("", max_length=cfg.max_prompt_chars, description="what to steer away from (guidance)")
        intensity: int = Field(5, ge=1, description="motion intensity, 1..the model's levels")
        num_frames: int | None = Field(None, ge=2, description="frames of the video (default: the model's)")
        num_inference_steps: int = Field(cfg.default_num_inference_steps, ge=1, le=cfg.max_num_inference_steps)
        guidance_scale: float = Field(cfg.default_guidance_scale, ge=0, le=cfg.max_guidance_scale, allow_inf_nan=False)
        guidance_start: float = Field(cfg.default_guidance_interval[0], ge=0, le=1, description="first guided fraction of the steps")
        guidance_stop: float = Field(cfg.default_guidance_interval[1], ge=0, le=1, description="guided steps end at this fraction")
        seed: int | None = Field(None, ge=0, le=MAX_SEED, description="random when not given (reported in X-Seed)")
        fps: int = Field(cfg.default_fps, ge=1, le=MAX_FPS)
        format: Literal["mp4", "gif"] = "mp4"

        def checked(self, model: dict[str, Any]) -> "AnimateForm":
            """The form with the model's bounds checked and defaults filled in."""
            if self.intensity > model["intensity_levels"]:
                raise ApiError(422, "intensity", f"must be an integer 1..{model['intensity_levels']}, got {self.intensity}")
            if self.guidance_start > self.guidance_stop:
                raise ApiError(422, "guidance_start", f"must be <= guidance_stop={self.guidance_stop:g}, got {self.guidance_start:g}")
            if self.num_frames is not None and self.num_frames > model["max_frames"]:
                raise ApiError(422, "num_frames", f"must be an integer 2..{model['max_frames']}, got {self.num_frames}")
            return self.model_copy(update={
                "num_frames": self.num_frames or model["num_frames"],
                "seed": secrets.randbelow(MAX_SEED + 1) if self.seed is None else self.seed,
            })

    return AnimateForm


def decode_image(data: bytes, resolution: int, max_pixels: int) -> np.ndarray:
    """JPEG/PNG/WebP bytes -> uint8 (resolution, resolution, 3): EXIF orientation applied, RGB
    (alpha over white), centre-cropped and resized exactly like training frames
    (:func:`model.media.to_rgb` + :func:`model.media.center_crop_resize`, as the pipeline does).

    The pixel count is read from the header and checked before any pixel is decoded.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    from model.media import center_crop_resize, to_rgb

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


class BodyLimit:
    """ASGI middleware, run before any body is parsed: a request body over ``max_body`` bytes is
    a 413 (FastAPI and Starlette have no such limit). A body without Content-Length is read up
    to the limit and replayed."""

    def __init__(self, app, max_body: int):
        self.app, self.max_body = app, max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS", "DELETE"):
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers", [])).get(b"content-length")
        too_large = JSONResponse({"detail": f"request: body larger than {self.max_body} bytes"}, 413)
        if length is not None:
            if not length.isdigit():
                return await JSONResponse({"detail": "content-length: not a number"}, 400)(scope, receive, send)
            return await (too_large if int(length) > self.max_body else self.app)(scope, receive, send)
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
        pending = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replay():
            return pending.pop() if pending else await receive()

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
    """The FastAPI app: ``GET /``, ``GET /healthz``, ``GET /v1/model``, ``POST /v1/animate``.

    (No ``from __future__ import annotations`` in this module: FastAPI reads the annotations of
    the routes below, which name the local ``Form_`` and ``bearer``.)"""
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
    Form_ = animate_form(cfg)  # noqa: N806 - a class
    bearer = HTTPBearer(auto_error=False)

    async def require_key(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        """The API key of /v1/* (none set: open). Checked before the form is validated."""
        given = credentials.credentials.encode() if credentials else b""
        if api_key and not secrets.compare_digest(given, api_key.encode()):
            raise ApiError(401, "authorization", "missing or wrong API key; send 'Authorization: Bearer KEY'",
                           {"WWW-Authenticate": "Bearer"})

    keyed = [Depends(require_key)]

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
        field = ".".join(str(x) for x in first.get("loc", ()) if x not in ("body", "query", "header")) or "request"
        message = first.get("msg", "invalid")
        if field == "image":
            message = f"required: a {', '.join(IMAGE_FORMATS)} file upload (multipart/form-data); {message}"
        elif first.get("type") == "extra_forbidden":
            message = f"unknown field; allowed: {', '.join(Form_.model_fields)}"
        return JSONResponse({"detail": f"{field}: {message}"}, 422)

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

    @app.get("/v1/model", dependencies=keyed)
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
                "guidance_start": cfg.default_guidance_interval[0],
                "guidance_stop": cfg.default_guidance_interval[1],
                "fps": cfg.default_fps,
                "format": "mp4",
            },
        }

    @app.post(
        "/v1/animate",
        dependencies=keyed,
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
    async def animate(form: Annotated[Form_, Form()]) -> Response:
        """Animate a photo. multipart/form-data; answers the video bytes."""
        start = time.perf_counter()
        form = form.checked(await model_info())
        # 1. the photo: size, header, decode, crop + resize to the model's resolution
        data = await form.image.read(cfg.max_image_bytes + 1)
        if len(data) > cfg.max_image_bytes:
            raise ApiError(413, "image", f"larger than {cfg.max_image_bytes} bytes")
        pixels = await asyncio.to_thread(decode_image, data, info["resolution"], cfg.max_image_pixels)
        req = AnimateRequest(pixels, form.prompt, form.intensity, form.negative_prompt, form.num_frames,
                             form.num_inference_steps, form.guidance_scale, form.seed, (form.guidance_start, form.guidance_stop))
        # 2. the model (batched with other requests), bounded by the queue and the timeout
        try:
            result = await asyncio.wait_for(backend.animate(req), timeout=cfg.request_timeout_s)
        except asyncio.TimeoutError:
            return JSONResponse({"detail": f"request: no video within {cfg.request_timeout_s:g} s; retry later or ask for fewer frames/steps"}, 504)
        except BackPressureError:
            raise ApiError(503, "model", "queue full; retry later", retry) from None
        except DeploymentUnavailableError:
            raise ApiError(503, "model", "not available yet; retry later", retry) from None
        except (RayActorError, ActorUnavailableError) as exc:
            logger.warning("model replica lost during a request: %s", str(exc).splitlines()[0][:300])
            raise ApiError(503, "model", "the replica running this request stopped and is being restarted; retry later", retry) from None
        except ValueError as exc:  # the pipeline's own input check (names the field)
            return JSONResponse({"detail": str(_remote_cause(exc)).splitlines()[0]}, 422)
        except Exception as exc:  # noqa: BLE001 - a JSON answer, never a bare 500
            cause = _remote_cause(exc)
            logger.exception("animate failed")
            message = str(cause).splitlines()[0][:300] if str(cause) else ""
            return JSONResponse({"detail": f"model: {type(cause).__name__}: {message}"}, 500)
        # 3. the video, encoded in memory
        from model.media import encode_video  # torch is imported lazily in the ingress

        video = await asyncio.to_thread(encode_video, result.frames, form.fps, form.format)
        headers = {
            "X-Seed": str(form.seed),
            "X-Inference-Seconds": f"{result.inference_s:.3f}",
            "X-Batch-Size": str(result.batch_size),
            "X-Total-Seconds": f"{time.perf_counter() - start:.3f}",
            "X-Num-Frames": str(int(result.frames.shape[0])),
            "Content-Disposition": f'inline; filename="livephoto-{form.seed}.{form.format}"',
        }
        return Response(video, media_type=VIDEO_TYPES[form.format], headers=headers)

    app.add_middleware(BodyLimit, max_body=cfg.max_request_bytes)
    return app


@serve.deployment(name="LivePhotoIngress", ray_actor_options={"num_cpus": 0}, max_ongoing_requests=256)
@serve.ingress()
class LivePhotoIngress:
    """HTTP ingress: checks requests, hands them to the model deployment, encodes the video."""

    def __init__(self, model, cfg: ServeConfig, api_key: str | None = None):
        self.model, self.cfg, self.api_key = model, cfg, api_key

    async def _animate(self, req: AnimateRequest) -> AnimateResult:
        return await self.model.animate.remote(req)

    async def _describe(self) -> dict[str, Any]:
        return await self.model.describe.remote()

    async def _ready(self) -> bool:
        return await self.model.ready.remote()

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_app(self.cfg, Backend(self._animate, self._describe, self._ready), self.api_key)
