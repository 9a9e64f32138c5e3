"""The controllability benchmark's chain, CI-sized: sample data -> jobs/preprocess.py ->
jobs/train.py -> jobs/evaluate.py -> RESULTS.md + results.json. The benchmark starts its own Ray
head (common.raylocal) and runs each job with `ray job submit`, as users do: this is also the
suite's `ray job submit` test."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_smoke_chain_writes_results(tmp_path):
    out, docs = tmp_path / "work", tmp_path / "docs"
    cmd = [sys.executable, "benchmarks/controllability.py", "--smoke", "--ablations", "", "--out", str(out), "--results", str(docs)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=880)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert log.count("$ ray job submit --address http://127.0.0.1:") == 3  # preprocess, train, evaluate
    assert len(re.findall(r"Job 'raysubmit_\w+' succeeded", log)) == 3, log[-3000:]

    # every stage ran and left its outputs
    summary = json.loads((out / "dataset" / "summary.json").read_text())
    assert summary["rows_accounted"] and summary["clips_out"] == 24
    assert (out / "runs" / "main" / "final_model" / "model_index.json").is_file()
    assert (out / "runs" / "main" / "mlflow.db").is_file() and list((out / "runs" / "main").glob("checkpoints/*/checkpoint_step_00000004"))
    evaluation = json.loads((out / "eval" / "main" / "summary.json").read_text())
    # 2 held-out photos x 1 view x 4 directions x (5 levels + plain wording + camera wording)
    assert evaluation["generated"] == 56 and evaluation["errors"] == 0 and evaluation["rows_accounted"]
    assert evaluation["direction_videos"] == 56

    # results.json: machine-readable, written by the benchmark, numbers from that evaluation's sets
    results = json.loads((docs / "results.json").read_text())
    main = results["models"]["main"]
    assert {k: v["videos"] for k, v in main["sets"].items()} == {"main": 40, "plain": 8, "camera": 8}
    assert main["direction_accuracy"] == main["sets"]["main"]["direction_accuracy"]
    assert main["first_frame_psnr"] == main["sets"]["main"]["first_frame_psnr"]
    lo, hi = main["direction_accuracy_ci"]
    assert 0.0 <= lo <= main["direction_accuracy"] <= hi <= 1.0
    assert set(main["per_level"]) == {"1", "3", "5", "7", "9"}
    assert main["training_minutes"] > 0 and "--smoke" in main["command"]
    assert not results["complete"]  # the ablations were left out: the report says so
    assert set(results["models"]) == {"main"}
    assert results["setup"]["preset"] == "mini" and results["setup"]["speeds_px_per_frame"][0] == 0.4

    # RESULTS.md: the target table and sample GIFs that exist next to it
    text = (docs / "RESULTS.md").read_text()
    assert "| direction accuracy (chance 0.25) | >= 0.9 |" in text and "--smoke" in text
    assert "camera wording" in text and "plain wording" in text
    assert "not run yet: no_reweighting, no_intensity, no_content" in text
    gifs = re.findall(r"\]\((results/[^)]+\.gif)\)", text)
    assert len(gifs) == 16 and all((docs / g).is_file() for g in gifs)

    # another session: --out is gone, results.json is committed -> the main model is carried over,
    # not retrained, with its samples; a different set-up carries nothing
    sys.path.insert(0, str(REPO / "benchmarks"))
    import controllability

    args = controllability.parse_args(["--smoke", "--ablations", "no_content", "--out", str(tmp_path / "new"), "--results", str(docs)])
    carried = controllability.carried_results(args, docs, tmp_path / "new")
    assert set(carried["models"]) == {"main"} and carried["samples"] == results["samples"] and len(results["samples"]) == 16
    assert carried["models"]["main"]["direction_accuracy"] == main["direction_accuracy"]
    assert "train main" in carried["stage_minutes"] and "preprocess" not in carried["stage_minutes"]
    assert controllability.carried_results(args, docs, out)["models"] == {}  # evaluated here: re-summarised, not carried
    other = controllability.parse_args(["--smoke", "--clips", "30", "--out", str(tmp_path / "new"), "--results", str(docs)])
    other.clips = 30
    assert controllability.carried_results(other, docs, tmp_path / "new")["models"] == {}
    fresh = controllability.parse_args(["--smoke", "--fresh", "--out", str(tmp_path / "new"), "--results", str(docs)])
    assert controllability.carried_results(fresh, docs, tmp_path / "new")["models"] == {}

    controllability.write_results(args, docs, tmp_path / "new", {}, {}, 1.0, carried=carried)
    again = json.loads((docs / "results.json").read_text())
    assert again["models"]["main"] == carried["models"]["main"] and again["samples"] == results["samples"]
    text = (docs / "RESULTS.md").read_text()
    assert len(re.findall(r"\]\((results/[^)]+\.gif)\)", text)) == 16 and all((docs / g).is_file() for g in gifs)
    assert "not run yet: no_reweighting, no_intensity, no_content" in text


def test_a_subset_of_ablations_keeps_the_other_entries(tmp_path):
    """An invocation with --ablations no_content re-reads what it runs from --out and carries every
    other model of the committed results.json, even when --out also holds their evaluations."""
    import shutil

    sys.path.insert(0, str(REPO / "benchmarks"))
    import control_results
    import controllability

    docs, out = tmp_path / "docs", tmp_path / "out"
    docs.mkdir()
    shutil.copy(REPO / "docs" / "results.json", docs / "results.json")  # the committed run
    for name in ("main", "no_reweighting", "no_intensity", "no_content"):
        (out / "eval" / name).mkdir(parents=True)
        (out / "eval" / name / "summary.json").write_text("{}")
    args = controllability.parse_args(["--ablations", "no_content", "--out", str(out), "--results", str(docs)])
    committed = json.loads((docs / "results.json").read_text())  # made with today's set-up (the sampler may have changed since)
    committed["setup"] = {**control_results.setup_of(args), "eval_videos_per_model": committed["setup"]["eval_videos_per_model"]}
    for name in control_results.ABLATIONS:  # main + all three ablations, whichever the committed run has reached
        committed["models"].setdefault(name, {**committed["models"]["main"]})
    (docs / "results.json").write_text(json.dumps(committed))
    carried = controllability.carried_results(args, docs, out)
    assert set(carried["models"]) == {"no_reweighting", "no_intensity"}  # main and no_content run here: re-read from --out
