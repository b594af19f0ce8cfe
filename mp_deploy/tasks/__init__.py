"""The task registry: one Task per task (mp_deploy/tasks/<task>.py), and the presets they own. Every layer asks it
for anything task-specific instead of testing a task's name:

    from mp_deploy import tasks
    task = tasks.get("depth")              # UsageError naming the known tasks for an unknown one
    tasks.names()                          # ("depth", "seg", "pose")
    preset = tasks.get_preset("nyu")       # a Preset; tasks.PRESETS holds them all
    model = tasks.build_model("depth", preset="nyu", size="sd15")

A new task registers itself with `register(MyTask())` (docs/architecture.md: how to add a task).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import fields, replace

from mp_deploy.configs import Preset, get_size
from mp_deploy.errors import DataError, UsageError
from mp_deploy.images import MAX_PIXELS
from mp_deploy.tasks.base import Task
from mp_deploy.tasks.depth import DepthTask
from mp_deploy.tasks.pose import PoseTask
from mp_deploy.tasks.seg import SegTask
from mp_deploy.util import check_name

_TASKS: dict[str, Task] = {}
PRESETS: dict[str, Preset] = {}  # every registered task's presets by name


def register(task: Task) -> Task:
    """Add a task and its presets (UsageError when a name is taken)."""
    if task.name in _TASKS:
        raise UsageError(f"task {task.name!r} is registered already")
    clash = [p.name for p in task.presets if p.name in PRESETS]
    if clash:
        raise UsageError(f"task {task.name!r}: preset(s) {', '.join(clash)} belong to another task")
    for p in task.presets:
        if p.task != task.name:
            raise UsageError(f"task {task.name!r}: its preset {p.name!r} says task {p.task!r}")
    _TASKS[task.name] = task
    PRESETS.update((p.name, p) for p in task.presets)
    return task


def unregister(name: str) -> None:
    """Remove a task and its presets (tests that register one of their own)."""
    task = _TASKS.pop(name)
    for p in task.presets:
        PRESETS.pop(p.name, None)


@contextlib.contextmanager
def registered(task: Task):
    """The task registered inside the block only."""
    register(task)
    try:
        yield task
    finally:
        unregister(task.name)


def get(name: str) -> Task:
    if name not in _TASKS:
        raise UsageError(f"unknown task {name!r}; choose one of {', '.join(_TASKS)}")
    return _TASKS[name]


def names() -> tuple[str, ...]:
    return tuple(_TASKS)


def all_tasks() -> tuple[Task, ...]:
    return tuple(_TASKS.values())


def help_text() -> str:
    """--task's help: each task's few words."""
    parts = [t.help for t in _TASKS.values()]
    return ", ".join(parts[:-1]) + (" or " if len(parts) > 1 else "") + parts[-1]


# ------------------------------------------------------------------ presets

def get_preset(name: str, **overrides) -> Preset:
    if name not in PRESETS:
        raise UsageError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return replace(PRESETS[name], **overrides) if overrides else PRESETS[name]


def default_preset(task: str) -> Preset:
    return PRESETS[get(task).default_preset]


# Bounds of the numbers a preset may hold, far beyond any real model's and checked before anything is built (a
# checkpoint's metadata is read from a file: 10^6 refinement steps would take minutes to refuse otherwise).
PRESET_BOUNDS = {"refine_steps": (1, 16), "num_prompts": (1, 4096), "num_classes": (0, 65536),
                 "num_keypoints": (0, 1024), "resize_scale": (0, 16), "max_depth": (0.0, 1e5),
                 "png16_scale": (0.0, 1e6), "window": (8, 4096)}


def check_preset(p: Preset) -> None:
    """Values a model can be built from: every number within PRESET_BOUNDS, dropout in [0, 1), and the task's
    own fields (its Task.check_preset)."""
    task = get(p.task)
    for name, (lo, hi) in PRESET_BOUNDS.items():
        values = getattr(p, name)
        for value in values if isinstance(values, tuple) else (values,):
            if not lo <= value <= hi:
                raise UsageError(f"preset {p.name!r}: {name} {values!r} is out of bounds (from {lo} to {hi})")
    if not 0.0 <= p.dropout < 1.0:
        raise UsageError(f"preset {p.name!r}: dropout must be in [0, 1), got {p.dropout}")
    task.check_preset(p)


# Limits on the work of one image through its protocol, computed from its size (Task.work) and checked before
# anything is resized or run. Every reference protocol at its data set's image sizes fits with TTA on: ADE20K's
# multi-scale flip of a 512x2048 image runs 162 crops, 100 pose boxes with flip 200, KITTI 32 windows.
MAX_WINDOWS = 200  # network inputs per image (windows, crops and their flips)
MAX_RESIZED_PIXELS = MAX_PIXELS  # the largest image a protocol may resize to: an image's own cap


def check_work(task: str, protocol, height: int, width: int, boxes=None) -> None:
    """DataError when an image of this size would run more than MAX_WINDOWS network inputs through the task's
    protocol or be resized past MAX_RESIZED_PIXELS (a 529-byte 32x4096 PNG asks for 256 depth windows; a
    32x1048576 one for a 537-megapixel resize). The message starts with the size: callers prefix the input."""
    work = get(task).work(protocol, height, width, boxes)
    if work.pixels > MAX_RESIZED_PIXELS:
        raise DataError(f"{width}x{height} would be resized to {work.pixels} pixels by the {task} protocol, more "
                        f"than the {MAX_RESIZED_PIXELS} it may compute (crop or resize it first)")
    if work.windows > MAX_WINDOWS:
        raise DataError(f"{width}x{height} would take {work.windows} network runs by the {task} protocol, more than "
                        f"the {MAX_WINDOWS} an image may take (an extreme aspect ratio or too many boxes: crop the "
                        "image or split the boxes)")


def preset_from_dict(d: dict) -> Preset:
    """A Preset from a dict read from a file (checkpoint metadata, sidecar): every field checked, so that a
    wrong one is named instead of failing later."""
    if not isinstance(d, dict):
        raise UsageError(f"a preset must be a JSON object, got {type(d).__name__}")
    known = {f.name: f for f in fields(Preset)}
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise UsageError(f"unknown preset field(s): {', '.join(map(repr, unknown))}")
    missing = [name for name in ("name", "task") if name not in d]
    if missing:
        raise UsageError(f"preset lacks {', '.join(missing)}")
    values = {}
    for name, value in d.items():
        kind = known[name].type
        if kind == "str":
            ok = isinstance(value, str)
        elif kind == "int":
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif kind == "float":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            value = float(value) if ok else value
        else:  # window
            ok = isinstance(value, (list, tuple)) and len(value) == 2 and all(
                isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
            value = tuple(value) if ok else value
        if not ok:
            raise UsageError(f"preset field {name!r} has a wrong value {value!r} (expected {kind})")
        values[name] = value
    try:
        check_name(values["name"], "preset name")
    except ValueError as e:
        raise UsageError(str(e)) from None
    if values["task"] not in _TASKS:
        raise UsageError(f"preset task {values['task']!r} is not one of {', '.join(_TASKS)}")
    preset = Preset(**values)
    check_preset(preset)
    return preset


# ------------------------------------------------------------------ models

def build_model(task: str | None = None, preset: str | Preset | None = None, size="sd15", device=None, dtype=None,
                init: bool = True, **preset_overrides):
    """A task model (its Task.model_class). `init=False` builds on the meta device (fast; every weight must then
    be loaded with assign)."""
    import torch

    if preset is None:
        if task is None:
            raise UsageError(f"give a task ({', '.join(_TASKS)}) or a preset")
        preset = get(task).default_preset
    if isinstance(preset, str):
        preset = get_preset(preset, **preset_overrides)
    if task is not None and preset.task != task:
        get(task)
        raise UsageError(f"preset {preset.name!r} is for task {preset.task!r}, not {task!r}")
    check_preset(preset)
    if isinstance(size, str):
        size = get_size(size)
    cls = get(preset.task).model_class()
    if not init:
        with torch.device("meta"):
            return cls(size, preset)
    model = cls(size, preset).init_weights()
    return model.to(device=device, dtype=dtype)


def seeded_model(task: str, size: str = "tiny", seed: int = 0, **kw):
    """Deterministic random weights (mp_deploy.models.seed_weights), for tests and speed measurements."""
    from mp_deploy.models import seed_weights

    return seed_weights(build_model(task, size=size, init=False, **kw), seed)


for _task in (DepthTask(), SegTask(), PoseTask()):
    register(_task)
