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
    """One artifact per task of the default build (`mp-deploy build --backend auto`, built on first use) for
    batches of 1 to 8, the one `--backend auto` runs here (mp_deploy.backends.choose: on a GPU the backend of
    lowest rank; on a CPU the fastest that the build measured on this machine). On a CPU the first use builds an
    AOTInductor package (minutes) beside the ONNX model: whichever measured faster here is served."""
    from mp_deploy.export.build_engine import BuildSpec, build

    folder = Path(folder) if folder else cache_dir()
    paths = []
    for task in names or tasks.names():
        built = [a for a in build(BuildSpec(task=task, backend=backends.AUTO, output=str(folder), runs=5,
                                            batch=BATCH)) if a.ok]
        if not built:
            raise BuildError(f"no demo {task} artifact passed its parity check in {folder}")
        chosen, why = backends.choose(folder, task=task, only=[a.path for a in built])
        chosen = chosen or built[0].path
        print(f"serving {chosen.name}: {why}", flush=True)
        paths.append(chosen)
    return paths
