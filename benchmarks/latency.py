"""Latency of one task network per backend, per stage and end to end.

    python benchmarks/latency.py --task depth --batch 1,8 --size 480x480 \
        --backends eager-fp32,eager-fp16,cudagraph-fp16,compile,aoti,tensorrt,onnxruntime

Backends: eager-fp32 (TF32 off), eager-fp16 (fp16 copy, fp32 norms), cudagraph-fp16 (that model captured with
torch.cuda.CUDAGraph for a static input), compile (torch.compile of the fp16 model, default mode, dynamic=False),
aoti / tensorrt / onnxruntime (.pt2 / .engine / .onnx artifacts of export/build_engine.py through Engine).
eager-fp16 and cudagraph-fp16 also run with the Triton kernels on (`-kernels`) when CUDA and Triton are
present. NAME@1+4 runs a backend at those batch sizes only. Missing backends are listed as skipped, with why.
On CPU the fp16 backends are skipped and compile / artifacts are fp32; speed-ups are over eager-fp16
(CUDA) or eager-fp32 (CPU), measured in the same run.

Eager and CUDA-graph rows are per stage (see stages.py) and end to end; the others end to end only. Times:
median and 20th / 80th percentile of --iters runs after --warmup, CUDA events (wall clock on CPU), the device
synchronised before every run. FLOPs (matmul/conv/attention, torch.utils.flop_counter on a meta copy of the
model) give TFLOP/s and % of a matmul ceiling measured in the same run. Writes a table, and
<out-dir>/<device>-<date>.json / .csv / .png.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import json
import platform
import re
import resource
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stages import Staged  # noqa: E402

from mp_deploy import ops  # noqa: E402
from mp_deploy.artifacts import ArtifactError, read_sidecar  # noqa: E402
from mp_deploy.configs import DEFAULT_PRESET, PRESETS  # noqa: E402
from mp_deploy.engine import Engine  # noqa: E402
from mp_deploy.export.networks import to_precision  # noqa: E402
from mp_deploy.models import SEEDED_RULE, build_model, seeded_model  # noqa: E402

BACKENDS = ["eager-fp32", "eager-fp16", "eager-fp16-kernels", "cudagraph-fp16", "cudagraph-fp16-kernels",
            "compile", "aoti", "tensorrt", "onnxruntime"]
ARTIFACT = {"aoti": (".pt2", "aoti"), "tensorrt": (".engine", "tensorrt"), "onnxruntime": (".onnx", "onnx")}
CSV_FIELDS = ["device", "task", "preset", "model_size", "backend", "batch", "height", "width", "precision", "stage",
              "median_ms", "p20_ms", "p80_ms", "gflop", "tflops", "pct_ceiling", "speedup", "peak_mb", "delta_mb",
              "setup_s", "rel_l2", "status", "note"]
SEED = 0


def log(msg: str = "") -> None:
    print(msg, flush=True)


class Skip(Exception):
    """A backend (or one batch of it) that cannot run here; the message says why."""


# ------------------------------------------------------------------ timing and memory

def _now(cuda: bool):
    if not cuda:
        return time.perf_counter()
    event = torch.cuda.Event(enable_timing=True)
    event.record()
    return event


def _ms(a, b, cuda: bool) -> float:
    return a.elapsed_time(b) if cuda else (b - a) * 1e3


def time_runs(run: Callable, iters: int, warmup: int, cuda: bool) -> dict[str, list[float]]:
    """run(mark) -> output, calling mark(stage) after each stage (or never). -> name -> ms per run."""
    for _ in range(warmup):
        run(lambda name: None)
    samples = defaultdict(list)
    for _ in range(iters):
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
    return samples


def _proc_kb(key: str) -> int:
    return int(re.search(rf"{key}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


class MemProbe:
    """Peak memory over a block: the CUDA caching allocator's peak, or peak RSS on CPU (VmHWM after a reset
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


