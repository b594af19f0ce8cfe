"""What predict runs its windows through: an exported artifact (Engine.load), a checkpoint run eagerly
(Engine.from_model), a Triton server (mp_deploy.client), or the bundled demo model when nothing is named; fitted
to one window and batch range: `Runner.run(batch)` takes float RGB (B, 3, h, w) in [0, 1] and returns the raw task
output."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from mp_deploy import backends, tasks
from mp_deploy.engine import Engine, EngineFailure
from mp_deploy.errors import UsageError
from mp_deploy.tasks import get_preset, preset_from_dict
from mp_deploy.util import sha256_file

PRECISIONS = ("auto", "fp32", "fp16")
DEFAULT_BATCH = 8  # windows per engine call when the artifact allows it
EAGER_MULTIPLE = 64  # the window sides an eager model takes (export's shape rule)


@dataclass
class Source:
    """What to run (at most one of engine / checkpoint / server; none: the bundled demo model)."""

    task: str | None = None
    engine: str | None = None  # an artifact, or a folder of them (`--backend` picks)
    checkpoint: str | None = None  # our .safetensors or an official checkpoint, run eagerly
    server: str | None = None  # a Triton server URL (mp-deploy serve)
    server_model: str | None = None  # its model name (default: <task>-<preset>)
    preset: str | None = None
    backend: str = "auto"
    device: str | None = None
    precision: str = "auto"
    batch_size: int | None = None
    height: int | None = None  # the window (default: the artifact's opt shape, else the preset's)
    width: int | None = None


def backend_choices() -> tuple[str, ...]:
    """What predict's --backend takes: auto, eager (a checkpoint as it is), or a registered backend."""
    return (backends.AUTO, backends.EAGER, *backends.names())


