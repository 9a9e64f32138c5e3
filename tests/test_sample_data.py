"""Tests of the sample data generator (sample_data).

They check behaviour: the WebVid layout, that every file decodes with decord with the
promised frame count, size and fps, and that the ground truth is true (measured shifts
of pan and object clips, identical static frames, zoom direction, caption words).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import av
import cv2
import decord
import numpy as np
import pytest

import sample_data as sd
import sample_data.dataset
from model.media import export_video
from sample_data.__main__ import main
from sample_data.plan import _kind_counts

N, SIZE, FRAMES, FPS = 12, 64, 16, 8


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def _decode(path: Path) -> tuple[np.ndarray, float]:
    """All frames as (frames, height, width, 3) uint8 RGB and the average fps."""
    reader = decord.VideoReader(str(path))
    return reader.get_batch(list(range(len(reader)))).asnumpy(), reader.get_avg_fps()


def _gray(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32)


def _phase_shift(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """(dx, dy) by which the content of ``second`` is displaced relative to ``first``."""
    window = cv2.createHanningWindow(first.shape[1::-1], cv2.CV_32F)
    (dx, dy), _ = cv2.phaseCorrelate(_gray(first), _gray(second), window)
    return np.array([dx, dy])


def _expected(direction: str, pixels: float) -> np.ndarray:
    return np.array(sd.DIRECTION_VECTORS[direction]) * pixels


def _frame_gap(speed: float, frames: int, target_px: float = 5.0) -> int:
    """A frame gap giving about ``target_px`` of motion (within the clip)."""
    return int(min(frames - 1, max(1, round(target_px / speed))))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("sample") / "data"
    summary = sd.generate(out, n=N, size=SIZE, num_frames=FRAMES, fps=FPS, seed=0, progress=False)
    return out, summary


@pytest.fixture(scope="module")
def gt_rows(dataset: tuple[Path, dict]) -> list[dict[str, str]]:
    return _read_csv(dataset[0] / "ground_truth.csv")[1]


@pytest.fixture(scope="module")
def decoded(dataset: tuple[Path, dict], gt_rows: list[dict[str, str]]) -> dict[str, tuple[np.ndarray, float]]:
    """videoid -> decoded frames and fps, for every synthetic clip."""
    out, _ = dataset
    videos = {row["videoid"]: row for row in _read_csv(out / "videos.csv")[1]}
    return {row["videoid"]: _decode(out / videos[row["videoid"]]["contentUrl"])
            for row in gt_rows if row["source"] == "synthetic"}


def _rows(gt_rows: list[dict[str, str]], motion: str) -> list[dict[str, str]]:
    rows = [row for row in gt_rows if row["motion"] == motion]
    assert rows, f"the fixture dataset has no {motion} clip"
    return rows


def _real_available() -> int:
    return sum(sd.find_real_video(source) is not None for source in sd.REAL_SOURCES)


# --------------------------------------------------------------------------- layout


def test_videos_csv_has_webvid_columns_and_rows(dataset: tuple[Path, dict]) -> None:
    out, summary = dataset
    columns, rows = _read_csv(out / "videos.csv")
    assert columns == ["videoid", "contentUrl", "duration", "page_dir", "name"]
    assert len(rows) == N + _real_available() == summary["num_videos"]
    assert len({row["videoid"] for row in rows}) == len(rows)
    for row in rows:
        assert row["videoid"].isdigit()
        assert row["contentUrl"] == f"videos/{row['page_dir']}/{row['videoid']}.mp4"
        assert (out / row["contentUrl"]).is_file()
        assert re.fullmatch(r"synthetic_\d{3}|real", row["page_dir"])
        assert re.fullmatch(r"PT\d{2}H\d{2}M\d{2}S", row["duration"])
        assert row["name"]


def test_captions_with_commas_are_quoted(dataset: tuple[Path, dict]) -> None:
    out, _ = dataset
    text = (out / "videos.csv").read_text(encoding="utf-8")
    captions = [row["name"] for row in _read_csv(out / "videos.csv")[1]]
    with_comma = [c for c in captions if "," in c]
    assert with_comma, "expected some captions with commas"
    for caption in with_comma:
        assert f'"{caption}"' in text


def test_every_video_decodes_with_promised_frames_size_fps(
    dataset: tuple[Path, dict], gt_rows: list[dict[str, str]]
) -> None:
    out, _ = dataset
    videos = {row["videoid"]: row for row in _read_csv(out / "videos.csv")[1]}
    for gt in gt_rows:
        reader = decord.VideoReader(str(out / videos[gt["videoid"]]["contentUrl"]))
        assert len(reader) == int(gt["num_frames"])
        assert reader.get_avg_fps() == pytest.approx(float(gt["fps"]), rel=1e-4)
        assert reader[0].shape == (int(gt["height"]), int(gt["width"]), 3)
        seconds = int(gt["num_frames"]) / float(gt["fps"])
        assert videos[gt["videoid"]]["duration"] == sd.iso_duration(seconds)
        if gt["source"] == "synthetic":
            assert (len(reader), reader.get_avg_fps(), reader[0].shape) == (FRAMES, float(FPS), (SIZE, SIZE, 3))
            assert videos[gt["videoid"]]["duration"] == "PT00H00M02S"


def test_iso_duration() -> None:
    assert sd.iso_duration(4.0) == "PT00H00M04S"
    assert sd.iso_duration(0.3) == "PT00H00M01S"
    assert sd.iso_duration(4.004) == "PT00H00M04S"
    assert sd.iso_duration(3725.6) == "PT01H02M06S"


def test_ground_truth_sidecar(dataset: tuple[Path, dict], gt_rows: list[dict[str, str]]) -> None:
    out, summary = dataset
    columns, _ = _read_csv(out / "ground_truth.csv")
    assert columns == list(sd.GT_COLUMNS)
    videos = _read_csv(out / "videos.csv")[1]
    assert [row["videoid"] for row in gt_rows] == [row["videoid"] for row in videos]
    assert [row["caption"] for row in gt_rows] == [row["name"] for row in videos]
    allowed = {"pan": set(sd.DIRECTIONS), "object": set(sd.DIRECTIONS), "zoom": {"in", "out"},
               "static": {"none"}, "real": {"none"}}
    for row in gt_rows:
        assert row["direction"] in allowed[row["motion"]]
        assert (row["source"] == "real") == (row["motion"] == "real")
        if row["motion"] == "real":
            assert row["speed_px_per_frame"] == ""
        elif row["motion"] == "static":
            assert float(row["speed_px_per_frame"]) == 0.0
        else:
            assert float(row["speed_px_per_frame"]) > 0.0
    synthetic_counts = {k: v for k, v in summary["counts"].items() if k != "real"}
    assert synthetic_counts == _kind_counts(N)
    assert summary["counts"]["real"] == _real_available()


def test_mix_for_64_clips() -> None:
    assert _kind_counts(64) == {"pan": 22, "object": 22, "zoom": 10, "static": 10}
    assert sum(_kind_counts(7).values()) == 7


# --------------------------------------------------------------------------- motion truth


def test_pan_clips_shift_as_ground_truth_says(
    gt_rows: list[dict[str, str]], decoded: dict[str, tuple[np.ndarray, float]]
) -> None:
    for row in _rows(gt_rows, "pan"):
        frames, _ = decoded[row["videoid"]]
        speed = float(row["speed_px_per_frame"])
        gap = _frame_gap(speed, FRAMES)
        measured = _phase_shift(frames[0], frames[gap])
        np.testing.assert_allclose(measured, _expected(row["direction"], gap * speed), atol=0.5,
                                   err_msg=f"clip {row['videoid']} {row['direction']} {speed}")


def _registration_shift(first: np.ndarray, second: np.ndarray, guess: np.ndarray) -> np.ndarray:
    """Sub-pixel (dx, dy) minimising the error of ``second`` vs ``first`` moved by it (grid search).

    Unlike phase correlation this is not biased by content entering at the borders:
    it compares the centre only, on lightly blurred images, on a 0.02 px grid.
    """
    a, b = (cv2.GaussianBlur(_gray(f), (0, 0), 1.0) for f in (first, second))
    margin = 16
    best = np.asarray(guess, dtype=np.float64)
    for radius, step in ((0.6, 0.1), (0.1, 0.02)):
        offsets = np.arange(-radius, radius + 1e-9, step)
        candidates = [best + (ox, oy) for ox in offsets for oy in offsets]
        errors = []
        for dx, dy in candidates:
            matrix = np.array([[1.0, 0.0, -dx], [0.0, 1.0, -dy]])  # predicted second(x) = first(x - d)
            predicted = cv2.warpAffine(a, matrix, a.shape[::-1], flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP)
            errors.append(((predicted - b)[margin:-margin, margin:-margin] ** 2).mean())
        best = candidates[int(np.argmin(errors))]
    return best


@pytest.mark.parametrize("direction", sd.DIRECTIONS)
@pytest.mark.parametrize("speed", [0.25, 1.75])
def test_render_pan_subpixel_speed(direction: str, speed: float) -> None:
    photo = sd.load_photos()["china"][0]
    frames = sd.render_clip(photo, "pan", direction, speed, 12, 96, np.random.default_rng(3))
    assert frames.shape == (12, 96, 96, 3) and frames.dtype == np.uint8
    gap = _frame_gap(speed, 12, 6.0)
    np.testing.assert_allclose(_phase_shift(frames[0], frames[gap]), _expected(direction, gap * speed), atol=0.5)
    for gap in (1, 2):  # sub-pixel steps are exact, not rounded to whole pixels
        expected = _expected(direction, gap * speed)
        measured = _registration_shift(frames[0], frames[gap], np.round(expected))
        np.testing.assert_allclose(measured, expected, atol=0.08)


@pytest.mark.parametrize("direction", sd.DIRECTIONS)
def test_render_object_moves_in_direction(direction: str) -> None:
    """A white object over flat grey: the composite's excess over grey is its alpha."""
    grey = np.full((200, 240, 3), 100, np.uint8)
    white = np.full((150, 150, 3), 250, np.uint8)
    speed = 1.25
    frames = sd.render_clip(grey, "object", direction, speed, 16, 64, np.random.default_rng(5), white)
    alpha = (frames[..., 0].astype(np.float64) - 100) / 150
    assert alpha.min() >= -0.01 and alpha.max() <= 1.01
    assert alpha[:, 0, :].max() < 0.01 and alpha[:, -1, :].max() < 0.01  # stays inside the frame
    assert alpha[:, :, 0].max() < 0.01 and alpha[:, :, -1].max() < 0.01
    ys, xs = np.mgrid[:64, :64]
    area = alpha.sum(axis=(1, 2))
    centroid = np.stack([(alpha * xs).sum(axis=(1, 2)), (alpha * ys).sum(axis=(1, 2))], axis=1) / area[:, None]
    np.testing.assert_allclose(area, area[0], rtol=1e-3)  # a rigid object
    for t in range(16):
        np.testing.assert_allclose(centroid[t] - centroid[0], _expected(direction, t * speed), atol=0.02)


