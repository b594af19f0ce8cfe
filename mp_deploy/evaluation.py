"""Evaluation: a model (or any `run(batch)` callable, or a task's trivial baseline) on a held-out split, through the
protocol its data set names, into its task's metrics (mp_deploy.tasks: each task's meter, protocol and baseline),
with a progress bar and a one-line summary; and the `mp-deploy eval` command.

    mp-deploy eval --checkpoint runs/nyu/best.safetensors --data nyu --data-root /data
    mp-deploy eval --checkpoint mp_deploy/demo/depth.safetensors --data synthetic
    mp-deploy eval --task depth --preset synthetic-depth --data synthetic --baseline

    from mp_deploy.evaluation import evaluate, model_run
    result = evaluate(model_run(model, "fp32", torch.device("cpu")), dataset, model.preset)

Runs in one process, or under torchrun: every rank evaluates its share of the images and the meters are merged
on rank 0 (pose's COCO evaluation then runs there on every rank's persons).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
from pathlib import Path

import torch

from mp_deploy import cli, tasks
from mp_deploy.data.base import one_line_errors
from mp_deploy.errors import DataError, UsageError
from mp_deploy.inference import Run

log = logging.getLogger("mp_deploy.evaluation")


class Stream:
    """The good samples of `samples` (datasets by index, up to `limit`; other iterables as they come), with a
    progress bar; `skipped` counts the bad samples met on the way."""

    def __init__(self, samples, limit: int | None, desc: str, progress: bool):
        self.samples, self.limit, self.desc, self.progress = samples, limit, desc, progress
        self.skipped = 0

    def __iter__(self):
        from tqdm import tqdm

        total = len(self.samples) if hasattr(self.samples, "__len__") else None
        if self.limit is not None:
            total = min(total, self.limit) if total is not None else self.limit
        indexed = hasattr(self.samples, "__getitem__") and total is not None
        items = (self.samples[i] for i in range(total)) if indexed else self.samples
        items = one_line_errors(items)  # a DataLoader worker's typed error as its one line
        for n, sample in enumerate(tqdm(items, total=total, desc=self.desc, disable=not self.progress, leave=False)):
            if self.limit is not None and n >= self.limit:
                break
            self.skipped += int(sample.get("skipped", 0))
            if "image" in sample:
                yield sample


def summary(task: str, result: dict, keys: tuple, images: int, skipped: int) -> str:
    values = ", ".join(f"{k} {result[k]:.4f}" for k in keys)
    return f"{task} eval: {images} images, {values}; bad samples skipped: {skipped}"


def say(progress: bool, line: str) -> None:
    log.info(line)
    if progress:
        from tqdm import tqdm

        tqdm.write(line)


def evaluate_samples(task: str, samples, run: Run, dataset, preset, protocol=None, device=None, max_batch: int = 8,
                     min_batch: int = 1, limit: int | None = None, progress: bool = True, **meter_options):
    """The task's metrics of `run` over `samples` (a dataset of its eval split, or any iterable of its samples,
    e.g. `DataLoader(dataset, batch_size=None)`) -> (result dict, the meter). `dataset` gives the protocol, the
    depth range and crop, the pose ground truth; `protocol` replaces the data set's."""
    spec = tasks.get(task)
    meter = spec.meter(dataset, preset, **meter_options)
    stream = Stream(samples, limit, f"{task} eval", progress)
    with torch.no_grad():
        spec.evaluate_into(meter, stream, run, dataset, protocol, device, max_batch, min_batch)
    result = meter.result() | {"skipped": stream.skipped}
    say(progress, summary(task, result, spec.headline, result["images"], stream.skipped))
    return result, meter


# ------------------------------------------------------------------ a model, a data set, every rank

def model_run(model: torch.nn.Module, precision: str, device: torch.device) -> Run:
    """model(x) in inference mode, under bf16 autocast when asked; outputs in fp32."""
    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16"):
            return model(x.to(device)).float()
    return run


def ignore_sigterm(worker_id: int) -> None:
    """DataLoader workers outlive a SIGTERM sent to the whole process group (schedulers do): the main process
    decides when to stop, and shuts them down."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _samples(dataset, indices, workers: int):
    from torch.utils.data import DataLoader, Subset

    subset = Subset(dataset, indices)
    if workers == 0:
        return subset
    # batch_size None: samples one by one, in order; a generator of its own leaves the global RNG alone
    return DataLoader(subset, batch_size=None, num_workers=workers, generator=torch.Generator().manual_seed(0),
                      worker_init_fn=ignore_sigterm)


def evaluate(run: Run, dataset, preset, d=None, limit: int = 0, workers: int = 0, max_batch: int = 8,
             progress: bool = True, pck_threshold: float = 0.05) -> dict | None:
    """The metrics of `run` on `dataset` (its first `limit` images, 0 = all; pose: PCK at `pck_threshold` of
    the box size), every rank of `d` (mp_deploy.train.dist.Dist, default one process) on its share. Returns them
    on rank 0, None on the other ranks."""
    from mp_deploy.train import dist

    d = d or dist.Dist()
    n = len(dataset) if not limit else min(limit, len(dataset))
    if n == 0:
        raise DataError(f"nothing to evaluate: the {type(dataset).__name__} split holds no samples")
    mine = _samples(dataset, range(d.rank, n, d.world), workers)
    result, meter = evaluate_samples(preset.task, mine, run, dataset, preset, device=d.device, max_batch=max_batch,
                                     progress=progress and d.main and not d.active, pck_threshold=pck_threshold)
    if not d.active:
        return result
    meters = dist.gather(d, (meter, result["skipped"]))
    if not d.main:
        return None
    meter, skipped = meters[0][0], sum(s for _, s in meters)
    for other, _ in meters[1:]:
        meter.merge(other)
    result = meter.result() | {"skipped": skipped}
    say(progress, summary(preset.task, result, tasks.get(preset.task).headline, result["images"], skipped))
    return result


def baseline_run(task: str, train_dataset, preset, samples: int = 200) -> Run:
    """The task's trivial baseline fitted on the first `samples` training samples (as augmented)."""
    taken = [train_dataset[i] for i in range(min(samples, len(train_dataset)))]
    return tasks.get(task).baseline([s for s in taken if "image" in s], preset)


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module):
    """The model in eval mode inside the block, back in its former mode after."""
    was = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was)


