"""Rendering the synthetic clips: pans, zooms and moving cut-outs over a photo, at sub-pixel speeds."""

from __future__ import annotations

import math

import cv2
import numpy as np

from sample_data.captions import DIRECTION_VECTORS, DIRECTIONS, MOTIONS

SUBPIXEL_INTERPOLATION = cv2.INTER_LANCZOS4  # for sub-pixel moves; see _view


def _scaled(photo: np.ndarray, mag: float) -> np.ndarray:
    """The photo resized by ``mag`` (area averaging when shrinking, bilinear when enlarging)."""
    interp = cv2.INTER_AREA if mag < 1.0 else cv2.INTER_LINEAR
    return cv2.resize(photo, (0, 0), fx=mag, fy=mag, interpolation=interp)


def _view(scaled: np.ndarray, mag: float, cx: float, cy: float, size: int) -> np.ndarray:
    """A (size, size, 3) view of a photo pre-scaled by ``mag``, centred on photo point (cx, cy).

    Photo coordinates are pixel centres (pixel i covers [i - 0.5, i + 0.5]); the view
    is sampled with a windowed sinc (Lanczos-4), so (cx, cy) may be fractional: unlike
    bilinear sampling, whose blur depends on the fractional offset, it keeps the
    sharpness steady while the view moves by sub-pixel steps (no flicker).
    """
    half = (size - 1) / 2.0
    tx = (cx + 0.5) * mag - 0.5 - half
    ty = (cy + 0.5) * mag - 0.5 - half
    matrix = np.array([[1.0, 0.0, tx], [0.0, 1.0, ty]], dtype=np.float64)
    return cv2.warpAffine(
        scaled, matrix, (size, size),
        flags=SUBPIXEL_INTERPOLATION | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT_101,
    )


def _centre_range(extent: int, mag: float, size: int) -> tuple[float, float]:
    """Range of view centres along one photo axis that keep a (size / mag) view inside."""
    half = size / (2.0 * mag)
    return half, extent - 1 - half


def random_view(photo: np.ndarray, size: int, rng: np.random.Generator, zoom: tuple[float, float]) -> np.ndarray:
    """A (size, size, 3) still view: random magnification in ``zoom`` x fit-to-photo, random centre."""
    height, width = photo.shape[:2]
    mag = size / (min(height, width) - 2) * rng.uniform(*zoom)
    cx = rng.uniform(*_centre_range(width, mag, size))
    cy = rng.uniform(*_centre_range(height, mag, size))
    return _view(_scaled(photo, mag), mag, cx, cy, size)


