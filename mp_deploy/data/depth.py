"""Depth data: the reference's training augmentation and the NYUv2, KITTI Eigen and custom-folder readers.

Samples: `image` float32 (3, H, W) in [0, 1], `depth` float32 (1, H, W) in metres with 0 = invalid, `file`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mp_deploy.data.base import Manifest, PairedFiles, is_finite_number, image_files, paired_files, read_list, read_manifest
from mp_deploy.images import IMAGE_SUFFIXES, to_image_tensor
from mp_deploy.data.transforms import hsv_to_rgb, lut, rgb_to_hsv
from mp_deploy.errors import DataError, UsageError


@dataclass(frozen=True)
class DepthAugment:
    """The reference's training augmentation (depth/dataset/base_dataset.py): albumentations' HorizontalFlip,
    RandomCrop, RandomBrightnessContrast, RandomGamma and HueSaturationValue at their default settings, after a
    CutDepth-style strip on every `strip_every`-th sample."""

    crop: tuple[int, int]  # (h, w)
    flip_prob: float = 0.5
    brightness_limit: float = 0.2
    contrast_limit: float = 0.2
    brightness_contrast_prob: float = 0.5
    gamma_limit: tuple[float, float] = (80, 120)  # percent
    gamma_prob: float = 0.5
    hue_shift_limit: float = 20
    sat_shift_limit: float = 30
    val_shift_limit: float = 20
    hsv_prob: float = 0.5
    strip_every: int = 4
    strip_width: float = 0.75  # the reference's p


def depth_strip(image: np.ndarray, raw_depth: np.ndarray, rng: np.random.Generator, p: float) -> np.ndarray:
    """The reference's strip: a full-height band of the RGB from column int(alpha W), int(max((W - alpha W)
    beta p, 1)) wide, overwritten in all three channels by the raw depth values (PNG units, before metres). The
    reference assigns the float depth into the uint8 image, which keeps the low byte of the integer part; so
    does this."""
    w_img = image.shape[1]
    alpha, beta = rng.random(), rng.random()
    left = int(alpha * w_img)
    width = int(max((w_img - alpha * w_img) * beta * p, 1))
    band = raw_depth[:, left:left + width].astype(np.int64) & 255
    image = image.copy()
    image[:, left:left + width, :] = band[..., None].astype(np.uint8)
    return image


def augment_depth(image: np.ndarray, raw_depth: np.ndarray, rng: np.random.Generator, aug: DepthAugment,
                  strip: bool) -> tuple[np.ndarray, np.ndarray]:
    """uint8 RGB (H, W, 3) and raw depth (H, W) -> the augmented pair cropped to `aug.crop`."""
    if strip:
        image = depth_strip(image, raw_depth, rng, aug.strip_width)
    if rng.random() < aug.flip_prob:
        image, raw_depth = image[:, ::-1], raw_depth[:, ::-1]
    ch, cw = aug.crop
    h, w = raw_depth.shape
    if h < ch or w < cw:
        raise DataError(f"image {w}x{h} is smaller than the training crop {cw}x{ch}")
    y = int((h - ch) * rng.random())  # albumentations' RandomCrop: a uniform start fraction per axis
    x = int((w - cw) * rng.random())
    image = np.ascontiguousarray(image[y:y + ch, x:x + cw])
    raw_depth = np.ascontiguousarray(raw_depth[y:y + ch, x:x + cw])
    if rng.random() < aug.brightness_contrast_prob:
        alpha = 1.0 + rng.uniform(-aug.contrast_limit, aug.contrast_limit)
        beta = rng.uniform(-aug.brightness_limit, aug.brightness_limit)
        image = lut(image, np.clip(np.arange(256, dtype=np.float32) * alpha + beta * 255.0, 0, 255))
    if rng.random() < aug.gamma_prob:
        gamma = rng.uniform(*aug.gamma_limit) / 100.0
        image = lut(image, (np.arange(256, dtype=np.float64) / 255.0) ** gamma * 255.0)
    if rng.random() < aug.hsv_prob:
        image = shift_hsv(image, rng.uniform(-aug.hue_shift_limit, aug.hue_shift_limit),
                          rng.uniform(-aug.sat_shift_limit, aug.sat_shift_limit),
                          rng.uniform(-aug.val_shift_limit, aug.val_shift_limit))
    return image, raw_depth


def shift_hsv(image: np.ndarray, hue: float, sat: float, val: float) -> np.ndarray:
    """albumentations' uint8 HueSaturationValue: hue shifted modulo 180, saturation and value clipped."""
    hsv = rgb_to_hsv(image)
    base = np.arange(256, dtype=np.float32)
    hsv[..., 0] = lut(hsv[..., 0], np.mod(base + hue, 180))
    hsv[..., 1] = lut(hsv[..., 1], np.clip(base + sat, 0, 255))
    hsv[..., 2] = lut(hsv[..., 2], np.clip(base + val, 0, 255))
    return hsv_to_rgb(hsv)


