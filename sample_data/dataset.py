"""Writing a sample dataset: the videos, the WebVid CSV and the ground-truth sidecar (:func:`generate`)."""

from __future__ import annotations

import csv
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from model.media import export_video
from sample_data.captions import EXTRA_CONTENT, MOTIONS, WORDINGS, make_caption
from sample_data.photos import load_photos
from sample_data.plan import SPEEDS_AT_128, ClipSpec, plan_clips
from sample_data.real import REAL_SOURCES, RealSource, _is_decord_h264_mp4, _probe, _transcode, find_real_video
from sample_data.render import render_clip

VIDEO_COLUMNS = ("videoid", "contentUrl", "duration", "page_dir", "name")
GT_COLUMNS = (
    "videoid", "source", "motion", "direction", "speed_px_per_frame", "photo",
    "caption", "num_frames", "fps", "width", "height",
)
FIRST_REAL_ID = 2_000_000
SYNTHETIC_CRF = 0  # 0 = lossless x264: decoded frames are the rendered ones (after yuv420p)


def iso_duration(seconds: float) -> str:
    """WebVid duration string, whole seconds, at least 1 s: 4.0 -> ``PT00H00M04S``."""
    total = max(1, int(round(seconds)))
    return f"PT{total // 3600:02d}H{total % 3600 // 60:02d}M{total % 60:02d}S"


def _fmt(value: float | int | None) -> str:
    if value is None:
        return ""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.6g}"


def _gt_row(videoid: int, source: str, motion: str, direction: str, speed: float | None, photo: str,
            caption: str, num_frames: int, fps: float, width: int, height: int) -> dict[str, str]:
    return {
        "videoid": str(videoid), "source": source, "motion": motion, "direction": direction,
        "speed_px_per_frame": _fmt(speed), "photo": photo, "caption": caption,
        "num_frames": str(num_frames), "fps": _fmt(fps), "width": str(width), "height": str(height),
    }


def _video_row(gt: dict[str, str], page_dir: str) -> dict[str, str]:
    seconds = int(gt["num_frames"]) / float(gt["fps"])
    return {
        "videoid": gt["videoid"], "contentUrl": f"videos/{page_dir}/{gt['videoid']}.mp4",
        "duration": iso_duration(seconds), "page_dir": page_dir, "name": gt["caption"],
    }


