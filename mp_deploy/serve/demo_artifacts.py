"""The bundled demo models as artifacts: what `mp-deploy build --task T` writes with no checkpoint (today the
trained demo checkpoints of mp_deploy.demo), built once into a cache folder and reused afterwards (build skips
artifacts that are up to date, and rebuilds when the checkpoint changes). The one place the commands that need "the
demo models when none is named" find them, so they follow whatever `mp-deploy build` produces by default."""
from __future__ import annotations

import os
from pathlib import Path

from mp_deploy.errors import BuildError

TASKS = ("depth", "seg", "pose")
PREFERENCE = ("tensorrt", "aoti", "onnx")  # the fastest runnable artifact of a build, for serving


def cache_dir() -> Path:
    """$MP_DEPLOY_CACHE, else $XDG_CACHE_HOME/mp-deploy, else ~/.cache/mp-deploy."""
    root = os.environ.get("MP_DEPLOY_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() \
        / "mp-deploy"
    return Path(root) / "demo"


def demo_artifacts(tasks=TASKS, folder: str | os.PathLike | None = None) -> list[Path]:
    """One artifact per task of the default build (built on first use): TensorRT or AOTInductor on a GPU, ONNX
    on a CPU (a CPU AOTInductor build takes minutes and runs no faster here)."""
    import torch

    from mp_deploy.export.build_engine import BuildSpec, build

    folder = Path(folder) if folder else cache_dir()
    backend = "auto" if torch.cuda.is_available() else "onnx"
    paths = []
    for task in tasks:
        built = [a for a in build(BuildSpec(task=task, backend=backend, out_dir=str(folder), runs=1)) if a.ok]
        if not built:
            raise BuildError(f"no demo {task} artifact passed its parity check in {folder}")
        paths.append(min(built, key=lambda a: PREFERENCE.index(a.backend) if a.backend in PREFERENCE else 99).path)
    return paths
