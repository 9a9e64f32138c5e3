"""CSV rows -> decoded clips: row checks, locating the video, frame sampling, decord decoding.

Plain functions that tests call directly, and at the end the Ray Data decode stage
(:func:`decode_batch`: a batch of CSV rows in, clip rows out) with the stream's row helpers that
the later stages (pipelines/motion.py, pipelines/dataset.py) share. Every stage is a batch dict in,
a batch out; rows share one schema (:data:`STREAM_COLUMNS`); arrays travel as raw C-order bytes
whose dtype and shape are fixed for the dataset (``dataset.json``).

A bad row or bad video never raises out of :func:`decode_row`: it becomes one *error row*
(``error`` = a reason code from :data:`REASONS`, ``message`` = details) so that every input row
ends up either as its clips or as exactly one error row; later stages pass error rows through.
"""

from __future__ import annotations

import io
import posixpath
import re
import zlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pyarrow as pa

from model.media import center_crop_resize
from pipelines.config import ClipConfig, InputConfig

REASONS = {
    "bad_row": "a CSV field the video source needs is empty (videoid, name, and page_dir or contentUrl)",
    "bad_duration": "duration is not ISO-8601 like PT00H00M08S",
    "missing": "the video file does not exist (or the server answers 404/410)",
    "fetch_failed": "a remote video could not be fetched within input.fetch_retries / input.fetch_deadline_s",
    "too_large": "a remote video is larger than input.max_video_mb",
    "empty": "the video file has zero bytes",
    "unreadable": "decord cannot open the file (corrupt, truncated or unsupported codec; the message names the codec)",
    "no_video": "the file has no video stream (e.g. audio only)",
    "too_short": "fewer frames than one clip needs",
    "decode_failed": "decord opened the file but failed while decoding the sampled frames",
    "duplicate": "another row has the same videoid (input.dedupe keeps one of them)",
}

_DURATION = re.compile(r"^P(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)$")


class RowError(Exception):
    """A per-row failure with a reason code from :data:`REASONS`."""

    def __init__(self, reason: str, message: str):
        assert reason in REASONS, reason
        super().__init__(message)
        self.reason = reason


def parse_duration(text: str) -> float:
    """ISO-8601 duration (``PT00H00M08S``, ``PT8.5S``, ``PT1M``) -> seconds."""
    match = _DURATION.match((text or "").strip())
    if not match or not any(match.groupdict().values()):
        raise RowError("bad_duration", f"duration {text!r} is not ISO-8601 like PT00H00M08S")
    parts = {k: float(v) if v else 0.0 for k, v in match.groupdict().items()}
    return parts["h"] * 3600 + parts["m"] * 60 + parts["s"]


def _is_remote(path: str) -> bool:
    return urlparse(path).scheme in ("s3", "gs", "gcs", "http", "https", "hdfs")


def resolve_video_path(row: dict[str, Any], cfg: InputConfig, csv_dir: str) -> str:
    """Where a row's video lives: ``video_root/page_dir/videoid.mp4`` or its contentUrl.

    A relative contentUrl is taken relative to the CSV's folder.
    """
    if cfg.uses_video_root:
        return posixpath.join(str(cfg.video_root), str(row["page_dir"]), f"{row['videoid']}.mp4")
    url = str(row["contentUrl"])
    if _is_remote(url) or url.startswith("/") or url.startswith("file://"):
        return url.removeprefix("file://")
    return posixpath.join(csv_dir, url)


def _blank(value: Any) -> bool:
    return value is None or str(value).strip() == ""


def check_row(row: dict[str, Any], cfg: InputConfig) -> float:
    """Raise RowError for an empty field the video source needs or a malformed duration;
    return the duration in seconds (NaN when the CSV leaves it empty)."""
    empty = [c for c in cfg.required_fields() if _blank(row.get(c))]
    if empty:
        raise RowError("bad_row", f"empty field(s): {', '.join(empty)}")
    return float("nan") if _blank(row.get("duration")) else parse_duration(str(row["duration"]))


