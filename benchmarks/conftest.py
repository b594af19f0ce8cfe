"""Fixtures of the benchmark suite (pytest-benchmark): the tiny seeded models and an input.

    python -m pytest benchmarks/ --benchmark-only      # stage and kernel benchmarks
    python -m pytest benchmarks/test_bench_latency.py  # smoke test of `mp-deploy bench` (builds a tiny ONNX, ~2 min)
"""
import os

import pytest
import torch

# The tiny model's ops are small: one CPU thread is steadier and, on a busy machine, far faster than several
# (OpenMP threads spin while waiting for a core). MP_BENCH_THREADS=N overrides.
torch.set_num_threads(int(os.environ.get("MP_BENCH_THREADS", "1")))

SIDE = 64  # tiny config, 64 x 64 images: the smallest the depth model takes


@pytest.fixture(scope="session")
def tiny_models():
    """task -> the tiny bundled default model (seeded, eval, no grads), built once per session."""
    from mp_deploy.tasks import seeded_model

    cache = {}

    def get(task):
        if task not in cache:
            cache[task] = seeded_model(task, size="tiny").requires_grad_(False)
        return cache[task]

    return get


@pytest.fixture(scope="session")
def images():
    return torch.rand(1, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(0))