def kb_crop(array: np.ndarray, height: int = 352, width: int = 1216) -> np.ndarray:
    """KITTI's KB crop: the bottom `height` rows and the centred `width` columns."""
    h, w = array.shape[:2]
    top, left = int(h - height), int((w - width) / 2)
    if top < 0 or left < 0:
        raise DataError(f"image {w}x{h} is smaller than the KB crop {width}x{height}")
    return array[top:top + height, left:left + width]


class DepthFiles(PairedFiles):
    """Pairs of (RGB file, depth PNG); depth metres = PNG value / `depth_scale`, 0 = invalid.

    `augment` set: the reference's training augmentation (crop, flip, colour, strip); otherwise the full image.
    `eval_crop`, `min_depth`, `max_depth` describe how the metrics mask this data (mp_deploy.metrics);
    `protocol` names its inference protocol (mp_deploy.protocols.DEPTH_PROTOCOLS).
    """

    def __init__(self, pairs: list[tuple[Path, Path]], depth_scale: float, augment: DepthAugment | None = None,
                 kb_crop: bool = False, seed: int = 0, substitute_bad: bool | None = None,
                 eval_crop: str | None = None, min_depth: float = 1e-3, max_depth: float = 10.0,
                 protocol: str = "nyu"):
        super().__init__(pairs, augment, seed, substitute_bad)
        if not (is_finite_number(depth_scale) and depth_scale > 0):
            raise UsageError(f"depth_scale must be a positive finite number, got {depth_scale!r}")
        self.depth_scale, self.kb_crop = float(depth_scale), kb_crop
        self.eval_crop, self.min_depth, self.max_depth, self.protocol = eval_crop, min_depth, max_depth, protocol
        self.sample_size = tuple(augment.crop) if augment is not None else None  # training crops; else as stored

    def load(self, index: int, rng: np.random.Generator) -> dict:
        image, raw, image_path, depth_path = self.read_pair(index)
        try:  # the geometry's errors are about this file: name it
            if self.kb_crop:
                image, raw = kb_crop(image), kb_crop(raw)
            raw = raw.astype(np.float32)
            if self.augment is not None:
                strip = (index + self.epoch) % self.augment.strip_every == 0
                image, raw = augment_depth(image, raw, rng, self.augment, strip)
        except DataError as e:
            raise DataError(f"{image_path}: {e}") from None
        depth = raw / self.depth_scale
        if not (depth > 0).any():
            raise DataError(f"{depth_path}: no valid depth (every pixel is 0)")
        return {"image": to_image_tensor(image), "depth": torch.from_numpy(np.ascontiguousarray(depth))[None],
                "file": str(image_path)}


# ------------------------------------------------------------------ released layouts

