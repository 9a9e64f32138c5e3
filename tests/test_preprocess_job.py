"""The preprocessing job end to end on real Ray, real MP4 files and real Parquet."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import decord
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from scipy.stats import spearmanr

from common.config import ConfigError
from pipelines.preprocess import CsvError, run
from pipelines.dataset import CLIP_COLUMNS, ERROR_COLUMNS, read_dataset_info, tensor_values
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
    for name in arrays:  # Arrow tensor columns: dtype and shape in the column type
        spec = info["arrays"][name]
        assert f"shape=({', '.join(map(str, spec['shape']))}" in str(table.schema.field(name).type), table.schema.field(name).type
        assert tensor_values(table.column(name), spec).shape == (table.num_rows, *spec["shape"])
    index = table.column("videoid").to_pylist().index("1000003")
    df = table.drop_columns(arrays).to_pandas()
    row = df.iloc[index]
    cell = {name: tensor_values(table.column(name).slice(index, 1), info["arrays"][name])[0] for name in arrays}
    assert (row.num_frames, row.height, row.width, row.stride) == (8, 64, 64, 2)
    # frames are exactly the sampled, cropped source frames
    reader = decord.VideoReader(str(Path(row.video_path)))
    cfg = _config(sample_dir, out)
    expected = reader.get_batch(list(frame_indices(int(row.clip_start), cfg.clip))).asnumpy()
    np.testing.assert_array_equal(cell["frames"], expected)
    # caption embedding equals the tiny CLIP run directly
    from model.encoders import build_tokenizer, encode_prompts, load_text_encoder

    direct = encode_prompts(build_tokenizer(cfg.model), load_text_encoder(cfg.model), [row.caption])
    stored = cell["text_embedding"].astype(np.float32)
    np.testing.assert_allclose(stored, direct["embeddings"][0].numpy(), atol=2e-3)
    ids = cell["input_ids"]
    assert ids[0] == 49406 and np.array_equal(ids, direct["input_ids"][0].numpy())
    for name in ("latents", "image_tokens"):
        assert np.isfinite(cell[name].astype(np.float32)).all()


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
    with pytest.raises(CsvError, match="lacks column\\(s\\) page_dir; has videoid, name, duration; videos found by "
                                       "input.video_root need videoid, page_dir, name"):
        run(_config(sample_dir, tmp_path / "o2", **{"input.csv": str(bad)}))
    with pytest.raises(CsvError, match="input.csv: cannot read"):
        run(_config(sample_dir, tmp_path / "o3", **{"input.csv": str(tmp_path / "nope.csv")}))
    assert (out / "keep.txt").exists() and not (tmp_path / "o2").exists()


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_a_run_where_no_row_decodes_writes_its_errors_and_exits_1(ray_cluster, sample_dir, tmp_path, capsys):
    from common.config import main_with_errors
    from pipelines.preprocess import NoClipsError

    rows = [{"videoid": str(i), "contentUrl": f"gone/{i}.mp4", "duration": "PT2S", "page_dir": "p", "name": f"clip {i}"}
            for i in range(3)]
    cfg = _config(sample_dir, tmp_path / "out", **{"input.csv": str(_write_csv(tmp_path / "v.csv", rows, list(rows[0]))),
                                                   "input.video_root": None})
    with pytest.raises(NoClipsError, match=r"none of the 3 rows gave a clip \(missing: 3\); e\.g\. videoid \d: no such file: .*gone") as err:
        run(cfg)
    assert "errors/errors.parquet" in str(err.value) and "summary.json" in str(err.value)
    errors = pq.read_table(tmp_path / "out" / "errors").to_pandas()
    assert sorted(errors.videoid) == ["0", "1", "2"] and set(errors.error) == {"missing"}
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["rows_in"], summary["rows_error"], summary["clips_out"], summary["rows_accounted"]) == (3, 3, 0, True)
    assert not (tmp_path / "out" / "_staging").exists() and not (tmp_path / "out" / "dataset.json").exists()
    # the job's entry point turns this error into one line on stderr and exit 1, no traceback
    # (the error itself, re-raised: a second run of the job would only repeat the one above)
    def job(argv: list[str]) -> None:
        raise err.value

    assert main_with_errors(job, []) == 1
    stderr = capsys.readouterr().err.strip()
    assert stderr.startswith("error: no clips: none of the 3 rows") and "\n" not in stderr and "Traceback" not in stderr


def test_video_root_needs_no_content_url_and_duplicates_are_kept_once(ray_cluster, sample_dir, tmp_path):
    good = _csv_rows(sample_dir)
    good = good[~good.videoid.isin(list(BROKEN))].head(4).to_dict("records")
    # a video_root CSV without contentUrl or duration, one videoid twice (exact copy) and once more with other text
    rows = [*good, good[0], {**good[1], "name": "another caption"}]
    path = _write_csv(tmp_path / "v.csv", rows, ["videoid", "page_dir", "name"])
    summary = run(_config(sample_dir, tmp_path / "out", **{"input.csv": str(path)}))
    assert (summary["rows_in"], summary["rows_ok"], summary["errors"], summary["rows_accounted"]) == (6, 4, {"duplicate": 2}, True)
    clips = pq.read_table(tmp_path / "out" / "clips", columns=["videoid", "caption", "duration_s"]).to_pandas()
    assert sorted(clips.videoid) == sorted(r["videoid"] for r in good) and clips.duration_s.isna().all()
    # the kept one of two different rows is the first in (contentUrl, page_dir, name) order
    assert clips.set_index("videoid").caption[good[1]["videoid"]] == min(good[1]["name"], "another caption")
    errors = pq.read_table(tmp_path / "out" / "errors").to_pandas()
    assert sorted(errors.videoid) == sorted([good[0]["videoid"], good[1]["videoid"]]) and set(errors.stage) == {"dedupe"}
    # dedupe off: every row is processed
    again = run(_config(sample_dir, tmp_path / "all", **{"input.csv": str(path), "input.dedupe": False}))
    assert (again["rows_ok"], again["clips_out"], again["errors"]) == (6, 6, {})


def test_stages_that_cannot_fit_the_cluster_fail_in_seconds(ray_cluster, sample_dir, tmp_path):
    import time

    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=r"resources: GPUs requested by the RAFT actor \(flow.num_cpus, flow.num_gpus\), "
                                          r"but the cluster has 2 CPUs and 0 GPUs on 1 node"):
        run(_config(sample_dir, out, **{"flow.backend": "raft_small", "flow.num_gpus": 0.25, "output.overwrite": True}))
    with pytest.raises(ConfigError, match=r"the stages need 3 CPUs at once \(decode tasks \(decode.num_cpus\) 1 \+ "
                                          r"the encoder actor \(encode.num_cpus, encode.num_gpus\) 2\)"):
        run(_config(sample_dir, out, **{"encode.num_cpus": 2, "output.overwrite": True}))
    assert time.perf_counter() - started < 60  # not a timing threshold of the code: a hang would never return
    assert (out / "keep.txt").exists()  # a run that cannot start deletes nothing


def test_a_killed_run_resumes_and_matches_an_uninterrupted_one(ray_cluster, first_run, sample_dir, tmp_path):
    """SIGKILL the job's driver after the first of its 8-row shards, re-run with output.resume: the same
    dataset as one uninterrupted run, no row written twice, the counts reconciled."""
    import signal
    import subprocess
    import sys
    import time

    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "out"
    args = {"input.csv": str(sample_dir / "videos.csv"), "input.video_root": str(sample_dir / "videos"),
            "output.dir": str(out), "output.shard_rows": "8"}
    cmd = [sys.executable, "jobs/preprocess.py", "--preset", "tiny", *[x for k, v in args.items() for x in (f"--{k}", v)],
           "--ray_address", ray_cluster.get_runtime_context().gcs_address]
    proc = subprocess.Popen(cmd, cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    markers = out / "_shards" / "done"
    deadline = time.monotonic() + 300
    while not (markers.is_dir() and len(list(markers.glob("*.json"))) >= 1):
        assert proc.poll() is None and time.monotonic() < deadline, "the job ended or stalled before its first shard"
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    index = json.loads((out / "_shards" / "index.json").read_text())
    done_before = len(list(markers.glob("*.json")))
    n_shards = len(index["shards"])
    assert n_shards == -(-index["rows"] // 8) >= 4 and 1 <= done_before < n_shards and not (out / "summary.json").exists()

    with pytest.raises(ConfigError, match="or --output.resume true to continue an interrupted run"):
        run(_config(sample_dir, out, **{"output.shard_rows": 8}))
    summary = run(_config(sample_dir, out, **{"output.shard_rows": 8, "output.resume": True}))
    _, whole = first_run
    assert summary["shards"] == n_shards and summary["shards_resumed"] == done_before
    for key in ("rows_in", "rows_ok", "rows_error", "clips_out", "errors", "rows_accounted"):
        assert summary[key] == whole[key], key
    assert summary["intensity"]["edges"] == whole["intensity"]["edges"]
    cols = ["videoid", "clip_index", "clip_start", "intensity_level", "frames", "text_embedding"]
    resumed = pq.read_table(out / "clips", columns=cols).to_pandas().sort_values(["videoid", "clip_index"]).reset_index(drop=True)
    once = pq.read_table(first_run[0] / "clips", columns=cols).to_pandas().sort_values(["videoid", "clip_index"]).reset_index(drop=True)
    assert not resumed.duplicated(["videoid", "clip_index"]).any()
    pd.testing.assert_frame_equal(resumed, once)
    errors = pq.read_table(out / "errors").to_pandas()
    assert sorted(errors.videoid) == sorted(BROKEN)
    assert not (out / "_shards").exists() and not (out / "_staging").exists()
