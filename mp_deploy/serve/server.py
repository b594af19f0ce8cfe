"""`mp-deploy serve`: artifacts on NVIDIA Triton Inference Server (the tritonserver nvidia-pytriton bundles), on one
machine.

    mp-deploy serve --engine depth-nyu-tiny-fp32.onnx [--engine ...] [--http-port 8000 --grpc-port 8001 ...]
    mp-deploy serve --repository triton-repo/      # a model repository of Python-backend models (triton-repo)

Each artifact is served as the model `<task>-<preset>`: uint8 images (N, H, W, 3) in, the task's outputs out (the
arrays `Engine.run` returns), dynamic batching up to the artifact's max batch. How:

1. the artifacts become a model repository of Python-backend models running our Engine (mp-deploy triton-repo
   --python-backend), each warmed up at every batch size dynamic batching can form;
2. tritonserver loads every model before it opens its endpoints, on internal loopback ports
   (mp_deploy.serve.tritonserver);
3. then the front (mp_deploy.serve.front) opens the public HTTP and gRPC ports: the server is ready from its
   first answer, and health never says ready while a model is not. The front checks every inference request
   (shape, datatype, sizes, uint8 range) and refuses a bad one as a client error (HTTP 400 / gRPC
   INVALID_ARGUMENT) naming the rule before tritonserver sees it; Engine's own checks inside the model are
   client errors too (INVALID_ARG).

SIGTERM (or SIGINT) closes the front, stops tritonserver, removes the temporary repository and exits 0. A busy
port is named before anything starts. No artifact named: the bundled demo models (mp_deploy.serve.demo_artifacts).
"""
from __future__ import annotations

import argparse
import asyncio
import threading
import os
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from urllib.error import URLError
from urllib.request import urlopen

from mp_deploy import cli
from mp_deploy.errors import MpDeployError, UsageError
from mp_deploy.serve.spec import ModelSpec, describe

PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}  # Triton's defaults
READY_TIMEOUT_S = 900  # model load and warm-up of every artifact (a full-size TensorRT load takes minutes)


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


# ------------------------------------------------------------------ the server

def free_loopback_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def wait_ready(triton, models: list[str], timeout_s: float, stop) -> bool:
    """Until the internal server's health and every model say ready (True), or `stop` is set (False); ServeError
    if it exits or takes longer than timeout_s."""
    base = f"http://127.0.0.1:{triton.ports['http']}"
    deadline = time.monotonic() + timeout_s
    while not stop.is_set():
        if not triton.alive():
            raise ServeError(f"tritonserver exited with {triton.process.returncode} while loading the models:\n"
                             f"{triton.output()}")
        try:
            with urlopen(f"{base}/v2/health/ready", timeout=2) as answer:
                ready = answer.status == 200
            for name in models if ready else ():
                with urlopen(f"{base}/v2/models/{name}/ready", timeout=2) as answer:
                    ready = ready and answer.status == 200
            if ready:
                return True
        except (URLError, OSError):
            pass  # not listening yet, or a 400 while loading
        if time.monotonic() > deadline:
            raise ServeError(f"tritonserver was not ready after {timeout_s:.0f} s:\n{triton.output()}")
        time.sleep(0.2)
    return False


class AsyncStop:
    """The asyncio side of the threading.Event the signal handlers set."""

    def __init__(self, event):
        self.event = event

    def is_set(self) -> bool:
        return self.event.is_set()

    async def wait(self) -> None:
        while not self.event.is_set():
            await asyncio.sleep(0.1)


def rules_of(specs: list[ModelSpec], repository: Path | None) -> dict:
    """model name -> InputRule: from the artifacts' contracts, or from a repository's configs."""
    from mp_deploy.serve.requests import InputRule

    rules = {spec.name: InputRule.of(spec) for spec in specs}
    for name, config in repository_configs(repository).items():
        image = config.input[0]
        side = lambda d: (d, d) if d > 0 else (1, 1 << 16)  # noqa: E731 (a -1 side: bounded by the pixel cap)
        rules[name] = InputRule(name, image.name, config.max_batch_size, side(image.dims[0]), side(image.dims[1]))
    return rules


