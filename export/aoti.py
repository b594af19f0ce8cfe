"""AOTInductor `.pt2` packages (CPU or CUDA), loadable from Python (`Engine`) and C++ (cpp/).

With kernels on (CUDA), the fused Triton kernels are in the exported graph and AOTInductor compiles them
into the package.
"""
from __future__ import annotations

from pathlib import Path

import torch

import mp_deploy.kernels  # noqa: F401  (registers the kernels that ops.use_kernels switches on)
from mp_deploy import ops
from mp_deploy.artifacts import embed_contract_pt2
from mp_deploy.util import atomic_write


# The full model unrolls three UNet passes into one graph: keep Inductor from compiling and benchmarking
# several launch configs for each of its ~1000 pointwise kernels (its heuristic config is kept).
CUDA_CONFIGS = {"triton.autotune_pointwise": False}


def export_aoti(network, path: Path, program: torch.export.ExportedProgram | None = None,
                kernels: bool | None = None, contract: dict | None = None) -> None:
    """Compile `network` (TaskNetwork) to an AOTInductor package at `path`, atomically, with `contract` (the
    artifact's, mp_deploy.artifacts) embedded in it."""
    kernels = network.device == "cuda" if kernels is None else kernels
    if program is None or kernels:
        with ops.use_kernels(kernels):
            program = network.export_program()
    configs = {k: v for k, v in CUDA_CONFIGS.items() if _has_config(k)} if network.device == "cuda" else {}

    def write(tmp):
        torch._inductor.aoti_compile_and_package(program, package_path=tmp, inductor_configs=configs)
        if contract is not None:
            embed_contract_pt2(tmp, contract)

    atomic_write(Path(path), write)
    print(f"  slowest compile phases: {slowest_phases()}", flush=True)


def _has_config(name: str) -> bool:
    scope = torch._inductor.config
    for part in name.split("."):
        if not hasattr(scope, part):
            return False
        scope = getattr(scope, part)
    return True


def slowest_phases(top: int = 10) -> str:
    """The longest phases of the Inductor compiles in this process ("name s, ..."), where the build time went."""
    try:
        from torch._dynamo.utils import compile_times

        table = compile_times(repr="csv", aggregate=True)
    except Exception as e:  # private API: report, never fail a build over it
        return f"unavailable ({type(e).__name__})"
    names, values = table
    rows = sorted(zip(names, values), key=lambda r: -float(r[1]))[:top]
    return ", ".join(f"{name} {float(v):.1f} s" for name, v in rows)
