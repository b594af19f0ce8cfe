"""Which AOTInductor CUDA packages with our Triton kernels inside load and run on this machine (needs CUDA).

    python tools/aoti_kernels.py [--only NAME,...] [--jobs 6]

Small models, one kernel feature each, are exported and compiled in parallel worker processes, then each
package is loaded and run in fresh processes (a crash there is reported with its signal, not fatal here) and
compared with eager. Each package is loaded three times: `bare` (a new process that only loads torch and the
inputs, as a deployment does), `warm` (CUDA, cuBLAS, Triton and our ops initialised first, as in the process
that built it) and `indexed` (warm, and the device index passed to the loader, as mp_deploy.Engine and the C++
runtime do). `inductor_only` has no user kernel: the control. Prints one line per variant and load mode, and
what each package holds (kernel binaries; a .json would mean an op left to the proxy executor).
Packages are built with AOT_INDUCTOR_DEBUG_SYMBOLS=1; run under LD_PRELOAD=<tools/segv_backtrace.c built
as a .so> and a crash also shows its native stack, with the package's own function names. A crash diagnostic,
not a benchmark: what it found is in docs/performance.md.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

C, GROUPS, N_PROMPTS = 64, 16, 10
# name -> (what it checks, inductor configs)
VARIANTS = {
    "inductor_only": ("control: Inductor's own Triton kernels only, no user kernel", {}),
    "add": ("a trivial triton_op kernel: AOTInductor's user-kernel path alone", {}),
    "add_embedded": ("the trivial kernel, its binary inside the .so", {"aot_inductor.embed_kernel_binary": True}),
    "group_norm_fused": ("group_norm_act, one-kernel path, weights as constants", {}),
    "group_norm_inputs": ("group_norm_act with weight/bias as inputs, not constants", {}),
    "rearrange": ("norm_relu_rearrange: group_stats + the tl.dot kernel, an internal buffer", {}),
    "rearrange_single": ("its single launch: a grid barrier on a zeroed int32, before it can be the default", {}),
    "neck_embedded_kernels": ("both ops (tests/test_kernels.py's package), kernel binaries inside the .so",
                              {"aot_inductor.embed_kernel_binary": True}),
}


LOAD_MODES = ("bare", "warm", "indexed")
SAME_PROCESS = ("inductor_only", "add")  # also loaded by the process that built them (build_engine does that)


def model_and_inputs(name: str):
    import mp_deploy.kernels  # noqa: F401  (registers torch.ops.mp_deploy.*)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, C, 6, 10, generator=g).cuda().half()
    weight = (1 + 0.1 * torch.randn(C, generator=g)).cuda().half()
    bias = (0.1 * torch.randn(C, generator=g)).cuda().half()
    prompts = (torch.randn(2, N_PROMPTS, C, generator=g) * C ** -0.5).cuda().half()
    if name == "inductor_only":
        return _Pointwise(), (x, x)
    if name.startswith("add"):
        return _Add(), (x, x)
    if name == "group_norm_inputs":
        return _GroupNormInputs(), (x, weight, bias)
    if name == "group_norm_fused":
        return _GroupNorm(weight, bias), (x,)
    if name == "rearrange":
        return _Rearrange(weight, bias), (x, prompts)
    if name == "rearrange_single":
        return _RearrangeSingle(weight, bias), (x, prompts)
    return _Neck(weight, bias), (x, prompts)


class _Pointwise(torch.nn.Module):
    def forward(self, a, b):
        return torch.relu(a) * b + 1


class _Add(torch.nn.Module):
    def forward(self, a, b):
        return torch.ops.mp_deploy_check.add(a, b)


class _GroupNorm(torch.nn.Module):
    def __init__(self, weight, bias):
        super().__init__()
        self.weight, self.bias = torch.nn.Parameter(weight), torch.nn.Parameter(bias)

    def forward(self, x):
        return torch.ops.mp_deploy.group_norm_act(x, self.weight, self.bias, GROUPS, 1e-5, True)


class _GroupNormInputs(torch.nn.Module):
    def forward(self, x, weight, bias):
        return torch.ops.mp_deploy.group_norm_act(x, weight, bias, GROUPS, 1e-5, True)


class _Rearrange(_GroupNorm):
    def forward(self, x, prompts):
        return torch.ops.mp_deploy.norm_relu_rearrange(x, self.weight, self.bias, GROUPS, 1e-5, prompts)


class _RearrangeSingle(_GroupNorm):
    def forward(self, x, prompts):
        return torch.ops.mp_deploy_check.rearrange_single(x, self.weight, self.bias, prompts)


class _Neck(_Rearrange):
    def __init__(self, weight, bias):
        super().__init__(weight, bias)
        self.conv = torch.nn.Conv2d(C, C, 3, padding=1).cuda().half()

    def forward(self, x, prompts):
        h = torch.ops.mp_deploy.group_norm_act(x, self.weight, self.bias, GROUPS, 1e-5, True)
        return torch.ops.mp_deploy.norm_relu_rearrange(self.conv(h), self.weight, self.bias, GROUPS, 1e-5, prompts)


def _register_check_ops() -> None:
    import triton
    import triton.language as tl
    from torch.library import triton_op, wrap_triton

    @triton.jit
    def _add_kernel(a_ptr, b_ptr, n, out_ptr, BLOCK: tl.constexpr):
        idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = idx < n
        tl.store(out_ptr + idx, tl.load(a_ptr + idx, mask=mask) + tl.load(b_ptr + idx, mask=mask), mask=mask)

    @triton_op("mp_deploy_check::add", mutates_args=())
    def add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(a)
        wrap_triton(_add_kernel)[(triton.cdiv(a.numel(), 1024),)](a, b, a.numel(), out, BLOCK=1024)
        return out

    from mp_deploy.kernels.norm_relu_rearrange import norm_relu_rearrange

    @triton_op("mp_deploy_check::rearrange_single", mutates_args=())
    def rearrange_single(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        return norm_relu_rearrange(x, weight, bias, GROUPS, 1e-5, prompts, single_launch=True)


def build(name: str, workdir: Path) -> None:
    """Worker: export + compile one variant; saves the package, inputs and eager output."""
    _register_check_ops()
    model, inputs = model_and_inputs(name)
    with torch.no_grad():
        expected = model(*inputs)
    program = torch.export.export(model, inputs)
    configs = VARIANTS[name][1]
    path = torch._inductor.aoti_compile_and_package(program, package_path=str(workdir / f"{name}.pt2"),
                                                    inductor_configs=configs)
    torch.save({"inputs": inputs, "expected": expected, "path": path}, workdir / f"{name}.io.pt")


def run(name: str, workdir: Path, mode: str) -> None:
    """Worker: load one package in this fresh process and compare it with eager (`same`: build it here first,
    into its own folder, and load it in the process that built it)."""
    if mode == "same":
        workdir = workdir / "same"
        workdir.mkdir(exist_ok=True)
        build(name, workdir)
    elif mode in ("warm", "indexed"):  # what the building process had: our ops, Triton, CUDA with cuBLAS
        import mp_deploy.kernels  # noqa: F401

        _register_check_ops()
        a = torch.randn(64, 64, device="cuda")
        (a @ a).sum().item()
    io = torch.load(workdir / f"{name}.io.pt")
    index = torch.cuda.current_device() if mode == "indexed" else -1
    fn = torch._inductor.aoti_load_package(io["path"], device_index=index)
    with torch.no_grad():
        got = fn(*io["inputs"])
    torch.testing.assert_close(got, io["expected"], atol=2e-2, rtol=2e-2)


def package_summary(path: Path) -> str:
    """What a package holds: file counts by kind, and any .json besides Inductor's *_metadata.json by name (an
    extern-node file: an op call left to the proxy executor, which needs the op registered where it loads)."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    kinds = collections.Counter(Path(n).suffix or Path(n).name for n in names)
    extern = [Path(n).name for n in names if n.endswith(".json") and not n.endswith("_metadata.json")]
    return ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items())) + (
        f"; extern-node json: {', '.join(extern)}" if extern else "")


