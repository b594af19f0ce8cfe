"""`mp-deploy train`: train a task model from its preset's recipe (mp_deploy.train.recipes), in one process or
under torchrun:

    mp-deploy train --task depth --preset nyu --data-root /data --sd-weights v1-5.safetensors --run-dir runs/nyu
    torchrun --nproc_per_node 8 -m mp_deploy.cli train --task depth ... --run-dir runs/nyu
    mp-deploy train --run-dir runs/nyu --resume

Every recipe field is a flag (--lr, --batch-size, --steps, ...); on --resume the run's config.json is the
recipe and flags given again override it.
"""
from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from mp_deploy import cli
from mp_deploy import tasks
from mp_deploy.tasks import PRESETS
from mp_deploy.errors import DataError, UsageError
from mp_deploy.files import read_json, special_kind
from mp_deploy.train.recipes import Recipe, cli_fields, get_recipe, recipe_from_dict

# recipe fields whose flag is one of cli.py's shared ones
SHARED = {"model_size"}
SHARED_FLAGS = {"--precision": lambda group, help: cli.add_precision(group, None, help)}


def add_recipe_flags(ap: argparse.ArgumentParser) -> None:
    """One flag per recipe field (default None: the recipe's value)."""
    group = ap.add_argument_group("recipe (default: the preset's recipe, see mp_deploy/train/recipes.py)")
    for f in cli_fields():
        if f.name in SHARED:
            continue
        flag, help = "--" + f.name.replace("_", "-"), f.metadata["help"]
        if f.type == "bool":
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help)
        elif flag in SHARED_FLAGS:  # a flag other commands have too: its shared type (check_recipe checks the value)
            SHARED_FLAGS[flag](group, help)
        else:
            minimum = f.metadata.get("minimum")
            kind = {"int": {1: cli.positive_int, 0: cli.nonnegative_int}.get(minimum, int), "float": float,
                    "str": str}[f.type]
            group.add_argument(flag, type=kind, default=None, choices=f.metadata.get("choices"), help=help)
    cli.add_model_size(group, "backbone size (sd15: the official models; tiny: tests and the demos)")


def recipe_overrides(args: argparse.Namespace) -> dict:
    return {f.name: getattr(args, f.name) for f in fields(Recipe)
            if f.name != "preset" and getattr(args, f.name, None) is not None}


def add_arguments(ap: argparse.ArgumentParser) -> None:
    cli.add_task(ap, required=False)
    cli.add_preset(ap)
    ap.add_argument("--data-root", help="the data set's root folder (released layouts, custom folders)")
    start = ap.add_mutually_exclusive_group()
    start.add_argument("--sd-weights", help="start from Stable Diffusion 1.5 (single file or diffusers folder)")
    start.add_argument("--init-checkpoint", help="start from a trained model (ours or official)")
    ap.add_argument("--run-dir", required=True, help="the run folder: config, logs, checkpoints")
    ap.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its last save")
    ap.add_argument("--stop-at", type=cli.positive_int, default=0,
                    help="stop after this step with a resumable save, as SIGTERM does (e.g. time-limited jobs)")
    cli.add_device(ap)
    ap.add_argument("--no-progress", action="store_true", help="no progress bar (logs and summary only)")
    add_recipe_flags(ap)


def resolve(args: argparse.Namespace) -> tuple[Recipe, dict]:
    """The recipe of this run and what it starts from (data root, weights): from the flags, or on --resume
    from the run's config.json with the flags given again on top."""
    overrides = recipe_overrides(args)
    config_path = Path(args.run_dir) / "config.json"
    if args.resume and special_kind(Path(args.run_dir) / "resume.safetensors") == "missing":
        raise UsageError(f"nothing to resume in {args.run_dir} (no resume.safetensors)")
    if args.resume:
        config = read_config(config_path)
        saved = config["recipe"]
        if args.preset not in (None, saved["preset"]) or args.task not in (None, PRESETS[saved["preset"]].task):
            raise UsageError(f"{args.run_dir} trains {saved['preset']}; --task / --preset disagree")
        try:
            recipe = recipe_from_dict(saved | overrides)
        except UsageError as e:
            try:  # the file's own recipe, or a flag given again?
                recipe_from_dict(saved)
            except UsageError as own:
                raise DataError(f"{config_path}: {own}") from None
            raise e from None
        start = {k: getattr(args, k) or config.get(k) for k in ("data_root", "sd_weights", "init_checkpoint")}
        return recipe, start
    if args.task is None and args.preset is None:
        raise UsageError("give --task (and --preset), or --resume for an existing run")
    preset = args.preset or tasks.get(args.task).default_preset
    if args.task is not None and PRESETS[preset].task != args.task:
        raise UsageError(f"preset {preset!r} is for task {PRESETS[preset].task!r}, not {args.task!r}")
    return get_recipe(preset, **overrides), {"data_root": args.data_root, "sd_weights": args.sd_weights,
                                             "init_checkpoint": args.init_checkpoint}


def read_config(path: Path) -> dict:
    """A run's config.json (mp_deploy.files.read_json: a regular file, bounded size, depth and numbers), checked to
    hold a recipe of a known preset and the paths a run starts from; DataError names the file and the problem."""
    if special_kind(path) == "missing":
        raise DataError(f"{path}: no such file; the run folder lacks its config.json")
    config = read_json(path)
    if not isinstance(config, dict) or not isinstance(config.get("recipe"), dict):
        raise DataError(f"{path}: not a run's config (needs \"recipe\": an object)")
    preset = config["recipe"].get("preset")
    if not isinstance(preset, str) or preset not in PRESETS:
        raise DataError(f"{path}: the recipe's preset {str(preset)[:40]!r} is not one of {', '.join(PRESETS)}")
    for key in ("data_root", "sd_weights", "init_checkpoint"):
        if config.get(key) is not None and not isinstance(config[key], str):
            raise DataError(f"{path}: {key} {str(config[key])[:40]!r} is not a path")
    return config


def run(args: argparse.Namespace) -> int:
    from mp_deploy.train.trainer import TrainSpec, train

    recipe, start = resolve(args)
    train(TrainSpec(recipe=recipe, run_dir=Path(args.run_dir), resume=args.resume, device=args.device,
                    stop_at=args.stop_at, progress=not args.no_progress, **start))
    return 0
