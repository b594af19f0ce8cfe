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

from mp_deploy.errors import UsageError
from mp_deploy.files import special_kind
from mp_deploy.images import IMAGE_SUFFIXES

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


@dataclass(frozen=True)
class Item:
    key: str  # path relative to the input root, POSIX separators
    path: Path
    index: int  # in the whole listing (all shards)
    video: bool
    stem: str  # output name: the key without its suffix (with it, when two inputs would share a stem)


@dataclass
class Listing:
    items: list[Item]
    others: int  # files skipped as neither image nor video by suffix
    special: list[tuple[str, str]]  # (path, what it is) of inputs skipped as not regular files (FIFOs, devices)


def list_inputs(path: str | os.PathLike) -> Listing:
    """The inputs under `path`. A single file is taken whatever its suffix (a bad one fails when read). Hidden
    files and folders are left out; a name with an input's suffix that is not a regular file (a FIFO, a device,
    a socket, a broken link) is skipped and listed in `special`: found with stat, never opened, so it cannot
    block the run. A single input that is not a regular file is refused."""
    root = Path(path)
    if not root.is_dir():
        found = special_kind(root)
        if found == "missing":
            raise UsageError(f"--input {path}: no such file or folder")
        if found is not None:
            raise UsageError(f"--input {path}: not a regular file or a folder ({found})")
        return Listing(_items(root.parent, [root]), 0, [])
    files, others, special = [], 0, []
    for folder, dirs, names in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in names:
            if name.startswith("."):
                continue
            if not name.lower().endswith(IMAGE_SUFFIXES + VIDEO_SUFFIXES):
                others += 1
            elif (found := special_kind(here / name)) is not None:
                special.append((str(here / name), found))
            else:
                files.append(here / name)
    if not files:
        raise UsageError(f"--input {path}: no images or videos in it (suffixes {', '.join(IMAGE_SUFFIXES)}, "
                         f"{', '.join(VIDEO_SUFFIXES)})" + (f"; {len(special)} not regular files skipped"
                                                             if special else ""))
    return Listing(_items(root, files), others, sorted(special))


def check_apart(inputs: str | os.PathLike, output: str | os.PathLike) -> None:
    """UsageError when the input and output trees overlap: the output folder equal to the input folder or
    inside it (a rerun would read the outputs as inputs), or the input inside the output folder."""
    src, dst = Path(inputs).resolve(), Path(output).resolve()
    if src == dst or src in dst.parents:
        raise UsageError(f"--output {output} is inside --input {inputs}: outputs would be read back as inputs; "
                         "choose an output folder outside the input")
    if dst in src.parents:
        raise UsageError(f"--input {inputs} is inside --output {output}: choose an output folder that does not "
                         "hold the input")


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
        if "WORLD_SIZE" in os.environ:
            index, count = _env_int("RANK", 0), _env_int("WORLD_SIZE")
        elif "SLURM_ARRAY_TASK_COUNT" in os.environ:
            index = _env_int("SLURM_ARRAY_TASK_ID") - _env_int("SLURM_ARRAY_TASK_MIN", 0)
            count = _env_int("SLURM_ARRAY_TASK_COUNT")
        else:
            index, count = 0, 1
    else:
        match = re.fullmatch(r"(\d+)/(\d+)", text)
        index, count = (int(match[1]), int(match[2])) if match else (-1, 0)
    if not 0 <= index < count:
        raise UsageError(f"--shard takes I/N with 0 <= I < N (e.g. 0/4), or auto (torchrun, Slurm job arrays); "
                         f"got {text!r}" + (f" = {index}/{count}" if text == "auto" else ""))
    return index, count


def _env_int(name: str, default: int | None = None) -> int:
    """An environment variable holding a whole number (at most 9 digits), else UsageError naming it."""
    text = os.environ.get(name)
    if text is None and default is not None:
        return default
    if text is None or not re.fullmatch(r"\s*[0-9]{1,9}\s*", text):
        raise UsageError(f"--shard auto: the environment variable {name} must be a whole number, got {text!r}")
    return int(text)


def shard(items: list[Item], index: int, count: int) -> list[Item]:
    """Every count-th input from `index`: the N shards of one listing cover it exactly once, and each gets a
    mix of early and late (large and small) inputs."""
    return items[index::count]