def _render_static(photo: np.ndarray, num_frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """(frames, size, size, 3): the same still view repeated."""
    frame = random_view(photo, size, rng, (1.0, 1.5))
    return np.repeat(frame[None], num_frames, axis=0)


def _render_pan(photo: np.ndarray, direction: str, speed: float, num_frames: int, size: int,
                rng: np.random.Generator) -> np.ndarray:
    """(frames, size, size, 3): content moves ``speed`` px/frame towards ``direction``."""
    height, width = photo.shape[:2]
    vx, vy = DIRECTION_VECTORS[direction]
    travel = speed * (num_frames - 1)  # output pixels
    along, across = (width, height) if vx else (height, width)
    mag = max((size + travel) / (along - 2), size / (across - 2)) * rng.uniform(1.0, 1.15)
    low, high = _centre_range(along, mag, size)
    start = rng.uniform(low, high - travel / mag)
    if vx + vy > 0:  # content moves right/down: the view moves left/up over the photo
        start += travel / mag
    lo_x, hi_x = _centre_range(across, mag, size)
    other = rng.uniform(lo_x, hi_x)
    scaled = _scaled(photo, mag)
    frames = []
    for t in range(num_frames):
        pos = start - (vx + vy) * speed * t / mag
        cx, cy = (pos, other) if vx else (other, pos)
        frames.append(_view(scaled, mag, cx, cy, size))
    return np.stack(frames)


def _zoom_magnifications(base: float, direction: str, percent: float, num_frames: int) -> np.ndarray:
    """Per-frame magnification: multiplied (``in``) or divided (``out``) by 1 + percent/100."""
    steps = np.arange(num_frames, dtype=np.float64)
    if direction == "out":
        steps = steps[::-1]
    return base * (1.0 + percent / 100.0) ** steps


def _render_zoom(photo: np.ndarray, direction: str, percent: float, num_frames: int, size: int,
                 rng: np.random.Generator) -> np.ndarray:
    """(frames, size, size, 3): centred zoom with a constant per-frame scale factor."""
    del rng  # the zoom is fully determined by the photo; kept for a uniform signature
    height, width = photo.shape[:2]
    side = min(height, width) - 2
    top, left = (height - side) // 2, (width - side) // 2
    square = photo[top:top + side, left:left + side]  # only the part any frame can see
    mags = _zoom_magnifications(size / side, direction, percent, num_frames)
    reduce = min(1.0, 2.0 * float(mags.max()))  # shrink once; every frame still shrinks it further
    if reduce < 1.0:
        square = _scaled(square, reduce)  # cv2 maps X -> (X + 0.5) * reduce - 0.5 exactly
    centre = (side / 2.0) * reduce - 0.5
    return np.stack([_view(_scaled(square, mag / reduce), mag / reduce, centre, centre, size) for mag in mags])


def _rounded_square_alpha(xs: np.ndarray, ys: np.ndarray, x: float, y: float, side: int) -> np.ndarray:
    """(len(ys), len(xs)) float32 anti-aliased alpha of a rounded square with top-left (x, y).

    ``xs``/``ys`` are the pixel-centre coordinates sampled. Computed analytically from the
    signed distance, so a sub-pixel position moves the edge exactly, with no ringing.
    """
    radius = side * 0.15
    centre = (side - 1) / 2.0
    qx = np.abs(xs.astype(np.float32) - (x + centre))[None, :] - (side / 2.0 - radius)
    qy = np.abs(ys.astype(np.float32) - (y + centre))[:, None] - (side / 2.0 - radius)
    outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
    distance = outside + np.minimum(np.maximum(qx, qy), 0) - radius
    return np.clip(0.5 - distance, 0.0, 1.0).astype(np.float32)


def object_side(speed: float, num_frames: int, size: int) -> int:
    """Side in pixels of the moving object, shrunk from size/3 so it stays in frame; 0 if impossible."""
    room = size - 2 - math.ceil(speed * (num_frames - 1))
    side = min(size // 3, room)
    return side if side >= max(8, size // 6) else 0


def _object_track(side: int, direction: str, speed: float, num_frames: int, size: int,
                  rng: np.random.Generator) -> np.ndarray:
    """(frames, 2) float top-left (x, y) of the object; it stays inside the frame throughout."""
    vx, vy = DIRECTION_VECTORS[direction]
    travel = speed * (num_frames - 1)
    slack = size - 2 - side - travel
    start_along = 1 + rng.uniform(0, slack) + (travel if vx + vy < 0 else 0.0)
    across = rng.uniform(1, size - 1 - side)
    t = np.arange(num_frames, dtype=np.float64)
    along = start_along + (vx + vy) * speed * t
    xs, ys = (along, np.full_like(t, across)) if vx else (np.full_like(t, across), along)
    return np.stack([xs, ys], axis=1)


def _render_object(photo: np.ndarray, object_photo: np.ndarray, direction: str, speed: float,
                   num_frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """(frames, size, size, 3): a rounded-square cut-out gliding over a still background."""
    side = object_side(speed, num_frames, size)
    if not side:
        raise ValueError(f"object speed {speed} px/frame cannot stay in a {size} px frame for {num_frames} frames")
    pad = 4  # texture beyond the edge, so the sinc never reads the border
    background = random_view(photo, size, rng, (1.0, 1.5)).astype(np.float32)
    patch = random_view(object_photo, side + 2 * pad, rng, (1.5, 3.0))
    frames = []
    for x, y in _object_track(side, direction, speed, num_frames, size, rng):
        frames.append(_composite(background, patch, pad, x, y, side))
    return np.stack(frames)


def _composite(background: np.ndarray, patch: np.ndarray, pad: int, x: float, y: float, side: int) -> np.ndarray:
    """Paste ``patch`` (its square ``pad`` px in) with top-left of the square at (x, y); (H, W, 3) uint8.

    Only the patch's box is resampled: shifted by the fractional part of (x, y), then
    placed at the integer part, clipped to the frame.
    """
    height, width = background.shape[:2]
    ix, iy = math.floor(x), math.floor(y)
    box = patch.shape[0]
    shift = np.array([[1.0, 0.0, x - ix], [0.0, 1.0, y - iy]])  # local(u) = patch(u - fraction)
    local = cv2.warpAffine(patch, shift, (box, box), flags=SUBPIXEL_INTERPOLATION,
                           borderMode=cv2.BORDER_REFLECT_101).astype(np.float32)
    x0, y0 = ix - pad, iy - pad
    left, top, right, bottom = max(x0, 0), max(y0, 0), min(x0 + box, width), min(y0 + box, height)
    alpha = _rounded_square_alpha(np.arange(left, right), np.arange(top, bottom), x, y, side)[..., None]
    frame = background.copy()
    texture = local[top - y0:bottom - y0, left - x0:right - x0]
    frame[top:bottom, left:right] = texture * alpha + background[top:bottom, left:right] * (1.0 - alpha)
    return np.clip(np.rint(frame), 0, 255).astype(np.uint8)


def render_clip(photo: np.ndarray, motion: str, direction: str, speed: float, num_frames: int,
                size: int, rng: np.random.Generator, object_photo: np.ndarray | None = None) -> np.ndarray:
    """Render a synthetic clip as (frames, height=size, width=size, channels=3) uint8 RGB.

    ``photo`` is (height, width, 3) uint8 RGB. ``direction`` is the image-space direction
    of the content (see the module docstring); ``speed`` is px/frame for pan/object and
    percent per frame for zoom. ``object_photo`` supplies the moving cut-out of an
    ``object`` clip (default: another crop of ``photo``). ``rng`` picks crops and positions.
    """
    if speed < 0 or num_frames < 1 or size < 2:
        raise ValueError(f"need speed >= 0, num_frames >= 1, size >= 2; got {speed}, {num_frames}, {size}")
    if motion == "static":
        return _render_static(photo, num_frames, size, rng)
    if motion == "zoom":
        if direction not in ("in", "out"):
            raise ValueError(f"zoom direction must be in/out, got {direction!r}")
        return _render_zoom(photo, direction, speed, num_frames, size, rng)
    if direction not in DIRECTIONS:
        raise ValueError(f"{motion} direction must be one of {DIRECTIONS}, got {direction!r}")
    if motion == "pan":
        return _render_pan(photo, direction, speed, num_frames, size, rng)
    if motion == "object":
        other = photo if object_photo is None else object_photo
        return _render_object(photo, other, direction, speed, num_frames, size, rng)
    raise ValueError(f"motion must be one of {MOTIONS}, got {motion!r}")


