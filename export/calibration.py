"""The images an int8 build is calibrated on and judged on: the task's own data, and never the split it is judged on.

- Calibration (`calibration_set`): the images of `--calibration FOLDER` when given; else the first
  CALIBRATION_IMAGES images of the training split of the model preset's recipe (mp_deploy.train.recipes), as
  stored (no augmentation), when that split can be had without a data root: the synthetic demo presets render
  theirs. A preset whose data is a released data set needs `--calibration`.
- Held out (`held_out_set`): the first HELD_OUT_IMAGES images of the recipe's evaluation split (recipe.val_split,
  disjoint from the training split), when it can be had without a data root: the int8 rule (export.parity)
  measures the error against eager fp32 there, and the task's headline metric of both. Without one (a folder
  for a preset of released data), every HOLD_OUT_EVERY-th image of the folder is held out of the calibration
  and only the error is measured on those (no labels: no metric).

Every image becomes a network input of the artifact's opt height and width (resized when its size differs).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mp_deploy.errors import DataError, UsageError

CALIBRATION_IMAGES = 64  # the research recipe: 64 training scenes gave 1.0% relative L2 on the tiny depth demo
HELD_OUT_IMAGES = 32
HOLD_OUT_EVERY = 5  # a folder without a held-out split: every 5th image is held out of the calibration


@dataclass
class Calibration:
    inputs: list  # network inputs, numpy float32 (1, 3, H, W) in [0, 1]
    record: dict  # what the int8 sidecar says it was calibrated on (also part of its source: a change rebuilds)


@dataclass
class HeldOut:
    record: dict  # what the parity record says it was measured on
    dataset: object = None  # a labelled evaluation split (the metric is measured), or None
    count: int = 0  # its images used
    images: list = field(default_factory=list)  # without a dataset: (3, H, W) float images (no metric)


def recipe_split(preset_name: str, which: str):
    """(dataset, description) of the preset's recipe split `which` ("train" / "val") as stored, or (None, why not)
    when it needs data this build does not have (a released data set's root) or the preset has no recipe."""
    from mp_deploy.train import build
    from mp_deploy.train.recipes import get_recipe

    try:
        recipe = get_recipe(preset_name)
    except (UsageError, KeyError) as e:
        return None, f"preset {preset_name} has no recipe ({e})"
    split = recipe.train_split if which == "train" else recipe.val_split
    try:
        data = build.dataset(recipe, None, split, train=False)
    except (DataError, UsageError) as e:
        return None, f"its {recipe.data} data needs a root ({e})"
    return data, f"{recipe.data} {split} split"


def to_input(image: torch.Tensor, height: int, width: int) -> np.ndarray:
    """A (3, h, w) float image in [0, 1] -> a network input (1, 3, height, width), resized when it differs."""
    x = image.float()[None]
    if tuple(x.shape[-2:]) != (height, width):
        x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
    return x.numpy().astype(np.float32)


def folder_images(folder) -> list[Path]:
    from mp_deploy.data.base import image_files

    try:
        files = image_files(folder, "--calibration")
    except DataError as e:
        raise UsageError(str(e)) from None
    if not files:
        raise UsageError(f"--calibration {folder}: no images in it ({', '.join(_suffixes())})")
    return files


def _suffixes():
    from mp_deploy.images import IMAGE_SUFFIXES

    return IMAGE_SUFFIXES


def folder_digest(files: list[Path]) -> str:
    """sha256 over the images' names and contents: the calibration's identity."""
    from mp_deploy.util import sha256_file

    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + sha256_file(f).encode() + b"\0")
    return h.hexdigest()


def check_sources(preset_name: str, folder) -> None:
    """UsageError before any work when an int8 build would have nothing to calibrate on, or a folder too small to
    hold images out of it when it must."""
    if folder is not None:
        files = folder_images(folder)
        if recipe_split(preset_name, "val")[0] is None and len(files) < 2:
            raise UsageError(f"--calibration {folder}: preset {preset_name} has no held-out split here, so every "
                             f"{HOLD_OUT_EVERY}th image is held out of the calibration: give at least 2 images")
        return
    data, why = recipe_split(preset_name, "train")
    if data is None:
        raise UsageError(f"--precision int8 calibrates on the task's own images: preset {preset_name}: {why}; give "
                         "--calibration FOLDER (images like those it will run on, not the evaluation split)")


def _sources(preset_name: str, folder, count: int):
    """(the calibration's files or dataset, its record), nothing read yet."""
    if folder is not None:
        files = folder_images(folder)
        if recipe_split(preset_name, "val")[0] is None:  # the held-out images are not calibrated on
            files = [f for i, f in enumerate(files) if i % HOLD_OUT_EVERY]
        files = files[:count]
        return files, {"folder": str(Path(folder).resolve()), "images": len(files), "sha256": folder_digest(files)}
    data, why = recipe_split(preset_name, "train")
    if data is None:
        raise UsageError(f"int8 calibration: preset {preset_name}: {why}; give --calibration FOLDER")
    return data, {"data": why, "images": min(count, len(data))}


def calibration_record(preset_name: str, folder, count: int = CALIBRATION_IMAGES) -> dict:
    """What the calibration is, without reading an image: part of an int8 artifact's source (a change rebuilds)."""
    return _sources(preset_name, folder, count)[1]


def calibration_set(preset_name: str, folder, height: int, width: int,
                    count: int = CALIBRATION_IMAGES) -> Calibration:
    """The calibration inputs (see the module's docstring)."""
    found, record = _sources(preset_name, folder, count)
    if folder is not None:
        return Calibration([to_input(_read(f), height, width) for f in found], record)
    samples = (found[i] for i in range(record["images"]))
    return Calibration([to_input(s["image"], height, width) for s in samples if "image" in s], record)


def held_out_set(preset_name: str, folder, count: int = HELD_OUT_IMAGES) -> HeldOut:
    """The held-out images the int8 rule is measured on (see the module's docstring)."""
    data, why = recipe_split(preset_name, "val")
    if data is not None:
        n = min(count, len(data))
        return HeldOut({"data": why, "images": n}, dataset=data, count=n)
    if folder is None:
        raise UsageError(f"int8 parity: preset {preset_name}: {why}; give --calibration FOLDER")
    files = [f for i, f in enumerate(folder_images(folder)) if i % HOLD_OUT_EVERY == 0][:count]
    return HeldOut({"data": f"every {HOLD_OUT_EVERY}th image of {Path(folder).resolve()} (held out of the "
                            "calibration; no labels: no metric)", "images": len(files)},
                   images=[_read(f) for f in files])


def _read(path: Path) -> torch.Tensor:
    from mp_deploy.images import read_image, to_image_tensor

    try:
        return to_image_tensor(read_image(path))
    except DataError as e:
        raise UsageError(f"--calibration: {e}") from None
