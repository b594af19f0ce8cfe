"""Build deployable engines for one task head.

    mp-deploy build --task depth [--preset nyu] [--checkpoint CKPT] [--backend auto]
    python export/build_engine.py --task depth ...        (the same command)

    from mp_deploy.export.build_engine import BuildSpec, build
    artifacts = build(BuildSpec(task="depth", backend="onnx"))

Backends are the registry's (mp_deploy.backends): auto = the best available "primary" backend (TensorRT FP16
when TensorRT imports and a GPU is present, else AOTInductor, CUDA when present, else CPU) and ONNX always; all =
every backend available here. A backend that converts another's artifact (OpenVINO reads the ONNX) gets that one
built (or reused) first. Every artifact is written atomically with a JSON sidecar, validated against eager fp32 on
fresh random inputs, timed here (CPU artifacts together, in interleaved rounds, so that a busy machine weighs on
all alike; the median and this machine's name go into its sidecar: `--backend auto` on a CPU machine runs the
fastest), and listed in a closing table (size, parity error, median latency here) that ends with what
`--backend auto` would run from the output folder and why. With no checkpoint it builds the bundled
default model. Every argument, the checkpoint and the output folder are checked before any export work starts.

`--precision int8` (CPU): the fp32 artifact of each backend that can quantize (ONNX Runtime) is built or reused,
then quantized, calibrated on the task's own images (export/calibration.py: the preset's training split, or
`--calibration FOLDER`), and held to the int8 rule on held-out images (export.parity.INT8_RULE).
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from mp_deploy import backends, cli, tasks
from mp_deploy.artifacts import Sidecar, describe_io, gpu_info, read_sidecar, write_sidecar
from mp_deploy.backends import BuildOptions, Product
from mp_deploy.cpu_threads import cpu_threads
from mp_deploy.engine import Engine
from mp_deploy.errors import UsageError
from mp_deploy.export.networks import ShapeRange, TaskNetwork
from mp_deploy.export.parity import INT8_RULE, RULES, ParityError, ParityRule, measure_int8_parity, measure_parity
from mp_deploy.precision import QUANTIZED, network_precision
from mp_deploy.tasks import get_preset
from mp_deploy.timing import median_ms, summarize
from mp_deploy.util import device_name, inside, sha256_file, tf32_off, writable_folder

TOLERANCE = {name: rule.rel_l2 for name, rule in RULES.items()}  # the plain measure (export.parity.RULES)
PARITY_AGAINST = ("the task output against eager fp32 (TF32 off), worst of two fresh random inputs at the opt and "
                  "min shapes")
INT8_AGAINST = ("the raw output against eager fp32 over held-out images of the task's data (never calibrated on), "
                "and the task's headline metric of both there")
DEFAULT_SEED = 0
PRECISIONS = ("auto", "fp16", "fp32", "int8")


def backend_choices() -> tuple[str, ...]:
    """What --backend takes here: auto, every registered backend, all."""
    return (backends.AUTO, *backends.names(), backends.ALL)


@dataclass
class BuildSpec:
    """What to build. Shape ranges are (min, opt, max); None = the preset's window, batch 1."""

    task: str
    preset: str | None = None
    checkpoint: str | None = None  # our .safetensors or an official checkpoint
    sd_weights: str | None = None  # SD-1.5 weights for a full-size model with fresh heads (no checkpoint)
    model_size: str | None = None  # size of the bundled default (no checkpoint): tiny
    backend: str = "auto"
    precision: str = "auto"  # auto: fp16 on CUDA, fp32 on CPU
    device: str | None = None  # default: cuda when present
    batch: tuple[int, int, int] | None = None
    height: tuple[int, int, int] | None = None
    width: tuple[int, int, int] | None = None
    output: str = "artifacts"  # the folder the artifacts are written to
    force: bool = False  # rebuild artifacts that are up to date
    kernels: bool = False  # our Triton kernels inside CUDA AOTInductor packages
    opt_level: int = 3  # TensorRT builder optimization level (tensorrt, torch-tensorrt)
    runs: int = 5  # timed runs per artifact for the latency column
    calibration: str | None = None  # int8: a folder of the task's images to calibrate on (default: the preset's
    # training split where it can be rendered: the synthetic demo presets)
    calibration_images: int = 64  # int8: at most this many calibration images (export/calibration.py)
    held_out_images: int = 32  # int8: the held-out images its rule is measured on
    out_dir: str | None = None  # deprecated spelling of `output` (one release)

    def __post_init__(self):
        if self.out_dir is not None:
            import warnings

            warnings.warn("BuildSpec(out_dir=...) is deprecated: use output=...", DeprecationWarning, stacklevel=3)
            self.output, self.out_dir = self.out_dir, None


