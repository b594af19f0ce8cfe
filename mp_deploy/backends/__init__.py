"""The backend registry: one Backend per artifact format (mp_deploy/backends/<backend>.py). `mp-deploy build`,
`Engine`, predict, bench, serve and triton-repo iterate it instead of testing a backend's name:

    from mp_deploy import backends
    backends.get("onnx").label             # "ONNX Runtime"; UsageError naming the known ones otherwise
    backends.names()                       # ("onnx", "aoti", "tensorrt", "torch-tensorrt", "openvino")
    backends.auto_build("cpu")             # what `mp-deploy build --backend auto` builds here
    backends.choose(folder)                # (the artifact `--engine folder --backend auto` runs here, why)

A new backend registers itself with `register(MyBackend())` (docs/architecture.md: how to add a backend).
"""
from __future__ import annotations

import contextlib
from pathlib import Path

from mp_deploy.backends.aoti import AOTIBackend
from mp_deploy.backends.base import Backend, BuildOptions, Product
from mp_deploy.backends.onnx import ONNXBackend
from mp_deploy.backends.openvino import OpenVINOBackend
from mp_deploy.backends.tensorrt import TensorRTBackend
from mp_deploy.backends.torch_tensorrt import TorchTensorRTBackend
from mp_deploy.errors import UsageError

_BACKENDS: dict[str, Backend] = {}
# words `--backend` takes besides the backends' names: auto (choose), all (every one available), eager (a
# checkpoint run as it is, no artifact)
AUTO, ALL, EAGER = "auto", "all", "eager"


def register(backend: Backend) -> Backend:
    if backend.name in _BACKENDS or backend.name in (AUTO, ALL, EAGER):
        raise UsageError(f"backend {backend.name!r} is registered already")
    _BACKENDS[backend.name] = backend
    return backend


def unregister(name: str) -> None:
    _BACKENDS.pop(name)


@contextlib.contextmanager
def registered(backend: Backend):
    """The backend registered inside the block only (tests)."""
    register(backend)
    try:
        yield backend
    finally:
        unregister(backend.name)


def get(name: str) -> Backend:
    if name not in _BACKENDS:
        raise UsageError(f"unknown backend {name!r}; choose one of {', '.join(_BACKENDS)}")
    return _BACKENDS[name]


def names() -> tuple[str, ...]:
    return tuple(_BACKENDS)


def all_backends() -> tuple[Backend, ...]:
    return tuple(_BACKENDS.values())


def for_file(path) -> Backend | None:
    """The backend whose artifacts end like `path` (the longest suffix that matches), or None."""
    name = str(path)
    found = [b for b in _BACKENDS.values() if name.endswith(b.suffix)]
    return max(found, key=lambda b: len(b.suffix)) if found else None


def suffixes() -> tuple[str, ...]:
    return tuple(sorted({b.suffix for b in _BACKENDS.values()}))


def is_intermediate(path) -> bool:
    """A file a build writes only as the input of a later step (TensorRT's parser ONNX): never run or listed."""
    return any(str(path).endswith(s) for b in _BACKENDS.values() for s in b.intermediate_suffixes)


def auto_build(device: str, log=print) -> list[str]:
    """What `mp-deploy build --backend auto` builds on `device`: the available "primary" backend of lowest rank
    (TensorRT on a GPU where it imports, else AOTInductor), and every available "always" one (ONNX)."""
    primaries = sorted((b for b in _BACKENDS.values() if b.auto == "primary"), key=lambda b: b.gpu_rank)
    chosen, skipped = None, []
    for b in primaries:
        ok, why = b.available(device)
        if ok:
            chosen = b
            break
        skipped.append(f"{b.label} skipped: {why}")
    always = [b for b in _BACKENDS.values() if b.auto == "always"]  # build checks that each can run here
    picked = ([chosen] if chosen else []) + always
    if skipped:
        log("; ".join(skipped) + f"; building {', '.join(b.label for b in picked)} ({device})")
    return [b.name for b in picked]


def all_available(device: str) -> list[str]:
    """What `--backend all` builds: every backend available on `device`."""
    return [b.name for b in _BACKENDS.values() if b.available(device)[0]]


def gpu_preference() -> tuple[str, ...]:
    """Backends by rank, for `--backend auto` among existing artifacts on a GPU machine."""
    return tuple(b.name for b in sorted(_BACKENDS.values(), key=lambda b: b.gpu_rank))


# ------------------------------------------------------------------ --backend auto among existing artifacts

