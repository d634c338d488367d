"""Reading image files as 8-bit RGB, whatever their mode.

PIL's own `convert("RGB")` clips 16-bit grey (`I;16`, `I`) at 255, so such images would load
almost all white; here they are scaled from 0..65535 to 0..255. Transparent images (RGBA, LA,
palette with transparency) are composited over black: a pixel's colour is weighted by its alpha.
"""
import numpy as np
from PIL import Image, UnidentifiedImageError

SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def to_rgb_array(pil):
    """A PIL image -> uint8 array [H, W, 3]."""
    if pil.mode in SIXTEEN_BIT_MODES:  # 16-bit grey (mode I holds 16-bit PNGs on some Pillow versions)
        grey = np.asarray(pil, dtype=np.float64)  # [H, W]
        grey = np.clip(np.round(grey / 257), 0, 255).astype(np.uint8)  # 65535 / 257 = 255
        return np.repeat(grey[:, :, None], 3, axis=2)
    if pil.mode == "F":
        raise ValueError("floating-point images (mode F) have no defined range; convert them to 8 or 16 bit")
    if pil.mode == "P" and "transparency" in pil.info:
        pil = pil.convert("RGBA")
    if pil.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = np.asarray(pil.convert("RGBA"), dtype=np.float64)  # [H, W, 4]
        rgb = rgba[:, :, :3] * (rgba[:, :, 3:] / 255)
        return np.round(rgb).astype(np.uint8)
    return np.asarray(pil.convert("RGB"))


def load_rgb(path):
    """An image file -> uint8 array [H, W, 3]; ValueError naming the file when it is not an image."""
    try:
        with Image.open(path) as pil:
            return to_rgb_array(pil)
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"{path!r} is not a readable image: {error}") from error
    except ValueError as error:
        raise ValueError(f"{path!r}: {error}") from error


def image_size(path):
    """(height, width) from the file's header (the pixels are not decoded)."""
    with Image.open(path) as pil:
        return pil.height, pil.width
