"""What every dataset shares: reading files, the per-sample RNG, skipping bad samples, collating batches.

A dataset here is a map-style `torch.utils.data.Dataset` whose `load(index, rng)` returns one sample dict (see
docs/data.md) or raises DataError for a bad file. `__getitem__` turns a DataError into a logged warning that names
the file and the cause, and then either

- substitutes the next index (training: every batch stays full, so DDP ranks never wait on an empty batch), or
- returns a marker without "image" (evaluation: an image is never counted twice; `collate` drops the marker).

Either way the sample carries `skipped` (how many bad files were met) and `skipped_files` (their messages), and
`collate` sums them into the batch, so the count reaches the trainer from DataLoader worker processes.

Randomness: a sample's augmentation RNG is numpy's Generator seeded with (seed, epoch, index), so a run is
reproducible whatever the number of workers or their order; call `set_epoch` at each epoch.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from mp_deploy.artifacts import MAX_PIXELS
from mp_deploy.errors import DataError

log = logging.getLogger("mp_deploy.data")

# consecutive bad files after which a dataset is taken to be broken (a wrong root, a wrong list)
MAX_CONSECUTIVE_BAD = 50
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


# ------------------------------------------------------------------ files

def read_rgb(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """An image file as RGB uint8 (H, W, 3), the one image reader of the project: the pixel count checked from
    the header before decoding (default: the engines' MAX_PIXELS); EXIF orientation applied; gray, palette,
    CMYK converted, alpha dropped; 16- and 32-bit images scaled to 8 bits. DataError names the file and cause."""
    max_pixels = MAX_PIXELS if max_pixels is None else max_pixels
    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise DataError(f"{path}: {w}x{h} is {w * h} pixels, more than the {max_pixels} an image may have")
            return to_rgb8(ImageOps.exif_transpose(im))
    except Image.DecompressionBombError as e:  # a header far beyond Pillow's own limit
        raise DataError(f"{path}: cannot read image ({e})") from None
    except FileNotFoundError:
        raise DataError(f"{path}: cannot read image (no such file)") from None
    except PermissionError:
        raise DataError(f"{path}: cannot read image (permission denied)") from None
    except IsADirectoryError:
        raise DataError(f"{path}: cannot read image (a folder)") from None
    except UnidentifiedImageError:
        raise DataError(f"{path}: cannot read image (not an image file, or a format Pillow cannot read)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:  # what PIL raises for truncated or corrupt data
        raise DataError(f"{path}: cannot read image (truncated or corrupt: {e})") from None


def to_rgb8(im: Image.Image) -> np.ndarray:
    """A decoded PIL image of any mode as RGB uint8: 16-bit gray divided by 257 (65535 -> 255), 32-bit integer
    gray likewise when it goes past 255, float gray clipped to [0, 255] (or scaled from [0, 1])."""
    if im.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        gray = np.asarray(im).astype(np.float64)
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
        with Image.open(path) as im:
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


def check_same_size(image: np.ndarray, target: np.ndarray, image_path, target_path) -> None:
    if image.shape[:2] != target.shape[:2]:
        raise DataError(f"{target_path}: size {target.shape[1]}x{target.shape[0]} differs from its image "
                        f"{image_path} ({image.shape[1]}x{image.shape[0]})")


def read_list(path: str | Path) -> list[list[str]]:
    """A split list: one sample per line, space-separated fields (blank lines ignored)."""
    try:
        with open(path) as f:
            return [line.split() for line in f if line.strip()]
    except OSError as e:
        raise DataError(f"{path}: cannot read the file list ({e.strerror})") from None


def image_files(folder: str | Path) -> list[Path]:
    """Image files directly in `folder`, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def to_image_tensor(rgb: np.ndarray) -> torch.Tensor:
    """RGB uint8 (H, W, 3) -> float32 (3, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float().div_(255.0)


def load_manifest(root: str | Path) -> dict:
    """A custom folder's dataset.json (docs/data.md)."""
    path = Path(root) / "dataset.json"
    try:
        manifest = json.loads(path.read_text())
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror}); a custom data folder needs a dataset.json") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("task") not in ("depth", "seg", "pose"):
        raise DataError(f"{path}: needs \"task\": one of depth, seg, pose")
    return manifest


def read_manifest_task(root: str | Path) -> str:
    return load_manifest(root)["task"]


