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

import logging
import math
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mp_deploy.errors import DataError, MpDeployError
from mp_deploy.files import read_json, read_text, special_kind
from mp_deploy.images import IMAGE_SUFFIXES, read_map, read_rgb

log = logging.getLogger("mp_deploy.data")

# consecutive bad files after which a dataset is taken to be broken (a wrong root, a wrong list)
MAX_CONSECUTIVE_BAD = 50
MAX_SIDE = 4096  # a crop, scale or input size side read from a manifest (the recipes' crop bound too)


# ------------------------------------------------------------------ files

def check_same_size(image: np.ndarray, target: np.ndarray, image_path, target_path) -> None:
    if image.shape[:2] != target.shape[:2]:
        raise DataError(f"{target_path}: size {target.shape[1]}x{target.shape[0]} differs from its image "
                        f"{image_path} ({image.shape[1]}x{image.shape[0]})")


def read_list(path: str | Path) -> list[list[str]]:
    """A split list: one sample per line, space-separated fields (blank lines ignored). Only a regular file is
    read (a FIFO is refused, never waited on)."""
    return [line.split() for line in read_text(path).splitlines() if line.strip()]


def check_folder(folder: str | Path, what: str) -> Path:
    """`folder` if it is a folder, else DataError naming it and `what` it should hold."""
    folder = Path(folder)
    found = special_kind(folder)
    if found == "missing":
        raise DataError(f"{folder}: no such folder ({what})")
    if found != "a folder":
        raise DataError(f"{folder}: not a folder ({found or 'a regular file'}; {what})")
    return folder


def image_files(folder: str | Path, what: str = "the images") -> list[Path]:
    """Image files directly in `folder`, sorted by name. An entry with an image suffix that is not a regular file
    (a FIFO, a device, a folder, a broken link) is left out with a warning naming it: nothing here ever opens it."""
    folder = check_folder(folder, what)
    files = []
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        found = special_kind(p)
        if found is not None:
            log.warning("skipping %s: not a regular file (%s)", p, found)
            continue
        files.append(p)
    return files


def load_manifest(root: str | Path) -> dict:
    """A custom folder's dataset.json (docs/data.md), read with mp_deploy.files' bounds (size, depth, numbers)."""
    path = Path(root) / "dataset.json"
    if special_kind(path) == "missing":
        raise DataError(f"{path}: no such file; a custom data folder needs a dataset.json")
    manifest = read_json(path)
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


# ------------------------------------------------------------------ manifest values, each checked with one line

def is_finite_number(value) -> bool:
    """An int or float (not a bool) that is finite as a float: JSON's 1e400 is inf, and an integer of 400 digits
    parses but overflows any float (math.isfinite would raise)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


class Manifest:
    """The values of a dataset.json, each read with its check: a bad value is a DataError naming the file, the
    key and what it must be."""

    def __init__(self, data: dict, path: Path):
        self.data, self.path = data, path

    def bad(self, key: str, why: str):
        value = repr(self.data.get(key))
        raise DataError(f"{self.path}: {key!r} {why}, got {value[:80] + '...' if len(value) > 80 else value}")

    def number(self, key: str, default: float, positive: bool = True) -> float:
        value = self.data.get(key, default)
        if not is_finite_number(value):
            self.bad(key, "must be a finite number")
        if positive and not value > 0:
            self.bad(key, "must be positive")
        return float(value)

    def integer(self, key: str, default: int, lo: int, hi: int) -> int:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            self.bad(key, f"must be an integer in [{lo}, {hi}]")
        return value

    def string(self, key: str, default: str) -> str:
        value = self.data.get(key, default)
        if not isinstance(value, str) or not value:
            self.bad(key, "must be a non-empty string")
        return value

    def size(self, key: str, default: tuple[int, int], multiple: int = 1, lo: int = 1) -> tuple[int, int]:
        value = self.data.get(key, default)
        if not isinstance(value, (list, tuple)) or len(value) != 2 or any(
                isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= MAX_SIDE or v % multiple
                for v in value):
            self.bad(key, f"must be two integers in [{lo}, {MAX_SIDE}]"
                     + (f", multiples of {multiple}" if multiple > 1 else ""))
        return int(value[0]), int(value[1])

    def names(self, key: str, default=None, limit: int = 65535) -> tuple[str, ...]:
        value = self.data.get(key, default)
        if not isinstance(value, (list, tuple)) or not 1 <= len(value) <= limit or any(
                not isinstance(v, str) or not v for v in value):
            self.bad(key, f"must be a list of 1 to {limit} names (non-empty strings)")
        if len(set(value)) != len(value):
            self.bad(key, "must not name one thing twice")
        return tuple(value)

    def indices(self, key: str, default, count: int) -> tuple[int, ...]:
        value = self.data.get(key, default)
        if not isinstance(value, (list, tuple)) or any(
                isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < count for v in value):
            self.bad(key, f"must be a list of indices in [0, {count})")
        return tuple(value)


# ------------------------------------------------------------------ DataLoader workers

def one_line(error: MpDeployError) -> MpDeployError:
    """A typed error re-raised by a DataLoader from a worker process carries the worker's traceback as its
    message ('Caught DataError in DataLoader worker process 0. Original Traceback ...'): the same error with
    the original one line back."""
    text = str(error)
    if "\n" not in text:
        return error
    last = [line for line in text.splitlines() if line.strip()][-1].strip()
    prefix = f"{type(error).__module__}.{type(error).__qualname__}: "
    message = last[len(prefix):] if last.startswith(prefix) else last
    try:
        return type(error)(message)
    except Exception:  # a subclass with another signature
        return DataError(message)


def one_line_errors(iterable):
    """Iterate `iterable` (a DataLoader), a typed error from a worker re-raised as its one line (one_line). On
    that error the DataLoader's iterator is let go before the error leaves, so its worker processes shut down
    at once. Left to itself the iterator would wait for a garbage collection: torch's re-raise keeps it in a
    reference cycle (the error's traceback holds the frames that hold the iterator and the error), and a cycle
    collected whole may close the iterator's queues before the iterator asks its workers to stop: the workers
    never hear it, ignore SIGTERM (evaluation.ignore_sigterm) and keep the interpreter's exit waiting."""
    iterator = iter(iterable)
    while True:
        try:
            item = next(iterator)
        except StopIteration:
            return
        except MpDeployError as e:
            error = one_line(e)  # made inside, raised outside the except clause: no reference to e's traceback
            traceback.clear_frames(e.__traceback__)  # break the cycle: the finished frames drop the iterator
            e.__traceback__ = None
        else:
            yield item
            continue
        del iterator
        raise error


def paired_files(images: list[Path], folder: Path, suffix: str, what: str = "the targets") -> list[tuple[Path, Path]]:
    """Each image with the file of the same stem + suffix in `folder` (a missing one fails when loaded); a
    missing `folder` is a DataError naming it."""
    if images:
        check_folder(folder, what)
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
