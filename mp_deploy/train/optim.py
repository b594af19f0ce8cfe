"""AdamW with the reference's parameter groups, and its learning-rate schedules per optimizer step.

Groups (depth/models_depth/optimizer.py, LDMOptimizerConstructor): parameters whose name contains `unet` learn
at lr x unet_lr_mult (depth 0.01, seg 0.1), the rest at lr; 1-D parameters (norms, embeddings of one row) and
biases get no weight decay; frozen parameters (the VAE) are left out. The segmentation reference reaches a
similar split through mmcv's name keys ('unet' x0.1, 'norm' no decay, biases decayed); we use the depth rule for
every task (mmcv's key order there also lets the UNet's transformer norms escape the x0.1, a side effect we do
not keep).

Schedules, `lr_factor(step)` for step = 1, 2, ... (the step about to be taken), times each group's multiplier:
- rise-fall (depth/train.py): lr rises from min_lr to lr as (step / rise)^power over the first `rise` steps, then
  falls back as (step / rise - 1)^power, floored at min_lr;
- poly (mmcv PolyLrUpdaterHook with linear warm-up, 0-based iteration i = step - 1): (lr - min_lr) x
  (1 - i / total)^power + min_lr, and during the first warmup_steps that value x (1 - (1 - i / warmup) x
  (1 - warmup_ratio)).
"""
from __future__ import annotations

import torch

from mp_deploy.train.recipes import Recipe


def param_groups(model: torch.nn.Module, recipe: Recipe) -> list[dict]:
    """-> AdamW groups named `unet_decay`, `unet_no_decay`, `decay`, `no_decay` (empty ones left out), each with
    its `lr_mult` and parameter `names`."""
    groups: dict[str, dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        unet = "unet" in name
        decay = not (p.dim() == 1 or name.endswith(".bias"))
        key = ("unet_" if unet else "") + ("decay" if decay else "no_decay")
        group = groups.setdefault(key, {"name": key, "params": [], "names": [],
                                        "lr_mult": recipe.unet_lr_mult if unet else 1.0,
                                        "weight_decay": recipe.weight_decay if decay else 0.0})
        group["params"].append(p)
        group["names"].append(name)
    order = ("unet_decay", "unet_no_decay", "decay", "no_decay")
    return [groups[k] for k in order if k in groups]


def build_optimizer(model: torch.nn.Module, recipe: Recipe) -> torch.optim.AdamW:
    groups = param_groups(model, recipe)
    for g in groups:
        del g["names"]  # the optimizer's state_dict stays plain data
    return torch.optim.AdamW(groups, lr=recipe.lr, betas=(recipe.beta1, recipe.beta2),
                             weight_decay=recipe.weight_decay)


def lr_at(step: int, recipe: Recipe, total_steps: int, rise_steps: int) -> float:
    """The heads' learning rate for optimizer step `step` (1-based)."""
    lo, hi = recipe.min_lr, recipe.lr
    if recipe.schedule == "rise-fall":
        x = step / rise_steps
        if step < rise_steps:
            return (hi - lo) * x ** recipe.power + lo
        return max(lo, (lo - hi) * (x - 1) ** recipe.power + hi)
    i = step - 1
    lr = (hi - lo) * max(0.0, 1 - i / total_steps) ** recipe.power + lo
    if i < recipe.warmup_steps:
        lr *= 1 - (1 - i / recipe.warmup_steps) * (1 - recipe.warmup_ratio)
    return lr


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr * g["lr_mult"]
