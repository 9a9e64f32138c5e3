"""Evaluation metrics against inputs whose answer is known: shifts, noise, Gaussians, ranks."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from skimage import data

from evaluation.metrics import (
    ClipImageFeatures,
    DinoFeatures,
    I3DFeatures,
    clip_text_alignment,
    first_frame_fidelity,
    frame_consistency,
    frechet_distance,
    fvd,
    intensity_tracking,
    motion_stats,
)
from model.encoders import WeightsNotFoundError

SIZE = 96  # side of the test clips' frames


@pytest.fixture(scope="module")
def chelsea() -> np.ndarray:
    return data.chelsea()  # (300, 451, 3) uint8 RGB, a real photo bundled with scikit-image


def shifted_clip(photo: np.ndarray, dx: float, dy: float, frames: int = 6) -> np.ndarray:
    """Frame i = the photo translated by (i*dx, i*dy) px (cv2.warpAffine), centre SIZE x SIZE crop (no borders)."""
    h, w = photo.shape[:2]
    top, left = (h - SIZE) // 2, (w - SIZE) // 2
    out = []
    for i in range(frames):
        m = np.float32([[1, 0, i * dx], [0, 1, i * dy]])
        moved = cv2.warpAffine(photo, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
        out.append(moved[top : top + SIZE, left : left + SIZE])
    return np.stack(out)


# --------------------------------------------------------------------------- consistency / CLIP-T


def test_frame_consistency_identical_frames_is_100_random_is_lower():
    rng = np.random.default_rng(0)
    row = rng.normal(size=64)
    assert frame_consistency(np.tile(row, (8, 1))) == pytest.approx(100.0, abs=1e-9)
    random = frame_consistency(rng.normal(size=(8, 64)))
    assert abs(random) < 40.0  # independent 64-d Gaussians: cos ~ N(0, 1/64) -> x100 ~ +-12.5
    # hand-computed: two orthogonal then two equal unit vectors -> mean(cos) = (0 + 1) / 2
    assert frame_consistency(np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])) == pytest.approx(50.0)


def test_frame_consistency_rejects_bad_input():
    with pytest.raises(ValueError, match=r"features: expected \(rows >= 2"):
        frame_consistency(np.ones((1, 4)))
    with pytest.raises(ValueError, match="all zeros"):
        frame_consistency(np.zeros((3, 4)))


def test_clip_text_alignment_is_mean_cosine_x100():
    text = np.array([1.0, 0.0])
    frames = np.array([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0], [1.0, 1.0]])  # cos 1, 0, -1, 1/sqrt2
    assert clip_text_alignment(frames, text) == pytest.approx(100 * (1 + 0 - 1 + 1 / math.sqrt(2)) / 4)
    with pytest.raises(ValueError, match="dim 3 != image_feats dim 2"):
        clip_text_alignment(frames, np.ones(3))


# --------------------------------------------------------------------------- fidelity


def test_first_frame_fidelity_identical_and_known_noise(chelsea):
    photo = np.ascontiguousarray(chelsea[:SIZE, :SIZE])
    same = first_frame_fidelity(np.stack([photo, photo[::-1]]), photo)  # only frame 0 counts
    assert same["psnr"] == math.inf and same["ssim"] == pytest.approx(1.0, abs=1e-6)

    grey = np.full((128, 128, 3), 128, np.uint8)  # mid-grey: noise of sigma 10 never clips
    noise = np.random.default_rng(0).normal(0.0, 10.0, grey.shape)
    noisy = np.clip(np.round(128 + noise), 0, 255).astype(np.uint8)
    expected = 10 * math.log10(255**2 / (10.0**2 + 1 / 12))  # + rounding noise, variance 1/12
    out = first_frame_fidelity(noisy[None], grey)
    assert out["psnr"] == pytest.approx(expected, abs=0.1)  # ~28.13 dB
    assert out["ssim"] < 0.9


def test_first_frame_fidelity_rejects_shape_mismatch():
    with pytest.raises(ValueError, match=r"reference: expected uint8 \(8, 8, 3\)"):
        first_frame_fidelity(np.zeros((2, 8, 8, 3), np.uint8), np.zeros((8, 9, 3), np.uint8))


# --------------------------------------------------------------------------- motion


@pytest.mark.parametrize(
    "dx, dy, direction",
    [(2.0, 0.0, "right"), (-2.0, 0.0, "left"), (0.0, -2.0, "up"), (0.0, 2.0, "down")],
)
def test_motion_stats_recovers_a_known_translation(chelsea, dx, dy, direction):
    stats = motion_stats(shifted_clip(chelsea, dx, dy))
    assert stats["direction"] == direction
    assert stats["dx"] == pytest.approx(dx, abs=0.25)
    assert stats["dy"] == pytest.approx(dy, abs=0.25)
    assert stats["magnitude"] == pytest.approx(100 * 2.0 / math.hypot(SIZE, SIZE), rel=0.15)


def test_motion_stats_in_input_pixels_when_flow_is_downscaled(chelsea):
    """Flow at half resolution still reports px/frame of the input frames."""
    stats = motion_stats(shifted_clip(chelsea, 3.0, 0.0), max_side=SIZE // 2)
    assert stats["direction"] == "right" and stats["dx"] == pytest.approx(3.0, abs=0.4)


def test_motion_stats_static_clip_is_none(chelsea):
    stats = motion_stats(shifted_clip(chelsea, 0.0, 0.0))
    assert stats["direction"] == "none"
    assert stats["magnitude"] < 0.01 and abs(stats["dx"]) < 0.01 and abs(stats["dy"]) < 0.01


def test_motion_stats_needs_two_frames():
    with pytest.raises(ValueError, match=r"video: expected uint8 \(frames >= 2"):
        motion_stats(np.zeros((1, 16, 16, 3), np.uint8))


def test_intensity_tracking_is_spearman():
    levels = list(range(1, 11))
    assert intensity_tracking(levels, [0.1 * l**2 for l in levels]) == pytest.approx(1.0)  # monotone, not linear
    assert intensity_tracking(levels, levels[::-1]) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="measured: all values equal"):
        intensity_tracking(levels, [0.5] * 10)


# --------------------------------------------------------------------------- Frechet / FVD


def test_frechet_distance_of_known_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 6))
    sigma = a @ a.T + np.eye(6)
    mu = rng.normal(size=6)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-6)
    delta = np.array([1.0, -2.0, 0.5, 0.0, 0.0, 3.0])
    assert frechet_distance(mu, sigma, mu + delta, sigma) == pytest.approx(delta @ delta, abs=1e-6)
    # 1-D closed form: (m1 - m2)^2 + (s1 - s2)^2
    assert frechet_distance(np.array([0.0]), np.array([[4.0]]), np.array([1.0]), np.array([[9.0]])) == pytest.approx(1 + 1)


def test_fvd_of_feature_sets():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(400, 4))
    assert fvd(real, real) == pytest.approx(0.0, abs=1e-6)
    assert fvd(real, real + np.array([3.0, 0.0, 0.0, 4.0])) == pytest.approx(25.0, abs=1e-6)  # a shift moves only the mean
    with pytest.raises(ValueError, match="features_real dim 4 != features_fake dim 3"):
        fvd(rng.normal(size=(5, 4)), rng.normal(size=(5, 3)))


def test_i3d_missing_weights_names_the_path(tmp_path):
    missing = tmp_path / "i3d_torchscript.pt"
    with pytest.raises(FileNotFoundError, match=r"I3D weights not found at .*i3d_torchscript\.pt.*FVD needs the I3D checkpoint"):
        I3DFeatures(missing)


# --------------------------------------------------------------------------- feature extractors


def test_tiny_extractors_shapes_and_determinism(chelsea):
    clip = shifted_clip(chelsea, 1.0, 0.0, frames=3)
    clip_a, clip_b = ClipImageFeatures("tiny"), ClipImageFeatures("tiny")
    feats = clip_a(clip)
    assert feats.shape == (3, 16) and feats.dtype == np.float32
    np.testing.assert_array_equal(feats, clip_b(clip))  # two builds, same seeds, same numbers
    text = clip_a.text(["a cat turns its head"])
    assert text.shape == (1, 16)
    np.testing.assert_array_equal(text, clip_b.text(["a cat turns its head"]))
    assert -100.0 <= clip_text_alignment(feats, text[0]) <= 100.0

    dino_a, dino_b = DinoFeatures("tiny"), DinoFeatures("tiny")
    dino = dino_a(clip)
    assert dino.shape == (3, 32)
    np.testing.assert_array_equal(dino, dino_b(clip))
    still = np.repeat(clip[:1], 3, axis=0)
    assert frame_consistency(dino_a(still)) == pytest.approx(100.0, abs=1e-4)


@pytest.mark.parametrize("cls", [ClipImageFeatures, DinoFeatures])
def test_missing_extractor_weights_name_the_path(tmp_path, cls):
    missing = str(tmp_path / "no-such-checkpoint")
    with pytest.raises(WeightsNotFoundError, match="no-such-checkpoint") as err:
        cls(missing, local_files_only=True)
    assert err.value.source == missing


@pytest.mark.weights
def test_real_extractors_rank_a_cat_photo_sensibly(chelsea):
    """With real CLIP / DINOv2 in the Hugging Face cache: the cat photo matches "cat" over "car",
    a still clip is more consistent than one panning 8 px/frame. Skipped where the weights are absent."""
    try:
        clip = ClipImageFeatures("openai/clip-vit-large-patch14", local_files_only=True)
        dino = DinoFeatures("facebook/dinov2-large", local_files_only=True)
    except WeightsNotFoundError as exc:
        pytest.skip(f"real weights not on disk: {exc.source}")
    video = shifted_clip(chelsea, 8.0, 0.0, frames=4)
    feats = clip(video)
    cat, car = clip.text(["a photo of a cat", "a photo of a car"])
    assert clip_text_alignment(feats, cat) > clip_text_alignment(feats, car)
    still = np.repeat(video[:1], 4, axis=0)
    for extractor in (clip, dino):
        assert frame_consistency(extractor(still)) == pytest.approx(100.0, abs=1e-3)
        assert frame_consistency(extractor(video)) < 100.0
