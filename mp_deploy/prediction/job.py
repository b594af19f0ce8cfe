"""One predict job's set-up: the output folder (checked writable before any work, its predict.json saying what
made the outputs), this shard's inputs, and on --resume those whose outputs are not all there yet."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mp_deploy.errors import DataError, UsageError
from mp_deploy.files import atomic_write, read_json, special_kind
from mp_deploy.prediction.inputs import Item, list_inputs, shard
from mp_deploy.prediction.pipeline import Pipeline
from mp_deploy.util import writable_folder

MANIFEST = "predict.json"


def output_folder(path) -> Path:
    """The output folder, created if need be and written to once: UsageError when it cannot be."""
    try:
        return writable_folder(path)
    except ValueError as e:
        raise UsageError(f"--output: {e}") from None


def write_manifest(folder: Path, described: dict, resume: bool, kept: int = 0) -> None:
    """predict.json: what decides the outputs. On resume, a folder whose outputs were made otherwise is refused
    (its complete files would be mixed with different ones), and so is one whose `kept` complete outputs no
    readable predict.json describes (nothing says how they were made)."""
    path = folder / MANIFEST
    if resume and (kept or special_kind(path) != "missing"):
        try:
            before = read_json(path)
        except DataError as e:
            why = "is missing" if special_kind(path) == "missing" else f"cannot be used ({e})"
            raise UsageError(f"--resume: cannot verify the outputs in {folder}: its {MANIFEST} {why} ({kept} "
                             "inputs' outputs are complete there); run without --resume to redo them, or use "
                             "another --output") from None
        if before != described:
            changed = sorted(k for k in described if not isinstance(before, dict) or before.get(k) != described[k])
            raise UsageError(f"--resume: the outputs in {folder} were made with other settings ({', '.join(changed)} "
                             f"differ; see {path}); use another --output, or run without --resume to redo them")
        return
    text = json.dumps(described, indent=1) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


@dataclass
class Job:
    items: list[Item]  # what this run predicts
    listed: int  # inputs in the whole listing (every shard)
    in_shard: int  # inputs of this shard
    complete: int  # of those, skipped by --resume
    others: int  # files under the input that are neither images nor videos (by suffix)
    special: list[tuple[str, str]]  # inputs skipped as not regular files: (path, what it is)
    unmatched: list[str]  # --boxes entries that name no input


def plan(inputs, pipeline: Pipeline, shard_of: tuple[int, int] = (0, 1), resume: bool = False) -> Job:
    listing = list_inputs(inputs)
    mine = shard(listing.items, *shard_of)
    todo = [item for item in mine if not (resume and pipeline.complete(item))]
    keys = {item.key for item in listing.items}
    unmatched = sorted(k for k in pipeline.predictor.boxes if k.split("#")[0] not in keys)
    return Job(todo, len(listing.items), len(mine), len(mine) - len(todo), listing.others, listing.special,
               unmatched)
