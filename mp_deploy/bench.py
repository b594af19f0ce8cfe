"""Latency of one task network per backend, per stage and end to end (`mp-deploy bench`).

    mp-deploy bench --task depth --batches 1,8 --height 480 --width 480 \
        --backends eager-fp32,eager-fp16,cudagraph-fp16,compile,aoti,tensorrt,onnx

    from mp_deploy.bench import BenchSpec, bench
    result = bench(BenchSpec(task="depth", batches=[1], backends=["eager-fp32"]))

Rows: eager-fp32 (TF32 off), eager-fp16 (fp16 copy, fp32 norms), cudagraph-fp16 (that model captured with
torch.cuda.CUDAGraph for a static input), compile (torch.compile of the fp16 model, default mode, dynamic=False),
and every registered backend by its name (mp_deploy.backends: onnx, aoti, tensorrt, ...: artifacts of
`mp-deploy build` through Engine). eager-fp16 and cudagraph-fp16 also run with the Triton kernels on
(`-kernels`) when CUDA and Triton are present. NAME@1+4 runs a backend at those batch sizes only. Missing
backends are listed as skipped, with why. On CPU the fp16 backends are skipped and compile / artifacts are fp32;
speed-ups are over eager-fp16 (CUDA) or eager-fp32 (CPU), measured in the same run.

Eager and CUDA-graph rows are per stage (the model's own stages: `model.stages()`, timed through its hook) and
end to end; the others end to end only. Times: median and 20th / 80th percentile of --runs runs after --warmup
(mp_deploy.timing). FLOPs (matmul/conv/attention, torch.utils.flop_counter on a meta copy of the model) give
TFLOP/s and % of a matmul ceiling measured in the same run. Prints a table; `--output DIR` also writes the rows
as DIR/bench.json and .csv. benchmarks/latency.py is the harness that keeps results (benchmarks/results/
<device>-<date>.json / .csv / .png).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from mp_deploy import backends, cli, ops, tasks
from mp_deploy.artifacts import ArtifactError, read_sidecar, runtime_versions
from mp_deploy.engine import Engine
from mp_deploy.errors import UsageError
from mp_deploy.models import SEEDED_RULE
from mp_deploy.precision import to_precision
from mp_deploy.tasks import build_model, seeded_model
from mp_deploy.cpu_threads import apply_torch, cpu_threads
from mp_deploy.cpu_threads import describe as describe_threads
from mp_deploy.timing import MemProbe, copy_ceiling, matmul_ceiling, summarize, time_runs, write_results
from mp_deploy.util import device_name, rel_l2, tf32_off

EAGER_ROWS = ["eager-fp32", "eager-fp16", "eager-fp16-kernels", "cudagraph-fp16", "cudagraph-fp16-kernels",
              "compile"]
ALIASES = {"onnxruntime": "onnx"}  # old row names, one release


def row_names() -> list[str]:
    """Every row bench can time: the eager modes, then each registered backend."""
    return EAGER_ROWS + list(backends.names())
CSV_FIELDS = ["device", "task", "preset", "model_size", "backend", "batch", "height", "width", "precision", "stage",
              "median_ms", "p20_ms", "p80_ms", "gflop", "tflops", "pct_ceiling", "speedup", "peak_mb", "delta_mb",
              "setup_s", "rel_l2", "status", "note"]
SEED = 0
STAGE_RANK = ("vae_encode", "unet_pass", "unet_x", "neck", "head", "end_to_end")


def log(msg: str = "") -> None:
    print(msg, flush=True)


class Skip(Exception):
    """A backend (or one batch of it) that cannot run here; the message says why."""


@dataclass
class BenchSpec:
    task: str = "depth"
    preset: str | None = None  # default: the task's
    backends: list[str] = field(default_factory=row_names)  # NAME or NAME@1+8
    batches: list[int] = field(default_factory=lambda: [1])
    height: int | None = None  # default: the preset window
    width: int | None = None
    model_size: str | None = None  # default: sd15 on CUDA, tiny on CPU
    device: str | None = None  # default: cuda when present
    warmup: int | None = None  # default 3 on CUDA, 1 on CPU
    runs: int | None = None  # default 20 on CUDA, 5 on CPU
    artifacts: str = "artifacts"  # where `mp-deploy build` artifacts are
    build: bool = False  # build missing artifacts there
    kernel_variants: bool = True  # add the -kernels variants on CUDA
    threads: int | None = None  # CPU threads for torch
    output: str | None = None  # a folder for bench.json / bench.csv (None: the table only)

    def resolve(self) -> "BenchSpec":
        """Defaults filled in, every value checked (UsageError)."""
        if self.device == "cuda" and not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA device here")
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        cuda = device == "cuda"
        preset = self.preset or tasks.get(self.task).default_preset
        if preset not in tasks.PRESETS or tasks.PRESETS[preset].task != self.task:
            raise UsageError(f"preset {preset!r} is not a {self.task} preset")
        window = tasks.PRESETS[preset].window
        r = BenchSpec(**{**self.__dict__, "device": device, "preset": preset,
                         "model_size": self.model_size or ("sd15" if cuda else "tiny"),
                         "warmup": self.warmup if self.warmup is not None else (3 if cuda else 1),
                         "runs": self.runs or (20 if cuda else 5), "batches": sorted(set(self.batches)),
                         "height": self.height or window[0], "width": self.width or window[1]})
        if r.runs < 1 or r.warmup < 0 or min(r.batches) < 1:
            raise UsageError("runs and batches must be at least 1, warmup at least 0")
        return r


@dataclass
class BenchResult:
    meta: dict
    rows: list[dict]
    skipped: list[dict]
    stem: Path


# ------------------------------------------------------------------ context shared by every backend

@dataclass
class Case:
    """One backend at one batch, ready to time: run(mark) -> output, mark(stage) called after each stage."""

    run: Callable
    precision: str
    shape: tuple
    setup_s: float | None = None
    note: str = ""
    stage_run: Callable | None = None  # a separately captured staged version (CUDA graphs per stage)
    context: Callable = contextlib.nullcontext
    comparable: bool = True  # same weights as our eager model: rel_l2 is meaningful


def staged_call(model, x):
    """run(mark) of the model's own forward, mark(stage) called through its stage hook."""
    def run(mark):
        with torch.no_grad():
            return model(x, hook=lambda name, state: mark(name))

    return run


