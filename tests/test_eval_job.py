"""The evaluation job on real Ray Data, real image files, real Parquet and real MLflow (sqlite)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from mlflow.tracking import MlflowClient
from PIL import Image

from common.config import ConfigError, load
from evaluation.config import PRESETS, EvalConfig
from evaluation.job import RESULT_SCHEMA, run
from evaluation.report import summarize
from model.build import build_livephoto
from model.config import ModelConfig
from model.pipeline import LivePhotoPipeline
from model.media import read_video

PIXEL = dict(autoencoder="pixel", pixel_patch=2, resolution=32, num_frames=4, image_encoder_size=32)
GOOD = 4


class MeanPoolI3D(torch.nn.Module):
    """Stand-in for the I3D TorchScript file: same call signature, features = pooled colours."""

    def forward(self, videos: torch.Tensor, rescale: bool = True, resize: bool = True, return_features: bool = True) -> torch.Tensor:
        x = videos / 127.5 - 1.0 if rescale else videos
        return torch.cat([x.mean(dim=(2, 3, 4)), x.std(dim=(2, 3, 4))], dim=1)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("evalmodel") / "model"
    LivePhotoPipeline.from_components(build_livephoto(ModelConfig(**PIXEL))).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    import skimage.data

    root = tmp_path_factory.mktemp("manifest")
    Image.fromarray(skimage.data.chelsea()).save(root / "cat.png")
    (root / "broken.png").write_bytes(b"not an image")
    rows = [
        {"id": "left", "image": "cat.png", "prompt": "a cat, the view slides left", "intensity": 2, "seed": 0, "direction": ""},
        {"id": "right", "image": "cat.png", "prompt": "the camera pans left over a cat", "intensity": 5, "seed": 1, "direction": ""},
        {"id": "up", "image": str(root / "cat.png"), "prompt": "a cat; the scene drifts up", "intensity": 9, "seed": 2, "direction": "up"},
        {"id": "down", "image": "cat.png", "prompt": "a cat moving", "intensity": 10, "seed": 3, "direction": "down"},
        {"id": "bad_intensity", "image": "cat.png", "prompt": "a cat", "intensity": 11, "seed": 4, "direction": ""},
        {"id": "bad_seed", "image": "cat.png", "prompt": "a cat", "intensity": 3, "seed": "x", "direction": ""},
        {"id": "missing", "image": "nope.png", "prompt": "a cat", "intensity": 3, "seed": 5, "direction": ""},
        {"id": "unreadable", "image": "broken.png", "prompt": "a cat", "intensity": 3, "seed": 6, "direction": ""},
        {"id": "empty_prompt", "image": "cat.png", "prompt": " ", "intensity": 3, "seed": 7, "direction": ""},
        {"id": "bad_direction", "image": "cat.png", "prompt": "a cat", "intensity": 3, "seed": 8, "direction": "sideways"},
    ]
    with open(root / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root / "manifest.csv"


def eval_config(manifest: Path, model: Path, out: Path, **overrides) -> EvalConfig:
    base = {"manifest.csv": str(manifest), "generation.model": str(model), "output.dir": str(out),
            "generation.num_inference_steps": 2, "generation.batch_size": 3}
    return load(EvalConfig, presets=PRESETS, preset="tiny", overrides={**base, **overrides})


@pytest.fixture(scope="module")
def evaluated(ray_cluster, manifest, model_dir, first_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    torch.jit.script(MeanPoolI3D()).save(str(root / "i3d.pt"))
    out = root / "out"
    cfg = eval_config(manifest, model_dir, out, **{"metrics.fvd_real": str(first_run[0]), "metrics.fvd_i3d": str(root / "i3d.pt")})
    return out, run(cfg)


def test_every_manifest_row_is_accounted_for(evaluated):
    out, summary = evaluated
    table = pq.read_table(out / "metrics", schema=RESULT_SCHEMA)
    rows = {r["id"]: r for r in table.to_pylist()}
    assert len(rows) == 10 and summary["rows_accounted"] and (summary["generated"], summary["errors"]) == (GOOD, 6)
    errors = {k: r["error"] for k, r in rows.items() if r["status"] == "error"}
    assert errors["bad_intensity"].startswith("intensity:") and "1..10" in errors["bad_intensity"]
    assert errors["bad_seed"].startswith("seed:")
    assert errors["missing"].startswith("image:") and "does not exist" in errors["missing"]
    assert errors["unreadable"].startswith("image:") and "not a readable image" in errors["unreadable"]
    assert errors["empty_prompt"].startswith("prompt:")
    assert errors["bad_direction"].startswith("direction:") and "left" in errors["bad_direction"]
    assert all(rows[k]["psnr"] is None for k in errors)


def test_generated_rows_carry_videos_and_metrics(evaluated):
    out, _ = evaluated
    rows = {r["id"]: r for r in pq.read_table(out / "metrics", schema=RESULT_SCHEMA).to_pylist()}
    # expected directions: from the prompt (camera words are the opposite), or the column
    assert [rows[k]["direction"] for k in ("left", "right", "up", "down")] == ["left", "right", "up", "down"]
    for key in ("left", "right", "up", "down"):
        r = rows[key]
        video = read_video(out / r["video"])
        assert video.shape == (4, 32, 32, 3)
        assert np.isfinite(r["psnr"]) and -1 <= r["ssim"] <= 1
        assert r["measured_direction"] in ("left", "right", "up", "down", "none") and r["magnitude"] >= 0
        assert r["speed"] == pytest.approx(np.hypot(r["dx"], r["dy"]))
        assert -100 <= r["clip_consistency"] <= 100 and -100 <= r["dino_consistency"] <= 100 and r["clip_t"] is not None
        assert len(np.frombuffer(r["i3d"], dtype=np.float32)) == 6


def test_generation_is_deterministic_per_seed(evaluated, manifest, model_dir, tmp_path):
    out, _ = evaluated
    again = run(eval_config(manifest, model_dir, tmp_path / "again",
                            **{"manifest.limit": 1, "generation.batch_size": 1, "output.report_videos": 0}))
    assert again["generated"] == 1 and ".gif)" not in (tmp_path / "again" / "report.md").read_text()  # a report without videos
    first = read_video(out / "videos" / "left.gif")
    assert np.array_equal(read_video(tmp_path / "again" / "videos" / "left.gif"), first)


def test_summary_report_and_mlflow(evaluated):
    out, summary = evaluated
    saved = json.loads((out / "summary.json").read_text())
    assert saved["direction_videos"] == GOOD and 0.0 <= saved["direction_accuracy"] <= 1.0
    assert saved["fvd"] is not None and saved["fvd"] >= 0
    assert set(saved["per_level"]) == {"2", "5", "9", "10"}
    report = (out / "report.md").read_text()
    assert "Not meaningful" in report and "RANDOM" in report  # tiny encoders are flagged
    assert "![intensity.png](intensity.png)" in report and (out / "intensity.png").is_file() and (out / "directions.png").is_file()
    assert "`bad_seed`: seed:" in report
    client = MlflowClient(tracking_uri=summary["mlflow"]["tracking_uri"])
    run_ = client.get_run(summary["mlflow"]["run_id"])
    assert run_.info.status == "FINISHED"
    assert run_.data.metrics["generated"] == GOOD and "direction_accuracy" in run_.data.metrics
    assert run_.data.params["generation.num_inference_steps"] == "2"
    artifacts = {a.path for a in client.list_artifacts(run_.info.run_id)}
    assert {"report.md", "summary.json", "intensity.png", "metrics", "videos"} <= artifacts


def _table(rows: list[dict]) -> pa.Table:
    full = [{name: r.get(name) for name in RESULT_SCHEMA.names} | {"status": r.get("status", "ok")} for r in rows]
    return pa.Table.from_pylist(full, schema=RESULT_SCHEMA)


def test_summarize_on_known_rows():
    rows = [
        {"id": "a", "direction": "left", "measured_direction": "left", "intensity": 1, "magnitude": 0.1, "psnr": 30.0},
        {"id": "b", "direction": "left", "measured_direction": "right", "intensity": 2, "magnitude": 0.3, "psnr": 20.0},
        {"id": "c", "direction": "up", "measured_direction": "up", "intensity": 3, "magnitude": 0.2, "psnr": 100.0},
        {"id": "d", "direction": "down", "measured_direction": "down", "intensity": 4, "magnitude": 0.9, "psnr": 26.0},
        {"id": "e", "direction": "none", "measured_direction": "none", "intensity": 5, "magnitude": 1.0, "psnr": 24.0},
        {"id": "f", "status": "error", "intensity": 6},
    ]
    s = summarize(_table(rows), manifest_rows=6)
    assert s["direction_videos"] == 4 and s["direction_accuracy"] == 0.75  # 'none' prompts are not scored
    assert s["intensity_spearman"] == pytest.approx(0.9)  # ranks 1,3,2,4,5 vs 1..5
    assert s["psnr"] == pytest.approx(40.0) and s["errors"] == 1 and s["rows_accounted"]
    assert s["direction_confusion"]["left"] == {"left": 1, "right": 1}
    assert not summarize(_table(rows), manifest_rows=7)["rows_accounted"]


def test_bad_configs_fail_at_start(ray_cluster, manifest, model_dir, tmp_path):
    with pytest.raises(ConfigError, match="manifest.csv: .* does not exist"):
        run(eval_config(tmp_path / "none.csv", model_dir, tmp_path / "o1"))
    (tmp_path / "m.csv").write_text("image,prompt\nx.png,a cat\n")
    with pytest.raises(ConfigError, match="manifest.csv: missing column.*intensity, seed"):
        run(eval_config(tmp_path / "m.csv", model_dir, tmp_path / "o2"))
    with pytest.raises(ConfigError, match="metrics.fvd_i3d"):
        eval_config(manifest, model_dir, tmp_path / "o3", **{"metrics.fvd_real": str(tmp_path)})
    (tmp_path / "o4").mkdir()
    (tmp_path / "o4" / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match="output.dir: .* not empty"):
        run(eval_config(manifest, model_dir, tmp_path / "o4"))
    with pytest.raises(ConfigError, match="generation.save_videos"):
        eval_config(manifest, model_dir, tmp_path / "o5", **{"generation.save_videos": "avi"})
    with pytest.raises(ConfigError, match="generation.guidance_interval: must be"):
        eval_config(manifest, model_dir, tmp_path / "o5", **{"generation.guidance_interval": [0.5, 0.2]})
    with pytest.raises(ConfigError, match="output.report_videos: must be >= 0"):
        eval_config(manifest, model_dir, tmp_path / "o5", **{"output.report_videos": -1})
