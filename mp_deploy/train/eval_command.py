"""`mp-deploy eval`: a trained model's metrics on a held-out split, through the protocol of its data set
(mp_deploy.protocols), or the task's trivial baseline on the same split:

    mp-deploy eval --checkpoint runs/nyu/best.safetensors --data nyu --data-root /data
    mp-deploy eval --checkpoint mp_deploy/demo/depth.safetensors --data synthetic
    mp-deploy eval --task depth --preset synthetic-depth --data synthetic --baseline

Runs in one process, or under torchrun (depth and segmentation split the images over the ranks).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from mp_deploy import cli
from mp_deploy.configs import DEFAULT_PRESET, get_preset
from mp_deploy.errors import UsageError
from mp_deploy.util import atomic_write


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
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="bf16: autocast")
    ap.add_argument("--batch-size", type=cli.positive_int, default=8,
                    help="windows / crops per forward pass (default 8)")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers (default 2)")
    cli.add_device(ap)
    ap.add_argument("--output", help="also write the metrics to this JSON file")


def run(args: argparse.Namespace) -> int:
    from mp_deploy.checkpoints import load_model
    from mp_deploy.train import build, dist
    from mp_deploy.train.recipes import get_recipe
    from mp_deploy.train.validate import baseline_run, evaluate, model_run

    if bool(args.checkpoint) == bool(args.baseline):
        raise UsageError("give --checkpoint PATH or --baseline")
    d = dist.setup(args.device)
    try:
        if args.checkpoint:
            model = load_model(args.checkpoint, **({"preset": args.preset} if args.preset else {}))
            if args.task not in (None, model.task):
                raise UsageError(f"{args.checkpoint} is a {model.task} model, not {args.task}")
            preset_name = model.preset.name
        else:
            if args.task is None and args.preset is None:
                raise UsageError("--baseline needs --task or --preset")
            preset_name = args.preset or DEFAULT_PRESET[args.task]
        overrides = {"data": args.data} if args.data else {}
        recipe = get_recipe(preset_name, **overrides)
        split = args.split or recipe.val_split
        dataset = build.dataset(recipe, args.data_root, split, train=False)
        preset = model.preset if args.checkpoint else get_preset(preset_name)
        if args.checkpoint:
            model = model.float().eval().to(d.device)
            run_fn, what = model_run(model, args.precision, d.device), str(args.checkpoint)
        else:
            train_set = build.dataset(recipe, args.data_root, recipe.train_split, train=False)
            run_fn, what = baseline_run(preset.task, train_set, preset), f"{preset.task} baseline"
        result = evaluate(run_fn, dataset, preset, d, limit=args.limit or 0, workers=args.workers,
                          max_batch=args.batch_size, pck_threshold=args.pck_threshold)
        if d.main:
            record = {"model": what, "preset": preset.name, "data": recipe.data, "split": split, **result}
            if preset.task == "pose":
                record["pck_threshold"] = args.pck_threshold
            if args.output:
                text = json.dumps(record, indent=1) + "\n"
                atomic_write(args.output, lambda tmp: Path(tmp).write_text(text))
    finally:
        dist.teardown(d)
    return 0
