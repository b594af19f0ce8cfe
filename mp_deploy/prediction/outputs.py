"""Where predict's files go and how each is written. Which files a task writes, and what is in them, is the task's
to say (its Task.outputs / video_outputs tables and Task.render); this module turns a name into a path and a value
into a file of its format.

Images: OUT/<stem><suffix>, stem = the input's path relative to the input root without its suffix.
Videos: the visual outputs as .mp4 (frame rate kept) and, for pose, one keypoints JSON for all frames.
Every file is written atomically (a temporary name, then a rename): a file that exists is complete.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from mp_deploy.colors import PALETTE
from mp_deploy.images import write_png
from mp_deploy.files import atomic_write
from mp_deploy.util import inside


def output_paths(folder: Path, task, stem: str, video: bool, chosen) -> dict[str, Path]:
    """name -> path of an input's outputs (only the `chosen` names), each inside `folder` (its folder resolved:
    the file itself is never followed, and what stands there if not a regular file is refused when written).
    `task`: a Task."""
    table = task.video_outputs if video else task.outputs
    paths = {name: folder / f"{stem}{f.suffix}" for name, f in table.items() if name in chosen}
    return {name: inside(folder, path.parent) / path.name for name, path in paths.items()}


def write_output(path: Path, format: str, value) -> None:
    """One output file of `format` (mp_deploy.tasks.base.OutputFile), atomically: png (8-bit RGB / gray or
    16-bit), palette-png (class indices with the palette), npy, json."""
    if format == "npy":
        atomic_write(path, lambda tmp: np.save(tmp, value))
    elif format == "json":
        text = json.dumps(value, separators=(",", ":"))
        atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    elif format == "palette-png":
        image = Image.fromarray(value.astype(np.uint8))
        image.putpalette(PALETTE.ravel().tolist())  # L -> P: class indices with their colours
        atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
    elif format == "png":
        atomic_write(path, lambda tmp: write_png(tmp, value))
    else:
        raise ValueError(f"{path}: no writer for output format {format!r}")