def default_instances(specs: list[ModelSpec]) -> int:
    """Instances of each model when --instances is not given: on CPU, as many as the CPUs hold at the thread policy's
    count each (cpu_threads.py: one per 1-thread engine on a 2-core machine, so that concurrent requests use every
    core), 1 where any artifact runs on a GPU."""
    from mp_deploy.cpu_threads import available_cpus, cpu_threads

    if any(s.meta.get("device") != "cpu" for s in specs):
        return 1
    return max(1, available_cpus() // cpu_threads())


def serve(specs: list[ModelSpec], address: str, ports: dict[str, int], repository: Path | None = None,
          log=print, instances: int | None = None) -> None:
    """Run tritonserver with `specs` (or `repository`'s models) behind the front until SIGTERM/SIGINT; return once
    both are stopped and the temporary files removed. ServeError if the server dies on its own. `instances`: of
    each model (None: default_instances)."""
    from mp_deploy.serve.front import Front, run_until
    from mp_deploy.serve.repo import write_repository
    from mp_deploy.serve.tritonserver import TritonServer, find_bundle

    check_ports(address, ports)
    find_bundle()  # UsageError before anything starts when nvidia-pytriton is missing
    rules = rules_of(specs, repository)
    with tempfile.TemporaryDirectory(prefix="mp-deploy-serve-") as work, StopSignals() as stop:
        work = Path(work)
        if repository is None:
            instances = instances or default_instances(specs)
            repository = write_repository([s.path for s in specs], work / "repo", python_backend=True,
                                          instances=instances, log=lambda msg: None) / "models"
        http, grpc_port = free_loopback_ports(2)
        triton = TritonServer(repository, {"http": http, "grpc": grpc_port}, (address, ports["metrics"]), work)
        try:
            triton.start()
            if not wait_ready(triton, sorted(rules), READY_TIMEOUT_S, stop):
                log("stopped before the models were ready")
                return
            for name, rule in sorted(rules.items()):
                log(f"model {name}: uint8 images {rule.dims()} (loaded and warmed up at batch 1..{rule.max_batch}"
                    + (f", {instances} instances)" if instances else ")"))
            front = Front({"http": http, "grpc": grpc_port}, ports, address, rules, triton.key)
            log(f"ready: http://{address}:{ports['http']} (health /v2/health/ready), grpc {address}:{ports['grpc']}, "
                f"metrics http://{address}:{ports['metrics']}/metrics; SIGTERM or Ctrl-C stops it")
            how = asyncio.run(run_until(front, AsyncStop(stop), triton.alive))
            if how == "died":
                raise ServeError(f"tritonserver stopped on its own (exit {triton.process.poll()}):\n"
                                 f"{triton.output()}")
        finally:
            triton.stop()
    log("stopped")


def repository_configs(repository: Path | None) -> dict:
    """name -> ModelConfig of the models clients call in a repository (ensemble steps left out)."""
    if repository is None:
        return {}
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    configs, steps = {}, set()
    for path in sorted(Path(repository).glob("*/config.pbtxt")):
        config = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
        configs[path.parent.name] = config
        steps |= {step.model_name for step in config.ensemble_scheduling.step}
    return {name: c for name, c in configs.items() if name not in steps}


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
    ap.add_argument("--instances", type=cli.positive_int, default=None,
                    help="instances of each model (default: on CPU the CPUs divided by each engine's thread count, "
                         "MP_DEPLOY_CPU_THREADS else half the CPUs: 2 on a 2-core machine; 1 on GPU)")


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
    if repository is not None and args.instances:
        raise UsageError("--instances is for --engine artifacts; a --repository states its own instance groups")
    serve(specs, args.address, ports, repository, log=lambda msg: print(msg, flush=True), instances=args.instances)
    # stopped cleanly, workspace removed: skip the interpreter's teardown of torch, onnxruntime and gRPC, which
    # takes seconds on a busy machine while a supervisor waits for the exit after its SIGTERM
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
