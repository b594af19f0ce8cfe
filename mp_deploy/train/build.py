"""What a recipe builds: the model (from scratch, SD-1.5 weights or a checkpoint) and its data sets, with the
data options the preset implies (crop = the preset window)."""
from __future__ import annotations

import logging

from mp_deploy import tasks
from mp_deploy.data.sources import build_dataset
from mp_deploy.errors import UsageError
from mp_deploy.models import MetaPromptsModel
from mp_deploy.tasks import build_model, get_preset
from mp_deploy.train.recipes import Recipe

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
    return build_dataset(recipe.data, split, task=recipe.task, root=root, **options)


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