@dataclass
class Bench:
    spec: BenchSpec
    model: torch.nn.Module  # fp32 eager model
    _fp16: torch.nn.Module | None = None
    _meta: torch.nn.Module | None = None
    _images: dict = field(default_factory=dict)
    _flops: dict = field(default_factory=dict)
    references: dict = field(default_factory=dict)  # (b, h, w) -> eager fp32 output
    mem_source: str = ""

    @property
    def device(self) -> str:
        return self.spec.device

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
                s = self.spec
                self._meta = build_model(s.task, s.preset, size=s.model_size, init=False).requires_grad_(False)
            state, counts = {"images": torch.empty(b, 3, h, w, device="meta")}, {}
            for stage in self._meta.stages():
                with FlopCounterMode(display=False) as counter:
                    state = stage.fn(state)
                counts[stage.name] = counter.get_total_flops()
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


def has_triton() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def kernels_context(enabled: bool):
    if enabled:
        import mp_deploy.kernels  # noqa: F401  (registers the ops that use_kernels switches on)
    return ops.use_kernels(enabled)


# ------------------------------------------------------------------ backends

def eager_backend(bench: Bench, name: str, batches: list[int]):
    fp32 = name == "eager-fp32"
    kernels = name.endswith("-kernels")
    if not fp32 and not bench.cuda:
        raise Skip("fp16 needs CUDA (CPU runs compare against eager-fp32)")
    if kernels and not has_triton():
        raise Skip("Triton is not installed")
    model = bench.model if fp32 else bench.fp16

    def prepare(b, h, w):
        x = bench.images(b, h, w, torch.float32 if fp32 else torch.float16)
        return Case(staged_call(model, x), "fp32" if fp32 else "fp16", (b, 3, h, w),
                    context=tf32_off if fp32 else (lambda: kernels_context(kernels)))

    return prepare


