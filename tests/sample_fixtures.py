"""Sample videos and a preprocessed tiny dataset, made once per pytest run (see conftest.py)."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import av
import numpy as np
import pytest

from common.config import load
from pipelines.config import PRESETS, PreprocessConfig
from pipelines.preprocess import run
from model.media import export_video
from sample_data import generate

# videoid -> expected error reason for the broken rows added to the sample CSV
BROKEN = {
    "900001": "missing",
    "900002": "empty",
    "900003": "unreadable",  # random bytes
    "900004": "unreadable",  # first 3 kB of a real MP4 (moov atom cut off)
    "900005": "unreadable",  # AV1 in MP4: a codec decord cannot open
    "900006": "too_short",  # 5 frames, a clip needs 15
    "900007": "bad_duration",
    "900008": "bad_row",  # empty caption
}


def add_broken_rows(root: Path) -> None:
    folder = root / "videos" / "broken"
    folder.mkdir(parents=True)
    good = next((root / "videos").rglob("*.mp4")).read_bytes()
    (folder / "900002.mp4").write_bytes(b"")
    (folder / "900003.mp4").write_bytes(os.urandom(20000))
    (folder / "900004.mp4").write_bytes(good[:3000])
    with av.open(str(folder / "900005.mp4"), "w") as out:
        stream = out.add_stream("libsvtav1", rate=8)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        for i in range(20):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), i * 10, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    export_video(np.zeros((5, 64, 64, 3), np.uint8), folder / "900006.mp4", fps=8, crf=0)
    shutil.copy(folder / "900006.mp4", folder / "900007.mp4")
    shutil.copy(folder / "900006.mp4", folder / "900008.mp4")
    with open(root / "videos.csv", "a", newline="") as f:
        writer = csv.writer(f)
        for vid in BROKEN:
            duration = {"900007": "eight seconds"}.get(vid, "PT00H00M02S")
            caption = "" if vid == "900008" else f"broken video {vid}"
            writer.writerow([vid, f"videos/broken/{vid}.mp4", duration, "broken", caption])


def made_once(tmp_path_factory, name: str, make) -> Path:
    """A folder ``make(folder)`` fills once per pytest run. Under pytest-xdist (``make test`` runs
    2 workers) the first worker to ask makes it in the run's shared temp dir, under a file lock,
    and the others wait and read it; tests only read these folders."""
    from filelock import FileLock

    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        folder = tmp_path_factory.mktemp(name)
        make(folder)
        return folder
    folder = tmp_path_factory.getbasetemp().parent / name
    with FileLock(f"{folder}.lock"):
        if not (folder / ".made").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            make(folder)
            (folder / ".made").touch()
    return folder


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory) -> Path:
    def make(root: Path) -> None:
        generate(root, n=20, size=64, num_frames=24, fps=8, seed=0, include_real=True, progress=False)
        add_broken_rows(root)

    return made_once(tmp_path_factory, "sample", make)


def preprocess_config(sample_dir: Path, out: Path, **overrides) -> PreprocessConfig:
    base = {"input.csv": str(sample_dir / "videos.csv"), "input.video_root": str(sample_dir / "videos"), "output.dir": str(out)}
    return load(PreprocessConfig, presets=PRESETS, preset="tiny", overrides={**base, **overrides})


@pytest.fixture(scope="session")
def first_run(ray_cluster, sample_dir, tmp_path_factory):
    """The preprocessed sample dataset and the job's summary."""
    def make(folder: Path) -> None:
        summary = run(preprocess_config(sample_dir, folder / "out"))
        (folder / "summary.json").write_text(json.dumps(summary))

    folder = made_once(tmp_path_factory, "ds", make)
    return folder / "out", json.loads((folder / "summary.json").read_text())


