"""Small programs the tests run in fresh processes, from tests/ as `python -m helpers.<name>` (see
tests/test_kernels.py `_run_helper`): a crash, a missing package or a GPU target set up there cannot touch the
test process. Each prints `ok` (or what the test reads) and asserts what it checks."""
import os
import subprocess
import sys
from pathlib import Path


def run(name: str, *args, **env) -> str:
    """stdout of `python -m helpers.<name> ARGS...` run from tests/ in a fresh process without TRITON_INTERPRET
    (compiled kernels, or none), with `env` added to the environment; asserts that it exits 0."""
    environ = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"} | env
    done = subprocess.run([sys.executable, "-X", "faulthandler", "-m", f"helpers.{name}", *map(str, args)],
                          cwd=Path(__file__).parents[1], capture_output=True, text=True, env=environ, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout
