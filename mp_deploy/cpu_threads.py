"""How many CPU threads a CPU engine runs with, and how its threads wait: one policy for every runner (eager torch,
AOTInductor packages, ONNX Runtime, OpenVINO) and the C++ library (cpp/src/backend_aoti.cpp applies the same rule).

Why (measured on a 2-core machine shared with another job, benchmarks/cpu_engines.py): the tiny depth network
forks and joins an OpenMP team ~3,200 times per image at batch 1 (~9,100 at batch 4); with one thread per core,
every join waits for a thread whose core another process holds, and libgomp spins ~300k iterations before it
sleeps. The AOTInductor package took 839 ms at batch 1 (p20-p80 785-1140) where one thread took 71 ms; eager
torch collapsed the same way. So:

- threads: `MP_DEPLOY_CPU_THREADS` if set (a whole number >= 1), else half the CPUs this process may run on,
  at least one (on 2 cores: 1, no team to wait for; on a dedicated 16-core box: 8). `--threads N` overrides
  both where a command has it.
- waiting: with more than one thread, OpenMP threads sleep instead of spinning (`OMP_WAIT_POLICY=PASSIVE`),
  which libgomp reads only once, when torch is first imported: `mp-deploy` sets it before importing anything
  that imports torch (cli.main -> prepare_environment), unless the user set it. ONNX Runtime does not spin
  (`session.intra_op.allow_spinning` 0); OpenVINO does not pin threads to cores (`ENABLE_CPU_PINNING` off).

Imports only mp_deploy.errors (no torch: cli.main calls it before torch loads).
"""
from __future__ import annotations

import os
import re
import sys

from mp_deploy.errors import UsageError

ENV = "MP_DEPLOY_CPU_THREADS"
MAX_THREADS = 4096


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, e.g. a container's cpuset), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def from_environment() -> int | None:
    """MP_DEPLOY_CPU_THREADS as a whole number in [1, 4096], None when unset; UsageError naming it otherwise."""
    text = os.environ.get(ENV)
    if text is None or text.strip() == "":
        return None
    if not re.fullmatch(r"\s*[0-9]{1,4}\s*", text) or not 1 <= int(text) <= MAX_THREADS:
        raise UsageError(f"the environment variable {ENV} must be a whole number from 1 to {MAX_THREADS}, "
                         f"got {text[:40]!r}")
    return int(text)


def cpu_threads(requested: int | None = None) -> int:
    """The thread count a CPU engine uses: `requested` (a --threads value, 0 or None: not given), else
    MP_DEPLOY_CPU_THREADS, else half the available CPUs (at least 1)."""
    if requested:
        if not 1 <= requested <= MAX_THREADS:
            raise UsageError(f"--threads must be from 1 to {MAX_THREADS}, got {requested}")
        return int(requested)
    return from_environment() or max(1, available_cpus() // 2)


def prepare_environment(threads: int | None = None) -> None:
    """Before torch is imported: OMP_WAIT_POLICY=PASSIVE when more than one thread will run (not when the user set
    a policy, and too late once torch is loaded: libgomp reads it in its constructor)."""
    if "torch" in sys.modules or "OMP_WAIT_POLICY" in os.environ:
        return
    try:
        n = cpu_threads(threads)
    except UsageError:
        return  # the command reports it when it applies the policy
    if n > 1:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


def apply_torch(threads: int) -> None:
    """torch's intra-op thread count (eager runs and AOTInductor CPU packages, which share torch's OpenMP)."""
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def onnxruntime_options(threads: int):
    """SessionOptions for a CPU session: `threads` intra-op threads that do not spin, one inter-op thread."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


def openvino_config(threads: int) -> dict:
    """OpenVINO CPU plugin properties: latency mode on `threads` threads, not pinned to cores, computing in f32.

    INFERENCE_PRECISION_HINT f32: on a CPU with AVX-512 BF16 or AMX the plugin otherwise computes an f32 model in
    bf16 (measured on an AVX-512 BF16 EPYC: tiny depth relative L2 6.8e-4 against ONNX Runtime, 2.5e-2 of the
    output's variation), so an fp32 artifact would not be fp32 and fail its parity gate."""
    return {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads, "ENABLE_CPU_PINNING": False,
            "INFERENCE_PRECISION_HINT": "f32"}


def describe(threads: int) -> str:
    """One line for tables and sidecars: 'N CPU threads (of M available), OMP_WAIT_POLICY=...'."""
    policy = os.environ.get("OMP_WAIT_POLICY", "libgomp default (spin, then sleep)")
    return f"{threads} CPU threads (of {available_cpus()} available), OMP_WAIT_POLICY={policy}"