def cudagraph_backend(bench: Bench, name: str, batches: list[int]):
    from mp_deploy.timing import capture_graph

    if not bench.cuda:
        raise Skip("CUDA graphs need CUDA")
    kernels = name.endswith("-kernels")
    if kernels and not has_triton():
        raise Skip("Triton is not installed")
    model = bench.fp16

    def prepare(b, h, w):
        x = bench.images(b, h, w, torch.float16)
        t0 = time.perf_counter()
        with kernels_context(kernels):
            whole, out = capture_graph(lambda: model(x))  # the whole forward: the end-to-end row
            pool, state, graphs = torch.cuda.graph_pool_handle(), {"images": x}, []
            for stage in model.stages():  # one graph per stage, chained through static tensors
                graph, state = capture_graph(lambda fn=stage.fn, s=state: fn(s), pool)
                graph.replay()  # fills the static outputs the next stage warms up on
                graphs.append((stage.name, graph))
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
            return final["output"]

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
    """-> (path, meta) of the artifact in the artifacts folder covering the most requested batches, or Skip."""
    s = bench.spec
    suffix = backends.get(backend).suffix
    precision = "fp16" if bench.cuda else "fp32"
    want = f"{s.task}/{s.preset}/{s.model_size}/{precision}"
    best, problems = None, []
    for path in sorted(p for p in Path(s.artifacts).glob(f"*{suffix}") if not p.name.startswith(".")):
        if backends.is_intermediate(path):
            continue  # an input of a later build step (TensorRT's parser ONNX): nothing runs it
        try:
            meta = read_sidecar(path)
        except ArtifactError as e:
            problems.append(str(e))
            continue
        got = f"{meta['task']}/{meta['preset']['name']}/{meta['size']}/{meta['precision']}"
        if meta["backend"] != backend or got != want or \
                meta["device"] != backends.get(backend).artifact_device(bench.device):
            continue
        shapes = meta["shapes"]
        if not (takes(shapes["height"], h, shapes.get("multiple_of", 64))
                and takes(shapes["width"], w, shapes.get("multiple_of", 64))):
            problems.append(f"{path.name} takes {shapes['height'][0]}-{shapes['height'][2]} x "
                            f"{shapes['width'][0]}-{shapes['width'][2]}")
            continue
        covered = [b for b in batches if shapes["batch"][0] <= b <= shapes["batch"][2]]
        if covered and (best is None or len(covered) > best[2]):
            best = (path, meta, len(covered))
    if best is None:
        hint = f"--build builds it here (mp-deploy build --backend {backend})"
        detail = f" ({'; '.join(problems)})" if problems else ""
        raise Skip(f"no {suffix} for {want} at {h}x{w}, batch {','.join(map(str, batches))} in {s.artifacts}/"
                   f"{detail}; {hint}")
    return best[0], best[1]


def takes(side_range, value: int, multiple_of: int) -> bool:
    """A static side takes exactly its value; a dynamic one, multiples of `multiple_of` within its range."""
    lo, _, hi = side_range
    return value == lo if lo == hi else (lo <= value <= hi and value % multiple_of == 0)


def build_artifact(bench: Bench, backend: str, batches, h: int, w: int) -> str:
    from mp_deploy.export.build_engine import BuildSpec, build

    s = bench.spec
    lo, hi = min(batches), max(batches)
    spec = BuildSpec(task=s.task, preset=s.preset, model_size=s.model_size, backend=backend,
                     precision="fp16" if bench.cuda else "fp32", device=bench.device,
                     batch=(lo, lo, hi), height=(h, h, h), width=(w, w, w), output=s.artifacts, runs=1)
    log(f"building: {spec}")
    t0 = time.perf_counter()
    with tf32_off():  # build turns TF32 off for its fp32 reference; the flags come back afterwards
        artifacts = build(spec)
    status = "; ".join(f"{a.path.name} {a.status} (rel L2 {a.rel_l2:.1e})" for a in artifacts)
    return f"built here in {time.perf_counter() - t0:.0f} s: {status}"


def artifact_backend(bench: Bench, name: str, batches: list[int]):
    s = bench.spec
    backend = backends.get(name)
    ok, reason = backend.runs_on(bench.device)
    if not ok:
        raise Skip(reason)
    note = ""
    try:
        path, meta = find_artifact(bench, name, batches, s.height, s.width)
    except Skip:
        if not s.build or not backend.available(bench.device)[0]:
            raise
        note = build_artifact(bench, name, batches, s.height, s.width)
        path, meta = find_artifact(bench, name, batches, s.height, s.width)
    t0 = time.perf_counter()
    engine = Engine.load(path, device=bench.device, threads=bench.spec.threads)
    load_s = time.perf_counter() - t0
    # built from the weights of our eager model?
    comparable = meta.get("source") == {"seeded": s.model_size, "seed": SEED, "rule": SEEDED_RULE}
    note = "; ".join(filter(None, [note, backend.bench_note]))
    shapes = meta["shapes"]

    def prepare(b, h, w):
        if not shapes["batch"][0] <= b <= shapes["batch"][2]:
            raise Skip(f"batch {b} is outside {path.name}'s range {shapes['batch'][0]}-{shapes['batch'][2]}")
        x = bench.images(b, h, w, engine.dtype)
        return Case(lambda mark: engine.runner(x), meta["precision"], (b, 3, h, w), load_s,
                    "; ".join(filter(None, [f"{path.name}, setup = load", note])), comparable=comparable)

    return prepare


