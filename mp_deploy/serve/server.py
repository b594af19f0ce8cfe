"""`mp-deploy serve`: artifacts on NVIDIA Triton Inference Server through PyTriton, on one machine.

    mp-deploy serve --engine depth-nyu-tiny-fp32.onnx [--engine ...] [--http-port 8000 --grpc-port 8001 ...]
    mp-deploy serve --repository triton-repo/      # a model repository of Python-backend models (triton-repo)

Each artifact is served as the model `<task>-<preset>`: uint8 images (N, H, W, 3) in, the task's outputs out (the
arrays `Engine.run` returns), dynamic batching up to the artifact's max batch. Triton refuses a wrong dtype, shape
or batch size itself (HTTP 400, from the model config); `Engine`'s checks run before inference. Every engine is
warmed up before the server starts, so "ready" means ready. SIGTERM (or SIGINT) stops the server, removes
PyTriton's workspace and exits 0. No artifact named: the bundled demo models (mp_deploy.serve.demo_artifacts).

PyTriton pins numpy<2, so it lives in a venv of its own (the `serve` extra, README); only this module imports it.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import sysconfig
import threading
import time
from pathlib import Path

import numpy as np

from mp_deploy.errors import MpDeployError, UsageError
from mp_deploy.serve.spec import ModelSpec, describe

PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}  # Triton's defaults
EXIT_TIMEOUT_S = 5  # tritonserver's wait for in-flight requests at shutdown (its default, 30 s, is too long)


class ServeError(MpDeployError):
    """The server could not start or stopped on its own."""


# ------------------------------------------------------------------ checks and environment

def check_ports(address: str, ports: dict[str, int]) -> None:
    """UsageError naming the first port that is taken: a second server on busy ports otherwise fails with a
    misleading `[403] ... triton-access-token` message."""
    if len(set(ports.values())) < len(ports):
        raise UsageError(f"the HTTP, gRPC and metrics ports must differ, got {ports}")
    for what, port in ports.items():
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as tritonserver binds: TIME_WAIT is free
            try:
                s.bind((address, port))
            except OSError as e:
                raise UsageError(f"port {port} is in use ({what}; {e.strerror}): stop what holds it or choose "
                                 f"another with --{what}-port") from None


def use_this_libpython() -> None:
    """Put this interpreter's library folder first on LD_LIBRARY_PATH (tritonserver inherits it): the Python
    backend stub links libpython3.X, and the system's build fails at model load under a pyenv/venv Python
    (`'_thread.RLock' object has no attribute '_recursion_count'`)."""
    libdir = sysconfig.get_config_var("LIBDIR")
    paths = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
    if libdir and paths[:1] != [libdir]:
        os.environ["LD_LIBRARY_PATH"] = ":".join([libdir, *paths])


def import_pytriton():
    try:
        import pytriton.triton  # noqa: F401
    except ImportError as e:
        raise UsageError(f"PyTriton is not installed in {sys.prefix} ({e}); it pins numpy<2, so give it a venv of "
                         "its own: python -m venv .venv-serve && .venv-serve/bin/pip install -e '.[serve]' "
                         "(README, Serving)") from None
    import pytriton

    return pytriton


class StopSignals:
    """SIGTERM and SIGINT set an event instead of killing the process, so the server is stopped in order and its
    workspace removed (PyTriton itself only catches KeyboardInterrupt, and a background job ignores SIGINT)."""

    def __init__(self):
        self.event = threading.Event()

    def __enter__(self):
        self.previous = {s: signal.signal(s, lambda *_: self.event.set()) for s in (signal.SIGTERM, signal.SIGINT)}
        return self.event

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)


# ------------------------------------------------------------------ models

def load_engines(specs: list[ModelSpec], log=print) -> list:
    """Load and warm up every engine at each batch size dynamic batching can form (opt height and width): no
    request then pays for lazy initialisation or a new shape's allocations (ONNX Runtime plans memory per shape),
    and the server's memory is at its working level when it reports ready."""
    from mp_deploy.engine import Engine

    engines = []
    for spec in specs:
        engine = Engine.load(spec.path)
        h, w = spec.hw(1)
        t0 = time.perf_counter()
        for b in range(1, spec.max_batch + 1):
            engine.run(np.zeros((b, h, w, 3), np.uint8))
        log(f"{spec.name}: warmed up at batch 1..{spec.max_batch} in {time.perf_counter() - t0:.1f} s")
        engines.append(engine)
    return engines


def infer_function(engine, spec: ModelSpec):
    """The callable PyTriton runs on each dynamic batch: Engine.run (its input checks first), outputs as the
    config's dtypes."""
    from pytriton.decorators import batch

    dtypes = {t.name: t.dtype for t in spec.outputs()}

    @batch
    def infer(images):
        return {k: np.asarray(v.cpu(), dtype=dtypes[k]) for k, v in engine.run(images).items()}

    return infer