def matmul_ceiling(device: str) -> dict:
    """TFLOP/s of one big torch.mm: 8192^3 fp16 on CUDA, 1024^3 fp32 on CPU."""
    cuda = device == "cuda"
    n, dtype = (8192, torch.float16) if cuda else (1024, torch.float32)
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    ms = float(np.median(time_runs(lambda mark: torch.mm(a, b), 10 if cuda else 5, 3 if cuda else 1,
                                   cuda)["end_to_end"]))
    return {"what": f"torch.mm {n}^3 {str(dtype).replace('torch.', '')}", "tflops": 2 * n ** 3 / ms / 1e9, "ms": ms}


def copy_ceiling(device: str) -> dict:
    """GB/s (read + write) of a device-to-device copy far larger than the caches (as benchmarks/kernels.py)."""
    cuda = device == "cuda"
    nbytes = (1 << 30) if cuda else (64 << 20)
    src = torch.empty(nbytes // 4, device=device).normal_()
    dst = torch.empty_like(src)
    ms = float(np.median(time_runs(lambda mark: dst.copy_(src), 10, 2, cuda)["end_to_end"]))
    return {"what": f"copy {nbytes >> 20} MiB", "gbps": 2 * nbytes / ms / 1e6, "ms": ms}


# ------------------------------------------------------------------ context shared by every backend

@dataclass
class Case:
    """One backend at one batch, ready to time: run(mark) -> output."""

    run: Callable
    precision: str
    shape: tuple
    setup_s: float | None = None
    note: str = ""
    stage_run: Callable | None = None  # a separately captured staged version (CUDA graphs per stage)
    context: Callable = contextlib.nullcontext
    comparable: bool = True  # same weights as our eager model: rel_l2 is meaningful


@dataclass
class Bench:
    args: argparse.Namespace
    device: str
    model: torch.nn.Module  # fp32 eager model
    _fp16: torch.nn.Module | None = None
    _meta: torch.nn.Module | None = None
    _images: dict = field(default_factory=dict)
    _flops: dict = field(default_factory=dict)
    references: dict = field(default_factory=dict)  # (b, h, w) -> eager fp32 output
    mem_source: str = ""

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"

    @property
    def fp16(self):
        if self._fp16 is None:
            self._fp16 = to_precision(self.model, "fp16").requires_grad_(False)
        return self._fp16

    def images(self, b: int, h: int, w: int, dtype) -> torch.Tensor:
        if (b, h, w) not in self._images:
            g = torch.Generator().manual_seed(SEED)
            self._images[b, h, w] = torch.rand(b, 3, h, w, generator=g)
        return self._images[b, h, w].to(self.device, dtype)

    def flops(self, b: int, h: int, w: int) -> dict[str, int]:
        """Stage -> FLOPs, counted on a meta-device copy of the model (shapes only, no compute)."""
        from torch.utils.flop_counter import FlopCounterMode

        if (b, h, w) not in self._flops:
            if self._meta is None:
                a = self.args
                self._meta = build_model(a.task, a.preset, size=a.model_size, init=False).requires_grad_(False)
            s, counts = {"images": torch.empty(b, 3, h, w, device="meta")}, {}
            for name, fn in Staged(self._meta).stages:
                with FlopCounterMode(display=False) as counter:
                    s = fn(s)
                counts[name] = counter.get_total_flops()
            unet = [k for k in counts if k.startswith("unet_pass")]
            counts[f"unet_x{len(unet)}"] = sum(counts[k] for k in unet)
            counts["end_to_end"] = sum(v for k, v in counts.items() if not k.startswith("unet_x"))
            self._flops[b, h, w] = counts
        return self._flops[b, h, w]

    def reference(self, b: int, h: int, w: int) -> torch.Tensor:
        if (b, h, w) not in self.references:
            with tf32_off(), torch.no_grad():
                self.references[b, h, w] = self.model(self.images(b, h, w, torch.float32)).float().cpu()
        return self.references[b, h, w]


@contextlib.contextmanager
def tf32_off():
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def has_triton() -> bool:
    from mp_deploy import kernels

    return kernels.HAS_TRITON


# ------------------------------------------------------------------ backends

def eager_backend(bench: Bench, name: str, batches: list[int]):
    fp32 = name == "eager-fp32"
    kernels = name.endswith("-kernels")
    if not fp32 and not bench.cuda:
        raise Skip("fp16 needs CUDA (CPU runs compare against eager-fp32)")
    if kernels and not has_triton():
        raise Skip("Triton is not installed")
    model = bench.model if fp32 else bench.fp16
    staged = Staged(model)

    def prepare(b, h, w):
        x = bench.images(b, h, w, torch.float32 if fp32 else torch.float16)
        return Case(lambda mark: staged.run(x, mark), "fp32" if fp32 else "fp16", (b, 3, h, w),
                    context=tf32_off if fp32 else (lambda: ops.use_kernels(kernels)))

    return prepare


def _capture(fn, pool=None):
    """fn() captured in a CUDA graph (after warm-up on a side stream) -> (graph, its static output)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.no_grad():
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool), torch.no_grad():
        out = fn()
    return graph, out


def cudagraph_backend(bench: Bench, name: str, batches: list[int]):
    if not bench.cuda:
        raise Skip("CUDA graphs need CUDA")
    kernels = name.endswith("-kernels")
    if kernels and not has_triton():
        raise Skip("Triton is not installed")
    staged = Staged(bench.fp16)

    def prepare(b, h, w):
        x = bench.images(b, h, w, torch.float16)
        t0 = time.perf_counter()
        with ops.use_kernels(kernels):
            whole, out = _capture(lambda: staged.run(x))  # the whole forward: the end-to-end row
            pool, state, graphs = torch.cuda.graph_pool_handle(), {"images": x}, []
            for stage, fn in staged.stages:  # one graph per stage, chained through static tensors
                graph, state = _capture(lambda fn=fn, s=state: fn(s), pool)
                graph.replay()  # fills the static outputs the next stage warms up on
                graphs.append((stage, graph))
        torch.cuda.synchronize()
        setup = time.perf_counter() - t0
        final = state

        def run(mark):
            whole.replay()
            return out

        def stage_run(mark):
            for stage, graph in graphs:
                graph.replay()
                mark(stage)
            return final["out"]

        return Case(run, "fp16", (b, 3, h, w), setup, "setup = warm-up + capture", stage_run=stage_run)

    return prepare


def compile_backend(bench: Bench, name: str, batches: list[int]):
    fp16 = bench.cuda
    compiled = torch.compile(bench.fp16 if fp16 else bench.model, mode="default", dynamic=False)

    def prepare(b, h, w):
        x = bench.images(b, h, w, torch.float16 if fp16 else torch.float32)
        t0 = time.perf_counter()
        with torch.no_grad():
            compiled(x)
        if bench.cuda:
            torch.cuda.synchronize()

        def run(mark):
            with torch.no_grad():
                return compiled(x)

        return Case(run, "fp16" if fp16 else "fp32", (b, 3, h, w), time.perf_counter() - t0,
                    "setup = compile time (first call)")

    return prepare


def find_artifact(bench: Bench, backend: str, batches, h: int, w: int):
    """-> (path, meta) of the artifact in --artifacts covering the most requested batches, or raise Skip."""
    a = bench.args
    suffix, kind = ARTIFACT[backend]
    precision = "fp16" if bench.cuda else "fp32"
    want = f"{a.task}/{a.preset}/{a.model_size}/{precision}"
    best, problems = None, []
    for path in sorted(p for p in Path(a.artifacts).glob(f"*{suffix}") if not p.name.startswith(".")):  # not temporaries
        if path.name.endswith(".trt.onnx"):
            continue  # the TensorRT-plugin flavour: ONNX Runtime cannot run it
        try:
            meta = read_sidecar(path)
        except ArtifactError as e:
            problems.append(str(e))
            continue
        got = f"{meta['task']}/{meta['preset']['name']}/{meta['size']}/{meta['precision']}"
        if meta["backend"] != kind or got != want or (backend == "aoti" and meta["device"] != bench.device):
            continue
        s = meta["shapes"]
        if not (takes(s["height"], h, s.get("multiple_of", 64)) and takes(s["width"], w, s.get("multiple_of", 64))):
            problems.append(f"{path.name} takes {s['height'][0]}-{s['height'][2]} x {s['width'][0]}-{s['width'][2]}")
            continue
        covered = [b for b in batches if s["batch"][0] <= b <= s["batch"][2]]
        if covered and (best is None or len(covered) > best[2]):
            best = (path, meta, len(covered))
    if best is None:
        hint = "--build builds it here" if backend != "tensorrt" else "export/build_engine.py --backend tensorrt"
        detail = f" ({'; '.join(problems)})" if problems else ""
        raise Skip(f"no {suffix} for {want} at {h}x{w}, batch {','.join(map(str, batches))} in {a.artifacts}/"
                   f"{detail}; {hint}")
    return best[0], best[1]


def takes(side_range, value: int, multiple_of: int) -> bool:
    """A static side takes exactly its value; a dynamic one, multiples of `multiple_of` within its range."""
    lo, _, hi = side_range
    return value == lo if lo == hi else (lo <= value <= hi and value % multiple_of == 0)


def build_artifact(bench: Bench, backend: str, batches, h: int, w: int) -> str:
    from mp_deploy.export import build_engine

    a = bench.args
    lo, hi = min(batches), max(batches)
    argv = ["--task", a.task, "--preset", a.preset, "--size", a.model_size, "--backend", ARTIFACT[backend][1],
            "--precision", "fp16" if bench.cuda else "fp32", "--device", bench.device, "--batch",
            str(lo) if lo == hi else f"{lo},{lo},{hi}", "--height", str(h), "--width", str(w),
            "--out-dir", str(a.artifacts), "--runs", "1"]
    log(f"building: python export/build_engine.py {' '.join(argv)}")
    t0 = time.perf_counter()
    with tf32_off():  # build_engine turns TF32 off for its fp32 reference; put the flags back afterwards
        rows = build_engine.build(build_engine.parse_args(argv))
    status = "; ".join(f"{r['artifact']} {r['status']} (rel L2 {r['rel_l2']:.1e})" for r in rows)
    return f"built here in {time.perf_counter() - t0:.0f} s: {status}"


def artifact_backend(bench: Bench, name: str, batches: list[int]):
    a = bench.args
    if name == "tensorrt":
        from mp_deploy.export import tensorrt_build

        ok, reason = tensorrt_build.available()
        if not ok:
            raise Skip(reason)
    if name == "onnxruntime":
        try:
            import onnxruntime as ort
        except ImportError:
            raise Skip("onnxruntime is not installed") from None
        if bench.cuda and "CUDAExecutionProvider" not in ort.get_available_providers():
            raise Skip("onnxruntime has no CUDAExecutionProvider here (pip install onnxruntime-gpu); "
                       "its CPU provider on a CUDA run would not be comparable")
    note = ""
    try:
        path, meta = find_artifact(bench, name, batches, a.height, a.width)
    except Skip:
        if not a.build or name == "tensorrt":
            raise
        note = build_artifact(bench, name, batches, a.height, a.width)
        path, meta = find_artifact(bench, name, batches, a.height, a.width)
    t0 = time.perf_counter()
    engine = Engine.load(path, device=bench.device)
    load_s = time.perf_counter() - t0
    # built from the weights of our eager model?
    comparable = meta.get("source") == {"seeded": a.model_size, "seed": SEED, "rule": SEEDED_RULE}
    if name == "onnxruntime":
        note = "; ".join(filter(None, [note, "includes numpy input/output copies"]))
    s = meta["shapes"]

    def prepare(b, h, w):
        if not s["batch"][0] <= b <= s["batch"][2]:
            raise Skip(f"batch {b} is outside {path.name}'s range {s['batch'][0]}-{s['batch'][2]}")
        x = bench.images(b, h, w, engine.dtype)
        return Case(lambda mark: engine.runner(x), meta["precision"], (b, 3, h, w), load_s,
                    "; ".join(filter(None, [f"{path.name}, setup = load", note])), comparable=comparable)

    return prepare


OPENERS = {"eager-fp32": eager_backend, "eager-fp16": eager_backend, "eager-fp16-kernels": eager_backend,
           "cudagraph-fp16": cudagraph_backend, "cudagraph-fp16-kernels": cudagraph_backend,
           "compile": compile_backend, "aoti": artifact_backend, "tensorrt": artifact_backend,
           "onnxruntime": artifact_backend}


# ------------------------------------------------------------------ rows

def summarize(v: list[float]) -> dict:
    p20, p50, p80 = np.percentile(v, [20, 50, 80])
    return {"median_ms": float(p50), "p20_ms": float(p20), "p80_ms": float(p80)}


def run_case(bench: Bench, case: Case) -> tuple[dict, torch.Tensor]:
    """Time a case -> (stage -> ms per run, its output on the CPU)."""
    a = bench.args
    with case.context():
        samples = time_runs(case.run, a.iters, a.warmup, bench.cuda)
        if case.stage_run is not None:
            samples = dict(time_runs(case.stage_run, a.iters, a.warmup, bench.cuda), end_to_end=samples["end_to_end"])
        out = case.run(lambda name: None).float().cpu()
    return samples, out


def make_rows(bench: Bench, backend: str, case: Case, samples: dict, out: torch.Tensor, mem: MemProbe) -> list[dict]:
    b, _, h, w = case.shape
    if backend == "eager-fp32":
        bench.references.setdefault((b, h, w), out)
    rel = None
    if case.comparable:
        ref = bench.reference(b, h, w)
        rel = float((out.double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-30))
    flops = bench.flops(b, h, w)
    rows = []
    for stage in sorted(samples, key=stage_rank):
        row = {"backend": backend, "batch": b, "height": h, "width": w, "precision": case.precision,
               "stage": stage, **summarize(samples[stage]), "gflop": flops[stage] / 1e9, "status": "ok",
               "note": case.note}
        if stage == "end_to_end":
            row.update(peak_mb=mem.peak, delta_mb=mem.delta, setup_s=case.setup_s, rel_l2=rel)
        rows.append(row)
    return rows


def finish_rows(rows: list[dict], baseline: str, ceiling: float) -> None:
    """TFLOP/s, % of the matmul ceiling and speed-up over the baseline backend at the same batch and stage."""
    base = {(r["batch"], r["stage"]): r["median_ms"] for r in rows if r["backend"] == baseline}
    for r in rows:
        r["tflops"] = r["gflop"] / r["median_ms"] if r["median_ms"] > 0 else None
        r["pct_ceiling"] = 100 * r["tflops"] / ceiling if r["tflops"] is not None else None
        ref = base.get((r["batch"], r["stage"]))
        r["speedup"] = ref / r["median_ms"] if ref else None


STAGE_RANK = ("vae_encode", "unet_pass", "unet_x", "neck", "head", "end_to_end")


def stage_rank(stage: str) -> tuple[int, str]:
    prefix = next(p for p in STAGE_RANK if stage.startswith(p))
    return STAGE_RANK.index(prefix), stage


# ------------------------------------------------------------------ output

def fmt(v, spec: str, none: str = "-") -> str:
    return none if v is None else format(v, spec)


def print_table(meta: dict, rows: list[dict], skipped: list[dict]) -> None:
    v = meta["versions"]
    log(f"\n{meta['task']}/{meta['preset']} {meta['model_size']} on {meta['device']} | torch {v['torch']} | "
        f"triton {v['triton'] or '-'} | TensorRT {v['tensorrt'] or '-'} | onnxruntime {v['onnxruntime'] or '-'}")
    c = meta["ceilings"]
    log(f"input {meta['height']}x{meta['width']}, batches {meta['batches']}, {meta['timing']}, warmup {meta['warmup']},"
        f" iters {meta['iters']} | ceilings: {c['matmul']['what']} {c['matmul']['tflops']:.1f} TFLOP/s, "
        f"{c['copy']['what']} {c['copy']['gbps']:.0f} GB/s | speed-up over {meta['baseline']}")
    head = (f"{'backend':24s} {'batch':>5s} {'stage':12s} {'median ms':>10s} {'p20':>9s} {'p80':>9s} "
            f"{'TFLOP/s':>8s} {'%ceil':>6s} {'speed-up':>8s} {'peak MB':>8s} {'+MB':>7s} {'setup s':>8s} "
            f"{'rel L2':>8s}")
    log(head)
    log("-" * len(head))
    for r in rows:
        if r["status"] != "ok":
            continue
        log(f"{r['backend']:24s} {r['batch']:5d} {r['stage']:12s} {r['median_ms']:10.2f} {r['p20_ms']:9.2f} "
            f"{r['p80_ms']:9.2f} {fmt(r['tflops'], '8.3g', '       -')} {fmt(r['pct_ceiling'], '5.1f', '    -')}% "
            f"{fmt(r['speedup'], '7.2f', '      -')}x {fmt(r.get('peak_mb'), '8.0f', '       -')} "
            f"{fmt(r.get('delta_mb'), '7.0f', '      -')} "
            f"{fmt(r.get('setup_s'), '8.1f', '       -')} {fmt(r.get('rel_l2'), '8.1e', '       -')}")
    notes = {(r["backend"], r["note"]) for r in rows if r["status"] == "ok" and r["note"]}
    for backend, note in sorted(notes):
        log(f"  note {backend}: {note}")
    for s in skipped:
        log(f"  {s['status']} {s['backend']}{'' if s['batch'] is None else ' batch ' + str(s['batch'])}: {s['note']}")


def plot(meta: dict, rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["status"] == "ok"]
    batches = sorted({r["batch"] for r in ok}) or [0]
    stages = sorted({r["stage"] for r in ok if r["stage"].startswith(("vae", "unet_pass", "neck", "head"))},
                    key=stage_rank)
    colors = dict(zip(stages, plt.cm.tab10.colors))
    backends = list(dict.fromkeys(r["backend"] for r in ok))
    fig, axes = plt.subplots(1, len(batches), figsize=(max(6, 1.1 * len(backends)) * len(batches), 5),
                             squeeze=False)
    for ax, b in zip(axes[0], batches):
        for i, backend in enumerate(backends):
            mine = {r["stage"]: r["median_ms"] for r in ok if r["backend"] == backend and r["batch"] == b}
            if "end_to_end" not in mine:
                ax.text(i, 0, "not run", ha="center", va="bottom", rotation=90, fontsize=8, color="0.4")
                continue
            bottom = 0.0
            for s in stages:
                if s in mine:
                    ax.bar(i, mine[s], 0.6, bottom=bottom, color=colors[s], label=s)
                    bottom += mine[s]
            rest = mine["end_to_end"] - bottom
            if rest > 0:
                ax.bar(i, rest, 0.6, bottom=bottom, color="0.6" if bottom == 0 else "0.85",
                       hatch="" if bottom == 0 else "//",
                       label="end to end only" if bottom == 0 else "end to end - sum of stage medians")
            ax.text(i, mine["end_to_end"], f"{mine['end_to_end']:.1f}", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(backends)), backends, rotation=30, ha="right", fontsize=8)
        ax.set_xlim(-0.7, len(backends) - 0.3)
        ax.set_title(f"batch {b}, {meta['height']}x{meta['width']}")
        ax.set_ylabel("median latency (ms)")
        handles, labels = ax.get_legend_handles_labels()
        uniq = dict(zip(labels, handles))
        ax.legend(uniq.values(), uniq.keys(), fontsize=7, loc="upper right")
    fig.suptitle(f"{meta['task']}/{meta['preset']} {meta['model_size']} on {meta['device']} "
                 f"(torch {meta['versions']['torch']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(meta: dict, rows: list[dict], skipped: list[dict], out_dir: Path) -> Path:
    stem = out_dir / f"{slug(meta['device'])}-{meta['date'][:10]}"
    out_dir.mkdir(parents=True, exist_ok=True)
    Path(f"{stem}.json").write_text(json.dumps(dict(meta, rows=rows, skipped=skipped), indent=1))
    with open(f"{stem}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for r in rows + skipped:
            writer.writerow({"device": meta["device"], "task": meta["task"], "preset": meta["preset"],
                             "model_size": meta["model_size"], **r})
    plot(meta, rows, Path(f"{stem}.png"))
    return stem


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or platform.machine()
    return f"CPU {cpu}"


def versions() -> dict:
    from mp_deploy.artifacts import runtime_versions

    return runtime_versions()


# ------------------------------------------------------------------ main

def parse_backends(text: str, batches: list[int]) -> list[tuple[str, list[int]]]:
    plan = []
    for item in filter(None, text.split(",")):
        name, _, only = item.strip().partition("@")
        if name not in BACKENDS:
            raise SystemExit(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
        plan.append((name, [int(b) for b in only.split("+")] if only else list(batches)))
    return plan


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="depth", choices=["depth", "seg", "pose"])
    ap.add_argument("--preset", choices=sorted(PRESETS), help="default: nyu / ade20k / coco")
    ap.add_argument("--backends", default=",".join(BACKENDS),
                    help="comma-separated; NAME@1+8 restricts a backend to those batches (default: all)")
    ap.add_argument("--batch", default="1", help="comma-separated batch sizes (default 1)")
    ap.add_argument("--size", help="HxW (default: the preset window, e.g. 480x480 for nyu)")
    ap.add_argument("--model-size", choices=["tiny", "sd15"], help="default: sd15 on CUDA, tiny on CPU")
    ap.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when present")
    ap.add_argument("--warmup", type=int, help="untimed runs (default 3 on CUDA, 1 on CPU)")
    ap.add_argument("--iters", type=int, help="timed runs (default 20 on CUDA, 5 on CPU)")
    ap.add_argument("--artifacts", default="artifacts", help="where build_engine.py artifacts are (default artifacts)")
    ap.add_argument("--build", action="store_true", help="build missing aoti / onnxruntime artifacts there")
    ap.add_argument("--no-kernels", action="store_true", help="do not add the -kernels variants automatically")
    ap.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's own choice)")
    ap.add_argument("--out-dir", default=str(Path(__file__).resolve().parent / "results"))
    a = ap.parse_args(argv)
    a.device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = a.device == "cuda"
    a.preset = a.preset or DEFAULT_PRESET[a.task]
    a.model_size = a.model_size or ("sd15" if cuda else "tiny")
    a.warmup = a.warmup if a.warmup is not None else (3 if cuda else 1)
    a.iters = a.iters or (20 if cuda else 5)
    a.batches = sorted({int(b) for b in a.batch.split(",")})
    a.height, a.width = (int(v) for v in a.size.lower().split("x")) if a.size else PRESETS[a.preset].window
    return a


def plan_backends(a, cuda: bool) -> list[tuple[str, list[int]]]:
    plan = parse_backends(a.backends, a.batches)
    names = [n for n, _ in plan]
    baseline = "eager-fp16" if cuda else "eager-fp32"
    if baseline not in names:
        plan.insert(0, (baseline, list(a.batches)))
    if cuda and not a.no_kernels:  # the Triton-kernel variant next to each fp16 eager / CUDA-graph backend
        for name, batches in list(plan):
            if name in ("eager-fp16", "cudagraph-fp16") and f"{name}-kernels" not in names:
                plan.insert(plan.index((name, batches)) + 1, (f"{name}-kernels", batches))
    return plan


def run_backend(bench: Bench, name: str, batches: list[int], rows: list, skipped: list) -> None:
    """Time one backend at each requested batch; what cannot run goes to `skipped` with the reason."""
    def skip(batch, e, status="skipped"):
        note = str(e) if isinstance(e, Skip) else f"{type(e).__name__}: {e}"
        skipped.append({"backend": name, "batch": batch, "status": status, "note": note})
        log(f"{name}{'' if batch is None else f' batch {batch}'}: {status}: {note}")

    t0 = time.perf_counter()
    try:
        prepare = OPENERS[name](bench, name, batches)
    except Skip as e:
        return skip(None, e)
    except Exception as e:  # noqa: BLE001  (a failing backend must not lose the others' rows)
        return skip(None, e, "error")
    for b in bench.args.batches:
        if b not in batches:
            skip(b, Skip("not requested at this batch"))
            continue
        case = None  # the previous batch's CUDA graphs / buffers are freed before this one is measured
        if bench.cuda:
            torch.cuda.empty_cache()
        try:
            with MemProbe(bench.cuda) as mem:
                case = prepare(b, bench.args.height, bench.args.width)
                samples, out = run_case(bench, case)
            bench.mem_source = mem.source
            new = make_rows(bench, name, case, samples, out, mem)
        except Skip as e:
            skip(b, e)
            continue
        except Exception as e:  # noqa: BLE001
            skip(b, e, "error")
            continue
        rows += new
        setup = "" if case.setup_s is None else f", setup {case.setup_s:.1f} s"
        log(f"{name} batch {b}: {new[-1]['median_ms']:.2f} ms end to end{setup}")
    log(f"{name}: done in {time.perf_counter() - t0:.1f} s")


def main(argv=None) -> int:
    a = parse_args(argv)
    cuda = a.device == "cuda"
    if a.threads:
        torch.set_num_threads(a.threads)
    plan = plan_backends(a, cuda)
    baseline = "eager-fp16" if cuda else "eager-fp32"
    log(f"plan: {', '.join(n + '@' + '+'.join(map(str, b)) for n, b in plan)} | {a.task}/{a.preset} {a.model_size}"
        f" on {a.device}, {a.height}x{a.width}")
    t0 = time.perf_counter()
    # the bundled default's weights (seeded on the CPU): the same as the artifacts build_engine.py builds
    model = seeded_model(a.task, size=a.model_size, seed=SEED, preset=a.preset).requires_grad_(False).to(a.device)
    log(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters, "
        f"built in {time.perf_counter() - t0:.1f} s")
    bench = Bench(a, a.device, model)
    ceilings = {"matmul": matmul_ceiling(a.device), "copy": copy_ceiling(a.device)}
    log(f"ceilings: {ceilings['matmul']['what']} {ceilings['matmul']['tflops']:.2f} TFLOP/s, "
        f"{ceilings['copy']['what']} {ceilings['copy']['gbps']:.1f} GB/s")

    now = datetime.datetime.now(datetime.timezone.utc)
    meta = {"device": device_name(a.device), "device_type": a.device, "date": now.isoformat(timespec="seconds"),
            "versions": versions(), "task": a.task, "preset": a.preset, "model_size": a.model_size,
            "height": a.height, "width": a.width, "batches": a.batches, "warmup": a.warmup, "iters": a.iters,
            "cpu_threads": torch.get_num_threads(), "timing": "CUDA events" if cuda else "wall clock",
            "baseline": baseline, "ceilings": ceilings, "memory": "",
            "command": ["benchmarks/latency.py"] + list(sys.argv[1:] if argv is None else argv)}
    order = {n: i for i, (n, _) in enumerate(plan)}
    rows, skipped = [], []
    for name, batches in plan:
        run_backend(bench, name, batches, rows, skipped)
        # written after every backend: a crash or a time-out later keeps what was measured so far
        rows.sort(key=lambda r: (r["batch"], order[r["backend"]], stage_rank(r["stage"])))
        finish_rows(rows, baseline, ceilings["matmul"]["tflops"])
        meta.update(memory=bench.mem_source, flops={f"{b}x{h}x{w}": v for (b, h, w), v in bench._flops.items()})
        stem = write_outputs(meta, rows, skipped, Path(a.out_dir))
    print_table(meta, rows, skipped)
    log(f"wrote {stem}.json, .csv, .png")
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
