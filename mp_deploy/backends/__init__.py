"""The backend registry: one Backend per artifact format (mp_deploy/backends/<backend>.py). `mp-deploy build`,
`Engine`, predict, bench, serve and triton-repo iterate it instead of testing a backend's name:

    from mp_deploy import backends
    backends.get("onnx").label             # "ONNX Runtime"; UsageError naming the known ones otherwise
    backends.names()                       # ("onnx", "aoti", "tensorrt", "torch-tensorrt")
    backends.auto_build("cpu")             # what `mp-deploy build --backend auto` builds here

A new backend registers itself with `register(MyBackend())` (docs/architecture.md: how to add a backend).
"""
from __future__ import annotations

import contextlib

from mp_deploy.backends.aoti import AOTIBackend
from mp_deploy.backends.base import Backend, BuildOptions, Product
from mp_deploy.backends.onnx import ONNXBackend
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


for _backend in (ONNXBackend(), AOTIBackend(), TensorRTBackend(), TorchTensorRTBackend()):
    register(_backend)

__all__ = ["Backend", "BuildOptions", "Product", "register", "unregister", "registered", "get", "names",
           "all_backends", "for_file", "suffixes", "is_intermediate", "auto_build", "all_available", "gpu_preference"]
