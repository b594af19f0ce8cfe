"""Build deployable engines for one task head.

    python export/build_engine.py --task depth [--preset nyu] [--checkpoint CKPT] [--backend auto]

auto = TensorRT FP16 when TensorRT imports and a GPU is present, else AOTInductor (CUDA when present, else
CPU), and ONNX always. torch-tensorrt = torch_tensorrt.dynamo on the exported program, saved as a `.pt2`.
Every artifact is written atomically with a JSON sidecar, validated against eager fp32 on fresh random
inputs, and listed in a closing table (size, parity error, median latency here). With no checkpoint it
builds the bundled default model.
"""
from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import time
from pathlib import Path

import torch

from mp_deploy.artifacts import Sidecar, read_sidecar, sha256_file, write_sidecar, gpu_info
from mp_deploy.configs import DEFAULT_PRESET, PRESETS
from mp_deploy.engine import Engine
from mp_deploy.export import aoti, onnx_export, tensorrt_build, torch_tensorrt_build
from mp_deploy.export.networks import ShapeRange, TaskNetwork
from mp_deploy.export.validate import ParityError, check_parity, tensorrt_graph_problems

TOLERANCE = {"fp32": 1e-4, "fp16": 5e-3}
DEFAULT_SEED = 0


def log(msg: str) -> None:
    print(msg, flush=True)


class Step:
    """Prints a numbered progress line with the time the step took."""

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


def _triple(text: str, name: str) -> tuple[int, int, int]:
    values = [int(v) for v in text.split(",")]
    if len(values) == 1:
        values = values * 3
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"--{name} takes MIN,OPT,MAX or one value, got {text!r}")
    return tuple(values)


def load_source(args):
    """-> (model in fp32 eval mode, source description for the sidecar)."""
    from mp_deploy.checkpoints import load_model, load_sd_weights
    from mp_deploy.models import SEEDED_RULE, build_model, seeded_model

    overrides = {"preset": args.preset} if args.preset else {}
    if args.checkpoint:
        model = load_model(args.checkpoint, **overrides)
        if model.task != args.task:
            raise SystemExit(f"{args.checkpoint} is a {model.task} model, not {args.task}")
        return model.float().eval(), {"checkpoint": str(args.checkpoint), "sha256": sha256_file(args.checkpoint)}
    if args.sd_weights:
        model = load_sd_weights(build_model(args.task, args.preset, size="sd15"), args.sd_weights)
        log(f"no --checkpoint: SD-1.5 backbone from {args.sd_weights} with freshly initialised prompts and head "
            "(untrained: for export and speed checks only)")
        return model.eval(), {"sd_weights": str(args.sd_weights), "sha256": sha256_file(args.sd_weights),
                              "heads": "initialised"}
    size = args.size or "tiny"
    model = seeded_model(args.task, size=size, seed=DEFAULT_SEED, **overrides)
    log(f"no --checkpoint: building the bundled default, the {size} config with seeded random weights (seed "
        f"{DEFAULT_SEED}). A trained demo model comes with a later release; its outputs are not meaningful yet.")
    return model, {"seeded": size, "seed": DEFAULT_SEED, "rule": SEEDED_RULE}


def artifact_name(network: TaskNetwork, backend: str, device: str) -> str:
    stem = f"{network.task}-{network.preset['name']}-{network.size}-{network.precision}"
    return {"onnx": f"{stem}.onnx", "onnx-trt": f"{stem}.trt.onnx", "aoti": f"{stem}-{device}.pt2",
            "tensorrt": f"{stem}.engine", "torch-tensorrt": f"{stem}-torch-trt.pt2"}[backend]


def up_to_date(path: Path, source: dict, network: TaskNetwork) -> bool:
    """An existing artifact is reused when its sidecar verifies and it was built from the same source/shapes."""
    try:
        meta = read_sidecar(path)
    except Exception:
        return False
    same = lambda a, b: json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)  # noqa: E731 (tuples vs lists)
    return same(meta["source"], source) and same(meta["shapes"], network.shapes.as_dict()) and \
        meta["precision"] == network.precision


