"""AOTInductor `.pt2` packages (CPU or CUDA), loadable from Python (`Engine`) and C++ (cpp/src/backend_aoti.cpp);
the contract is an entry of the package's zip (`extra/mp_deploy_contract.json`, stored uncompressed).

With kernels on (CUDA), the fused Triton kernels are in the exported graph and AOTInductor compiles them into the
package.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import torch

from mp_deploy.backends.base import Backend, BuildOptions, Product, no_contract
from mp_deploy.contract import CONTRACT_ENTRY, contract_json
from mp_deploy.errors import ArtifactError

# The full model unrolls three UNet passes into one graph: keep Inductor from compiling and benchmarking
# several launch configs for each of its ~1000 pointwise kernels (its heuristic config is kept).
CUDA_CONFIGS = {"triton.autotune_pointwise": False}
# CPU packages follow the thread count of the process that runs them (cpu_threads.py; C++: mp::cpu_threads).
# Without this, Inductor sizes its per-thread reduction buffers for the compiling process's thread count while a
# kernel's `omp parallel` takes the runtime's: a package built where torch had 2 threads and run with 4 writes
# past those buffers (mp_infer --threads 4 crashed with SIGSEGV, tests/test_cpp.py::test_cpu_thread_policy).
CPU_CONFIGS = {"cpp.dynamic_threads": True}


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


# ------------------------------------------------------------------ the contract inside a .pt2 (also torch-tensorrt)

def embed_contract_pt2(package: str | Path, contract: dict) -> None:
    """Add the contract to a `.pt2` archive (a zip), as an entry of its root folder's extra/ files, which the
    loaders ignore."""

    with zipfile.ZipFile(package, "a") as z:
        root = z.namelist()[0].split("/", 1)[0]
        z.writestr(f"{root}/{CONTRACT_ENTRY}", contract_json(contract), compress_type=zipfile.ZIP_STORED)


def read_contract_pt2(artifact: Path) -> bytes:

    with zipfile.ZipFile(artifact) as z:
        names = [n for n in z.namelist() if n.split("/", 1)[-1] == CONTRACT_ENTRY]
        if len(names) != 1:
            raise no_contract(artifact, CONTRACT_ENTRY)
        if z.getinfo(names[0]).compress_type != zipfile.ZIP_STORED:  # as written; C++ reads it stored
            raise ArtifactError(f"the contract inside {artifact} is compressed: altered")
        return z.read(names[0])


def check_torch_version(meta: dict, artifact: Path) -> None:
    """A package runs on the torch major.minor that compiled it."""

    built_torch = meta["versions"].get("torch") or "unknown"
    built, here = (".".join(v.split("+")[0].split(".")[:2]) for v in (built_torch, torch.__version__))
    if built != here:
        raise ArtifactError(f"{artifact} is an AOTInductor package from torch {built_torch}, "
                            f"this is torch {torch.__version__}: re-export it with this torch")


def export_aoti(network, path: Path, program=None, kernels: bool | None = None, contract: dict | None = None) -> None:
    """Compile `network` (TaskNetwork) to an AOTInductor package at `path`, atomically, with `contract` (the
    artifact's, mp_deploy.artifacts) embedded in it."""
    import mp_deploy.kernels  # noqa: F401  (registers the kernels that ops.use_kernels switches on)
    from mp_deploy import ops
    from mp_deploy.files import atomic_write

    kernels = network.device == "cuda" if kernels is None else kernels
    if program is None or kernels:
        with ops.use_kernels(kernels):
            program = network.export_program()
    wanted = CUDA_CONFIGS if network.device == "cuda" else CPU_CONFIGS
    configs = {k: v for k, v in wanted.items() if _has_config(k)}

    def write(tmp):
        torch._inductor.aoti_compile_and_package(program, package_path=tmp, inductor_configs=configs)
        if contract is not None:
            embed_contract_pt2(tmp, contract)

    atomic_write(Path(path), write)
    print(f"  slowest compile phases: {slowest_phases()}", flush=True)


class AOTIRunner:
    def __init__(self, path: Path, device: str):

        index = -1
        if device == "cuda":  # the package's model container is created at load: give it a CUDA context first
            import mp_deploy.kernels  # noqa: F401  (our ops, registered: for a package that calls them by name)

            torch.empty(1, device=device)
            index = torch.cuda.current_device()  # an explicit index: the container sets that device itself
        try:
            self.fn = torch._inductor.aoti_load_package(str(path), device_index=index)
        except Exception as e:  # a corrupt zip or a package for another platform
            raise ArtifactError(f"cannot load AOTInductor package {path}: {e}") from e
        self.device = device

    def __call__(self, x):
        with torch.no_grad():
            return self.fn(x.to(self.device))


class AOTIBackend(Backend):
    name, label, suffix = "aoti", "AOTInductor", ".pt2"
    artifact_devices = ("cpu", "cuda")
    gpu_rank = 2
    auto = "primary"

    def products(self, stem, device):
        return [Product(self.name, f"-{self.artifact_device(device)}{self.suffix}", self.name,
                        self.artifact_device(device))]

    def write(self, product: Product, network, path: Path, options: BuildOptions, contract: dict) -> list[str]:
        export_aoti(network, path, kernels=network.device == "cuda" and options.kernels, contract=contract)
        return []

    def read_contract(self, path):
        return read_contract_pt2(path)

    def check_machine(self, meta, artifact):
        check_torch_version(meta, artifact)

    def load(self, path, meta, device, threads=1):
        return AOTIRunner(path, meta["device"])