EAGER_OPENERS = {"eager-fp32": eager_backend, "eager-fp16": eager_backend, "eager-fp16-kernels": eager_backend,
                 "cudagraph-fp16": cudagraph_backend, "cudagraph-fp16-kernels": cudagraph_backend,
                 "compile": compile_backend}


def opener(name: str):
    """The function that prepares row `name`: an eager mode's, or the artifact opener for a registered backend."""
    return EAGER_OPENERS.get(name, artifact_backend)


# ------------------------------------------------------------------ rows

def run_case(bench: Bench, case: Case) -> tuple[dict, torch.Tensor]:
    """Time a case -> (stage -> ms per run, its output on the CPU)."""
    s = bench.spec
    with case.context():
        samples = time_runs(case.run, s.runs, s.warmup, bench.cuda)
        if case.stage_run is not None:
            samples = dict(time_runs(case.stage_run, s.runs, s.warmup, bench.cuda), end_to_end=samples["end_to_end"])
        out = case.run(lambda name: None).float().cpu()
    return samples, out


def make_rows(bench: Bench, backend: str, case: Case, samples: dict, out: torch.Tensor, mem: MemProbe) -> list[dict]:
    b, _, h, w = case.shape
    if backend == "eager-fp32":
        bench.references.setdefault((b, h, w), out)
    rel = rel_l2(out, bench.reference(b, h, w)) if case.comparable else None
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
        f" runs {meta['runs']} | ceilings: {c['matmul']['what']} {c['matmul']['tflops']:.1f} TFLOP/s, "
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


def write_rows(result: "BenchResult", folder) -> Path:
    """The rows (and the run's description) as folder/bench.json and folder/bench.csv -> the stem."""
    meta = result.meta
    key = {"device": meta["device"], "task": meta["task"], "preset": meta["preset"], "model_size": meta["model_size"]}
    return write_results(Path(folder) / "bench", dict(meta, skipped=result.skipped), result.rows, CSV_FIELDS, key,
                         csv_rows=result.rows + result.skipped)


# ------------------------------------------------------------------ the run

def plan_backends(spec: BenchSpec) -> list[tuple[str, list[int]]]:
    """[(backend, batches)]: the baseline first when not asked for, the -kernels variants beside their base."""
    plan = []
    for item in spec.backends:
        name, _, only = item.strip().partition("@")
        if name in ALIASES:
            print(f"bench: row {name!r} is now called {ALIASES[name]!r} (the old name goes in the next release)",
                  file=sys.stderr)
            name = ALIASES[name]
        if name not in row_names():
            raise UsageError(f"unknown backend {name!r}; choose from {', '.join(row_names())}")
        try:
            batches = [int(b) for b in only.split("+")] if only else list(spec.batches)
        except ValueError:
            raise UsageError(f"backend {item!r}: NAME@B1+B2 takes batch sizes") from None
        plan.append((name, batches))
    names = [n for n, _ in plan]
    cuda = spec.device == "cuda"
    baseline = "eager-fp16" if cuda else "eager-fp32"
    if baseline not in names:
        plan.insert(0, (baseline, list(spec.batches)))
    if cuda and spec.kernel_variants:
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
        prepare = opener(name)(bench, name, batches)
    except Skip as e:
        return skip(None, e)
    except Exception as e:  # noqa: BLE001  (a failing backend must not lose the others' rows)
        return skip(None, e, "error")
    for b in bench.spec.batches:
        if b not in batches:
            skip(b, Skip("not requested at this batch"))
            continue
        case = None  # the previous batch's CUDA graphs / buffers are freed before this one is measured
        if bench.cuda:
            torch.cuda.empty_cache()
        try:
            with MemProbe(bench.cuda) as mem:
                case = prepare(b, bench.spec.height, bench.spec.width)
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


