"""The ground-truth convention and the caption grammar: what a sample clip's caption says and
how :func:`caption_direction` reads it back (evaluation imports this module).

``direction`` is always the IMAGE-SPACE direction in which content moves in the frame, i.e.
where an optical-flow field points (x to the right, y downwards): ``left`` means flow with
negative x. For a ``pan`` that is the opposite of the camera's direction: a camera panning right
makes the content move ``left``. Captions say the motion either in image-space words (``the view
slides left``), which equal ``direction``, or in camera words (``the camera pans right``), which
are the opposite.
"""

from __future__ import annotations

import re

import numpy as np

MOTIONS = ("pan", "object", "zoom", "static")
DIRECTIONS = ("left", "right", "up", "down")
# content displacement per frame in image space (x right, y down)
DIRECTION_VECTORS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up", "in": "out", "out": "in"}


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


