"""Images in and out, the one module that reads them: files as RGB uint8 with their size checked from the header
before decoding, label and 16-bit depth maps as stored, PNG writing, and the checks every path that takes an image
applies (predict, the engines' callers, the data sets).

The pixel cap is the artifact schema's `max_pixels` (the C++ library reads the same number; a test holds them
equal); sides below MIN_SIDE hold too little to predict from.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from mp_deploy.errors import DataError
from mp_deploy.files import open_regular

MAX_PIXELS = 33_554_432  # per image, checked before any conversion or decode (Python and C++ alike)
MIN_SIDE = 32
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class NonFiniteImage(ValueError):
    """A float image holding NaN or infinity."""


def read_rgb(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """An image file as RGB uint8 (H, W, 3), the one image reader of the project: the pixel count checked from
    the header before decoding (default: the engines' MAX_PIXELS); EXIF orientation applied; gray, palette,
    CMYK converted, alpha dropped; 16- and 32-bit images scaled to 8 bits; a float image holding NaN or infinity
    refused. Only a regular file is opened (mp_deploy.files.open_regular). DataError names the file and cause."""
    max_pixels = MAX_PIXELS if max_pixels is None else max_pixels
    try:
        with open_regular(path) as f, Image.open(f) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise DataError(f"{path}: {w}x{h} is {w * h} pixels, more than the {max_pixels} an image may have")
            return to_rgb8(ImageOps.exif_transpose(im))
    except Image.DecompressionBombError as e:  # a header far beyond Pillow's own limit
        raise DataError(f"{path}: cannot read image ({e})") from None
    except NonFiniteImage as e:
        raise DataError(f"{path}: cannot use image ({e})") from None
    except UnidentifiedImageError:
        raise DataError(f"{path}: cannot read image (not an image file, or a format Pillow cannot read)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:  # what PIL raises for truncated or corrupt data
        raise DataError(f"{path}: cannot read image (truncated or corrupt: {e})") from None


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of an image file as read_rgb would return it (EXIF rotations applied), from its header
    alone: nothing is decoded. DataError as read_rgb's."""
    try:
        with open_regular(path) as f, Image.open(f) as im:
            w, h = im.size
            if im.getexif().get(0x0112) in (5, 6, 7, 8):  # orientations that swap the sides
                w, h = h, w
            return h, w
    except Image.DecompressionBombError as e:
        raise DataError(f"{path}: cannot read image ({e})") from None
    except UnidentifiedImageError:
        raise DataError(f"{path}: cannot read image (not an image file, or a format Pillow cannot read)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise DataError(f"{path}: cannot read image (truncated or corrupt: {e})") from None


def to_rgb8(im: Image.Image) -> np.ndarray:
    """A decoded PIL image of any mode as RGB uint8: 16-bit gray divided by 257 (65535 -> 255), 32-bit integer
    gray likewise when it goes past 255, float gray clipped to [0, 255] (or scaled from [0, 1])."""
    if im.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        gray = np.asarray(im).astype(np.float64)
        if not np.isfinite(gray).all():  # a float TIFF may hold them
            raise NonFiniteImage(f"{int((~np.isfinite(gray)).sum())} pixels are NaN or infinite, which no image "
                                 "value means")
        if im.mode.startswith("I;16") or (im.mode == "I" and gray.max(initial=0) > 255):
            gray = gray / 257.0
        elif im.mode == "F" and gray.max(initial=0) <= 1.0:
            gray = gray * 255.0
        gray = np.clip(np.rint(gray), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    return np.asarray(im.convert("RGB"))


def read_map(path: str | Path) -> np.ndarray:
    """A one-channel PNG (label map, 16-bit depth) with its stored values unchanged: uint8, uint16 or int32.
    Palette PNGs give their indices, as mmseg's pillow loader does."""
    try:
        with open_regular(path) as f, Image.open(f) as im:
            if im.mode not in ("L", "P", "I", "I;16", "I;16L", "I;16B"):
                raise DataError(f"{path}: expected a one-channel PNG, got mode {im.mode}")
            arr = np.asarray(im)
    except (OSError, ValueError, SyntaxError) as e:
        raise DataError(f"{path}: cannot read map ({e})") from None
    if arr.dtype.byteorder == ">":  # 16-bit big-endian mode
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def write_png(path: str | Path, array: np.ndarray) -> None:
    """Write uint8 (H, W) / (H, W, 3) or uint16 (H, W) as PNG (fixtures, custom-format converters)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(array)).save(path)




def to_image_tensor(rgb: np.ndarray) -> torch.Tensor:
    """RGB uint8 (H, W, 3) -> float32 (3, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float().div_(255.0)


def check_rgb(rgb, where: str) -> np.ndarray:
    """An RGB uint8 (H, W, 3) array of a size predict takes, else DataError naming `where`."""
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        what = f"{rgb.dtype} {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise DataError(f"{where}: expected an RGB uint8 (H, W, 3) array, got {what}")
    h, w = rgb.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise DataError(f"{where}: {w}x{h} is too small (sides of at least {MIN_SIDE} pixels)")
    if h * w > MAX_PIXELS:
        raise DataError(f"{where}: {w}x{h} is more than the {MAX_PIXELS} pixels an image may have")
    return rgb


def read_image(path) -> np.ndarray:
    """An image file as RGB uint8, refused with DataError when unreadable, too small or too large."""
    return check_rgb(read_rgb(path), str(path))
