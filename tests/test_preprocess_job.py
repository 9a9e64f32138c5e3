"""The preprocessing job end to end on real Ray, real MP4 files and real Parquet."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import av
import decord
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from scipy.stats import spearmanr

from common.config import ConfigError, load
from pipelines.config import PRESETS, PreprocessConfig
from pipelines.preprocess import CsvError, run
from pipelines.sample_data import generate, write_video
from pipelines.schema import CLIP_COLUMNS, ERROR_COLUMNS, decode_array, read_dataset_info
from pipelines.video import frame_indices

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


def _add_broken_rows(root: Path) -> None:
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
    write_video(np.zeros((5, 64, 64, 3), np.uint8), folder / "900006.mp4", fps=8)
    shutil.copy(folder / "900006.mp4", folder / "900007.mp4")
    shutil.copy(folder / "900006.mp4", folder / "900008.mp4")
    with open(root / "videos.csv", "a", newline="") as f:
        writer = csv.writer(f)
        for vid in BROKEN:
            duration = {"900007": "eight seconds"}.get(vid, "PT00H00M02S")
            caption = "" if vid == "900008" else f"broken video {vid}"
            writer.writerow([vid, f"videos/broken/{vid}.mp4", duration, "broken", caption])


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sample")
    generate(root, n=20, size=64, num_frames=24, fps=8, seed=0, include_real=True, progress=False)
    _add_broken_rows(root)
    return root


def _config(sample_dir: Path, out: Path, **overrides) -> PreprocessConfig:
    base = {"input.csv": str(sample_dir / "videos.csv"), "input.video_root": str(sample_dir / "videos"), "output.dir": str(out)}
    return load(PreprocessConfig, presets=PRESETS, preset="tiny", overrides={**base, **overrides})


@pytest.fixture(scope="session")
def first_run(ray_cluster, sample_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ds") / "out"
    return out, run(_config(sample_dir, out))


def _csv_rows(sample_dir: Path) -> pd.DataFrame:
    return pd.read_csv(sample_dir / "videos.csv", dtype=str, keep_default_na=False)


def test_every_row_is_a_clip_or_an_error(first_run, sample_dir):
    out, summary = first_run
    rows = _csv_rows(sample_dir)
    assert summary["rows_in"] == len(rows)
    assert summary["rows_ok"] + summary["rows_error"] == len(rows) and summary["rows_accounted"]
    assert summary["rows_error"] == len(BROKEN)
    errors = pq.read_table(out / "errors").to_pandas()
    assert list(errors.columns) == ERROR_COLUMNS
    assert dict(zip(errors.videoid, errors.error)) == BROKEN
    assert summary["errors"] == pd.Series(BROKEN).value_counts().to_dict()
    assert all(errors.stage == "decode") and all(errors.message.str.len() > 0)
    clips = pq.read_table(out / "clips", columns=["videoid"]).to_pandas()
    good_ids = set(rows.videoid) - set(BROKEN)
    assert set(clips.videoid) == good_ids and len(clips) == summary["clips_out"] == len(good_ids)
    saved = json.loads((out / "summary.json").read_text())
    assert saved["rows_in"] == summary["rows_in"] and (out / "intensity_hist.png").stat().st_size > 1000
    assert not (out / "_staging").exists()


def test_parquet_schema_and_arrays(first_run, sample_dir):
    out, _ = first_run
    info = read_dataset_info(out)
    table = pq.read_table(out / "clips")
    arrays = ["frames", "text_embedding", "input_ids", "attention_mask", "latents", "image_tokens"]
    assert table.column_names == CLIP_COLUMNS + arrays
    assert info["arrays"]["frames"]["shape"] == [8, 64, 64, 3]
    assert info["arrays"]["latents"]["shape"] == [8, 4, 16, 16]
    assert info["arrays"]["text_embedding"]["shape"] == [77, 32]
    df = table.to_pandas()
    row = df[df.videoid == "1000003"].iloc[0]
    assert (row.num_frames, row.height, row.width, row.stride) == (8, 64, 64, 2)
    # frames are exactly the sampled, cropped source frames
    reader = decord.VideoReader(str(Path(row.video_path)))
    cfg = _config(sample_dir, out)
    expected = reader.get_batch(list(frame_indices(int(row.clip_start), cfg.clip))).asnumpy()
    np.testing.assert_array_equal(decode_array(row.frames, info["arrays"]["frames"]), expected)
    # caption embedding equals the tiny CLIP run directly
    from model.encoders import build_tokenizer, encode_prompts, load_text_encoder

    direct = encode_prompts(build_tokenizer(cfg.model), load_text_encoder(cfg.model), [row.caption])
    stored = decode_array(row.text_embedding, info["arrays"]["text_embedding"]).astype(np.float32)
    np.testing.assert_allclose(stored, direct["embeddings"][0].numpy(), atol=2e-3)
    ids = decode_array(row.input_ids, info["arrays"]["input_ids"])
    assert ids[0] == 49406 and np.array_equal(ids, direct["input_ids"][0].numpy())
    for name in ("latents", "image_tokens"):
        assert np.isfinite(decode_array(row[name], info["arrays"][name]).astype(np.float32)).all()


def test_intensity_levels_follow_ground_truth(first_run, sample_dir):
    out, summary = first_run
    df = pq.read_table(out / "clips", columns=["videoid", "flow_score", "ssim_score", "intensity_level"]).to_pandas()
    gt = pd.read_csv(sample_dir / "ground_truth.csv", dtype={"videoid": str})
    merged = df.merge(gt, on="videoid")
    assert df.intensity_level.between(1, 10).all() and df.intensity_level.nunique() >= 5
    static = merged[merged.motion == "static"]
    assert len(static) > 0 and (static.intensity_level == 1).all()
    pans = merged[merged.motion == "pan"]
    assert spearmanr(pans.speed_px_per_frame, pans.flow_score).statistic >= 0.9
    bins = json.loads((out / "intensity_bins.json").read_text())
    assert bins["source"] == "flow" and len(bins["edges"]) == 9 and bins["n_clips"] == summary["clips_out"]


def test_second_run_reuses_bins_and_takes_two_clips_per_video(first_run, sample_dir, tmp_path):
    out, first = first_run
    second = run(_config(sample_dir, tmp_path / "again", **{"intensity.bins": str(out / "intensity_bins.json"), "clip.clips_per_video": 2}))
    assert second["intensity"]["edges"] == first["intensity"]["edges"]
    assert second["rows_ok"] == first["rows_ok"] and second["rows_accounted"]
    assert second["clips_out"] == 2 * first["rows_ok"]
    clips = pq.read_table(tmp_path / "again" / "clips", columns=["videoid", "clip_index"]).to_pandas()
    assert sorted(clips.clip_index.unique()) == [0, 1]


def test_refuses_existing_output_and_bad_csv(ray_cluster, sample_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match="output.dir: .* exists and is not empty; pass --output.overwrite true"):
        run(_config(sample_dir, out))
    bad = tmp_path / "bad.csv"
    bad.write_text("videoid,name,duration\n1,a,PT1S\n")
    with pytest.raises(CsvError, match="lacks WebVid column\\(s\\) contentUrl, page_dir"):
        run(_config(sample_dir, tmp_path / "o2", **{"input.csv": str(bad)}))
    with pytest.raises(CsvError, match="input.csv: cannot read"):
        run(_config(sample_dir, tmp_path / "o3", **{"input.csv": str(tmp_path / "nope.csv")}))
    assert (out / "keep.txt").exists() and not (tmp_path / "o2").exists()