def _worker(verb: str, name: str, workdir: Path, timeout: float, mode: str = "bare") -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["AOT_INDUCTOR_DEBUG_SYMBOLS"] = "1"  # read by the building process (and `same`): named native frames
    try:
        done = subprocess.run([sys.executable, "-X", "faulthandler", __file__, "--worker", verb, name, str(workdir),
                               mode], capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return 124, f"timed out after {timeout:.0f} s"
    lines = [line.strip() for line in done.stderr.strip().splitlines() if line.strip()]
    if "Fatal Python error" in done.stderr:  # faulthandler: name the Python frame that crashed
        current = next((i for i, line in enumerate(lines) if line.startswith("Current thread")), 0)
        frames = [line for line in lines[current:] if line.startswith("File ")]
        native = lines[lines.index("native stack (segv_backtrace):") + 1:] if \
            "native stack (segv_backtrace):" in lines else []
        where = f"{lines[0]} in {frames[0] if frames else '?'}"
        return done.returncode, where + ("\n      " + "\n      ".join(native[:24]) if native else "")
    return done.returncode, (lines[-1] if lines else "")[-300:]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated variant names (default: all)")
    ap.add_argument("--jobs", type=int, default=len(VARIANTS) + len(SAME_PROCESS))
    ap.add_argument("--timeout", type=float, default=240, help="seconds per build or run")
    ap.add_argument("--out", type=Path, help="JSON results")
    ap.add_argument("--keep-dir", type=Path, help="copy every variant's .pt2 here (their generated C++ inside)")
    ap.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        verb, name, workdir, mode = a.worker
        if verb == "build":
            build(name, Path(workdir))
        else:
            run(name, Path(workdir), mode)
        return 0
    if not torch.cuda.is_available():
        sys.exit("tools/aoti_kernels.py needs a CUDA GPU")
    names = a.only.split(",") if a.only else list(VARIANTS)
    workdir = Path(tempfile.mkdtemp(prefix="aoti_kernels_"))

    def check(name: str) -> dict:  # build, then load in a fresh process: each result as soon as it is known
        rc, err = _worker("build", name, workdir, a.timeout)
        row = {"variant": name, "checks": VARIANTS[name][0], "built": rc == 0, "build_error": err if rc else ""}
        if rc != 0:
            print(f"{name:24s} BUILD FAILED: {err}   [{row['checks']}]", flush=True)
            return row
        row["package"] = package_summary(workdir / f"{name}.pt2")
        print(f"{name:24s} package: {row['package']}", flush=True)
        with ThreadPoolExecutor(len(LOAD_MODES)) as modes:  # side by side: the stage has a time limit
            row.update(zip(LOAD_MODES, modes.map(lambda mode: load(name, mode), LOAD_MODES)))
        row["loads_and_matches"] = all(row[mode]["loads_and_matches"] for mode in LOAD_MODES)  # as deployed
        return row

    def load(name: str, mode: str) -> dict:
        rc, err = _worker("run", name, workdir, a.timeout, mode)
        status = "ok" if rc == 0 else f"RUN FAILED (exit {rc}): {err}"
        print(f"{name:24s} {mode:7s} {status}   [{VARIANTS[name][0]}]", flush=True)
        return {"loads_and_matches": rc == 0, "exit": rc, "error": err if rc else ""}

    with ThreadPoolExecutor(a.jobs) as pool:  # the same-process loads build their own copy, beside the rest
        same = {name: pool.submit(load, name, "same") for name in names if name in SAME_PROCESS}
        results = list(pool.map(check, names))
    for row in results:
        if row["variant"] in same:
            row["same"] = same[row["variant"]].result()
    if a.keep_dir:
        a.keep_dir.mkdir(parents=True, exist_ok=True)
        for package in workdir.glob("*.pt2"):
            shutil.copy(package, a.keep_dir / package.name)
    if a.out:
        a.out.write_text(json.dumps({"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
                                     "results": results}, indent=2))
    return 0 if all(r.get("loads_and_matches") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
