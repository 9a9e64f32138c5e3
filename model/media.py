"""Pixels in and out of the model: a photo as RGB, the one centre crop every frame goes through,
and video files written (MP4 / GIF with PyAV) and read back.

Every image or video frame that reaches the model goes through :func:`center_crop_resize`
(preprocessing, training, the pipeline and the server), so a photo at serving time is framed
exactly as training clips were. Every generated frame becomes one frame of the file (GIF
included: frames go through ffmpeg's GIF encoder, which, unlike Pillow's writer, does not
merge identical frames).
"""

from __future__ import annotations

import io
import itertools
import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np
import torch

VIDEO_FORMATS = ("mp4", "gif")


def center_crop_box(height: int, width: int, out_height: int, out_width: int) -> tuple[int, int, int, int]:
    """The largest centred box of aspect ``out_width / out_height``: (top, left, box_h, box_w)."""
    target = out_width / out_height
    if width / height > target:  # too wide: crop the sides
        box_h, box_w = height, max(1, round(height * target))
    else:  # too tall: crop top and bottom
        box_h, box_w = max(1, round(width / target)), width
    return (height - box_h) // 2, (width - box_w) // 2, box_h, box_w


def center_crop_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Centre-crop to the target aspect, then resize.

    ``image``: uint8 (H, W, 3) -> uint8 (height, width, 3). Area interpolation when shrinking
    (no aliasing), bicubic when enlarging.
    """
    if image.ndim != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image: expected a non-empty (height, width, channels) array, got shape {image.shape}")
    top, left, box_h, box_w = center_crop_box(image.shape[0], image.shape[1], height, width)
    crop = image[top : top + box_h, left : left + box_w]
    if (box_h, box_w) == (height, width):
        return np.ascontiguousarray(crop)
    shrink = box_h >= height and box_w >= width
    return cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


def to_rgb(image, background: int = 255) -> np.ndarray:
    """A PIL image or a uint8 array as uint8 (H, W, 3) RGB.

    Greyscale (H, W) / (H, W, 1) is repeated to 3 channels; palette and other PIL modes are
    converted; an alpha channel (RGBA, LA, palette transparency) is composited over a flat
    ``background`` (white by default), the same way for PIL images and arrays.
    """
    if hasattr(image, "mode") and hasattr(image, "convert"):  # PIL.Image
        if image.width == 0 or image.height == 0:
            raise ValueError(f"image: is empty ({image.width}x{image.height})")
        has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info)
        image = np.asarray(image.convert("RGBA" if has_alpha else "RGB"))
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"image: expected uint8 pixels, got {array.dtype}")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise ValueError(f"image: expected (height, width[, 1|3|4]) pixels, got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"image: is empty (shape {array.shape})")
    if array.shape[-1] == 4:
        alpha = array[..., 3:].astype(np.float32) / 255.0
        array = np.rint(array[..., :3] * alpha + background * (1.0 - alpha)).astype(np.uint8)
    return np.ascontiguousarray(array)


def frames_to_uint8(frames) -> np.ndarray:
    """Frames as uint8 (frames, height, width, 3).

    Accepts a float array / tensor in [0, 1] or a uint8 array laid out (frames, height,
    width, 3), a tensor (frames, 3, height, width), or a list of PIL images.
    """
    if isinstance(frames, (list, tuple)):
        frames = np.stack([np.asarray(f.convert("RGB")) if hasattr(f, "convert") else np.asarray(f) for f in frames])
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().float().cpu()
        if frames.ndim == 4 and frames.shape[1] == 3 and frames.shape[-1] != 3:
            frames = frames.permute(0, 2, 3, 1)
        frames = frames.numpy()
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"frames: expected (frames, height, width, 3), got shape {frames.shape}")
    if frames.dtype != np.uint8:
        frames = np.rint(np.clip(frames.astype(np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)
    return frames


def _gif_frame(frame: np.ndarray):
    """uint8 (height, width, 3) -> a pal8 ``av.VideoFrame`` (median-cut palette of up to 256 colours)."""
    import av
    from PIL import Image

    quantized = Image.fromarray(frame).quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    rgb = np.asarray(quantized.getpalette(), dtype=np.uint8).reshape(-1, 3)
    palette = np.zeros((256, 4), dtype=np.uint8)  # PyAV's pal8 palette rows are (A, R, G, B)
    palette[:, 0] = 255
    palette[: len(rgb), 1:] = rgb
    return av.VideoFrame.from_ndarray((np.asarray(quantized), palette), format="pal8")


def export_video(frames, path: str | Path | BinaryIO, fps: int | Fraction = 8, format: str | None = None,  # noqa: A002
                 *, crf: int = 18, preset: str = "medium") -> Path | BinaryIO:
    """Write ``frames`` to ``path`` (a file name, written atomically, or a writable binary file
    object, then ``format`` is required); ``format`` defaults to the suffix. The project's one
    video writer: generated videos, the server's answers and the sample datasets.

    ``frames``: anything :func:`frames_to_uint8` takes, or an iterator of uint8 (height, width, 3)
    frames (encoded as they come, e.g. while transcoding a long video).
    MP4: H.264, yuv420p (height and width must be even), exactly ``fps`` (a Fraction is kept
    exact), ``crf`` 0 = lossless (constant QP 0: decoded frames are the input after the yuv420p
    conversion), one encoder thread (the bytes do not depend on the machine).
    GIF: one palette per frame, ``1/fps`` seconds per frame, loops forever.
    """
    import av

    in_memory = hasattr(path, "write")
    if not in_memory:
        path = Path(path)
    format = (format or ("" if in_memory else path.suffix.lstrip("."))).lower()
    if format not in VIDEO_FORMATS:
        raise ValueError(f"format: got {format!r}, allowed: {', '.join(VIDEO_FORMATS)}")
    if fps <= 0:
        raise ValueError(f"fps: must be > 0, got {fps}")
    if isinstance(frames, Iterator):
        first = next(frames, None)
        if first is None:
            raise ValueError("frames: the iterator is empty")
        video = itertools.chain([frames_to_uint8(first[None])[0]], (np.ascontiguousarray(f) for f in frames))
        height, width = first.shape[:2]
    else:
        video = frames_to_uint8(frames)
        height, width = video.shape[1:3]
    if format == "mp4" and (height % 2 or width % 2):
        raise ValueError(f"frames: mp4 needs an even height and width, got {height}x{width}")
    target = path
    if not in_memory:
        path.parent.mkdir(parents=True, exist_ok=True)
        target = path.with_name(path.stem + ".partial" + path.suffix)
    rate = Fraction(fps).limit_denominator(1001 * 1000)
    try:
        muxer_options = {"loop": "0"} if format == "gif" else {}
        with av.open(target if in_memory else str(target), mode="w", format=format, container_options=muxer_options) as container:
            if format == "mp4":
                quality = {"qp": "0"} if crf == 0 else {"crf": str(crf)}
                stream = container.add_stream("libx264", rate=rate, options={**quality, "preset": preset, "threads": "1"})
                stream.pix_fmt = "yuv420p"
                stream.codec_context.time_base = 1 / rate
            else:
                stream = container.add_stream("gif", rate=rate)
                stream.pix_fmt = "pal8"
            stream.width, stream.height = width, height
            for index, frame in enumerate(video):
                av_frame = av.VideoFrame.from_ndarray(frame, format="rgb24") if format == "mp4" else _gif_frame(frame)
                if format == "mp4":
                    av_frame.pts = index
                container.mux(stream.encode(av_frame))
            container.mux(stream.encode())
        if not in_memory:
            os.replace(target, path)
    finally:
        if not in_memory:
            Path(target).unlink(missing_ok=True)
    return path


def encode_video(frames, fps: int = 8, format: str = "mp4") -> bytes:  # noqa: A002
    """``frames`` as the bytes of an MP4 or GIF file (:func:`export_video` into memory)."""
    buffer = io.BytesIO()
    export_video(frames, buffer, fps=fps, format=format)
    return buffer.getvalue()


def read_video(path: str | Path) -> np.ndarray:
    """Decode every frame of a video file: uint8 (frames, height, width, 3)."""
    import av

    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return np.stack(frames) if frames else np.zeros((0, 0, 0, 3), np.uint8)


def frames_per_second(path: str | Path) -> float:
    """Average frame rate of the first video stream."""
    import av

    with av.open(str(path)) as container:
        return float(container.streams.video[0].average_rate)
