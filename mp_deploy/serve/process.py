"""`mp-deploy serve` as a child process on free loopback ports, for the tests and the load test: start it in the
serve venv, wait until a model is ready, read its memory, stop it with SIGTERM, and list what it left behind."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the checkout (an editable install)


def serve_python() -> Path | None:
    """The Python of the serve venv: $MP_DEPLOY_SERVE_PYTHON, else .venv-serve/bin/python in the checkout; None
    if neither exists."""
    path = Path(os.environ.get("MP_DEPLOY_SERVE_PYTHON") or ROOT / ".venv-serve/bin/python")
    return path if path.exists() else None


def free_ports(n: int = 3) -> list[int]:
    """n distinct loopback ports that are free now (held together while they are chosen)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def session_processes(sid: int) -> list[int]:
    """Live (not zombie) processes of session `sid`."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


class ServeProcess:
    """`mp-deploy serve ARGS` in a session of its own (so that its tritonserver and Python stubs can be found),
    with PyTriton's workspaces under `workdir`/pytriton and its output in `workdir`/serve.log."""

    def __init__(self, python, args: list[str], workdir: Path):
        self.http, self.grpc, self.metrics = free_ports()
        self.home, self.log = Path(workdir) / "pytriton", Path(workdir) / "serve.log"
        env = dict(os.environ, PYTRITON_HOME=str(self.home))
        env.pop("TRITON_INTERPRET", None)  # the test suite's Triton-kernel setting, nothing the server needs
        cmd = [str(python), "-m", "mp_deploy.cli", "serve", "--address", "127.0.0.1", "--http-port", str(self.http),
               "--grpc-port", str(self.grpc), "--metrics-port", str(self.metrics), *map(str, args)]
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def url(self, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.http if scheme == 'http' else self.grpc}"

    def output(self, chars: int = 3000) -> str:
        return self.log.read_text()[-chars:]

    def wait_ready(self, model: str, timeout_s: float) -> "ServeProcess":
        """Return once `model` is ready; RuntimeError if the server exits or is not ready within timeout_s."""
        from mp_deploy.client import Client

        deadline = time.monotonic() + timeout_s
        with Client(self.url()) as client:
            while not client.ready(model):
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the server exited with {self.proc.returncode}:\n{self.output()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the server was not ready after {timeout_s} s:\n{self.output()}")
                time.sleep(0.5)
        return self

    def rss_mb(self) -> float:
        """Resident memory of the server and its children (tritonserver, Python stubs), MB."""
        kb = 0
        for pid in session_processes(self.proc.pid):
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            kb += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
        return kb / 1024

    def stop(self, timeout_s: float = 60) -> int:
        """SIGTERM -> its exit status; killed (with its session) and -9 when it takes more than timeout_s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9

    def kill(self) -> None:
        for pid in session_processes(self.proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(10)

    def leftovers(self, grace_s: float = 5) -> list[str]:
        """Processes of its session and PyTriton workspaces still there after stop (none), given `grace_s` for its
        multiprocessing helpers (resource tracker), which end on their own once the server has gone."""
        deadline = time.monotonic() + grace_s
        while session_processes(self.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        return [f"process {pid}" for pid in session_processes(self.proc.pid)] + \
            [f"workspace {p}" for p in sorted(self.home.glob("*"))]
