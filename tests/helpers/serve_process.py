"""`mp-deploy serve` as a child process on free loopback ports, for the tests and the load test
(benchmarks/load_test.py): start it, wait until a model is ready, read its memory, stop it with SIGTERM, and list
what it left behind. The server runs in this Python's environment ($MP_DEPLOY_SERVE_PYTHON names another)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

# files others leave in the temporary folder on purpose: ONNX Runtime's session id (written on import, reused)
FOREIGN = {".ses"}


def serve_python() -> Path | None:
    """The Python that runs the server: $MP_DEPLOY_SERVE_PYTHON, else this one; None when the one named does not
    exist."""
    path = Path(os.environ.get("MP_DEPLOY_SERVE_PYTHON") or sys.executable)
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
    its temporary files under `workdir`/tmp and its output in `workdir`/serve.log. The ports are chosen free; if
    another process takes one before the server binds it, the server says so and is started again on new ones
    (at most PORT_RETRIES times)."""

    PORT_RETRIES = 3

    def __init__(self, python, args: list[str], workdir: Path):
        self.python, self.args, self.workdir = python, [str(a) for a in args], Path(workdir)
        self.home, self.log = self.workdir / "tmp", self.workdir / "serve.log"
        self.home.mkdir(parents=True, exist_ok=True)
        self.started = self.retries = 0
        self.start()

    def start(self) -> None:
        self.http, self.grpc, self.metrics = free_ports()
        env = dict(os.environ, TMPDIR=str(self.home))
        env.pop("TRITON_INTERPRET", None)  # the test suite's Triton-kernel setting, nothing the server needs
        cmd = [str(self.python), "-m", "mp_deploy.cli", "serve", "--address", "127.0.0.1", "--http-port",
               str(self.http), "--grpc-port", str(self.grpc), "--metrics-port", str(self.metrics), *self.args]
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(cmd, cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self.started = time.monotonic()

    def port_taken(self) -> bool:
        """It exited because one of its ports was taken meanwhile (its one-line usage error says so)."""
        return self.proc.poll() == 2 and "is in use" in self.output()

    def url(self, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.http if scheme == 'http' else self.grpc}"

    def output(self, chars: int = 3000) -> str:
        return self.log.read_text()[-chars:]

    def wait_ready(self, model: str, timeout_s: float, poll_s: float = 0.5) -> "ServeProcess":
        """Return once `model` is ready; RuntimeError if the server exits or is not ready within timeout_s."""
        from mp_deploy.client import Client

        deadline = time.monotonic() + timeout_s
        while True:
            with Client(self.url()) as client:
                if client.ready(model):
                    return self
            if self.port_taken() and self.retries < self.PORT_RETRIES:
                self.retries += 1
                self.start()
            elif self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}:\n{self.output()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server was not ready after {timeout_s} s:\n{self.output()}")
            time.sleep(poll_s)

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
        """Processes of its session and temporary files still there after stop (none), given `grace_s` for
        helpers that end on their own once the server has gone."""
        deadline = time.monotonic() + grace_s
        while session_processes(self.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        return [f"process {pid}" for pid in session_processes(self.proc.pid)] + \
            [f"temporary {p}" for p in sorted(self.home.iterdir()) if p.name not in FOREIGN]