@dataclass
class Artifact:
    """One built (or reused) artifact and how it measured."""

    path: Path
    backend: str
    megabytes: float
    rel_l2: float
    median_ms: float
    status: str = "ok"  # ok, or "FAIL: <why>"
    notes: list = field(default_factory=list)
    centred_rel_l2: float = float("nan")  # the error relative to the output's own variation (export.parity)
    precision: str = "fp32"

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def log(msg: str) -> None:
    print(msg, flush=True)


class Steps:
    """Numbered progress lines, each with the time its step took."""

    def __init__(self, total: int):
        self.i, self.total = 0, total

    def __call__(self, what: str):
        self.i += 1
        return _Timed(f"[{self.i}/{self.total}] {what}")


class _Timed:
    def __init__(self, label):
        self.label = label

    def __enter__(self):
        log(f"{self.label} ...")
        self.t0 = time.perf_counter()

    def __exit__(self, *exc):
        if exc[0] is None:
            log(f"{self.label}: done in {time.perf_counter() - self.t0:.1f} s")


# ------------------------------------------------------------------ checks before any work

@dataclass
class Plan:
    """A checked BuildSpec: everything resolved."""

    spec: BuildSpec
    device: str
    precision: str
    backends: list[str]
    shapes: ShapeRange
    out_dir: Path
    preset: str = ""  # the model's preset (int8 calibrates on its data)


@dataclass(frozen=True)
class Job:
    """One file to write: `product` of `backend` at `precision`, made from the artifact of `source` (backend,
    precision) when it converts or quantizes one."""

    backend: str
    product: Product
    precision: str
    source: tuple[str, str] | None = None

    @property
    def quantizes(self) -> bool:
        return self.precision in QUANTIZED


def plan_jobs(p: Plan) -> list[Job]:
    """Every file the plan writes, each after the artifact it is made from (an int8 artifact after its backend's
    fp32 one, an OpenVINO IR after the ONNX it reads), each once."""
    jobs, done = [], set()

    def add(name: str, precision: str):
        if (name, precision) in done:
            return
        done.add((name, precision))
        backend = backends.get(name)
        if precision in QUANTIZED:
            base = network_precision(precision)
            add(name, base)
            last = [q for q in backend.products("", p.device) if q.runnable][-1]
            jobs.append(Job(name, replace(last, kind=precision), precision, (name, base)))
            return
        if backend.reads:
            add(backend.reads, precision)
        for product in backend.products("", p.device):
            jobs.append(Job(name, product, precision, (backend.reads, precision) if backend.reads else None))

    for name in p.backends:
        add(name, p.precision)
    return jobs


def source_preset(spec: BuildSpec):
    """The preset of the model that will be built (its window is the default shape): --preset, else our
    checkpoint's own (the bundled demo's when no model is named), else the task's default. Our checkpoints carry
    their preset: a different --preset is a usage error, not a silent re-labelling."""
    from mp_deploy.checkpoints import FORMAT_TAG, checkpoint_preset, safetensors_metadata

    path = spec.checkpoint
    if path is None and spec.sd_weights is None and spec.model_size is None:
        path = demo_checkpoint(spec.task)
    meta = safetensors_metadata(path) if path is not None and str(path).endswith(".safetensors") else {}
    if meta.get("format") != FORMAT_TAG:  # official files and SD weights: the preset is ours to choose
        return get_preset(spec.preset or tasks.get(spec.task).default_preset)
    own, _ = checkpoint_preset(meta, path)
    if spec.preset not in (None, own.name):
        raise UsageError(f"{path} is a model of preset {own.name}, not {spec.preset}: drop --preset (an official "
                         "file takes one), or --model-size for seeded random weights")
    return own


def plan(spec: BuildSpec) -> Plan:
    """Check every argument and the output folder; UsageError on the first problem."""
    from mp_deploy.configs import SIZES

    tasks.get(spec.task)  # UsageError naming the known tasks
    if spec.backend not in backend_choices():
        raise UsageError(f"unknown backend {spec.backend!r}; choose one of {', '.join(backend_choices())}")
    if spec.precision not in PRECISIONS:
        raise UsageError(f"unknown precision {spec.precision!r}; choose one of {', '.join(PRECISIONS)}")
    if spec.model_size is not None and spec.model_size not in SIZES:
        raise UsageError(f"unknown model size {spec.model_size!r}; choose one of {', '.join(sorted(SIZES))}")
    if spec.runs < 1:
        raise UsageError(f"runs must be at least 1, got {spec.runs}")
    if spec.calibration_images < 1 or spec.held_out_images < 1:
        raise UsageError("calibration_images and held_out_images must be at least 1")
    if spec.checkpoint and spec.sd_weights:
        raise UsageError("give --checkpoint or --sd-weights, not both")
    if spec.calibration is not None and spec.precision not in QUANTIZED:
        raise UsageError("--calibration is for --precision int8 (the images it is calibrated on)")
    for what, path in (("checkpoint", spec.checkpoint), ("SD weights", spec.sd_weights)):
        if path and not os.path.exists(path):
            raise UsageError(f"{what} not found: {path}")

    def check_task(preset):
        if preset.task != spec.task:
            raise UsageError(f"preset {preset.name!r} is for task {preset.task!r}, not {spec.task!r}")
        return preset

    if spec.preset:
        check_task(get_preset(spec.preset))  # the given preset first, then the model's own
    preset = check_task(source_preset(spec))
    if spec.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device here")
    if spec.precision in QUANTIZED and spec.device == "cuda":
        raise UsageError(f"--precision {spec.precision} builds CPU artifacts (ONNX Runtime's static quantization): "
                         "drop --device cuda")
    quantized = spec.precision in QUANTIZED
    device = spec.device or ("cuda" if torch.cuda.is_available() and not quantized else "cpu")
    precision = spec.precision if spec.precision != "auto" else ("fp16" if device == "cuda" else "fp32")
    window = preset.window
    shapes = ShapeRange(spec.batch or (1, 1, 1), spec.height or (window[0],) * 3, spec.width or (window[1],) * 3)
    chosen = plan_backends(spec.backend, device, precision)
    if quantized:
        from mp_deploy.export.calibration import check_sources

        check_sources(preset.name, spec.calibration)
    try:
        out_dir = writable_folder(spec.output)
    except ValueError as e:
        raise UsageError(f"output folder: {e}") from None
    return Plan(spec, device, precision, chosen, shapes, out_dir, preset.name)


def plan_backends(requested: str, device: str, precision: str = "fp32") -> list[str]:
    """The backends to build, each available on `device` and building `precision` (UsageError naming one that is
    not; auto and all leave out, with a line, those that do not build that precision)."""
    if requested == backends.AUTO:
        chosen = backends.auto_build(device, log)
    elif requested == backends.ALL:
        chosen = backends.all_available(device)
    else:
        chosen = [requested]
    if requested in (backends.AUTO, backends.ALL):
        left = [n for n in chosen if precision not in backends.get(n).precisions]
        chosen = [n for n in chosen if n not in left]
        if left:
            log(f"{', '.join(backends.get(n).label for n in left)} skipped: no {precision} build")
        if not chosen:
            able = [b.name for b in backends.all_backends() if precision in b.precisions]
            raise UsageError(f"--backend {requested} --precision {precision}: no backend here builds {precision} "
                             f"(those that do: {', '.join(able)})")
    for name in chosen:
        backend = backends.get(name)
        ok, why = backend.available(device)
        if not ok:
            raise UsageError(f"--backend {name}: {why}")
        if precision not in backend.precisions:
            raise UsageError(f"--backend {name} builds {', '.join(backend.precisions)}, not {precision}")
    return chosen  # plan_jobs puts what a backend reads (OpenVINO: the ONNX) before it


# ------------------------------------------------------------------ the build

def load_source(spec: BuildSpec):
    """-> (model in fp32 eval mode, source description for the sidecar)."""
    from mp_deploy.checkpoints import load_model, load_sd_weights
    from mp_deploy.models import SEEDED_RULE
    from mp_deploy.tasks import build_model, seeded_model

    overrides = {"preset": spec.preset} if spec.preset else {}
    if spec.checkpoint:
        model = load_model(spec.checkpoint, **overrides)
        if model.task != spec.task:
            raise UsageError(f"{spec.checkpoint} is a {model.task} model, not {spec.task}")
        return model.float().eval(), {"checkpoint": str(spec.checkpoint), "sha256": sha256_file(spec.checkpoint)}
    if spec.sd_weights:
        model = load_sd_weights(build_model(spec.task, spec.preset, size="sd15"), spec.sd_weights)
        log(f"no --checkpoint: SD-1.5 backbone from {spec.sd_weights} with freshly initialised prompts and head "
            "(untrained: for export and speed checks only)")
        return model.eval(), {"sd_weights": str(spec.sd_weights), "sha256": sha256_file(spec.sd_weights),
                              "heads": "initialised"}
    if spec.model_size is None:  # the bundled demo model, trained on synthetic scenes (mp_deploy.demo)
        path = demo_checkpoint(spec.task)
        model = load_model(path)
        log(f"no --checkpoint: the bundled demo model ({model.size.name}, preset {model.preset.name}, trained on "
            "synthetic scenes; docs/training.md)")
        return model.float().eval(), {"checkpoint": str(path), "sha256": sha256_file(path), "demo": spec.task}
    model = seeded_model(spec.task, size=spec.model_size, seed=DEFAULT_SEED, **overrides)
    log(f"--model-size {spec.model_size} without --checkpoint: seeded random weights (seed {DEFAULT_SEED}), for "
        "export and speed checks; the outputs are not meaningful")
    return model, {"seeded": spec.model_size, "seed": DEFAULT_SEED, "rule": SEEDED_RULE}


def demo_checkpoint(task: str):
    """The bundled demo model of `task`: the default when no model is named."""
    from mp_deploy import demo

    return demo.checkpoint(task)


def artifact_stem(network: TaskNetwork) -> str:
    return f"{network.task}-{network.preset['name']}-{network.size}-{network.precision}"


def up_to_date(path: Path, source: dict, network: TaskNetwork) -> bool:
    """An existing artifact is reused when its sidecar verifies and it was built from the same source/shapes."""
    try:
        meta = read_sidecar(path)
    except Exception:
        return False
    same = lambda a, b: json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)  # noqa: E731 (tuples vs lists)
    return same(meta["source"], source) and same(meta["shapes"], network.shapes.as_dict()) and \
        meta["precision"] == network.precision


def build(spec: BuildSpec) -> list[Artifact]:
    """Build, check and time every artifact the spec asks for -> one Artifact per runnable file."""
    p = plan(spec)
    jobs = plan_jobs(p)
    cpu = any(job.product.runnable and job.product.device == "cpu" for job in jobs)
    steps = Steps(2 + cpu + sum(1 + job.product.runnable for job in jobs))
    options = BuildOptions(kernels=spec.kernels, opt_level=spec.opt_level, out_dir=p.out_dir)
    t0 = time.perf_counter()
    with tf32_off():  # the fp32 reference runs in true fp32 on CUDA
        with steps("loading the model"):
            reference, source = load_source(spec)
        base = network_precision(p.precision)
        with steps(f"preparing the {base} network on {p.device} (shapes {p.shapes.as_dict()})"):
            networks = {base: TaskNetwork(reference, base, p.shapes, p.device)}
            reference = reference.to(p.device)
        if p.precision != base:  # quantized from the same network: its own name and contract
            networks[p.precision] = quantized_network(networks[base], p.precision)
        int8 = Int8Data(p) if p.precision in QUANTIZED else None
        artifacts, made, timed = [], {}, []
        for job in jobs:
            backend, network = backends.get(job.backend), networks[job.precision]
            path = output_path(p.out_dir, artifact_stem(network) + job.product.suffix)
            job_source = source | ({"calibration": int8.record} if job.quantizes else {})
            if not spec.force and up_to_date(path, job_source, network):
                log(f"{path.name}: up to date (same source and shapes), reused; --force rebuilds")
            else:
                what = f"quantizing {made[job.source].name} to" if job.quantizes else "building"
                with steps(f"{what} {path.name}"):
                    sidecar = sidecar_for(job.product, network, p, job_source)
                    if job.quantizes:
                        sidecar.extra_files = backend.quantize(made[job.source], path, int8.inputs(network),
                                                               sidecar.contract())
                    else:
                        given = replace(options, source=made[job.source] if job.source else None)
                        sidecar.extra_files = backend.write(job.product, network, path, given, sidecar.contract())
                    write_sidecar(path, sidecar)
            if not job.product.runnable:
                continue  # an input of the next step (TensorRT's parser input)
            made[job.backend, job.precision] = path
            against = "eager fp32 on held-out images" if job.quantizes else "eager fp32"
            with steps(f"checking {path.name} against {against}"):
                artifact, engine = validate(path, reference, network, spec.runs,
                                            int8.held_out() if job.quantizes else None)
            artifacts.append(artifact)
            if engine.device == "cpu":  # kept loaded: timed with the others below
                timed.append((artifact, engine, network))
            del engine
        if timed:
            with steps(f"timing the {len(timed)} CPU artifact(s) together: {spec.runs} interleaved rounds on "
                       f"{cpu_threads()} CPU thread(s)"):
                time_cpu_artifacts(timed, spec.runs)
        del timed
    print_table(artifacts)
    failed = [a for a in artifacts if not a.ok]
    log(f"built {len(artifacts)} artifact(s) in {p.out_dir} in {time.perf_counter() - t0:.0f} s: "
        + (f"{len(failed)} failed their parity check" if failed else "all within the parity rule"))
    chosen, why = backends.choose(p.out_dir, task=spec.task)
    log(f"--backend auto (mp-deploy predict --engine {p.out_dir} --task {spec.task}; serve) runs here: "
        + (f"{chosen.name}: {why}" if chosen else why))
    return artifacts


