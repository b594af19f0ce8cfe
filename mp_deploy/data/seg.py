"""Segmentation data: mmseg's training pipeline as the reference configures it, and the ADE20K, Cityscapes and
custom-folder readers.

Samples: `image` float32 (3, H, W) in [0, 1], `labels` int64 (H, W) with 255 = ignore, `file`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mp_deploy.data.base import Manifest, PairedFiles, image_files, paired_files, read_manifest
from mp_deploy.images import IMAGE_SUFFIXES, to_image_tensor
from mp_deploy.data.transforms import hsv_to_rgb, pad_to, rescale_size, resize_image, resize_nearest, rgb_to_hsv
from mp_deploy.errors import DataError

IGNORE_INDEX = 255

ADE20K_CLASSES = 150
CITYSCAPES_CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                      "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
                      "motorcycle", "bicycle")
# Cityscapes labelIds 0..33 -> trainIds (cityscapesscripts' label table); everything else is ignored
CITYSCAPES_ID_TO_TRAINID = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
                            25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


@dataclass(frozen=True)
class SegAugment:
    """mmseg 0.30's train pipeline as the reference's configs set it: Resize(img_scale=scale, ratio_range),
    RandomCrop(crop, cat_max_ratio), RandomFlip(0.5), PhotoMetricDistortion (its defaults), Pad(crop, 0, 255)."""

    scale: tuple[int, int]  # (long, short) bound, mmseg's img_scale
    crop: tuple[int, int]  # (h, w)
    ratio_range: tuple[float, float] = (0.5, 2.0)
    cat_max_ratio: float = 0.75
    flip_prob: float = 0.5
    brightness_delta: int = 32
    contrast_range: tuple[float, float] = (0.5, 1.5)
    saturation_range: tuple[float, float] = (0.5, 1.5)
    hue_delta: int = 18


ADE20K_AUGMENT = SegAugment(scale=(2048, 512), crop=(512, 512))
CITYSCAPES_AUGMENT = SegAugment(scale=(2048, 1024), crop=(1024, 1024))


def reduce_zero_label(labels: np.ndarray, index: int = -1) -> np.ndarray:
    """ADE20K: 0 (other) -> 255, every class k -> k - 1 (mmseg's reduce_zero_label)."""
    out = labels.astype(np.int64) - 1
    out[labels == 0] = IGNORE_INDEX
    out[labels == IGNORE_INDEX] = IGNORE_INDEX
    return out


def cityscapes_train_ids(label_ids: np.ndarray) -> np.ndarray:
    table = np.full(256, IGNORE_INDEX, dtype=np.int64)
    for label_id, train_id in CITYSCAPES_ID_TO_TRAINID.items():
        table[label_id] = train_id
    return table[np.clip(label_ids, 0, 255)]


def random_crop_box(shape, crop, rng: np.random.Generator) -> tuple[int, int]:
    margin_h, margin_w = max(shape[0] - crop[0], 0), max(shape[1] - crop[1], 0)
    return int(rng.integers(0, margin_h + 1)), int(rng.integers(0, margin_w + 1))


def crop_with_category_rule(labels: np.ndarray, crop, cat_max_ratio: float, rng: np.random.Generator,
                            ignore_index: int = IGNORE_INDEX) -> tuple[int, int]:
    """mmseg's RandomCrop: up to 10 redraws until the crop holds more than one class and no class covers
    `cat_max_ratio` or more of its labelled pixels; after 10 failures the 11th draw is taken as it is."""
    y, x = random_crop_box(labels.shape, crop, rng)
    if cat_max_ratio < 1.0:
        for _ in range(10):
            window = labels[y:y + crop[0], x:x + crop[1]]
            _, counts = np.unique(window[window != ignore_index], return_counts=True)
            if len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio:
                break
            y, x = random_crop_box(labels.shape, crop, rng)
    return y, x


def scale_pixels(image: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    """mmseg's convert: x * alpha + beta, clipped, truncated to uint8."""
    return np.clip(image.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


def photometric_distortion(image: np.ndarray, rng: np.random.Generator, aug: SegAugment) -> np.ndarray:
    """mmseg's PhotoMetricDistortion on uint8 RGB: brightness, contrast (before or after, at random),
    saturation, hue; each applied with probability 1/2."""
    if rng.integers(2):
        image = scale_pixels(image, beta=rng.uniform(-aug.brightness_delta, aug.brightness_delta))
    contrast_first = rng.integers(2) == 1
    if contrast_first and rng.integers(2):
        image = scale_pixels(image, alpha=rng.uniform(*aug.contrast_range))
    if rng.integers(2):
        hsv = rgb_to_hsv(image)
        hsv[..., 1] = scale_pixels(hsv[..., 1], alpha=rng.uniform(*aug.saturation_range))
        image = hsv_to_rgb(hsv)
    if rng.integers(2):
        hsv = rgb_to_hsv(image)
        hsv[..., 0] = (hsv[..., 0].astype(np.int64) + rng.integers(-aug.hue_delta, aug.hue_delta)) % 180
        image = hsv_to_rgb(hsv)
    if not contrast_first and rng.integers(2):
        image = scale_pixels(image, alpha=rng.uniform(*aug.contrast_range))
    return image


def augment_seg(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                aug: SegAugment) -> tuple[np.ndarray, np.ndarray]:
    """uint8 RGB (H, W, 3) and int64 labels (H, W) -> the pair at exactly `aug.crop`."""
    ratio = rng.random() * (aug.ratio_range[1] - aug.ratio_range[0]) + aug.ratio_range[0]
    scale = (int(aug.scale[0] * ratio), int(aug.scale[1] * ratio))
    size = rescale_size(*labels.shape, scale)
    image, labels = resize_image(image, size), resize_nearest(labels, size)
    y, x = crop_with_category_rule(labels, aug.crop, aug.cat_max_ratio, rng)
    image, labels = image[y:y + aug.crop[0], x:x + aug.crop[1]], labels[y:y + aug.crop[0], x:x + aug.crop[1]]
    if rng.random() < aug.flip_prob:
        image, labels = image[:, ::-1], labels[:, ::-1]
    image = photometric_distortion(np.ascontiguousarray(image), rng, aug)
    return pad_to(image, aug.crop, 0), pad_to(np.ascontiguousarray(labels), aug.crop, IGNORE_INDEX)


class SegFiles(PairedFiles):
    """Pairs of (RGB file, label PNG). `label_map(stored, index)` turns stored values into train ids
    (reduce_zero_label, Cityscapes labelIds, or None for stored train ids); labels outside [0, num_classes)
    become 255. It must be picklable (DataLoader workers)."""

    def __init__(self, pairs: list[tuple[Path, Path]], num_classes: int, augment: SegAugment | None = None,
                 label_map=None, seed: int = 0, substitute_bad: bool | None = None, protocol: str = "ade20k"):
        super().__init__(pairs, augment, seed, substitute_bad)
        self.num_classes, self.label_map, self.protocol = num_classes, label_map, protocol
        self.sample_size = tuple(augment.crop) if augment is not None else None  # training crops; else as stored

    def load(self, index: int, rng: np.random.Generator) -> dict:
        image, stored, image_path, label_path = self.read_pair(index)
        labels = self.label_map(stored, index) if self.label_map is not None else stored.astype(np.int64)
        labels[(labels < 0) | (labels >= self.num_classes)] = IGNORE_INDEX
        if self.augment is not None:
            image, labels = augment_seg(image, labels, rng, self.augment)
        if (labels == IGNORE_INDEX).all():
            raise DataError(f"{label_path}: every pixel is ignored (no labelled pixel)")
        return {"image": to_image_tensor(image), "labels": torch.from_numpy(np.ascontiguousarray(labels)),
                "file": str(image_path)}


def ade20k(root: str | Path, split: str, augment: SegAugment | None | bool = None, seed: int = 0) -> SegFiles:
    """ADE20K as mmseg reads it: `root` = ADEChallengeData2016 with images/{training,validation}/*.jpg and
    annotations/.../*.png (0 = other), reduce_zero_label. Splits: train, val."""
    folder = {"train": "training", "val": "validation"}.get(split)
    if folder is None:
        raise DataError(f"ADE20K has splits train and val, not {split!r}")
    root = Path(root)
    pairs = paired_files(image_files(root / "images" / folder, f"ADE20K's {split} images"),
                         root / "annotations" / folder, ".png", f"ADE20K's {split} annotations")
    return SegFiles(pairs, ADE20K_CLASSES, pick_augment(augment, split, ADE20K_AUGMENT), reduce_zero_label,
                    seed=seed, protocol="ade20k")


def cityscapes(root: str | Path, split: str, augment: SegAugment | None | bool = None, seed: int = 0) -> SegFiles:
    """Cityscapes as mmseg reads it: leftImg8bit/{split}/CITY/NAME_leftImg8bit.png with
    gtFine/{split}/CITY/NAME_gtFine_labelTrainIds.png; where a labelTrainIds file is absent, the
    NAME_gtFine_labelIds.png beside it is converted with the official label table."""
    root = Path(root)
    image_dir = root / "leftImg8bit" / split
    if not image_dir.is_dir():
        raise DataError(f"{image_dir}: no such folder (Cityscapes splits are train, val, test)")
    pairs, converted = [], []
    for image in sorted(image_dir.glob("*/*_leftImg8bit.png")):
        stem = image.name[: -len("_leftImg8bit.png")]
        gt = root / "gtFine" / split / image.parent.name / f"{stem}_gtFine_labelTrainIds.png"
        if not gt.exists():
            gt = gt.with_name(f"{stem}_gtFine_labelIds.png")
            converted.append(len(pairs))
        pairs.append((image, gt))
    dataset = SegFiles(pairs, len(CITYSCAPES_CLASSES), pick_augment(augment, split, CITYSCAPES_AUGMENT),
                       CityscapesLabels(set(converted)), seed=seed, protocol="cityscapes")
    return dataset


class CityscapesLabels:
    """Per-sample label rule: the samples whose file is a labelIds PNG (their indices) are converted."""

    def __init__(self, converted: set[int]):
        self.converted = converted

    def __call__(self, stored: np.ndarray, index: int) -> np.ndarray:
        return cityscapes_train_ids(stored) if index in self.converted else stored.astype(np.int64)


def pick_augment(augment, split: str, default: SegAugment) -> SegAugment | None:
    if augment is None:
        augment = split == "train"
    if augment is True:
        return default
    return augment or None


def seg_folder(root: str | Path, split: str, augment: SegAugment | None | bool = None, seed: int = 0) -> SegFiles:
    """A custom segmentation folder (docs/data.md): `<split>/images/NAME.jpg|png` with `<split>/labels/NAME.png`
    holding class indices; dataset.json gives the classes, ignore_index and an optional training scale/crop."""
    root = Path(root)
    manifest = Manifest(read_manifest(root, "seg"), root / "dataset.json")
    if "classes" not in manifest.data:
        manifest.bad("classes", "(a list of class names) is required")
    classes = manifest.names("classes", limit=IGNORE_INDEX)
    ignore = manifest.integer("ignore_index", IGNORE_INDEX, 0, 65535)
    label_map = None if ignore == IGNORE_INDEX else IgnoreMap(ignore)
    default = SegAugment(scale=manifest.size("scale", (2048, 512)), crop=manifest.size("crop", (512, 512)))
    protocol = manifest.string("protocol", "ade20k")
    images = image_files(root / split / "images", f"the {split} split's images")
    if not images:
        raise DataError(f"{root / split / 'images'}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    pairs = paired_files(images, root / split / "labels", ".png", f"the {split} split's label maps")
    return SegFiles(pairs, len(classes), pick_augment(augment, split, default), label_map, seed=seed,
                    protocol=protocol)


class IgnoreMap:
    """Stored `ignore` value -> 255 (picklable, for DataLoader workers)."""

    def __init__(self, ignore: int):
        self.ignore = ignore

    def __call__(self, stored: np.ndarray, index: int) -> np.ndarray:
        labels = stored.astype(np.int64)
        labels[stored == self.ignore] = IGNORE_INDEX
        return labels