def bind(triton, spec: ModelSpec, engine) -> None:
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor

    tensors = lambda ts: [Tensor(name=t.name, dtype=t.dtype, shape=t.dims) for t in ts]  # noqa: E731
    triton.bind(model_name=spec.name, infer_func=infer_function(engine, spec), inputs=tensors(spec.inputs()),
                outputs=tensors(spec.outputs()), strict=True,
                config=ModelConfig(max_batch_size=spec.max_batch, batcher=DynamicBatcher()))


# ------------------------------------------------------------------ the server

def serve(specs: list[ModelSpec], address: str, ports: dict[str, int], repository: Path | None = None,
          log=print) -> None:
    """Run Triton with `specs` bound (or `repository`'s models) until SIGTERM/SIGINT; return once it is stopped
    and its workspace removed. ServeError if the server dies on its own."""
    check_ports(address, ports)
    import_pytriton()
    from pytriton.triton import Triton, TritonConfig

    engines = load_engines(specs, log)
    use_this_libpython()
    config = TritonConfig(http_address=address, grpc_address=address, metrics_address=address,
                          http_port=ports["http"], grpc_port=ports["grpc"], metrics_port=ports["metrics"],
                          exit_timeout_secs=EXIT_TIMEOUT_S, strict_readiness=True,
                          model_repository=repository.resolve() if repository else None)
    with StopSignals() as stop:
        triton = Triton(config=config)
        try:
            for spec, engine in zip(specs, engines):
                bind(triton, spec, engine)
            triton.run()  # starts tritonserver and waits until every model is loaded
            for spec in specs:
                log(f"model {spec.name}: {spec.path.name}, uint8 images (N, H, W, 3), N <= {spec.max_batch}")
            for name in repository_models(repository):
                log(f"model {name}: from {repository}")
            log(f"ready: http://{address}:{ports['http']} (health /v2/health/ready), grpc {address}:{ports['grpc']}, "
                f"metrics http://{address}:{ports['metrics']}/metrics; SIGTERM or Ctrl-C stops it")
            while not stop.wait(1.0):
                if not triton.is_alive():
                    raise ServeError("tritonserver stopped on its own (see its log above)")
        finally:
            triton.stop()  # stops tritonserver and the proxies, removes the workspace
    log("stopped")


def repository_models(repository: Path | None) -> list[str]:
    """The models of a repository, which the bundled tritonserver must be able to run (Python backend, ensembles);
    UsageError naming one it cannot."""
    if repository is None:
        return []
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    names = []
    for path in sorted(Path(repository).glob("*/config.pbtxt")):
        try:
            config = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
        except text_format.ParseError as e:
            raise UsageError(f"{path}: not a Triton model config ({e})") from None
        if config.backend != "python" and config.platform != "ensemble":
            raise UsageError(f"model {path.parent.name} runs on {config.backend or config.platform}, and the bundled "
                             "tritonserver has the Python backend only: write the repository with "
                             "`mp-deploy triton-repo --python-backend`")
        names.append(path.parent.name)
    if not names:
        raise UsageError(f"{repository} holds no model (no */config.pbtxt)")
    return names


# ------------------------------------------------------------------ command line

def add_arguments(ap: argparse.ArgumentParser) -> None:
    what = ap.add_mutually_exclusive_group()
    what.add_argument("--engine", action="append", metavar="FILE",
                      help="an artifact of `mp-deploy build` (repeat for several); default: the bundled demo models")
    what.add_argument("--repository", metavar="DIR", type=Path,
                      help="serve a model repository of `mp-deploy triton-repo --python-backend` instead (the "
                           "bundled tritonserver has the Python backend only)")
    ap.add_argument("--address", default="0.0.0.0", help="address the endpoints listen on (default all)")
    for name, port in PORTS.items():
        ap.add_argument(f"--{name}-port", type=int, default=port, metavar="PORT", help=f"default {port}")


def run(args: argparse.Namespace) -> int:
    ports = {name: getattr(args, f"{name}_port") for name in PORTS}
    repository = args.repository
    if repository is not None:
        if (repository / "models").is_dir():  # the --out folder of triton-repo
            repository = repository / "models"
        repository_models(repository)  # UsageError before anything starts
        specs = []
    else:
        from mp_deploy.serve.demo_artifacts import demo_artifacts

        specs = describe(args.engine or demo_artifacts())
    serve(specs, args.address, ports, repository, log=lambda msg: print(msg, flush=True))
    # stopped cleanly, workspace removed: skip the interpreter's teardown of torch, onnxruntime and gRPC, which
    # takes seconds on a busy machine while a supervisor waits for the exit after its SIGTERM
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