def quantized_network(network: TaskNetwork, precision: str) -> TaskNetwork:
    """The network of a `precision` artifact quantized from `network` (the same model: its own name and I/O)."""
    quantized = copy.copy(network)
    quantized.precision = precision
    quantized.io = describe_io(network.task, network.preset, precision)
    return quantized


class Int8Data:
    """The calibration and held-out images of an int8 build (export/calibration.py), each made once, when first
    needed (a reused int8 artifact needs neither)."""

    def __init__(self, p: Plan):
        from mp_deploy.export.calibration import calibration_record

        self.p = p
        self.record = calibration_record(p.preset, p.spec.calibration, p.spec.calibration_images)
        self._held_out = None

    def inputs(self, network: TaskNetwork) -> list:
        from mp_deploy.export.calibration import calibration_set

        _, _, h, w = network.shapes.shape("opt")
        calibration = calibration_set(self.p.preset, self.p.spec.calibration, h, w, self.p.spec.calibration_images)
        log(f"  calibrating on {calibration.record}")
        return calibration.inputs

    def held_out(self):
        from mp_deploy.export.calibration import held_out_set

        if self._held_out is None:
            self._held_out = held_out_set(self.p.preset, self.p.spec.calibration, self.p.spec.held_out_images)
        return self._held_out


def output_path(folder: Path, name: str) -> Path:
    """folder / name, which must stay inside folder (names come from checkpoint metadata)."""
    try:
        return inside(folder, folder / name)
    except ValueError as e:
        raise UsageError(f"artifact name {name!r}: {e}") from None


def sidecar_for(product: Product, network: TaskNetwork, p: Plan, source: dict) -> Sidecar:
    sidecar = Sidecar(task=network.task, preset=network.preset, size=network.size,
                      backend=product.sidecar_backend, device=product.device, precision=network.precision,
                      shapes=p.shapes.as_dict(), input=network.io[0], output=network.io[1] | product.output_extra,
                      source=source, gpu=gpu_info() if product.device == "cuda" else None)
    return sidecar


def finite(value):
    """value, or None where it is NaN or infinite (not JSON)."""
    return value if value is not None and math.isfinite(value) else None