def candidates(folder, backend: str = AUTO, task: str | None = None, precision: str | None = None,
               gpu: bool = False) -> list[tuple[Path, dict]]:
    """(artifact, its sidecar as read, unverified) of every artifact in `folder` of `task` and `backend` (auto:
    any) and `precision` (None: any) that can run here: CUDA artifacts only when `gpu`; no intermediates."""
    from mp_deploy.errors import DataError
    from mp_deploy.files import read_json

    found = []
    for f in sorted(Path(folder).iterdir()):
        side = Path(f"{f}.json")
        if not f.name.endswith(suffixes()) or is_intermediate(f) or not side.is_file():
            continue  # an intermediate: TensorRT's parser input, which nothing runs
        try:
            meta = read_json(side)
        except DataError:
            continue
        if not isinstance(meta, dict) or task not in (None, meta.get("task")) or meta.get("backend") not in _BACKENDS:
            continue
        if meta.get("device") == "cuda" and not gpu:
            continue
        if backend in (AUTO, meta["backend"]) and precision in (None, meta.get("precision")):
            found.append((f, meta))
    return found


def _rank(item) -> tuple:
    from mp_deploy.precision import PREFERENCE

    path, meta = item
    return (_BACKENDS[meta["backend"]].gpu_rank, PREFERENCE.get(meta.get("precision"), 99), path.name)


def auto_choice(found: list[tuple[Path, dict]], machine: str, threads: int, gpu: bool) -> tuple[Path, str]:
    """`--backend auto` among `found` (candidates: artifact, sidecar), for a run on `machine` (util.device_name)
    with `threads` CPU threads -> (the artifact, why it was chosen):

    - never an artifact whose sidecar records a failed parity check, while another is left;
    - on a GPU machine: the backend of lowest rank (`gpu_rank`);
    - on a CPU machine: the fastest latency that `mp-deploy build` measured on this machine (the sidecar's
      `measured[machine]`), when every candidate has a measurement here at `threads` threads on the same input;
      otherwise the stated order: backend rank, then precision (fp32, fp16, int8), then name."""
    passed = [c for c in found if (c[1].get("parity") or {}).get("ok") is not False]
    failed = [c[0].name for c in found if c not in passed]
    note = f"; left out for a failed parity check: {', '.join(failed)}" if failed and passed else \
        ("; every one of them failed its parity check" if failed else "")
    found = passed or found
    if len(found) == 1:
        return found[0][0], f"the only artifact that runs here{note}"
    if gpu:
        path, meta = min(found, key=_rank)
        return path, f"GPU machine: the backend of lowest rank ({meta['backend']}){note}"
    records = {c[0]: (c[1].get("measured") or {}).get(machine) for c in found}
    missing = [p.name for p, r in records.items() if not (isinstance(r, dict) and _number(r.get("median_ms")))]
    why = None
    if missing:
        why = f"no build measurement on this machine ({machine}) for {', '.join(missing)}"
    else:
        other = [p.name for p, r in records.items() if r.get("threads") != threads]
        inputs = {_shape(r.get("input")) for r in records.values()}
        if other:
            why = f"{', '.join(other)} measured at other thread counts than this run's {threads}"
        elif len(inputs) > 1:
            why = "measured on different inputs"
    if why is None:
        ranked = sorted(found, key=lambda c: (records[c[0]]["median_ms"], _rank(c)))
        times = ", ".join(f"{p.name} {records[p]['median_ms']:.1f} ms" for p, _ in ranked)
        return ranked[0][0], (f"fastest measured at build on this machine ({machine}, {threads} CPU "
                              f"thread{'' if threads == 1 else 's'}, input "
                              f"{_shape(records[ranked[0][0]].get('input'))}): {times}{note}")
    path, meta = min(found, key=_rank)
    return path, f"{why}: the stated order (backend rank, then fp32, fp16, int8) gives {meta['backend']}{note}"


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _shape(value) -> str:
    return "x".join(map(str, value)) if isinstance(value, list) else str(value)


def choose(folder, backend: str = AUTO, task: str | None = None, precision: str | None = None,
           threads: int | None = None, only=None) -> tuple[Path | None, str]:
    """The artifact in `folder` that `--engine folder --backend BACKEND` runs on this machine, and why (None and
    why not when there is none); `only`: among these files of it only."""
    import torch

    from mp_deploy.cpu_threads import cpu_threads
    from mp_deploy.util import device_name

    gpu = torch.cuda.is_available()
    found = candidates(folder, backend, task, precision, gpu)
    if only is not None:
        keep = {Path(f).resolve() for f in only}
        found = [c for c in found if c[0].resolve() in keep]
    if not found:
        what = f"{task or 'any'} task, backend {backend}" + (f", precision {precision}" if precision else "")
        return None, f"no artifact for {what} that runs here"
    return auto_choice(found, device_name("cpu"), cpu_threads(threads), gpu)


for _backend in (ONNXBackend(), AOTIBackend(), TensorRTBackend(), TorchTensorRTBackend(), OpenVINOBackend()):
    register(_backend)

__all__ = ["Backend", "BuildOptions", "Product", "register", "unregister", "registered", "get", "names",
           "all_backends", "for_file", "suffixes", "is_intermediate", "auto_build", "all_available", "gpu_preference",
           "candidates", "auto_choice", "choose"]
