"""What predict reads: one image, one video, or a folder of both (recursive, sorted), split into shards.

Every input has a key, its path relative to the input root (the file name for a single file), and an index,
its place in the whole sorted listing. Outputs are named after the key, so N shards that write to N folders
(or to one shared folder) merge by copying; the index is the image_id of the pose results.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from mp_deploy.images import IMAGE_SUFFIXES
from mp_deploy.errors import UsageError

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


@dataclass(frozen=True)
class Item:
    key: str  # path relative to the input root, POSIX separators
    path: Path
    index: int  # in the whole listing (all shards)
    video: bool
    stem: str  # output name: the key without its suffix (with it, when two inputs would share a stem)


def list_inputs(path: str | os.PathLike, exclude: str | os.PathLike | None = None) -> tuple[list[Item], int]:
    """The inputs under `path` -> (items, number of files skipped as neither image nor video by suffix).
    A single file is taken whatever its suffix (a bad one fails when read). Hidden files and folders, and the
    `exclude` folder (the output folder, when it lies inside the input), are left out."""
    root = Path(path)
    if root.is_file():
        return _items(root.parent, [root]), 0
    if not root.is_dir():
        raise UsageError(f"--input {path}: no such file or folder")
    skip = Path(exclude).resolve() if exclude is not None else None
    files, others = [], 0
    for folder, dirs, names in os.walk(root):
        here = Path(folder)
        dirs[:] = [d for d in dirs if not d.startswith(".") and (here / d).resolve() != skip]
        for name in names:
            if name.startswith("."):
                continue
            if name.lower().endswith(IMAGE_SUFFIXES + VIDEO_SUFFIXES):
                files.append(here / name)
            else:
                others += 1
    if not files:
        raise UsageError(f"--input {path}: no images or videos in it (suffixes {', '.join(IMAGE_SUFFIXES)}, "
                         f"{', '.join(VIDEO_SUFFIXES)})")
    return _items(root, files), others


def _items(root: Path, files: list[Path]) -> list[Item]:
    keys = sorted(PurePosixPath(f.relative_to(root).as_posix()) for f in files)
    stems = [str(k.with_suffix("")) for k in keys]
    shared = {s for s in stems if stems.count(s) > 1}
    return [Item(str(k), root / k, i, k.suffix.lower() in VIDEO_SUFFIXES,
                 f"{s}_{k.suffix.lstrip('.')}" if s in shared else s)
            for i, (k, s) in enumerate(zip(keys, stems))]


# ------------------------------------------------------------------ shards

def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' (0 <= I < N) -> (I, N); 'auto' -> from torchrun (RANK, WORLD_SIZE) or a Slurm job array
    (SLURM_ARRAY_TASK_ID from SLURM_ARRAY_TASK_MIN, SLURM_ARRAY_TASK_COUNT), else 0/1."""
    if text == "auto":
        env = os.environ
        if "WORLD_SIZE" in env:
            index, count = int(env.get("RANK", 0)), int(env["WORLD_SIZE"])
        elif "SLURM_ARRAY_TASK_COUNT" in env:
            first = int(env.get("SLURM_ARRAY_TASK_MIN", 0))
            index, count = int(env["SLURM_ARRAY_TASK_ID"]) - first, int(env["SLURM_ARRAY_TASK_COUNT"])
        else:
            index, count = 0, 1
    else:
        match = re.fullmatch(r"(\d+)/(\d+)", text)
        index, count = (int(match[1]), int(match[2])) if match else (-1, 0)
    if not 0 <= index < count:
        raise UsageError(f"--shard takes I/N with 0 <= I < N (e.g. 0/4), or auto (torchrun, Slurm job arrays); "
                         f"got {text!r}" + (f" = {index}/{count}" if text == "auto" else ""))
    return index, count


def shard(items: list[Item], index: int, count: int) -> list[Item]:
    """Every count-th input from `index`: the N shards of one listing cover it exactly once, and each gets a
    mix of early and late (large and small) inputs."""
    return items[index::count]