def validate(path: Path, reference, network: TaskNetwork, runs: int, held_out=None) -> tuple[Artifact, Engine]:
    """Parity against eager fp32 (an int8 artifact: the int8 rule on `held_out` images), recorded in the sidecar
    with the rule it was held to -> (the artifact, its engine). A CUDA artifact is timed here; CPU artifacts are
    timed together afterwards (time_cpu_artifacts)."""
    engine = Engine.load(path, threads=cpu_threads())  # verifies the sidecar and checksums once
    megabytes = (path.stat().st_size + sum(e["bytes"] for e in engine.meta["extra_files"])) / 2 ** 20
    parity = int8_parity(engine, reference, network, held_out) if held_out is not None else \
        float_parity(engine, reference, network)
    engine.meta = {**engine.meta, "parity": parity}
    write_sidecar(path, Sidecar(**engine.meta))
    status = "ok" if parity["ok"] else f"FAIL: {parity['error']}"
    nan = float("nan")
    rel, centred = (parity[k] if parity[k] is not None else nan for k in ("rel_l2", "centred_rel_l2"))
    artifact = Artifact(path, engine.meta["backend"], megabytes, rel, nan, status, centred_rel_l2=centred,
                        precision=engine.meta["precision"])
    if engine.device != "cpu":
        x = network.sample("opt").to(engine.device)
        record_latency(artifact, engine, median_ms(lambda: engine.runner(x), runs, warmup=1, cuda=x.is_cuda),
                       list(x.shape), runs)
    return artifact, engine


