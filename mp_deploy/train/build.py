"""What a recipe builds: the model (from scratch, SD-1.5 weights or a checkpoint) and its data sets, with the
data options the preset implies (crop = the preset window), checked to fit the model (classes, keypoints,
protocol, sample size); and the model's BatchNorm layers as training across processes needs them."""
from __future__ import annotations

import logging

import torch
from torch import nn

from mp_deploy import tasks
from mp_deploy.data.sources import build_dataset
from mp_deploy.errors import DataError, UsageError
from mp_deploy.models import MetaPromptsModel
from mp_deploy.tasks import build_model, get_preset
from mp_deploy.train.recipes import Recipe, crop_problem

log = logging.getLogger("mp_deploy.train")


def data_options(recipe: Recipe, train: bool) -> dict:
    """Options of build_dataset for this recipe's source (its task's Task.data_options): the recipe's crop (default
    the preset window) is the training crop (depth), the render size of both splits (synthetic) and the person
    crop (pose)."""
    return tasks.get(get_preset(recipe.preset).task).data_options(recipe.data, recipe.crop, train)


def dataset(recipe: Recipe, root, split: str, train: bool):
    """The split as training data (augmented) or as evaluation data (as stored), whatever its name."""
    options = data_options(recipe, train) | {"augment": train}
    if train and recipe.data not in ("synthetic", "unseen"):  # rendered splits keep their own seeds (disjoint)
        options["seed"] = recipe.seed
    data = build_dataset(recipe.data, split, task=recipe.task, root=root, **options)
    check_fits(data, recipe, root, split, train)
    return data


def check_fits(data, recipe: Recipe, root, split: str, train: bool) -> None:
    """DataError when the data set does not fit the recipe's model: another number of classes or keypoints, a
    protocol the task does not have, training samples of a size the model cannot take."""
    preset = get_preset(recipe.preset)
    where = f"{recipe.data} data" + (f" in {root}" if root else "") + f" ({split} split)"
    classes = getattr(data, "num_classes", None)
    if preset.num_classes and classes is not None and classes != preset.num_classes:
        raise DataError(f"{where}: {classes} classes, but the {preset.name} model predicts {preset.num_classes}")
    names = getattr(data, "keypoint_names", None)
    if preset.num_keypoints and names is not None and len(names) != preset.num_keypoints:
        raise DataError(f"{where}: {len(names)} keypoints, but the {preset.name} model predicts "
                        f"{preset.num_keypoints}")
    protocols = tasks.get(preset.task).protocols
    protocol = getattr(data, "protocol", None)
    if protocol is not None and protocol not in protocols:
        raise DataError(f"{where}: protocol {protocol!r} is not one of {', '.join(sorted(protocols))}")
    size = getattr(data, "sample_size", None)
    if train and size is not None:
        problem = crop_problem(*size)
        if problem:
            raise DataError(f"{where}: training samples of {size[0]}x{size[1]} (h x w): {problem}")


def model_for(recipe: Recipe, sd_weights=None, init_checkpoint=None) -> MetaPromptsModel:
    """The model a run starts from, in fp32 training mode on the CPU."""
    from mp_deploy.checkpoints import load_model, load_sd_weights

    if sd_weights and init_checkpoint:
        raise UsageError("give --sd-weights or --init-checkpoint, not both")
    if init_checkpoint:
        model = load_model(init_checkpoint, preset=recipe.preset)
        if model.preset.name != recipe.preset or model.size.name != recipe.model_size:
            raise UsageError(f"{init_checkpoint} holds a {model.size.name} {model.preset.name} model; this run "
                             f"trains {recipe.model_size} {recipe.preset} (set --preset / --model-size to match)")
        return model.float().train()
    if recipe.init == "sd-weights" and not sd_weights:
        raise UsageError(f"the {recipe.preset} recipe starts from Stable Diffusion 1.5: give --sd-weights PATH "
                         "(or --init-checkpoint PATH, or --init scratch)")
    model = build_model(preset=recipe.preset, size=recipe.model_size)
    if sd_weights:
        if recipe.model_size != "sd15":
            raise UsageError(f"--sd-weights needs --model-size sd15, not {recipe.model_size}")
        load_sd_weights(model, sd_weights)
    return model.train()


def set_trainable(model: MetaPromptsModel, recipe: Recipe) -> None:
    """The VAE encoder learns when the recipe says so (post_quant_conv is never run: it stays frozen);
    UNet gradient checkpointing as the recipe says."""
    vae = model.backbone.vae
    for part in (vae.encoder, vae.quant_conv):
        part.requires_grad_(recipe.train_vae)
    model.backbone.grad_checkpointing = recipe.grad_checkpoint


# ------------------------------------------------------------------ BatchNorm across processes, and of one sample

def sync_batchnorm(model: MetaPromptsModel, world: int, device: torch.device) -> bool:
    """The reference's SyncBatchNorm under DDP (its segmentation configs): every BatchNorm layer normalises with
    the statistics of all processes' samples together, when there is more than one process and the device is one
    SyncBatchNorm runs on (CUDA); in place (the parameters and the state dict's keys stay the same). Returns
    whether it converted. Evaluation outputs are unchanged: in eval mode SyncBatchNorm is BatchNorm."""
    if world < 2 or device.type != "cuda":
        return False
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # replaces the children in place
    assert converted is model
    return True


class SingleValueNorms:
    """A training fallback for a BatchNorm layer that sees a single value per channel (a batch of one sample per
    process on a 1x1 map: UPerHead's global pooling branch), where batch statistics do not exist and torch
    raises: that forward normalises with the layer's running statistics (as in evaluation) and leaves them
    as they are; its weight and bias still learn. Every other forward is untouched, and so is evaluation.
    SyncBatchNorm layers are left alone: their statistics span the processes."""

    def __init__(self, model: nn.Module):
        self.used = False
        self.handles = []
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and not isinstance(m, nn.SyncBatchNorm):
                self.handles.append(m.register_forward_pre_hook(self.before))
                self.handles.append(m.register_forward_hook(self.after))

    def before(self, module: nn.Module, args) -> None:
        x = args[0]
        if module.training and x.dim() >= 2 and x.numel() == x.shape[1]:
            if not self.used:
                log.warning("a BatchNorm layer sees one value per channel (a batch of one sample per process): it "
                            "normalises with its running statistics there (more samples per process, or several "
                            "processes on CUDA with SyncBatchNorm, give it batch statistics)")
                self.used = True
            module.training = False
            module._single_value = True

    @staticmethod
    def after(module: nn.Module, args, output) -> None:
        if getattr(module, "_single_value", False):
            module.training = True
            module._single_value = False

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
