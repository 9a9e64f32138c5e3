"""Write generated frames to MP4 (H.264) or GIF with PyAV, and read videos back.

Every frame becomes one frame of the file (GIF included: frames are written through
ffmpeg's GIF encoder, which, unlike Pillow's writer, does not merge identical frames).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

VIDEO_FORMATS = ("mp4", "gif")


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


def export_video(frames, path: str | Path | BinaryIO, fps: int = 8, format: str | None = None) -> Path | BinaryIO:  # noqa: A002
    """Write ``frames`` (see :func:`frames_to_uint8`) to ``path`` (a file name, or a writable binary
    file object, then ``format`` is required); ``format`` defaults to the suffix.

    MP4: H.264, yuv420p (height and width must be even), constant ``fps``.
    GIF: one palette per frame, ``1/fps`` seconds per frame, loops forever.
    """
    import av

    in_memory = hasattr(path, "write")
    if not in_memory:
        path = Path(path)
    format = (format or ("" if in_memory else path.suffix.lstrip("."))).lower()
    if format not in VIDEO_FORMATS:
        raise ValueError(f"format: got {format!r}, allowed: {', '.join(VIDEO_FORMATS)}")
    if fps < 1:
        raise ValueError(f"fps: must be >= 1, got {fps}")
    video = frames_to_uint8(frames)
    height, width = video.shape[1:3]
    if format == "mp4" and (height % 2 or width % 2):
        raise ValueError(f"frames: mp4 needs an even height and width, got {height}x{width}")
    if not in_memory:
        path.parent.mkdir(parents=True, exist_ok=True)
    muxer_options = {"loop": "0"} if format == "gif" else {}
    with av.open(path if in_memory else str(path), mode="w", format=format, container_options=muxer_options) as container:
        stream = container.add_stream("libx264" if format == "mp4" else "gif", rate=fps)
        stream.width, stream.height = width, height
        if format == "mp4":
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": "18", "preset": "medium"}
        else:
            stream.pix_fmt = "pal8"
        for frame in video:
            av_frame = av.VideoFrame.from_ndarray(frame, format="rgb24") if format == "mp4" else _gif_frame(frame)
            container.mux(stream.encode(av_frame))
        container.mux(stream.encode())
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
