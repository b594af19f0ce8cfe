"""Training throughput (images/s) and peak memory per configuration: one full optimizer step (forward, task loss,
backward, AdamW with the recipe's groups) on random inputs, timed by mp_deploy.timing (CUDA events on a GPU,
wall clock on the CPU, the device synchronised around each step) with seeded weights (speed does not depend on
the values).

    python benchmarks/train_throughput.py                 # the CPU set (tiny demo models) or, with CUDA, the GPU set
    python benchmarks/train_throughput.py --configs sd15-depth-480-bf16-ckpt-b3

GPU set (issue 14): SD-1.5 depth at the NYU crop 480x480, bf16 autocast + UNet checkpointing, batch 2 and 3
(the reference trains batch 3 per V100-32GB; it must stay under 24 GB), the same without checkpointing, and
segmentation at the ADE20K crop 512x512. Results: benchmarks/results/train_throughput-<device>-<date>.{json,csv}.
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from mp_deploy import tasks
from mp_deploy.tasks import seeded_model
from mp_deploy.timing import MemProbe, summarize, time_runs, write_results
from mp_deploy.train.optim import build_optimizer
from mp_deploy.train.recipes import get_recipe
from mp_deploy.train.trainer import TaskLoss
from mp_deploy.util import device_name, slug

RESULTS = Path(__file__).parent / "results"


@dataclass(frozen=True)
class Config:
    name: str
    preset: str
    size: str
    hw: tuple[int, int]
    batch: int
    precision: str = "fp32"
    checkpointing: bool = False


CPU = [
    Config("tiny-depth-128-b4", "synthetic-depth", "tiny", (128, 128), 4),
    Config("tiny-depth-128-b4-ckpt", "synthetic-depth", "tiny", (128, 128), 4, checkpointing=True),
    Config("tiny-depth-128-b4-bf16", "synthetic-depth", "tiny", (128, 128), 4, precision="bf16"),
    Config("tiny-seg-128-b4", "synthetic-seg", "tiny", (128, 128), 4),
    Config("tiny-pose-192x128-b4", "synthetic-pose", "tiny", (192, 128), 4),
]
GPU = [
    Config("sd15-depth-480-bf16-ckpt-b2", "nyu", "sd15", (480, 480), 2, "bf16", True),
    Config("sd15-depth-480-bf16-ckpt-b3", "nyu", "sd15", (480, 480), 3, "bf16", True),
    Config("sd15-depth-480-bf16-b3", "nyu", "sd15", (480, 480), 3, "bf16", False),
    Config("sd15-seg-512-bf16-ckpt-b1", "ade20k", "sd15", (512, 512), 1, "bf16", True),
    Config("sd15-seg-512-bf16-ckpt-b2", "ade20k", "sd15", (512, 512), 2, "bf16", True),
    Config("sd15-pose-256x192-bf16-ckpt-b8", "coco", "sd15", (256, 192), 8, "bf16", True),
]


def measure(cfg: Config, device: str, runs: int, warmup: int) -> dict:
    cuda = device == "cuda"
    model = seeded_model(get_recipe(cfg.preset).task, size=cfg.size, preset=cfg.preset).to(device).train()
    model.backbone.grad_checkpointing = cfg.checkpointing
    recipe = get_recipe(cfg.preset)
    loss_fn, opt = TaskLoss(model, cfg.precision), build_optimizer(model, recipe)
    x = torch.rand(cfg.batch, 3, *cfg.hw, device=device)
    target, weight = tasks.get(model.task).random_target(model.preset, cfg.batch, *cfg.hw, device=device)

    def step(mark):
        loss_fn(x, target, weight)["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    with MemProbe(cuda) as mem:
        samples = time_runs(step, runs, warmup, cuda)["end_to_end"]
    stats = summarize(samples)
    return {**asdict(cfg), "hw": f"{cfg.hw[0]}x{cfg.hw[1]}", "step_ms": stats["median_ms"],
            "p20_ms": stats["p20_ms"], "p80_ms": stats["p80_ms"], "images_per_s": cfg.batch / stats["median_ms"] * 1e3,
            "peak_mb": mem.peak, "memory": mem.source, "runs": runs}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when present")
    ap.add_argument("--configs", help="comma-separated names (default: the device's set)")
    ap.add_argument("--runs", type=int, help="timed steps (default 10 on CUDA, 3 on CPU)")
    ap.add_argument("--warmup", type=int, help="untimed steps (default 3 on CUDA, 1 on CPU)")
    ap.add_argument("--threads", type=int, help="CPU threads for torch")
    ap.add_argument("--output", "--out-dir", default=str(RESULTS), help="results folder (default benchmarks/results)")
    args = ap.parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    known = {c.name: c for c in CPU + GPU}
    names = args.configs.split(",") if args.configs else [c.name for c in (GPU if cuda else CPU)]
    unknown = [n for n in names if n not in known]
    if unknown:
        ap.error(f"unknown configuration(s) {', '.join(unknown)}; known: {', '.join(known)}")
    runs, warmup = args.runs or (10 if cuda else 3), args.warmup if args.warmup is not None else (3 if cuda else 1)
    rows = []
    for name in names:
        try:
            row = measure(known[name], device, runs, warmup)
        except torch.cuda.OutOfMemoryError as e:
            row = {**asdict(known[name]), "error": f"out of memory: {str(e).splitlines()[0]}"}
        if cuda:
            torch.cuda.empty_cache()
        rows.append(row)
        shown = f"{row['images_per_s']:8.2f} images/s  {row['step_ms']:9.1f} ms/step  peak {row['peak_mb']:8.0f} MB" \
            if "error" not in row else row["error"]
        print(f"{name:34s} {shown}", flush=True)
    dev = device_name(device)
    stem = Path(args.output) / f"train_throughput-{slug(dev)}-{datetime.date.today()}"
    meta = {"device": dev, "torch": torch.__version__, "threads": torch.get_num_threads(), "runs": runs,
            "warmup": warmup, "load_average_1min": os.getloadavg()[0]}  # other jobs on a shared machine
    fields = ["name", "preset", "size", "hw", "batch", "precision", "checkpointing", "images_per_s", "step_ms",
              "peak_mb", "memory", "error"]
    write_results(stem, meta, rows, fields, {"device": dev})
    print(f"wrote {stem}.json and .csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