def record_latency(artifact: Artifact, engine: Engine, ms: float, shape: list, runs: int) -> None:
    """The build's latency of `artifact` on this machine, into the table and its sidecar (`measured`, keyed by
    mp_deploy.util.device_name: `--backend auto` on a CPU machine compares these)."""
    artifact.median_ms = ms
    measured = dict(engine.meta.get("measured") or {})
    measured[device_name(engine.device)] = {
        "median_ms": ms, "threads": cpu_threads(), "input": shape, "runs": runs,
        "at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    engine.meta = {**engine.meta, "measured": measured}
    write_sidecar(artifact.path, Sidecar(**engine.meta))


def time_cpu_artifacts(timed: list, runs: int) -> None:
    """The CPU artifacts of a build (artifact, engine, its network) timed together: one warm-up each, then `runs`
    rounds that each run every one of them once, in an order that rotates every round, so that the machine's
    load (another process taking a core) falls on all of them alike; each one's median is recorded."""
    inputs = [network.sample("opt").to(engine.device) for _, engine, network in timed]
    for (_, engine, _), x in zip(timed, inputs):
        engine.runner(x)
    samples = [[] for _ in timed]
    for r in range(runs):
        for k in range(len(timed)):
            i = (r + k) % len(timed)
            t0 = time.perf_counter()
            timed[i][1].runner(inputs[i])
            samples[i].append((time.perf_counter() - t0) * 1e3)
    for (artifact, engine, _), x, ms in zip(timed, inputs, samples):
        record_latency(artifact, engine, summarize(ms)["median_ms"], list(x.shape), runs)


def float_parity(engine: Engine, reference, network: TaskNetwork) -> dict:
    """The parity record of an fp32 / fp16 artifact: fresh random inputs against eager fp32 (export.parity)."""
    rule = RULES[network.precision]
    error = None
    try:
        measured = measure_parity(engine.runner, reference, network, rule)
        rel, centred = measured.rel_l2, measured.centred_rel_l2
    except ParityError as e:
        rel, centred, error = e.rel_l2, e.centred_rel_l2, str(e)
    record = {"rel_l2": finite(rel), "centred_rel_l2": finite(centred), "rule": rule.rel_l2,
              "centred_rule": rule.centred_rel_l2, "ok": error is None, "against": PARITY_AGAINST,
              "rule_text": rule.describe()}
    return record | ({"error": error} if error else {})


def int8_parity(engine: Engine, reference, network: TaskNetwork, held_out) -> dict:
    """The parity record of an int8 artifact: the int8 rule on held-out images (export.parity.INT8_RULE), and for
    information the plain measure on the fresh random inputs every other artifact is checked on."""
    error, record = None, dict(held_out.record)
    run = lambda x: engine.runner(engine.preprocess(x))  # noqa: E731 (windows in [0, 1], as evaluation gives)
    try:
        measured = measure_int8_parity(run, reference, network, held_out, INT8_RULE)
        rel, centred, record = measured.rel_l2, measured.centred_rel_l2, measured.held_out
    except ParityError as e:
        rel, centred, error = e.rel_l2, e.centred_rel_l2, str(e)
        record = getattr(e, "held_out", record)
    try:
        noise = measure_parity(engine.runner, reference, network, ParityRule(math.inf, math.inf))
        random_inputs = {"rel_l2": finite(noise.rel_l2), "centred_rel_l2": finite(noise.centred_rel_l2)}
    except ParityError as e:  # not finite: the held-out check says so too
        random_inputs = {"rel_l2": None, "error": str(e)}
    record = {k: (finite(v) if isinstance(v, float) else v) for k, v in record.items()}
    parity = {"rel_l2": finite(rel), "centred_rel_l2": finite(centred), "rule": INT8_RULE.rel_l2,
              "metric_rule": INT8_RULE.metric_change, "ok": error is None, "against": INT8_AGAINST,
              "rule_text": INT8_RULE.describe(), "held_out": record,
              "random_inputs": random_inputs | {"note": "for information: not part of the int8 rule"}}
    return parity | ({"error": error} if error else {})


def print_table(artifacts: list[Artifact]) -> None:
    device = (gpu_info() or {}).get("name") or "CPU"
    log(f"\n{'artifact':44s} {'size MB':>9s} {'rel L2 vs eager fp32':>21s} {'centred':>9s} {'median ms':>10s}  "
        f"status   ({device}, CPU threads {cpu_threads()}; int8: on held-out images)")
    for a in artifacts:
        log(f"{a.path.name:44s} {a.megabytes:9.1f} {a.rel_l2:21.2e} {a.centred_rel_l2:9.2e} {a.median_ms:10.1f}  "
            f"{a.status}")


# ------------------------------------------------------------------ command line

def add_arguments(ap: argparse.ArgumentParser) -> None:
    cli.add_task(ap)
    cli.add_preset(ap)
    ap.add_argument("--checkpoint", help="our .safetensors or an official checkpoint")
    ap.add_argument("--sd-weights", help="SD-1.5 weights (file or diffusers folder) for a full-size model "
                                         "with fresh heads, when no --checkpoint is given")
    cli.add_model_size(ap, "size of the bundled default model (default tiny)")
    cli.add_backend(ap, "auto: the best available here + ONNX; all: every one available; or one backend")
    cli.add_precision(ap, "auto", "auto: fp16 on CUDA, fp32 on CPU; int8: quantized for the CPU from the fp32 "
                                  "artifact (ONNX Runtime), calibrated on the task's own images")
    cli.add_device(ap)
    ap.add_argument("--batch", type=cli.size_range, metavar="B|MIN,OPT,MAX", help="batch range (default 1)")
    cli.add_sizes(ap, "MIN,OPT,MAX (a dynamic range: multiples of 64, min >= 128) or one value (default: the model "
                      "preset's window: 128 for the demos, 480 for nyu)")
    cli.add_output(ap, "the folder the artifacts are written to (default artifacts)", default="artifacts",
                   deprecated=("--out-dir",))
    ap.add_argument("--force", action="store_true", help="rebuild artifacts that are up to date")
    # off by default: CUDA AOTInductor packages holding user-defined Triton kernels crashed at load on torch
    # 2.11 (docs/performance.md); Inductor's own kernels are used instead
    cli.add_kernels(ap, "off", "compile our Triton kernels into CUDA AOTInductor packages (default off)")
    ap.add_argument("--opt-level", type=int, default=3, choices=range(6), metavar="{0..5}",
                    help="TensorRT builder optimization level (tensorrt and torch-tensorrt)")
    cli.add_runs(ap, 5, "timed runs per artifact for the latency column")
    ap.add_argument("--calibration", metavar="FOLDER",
                    help="--precision int8: images of the task's own data to calibrate on (default: the preset's "
                         "training split where it can be rendered, the synthetic demo presets; never the "
                         "evaluation split)")


def spec_from_args(args: argparse.Namespace) -> BuildSpec:
    cli.check_choice(args.precision, PRECISIONS, "--precision")
    cli.check_choice(args.backend, backend_choices(), "--backend")
    return BuildSpec(task=args.task, preset=args.preset, checkpoint=args.checkpoint, sd_weights=args.sd_weights,
                     model_size=args.model_size, backend=args.backend, precision=args.precision, device=args.device,
                     batch=args.batch, height=args.height, width=args.width, output=args.output, force=args.force,
                     kernels=args.kernels == "on", opt_level=args.opt_level, runs=args.runs,
                     calibration=args.calibration)


def run(args: argparse.Namespace) -> int:
    artifacts = build(spec_from_args(args))
    return 0 if all(a.ok for a in artifacts) else 1


def main(argv=None) -> int:
    return cli.main(["build", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