class Runner:
    def __init__(self, source: Source):
        s = source
        if sum(bool(v) for v in (s.engine, s.checkpoint, s.server)) > 1:
            raise UsageError("give one of --engine, --checkpoint or --server")
        for name in ("backend", "precision"):
            allowed = backend_choices() if name == "backend" else PRECISIONS
            if getattr(s, name) not in allowed:
                raise UsageError(f"unknown {name} {getattr(s, name)!r}; choose one of {', '.join(allowed)}")
        if s.device == "cuda" and not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA device here")
        self.engine: Engine | None = None
        if s.server:
            self._server(s)
        elif s.engine:
            self._artifact(s)
        else:
            self._eager(s)
        if s.task is not None and s.task != self.task:
            raise UsageError(f"{self.name} is a {self.task} model, not {s.task}")
        self._fit(s)

    # ------------------------------------------------------------ sources

    def _artifact(self, s: Source) -> None:
        path = pick_artifact(Path(s.engine), s.backend, s.task, None if s.precision == "auto" else s.precision)
        self.engine = Engine.load(path, s.device)
        meta = self.engine.meta
        if s.backend not in (backends.AUTO, meta["backend"]):
            raise UsageError(f"{path} is a {meta['backend']} artifact, not {s.backend}")
        if s.precision not in ("auto", meta["precision"]):
            raise UsageError(f"{path} was built for {meta['precision']}; rebuild it for {s.precision}")
        self.task, self.preset, self.name = meta["task"], preset_from_dict(meta["preset"]), path.name
        self.identity = {"engine": path.name, "sha256": meta["file_sha256"]}
        self._check_preset(s)

    def _eager(self, s: Source) -> None:
        from mp_deploy.checkpoints import load_model
        from mp_deploy.precision import to_precision

        if s.backend not in (backends.AUTO, backends.EAGER):
            raise UsageError(f"--backend {s.backend} runs an exported artifact: give --engine FILE (build one with "
                             f"mp-deploy build --backend {s.backend})")
        path = Path(s.checkpoint) if s.checkpoint else demo_checkpoint(s.task)
        if not path.is_file():
            raise UsageError(f"checkpoint not found: {path}")
        model = load_model(path, preset=s.preset)
        device = s.device or ("cuda" if torch.cuda.is_available() else "cpu")
        precision = s.precision if s.precision != "auto" else ("fp16" if device == "cuda" else "fp32")
        model = to_precision(model, precision).to(device)
        self.engine = Engine.from_model(model, precision, device)
        self.task, self.preset, self.name = model.task, model.preset, path.name
        self.identity = {"checkpoint": path.name, "sha256": sha256_file(path), "precision": precision}
        self._check_preset(s)

    def _server(self, s: Source) -> None:
        try:
            from mp_deploy.client import Client, ServerError
        except ImportError:
            raise UsageError("--server: the Triton client (mp_deploy.client) is not in this install") from None
        if s.task is None:
            raise UsageError("--server needs --task (and --preset when it is not the task's default)")
        self.task, self.preset = s.task, get_preset(s.preset or tasks.get(s.task).default_preset)
        self.name = s.server_model or f"{self.task}-{self.preset.name}"  # how mp-deploy serve names models
        self.identity = {"server": s.server, "model": self.name}
        connection, output = Client(s.server), tasks.get(self.task).output_name
        if not connection.ready(self.name):  # a run-wide failure, not one per input
            raise ServerError(f"--server {s.server}: not reachable or not ready, or it serves no model "
                              f"{self.name!r} (--server-model names it)")
        # windows in [0, 1] are sent as 8-bit images (the server's input): within half a grey level
        self._client = lambda x: connection.infer(self.name, x)[output]

    def _check_preset(self, s: Source) -> None:
        if s.preset not in (None, self.preset.name):
            raise UsageError(f"{self.name} carries preset {self.preset.name!r}, not {s.preset!r}")

    # ------------------------------------------------------------ window and batch

    def _fit(self, s: Source) -> None:
        shapes = self.engine.meta.get("shapes") if self.engine else None
        opt = (shapes["height"][1], shapes["width"][1]) if shapes else tuple(self.preset.window)
        self.window = (s.height or opt[0], s.width or opt[1])
        lo, hi = (shapes["batch"][0], shapes["batch"][2]) if shapes else (1, None)
        if s.batch_size is not None and hi is not None and s.batch_size > hi:
            raise UsageError(f"--batch-size {s.batch_size}: {self.name} takes at most {hi} samples per call")
        self.max_batch = s.batch_size or min(DEFAULT_BATCH, hi or DEFAULT_BATCH)
        self.min_batch = min(lo, self.max_batch)
        self.fixed = shapes is not None  # an artifact: every window padded to its exact size
        if self.engine is not None and shapes:
            self.engine.check_shape((self.min_batch, 3, *self.window))  # EngineError: the window it cannot take
        elif self.engine is not None and any(side % EAGER_MULTIPLE for side in self.window):
            raise UsageError(f"window {self.window[0]}x{self.window[1]}: an eager model takes sides that are "
                             f"multiples of {EAGER_MULTIPLE}")
        self.device = self.engine.device if self.engine else "cpu"

    # ------------------------------------------------------------ running

    def run(self, batch: torch.Tensor, stopwatch=None) -> torch.Tensor:
        """The raw output (float32) of float RGB windows in [0, 1]; `stopwatch` times normalisation as
        preprocess and the network call as engine."""
        if stopwatch:
            stopwatch.enter("preprocess")
        if self.engine is None:
            if stopwatch:
                stopwatch.enter("engine")
            raw = self._client(batch).float()
        else:
            x = self.engine.preprocess(batch)
            if stopwatch:
                stopwatch.enter("engine")
            raw = self.engine.runner(x).float()
            if raw.is_cuda:
                torch.cuda.synchronize()  # the engine's time is its own, not the next stage's
        if stopwatch:
            stopwatch.enter("postprocess")
        if not torch.isfinite(raw).all():
            raise EngineFailure(f"{self.name}: the output contains NaN or inf")
        return raw


def demo_checkpoint(task: str | None) -> Path:
    """The bundled demo model of `task` (mp_deploy.demo)."""
    if task is None:
        raise UsageError("no model named: give --task to use the bundled demo model, or --checkpoint / --engine")
    try:
        from mp_deploy import demo
    except ImportError:
        raise UsageError("no model named and the bundled demo models (mp_deploy/demo) are not in this install: "
                         "give --checkpoint or --engine") from None
    return Path(demo.checkpoint(task))


def pick_artifact(path: Path, backend: str, task: str | None, precision: str | None = None,
                  threads: int | None = None) -> Path:
    """`path` itself, or in a folder the artifact of `task` (and `precision`, None: any) for `backend` that runs
    here; auto and a backend with several artifacts choose by mp_deploy.backends.auto_choice: on a GPU machine the
    backend of lowest rank, on a CPU machine the fastest that `mp-deploy build` measured on this machine (else the
    rank order); CUDA artifacts only with a GPU, never one that failed its parity check while another is left."""
    if not path.is_dir():
        if not path.exists():
            raise UsageError(f"--engine {path}: no such file or folder")
        return path
    chosen, why = backends.choose(path, backend, task, precision, threads)
    if chosen is None:
        raise UsageError(f"--engine {path}: {why}")
    return chosen