def median_latency_ms(engine: Engine, x: torch.Tensor, runs: int) -> float:
    engine.runner(x)  # warm-up
    times = []
    for _ in range(runs):
        if x.is_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        engine.runner(x)
        if x.is_cuda:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def plan_backends(requested: str, device: str) -> list[str]:
    trt_ok, trt_reason = tensorrt_build.available()
    if requested == "auto":
        backends = (["tensorrt"] if trt_ok else ["aoti"]) + ["onnx"]
        if not trt_ok:
            log(f"TensorRT skipped: {trt_reason}; building AOTInductor ({device}) and ONNX")
        return backends
    torch_trt_ok, torch_trt_reason = torch_tensorrt_build.available()
    if requested == "all":
        return ["onnx", "aoti"] + (["tensorrt"] if trt_ok else []) + (["torch-tensorrt"] if torch_trt_ok else [])
    if requested == "tensorrt" and not trt_ok:
        raise SystemExit(f"--backend tensorrt: {trt_reason}")
    if requested == "torch-tensorrt" and not torch_trt_ok:
        raise SystemExit(f"--backend torch-tensorrt: {torch_trt_reason}")
    return [requested]


def build(args) -> list[dict]:
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    precision = args.precision if args.precision != "auto" else ("fp16" if device == "cuda" else "fp32")
    backends = plan_backends(args.backend, device)
    preset_name = args.preset or DEFAULT_PRESET[args.task]
    window = PRESETS[preset_name].window
    # default: the preset's window, batch 1 (static shapes export several times faster on CPU)
    shapes = ShapeRange(args.batch or (1, 1, 1), args.height or (window[0],) * 3, args.width or (window[1],) * 3)
    out_dir = Path(args.out_dir)
    step = Step(2 + 2 * len(backends) + (1 if "tensorrt" in backends else 0))
    with step("loading the model"):
        reference, source = load_source(args)
    with step(f"preparing the {precision} network on {device} (shapes {shapes.as_dict()})"):
        network = TaskNetwork(reference, precision, shapes, device)
        if device == "cuda":  # the fp32 reference runs beside it, in true fp32
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
            reference = reference.to(device)
    rows = []
    for backend in backends:
        outputs = [("onnx-trt", "tensorrt")] if backend == "tensorrt" else [(backend, backend)]
        if backend == "tensorrt":
            outputs.append(("tensorrt", "tensorrt"))
        for kind, backend_tag in outputs:
            path = out_dir / artifact_name(network, kind, device)
            if not args.force and up_to_date(path, source, network):
                log(f"{path.name}: up to date (same source and shapes), reused; --force rebuilds")
            else:
                with step(f"building {path.name}"):
                    extras = write_artifact(kind, network, path, args)
                    sidecar = Sidecar(task=network.task, preset=network.preset, size=network.size,
                                      backend="onnx" if kind == "onnx-trt" else backend_tag,
                                      device="cuda" if kind in ("tensorrt", "torch-tensorrt") else
                                      (device if kind == "aoti" else "cpu"),
                                      precision=precision, shapes=shapes.as_dict(), input=network.io[0],
                                      output=network.io[1], source=source, gpu=gpu_info(),
                                      extra_files=extras or [])
                    if kind == "onnx-trt":
                        sidecar.output = dict(sidecar.output, onnx_flavour="tensorrt plugins")
                    write_sidecar(path, sidecar)
            if kind == "onnx-trt":
                continue  # an input of the TensorRT build; ONNX Runtime cannot run its plugin nodes
            rows.append(validate(path, reference, network, args.runs))
    print_table(rows)
    return rows


