"""The NVIDIA Triton Inference Server binary that nvidia-pytriton bundles, run directly (not through PyTriton's
model store): every model of a repository is loaded and warmed up before its endpoints open
(`--model-control-mode=none`), so the server is never "ready" with a model missing. It listens on internal
loopback ports only; mp_deploy.serve.front is what clients reach. Its inference, shared-memory, repository, trace
and logging APIs answer only requests that carry a per-run key (`--http-restricted-api`,
`--grpc-restricted-protocol`), which the front adds to the requests it has checked.
"""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

from mp_deploy.errors import UsageError

KEY_HEADER = "mp-deploy-key"  # lower case: gRPC metadata keys are
RESTRICTED = "inference,shared-memory,model-repository,trace,logging"  # only with the key: what the front checks
EXIT_TIMEOUT_S = 5  # tritonserver's wait for in-flight requests at shutdown (its default, 30 s, is too long)


@dataclass(frozen=True)
class Bundle:
    """Where nvidia-pytriton keeps tritonserver: the binary, its backends, the Python backend's stubs, libraries."""

    root: Path

    @property
    def binary(self) -> Path:
        return self.root / "bin" / "tritonserver"

    @property
    def python_backend(self) -> Path:
        return self.root / "backends" / "python"

    @property
    def stub(self) -> Path:
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        return self.root / "python_backend_stubs" / version / "triton_python_backend_stub"

    @property
    def libraries(self) -> Path:
        return self.root.parents[1] / "nvidia_pytriton.libs"


def find_bundle() -> Bundle:
    """The bundled server, checked to be complete for this Python (UsageError saying what is missing)."""
    try:
        import pytriton
    except ImportError as e:
        raise UsageError(f"mp-deploy serve needs the bundled tritonserver of nvidia-pytriton ({e}): "
                         "pip install -e '.[serve]'") from None
    bundle = Bundle(Path(pytriton.__file__).parent / "tritonserver")
    for what, path in (("tritonserver", bundle.binary), ("the Python backend", bundle.python_backend),
                       (f"the Python backend stub for Python {sys.version_info.major}.{sys.version_info.minor}",
                        bundle.stub)):
        if not path.exists():
            raise UsageError(f"nvidia-pytriton's bundle lacks {what} ({path})")
    return bundle


def backend_folder(bundle: Bundle, workdir: Path) -> Path:
    """A backend folder of links into the bundle, with the stub of this Python where tritonserver looks for it."""
    python = workdir / "backends" / "python"
    python.mkdir(parents=True, exist_ok=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        (python / name).symlink_to(bundle.python_backend / name)
    (python / "triton_python_backend_stub").symlink_to(bundle.stub)
    return workdir / "backends"


def environment(bundle: Bundle) -> dict:
    """tritonserver's environment: this interpreter's libpython and the bundle's libraries first on the library
    path (the stub links libpython3.X, and a system one fails at model load under a pyenv / venv Python), this
    environment's bin first on PATH (the stub runs `python`), no CUDA devices when the machine has none."""
    env = dict(os.environ)
    libdir = sysconfig.get_config_var("LIBDIR")
    paths = [p for p in (libdir, str(bundle.libraries)) if p]
    env["LD_LIBRARY_PATH"] = ":".join(paths + [p for p in env.get("LD_LIBRARY_PATH", "").split(":") if p])
    env["PATH"] = ":".join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.pop("TRITON_INTERPRET", None)  # the test suite's Triton-kernel setting, nothing the server needs
    return env


@dataclass
class TritonServer:
    """tritonserver on `repository` at internal loopback ports (`ports`: http, grpc) and the public metrics
    address; its output in workdir/tritonserver.log."""

    repository: Path
    ports: dict
    metrics: tuple[str, int]
    workdir: Path
    key: str = field(default_factory=lambda: secrets.token_hex(16))
    process: subprocess.Popen | None = None

    @property
    def log(self) -> Path:
        return self.workdir / "tritonserver.log"

    def command(self, bundle: Bundle) -> list[str]:
        backends = backend_folder(bundle, self.workdir)
        restricted = f"{RESTRICTED}:{KEY_HEADER}={self.key}"
        return [str(bundle.binary), f"--model-repository={self.repository}", "--model-control-mode=none",
                "--strict-readiness=true", "--exit-on-error=true", f"--exit-timeout-secs={EXIT_TIMEOUT_S}",
                f"--backend-directory={backends}", f"--cache-directory={bundle.root / 'caches'}",
                "--http-address=127.0.0.1", "--grpc-address=127.0.0.1", f"--metrics-address={self.metrics[0]}",
                f"--http-port={self.ports['http']}", f"--grpc-port={self.ports['grpc']}",
                f"--metrics-port={self.metrics[1]}", f"--http-restricted-api={restricted}",
                f"--grpc-restricted-protocol={restricted}", "--allow-gpu-metrics=false", "--log-verbose=0"]

    def start(self) -> "TritonServer":
        bundle = find_bundle()
        cmd = self.command(bundle)
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(cmd, env=environment(bundle), stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, process_group=0)  # its own group, our session
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def output(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL of its process group (the Python backend's stubs) after EXIT_TIMEOUT_S + 5 s."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(EXIT_TIMEOUT_S + 5)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # its stubs end after it; whatever is left is killed
            try:
                os.killpg(self.process.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return self.process.wait()