def read_manifest(root: Path, task: str) -> dict:
    """A custom folder's dataset.json, checked to be for `task`."""
    path = root / "dataset.json"
    manifest = load_manifest(root)
    if manifest.get("task") != task:
        raise DataError(f"{path}: task is {manifest.get('task')!r}, expected {task!r}")
    return manifest


def paired_files(images: list[Path], folder: Path, suffix: str) -> list[tuple[Path, Path]]:
    """Each image with the file of the same stem + suffix in `folder` (a missing one fails when loaded)."""
    return [(p, folder / (p.stem + suffix)) for p in images]


# ------------------------------------------------------------------ datasets

class SampleDataset(torch.utils.data.Dataset):
    """Base of every dataset. Subclasses set `seed` and `substitute_bad`, implement `__len__`, `load(index,
    rng) -> dict` (raising DataError for a bad sample) and may override `describe(index)` for the warning."""

    seed: int = 0
    epoch: int = 0
    substitute_bad: bool = True

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    def load(self, index: int, rng: np.random.Generator) -> dict:
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict:
        n = len(self)
        skipped: list[str] = []
        for attempt in range(MAX_CONSECUTIVE_BAD):
            i = (index + attempt) % n
            try:
                sample = self.load(i, self.rng(i))
            except DataError as e:
                log.warning("skipping bad sample %d of %s: %s", i, type(self).__name__, e)
                skipped.append(str(e))
                if not self.substitute_bad:
                    return {"index": i, "skipped": len(skipped), "skipped_files": skipped}
                continue
            sample.update(index=i, skipped=len(skipped), skipped_files=skipped)
            return sample
        raise DataError(f"{type(self).__name__}: {MAX_CONSECUTIVE_BAD} bad samples in a row from index {index} "
                        f"(last: {skipped[-1]}); is the data root or the file list right?")


class PairedFiles(SampleDataset):
    """Samples made from (image file, target map file) pairs; `augment` set = a training split (bad samples
    substituted unless `substitute_bad` says otherwise)."""

    def __init__(self, pairs: list[tuple[Path, Path]], augment, seed: int, substitute_bad: bool | None):
        if not pairs:
            raise DataError(f"no {type(self).__name__} samples found (an empty list or folder)")
        self.pairs, self.augment, self.seed = pairs, augment, seed
        self.substitute_bad = augment is not None if substitute_bad is None else substitute_bad

    def __len__(self) -> int:
        return len(self.pairs)

    def read_pair(self, index: int) -> tuple[np.ndarray, np.ndarray, Path, Path]:
        """The RGB image and the target map as stored, checked to be the same size."""
        image_path, target_path = self.pairs[index]
        image, target = read_rgb(image_path), read_map(target_path)
        check_same_size(image, target, image_path, target_path)
        return image, target, image_path, target_path


def collate(samples: list[dict]) -> dict:
    """Stack a list of samples into a batch: tensors stacked, numbers as tensors, anything else as lists.

    Markers of bad samples (no "image") are dropped; `skipped` (int tensor, the bad files met while making this
    batch) and `skipped_files` (their messages) are always present, `size` is the number of samples kept.
    """
    good = [s for s in samples if "image" in s]
    batch: dict = {
        "skipped": torch.tensor(sum(s.get("skipped", 0) for s in samples)),
        "skipped_files": [m for s in samples for m in s.get("skipped_files", ())],
        "size": len(good),
    }
    for key in (good[0] if good else {}):
        if key in ("skipped", "skipped_files"):
            continue
        values = [s[key] for s in good]
        if isinstance(values[0], torch.Tensor):
            batch[key] = torch.stack(values)
        elif isinstance(values[0], (bool, int, float, np.integer, np.floating)):
            batch[key] = torch.tensor(values)
        else:
            batch[key] = values
    return batch


@dataclass
class SkipTally:
    """The trainer's running count of bad samples, fed with each batch; `line()` is the summary's sentence.
    Under DDP, all-reduce `count` before printing."""

    count: int = 0
    examples: list[str] = field(default_factory=list)
    keep: int = 5

    def update(self, batch: dict) -> None:
        self.count += int(batch["skipped"])
        room = self.keep - len(self.examples)
        if room > 0:
            self.examples.extend(batch["skipped_files"][:room])

    def line(self) -> str:
        if not self.count:
            return "bad samples skipped: 0"
        return f"bad samples skipped: {self.count} (first: {self.examples[0]})"
