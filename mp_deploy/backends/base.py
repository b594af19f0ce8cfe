"""The interface every backend implements, the Python twin of the C++ `Backend` (cpp/src/backend.h): one module per
backend (mp_deploy/backends/<backend>.py) with one subclass of Backend; the registry (mp_deploy.backends) holds
one instance of each, and `mp-deploy build`, `Engine`, predict, bench, serve and triton-repo iterate it instead of
testing a backend's name. How to add a backend: docs/architecture.md.

A backend module is light to import: what it needs to build or run (onnx, onnxruntime, tensorrt, torch_tensorrt)
is imported inside the methods, so that the runtime loads only what the artifact in hand needs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from mp_deploy.errors import ArtifactError


@dataclass(frozen=True)
class Product:
    """One file a backend's build writes, with its own sidecar: `kind` names the step for Backend.write,
    `suffix` its name's ending after the artifact stem, `sidecar_backend` and `device` what its sidecar says,
    `output_extra` what it adds to the output description; `runnable` False for an intermediate file (the
    TensorRT parser's ONNX), which is neither checked nor listed."""

    kind: str
    suffix: str
    sidecar_backend: str
    device: str
    runnable: bool = True
    output_extra: dict = field(default_factory=dict)


@dataclass
class BuildOptions:
    """The parts of `mp-deploy build`'s spec that backends read."""

    kernels: bool = False  # our Triton kernels inside CUDA packages
    opt_level: int = 3  # TensorRT builder optimization level
    out_dir: Path | None = None  # the output folder (TensorRT keeps its timing cache there)
    source: Path | None = None  # the artifact this product is made from: the `reads` backend's (OpenVINO's ONNX)


class Backend:
    """One backend. Subclasses fill the class attributes and implement the methods; see backends/onnx.py."""

    name: str = ""  # the schema's name: sidecars, --backend, bench rows, one name everywhere
    label: str = ""  # what tables call it ("ONNX Runtime")
    suffix: str = ""  # the artifact file's suffix
    artifact_devices: tuple[str, ...] = ("cpu",)  # devices its artifacts are built for
    gpu_rank: int = 99  # `--backend auto` on a GPU machine: the lowest rank that runs there wins
    # `mp-deploy build --backend auto`: "always" builds it where available, "primary" competes with the other
    # primaries (the available one of lowest gpu_rank is built), "" never
    auto: str = ""
    triton_network: dict | None = None  # triton-repo: the network model's backend/platform (None: Python Engine)
    triton_instance: str = "GPU"  # triton-repo: where that network model runs by default (GPU or CPU)
    gpu_only: bool = False  # its artifacts run on a GPU only (TensorRT plans)
    intermediate_suffixes: tuple[str, ...] = ()  # files its build writes that are inputs of a later step only
    bench_note: str = ""  # what its timings include beyond the network (bench tables)
    # the precisions its build takes; "int8" is made from its own fp32 artifact by `quantize` (build makes or
    # reuses that one first)
    precisions: tuple[str, ...] = ("fp32", "fp16")
    # the backend whose artifact its build converts (OpenVINO reads the ONNX): build makes or reuses that artifact
    # first, at the same precision, and passes its path to `write` as options.source
    reads: str = ""

    # ------------------------------------------------------------ here
    def available(self, device: str) -> tuple[bool, str]:
        """(whether it can build and run artifacts for `device` here, why not)."""
        return True, ""

    def runs_on(self, device: str) -> tuple[bool, str]:
        """(whether its artifacts run on `device` here, why not)."""
        return self.available(device)

    def artifact_device(self, build_device: str) -> str:
        """The device an artifact built on `build_device` is for (the sidecar's device)."""
        return build_device if build_device in self.artifact_devices else self.artifact_devices[0]

    # ------------------------------------------------------------ build
    def products(self, stem: str, device: str) -> list[Product]:
        """The files a build writes, in order (the last is the artifact)."""
        return [Product(self.name, self.suffix, self.name, self.artifact_device(device))]

    def write(self, product: Product, network, path: Path, options: BuildOptions, contract: dict) -> list[str]:
        """Write `product` of the export network (export.networks.TaskNetwork) at `path` atomically, with the
        contract embedded where the format can hold one -> the extra files written beside it."""
        raise NotImplementedError

    def quantize(self, source: Path, path: Path, calibration, contract: dict) -> list[str]:
        """Write the int8 artifact at `path` atomically from this backend's fp32 artifact `source`, calibrated on
        `calibration` (network inputs: numpy float32 (1, 3, H, W) arrays), with `contract` embedded -> the extra
        files written beside it. Only for backends with "int8" in `precisions`."""
        raise NotImplementedError

    # ------------------------------------------------------------ load and run
    def read_contract(self, path: Path) -> str | bytes | None:
        """The JSON text of the contract embedded in the artifact (ArtifactError when it should hold one and does
        not; None where the format cannot hold one: mp_deploy.artifacts parses and checks it)."""
        return None

    def check_machine(self, meta: dict, artifact: Path) -> None:
        """ArtifactError when this machine cannot run the artifact (versions, GPU model); the CUDA device itself
        is checked for every backend."""

    def load(self, path: Path, meta: dict, device: str, threads: int = 1) -> Callable[[torch.Tensor], torch.Tensor]:
        """A runner: the network's input (B, 3, H, W) in the contract's dtype -> its raw output tensor. On the
        CPU it runs on `threads` threads (mp_deploy.cpu_threads: torch's count is set already)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<backend {self.name}>"


def no_contract(path, where: str) -> ArtifactError:
    """The error of an artifact without its embedded contract (`where`: the place in the file it belongs)."""
    return ArtifactError(f"{path} holds no contract ({where}): not built by mp-deploy build, or altered")