def pick_one_per_videoid(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """CSV rows whose videoid is shared -> (the kept row of each videoid, an error row for every other).

    The kept row is the first in (contentUrl, page_dir, name, duration) order, so the choice does
    not depend on how the CSV was split into blocks.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(str(row["videoid"]), []).append(row)
    kept, errors = [], []
    for videoid, group in sorted(groups.items()):
        group.sort(key=lambda r: tuple("" if _blank(r.get(c)) else str(r[c]) for c in ("contentUrl", "page_dir", "name", "duration")))
        first = group[0]
        kept.append(first)
        where = ", ".join(f"{c}={first.get(c)!r}" for c in ("contentUrl", "page_dir") if not _blank(first.get(c)))
        for _ in group[1:]:
            errors.append({
                "videoid": videoid, "stage": "dedupe", "error": "duplicate", "video_path": "",
                "message": f"videoid {videoid} is on {len(group)} rows of the CSV; kept the one with {where}; "
                           "set input.dedupe false to process every row",
            })
    return kept, errors


def clip_starts(num_video_frames: int, cfg: ClipConfig, videoid: str) -> list[int]:
    """First source frame of each clip.

    ``clips_per_video`` windows split the video evenly; with ``start='random'`` each clip starts
    at a seeded random offset inside its window (the seed mixes ``cfg.seed`` and the videoid, so
    it does not depend on which worker decodes the row). Raises ``too_short`` if not even one
    clip fits.
    """
    span = cfg.span
    first = cfg.start_frame if cfg.start == "fixed" else 0
    room = num_video_frames - first - span  # frames left over after one clip
    if room < 0:
        raise RowError(
            "too_short",
            f"video has {num_video_frames} frames; a clip needs {span} (num_frames={cfg.num_frames}, "
            f"stride={cfg.stride}) from frame {first}",
        )
    n = cfg.clips_per_video
    if cfg.start == "fixed":
        step = room // max(n - 1, 1) if n > 1 else 0
        return [first + i * step for i in range(n)]
    rng = np.random.default_rng([cfg.seed, zlib.crc32(str(videoid).encode())])
    window = (room + 1) / n  # each clip's start lies in its own window of the free range
    return [int(i * window + rng.integers(0, max(1, int(window)))) for i in range(n)]


def frame_indices(start: int, cfg: ClipConfig) -> np.ndarray:
    """Source frame indices of one clip: ``start, start + stride, ...`` (num_frames of them)."""
    return start + cfg.stride * np.arange(cfg.num_frames)


@dataclass
class OpenedVideo:
    reader: Any
    num_frames: int
    fps: float
    rotation: int = 0
    """Display rotation in degrees counter-clockwise (0, 90, 180, 270); decord already returns upright frames."""


@dataclass
class Probe:
    width: int
    height: int
    rotation: int
    codec: str


def probe(source: Any) -> Probe | None:
    """Size, display rotation and codec of the first video stream (PyAV), None if the file has
    no video stream; RowError ``unreadable`` if FFmpeg cannot open it at all."""
    import av

    if isinstance(source, io.BytesIO):
        source.seek(0)
    try:
        with av.open(source) as container:
            if not container.streams.video:
                return None
            stream = container.streams.video[0]
            rotation = 0
            try:
                for frame in container.decode(stream):
                    rotation = int(round(frame.rotation or 0)) % 360
                    break
            except av.FFmpegError:
                pass  # undecodable frames: decord gives the reason below
            ctx = stream.codec_context
            return Probe(int(ctx.width or 0), int(ctx.height or 0), rotation - rotation % 90, stream.codec_context.name)
    except av.FFmpegError as exc:
        raise RowError("unreadable", f"FFmpeg cannot open it: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}") from None
    finally:
        if isinstance(source, io.BytesIO):
            source.seek(0)


def decode_size(info: Probe, height: int, width: int) -> tuple[int, int]:
    """(width, height) to let the decoder scale frames to (-1, -1 = as stored).

    A frame much larger than the clip (e.g. 4K for a 256 px clip) is scaled inside the decoder
    to twice the size the centre crop needs, so a worker holds at most ~4x the clip's pixels
    per frame; smaller frames are decoded as stored.
    """
    w, h = (info.height, info.width) if info.rotation in (90, 270) else (info.width, info.height)  # as displayed
    if not (w and h):
        return -1, -1
    scale = 2 * max(height / h, width / w)
    if scale >= 1:
        return -1, -1
    return max(2, round(w * scale / 2) * 2), max(2, round(h * scale / 2) * 2)  # decord sizes the upright frame


def open_video(path: str, input_cfg: InputConfig, threads: int = 1, size: tuple[int, int] | None = None) -> OpenedVideo:
    """Open with decord for clips of ``size`` = (height, width) (remote files are fetched into
    memory first, within ``input_cfg``'s limits: :func:`pipelines.fetch.fetch`); RowError on failure.

    PyAV probes the file first: no video stream is ``no_video``, a codec decord cannot decode
    ``unreadable`` naming it; large frames are scaled in the decoder (:func:`decode_size`).
    """
    import decord

    source: Any = path
    if _is_remote(path):
        from pipelines.fetch import fetch

        data = fetch(path, input_cfg)
        if not data:
            raise RowError("empty", f"{path} has zero bytes")
        source = io.BytesIO(data)
    else:
        import os

        if not os.path.exists(path):
            raise RowError("missing", f"no such file: {path}")
        if os.path.getsize(path) == 0:
            raise RowError("empty", f"{path} has zero bytes")
    try:
        info = probe(source)
    except RowError as exc:
        raise RowError("unreadable", f"{path}: {exc}") from None
    if info is None:
        raise RowError("no_video", f"{path}: no video stream (audio only?)")
    dw, dh = decode_size(info, *size) if size else (-1, -1)
    try:
        reader = decord.VideoReader(source, ctx=decord.cpu(0), num_threads=threads, width=dw, height=dh)
        n = len(reader)
        fps = float(reader.get_avg_fps())
    except Exception as exc:  # decord raises DECORDError / RuntimeError for corrupt files
        raise RowError(
            "unreadable", f"{path}: {info.codec} video, decord: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        ) from None
    if n <= 0:
        raise RowError("unreadable", f"{path}: no video frames")
    if not np.isfinite(fps) or fps <= 0:
        fps = float("nan")
    return OpenedVideo(reader, n, fps, info.rotation)


def decode_clip(video: OpenedVideo, indices: np.ndarray, height: int, width: int) -> np.ndarray:
    """Decode only ``indices`` (upright) and centre-crop/resize: uint8 (frames, height, width, 3)."""
    try:
        raw = video.reader.get_batch(list(map(int, indices))).asnumpy()
    except Exception as exc:
        raise RowError("decode_failed", f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}") from None
    if raw.shape[0] != len(indices):
        raise RowError("decode_failed", f"asked for {len(indices)} frames, got {raw.shape[0]}")
    if raw.ndim != 4 or raw.shape[-1] != 3:
        raise RowError("decode_failed", f"decoder returned frames of shape {raw.shape[1:]}, expected (height, width, 3)")
    return np.stack([center_crop_resize(frame, height, width) for frame in raw])


def decode_row(row: dict[str, Any], input_cfg: InputConfig, clip_cfg: ClipConfig, csv_dir: str) -> list[dict[str, Any]]:
    """One CSV row -> its clip rows, or raise RowError."""
    duration = check_row(row, input_cfg)
    path = resolve_video_path(row, input_cfg, csv_dir)
    video = open_video(path, input_cfg, clip_cfg.decode_threads, size=(clip_cfg.height, clip_cfg.width))
    clips = []
    for clip_index, start in enumerate(clip_starts(video.num_frames, clip_cfg, str(row["videoid"]))):
        frames = decode_clip(video, frame_indices(start, clip_cfg), clip_cfg.height, clip_cfg.width)
        clips.append(
            {
                "video_path": path,
                "duration_s": duration,
                "clip_index": clip_index,
                "clip_start": start,
                "fps": video.fps,
                "frames": frames,
            }
        )
    return clips


# --------------------------------------------------------------------------- the decode stage (Ray Data)


Batch = dict[str, np.ndarray]

# column -> value of an error row (and dtype of the column)
STREAM_COLUMNS: dict[str, Any] = {
    "videoid": "", "caption": "", "page_dir": "", "video_path": "", "duration_s": np.nan, "clip_index": -1,
    "clip_start": -1, "stride": -1, "fps": np.nan, "num_frames": -1, "height": -1, "width": -1, "frames": None,
    "error": "", "stage": "", "message": "",
}


ARRAY_COLUMNS = ["frames", "text_embedding", "input_ids", "attention_mask", "latents", "image_tokens"]
"""The array columns: raw C-order bytes in the stream (error rows: null), tensor columns once written
(pipelines/dataset.py)."""


def to_arrow(batch: Batch) -> pa.Table:
    """A stage's output with explicit column types, so an all-error batch (only nulls in the
    array columns) has the same schema as any other batch."""
    columns = {}
    for name, values in batch.items():
        if name in ARRAY_COLUMNS:
            columns[name] = pa.array(list(values), type=pa.binary())
        elif values.dtype == object:
            columns[name] = pa.array(list(values), type=pa.string())
        else:
            columns[name] = pa.array(values)
    return pa.table(columns)


def rows_to_batch(rows: list[dict[str, Any]], columns: dict[str, Any]) -> Batch:
    """List of row dicts -> numpy batch with exactly ``columns`` (missing values: the defaults)."""
    out: Batch = {}
    for name, default in columns.items():
        values = [row.get(name, default) for row in rows]
        if default is None or isinstance(default, str):
            arr = np.empty(len(values), dtype=object)
            arr[:] = values
            out[name] = arr
        else:
            out[name] = np.asarray(values, dtype=np.float64 if isinstance(default, float) else np.int64)
    return out


def batch_rows(batch: Batch) -> list[dict[str, Any]]:
    n = len(next(iter(batch.values()))) if batch else 0
    return [{k: v[i] for k, v in batch.items()} for i in range(n)]


def ok_mask(batch: Batch) -> np.ndarray:
    return np.array([e == "" or e is None for e in batch["error"]], dtype=bool)


def decode_batch(batch: Batch, input_cfg: InputConfig, clip_cfg: ClipConfig, csv_dir: str) -> pa.Table:
    """CSV rows -> clip rows (``clips_per_video`` per good row) or one error row per bad row."""
    out = []
    for row in batch_rows(batch):
        base = {
            "videoid": str(row.get("videoid") or ""),
            "caption": str(row.get("name") or ""),
            "page_dir": str(row.get("page_dir") or ""),
        }
        try:
            clips = decode_row(row, input_cfg, clip_cfg, csv_dir)
        except RowError as exc:
            out.append({**base, "error": exc.reason, "stage": "decode", "message": str(exc)})
            continue
        for clip in clips:
            frames = clip.pop("frames")
            out.append(
                {
                    **base,
                    **clip,
                    "stride": clip_cfg.stride,
                    "num_frames": frames.shape[0],
                    "height": frames.shape[1],
                    "width": frames.shape[2],
                    "frames": frames.tobytes(),
                }
            )
    return to_arrow(rows_to_batch(out, STREAM_COLUMNS))


def frames_of(batch: Batch, i: int) -> np.ndarray:
    """uint8 (frames, height, width, 3) of row ``i``."""
    shape = (int(batch["num_frames"][i]), int(batch["height"][i]), int(batch["width"][i]), 3)
    return np.frombuffer(batch["frames"][i], dtype=np.uint8).reshape(shape)
