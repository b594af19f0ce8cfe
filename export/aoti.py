"""AOTInductor `.pt2` packages (CPU or CUDA), loadable from Python (`Engine`) and C++ (cpp/).

On CUDA the fused Triton kernels are on while exporting, so AOTInductor compiles them into the package.
"""
from __future__ import annotations

from pathlib import Path

import torch

from mp_deploy import ops
from mp_deploy.checkpoints import atomic_write


def export_aoti(network, path: Path, program: torch.export.ExportedProgram | None = None,
                kernels: bool | None = None) -> None:
    """Compile `network` (TaskNetwork) to an AOTInductor package at `path`, atomically."""
    kernels = network.device == "cuda" if kernels is None else kernels
    if program is None or kernels:
        with ops.use_kernels(kernels):
            program = network.export_program()

    def write(tmp):
        torch._inductor.aoti_compile_and_package(program, package_path=tmp)

    atomic_write(Path(path), write)
