"""The bundled demo models as artifacts: what `mp-deploy build --task T` writes with no checkpoint (today the
trained demo checkpoints of mp_deploy.demo), built once into a cache folder and reused afterwards (build skips
artifacts that are up to date, and rebuilds when the checkpoint changes). The one place the commands that need "the
demo models when none is named" find them, so they follow whatever `mp-deploy build` produces by default."""
from __future__ import annotations

import os
from pathlib import Path

from mp_deploy import backends, tasks
from mp_deploy.errors import BuildError

BATCH = (1, 1, 8)  # the batch range of the demo artifacts: dynamic batching forms batches of up to 8


def cache_dir() -> Path:
    """$MP_DEPLOY_CACHE, else $XDG_CACHE_HOME/mp-deploy, else ~/.cache/mp-deploy."""
    root = os.environ.get("MP_DEPLOY_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() \
        / "mp-deploy"
    return Path(root) / "demo"


def demo_artifacts(names=None, folder: str | os.PathLike | None = None) -> list[Path]:
    """One artifact per task of the default build (built on first use) for batches of 1 to 8: TensorRT or
    AOTInductor on a GPU, ONNX on a CPU (a CPU AOTInductor build takes minutes and runs no faster here)."""
    import torch

    from mp_deploy.export.build_engine import BuildSpec, build

    folder = Path(folder) if folder else cache_dir()
    backend = "auto" if torch.cuda.is_available() else "onnx"
    preference = backends.gpu_preference()  # the fastest runnable artifact of a build, for serving
    paths = []
    for task in names or tasks.names():
        built = [a for a in build(BuildSpec(task=task, backend=backend, output=str(folder), runs=1, batch=BATCH))
                 if a.ok]
        if not built:
            raise BuildError(f"no demo {task} artifact passed its parity check in {folder}")
        paths.append(min(built, key=lambda a: preference.index(a.backend)).path)
    return paths