# ------------------------------------------------------------------ mp-deploy eval

def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--checkpoint", help="the model: our .safetensors (e.g. a run's best.safetensors) or an "
                                         "official file")
    ap.add_argument("--baseline", action="store_true",
                    help="evaluate the task's trivial baseline (depth: the median training depth; seg: the most "
                         "frequent training class; pose: the mean training pose) instead of a model")
    cli.add_task(ap, required=False)
    cli.add_preset(ap)
    ap.add_argument("--data", help="data source (default: the preset's recipe's)")
    ap.add_argument("--data-root", help="the data set's root folder")
    ap.add_argument("--split", help="the split to evaluate (default: the recipe's held-out split)")
    ap.add_argument("--limit", type=cli.positive_int, help="evaluate the first N images only")
    ap.add_argument("--pck-threshold", type=float, default=0.05,
                    help="pose: a keypoint is correct within this fraction of the box size (default 0.05)")
    cli.add_precision(ap, "fp32", "fp32, or bf16 autocast")
    cli.add_batch_size(ap, "windows / crops per forward pass (default 8)", default=8)
    ap.add_argument("--workers", type=cli.nonnegative_int, default=2, help="DataLoader workers (default 2)")
    cli.add_device(ap)
    cli.add_output(ap, "also write the metrics to DIR/metrics.json")


def metrics_path(output: str) -> Path:
    """DIR/metrics.json; a path ending in .json is the old spelling (--output FILE), kept for one release."""
    import sys

    path = Path(output)
    if path.suffix == ".json" and not path.is_dir():
        print(f"mp-deploy eval: --output {output}: a .json file is deprecated (goes in the next release): --output "
              "names a folder, the metrics go to metrics.json inside", file=sys.stderr)
        return path
    return path / "metrics.json"


def check_output(out: Path) -> Path:
    """`out` if the metrics can be written there, checked before any evaluation: nothing there or a regular file
    (never a folder, FIFO, device or link), and the nearest existing path above it a folder."""
    import os
    import stat

    from mp_deploy.files import check_replaceable, kind

    for parent in out.parents:
        try:
            mode = os.stat(parent).st_mode
        except (FileNotFoundError, NotADirectoryError):  # not there (or under a file, found further up)
            continue
        except OSError as e:
            raise UsageError(f"--output: {parent}: cannot check what is there ({e.strerror})") from None
        if not stat.S_ISDIR(mode):
            raise UsageError(f"--output: {parent} is {kind(mode)}, not a folder: {out} cannot be written")
        break
    try:
        return check_replaceable(out)
    except DataError as e:
        raise UsageError(f"--output: {e}") from None


def run(args: argparse.Namespace) -> int:
    from mp_deploy.checkpoints import load_model
    from mp_deploy.train import build, dist
    from mp_deploy.train.recipes import get_recipe
    from mp_deploy.files import atomic_write

    cli.check_choice(args.precision, ("fp32", "bf16"), "--precision")
    if bool(args.checkpoint) == bool(args.baseline):
        raise UsageError("give --checkpoint PATH or --baseline")
    out = check_output(metrics_path(args.output)) if args.output else None
    d = dist.setup(args.device)
    try:
        if args.checkpoint:
            model = load_model(args.checkpoint, preset=args.preset)
            if args.task not in (None, model.task):
                raise UsageError(f"{args.checkpoint} is a {model.task} model, not {args.task}")
            preset_name = model.preset.name
        else:
            if args.task is None and args.preset is None:
                raise UsageError("--baseline needs --task or --preset")
            preset_name = args.preset or tasks.get(args.task).default_preset
        overrides = {"data": args.data} if args.data else {}
        recipe = get_recipe(preset_name, **overrides)
        split = args.split or recipe.val_split
        dataset = build.dataset(recipe, args.data_root, split, train=False)
        preset = model.preset if args.checkpoint else tasks.get_preset(preset_name)
        if args.checkpoint:
            model = model.float().eval().to(d.device)
            run_fn, what = model_run(model, args.precision, d.device), str(args.checkpoint)
        else:
            # fitted on the training family: the unseen family has a held-out split only
            fit = get_recipe(preset_name, data="synthetic") if recipe.data == "unseen" else recipe
            train_set = build.dataset(fit, args.data_root, fit.train_split, train=False)
            run_fn, what = baseline_run(preset.task, train_set, preset), f"{preset.task} baseline"
        result = evaluate(run_fn, dataset, preset, d, limit=args.limit or 0, workers=args.workers,
                          max_batch=args.batch_size, pck_threshold=args.pck_threshold)
        if d.main:
            record = {"model": what, "preset": preset.name, "data": recipe.data, "split": split, **result}
            if "PCK" in result:
                record["pck_threshold"] = args.pck_threshold
            if out is not None:
                text = json.dumps(record, indent=1) + "\n"
                atomic_write(out, lambda tmp: Path(tmp).write_text(text))
    finally:
        dist.teardown(d)
    return 0
