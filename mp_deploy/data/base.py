"""What every dataset shares: file lists, the per-sample RNG, skipping bad samples, collating batches.

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

from mp_deploy.errors import DataError
from mp_deploy.images import IMAGE_SUFFIXES, read_map, read_rgb

log = logging.getLogger("mp_deploy.data")

# consecutive bad files after which a dataset is taken to be broken (a wrong root, a wrong list)
MAX_CONSECUTIVE_BAD = 50


# ------------------------------------------------------------------ files

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


def load_manifest(root: str | Path) -> dict:
    """A custom folder's dataset.json (docs/data.md)."""
    path = Path(root) / "dataset.json"
    try:
        manifest = json.loads(path.read_text())
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror}); a custom data folder needs a dataset.json") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("task"), str):
        raise DataError(f"{path}: needs \"task\": the task name (depth, seg, pose)")
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
