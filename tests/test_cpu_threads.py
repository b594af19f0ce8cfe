"""The CPU thread and wait policy (mp_deploy/cpu_threads.py) as every CPU engine applies it: the count (an explicit
--threads, MP_DEPLOY_CPU_THREADS, else half the CPUs), the wait policy set before torch loads, and each runner
actually configured with it (torch for eager and AOTInductor packages, ONNX Runtime's session options)."""
import os
import subprocess
import sys

import pytest
import torch

from mp_deploy import cpu_threads
from mp_deploy.engine import Engine
from mp_deploy.errors import UsageError
from mp_deploy.tasks import seeded_model


@pytest.mark.parametrize("cpus, expected", [(1, 1), (2, 1), (3, 1), (8, 4), (64, 32)])
def test_default_is_half_the_cpus_this_process_may_use(monkeypatch, cpus, expected):
    # a 2-core machine runs one thread (a team of 2 collapsed to 839 ms beside another job, 1 thread: 71 ms)
    monkeypatch.delenv(cpu_threads.ENV, raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)))
    assert cpu_threads.cpu_threads() == expected


def test_explicit_count_and_environment_win_and_are_checked(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setenv(cpu_threads.ENV, "3")
    assert cpu_threads.cpu_threads() == 3 and cpu_threads.cpu_threads(5) == 5  # --threads beats the variable
    for bad in ("0", "-1", "two", "1" * 5000, "99999"):  # each named, never a raw int() traceback
        monkeypatch.setenv(cpu_threads.ENV, bad)
        with pytest.raises(UsageError, match=cpu_threads.ENV):
            cpu_threads.cpu_threads()


def _policy_after(code: str, **env) -> str:
    """OMP_WAIT_POLICY as a fresh interpreter sees it after `code` (torch not imported before it)."""
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", cpu_threads.ENV)}
    out = subprocess.run([sys.executable, "-c", code + "\nimport os; print(os.environ.get('OMP_WAIT_POLICY'))"],
                         capture_output=True, text=True, timeout=120, env=base | env, check=True)
    return out.stdout.strip().splitlines()[-1]


def test_threads_sleep_instead_of_spinning_when_there_is_a_team():
    # libgomp reads the policy once, when torch loads: the CLI sets it before any command imports torch
    prepare = "from mp_deploy.cpu_threads import prepare_environment; prepare_environment()"
    assert _policy_after(prepare, MP_DEPLOY_CPU_THREADS="4") == "PASSIVE"
    assert _policy_after(prepare, MP_DEPLOY_CPU_THREADS="1") == "None"  # one thread: no team to wait for
    assert _policy_after(prepare, MP_DEPLOY_CPU_THREADS="4", OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"  # the user's
    assert _policy_after("import torch\n" + prepare, MP_DEPLOY_CPU_THREADS="4") == "None"  # too late: left alone
    cli_main = ("from mp_deploy import cli\ntry:\n    cli.main(['golden', '--help'])\nexcept SystemExit:\n    pass")
    assert _policy_after(cli_main, MP_DEPLOY_CPU_THREADS="2") == "PASSIVE"


def test_engines_run_on_the_policy_count(depth_onnx):
    # torch's count for eager runs and AOTInductor packages; ONNX Runtime's own pool, which does not spin
    before = torch.get_num_threads()
    try:
        Engine.from_model(seeded_model("depth"), threads=3)
        assert torch.get_num_threads() == 3
        engine = Engine.load(depth_onnx, threads=2)
        options = engine.runner.session.get_session_options()
        assert options.intra_op_num_threads == 2 and options.inter_op_num_threads == 1
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_an_aoti_cpu_package_runs_at_more_threads_than_it_was_built_with(built):
    """A CPU .pt2 follows the runtime's thread count (backends/aoti.CPU_CONFIGS): built here with torch's default
    count, then run with 4 threads in a fresh process (a crash stays in that process), equal to 1 thread. Without
    Inductor's dynamic threads its per-thread buffers were sized for the build's count and a run at more threads
    wrote past them (SIGSEGV)."""
    out, artifacts = built("depth")
    pt2 = next(a.path for a in artifacts if a.path.suffix == ".pt2")
    code = ("import sys, torch\nfrom mp_deploy.engine import Engine\n"
            "x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))\n"
            "one = Engine.load(sys.argv[1], threads=1).runner(x)\n"
            "four = Engine.load(sys.argv[1], threads=4).runner(x)\n"
            "assert torch.get_num_threads() == 4\n"
            "print(float((one - four).norm() / one.norm()))\n")
    r = subprocess.run([sys.executable, "-c", code, str(pt2)], capture_output=True, text=True, timeout=600,
                       env={k: v for k, v in os.environ.items() if k != cpu_threads.ENV})
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    assert float(r.stdout.split()[-1]) <= 1e-5


@pytest.mark.parametrize("cpus, env, devices, expected", [
    (2, None, ["cpu"], 2),  # this project's machines: two 1-thread instances use both cores
    (8, "2", ["cpu", "cpu"], 4),  # MP_DEPLOY_CPU_THREADS=2: four 2-thread instances
    (1, None, ["cpu"], 1),  # never zero
    (8, None, ["cpu", "cuda"], 1),  # a GPU artifact: one instance (the GPU is the shared resource)
])
def test_serve_runs_as_many_cpu_instances_as_the_cpus_hold(monkeypatch, cpus, env, devices, expected):
    from types import SimpleNamespace

    from mp_deploy.serve.server import default_instances

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)))
    if env is None:
        monkeypatch.delenv(cpu_threads.ENV, raising=False)
    else:
        monkeypatch.setenv(cpu_threads.ENV, env)
    assert default_instances([SimpleNamespace(meta={"device": d}) for d in devices]) == expected