def write_artifact(kind: str, network: TaskNetwork, path: Path, args) -> list[str]:
    if kind == "onnx":
        return onnx_export.export_onnx(network, path, "standard")
    if kind == "onnx-trt":
        extras = onnx_export.export_onnx(network, path, "tensorrt")
        problems = tensorrt_graph_problems(onnx_export.load_checked(path))
        if problems:
            raise SystemExit(f"{path.name} would not import into TensorRT:\n  " + "\n  ".join(problems))
        return extras
    if kind == "aoti":
        aoti.export_aoti(network, path, kernels=network.device == "cuda" and args.kernels == "on")
        return []
    if kind == "torch-tensorrt":
        torch_tensorrt_build.build_package(network, path, optimization_level=args.opt_level)
        return []
    if kind == "tensorrt":
        onnx_path = path.with_name(artifact_name(network, "onnx-trt", network.device))
        tensorrt_build.build_engine(onnx_path, path, network.shapes, optimization_level=args.opt_level,
                                    timing_cache=path.parent / "timing.cache")
        return []
    raise ValueError(kind)


def validate(path: Path, reference, network: TaskNetwork, runs: int) -> dict:
    engine = Engine.load(path)  # verifies the sidecar and checksums once
    row = {"artifact": path.name, "MB": (path.stat().st_size + sum(e["bytes"] for e in engine.meta["extra_files"]))
           / 2 ** 20}
    tolerance = TOLERANCE[network.precision]
    try:
        row["rel_l2"] = check_parity(lambda x: engine.runner(x), reference, network, tolerance)
        row["status"] = "ok"
    except ParityError as e:
        row["rel_l2"], row["status"] = e.rel_l2, f"FAIL: {e}"
    x = network.sample("opt").to(engine.device)
    row["ms"] = median_latency_ms(engine, x, runs)
    return row


def print_table(rows: list[dict]) -> None:
    device = (gpu_info() or {}).get("name") or "CPU"
    log(f"\n{'artifact':44s} {'size MB':>9s} {'rel L2 vs eager fp32':>21s} {'median ms':>10s}  status   ({device})")
    for r in rows:
        log(f"{r['artifact']:44s} {r['MB']:9.1f} {r['rel_l2']:21.2e} {r['ms']:10.1f}  {r['status']}")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", required=True, choices=["depth", "seg", "pose"])
    ap.add_argument("--preset", choices=sorted(PRESETS), help="default: nyu / ade20k / coco")
    ap.add_argument("--checkpoint", help="our .safetensors or an official checkpoint")
    ap.add_argument("--sd-weights", help="SD-1.5 weights (file or diffusers folder) for a full-size model "
                                         "with fresh heads, when no --checkpoint is given")
    ap.add_argument("--size", choices=["tiny", "sd15"], help="size of the bundled default model (default tiny)")
    ap.add_argument("--backend", default="auto", choices=["auto", "tensorrt", "aoti", "onnx", "torch-tensorrt", "all"])
    ap.add_argument("--precision", default="auto", choices=["auto", "fp16", "fp32"],
                    help="auto: fp16 on CUDA, fp32 on CPU")
    ap.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when present")
    ap.add_argument("--batch", type=lambda s: _triple(s, "batch"), help="MIN,OPT,MAX or one value (default 1)")
    ap.add_argument("--height", type=lambda s: _triple(s, "height"),
                    help="MIN,OPT,MAX (a dynamic range: multiples of 64, min >= 128) or one value "
                         "(default: the preset window, e.g. 480 for nyu)")
    ap.add_argument("--width", type=lambda s: _triple(s, "width"), help="like --height")
    ap.add_argument("--out-dir", default="artifacts")
    ap.add_argument("--force", action="store_true", help="rebuild artifacts that are up to date")
    # off by default: on torch 2.11 an AOTInductor package holding any user-defined Triton kernel crashes when
    # loaded (benchmarks/aoti_kernels.py; results/gpu_check-nvidia-h200-2026-11-27-run4.txt); Inductor's own
    # kernels are used instead
    ap.add_argument("--kernels", default="off", choices=["on", "off"],
                    help="compile our Triton kernels into CUDA AOTInductor packages (default off)")
    ap.add_argument("--opt-level", type=int, default=3,
                    help="TensorRT builder optimization level (0-5; tensorrt and torch-tensorrt)")
    ap.add_argument("--runs", type=int, default=5, help="timed runs per artifact for the latency column")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    # a kill (timeout, Ctrl-C from a supervisor) unwinds like an exception: no temporary artifact is left
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        rows = build(args)
    except ValueError as e:  # bad shape ranges and the like
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
