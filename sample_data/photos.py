"""Real colour photos that ship in PyPI wheels (scikit-image, scikit-learn, matplotlib), loaded offline."""

from __future__ import annotations

import functools
import sys

import numpy as np

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


