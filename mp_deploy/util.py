"""Leaf helpers shared by the runtime, export, training and benchmarks. Imports nothing of ours, so that the
runtime (mp_deploy.engine) can be loaded without the model code or diffusers."""
from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import re
import tempfile
from pathlib import Path

import torch

# names that come from files (task, preset, artifact stem) and become parts of paths or model names
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]*")

def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def rel_l2(out: torch.Tensor, ref: torch.Tensor, centred: bool = False) -> float:
    """||out - ref|| / ||ref|| in float64 (centred: / ||ref - mean(ref)||, for outputs with a large mean like
    depth in metres)."""
    out, ref = torch.as_tensor(out).double().cpu(), torch.as_tensor(ref).double().cpu()
    denom = (ref - ref.mean()) if centred else ref
    return ((out - ref).norm() / denom.norm().clamp_min(1e-30)).item()


@contextlib.contextmanager
def tf32_off():
    """True fp32 matmuls and convolutions on CUDA inside the block (reference outputs, parity checks)."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def slug(text: str) -> str:
    """'NVIDIA H200' -> 'nvidia-h200': a device or run name as a file-name part."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def device_name(device: str = "cpu") -> str:
    """The GPU's name, or 'CPU <model name>'."""
    if str(device).startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or platform.machine()
    return f"CPU {cpu}"


def check_name(value, what: str) -> str:
    """`value` if it is a plain name ([a-z0-9][a-z0-9_-]*), else ValueError naming `what`."""
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise ValueError(f"{what} {value!r} is not a plain name ([a-z0-9][a-z0-9_-]*)")
    return value


def writable_folder(path: str | os.PathLike) -> Path:
    """The folder, created if need be, with a file written and removed in it (permission bits do not stop root;
    a read-only file system does): ValueError saying why when it cannot be written."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".probe.")
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        why = "a file is in the way" if isinstance(e, (FileExistsError, NotADirectoryError)) else e.strerror or e
        raise ValueError(f"cannot write in {path}: {why}") from None
    return folder


def inside(folder: str | os.PathLike, path: str | os.PathLike) -> Path:
    """`path` resolved, if it stays inside `folder` (resolved), else ValueError: no output escapes its folder."""
    folder, resolved = Path(folder).resolve(), Path(path).resolve()
    if resolved != folder and folder not in resolved.parents:
        raise ValueError(f"{path} resolves to {resolved}, outside {folder}")
    return resolved
