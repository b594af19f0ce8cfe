"""Colour maps for the pictures predict writes: Turbo for depth, the PASCAL VOC palette for class labels, and an
overlay of colours on an image. Data and numpy only."""
from __future__ import annotations

import numpy as np

OVERLAY_ALPHA = 0.5  # weight of the colours over the image


def _turbo() -> np.ndarray:
    """Google's Turbo colour map (polynomial approximation by its author), 256 x 3 uint8: blue near, red far."""
    x = np.linspace(0.0, 1.0, 256)
    powers = np.stack([x ** k for k in range(6)], 1)
    coeffs = np.array([[0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943],
                       [0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604],
                       [0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973]])
    return np.clip(np.rint(powers @ coeffs.T * 255), 0, 255).astype(np.uint8)


def _voc_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour of each class index (bits of the index spread over R, G, B): n x 3 uint8."""
    index = np.arange(n)
    palette = np.zeros((n, 3), np.int64)
    for bit in range(8):
        for channel in range(3):
            palette[:, channel] |= ((index >> (3 * bit + channel)) & 1) << (7 - bit)
    return palette.astype(np.uint8)


TURBO, PALETTE = _turbo(), _voc_palette()


def label_colors(labels: np.ndarray) -> np.ndarray:
    return PALETTE[labels.astype(np.int64) % len(PALETTE)]


def overlay(image: np.ndarray, colors: np.ndarray) -> np.ndarray:
    return np.rint(image * (1 - OVERLAY_ALPHA) + colors * OVERLAY_ALPHA).astype(np.uint8)
