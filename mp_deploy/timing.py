"""One timing harness for every measurement of the project (build_engine's latency column, `mp-deploy bench`,
benchmarks/kernels.py): CUDA events on a GPU, wall clock on the CPU, warm-up, quantiles, CUDA-graph capture,
L2 flush, the matmul and copy ceilings, peak memory, and the results writer (JSON + one keyed CSV).
"""
from __future__ import annotations

import csv
import json
import re
import resource
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from mp_deploy.files import atomic_write

FLUSH_BYTES = 256 << 20  # > the L2 of any current GPU


def _now(cuda: bool):
    if not cuda:
        return time.perf_counter()
    event = torch.cuda.Event(enable_timing=True)
    event.record()
    return event


def _ms(a, b, cuda: bool) -> float:
    return a.elapsed_time(b) if cuda else (b - a) * 1e3


def time_runs(run: Callable, runs: int, warmup: int, cuda: bool) -> dict[str, list[float]]:
    """Time `runs` calls of run(mark) after `warmup` untimed ones; run calls mark(name) after each of its stages
    (or never). -> stage name -> ms per run, plus `end_to_end`, plus `unet_xR` (the UNet passes summed) when
    stages named unet_pass* were marked. The device is synchronised before and after every run, so each run
    is one request's latency."""
    for _ in range(warmup):
        run(lambda name: None)
    samples = defaultdict(list)
    for _ in range(runs):
        if cuda:
            torch.cuda.synchronize()
        marks = [("start", _now(cuda))]
        run(lambda name: marks.append((name, _now(cuda))))
        marks.append(("end", _now(cuda)))
        if cuda:
            torch.cuda.synchronize()
        for (_, a), (name, b) in zip(marks, marks[1:]):
            if name != "end":
                samples[name].append(_ms(a, b, cuda))
        samples["end_to_end"].append(_ms(marks[0][1], marks[-1][1], cuda))
    unet = [k for k in samples if k.startswith("unet_pass")]
    if unet:
        samples[f"unet_x{len(unet)}"] = [sum(v) for v in zip(*(samples[k] for k in unet))]
    return dict(samples)


def summarize(samples: list[float]) -> dict:
    p20, p50, p80 = np.percentile(samples, [20, 50, 80])
    return {"median_ms": float(p50), "p20_ms": float(p20), "p80_ms": float(p80)}


def median_ms(run: Callable, runs: int, warmup: int = 1, cuda: bool = False) -> float:
    """Median end-to-end ms of run() (a callable without stages)."""
    return summarize(time_runs(lambda mark: run(), runs, warmup, cuda)["end_to_end"])["median_ms"]


# ------------------------------------------------------------------ CUDA graphs and GPU time

def capture_graph(fn: Callable, pool=None, warmup: int = 2):
    """fn() captured in a CUDA graph (after `warmup` calls on a side stream, which compile kernels and settle
    the allocator) -> (graph, its static output)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.no_grad():
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool), torch.no_grad():
        out = fn()
    return graph, out


def flush_buffer() -> torch.Tensor:
    return torch.empty(FLUSH_BYTES, dtype=torch.uint8, device="cuda")


def _median_us(fn: Callable, runs: int, flush: torch.Tensor) -> float:
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(runs)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(runs)]
    torch.cuda.synchronize()
    for start, end in zip(starts, ends):
        flush.zero_()  # evicts the inputs from L2, and keeps the GPU busy while the CPU launches fn
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return 1000 * statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends))


def device_us(fn: Callable, runs: int, warmup: int, flush: torch.Tensor) -> float:
    """Median GPU microseconds of fn: one call captured in a CUDA graph and replayed, L2 flushed before each
    replay (no host time counted: the GPU time inside a graph or a compiled artifact)."""
    graph, _ = capture_graph(fn, warmup=warmup)
    return _median_us(graph.replay, runs, flush)


def call_us(fn: Callable, runs: int, warmup: int, flush: torch.Tensor) -> float:
    """Median microseconds of a plain eager call of fn: host dispatch and launch included when they dominate."""
    for _ in range(warmup):
        fn()
    return _median_us(fn, runs, flush[: 1 << 20])


# ------------------------------------------------------------------ ceilings

def matmul_ceiling(device: str, runs: int = 15) -> dict:
    """TFLOP/s of one big torch.mm (8192^3 fp16 on CUDA, 1024^3 fp32 on CPU) on the thread count the runs use
    (torch's, set before): `tflops` from the fastest run, what the machine can do (a CPU BLAS reaches ~90% of
    the FMA peak per core), and `tflops_p50` from the median, the share a shared machine gave. A ceiling taken on
    another thread count than the rows', or from a median under load, let rows pass 100%."""
    cuda = device == "cuda"
    n, dtype = (8192, torch.float16) if cuda else (1024, torch.float32)
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    times = time_runs(lambda mark: torch.mm(a, b), runs, 3 if cuda else 1, cuda)["end_to_end"]
    flop = 2 * n ** 3
    threads = "" if cuda else f" on {torch.get_num_threads()} thread{'s' * (torch.get_num_threads() > 1)}"
    return {"what": f"torch.mm {n}^3 {str(dtype).replace('torch.', '')}{threads}", "tflops": flop / min(times) / 1e9,
            "tflops_p50": flop / statistics.median(times) / 1e9, "ms": min(times),
            "threads": None if cuda else torch.get_num_threads()}


