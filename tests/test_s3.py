"""Preprocessing with the CSV, the videos and the output on a real S3-compatible server
(moto's server mode on 127.0.0.1, started here; see conftest.S3_PORT)."""

from __future__ import annotations

import csv
import io
import json

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from conftest import S3_PORT
from pipelines.preprocess import run
from sample_fixtures import BROKEN, preprocess_config

BUCKET = "livephoto-test"


@pytest.fixture(scope="module")
def s3(ray_cluster):
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=S3_PORT, verbose=False)
    server.start()
    fs = pafs.S3FileSystem(endpoint_override=f"http://127.0.0.1:{S3_PORT}", access_key="test", secret_key="test", region="us-east-1",
                          allow_bucket_creation=True)
    fs.create_dir(BUCKET)
    yield fs
    server.stop()


def test_preprocess_from_and_to_s3(s3, sample_dir):
    with open(sample_dir / "videos.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["videoid"] not in BROKEN][:5]
    for r in rows:  # relative contentUrls: resolved against the CSV's s3:// folder
        with s3.open_output_stream(f"{BUCKET}/in/{r['contentUrl']}") as out:
            out.write((sample_dir / r["contentUrl"]).read_bytes())
    rows.append({**rows[0], "videoid": "s3_missing", "contentUrl": "videos/nowhere/s3_missing.mp4"})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    with s3.open_output_stream(f"{BUCKET}/in/videos.csv") as out:
        out.write(buf.getvalue().encode())

    summary = run(preprocess_config(sample_dir, f"s3://{BUCKET}/out", **{
        "input.csv": f"s3://{BUCKET}/in/videos.csv", "input.video_root": None, "output.shard_rows": 4}))
    assert (summary["rows_in"], summary["rows_ok"], summary["errors"], summary["rows_accounted"]) == (6, 5, {"missing": 1}, True)
    assert summary["shards"] == 2
    clips = pq.read_table(f"{BUCKET}/out/clips", filesystem=s3, columns=["videoid", "video_path"]).to_pandas()
    assert sorted(clips.videoid) == sorted(r["videoid"] for r in rows[:5])
    assert clips.video_path.str.startswith(f"s3://{BUCKET}/in/videos/").all()
    errors = pq.read_table(f"{BUCKET}/out/errors", filesystem=s3).to_pandas()
    assert list(errors.videoid) == ["s3_missing"] and "no such object: s3://" in errors.message[0]
    with s3.open_input_stream(f"{BUCKET}/out/summary.json") as f:
        assert json.loads(f.read())["clips_out"] == 5
    listed = {i.path for i in s3.get_file_info(pafs.FileSelector(f"{BUCKET}/out", recursive=True))}
    assert f"{BUCKET}/out/dataset.json" in listed and not any("/_staging" in p or "/_shards" in p for p in listed)