def bench(spec: BenchSpec, on_progress: Callable[[BenchResult], None] | None = None) -> BenchResult:
    """Time every planned backend; `on_progress(result so far)` after each one (a harness writes its files there, so
    that a time-out keeps what was measured)."""
    s = spec.resolve()
    cuda = s.device == "cuda"
    threads = cpu_threads(s.threads)
    if not cuda:
        apply_torch(threads)  # the eager rows and the ceiling run on the engines' thread count
    plan = plan_backends(s)
    baseline = "eager-fp16" if cuda else "eager-fp32"
    log(f"plan: {', '.join(n + '@' + '+'.join(map(str, b)) for n, b in plan)} | {s.task}/{s.preset} {s.model_size}"
        f" on {s.device}, {s.height}x{s.width}")
    t0 = time.perf_counter()
    # the seeded weights of that size (on the CPU): the same as the seeded artifacts `mp-deploy build` makes
    model = seeded_model(s.task, size=s.model_size, seed=SEED, preset=s.preset).requires_grad_(False).to(s.device)
    log(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters, "
        f"built in {time.perf_counter() - t0:.1f} s")
    b = Bench(s, model)
    ceilings = {"matmul": matmul_ceiling(s.device), "copy": copy_ceiling(s.device)}
    log(f"ceilings: {ceilings['matmul']['what']} {ceilings['matmul']['tflops']:.3f} TFLOP/s (fastest of "
        f"15; median {ceilings['matmul']['tflops_p50']:.3f}), {ceilings['copy']['what']} "
        f"{ceilings['copy']['gbps']:.1f} GB/s" + ("" if cuda else f" | {describe_threads(threads)}"))

    now = datetime.datetime.now(datetime.timezone.utc)
    meta = {"device": device_name(s.device), "device_type": s.device, "date": now.isoformat(timespec="seconds"),
            "versions": runtime_versions(), "task": s.task, "preset": s.preset, "model_size": s.model_size,
            "height": s.height, "width": s.width, "batches": s.batches, "warmup": s.warmup, "runs": s.runs,
            "cpu_threads": None if cuda else threads, "cpu_policy": None if cuda else describe_threads(threads),
            "timing": "CUDA events" if cuda else "wall clock",
            "baseline": baseline, "ceilings": ceilings, "memory": "", "spec": {k: v for k, v in s.__dict__.items()}}
    order = {n: i for i, (n, _) in enumerate(plan)}
    rows, skipped = [], []
    result = BenchResult(meta, rows, skipped, None)
    for name, batches in plan:
        run_backend(b, name, batches, rows, skipped)
        rows.sort(key=lambda r: (r["batch"], order[r["backend"]], stage_rank(r["stage"])))
        finish_rows(rows, baseline, ceilings["matmul"]["tflops"])
        meta.update(memory=b.mem_source, flops={f"{k[0]}x{k[1]}x{k[2]}": v for k, v in b._flops.items()})
        if on_progress is not None:
            on_progress(result)
    if s.output:
        result.stem = write_rows(result, s.output)
    print_table(meta, rows, skipped)
    log(f"{len({r['backend'] for r in rows})} backend(s) timed, {len(skipped)} skipped"
        + (f"; rows in {result.stem}.json and .csv" if result.stem else ""))
    return result


# ------------------------------------------------------------------ command line

def add_arguments(ap: argparse.ArgumentParser) -> None:
    cli.add_task(ap, default="depth")
    cli.add_preset(ap)
    ap.add_argument("--backends", default=",".join(row_names()),
                    help="comma-separated rows: eager modes and backends; NAME@1+8 restricts one to those batches "
                         "(default: all)")
    ap.add_argument("--batches", type=cli.int_list, default=[1], help="comma-separated batch sizes (default 1)")
    cli.add_sizes(ap, "input height, one value (default: the preset window)")
    cli.add_model_size(ap, "default: sd15 on CUDA, tiny on CPU (seeded weights: speed does not depend on them)")
    cli.add_device(ap)
    ap.add_argument("--warmup", type=cli.nonnegative_int, help="untimed runs (default 3 on CUDA, 1 on CPU)")
    cli.add_runs(ap, None, "timed runs (default 20 on CUDA, 5 on CPU)")
    ap.add_argument("--artifacts", default="artifacts", help="where `mp-deploy build` artifacts are (default artifacts)")
    ap.add_argument("--build", action="store_true", help="build missing artifacts there")
    cli.add_kernels(ap, "on", "on: add the -kernels variants of the eager CUDA rows (default on)")
    cli.add_threads(ap)
    cli.add_output(ap, "also write the rows to DIR/bench.json and .csv", deprecated=("--out-dir",))


def run(args: argparse.Namespace) -> int:
    result = bench(BenchSpec(task=args.task, preset=args.preset, backends=args.backends.split(","),
                             batches=args.batches, height=cli.one_size(args.height, "--height"),
                             width=cli.one_size(args.width, "--width"), model_size=args.model_size,
                             device=args.device, warmup=args.warmup, runs=args.runs, artifacts=args.artifacts,
                             build=args.build, kernel_variants=args.kernels == "on", threads=args.threads or None,
                             output=args.output))
    return 0 if result.rows else 1


if __name__ == "__main__":
    sys.exit(cli.main(["bench", *sys.argv[1:]]))
