"""``python -m sample_data``: write a sample dataset (see the package docstring)."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from sample_data.captions import MOTIONS, WORDINGS
from sample_data.dataset import SYNTHETIC_CRF, _fmt, generate
from sample_data.plan import SPEEDS_AT_128


def _summary_line(summary: dict) -> str:
    counts = ", ".join(f"{kind} {count}" for kind, count in summary["counts"].items())
    return (f"wrote {summary['num_videos']} videos ({counts}) to {summary['out_dir']} "
            f"in {summary['seconds']:.1f} s [{summary['codec']}]")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sample_data", description=__doc__.split("\n")[0])
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
