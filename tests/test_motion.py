"""Motion scores and intensity levels against clips of known motion."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from pipelines.config import FlowConfig
from pipelines.motion import (
    assign_levels,
    compute_bin_edges,
    edges_from_info,
    farneback_flow,
    flow_score,
    load_raft,
    score_clip_farneback,
    score_clips_raft,
    ssim_score,
)
from sample_data import load_photos, render_clip

SPEEDS = [0.5, 1.0, 1.5, 2.0, 3.0, 4.0]


@pytest.fixture(scope="module")
def photo():
    return load_photos()["chelsea"][0] if "chelsea" in load_photos() else next(iter(load_photos().values()))[0]


def test_farneback_recovers_a_known_pan(photo):
    clip = render_clip(photo, "pan", "left", 2.0, 6, 64, np.random.default_rng(0))
    flows = farneback_flow(clip)
    assert flows.shape == (5, 64, 64, 2)
    inner = flows[:, 8:-8, 8:-8]
    assert np.median(inner[..., 0]) == pytest.approx(-2.0, abs=0.3)  # content moves left: dx < 0
    assert abs(np.median(inner[..., 1])) < 0.3


def test_flow_score_is_monotone_in_known_speed(photo):
    """Spearman >= 0.95 between the synthetic clips' true speed and the Farneback score."""
    speeds, scores = [], []
    for i, speed in enumerate(SPEEDS * 2):
        for direction in ("left", "down"):
            clip = render_clip(photo, "pan", direction, speed, 8, 64, np.random.default_rng(i))
            speeds.append(speed)
            scores.append(score_clip_farneback(clip, max_side=64)[0])
    rho = spearmanr(speeds, scores).statistic
    assert rho >= 0.95, f"spearman {rho:.3f}"
    # the formula: percent of the diagonal per frame; a 2 px/frame pan at 64 px is ~2.2 %
    two = np.mean([s for s, v in zip(scores, speeds) if v == 2.0])
    assert two == pytest.approx(100 * 2 / np.hypot(64, 64), rel=0.25)


def test_static_clip_scores_zero_and_gets_level_1(photo):
    static = render_clip(photo, "static", "none", 0.0, 8, 64, np.random.default_rng(0))
    flow, ssim = score_clip_farneback(static, max_side=64)
    assert flow < 0.01 and ssim == pytest.approx(1.0, abs=1e-6)  # < 0.01 % of the diagonal per frame
    moving = [score_clip_farneback(render_clip(photo, "pan", "right", s, 8, 64, np.random.default_rng(1)), 64)[0] for s in SPEEDS]
    edges = compute_bin_edges([flow] * 3 + moving, levels=10)
    assert assign_levels(np.array([flow]), edges)[0] == 1


def test_ssim_score_falls_with_motion(photo):
    still = render_clip(photo, "static", "none", 0.0, 6, 64, np.random.default_rng(0))
    slow = render_clip(photo, "pan", "up", 0.5, 6, 64, np.random.default_rng(0))
    fast = render_clip(photo, "pan", "up", 4.0, 6, 64, np.random.default_rng(0))
    s_still, s_slow, s_fast = ssim_score(still), ssim_score(slow), ssim_score(fast)
    assert s_still == pytest.approx(1.0, abs=1e-6)
    assert s_still > s_slow > s_fast
    noise = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    assert ssim_score(noise) < 0.1


def test_quantile_levels_are_balanced_and_cover_1_to_10():
    values = np.random.default_rng(0).exponential(size=1000)
    edges = compute_bin_edges(values, 10)
    assert len(edges) == 9 and edges == sorted(edges)
    levels = assign_levels(values, edges)
    counts = np.bincount(levels, minlength=11)[1:]
    assert levels.min() == 1 and levels.max() == 10
    assert counts.min() >= 95 and counts.max() <= 105
    assert assign_levels(np.array([-1.0, 1e9]), edges).tolist() == [1, 10]


def test_reused_bins_must_match():
    info = {"source": "flow", "levels": 10, "edges": list(range(9))}
    assert edges_from_info(info, "flow", 10) == list(range(9))
    with pytest.raises(ValueError, match="intensity.bins: holds source='flow' levels=10 with 9 edges; this run wants source='ssim'"):
        edges_from_info(info, "ssim", 10)


def test_flow_score_formula():
    flows = np.zeros((3, 30, 40, 2), np.float32)
    flows[..., 0] = 3.0
    flows[..., 1] = 4.0  # magnitude 5 px everywhere; diagonal of 30x40 is 50 px
    assert flow_score(flows) == pytest.approx(10.0)


def test_raft_needs_weights_unless_random_init_is_allowed(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # an empty torchvision cache
    with pytest.raises(FileNotFoundError, match="flow.backend=raft_small: no RAFT weights. Looked in torchvision's cache"):
        load_raft(FlowConfig(backend="raft_small"))
    with pytest.raises(FileNotFoundError, match="flow.weights: no such file"):
        load_raft(FlowConfig(backend="raft_small", weights=str(tmp_path / "nope.pth")))


def test_raft_random_init_plumbing_and_weights_file(tmp_path, monkeypatch, photo):
    """Random RAFT only proves the plumbing: shapes, finite scores, weights reload identically."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    cfg = FlowConfig(backend="raft_small", allow_random_init=True, raft_iters=2, max_side=64)
    model = load_raft(cfg)
    clips = [render_clip(photo, "pan", "left", 2.0, 4, 64, np.random.default_rng(i)) for i in range(2)]
    scores = score_clips_raft(model, clips, cfg)
    assert len(scores) == 2 and all(np.isfinite(f) and f >= 0 for f, _ in scores)
    torch.save(model.state_dict(), tmp_path / "raft.pth")
    again = load_raft(FlowConfig(backend="raft_small", weights=str(tmp_path / "raft.pth"), raft_iters=2, max_side=64))
    assert score_clips_raft(again, clips, cfg) == scores
