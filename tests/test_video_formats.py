"""Videos real datasets contain, written here with PyAV: each decodes correctly (frame values
checked against FFmpeg's own decode) or becomes an error row with a specific reason."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from model.media import center_crop_resize
from pipelines.config import ClipConfig, InputConfig
from pipelines.video import RowError, decode_row, decode_size, open_video, probe

INPUT = InputConfig(csv="x.csv")
CLIP = ClipConfig(num_frames=4, stride=2, start="fixed", height=32, width=32)


def pattern(i: int, w: int, h: int) -> np.ndarray:
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2, 0] = 220  # left half red
    a[: h // 3, :, 1] = 180  # top third green
    a[:, :, 2] = (np.arange(w)[None, :] * 200 // w + i * 6).astype(np.uint8)
    return a


def write(path: Path, codec: str, w: int = 96, h: int = 64, n: int = 16, pix: str = "yuv420p", fmt: str | None = None,
          rotation: int = 0, pts_ms: list[int] | None = None, options: dict | None = None, video: bool = True) -> Path:
    with av.open(str(path), "w", format=fmt) as out:
        if video:
            stream = out.add_stream(codec, rate=1000 if pts_ms else 8, options=options or {})
            stream.width, stream.height, stream.pix_fmt = w, h, pix
            if rotation:
                stream.set_display_rotation(rotation)
            for i in range(n):
                frame = av.VideoFrame.from_ndarray(pattern(i, w, h), format="rgb24")
                if pts_ms:
                    frame.pts = pts_ms[i]
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
        else:
            audio = out.add_stream("aac", rate=16000)
            for k in range(10):
                frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
                frame.sample_rate, frame.pts = 16000, k * 1024
                for packet in audio.encode(frame):
                    out.mux(packet)
            for packet in audio.encode():
                out.mux(packet)
    return path


def ffmpeg_frames(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def expected_clip(path: Path, rot_k: int = 0) -> np.ndarray:
    frames = ffmpeg_frames(path)[: CLIP.span : CLIP.stride]
    return np.stack([center_crop_resize(np.ascontiguousarray(np.rot90(f, rot_k)), CLIP.height, CLIP.width) for f in frames])


def decode(path: Path) -> np.ndarray:
    clips = decode_row({"videoid": path.stem, "contentUrl": str(path), "name": "x", "duration": ""}, INPUT, CLIP, str(path.parent))
    assert len(clips) == 1 and clips[0]["frames"].shape == (CLIP.num_frames, CLIP.height, CLIP.width, 3)
    return clips[0]["frames"]


def reason(path: Path) -> tuple[str, str]:
    with pytest.raises(RowError) as err:
        decode(path)
    return err.value.reason, str(err.value)


def close(a: np.ndarray, b: np.ndarray, tol: float = 4.0) -> bool:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean()) < tol


@pytest.mark.parametrize("name, codec, kw", [
    ("vp9.webm", "libvpx-vp9", {}),
    ("hevc_10bit.mp4", "libx265", {"pix": "yuv420p10le", "options": {"x265-params": "log-level=error"}}),
    ("h264_vfr.mp4", "libx264", {"pts_ms": [sum(60 if k % 2 else 190 for k in range(i)) for i in range(16)]}),
])
def test_formats_that_decode_match_ffmpeg(tmp_path, name, codec, kw):
    path = write(tmp_path / name, codec, **kw)
    assert close(decode(path), expected_clip(path))


def test_rotation_metadata_turns_frames_upright(tmp_path):
    path = write(tmp_path / "rotated.mp4", "libx264", rotation=90)
    assert probe(str(path)).rotation == 90
    video = open_video(str(path), INPUT)
    assert video.rotation == 90
    frames = decode(path)
    assert close(frames, expected_clip(path, rot_k=1))
    # the red left half of the stored frame is the bottom half of the upright one
    red = frames[0, :, :, 0].astype(float)
    assert red[-8:].mean() > 150 and red[:8].mean() < 80


def test_4k_frames_are_scaled_in_the_decoder(tmp_path):
    path = write(tmp_path / "uhd.mp4", "libx264", w=3840, h=2160, n=8, options={"preset": "ultrafast"})
    info = probe(str(path))
    assert (info.width, info.height) == (3840, 2160)
    assert decode_size(info, 32, 32) == (114, 64)  # twice what the 32 px centre crop needs
    assert decode_size(info, 2160, 2160) == (-1, -1)  # a large clip decodes as stored
    video = open_video(str(path), INPUT, size=(CLIP.height, CLIP.width))
    assert video.reader[0].shape == (64, 114, 3)
    assert close(decode(path), expected_clip(path), tol=6.0)


def test_resolution_change_midway_keeps_one_frame_size(tmp_path):
    first = write(tmp_path / "a.ts", "libx264", w=96, h=64, n=12, fmt="mpegts")
    second = write(tmp_path / "b.ts", "libx264", w=128, h=72, n=12, fmt="mpegts")
    joined = tmp_path / "joined.ts"
    joined.write_bytes(first.read_bytes() + second.read_bytes())
    video = open_video(str(joined), INPUT)
    batch = video.reader.get_batch([0, 11, 12, 23]).asnumpy()
    assert video.num_frames == 24 and batch.shape == (4, 64, 96, 3)
    clips = decode_row({"videoid": "j", "contentUrl": str(joined), "name": "x", "duration": ""}, INPUT,
                       ClipConfig(num_frames=4, stride=6, start="fixed", height=32, width=32), str(tmp_path))
    assert clips[0]["frames"].shape == (4, 32, 32, 3)


def test_undecodable_files_have_specific_reasons(tmp_path):
    assert reason(write(tmp_path / "audio.mp4", "aac", video=False))[0] == "no_video"
    why, message = reason(write(tmp_path / "av1_10bit.mp4", "libsvtav1", pix="yuv420p10le"))
    assert why == "unreadable" and "video, decord:" in message  # names the codec FFmpeg found
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    assert reason(garbage)[0] == "unreadable"
    short = write(tmp_path / "short.mp4", "libx264", n=3)
    assert reason(short)[0] == "too_short"


def test_frame_rate_of_a_variable_rate_file_is_finite(tmp_path):
    path = write(tmp_path / "vfr.mp4", "libx264", pts_ms=[i * 125 + (40 if i % 3 == 0 else 0) for i in range(16)])
    video = open_video(str(path), INPUT)
    assert video.num_frames == 16 and np.isfinite(video.fps) and 4 < video.fps < 12