def list_pairs(base: Path, list_file: Path) -> list[tuple[Path, Path]]:
    """The reference's lists: 'IMAGE DEPTH [focal]' per line, paths relative to `base` (they start with '/').
    Lines whose depth is 'None' (no ground truth) are left out."""
    pairs = []
    for fields in read_list(list_file):
        if len(fields) < 2:
            raise DataError(f"{list_file}: line {' '.join(fields)!r} has no depth path")
        if fields[1] != "None":
            pairs.append((base / fields[0].lstrip("/"), base / fields[1].lstrip("/")))
    return pairs


def nyu(data_path: str | Path, split: str, list_file: str | Path | None = None,
        crop: tuple[int, int] = (480, 480), augment: bool | None = None, seed: int = 0) -> DepthFiles:
    """NYUv2 as the reference reads it: train = the BTS 'sync' set (`nyu_depth_v2/sync/`), test = the official
    654 images (`nyu_depth_v2/official_splits/test/`); depth PNG / 1000; Eigen crop for the metrics.
    `list_file` defaults to `filenames/nyudepthv2/{split}_list.txt` under `data_path` (the reference's
    dataset/filenames tree)."""
    root = Path(data_path)
    if split not in ("train", "test"):
        raise DataError(f"NYUv2 has splits train and test, not {split!r}")
    base = root / "nyu_depth_v2" / ("sync" if split == "train" else "official_splits/test")
    list_file = Path(list_file) if list_file else root / "filenames" / "nyudepthv2" / f"{split}_list.txt"
    augment = split == "train" if augment is None else augment
    return DepthFiles(list_pairs(base, list_file), 1000.0, DepthAugment(crop) if augment else None, seed=seed,
                      eval_crop="eigen", max_depth=10.0, protocol="nyu")


def kitti(data_path: str | Path, split: str, list_file: str | Path | None = None,
          crop: tuple[int, int] = (352, 352), augment: bool | None = None, seed: int = 0) -> DepthFiles:
    """KITTI Eigen as the reference reads it: paths under `kitti/` (raw_data/..., data_depth_annotated/...),
    image and depth KB-cropped to 352x1216, depth PNG / 256; Garg crop for the metrics. `list_file` defaults
    to `filenames/eigen_benchmark/{split}_list.txt` under `data_path`."""
    root = Path(data_path)
    if split not in ("train", "test"):
        raise DataError(f"KITTI has splits train and test, not {split!r}")
    list_file = Path(list_file) if list_file else root / "filenames" / "eigen_benchmark" / f"{split}_list.txt"
    augment = split == "train" if augment is None else augment
    return DepthFiles(list_pairs(root / "kitti", list_file), 256.0, DepthAugment(crop) if augment else None,
                      kb_crop=True, seed=seed, eval_crop="garg", max_depth=80.0, protocol="kitti")


def depth_folder(root: str | Path, split: str, crop: tuple[int, int] | None = None, augment: bool | None = None,
                 seed: int = 0) -> DepthFiles:
    """A custom depth folder (docs/data.md): `<split>/images/NAME.jpg|png` with `<split>/depth/NAME.png`."""
    root = Path(root)
    manifest = Manifest(read_manifest(root, "depth"), root / "dataset.json")
    scale = manifest.number("depth_scale", 1000.0)
    max_depth = manifest.number("max_depth", 10.0)
    if not max_depth > 1e-3:  # the evaluation range is (0.001, max_depth)
        manifest.bad("max_depth", "must be more than the 0.001 m the evaluation range starts at")
    protocol = manifest.string("protocol", "nyu")
    augment = split == "train" if augment is None else augment
    if augment and crop is None:
        raise DataError(f"{root}: training on a depth folder needs a crop size")
    images = image_files(root / split / "images", f"the {split} split's images")
    if not images:
        raise DataError(f"{root / split / 'images'}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    pairs = paired_files(images, root / split / "depth", ".png", f"the {split} split's depth maps")
    return DepthFiles(pairs, scale, DepthAugment(tuple(crop)) if augment else None, seed=seed,
                      eval_crop=None, max_depth=max_depth, protocol=protocol)
