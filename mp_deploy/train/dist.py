"""The process group under torchrun (RANK / WORLD_SIZE / LOCAL_RANK in the environment): gloo on CPU, nccl on
CUDA; a single process without them. Helpers are no-ops for a single process."""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from mp_deploy.errors import UsageError


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


MAX_WORLD = 1 << 16


def _env_int(name: str, default: int, lo: int, hi: int) -> int:
    """An integer environment variable (torchrun's) in [lo, hi], else UsageError naming it."""
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        value = int(text.strip()) if len(text) <= 12 else None
    except ValueError:
        value = None
    if value is None or not lo <= value <= hi:
        raise UsageError(f"environment variable {name}={text[:40]!r}: must be an integer in [{lo}, {hi}]")
    return value


def setup(device: str | None) -> Dist:
    """Join the torchrun group if there is one; pick the device (cuda:LOCAL_RANK when CUDA is used). WORLD_SIZE,
    RANK and LOCAL_RANK are checked before anything uses them (a UsageError names the variable)."""
    world = _env_int("WORLD_SIZE", 1, 1, MAX_WORLD)
    rank, local = _env_int("RANK", 0, 0, world - 1), _env_int("LOCAL_RANK", 0, 0, MAX_WORLD - 1)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA device here")
        if local >= torch.cuda.device_count():
            raise UsageError(f"environment variable LOCAL_RANK={local}: this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s)")
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        # long evaluations on rank 0 of pose data keep the others waiting at a barrier
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=timedelta(hours=2))
    return Dist(rank, world, local, dev)


def teardown(d: Dist) -> None:
    if d.active and dist.is_initialized():
        dist.destroy_process_group()


def barrier(d: Dist) -> None:
    if d.active:
        dist.barrier()


def sum_values(d: Dist, values: list[float]) -> list[float]:
    """Sum floats over the ranks (float64 on the process group's device)."""
    if not d.active:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=d.device)
    dist.all_reduce(t)
    return t.tolist()


def any_rank(d: Dist, flag: bool) -> bool:
    """True on every rank when it is true on one (a stop request seen by any rank stops them all together)."""
    return sum_values(d, [float(flag)])[0] > 0 if d.active else flag


def gather(d: Dist, obj) -> list:
    """Every rank's `obj`, in rank order, on every rank."""
    if not d.active:
        return [obj]
    out = [None] * d.world
    dist.all_gather_object(out, obj)
    return out