def _median_moving_flow(first: np.ndarray, second: np.ndarray, min_px: float) -> np.ndarray:
    """Median Farneback flow (dx, dy) over the pixels that move by more than ``min_px``."""
    flow = cv2.calcOpticalFlowFarneback(_gray(first), _gray(second), None, 0.5, 3, 9, 5, 5, 1.1, 0)
    moving = np.linalg.norm(flow, axis=2) > min_px
    assert moving.mean() > 0.02, "no moving region found"
    return np.median(flow[moving], axis=0)


def test_object_clips_move_as_ground_truth_says(
    gt_rows: list[dict[str, str]], decoded: dict[str, tuple[np.ndarray, float]]
) -> None:
    """Optical flow of the decoded file: the moving region goes the GT way at about the GT speed."""
    for row in _rows(gt_rows, "object"):
        frames, _ = decoded[row["videoid"]]
        speed = float(row["speed_px_per_frame"])
        gap = _frame_gap(speed, FRAMES, 4.0)
        flow = _median_moving_flow(frames[0], frames[gap], 0.5 * gap * speed)
        np.testing.assert_allclose(flow, _expected(row["direction"], gap * speed), atol=0.45 * gap * speed,
                                   err_msg=f"clip {row['videoid']} {row['direction']} {speed}")
        changed = np.abs(frames[-1].astype(int) - frames[0].astype(int)).max(axis=2) > 0
        assert changed.mean() < 0.6, "only the object region should change"


