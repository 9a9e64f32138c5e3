"""The preprocessing job end to end on real Ray, real MP4 files and real Parquet."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import decord
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from scipy.stats import spearmanr

from common.config import ConfigError, load
from pipelines.config import PRESETS, PreprocessConfig
from pipelines.preprocess import CsvError, run
from pipelines.schema import CLIP_COLUMNS, ERROR_COLUMNS, decode_array, read_dataset_info
from pipelines.video import frame_indices
from sample_fixtures import BROKEN, preprocess_config as _config

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
