"""The bundled demo models: the tiny size trained from scratch on synthetic scenes (presets synthetic-depth,
synthetic-seg, synthetic-pose; docs/training.md has the commands, wall times and held-out metrics), stored as
fp16 safetensors in our checkpoint format, with one held-out sample image per task.

    from mp_deploy import demo
    from mp_deploy.checkpoints import load_model
    model = load_model(demo.checkpoint("depth"))      # fp32 on load
    demo.sample_image("depth")                         # a PNG of the preset's window size
"""
from __future__ import annotations

from pathlib import Path

from mp_deploy.errors import MpDeployError, UsageError

TASKS = ("depth", "seg", "pose")
FOLDER = Path(__file__).parent


def _file(task: str, suffix: str) -> Path:
    if task not in TASKS:
        raise UsageError(f"no demo model for task {task!r}; choose one of {', '.join(TASKS)}")
    path = FOLDER / f"{task}{suffix}"
    if not path.is_file():
        raise MpDeployError(f"the demo file {path} is missing from this installation")
    return path


def checkpoint(task: str) -> Path:
    """The demo model of `task` (our .safetensors format: mp_deploy.checkpoints.load_model)."""
    return _file(task, ".safetensors")


def sample_image(task: str) -> Path:
    """A held-out synthetic image for `task` (pose: a person crop) at the demo preset's window size."""
    return _file(task, ".png")