def _yuv420p_roundtrip(frames: np.ndarray) -> np.ndarray:
    """(frames, height, width, 3) RGB after RGB -> yuv420p -> RGB, as the encoder/decoder see it."""
    out = []
    for frame in frames:
        yuv = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="yuv420p")
        out.append(yuv.reformat(format="rgb24").to_ndarray())
    return np.stack(out)


def test_decoded_clips_are_the_rendered_clips(
    gt_rows: list[dict[str, str]], decoded: dict[str, tuple[np.ndarray, float]]
) -> None:
    """Files hold exactly what render_spec renders: lossless x264, only the yuv420p conversion.

    With test_render_object_moves_in_direction this pins the object motion exactly.
    """
    photos = sd.load_photos()
    specs = sd.plan_clips(N, sorted(photos), SIZE, FRAMES, seed=0)
    rows = {row["videoid"]: row for row in gt_rows}
    for spec in specs:
        row = rows[str(spec.videoid)]
        assert (row["motion"], row["direction"], float(row["speed_px_per_frame"]), row["photo"]) == (
            spec.motion, spec.direction, spec.speed, spec.photo)
        rendered = sd.render_spec(spec, photos, SIZE, FRAMES, seed=0)
        assert np.array_equal(decoded[str(spec.videoid)][0], _yuv420p_roundtrip(rendered)), spec


