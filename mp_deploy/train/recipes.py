"""Training recipes, one per preset, as data: the reference's values for its presets (depth/train.sh,
train_kitti.sh, segmentation/configs/*.py; ../shared/reference-architecture.md sections 4-5), our own for pose
(the reference has no pose code) and for the synthetic demo presets (tiny models trained from scratch on a CPU).

Every field can be overridden from the command line (`mp-deploy train --lr 1e-4 ...`); the resolved recipe is
written beside each run (config.json). `check_recipe` names the first bad value as a UsageError.

Batch sizes are per process: `batch_size` samples go through one forward/backward pass, `accumulate` passes make
one optimizer step, so a step sees batch_size x accumulate x processes samples (the reference's global batch:
depth 3 x 8 GPUs = 24, segmentation 1 x 8 = 8).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields, replace

from mp_deploy import tasks
from mp_deploy.configs import SIZES
from mp_deploy.data.base import is_finite_number
from mp_deploy.errors import UsageError
from mp_deploy.tasks import PRESETS, get_preset

SCHEDULES = ("rise-fall", "poly")
# training crops (and synthetic renders): sides in [MIN_CROP, MAX_CROP], multiples of CROP_MULTIPLE. The depth
# and pose models need at least 64 (a side below gives an empty stride-64 map) and multiples of 8 (the stride of
# their output against the target); seg takes these too. 4096 bounds the memory of a sample.
MIN_CROP, MAX_CROP, CROP_MULTIPLE = 64, 4096, 8
PRECISIONS = ("fp32", "bf16")
INITS = ("sd-weights", "scratch")


def _f(default, help: str, **kw):
    return field(default=default, metadata={"help": help, **kw})


@dataclass(frozen=True)
class Recipe:
    preset: str = _f("nyu", "the model preset (task, classes, max depth, window ...)", cli=False)
    data: str = _f("nyu", "data source: nyu, kitti, ade20k, cityscapes, coco, folder or synthetic")
    train_split: str = _f("train", "split trained on")
    val_split: str = _f("test", "split evaluated on")
    model_size: str = _f("sd15", "backbone size: sd15 or tiny", choices=tuple(SIZES))
    init: str = _f("sd-weights", "start: sd-weights (needs --sd-weights or --init-checkpoint) or scratch",
                   choices=INITS)
    train_vae: bool = _f(False, "train the VAE encoder too (the reference freezes it)")
    crop_h: int = _f(0, "training crop height (0: the preset window); synthetic scenes are rendered at it",
                     minimum=0)
    crop_w: int = _f(0, "training crop width (0: the preset window)", minimum=0)
    # length
    batch_size: int = _f(3, "samples per forward/backward pass on each process", minimum=1)
    accumulate: int = _f(1, "passes per optimizer step (gradient accumulation)", minimum=1)
    epochs: int = _f(25, "epochs (used when steps is 0)", minimum=0)
    steps: int = _f(0, "optimizer steps (0: from epochs)", minimum=0)
    # optimiser (AdamW)
    lr: float = _f(5e-4, "peak learning rate of the heads (the reference's max_lr / lr)")
    min_lr: float = _f(3e-5, "rise-fall: the start and end lr; poly: the lr it decays to")
    weight_decay: float = _f(0.1, "AdamW weight decay (none on 1-D params and biases)")
    unet_lr_mult: float = _f(0.01, "lr multiplier of the UNet's parameters")
    beta1: float = _f(0.9, "AdamW beta1")
    beta2: float = _f(0.999, "AdamW beta2")
    clip_grad: float = _f(0.0, "clip the gradient norm to this (0: off, as the reference)")
    # schedule, per optimizer step
    schedule: str = _f("rise-fall", "rise-fall (depth: min_lr -> lr -> min_lr) or poly (seg)", choices=SCHEDULES)
    power: float = _f(0.9, "the schedule's exponent")
    rise_steps: int = _f(0, "rise-fall: steps of the rise (0: the first epochs // 2 epochs, or half the steps)",
                         minimum=0)
    warmup_steps: int = _f(0, "poly: linear warm-up steps", minimum=0)
    warmup_ratio: float = _f(1e-6, "poly: the warm-up's starting lr / lr")
    # memory and speed
    precision: str = _f("bf16", "fp32, or bf16 autocast (CUDA and CPU)", choices=PRECISIONS)
    grad_checkpoint: bool = _f(True, "recompute each UNet block in the backward pass (saves memory)")
    workers: int = _f(4, "DataLoader worker processes per training process", minimum=0)
    threads: int = _f(0, "CPU threads for torch (0: torch's own choice)", minimum=0)
    # evaluation, checkpoints, logs
    eval_every: int = _f(0, "evaluate every this many steps (0: once per epoch)", minimum=0)
    eval_limit: int = _f(0, "images per evaluation during training (0: the whole split)", minimum=0)
    best_metric: str = _f("rmse", "the held-out metric that picks best.safetensors")
    save_every: int = _f(1000, "write the resumable checkpoint every this many steps", minimum=1)
    log_every: int = _f(10, "steps per metrics.jsonl / TensorBoard record", minimum=1)
    seed: int = _f(0, "seed of the initialisation, the sampler order and the augmentation", minimum=0)

    @property
    def task(self) -> str:
        return PRESETS[self.preset].task

    @property
    def crop(self) -> tuple[int, int]:
        window = PRESETS[self.preset].window
        return self.crop_h or window[0], self.crop_w or window[1]


def crop_problem(h: int, w: int) -> str | None:
    """Why a training sample of h x w does not fit the models, or None."""
    for side in (h, w):
        if isinstance(side, bool) or not isinstance(side, int) or not MIN_CROP <= side <= MAX_CROP \
                or side % CROP_MULTIPLE:
            return f"each side must be a multiple of {CROP_MULTIPLE} in [{MIN_CROP}, {MAX_CROP}]"
    return None


def cli_fields() -> list[dataclasses.Field]:
    return [f for f in fields(Recipe) if f.metadata.get("cli", True)]


_depth = Recipe()
_seg = Recipe(data="ade20k", val_split="val", batch_size=1, epochs=0, steps=80_000, lr=8e-5, min_lr=0.0,
              weight_decay=1e-3, unet_lr_mult=0.1, schedule="poly", power=1.0, warmup_steps=1500, eval_every=8000,
              best_metric="mIoU")
# the demo presets: tiny models from scratch on synthetic scenes, on 1 CPU thread. Their own choices: nothing is
# pretrained, so the VAE encoder trains too (frozen at random it is a fixed random 8x down-projection to 4
# channels that caps every task) and the UNet learns at the heads' rate (multiplier 1); higher peak rates than
# the fine-tuning recipes; gradient clipping at 1.0 as a guard for a from-scratch run; fp32 (bf16 autocast is
# ~10x slower on CPUs without bf16 matrix units).
_demo = dict(data="synthetic", val_split="val", model_size="tiny", init="scratch", train_vae=True, batch_size=4,
             epochs=0, unet_lr_mult=1.0, clip_grad=1.0, precision="fp32", grad_checkpoint=False, workers=1,
             threads=1, eval_every=800, eval_limit=50, save_every=50)

RECIPES = {
    # depth/train.sh: batch 3/GPU x 8, 25 epochs, AdamW max_lr 5e-4 min_lr 3e-5 wd 0.1, UNet x0.01, rise-fall 0.9;
    # the reference evaluates and saves last.ckpt every epoch and keeps best.ckpt by RMSE
    "nyu": replace(_depth, preset="nyu"),
    "kitti": replace(_depth, preset="kitti", data="kitti"),
    # configs/ade.py, cityscapes.py: batch 1/GPU x 8, 80k iterations, AdamW 8e-5 wd 1e-3, UNet x0.1, poly 1.0
    # to 0 with a 1500-iteration linear warm-up from 1e-6; evaluation (best by mIoU) every 8000 iterations
    "ade20k": replace(_seg, preset="ade20k"),
    "cityscapes": replace(_seg, preset="cityscapes", data="cityscapes"),
    # configs/cityscapes_extra.py starts from a Mapillary-trained model: give it with --init-checkpoint
    "cityscapes-mapillary": replace(_seg, preset="cityscapes-mapillary", data="cityscapes"),
    # our design (no reference pose code): the segmentation recipe's shape (AdamW, UNet x0.1, poly with a linear
    # warm-up: dense prediction fine-tuning of the same backbone), mmpose's 500-iteration warm-up, a peak lr of
    # 2e-4 (heatmap MSE gradients are small), batch 8/GPU x 8 = 64 of 256x192 crops (~1.5x the pixels of one
    # 512x512 seg crop per GPU), 60k steps = ~26 COCO epochs, evaluated (OKS AP) every 5000
    "coco": replace(_seg, preset="coco", data="coco", train_split="train2017", val_split="val2017", batch_size=8,
                    steps=60_000, lr=2e-4, weight_decay=0.01, warmup_steps=500, warmup_ratio=1e-3,
                    eval_every=5000, best_metric="AP"),
    "synthetic-depth": replace(_depth, preset="synthetic-depth", **_demo, steps=1600, lr=1e-3, min_lr=3e-5),
    "synthetic-seg": replace(_seg, preset="synthetic-seg", **_demo, steps=1600, lr=5e-4, weight_decay=0.01,
                             warmup_steps=150, warmup_ratio=1e-3, best_metric="mIoU"),
    # PCK picks the best: the tiny demo's keypoints stay outside OKS tolerances (AP 0 at every evaluation)
    "synthetic-pose": replace(_seg, preset="synthetic-pose", **_demo, steps=1000, lr=1e-3, weight_decay=0.01,
                              warmup_steps=150, warmup_ratio=1e-3, best_metric="PCK"),
}


def get_recipe(preset: str, **overrides) -> Recipe:
    """The preset's recipe with `overrides` (field -> value; None = keep), checked."""
    if preset not in RECIPES:
        raise UsageError(f"no training recipe for preset {preset!r}; choose one of {sorted(RECIPES)}")
    known = {f.name for f in fields(Recipe)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise UsageError(f"unknown recipe field(s): {', '.join(repr(k[:40]) for k in unknown[:5])}"
                         + (f" (+{len(unknown) - 5} more)" if len(unknown) > 5 else ""))
    recipe = replace(RECIPES[preset], **{k: v for k, v in overrides.items() if v is not None})
    check_recipe(recipe)
    return recipe


def recipe_from_dict(d: dict) -> Recipe:
    """A recipe read back from a run's config.json."""
    if not isinstance(d, dict) or "preset" not in d:
        raise UsageError("a recipe must be a JSON object with a preset")
    empty = sorted(k for k, v in d.items() if v is None)
    if empty:  # None keeps the preset's value in get_recipe's overrides; a file states every value
        raise UsageError(f"recipe field(s) without a value (null): {', '.join(empty)}")
    preset = d["preset"]
    if not isinstance(preset, str):
        raise UsageError(f"a recipe's preset must be a name, got {str(preset)[:40]!r}")
    return get_recipe(preset, **{k: v for k, v in d.items() if k != "preset"})


def check_recipe(r: Recipe) -> None:
    """Raise UsageError naming the first value a run cannot use."""
    def bad(name, why):
        got = repr(getattr(r, name))
        raise UsageError(f"recipe {r.preset!r}: {name} {why}, got {got if len(got) <= 80 else got[:80] + '...'}")

    get_preset(r.preset)
    for f in fields(Recipe):
        value, kind = getattr(r, f.name), f.type
        if kind == "int" and (not isinstance(value, int) or isinstance(value, bool)):
            bad(f.name, "must be an integer")
        if kind == "float" and not is_finite_number(value):
            bad(f.name, "must be a finite number")
        if kind == "bool" and not isinstance(value, bool):
            bad(f.name, "must be true or false")
        if kind == "str" and not isinstance(value, str):
            bad(f.name, "must be a string")
        if "minimum" in f.metadata and value < f.metadata["minimum"]:
            bad(f.name, f"must be at least {f.metadata['minimum']}")
        if "choices" in f.metadata and value not in f.metadata["choices"]:
            bad(f.name, f"must be one of {', '.join(f.metadata['choices'])}")
    if r.steps == 0 and r.epochs == 0:
        bad("steps", "and epochs are both 0: give one")
    for name, side in (("crop_h", r.crop_h), ("crop_w", r.crop_w)):
        if side and crop_problem(side, side):  # 0: the preset window
            bad(name, f"must be 0 (the preset window) or a multiple of {CROP_MULTIPLE} in [{MIN_CROP}, {MAX_CROP}]")
    if not r.lr > 0:
        bad("lr", "must be positive")
    if not 0 <= r.min_lr <= r.lr:
        bad("min_lr", f"must be in [0, lr = {r.lr}]")
    if r.weight_decay < 0:
        bad("weight_decay", "must not be negative")
    if r.unet_lr_mult < 0:
        bad("unet_lr_mult", "must not be negative")
    for name in ("beta1", "beta2"):
        if not 0 <= getattr(r, name) < 1:
            bad(name, "must be in [0, 1)")
    if r.clip_grad < 0:
        bad("clip_grad", "must not be negative (0 turns clipping off)")
    if not r.power > 0:
        bad("power", "must be positive")
    if not 0 < r.warmup_ratio <= 1:
        bad("warmup_ratio", "must be in (0, 1]")
    metrics = tasks.get(r.task).metrics  # the metrics that may pick best.safetensors
    if r.best_metric not in metrics:
        bad("best_metric", f"must be one of {', '.join(metrics)} for {r.task}")


def recipe_to_dict(r: Recipe) -> dict:
    return dataclasses.asdict(r)
