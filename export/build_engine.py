"""Build deployable engines for one task head.

    mp-deploy build --task depth [--preset nyu] [--checkpoint CKPT] [--backend auto]
    python export/build_engine.py --task depth ...        (the same command)

    from mp_deploy.export.build_engine import BuildSpec, build
    artifacts = build(BuildSpec(task="depth", backend="onnx"))

Backends are the registry's (mp_deploy.backends): auto = the best available "primary" backend (TensorRT FP16
when TensorRT imports and a GPU is present, else AOTInductor, CUDA when present, else CPU) and ONNX always; all =
every backend available here. Every artifact is written atomically with a JSON sidecar, validated against eager
fp32 on fresh random inputs, and listed in a closing table (size, parity error, median latency here). With no
checkpoint it builds the bundled default model. Every argument, the checkpoint and the output folder are checked
before any export work starts.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mp_deploy import backends, cli, tasks
from mp_deploy.artifacts import Sidecar, gpu_info, read_sidecar, write_sidecar
from mp_deploy.backends import BuildOptions, Product
from mp_deploy.engine import Engine
from mp_deploy.errors import UsageError
from mp_deploy.export.networks import ShapeRange, TaskNetwork
from mp_deploy.export.parity import RULES, ParityError, measure_parity
from mp_deploy.tasks import get_preset
from mp_deploy.timing import median_ms
from mp_deploy.util import inside, sha256_file, tf32_off, writable_folder

TOLERANCE = {name: rule.rel_l2 for name, rule in RULES.items()}  # the plain measure (export.parity.RULES)
PARITY_AGAINST = ("the task output against eager fp32 (TF32 off), worst of two fresh random inputs at the opt and "
                  "min shapes")
DEFAULT_SEED = 0
PRECISIONS = ("auto", "fp16", "fp32")


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
    if spec.checkpoint and spec.sd_weights:
        raise UsageError("give --checkpoint or --sd-weights, not both")
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
    device = spec.device or ("cuda" if torch.cuda.is_available() else "cpu")
    precision = spec.precision if spec.precision != "auto" else ("fp16" if device == "cuda" else "fp32")
    window = preset.window
    shapes = ShapeRange(spec.batch or (1, 1, 1), spec.height or (window[0],) * 3, spec.width or (window[1],) * 3)
    try:
        out_dir = writable_folder(spec.output)
    except ValueError as e:
        raise UsageError(f"output folder: {e}") from None
    return Plan(spec, device, precision, plan_backends(spec.backend, device), shapes, out_dir)


def plan_backends(requested: str, device: str) -> list[str]:
    """The backends to build, each available on `device` (UsageError naming one that is not)."""
    if requested == backends.AUTO:
        chosen = backends.auto_build(device, log)
    elif requested == backends.ALL:
        chosen = backends.all_available(device)
    else:
        chosen = [requested]
    for name in chosen:
        ok, why = backends.get(name).available(device)
        if not ok:
            raise UsageError(f"--backend {name}: {why}")
    return chosen


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
    products = {name: backends.get(name).products("", p.device) for name in p.backends}
    steps = Steps(2 + sum(len(ps) + sum(q.runnable for q in ps) for ps in products.values()))
    options = BuildOptions(kernels=spec.kernels, opt_level=spec.opt_level, out_dir=p.out_dir)
    t0 = time.perf_counter()
    with tf32_off():  # the fp32 reference runs in true fp32 on CUDA
        with steps("loading the model"):
            reference, source = load_source(spec)
        with steps(f"preparing the {p.precision} network on {p.device} (shapes {p.shapes.as_dict()})"):
            network = TaskNetwork(reference, p.precision, p.shapes, p.device)
            reference = reference.to(p.device)
        artifacts = []
        for name in p.backends:
            backend = backends.get(name)
            for product in products[name]:
                path = output_path(p.out_dir, artifact_stem(network) + product.suffix)
                if not spec.force and up_to_date(path, source, network):
                    log(f"{path.name}: up to date (same source and shapes), reused; --force rebuilds")
                else:
                    with steps(f"building {path.name}"):
                        sidecar = sidecar_for(product, network, p, source)
                        sidecar.extra_files = backend.write(product, network, path, options, sidecar.contract())
                        write_sidecar(path, sidecar)
                if not product.runnable:
                    continue  # an input of the next step (TensorRT's parser input)
                with steps(f"checking {path.name} against eager fp32"):
                    artifacts.append(validate(path, reference, network, spec.runs))
    print_table(artifacts)
    failed = [a for a in artifacts if not a.ok]
    log(f"built {len(artifacts)} artifact(s) in {p.out_dir} in {time.perf_counter() - t0:.0f} s: "
        + (f"{len(failed)} failed their parity check" if failed else "all within the parity rule"))
    return artifacts


def output_path(folder: Path, name: str) -> Path:
    """folder / name, which must stay inside folder (names come from checkpoint metadata)."""
    try:
        return inside(folder, folder / name)
    except ValueError as e:
        raise UsageError(f"artifact name {name!r}: {e}") from None


def sidecar_for(product: Product, network: TaskNetwork, p: Plan, source: dict) -> Sidecar:
    sidecar = Sidecar(task=network.task, preset=network.preset, size=network.size,
                      backend=product.sidecar_backend, device=product.device, precision=p.precision,
                      shapes=p.shapes.as_dict(), input=network.io[0], output=network.io[1] | product.output_extra,
                      source=source, gpu=gpu_info() if product.device == "cuda" else None)
    return sidecar


def validate(path: Path, reference, network: TaskNetwork, runs: int) -> Artifact:
    """Parity against eager fp32 (recorded in the sidecar, with the rule it was held to) and latency here."""
    engine = Engine.load(path)  # verifies the sidecar and checksums once
    megabytes = (path.stat().st_size + sum(e["bytes"] for e in engine.meta["extra_files"])) / 2 ** 20
    rule = RULES[network.precision]
    try:
        measured, status = measure_parity(engine.runner, reference, network, rule), "ok"
        rel, centred = measured.rel_l2, measured.centred_rel_l2
    except ParityError as e:
        rel, centred, status = e.rel_l2, e.centred_rel_l2, f"FAIL: {e}"
    finite = lambda v: v if math.isfinite(v) else None  # noqa: E731 (NaN is not JSON)
    parity = {"rel_l2": finite(rel), "centred_rel_l2": finite(centred), "rule": rule.rel_l2,
              "centred_rule": rule.centred_rel_l2, "ok": status == "ok", "against": PARITY_AGAINST,
              "rule_text": rule.describe()}
    if engine.meta["parity"] != parity:
        write_sidecar(path, Sidecar(**{**engine.meta, "parity": parity}))
    x = network.sample("opt").to(engine.device)
    ms = median_ms(lambda: engine.runner(x), runs, warmup=1, cuda=x.is_cuda)
    return Artifact(path, engine.meta["backend"], megabytes, rel, ms, status, centred_rel_l2=centred)


def print_table(artifacts: list[Artifact]) -> None:
    device = (gpu_info() or {}).get("name") or "CPU"
    log(f"\n{'artifact':44s} {'size MB':>9s} {'rel L2 vs eager fp32':>21s} {'centred':>9s} {'median ms':>10s}  "
        f"status   ({device})")
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
    cli.add_precision(ap, "auto", "auto: fp16 on CUDA, fp32 on CPU")
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


def spec_from_args(args: argparse.Namespace) -> BuildSpec:
    cli.check_choice(args.precision, PRECISIONS, "--precision")
    cli.check_choice(args.backend, backend_choices(), "--backend")
    return BuildSpec(task=args.task, preset=args.preset, checkpoint=args.checkpoint, sd_weights=args.sd_weights,
                     model_size=args.model_size, backend=args.backend, precision=args.precision, device=args.device,
                     batch=args.batch, height=args.height, width=args.width, output=args.output, force=args.force,
                     kernels=args.kernels == "on", opt_level=args.opt_level, runs=args.runs)


def run(args: argparse.Namespace) -> int:
    artifacts = build(spec_from_args(args))
    return 0 if all(a.ok for a in artifacts) else 1


def main(argv=None) -> int:
    return cli.main(["build", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