def test_static_clips_are_exactly_static(
    gt_rows: list[dict[str, str]], decoded: dict[str, tuple[np.ndarray, float]]
) -> None:
    for row in _rows(gt_rows, "static"):
        frames, _ = decoded[row["videoid"]]
        assert (frames == frames[0]).all()


def test_zoom_clips_zoom_the_stated_way(
    gt_rows: list[dict[str, str]], decoded: dict[str, tuple[np.ndarray, float]]
) -> None:
    ys, xs = np.mgrid[:SIZE, :SIZE] - (SIZE - 1) / 2.0
    for row in _rows(gt_rows, "zoom"):
        frames, _ = decoded[row["videoid"]]
        gap = int(np.clip(round(np.log(1.08) / np.log1p(float(row["speed_px_per_frame"]) / 100)), 1, FRAMES - 1))
        flow = cv2.calcOpticalFlowFarneback(_gray(frames[0]), _gray(frames[gap]), None, 0.5, 3, 9, 5, 5, 1.1, 0)
        radial = (flow[..., 0] * xs + flow[..., 1] * ys).mean()
        assert (radial > 0) == (row["direction"] == "in"), row


def _zoom_error(first: np.ndarray, later: np.ndarray, factor: float) -> float:
    """Mean abs error of ``later`` vs ``first`` magnified by ``factor`` about the centre (inner half)."""
    size = first.shape[0]
    centre = (size - 1) / 2.0
    matrix = cv2.getRotationMatrix2D((centre, centre), 0.0, factor)
    predicted = cv2.warpAffine(first, matrix, (size, size), flags=cv2.INTER_CUBIC)
    inner = slice(size // 4, 3 * size // 4)
    return float(np.abs(predicted[inner, inner].astype(int) - later[inner, inner]).mean())


@pytest.mark.parametrize("direction", ["in", "out"])
def test_render_zoom_scale_per_frame(direction: str) -> None:
    """Frame t equals frame 0 magnified by (1 + p/100)^(+-t) about the centre, for the stated p."""
    photo = sd.load_photos()["astronaut"][0]
    percent, gap = 3.0, 7
    frames = sd.render_clip(photo, "zoom", direction, percent, 8, 96, np.random.default_rng(0))
    sign = 1 if direction == "in" else -1
    errors = {p: _zoom_error(frames[0], frames[gap], (1 + p / 100) ** (sign * gap))
              for p in (0.0, percent / 2, percent, percent * 1.5)}
    assert min(errors, key=errors.get) == percent, errors
    assert errors[percent] < errors[0.0] / 3


# --------------------------------------------------------------------------- captions


def test_captions_state_the_ground_truth_direction(gt_rows: list[dict[str, str]]) -> None:
    for row in gt_rows:
        if row["motion"] in ("pan", "object", "zoom", "static"):
            assert sd.caption_direction(row["caption"]) == row["direction"], row


@pytest.mark.parametrize("motion", ["pan", "object"])
@pytest.mark.parametrize("direction", sd.DIRECTIONS)
def test_make_caption_direction_words(motion: str, direction: str) -> None:
    rng = np.random.default_rng(0)
    camera_words = 0
    for speed in (0.5, 1.0, 2.0, 3.0, 4.0) * 8:
        caption = sd.make_caption("a red flower", motion, direction, speed, rng, object_content="a cat")
        assert "a red flower" in caption
        assert sd.caption_direction(caption) == direction, caption
        if "camera" in caption:
            camera_words += 1
            assert sd.OPPOSITE[direction] in caption.split(), caption  # the camera moves the other way
        else:
            assert direction in caption.split(), caption
    if motion == "pan":
        assert camera_words > 0, "pan captions should sometimes use camera wording"


def test_make_caption_zoom_and_static() -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        assert sd.caption_direction(sd.make_caption("a temple in china", "zoom", "in", 1.0, rng)) == "in"
        assert sd.caption_direction(sd.make_caption("a temple in china", "zoom", "out", 1.0, rng)) == "out"
        assert sd.caption_direction(sd.make_caption("a temple in china", "static", "none", 0.0, rng)) == "none"


def test_load_photos_are_colour_with_neutral_phrases() -> None:
    photos = sd.load_photos()
    assert len(photos) >= 6
    for name, (image, content) in photos.items():
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, name
        assert min(image.shape[:2]) >= 200, name
        assert sd.caption_direction(content) == "none", content
        assert "camera" not in content and "zoom" not in content


# --------------------------------------------------------------------------- determinism and CLI


def _snapshot(out: Path) -> tuple[str, str, list[np.ndarray]]:
    rows = _read_csv(out / "videos.csv")[1]
    frames = [_decode(out / row["contentUrl"])[0] for row in rows]
    return (out / "videos.csv").read_text(), (out / "ground_truth.csv").read_text(), frames


def test_same_seed_same_data_other_seed_differs(tmp_path: Path) -> None:
    kwargs = dict(n=6, size=SIZE, num_frames=8, fps=FPS, include_real=False, progress=False)
    first = _snapshot(Path(sd.generate(tmp_path / "a", seed=7, **kwargs)["out_dir"]))
    again = _snapshot(Path(sd.generate(tmp_path / "b", seed=7, **kwargs)["out_dir"]))
    other = _snapshot(Path(sd.generate(tmp_path / "c", seed=8, **kwargs)["out_dir"]))
    assert first[:2] == again[:2]
    assert all(np.array_equal(x, y) for x, y in zip(first[2], again[2]))
    assert first[1] != other[1]
    assert not all(np.array_equal(x, y) for x, y in zip(first[2], other[2]))


def test_photo_restriction(tmp_path: Path) -> None:
    summary = sd.generate(tmp_path / "d", n=6, size=SIZE, num_frames=8, include_real=False,
                          photos=["chelsea", "china"], progress=False)
    rows = _read_csv(Path(summary["ground_truth_csv"]))[1]
    assert {row["photo"] for row in rows} <= {"chelsea", "china"}
    specs = sd.plan_clips(40, ["chelsea", "china"], SIZE, 8, seed=0)
    assert {spec.object_photo for spec in specs if spec.motion == "object"} <= {"chelsea", "china"}
    with pytest.raises(ValueError, match="unknown photo"):
        sd.generate(tmp_path / "e", n=2, photos=["no_such_photo"], progress=False)


def test_refuses_non_empty_dir_unless_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("not ours")
    with pytest.raises(FileExistsError):
        sd.generate(out, n=2, size=SIZE, num_frames=4, include_real=False, progress=False)
    argv = ["--out", str(out), "--n", "3", "--size", str(SIZE), "--frames", "4", "--no-real", "--no-progress"]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert not (out / "videos.csv").exists()
    capsys.readouterr()
    assert main([*argv, "--overwrite"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("wrote 3 videos") and "\n" not in line
    assert len(_read_csv(out / "videos.csv")[1]) == 3
    assert (out / "keep.txt").read_text() == "not ours"


def test_the_video_writer_keeps_exact_frames_and_fps(tmp_path: Path) -> None:
    """model.media.export_video, the one writer (lossless, as the sample clips are written)."""
    frames = np.random.default_rng(0).integers(0, 255, (7, 48, 80, 3), dtype=np.uint8)
    path = tmp_path / "clip.mp4"
    export_video(frames, path, 12, crf=0)
    decoded, fps = _decode(path)
    assert decoded.shape == (7, 48, 80, 3) and fps == 12.0
    assert list(tmp_path.iterdir()) == [path]  # no partial file left behind
    with pytest.raises(ValueError):
        export_video(frames[:, :47], tmp_path / "odd.mp4", 12)


def test_missing_real_video_is_warned_and_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture) -> None:
    missing = sd.RealSource("ghost", "no-such-distribution", "ghost.mp4", "a ghost", ("data", "share/no-such"))
    carphone = next(source for source in sd.REAL_SOURCES if source.name == "carphone")
    monkeypatch.setattr(sample_data.dataset, "REAL_SOURCES", (missing, carphone))
    summary = sd.generate(tmp_path / "f", n=1, size=SIZE, num_frames=4, progress=False)
    assert "warning: real video ghost.mp4" in capsys.readouterr().err
    rows = _read_csv(Path(summary["ground_truth_csv"]))[1]
    expected_real = 1 if sd.find_real_video(carphone) else 0
    assert [row["source"] for row in rows] == ["synthetic"] + ["real"] * expected_real


def test_motion_speed_adverb_and_content_options(tmp_path: Path) -> None:
    """The controllability benchmark's data: pans only, its own speeds, no speed words,
    varied subjects; every caption still states the clip's true direction."""
    speeds = (0.6, 1.2, 2.4, 4.8)
    summary = sd.generate(tmp_path / "d", n=16, size=32, num_frames=6, include_real=False, progress=False,
                          photos=["china", "flower"], motions=["pan"], speeds=speeds, adverbs=False, content_variety=True)
    rows = _read_csv(Path(summary["ground_truth_csv"]))[1]
    assert summary["counts"]["pan"] == 16 and sum(summary["counts"].values()) == 16
    assert {float(r["speed_px_per_frame"]) for r in rows} == {s * 32 / 128 for s in speeds}
    assert {r["direction"] for r in rows} == set(sd.DIRECTIONS)
    for r in rows:
        assert sd.caption_direction(r["caption"]) == r["direction"]
        assert not any(re.search(rf"\b{w}\b", r["caption"]) for w in ("slowly", "quickly", "fast", "rapidly", "steadily", "gently"))
    subjects = {"pagoda" in r["caption"] or "dahlia" in r["caption"] for r in rows}
    assert subjects == {True, False}  # some captions name another subject
    with pytest.raises(ValueError, match="motions must be"):
        sd.generate(tmp_path / "e", n=2, motions=["spin"], progress=False)
    with pytest.raises(ValueError, match="speeds must be"):
        sd.generate(tmp_path / "f", n=2, speeds=[0.0], progress=False)
    with_adverbs = sd.make_caption("a cat", "pan", "left", 4.0, np.random.default_rng(3), 128)
    without = sd.make_caption("a cat", "pan", "left", 4.0, np.random.default_rng(3), 128, adverbs=False)
    assert without != with_adverbs and without == with_adverbs.replace(" very quickly", "").replace(" rapidly", "")


def test_wording_image_and_camera_name_the_direction_their_own_way() -> None:
    """``wording="image"``: the content's direction in varied phrasings, never camera words;
    ``"camera"``: camera words naming the opposite; both parse back to the image-space direction."""
    rng = np.random.default_rng(0)
    for direction in sd.DIRECTIONS:
        image = [sd.make_caption("a red car", "pan", direction, 1.0, rng, 32, adverbs=False, wording="image") for _ in range(40)]
        camera = [sd.make_caption("a red car", "pan", direction, 1.0, rng, 32, adverbs=False, wording="camera") for _ in range(10)]
        assert all("camera" not in c and sd.caption_direction(c) == direction for c in image), image
        assert len({c for c in image}) >= 12  # templates x phrasings vary
        assert any(p in c for c in image for p in sd.DIRECTION_PHRASES[direction] if p != direction)
        assert all("camera" in c and sd.caption_direction(c) == direction for c in camera), camera
    with pytest.raises(ValueError, match="wording must be one of mixed, image, camera"):
        sd.make_caption("a red car", "pan", "left", 1.0, rng, wording="sideways")


def test_generate_with_image_wording(tmp_path) -> None:
    sd.generate(tmp_path / "d", n=8, size=32, num_frames=4, include_real=False, motions=["pan"],
                wording="image", progress=False)
    with open(tmp_path / "d" / "ground_truth.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and all("camera" not in r["caption"] and sd.caption_direction(r["caption"]) == r["direction"] for r in rows)
