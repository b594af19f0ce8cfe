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

FOLDER = Path(__file__).parent


def tasks_with_demo() -> tuple[str, ...]:
    """The registered tasks that have a bundled demo model (a <task>.safetensors here)."""
    from mp_deploy import tasks

    return tuple(t for t in tasks.names() if (FOLDER / f"{t}.safetensors").is_file())


def _file(task: str, suffix: str) -> Path:
    from mp_deploy import tasks

    if task not in tasks.names():
        raise UsageError(f"no demo model for task {task!r}; choose one of {', '.join(tasks_with_demo())}")
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
