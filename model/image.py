"""Image geometry shared by preprocessing, training and serving.

Every image or video frame that reaches the model goes through :func:`center_crop_resize`,
so a photo at serving time is framed exactly as training clips were.
"""

from __future__ import annotations

import cv2
import numpy as np


def center_crop_box(height: int, width: int, out_height: int, out_width: int) -> tuple[int, int, int, int]:
    """The largest centred box of aspect ``out_width / out_height``: (top, left, box_h, box_w)."""
    target = out_width / out_height
    if width / height > target:  # too wide: crop the sides
        box_h, box_w = height, max(1, round(height * target))
    else:  # too tall: crop top and bottom
        box_h, box_w = max(1, round(width / target)), width
    return (height - box_h) // 2, (width - box_w) // 2, box_h, box_w


def center_crop_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Centre-crop to the target aspect, then resize.

    ``image``: uint8 (H, W, 3) -> uint8 (height, width, 3). Area interpolation when shrinking
    (no aliasing), bicubic when enlarging.
    """
    if image.ndim != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image: expected a non-empty (height, width, channels) array, got shape {image.shape}")
    top, left, box_h, box_w = center_crop_box(image.shape[0], image.shape[1], height, width)
    crop = image[top : top + box_h, left : left + box_w]
    if (box_h, box_w) == (height, width):
        return np.ascontiguousarray(crop)
    shrink = box_h >= height and box_w >= width
    return cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


def to_rgb(image, background: int = 255) -> np.ndarray:
    """A PIL image or a uint8 array as uint8 (H, W, 3) RGB.

    Greyscale (H, W) / (H, W, 1) is repeated to 3 channels; palette and other PIL modes are
    converted; an alpha channel (RGBA, LA, palette transparency) is composited over a flat
    ``background`` (white by default), the same way for PIL images and arrays.
    """
    if hasattr(image, "mode") and hasattr(image, "convert"):  # PIL.Image
        if image.width == 0 or image.height == 0:
            raise ValueError(f"image: is empty ({image.width}x{image.height})")
        has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info)
        image = np.asarray(image.convert("RGBA" if has_alpha else "RGB"))
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"image: expected uint8 pixels, got {array.dtype}")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise ValueError(f"image: expected (height, width[, 1|3|4]) pixels, got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"image: is empty (shape {array.shape})")
    if array.shape[-1] == 4:
        alpha = array[..., 3:].astype(np.float32) / 255.0
        array = np.rint(array[..., :3] * alpha + background * (1.0 - alpha)).astype(np.uint8)
    return np.ascontiguousarray(array)