def copy_ceiling(device: str, nbytes: int | None = None) -> dict:
    """GB/s (read + write) of an eager device-to-device copy far larger than the caches: 1 GiB on CUDA (a copy
    inside a CUDA graph becomes a memcpy node, which is slower than the eager copy kernel), 64 MiB on CPU."""
    cuda = device == "cuda"
    nbytes = nbytes or ((1 << 30) if cuda else (64 << 20))
    src = torch.empty(nbytes // 4, device=device).normal_()
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), 10, 2, cuda)
    return {"what": f"copy {nbytes >> 20} MiB", "gbps": 2 * nbytes / ms / 1e6, "ms": ms}


def size_copy_gbps(moved: int, runs: int, warmup: int, flush: torch.Tensor, dtype=torch.float16) -> float:
    """GB/s of an elementwise copy kernel moving `moved` bytes, replayed from a CUDA graph like the kernels it
    is compared with: what launch latency and a small grid leave of the bandwidth at that size."""
    src = torch.empty(max(moved // 4, 1), dtype=dtype, device="cuda").normal_()
    dst = torch.empty_like(src)
    us = device_us(lambda: torch.mul(src, 1, out=dst), runs, warmup, flush)
    return 2 * src.numel() * src.element_size() / us / 1e3


# ------------------------------------------------------------------ memory

def _proc_kb(key: str) -> int:
    return int(re.search(rf"{key}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


class MemProbe:
    """Peak memory over a block, in MB: the CUDA caching allocator's peak, or peak RSS on CPU (VmHWM after a reset
    through /proc/self/clear_refs; else ru_maxrss, which only sees new process-wide peaks)."""

    def __init__(self, cuda: bool):
        self.cuda = cuda

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.before = torch.cuda.memory_allocated() / 2 ** 20
            self.source = "torch.cuda.max_memory_allocated"
        else:
            try:
                Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
                self.before, self.source = _proc_kb("VmRSS") / 1024, "peak RSS (VmHWM)"
            except OSError:
                self.before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                self.source = "ru_maxrss (new peaks only)"
        return self

    def __exit__(self, *exc):
        if self.cuda:
            self.peak = torch.cuda.max_memory_allocated() / 2 ** 20
        elif self.source.startswith("peak RSS"):
            self.peak = _proc_kb("VmHWM") / 1024
        else:
            self.peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        self.delta = max(0.0, self.peak - self.before)


# ------------------------------------------------------------------ results

def write_results(stem: str | Path, meta: dict, rows: list[dict], fields: list[str], key: dict,
                  csv_rows: list[dict] | None = None) -> Path:
    """<stem>.json (meta + rows) and <stem>.csv (one line per row, or per `csv_rows`, each prefixed by the
    `key` columns, e.g. device and model): the one results format of every benchmark. Returns the stem."""
    stem = Path(stem)
    text = json.dumps(dict(meta, rows=rows), indent=1)
    atomic_write(f"{stem}.json", lambda tmp: Path(tmp).write_text(text))

    def write_csv(tmp):
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, list(key) + [c for c in fields if c not in key], extrasaction="ignore")
            writer.writeheader()
            for r in rows if csv_rows is None else csv_rows:
                writer.writerow({**key, **r})
    atomic_write(f"{stem}.csv", write_csv)
    return stem