def _write_csv(path: Path, columns: Sequence[str], rows: Sequence[dict[str, str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Create ``out_dir``; refuse a non-empty one unless ``overwrite`` (then clear our outputs)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"{out_dir} exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out_dir} is not empty (use --overwrite to replace its sample data)")
        shutil.rmtree(out_dir / "videos", ignore_errors=True)
        for name in ("videos.csv", "ground_truth.csv"):
            (out_dir / name).unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)


def _select_photos(photos: dict[str, tuple[np.ndarray, str]], wanted: Sequence[str] | None) -> list[str]:
    if not photos:
        raise ValueError("no photos could be loaded (scikit-image / scikit-learn / matplotlib data missing?)")
    if wanted is None:
        return sorted(photos)
    if not wanted:
        raise ValueError("the photo list is empty")
    unknown = sorted(set(wanted) - set(photos))
    if unknown:
        raise ValueError(f"unknown photo(s) {', '.join(unknown)}; available: {', '.join(sorted(photos))}")
    return sorted(set(wanted))


def render_spec(spec: ClipSpec, photos: dict[str, tuple[np.ndarray, str]], size: int, num_frames: int,
                seed: int) -> np.ndarray:
    """The (frames, size, size, 3) uint8 RGB frames of a planned clip, exactly as :func:`generate` renders them.

    Lets a benchmark or test get the pre-encoding frames of a clip without decoding it.
    """
    image = photos[spec.photo][0]
    object_image = photos[spec.object_photo][0] if spec.object_photo else None
    rng = np.random.default_rng([seed, 1, spec.index])
    return render_clip(image, spec.motion, spec.direction, spec.speed, num_frames, size, rng, object_image)


def _synthetic_row(spec: ClipSpec, photos: dict[str, tuple[np.ndarray, str]], size: int,
                   num_frames: int, fps: int, seed: int, out_dir: Path, crf: int, adverbs: bool = True,
                   content_variety: bool = False, wording: str = "mixed") -> dict[str, str]:
    """Render, encode and describe one synthetic clip; returns its GT row."""
    frames = render_spec(spec, photos, size, num_frames, seed)
    export_video(frames, out_dir / "videos" / spec.page_dir / f"{spec.videoid}.mp4", fps, "mp4", crf=crf)
    object_content = photos[spec.object_photo][1] if spec.object_photo else None
    rng = np.random.default_rng([seed, 2, spec.index])
    content = photos[spec.photo][1]
    if content_variety and rng.random() < 0.5:
        content = str(rng.choice(EXTRA_CONTENT))
    caption = make_caption(content, spec.motion, spec.direction, spec.speed, rng, size, object_content, adverbs, wording)
    return _gt_row(spec.videoid, "synthetic", spec.motion, spec.direction, spec.speed, spec.photo,
                   caption, num_frames, fps, size, size)


def _check_args(n: int, size: int, num_frames: int, fps: int, crf: int,
                motions: Sequence[str] = MOTIONS, speeds_at_128: Sequence[float] = SPEEDS_AT_128) -> None:
    unknown = [m for m in motions if m not in MOTIONS]
    if unknown or not motions:
        raise ValueError(f"motions must be a non-empty subset of {', '.join(MOTIONS)}, got {', '.join(motions) or 'nothing'}")
    if not speeds_at_128 or any(not (s > 0) for s in speeds_at_128):
        raise ValueError(f"speeds must be a non-empty list of positive px/frame values, got {list(speeds_at_128)}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if size < 32 or size % 2:
        raise ValueError(f"size must be an even number >= 32, got {size}")
    if num_frames < 2:
        raise ValueError(f"num_frames must be >= 2, got {num_frames}")
    if fps < 1:
        raise ValueError(f"fps must be >= 1, got {fps}")
    if not 0 <= crf <= 51:
        raise ValueError(f"crf must be in 0..51, got {crf}")


def generate(out_dir: str | os.PathLike, n: int = 64, size: int = 128, num_frames: int = 32, fps: int = 8,
             seed: int = 0, include_real: bool = True, photos: list[str] | None = None,
             overwrite: bool = False, progress: bool = True, crf: int = SYNTHETIC_CRF,
             motions: Sequence[str] = MOTIONS, speeds: Sequence[float] = SPEEDS_AT_128, adverbs: bool = True,
             content_variety: bool = False, wording: str = "mixed") -> dict:
    """Write the WebVid-style sample dataset to ``out_dir``; returns a summary dict.

    ``n`` synthetic clips of (num_frames, size, size, 3), plus the real sample videos
    unless ``include_real`` is False. ``photos`` restricts the photos used (backgrounds
    and objects alike). ``crf`` 0 (default) encodes synthetic clips losslessly. ``motions``
    restricts the kinds of clip (shares of :data:`MIX` renormalised), ``speeds`` replaces the
    pan/object speeds (px/frame at size 128, scaled to ``size``), ``adverbs=False`` drops the
    speed words from captions. ``content_variety=True`` names, in half of the captions, a
    subject from :data:`EXTRA_CONTENT` instead of the photo's, so that a model learns to take
    the motion from the motion words whatever the subject words around them (captions
    describe the motion correctly either way). ``wording`` names pan directions in image space,
    camera terms or both (:data:`WORDINGS`). Same arguments -> identical CSVs and frames.
    """
    started = time.perf_counter()
    _check_args(n, size, num_frames, fps, crf, motions, speeds)
    if wording not in WORDINGS:
        raise ValueError(f"wording must be one of {', '.join(WORDINGS)}, got {wording!r}")
    out = Path(out_dir)
    all_photos = load_photos()
    names = _select_photos(all_photos, photos)
    _prepare_out_dir(out, overwrite)
    specs = plan_clips(n, names, size, num_frames, seed, motions, speeds)
    gt_rows, pages = [], []
    for spec in tqdm(specs, desc="synthetic clips", unit="clip", disable=not progress):
        gt_rows.append(_synthetic_row(spec, all_photos, size, num_frames, fps, seed, out, crf, adverbs, content_variety, wording))
        pages.append(spec.page_dir)
    if include_real:
        for j, source in enumerate(REAL_SOURCES):
            row = _add_real(source, FIRST_REAL_ID + j, out)
            if row is not None:
                gt_rows.append(row)
                pages.append("real")
    _write_csv(out / "videos.csv", VIDEO_COLUMNS, [_video_row(r, p) for r, p in zip(gt_rows, pages)])
    _write_csv(out / "ground_truth.csv", GT_COLUMNS, gt_rows)
    counts = {kind: 0 for kind in (*MOTIONS, "real")}  # every kind listed, 0 where left out
    for row in gt_rows:
        counts[row["motion"]] += 1
    return {
        "out_dir": str(out), "videos_csv": str(out / "videos.csv"),
        "ground_truth_csv": str(out / "ground_truth.csv"), "num_videos": len(gt_rows),
        "counts": counts, "photos": names, 
        "codec": "h264 lossless (qp 0)" if crf == 0 else f"h264 crf {crf}",
        "seconds": round(time.perf_counter() - started, 2),
    }


def _add_real(source: RealSource, videoid: int, out_dir: Path) -> dict[str, str] | None:
    """Copy or transcode one real video into ``out_dir``; its GT row, or None if missing."""
    path = find_real_video(source)
    if path is None:
        print(f"warning: real video {source.filename} ({source.distribution}) not found, skipped", file=sys.stderr)
        return None
    target = out_dir / "videos" / "real" / f"{videoid}.mp4"
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        if _is_decord_h264_mp4(path):
            shutil.copyfile(path, target)
        else:
            _transcode(path, target)
        info = _probe(target)
    except Exception as exc:  # a broken sample file must not stop the tool
        print(f"warning: real video {path} could not be converted, skipped: {exc}", file=sys.stderr)
        target.unlink(missing_ok=True)
        return None
    return _gt_row(videoid, "real", "real", "none", None, source.name, source.caption, **info)
