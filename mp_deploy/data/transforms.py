"""Image operations shared by the augmentations, the readers and the inference protocols.

Conventions follow OpenCV, which the reference's libraries (albumentations, mmcv, mmpose) use underneath:
a pixel's integer coordinate is its centre; bilinear resizing maps half-pixel centres (align_corners=False,
no antialiasing); nearest resizing takes src = floor(dst * scale); HSV for uint8 has hue in [0, 180).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


# ------------------------------------------------------------------ resizing

def rescale_size(h: int, w: int, scale: tuple[int, int]) -> tuple[int, int]:
    """mmcv's keep-ratio rule: the largest size with long edge <= max(scale) and short edge <= min(scale);
    returns (new_h, new_w), each rounded half up."""
    factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
    return int(h * factor + 0.5), int(w * factor + 0.5)


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an (H, W, C) uint8 or float image to size (h, w); uint8 is rounded back."""
    if image.shape[:2] == tuple(size):
        return image
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)[None]
    y = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)[0].permute(1, 2, 0).numpy()
    if image.dtype == np.uint8:
        return np.clip(np.rint(y), 0, 255).astype(np.uint8)
    return y.astype(image.dtype)


def resize_nearest(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest resize of an (H, W) map (labels, depth) to size (h, w): src = floor(dst * in / out)."""
    if array.shape[:2] == tuple(size):
        return array
    rows = np.minimum((np.arange(size[0]) * (array.shape[0] / size[0])).astype(np.int64), array.shape[0] - 1)
    cols = np.minimum((np.arange(size[1]) * (array.shape[1] / size[1])).astype(np.int64), array.shape[1] - 1)
    return array[rows[:, None], cols[None, :]]


def resize_tensor(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (align_corners=False) of (B, C, H, W); a no-op at the same size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def pad_to(array: np.ndarray, size: tuple[int, int], value) -> np.ndarray:
    """Pad at the bottom and right up to size (h, w) (mmcv's Pad with a size)."""
    ph, pw = max(size[0] - array.shape[0], 0), max(size[1] - array.shape[1], 0)
    if not ph and not pw:
        return array
    widths = [(0, ph), (0, pw)] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, widths, constant_values=value)


# ------------------------------------------------------------------ colour

def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB -> uint8 HSV as OpenCV's COLOR_RGB2HSV: H = degrees / 2 in [0, 180), S and V in [0, 255]."""
    x = rgb.astype(np.float32)
    v = x.max(axis=-1)
    diff = v - x.min(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(v > 0, diff * 255.0 / v, 0.0)
        r, g, b = x[..., 0], x[..., 1], x[..., 2]
        h = np.where(v == r, (g - b) / diff, np.where(v == g, 2.0 + (b - r) / diff, 4.0 + (r - g) / diff)) * 60.0
    h = np.where(diff > 0, h, 0.0)
    h = np.where(h < 0, h + 360.0, h)
    out = np.stack([np.rint(h / 2.0) % 180, np.rint(s), v], axis=-1)
    return out.astype(np.uint8)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """uint8 HSV (OpenCV ranges) -> uint8 RGB as COLOR_HSV2RGB."""
    h = hsv[..., 0].astype(np.float32) * (6.0 / 180.0)
    s = hsv[..., 1].astype(np.float32) / 255.0
    v = hsv[..., 2].astype(np.float32)
    sector = np.floor(h)
    f = h - sector
    sector = sector.astype(np.int64) % 6
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = np.stack([np.stack(c, axis=-1) for c in
                      ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))])  # (6, ..., 3)
    rgb = np.take_along_axis(table, sector[None, ..., None], axis=0)[0]
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def lut(image: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Apply a 256-entry lookup table to a uint8 image (cv2.LUT)."""
    return table.astype(np.uint8)[image]


# ------------------------------------------------------------------ affine warps (top-down pose)

def affine_matrix(center, size, rotation: float, out_size) -> np.ndarray:
    """mmpose's get_affine_transform without shift: the 2x3 matrix taking image pixels to the output, which
    maps `center` to the output's centre, the box width `size[0]` (pixels) to the output width `out_size[0]`
    and turns the box by `rotation` degrees (counter-clockwise in the image). out_size is (w, h)."""
    s = out_size[0] / size[0]
    r = math.radians(rotation)
    cos, sin = math.cos(r) * s, math.sin(r) * s
    cx, cy = center
    dx, dy = out_size[0] * 0.5, out_size[1] * 0.5
    # dst = s * R(-r) (src - c) + d, with the image y axis pointing down
    return np.array([[cos, sin, dx - cos * cx - sin * cy],
                     [-sin, cos, dy + sin * cx - cos * cy]], dtype=np.float64)


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    full = np.vstack([matrix, [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def apply_affine(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(N, 2) points through a 2x3 matrix."""
    return points @ matrix[:, :2].T + matrix[:, 2]


def warp_affine(image: torch.Tensor, matrices, out_size) -> torch.Tensor:
    """cv2.warpAffine (bilinear, zero border) of a float image (C, H, W) by each 2x3 matrix (image -> output),
    out_size (w, h): returns (N, C, h, w). Works on any device."""
    mats = torch.as_tensor(np.asarray(matrices, dtype=np.float64).reshape(-1, 2, 3))
    inv = torch.stack([torch.as_tensor(invert_affine(m.numpy())) for m in mats])  # output -> image
    w, h = out_size
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                            indexing="ij")
    grid = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1).reshape(1, -1, 3)
    src = grid @ inv.transpose(1, 2)  # (N, h*w, 2) source pixel coordinates
    H, W = image.shape[-2:]
    # align_corners=True puts pixel i at -1 + 2i/(W-1): integer coordinates are pixel centres, as in OpenCV
    norm = torch.stack([src[..., 0] * (2.0 / max(W - 1, 1)) - 1, src[..., 1] * (2.0 / max(H - 1, 1)) - 1], -1)
    norm = norm.reshape(-1, h, w, 2).to(device=image.device, dtype=image.dtype)
    batch = image[None].expand(norm.shape[0], *image.shape)
    return F.grid_sample(batch, norm, mode="bilinear", padding_mode="zeros", align_corners=True)
