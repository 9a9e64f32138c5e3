"""Planning a sample dataset: which clips (kind, photo, direction, speed), balanced and seeded."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from sample_data.captions import DIRECTIONS, MOTIONS
from sample_data.render import object_side

SPEEDS_AT_128 = (0.5, 1.0, 2.0, 3.0, 4.0)  # px/frame at size 128
ZOOM_PERCENTS = (0.5, 1.0, 2.0, 3.0)  # magnification change per frame, percent
MAX_TOTAL_ZOOM = 4.0  # a zoom clip never magnifies more than this overall
MIX = {"pan": 0.35, "object": 0.35, "zoom": 0.15, "static": 0.15}
CLIPS_PER_PAGE = 16
FIRST_SYNTHETIC_ID = 1_000_000


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


