"""Recipes, parameter groups and schedules against hand-computed values; bad values are typed errors."""
import pytest
import torch

from mp_deploy.errors import UsageError
from mp_deploy.tasks import build_model
from mp_deploy.train.build import set_trainable
from mp_deploy.train.optim import build_optimizer, lr_at, param_groups
from mp_deploy.train.recipes import RECIPES, get_recipe, recipe_from_dict, recipe_to_dict


def test_rise_fall_schedule_by_hand():
    r = get_recipe("nyu", lr=5e-4, min_lr=3e-5, power=0.9)
    rise = 10
    assert lr_at(5, r, 25, rise) == pytest.approx(3e-5 + 4.7e-4 * 0.5 ** 0.9, rel=1e-12)
    assert lr_at(10, r, 25, rise) == pytest.approx(5e-4, rel=1e-12)  # the peak at the end of the rise
    assert lr_at(15, r, 25, rise) == pytest.approx(5e-4 - 4.7e-4 * 0.5 ** 0.9, rel=1e-12)
    assert lr_at(20, r, 25, rise) == pytest.approx(3e-5, rel=1e-12)
    assert lr_at(25, r, 25, rise) == 3e-5  # floored at min_lr once the fall is over


def test_poly_schedule_with_warmup_by_hand():
    r = get_recipe("ade20k", lr=8e-5, min_lr=0.0, power=1.0, warmup_steps=10, warmup_ratio=1e-6)
    total = 100
    # mmcv: iteration i = step - 1; regular = 8e-5 (1 - i / 100); warm-up x (1 - (1 - i / 10)(1 - 1e-6))
    assert lr_at(1, r, total, 0) == pytest.approx(8e-5 * 1e-6, rel=1e-9)
    assert lr_at(6, r, total, 0) == pytest.approx(8e-5 * 0.95 * (1 - 0.5 * (1 - 1e-6)), rel=1e-12)
    assert lr_at(11, r, total, 0) == pytest.approx(8e-5 * 0.9, rel=1e-12)
    assert lr_at(100, r, total, 0) == pytest.approx(8e-7, rel=1e-9)


@pytest.mark.parametrize("preset,unet_mult", [("synthetic-depth", 0.01), ("synthetic-seg", 0.1)])
def test_parameter_groups(preset, unet_mult):
    model = build_model(preset=preset, size="tiny")
    recipe = get_recipe(preset, unet_lr_mult=unet_mult, weight_decay=0.1)
    groups = {g["name"]: g for g in param_groups(model, recipe)}
    where = {n: name for name, g in groups.items() for n in g["names"]}
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(where) == sorted(trainable)  # every trainable parameter exactly once
    assert not any(n.startswith("backbone.vae.") for n in where)  # the VAE is frozen
    assert where["backbone.unet.conv_in.weight"] == "unet_decay"
    assert where["backbone.unet.conv_in.bias"] == "unet_no_decay"
    assert where["backbone.unet.down_blocks.0.resnets.0.norm1.weight"] == "unet_no_decay"
    assert where["backbone.step_embeddings"] == "decay"  # 2-D, as the reference's t_i (1, 1280)
    assert where["backbone.prompts.embeddings"] == "decay"
    assert groups["unet_decay"]["lr_mult"] == unet_mult and groups["unet_no_decay"]["lr_mult"] == unet_mult
    assert groups["decay"]["lr_mult"] == 1.0 and groups["decay"]["weight_decay"] == 0.1
    assert groups["no_decay"]["weight_decay"] == 0.0 and groups["unet_no_decay"]["weight_decay"] == 0.0
    opt = build_optimizer(model, recipe)
    assert [g["lr_mult"] for g in opt.param_groups] == [groups[k]["lr_mult"] for k in groups]
    # the demos train the VAE encoder too (at lr x1; post_quant_conv is never run and stays frozen)
    set_trainable(model, get_recipe(preset, train_vae=True))
    where = {n: g["name"] for g in param_groups(model, recipe) for n in g["names"]}
    assert where["backbone.vae.encoder.conv_in.weight"] == "decay"
    assert where["backbone.vae.quant_conv.bias"] == "no_decay"
    assert not any(n.startswith("backbone.vae.post_quant_conv") for n in where)


def test_recipes_hold_the_reference_values():
    nyu, ade = RECIPES["nyu"], RECIPES["ade20k"]
    assert (nyu.batch_size, nyu.epochs, nyu.lr, nyu.min_lr, nyu.weight_decay, nyu.unet_lr_mult) == \
        (3, 25, 5e-4, 3e-5, 0.1, 0.01)
    assert (ade.batch_size, ade.steps, ade.lr, ade.weight_decay, ade.unet_lr_mult, ade.warmup_steps) == \
        (1, 80_000, 8e-5, 1e-3, 0.1, 1500)
    for name, recipe in RECIPES.items():  # every recipe is valid and round-trips through its JSON form
        assert recipe.preset == name
        assert recipe_from_dict(recipe_to_dict(recipe)) == recipe


@pytest.mark.parametrize("overrides,word", [
    ({"lr": -1.0}, "lr"), ({"batch_size": 0}, "batch_size"), ({"min_lr": 1.0}, "min_lr"),
    ({"schedule": "cosine"}, "schedule"), ({"best_metric": "mIoU"}, "best_metric"),
    ({"steps": 0, "epochs": 0}, "steps"), ({"warmup_ratio": 0.0}, "warmup_ratio"), ({"lr": float("nan")}, "lr"),
    ({"workers": "2"}, "workers"), ({"learning_rate": 1.0}, "learning_rate"),
])
def test_bad_values_are_usage_errors(overrides, word):
    with pytest.raises(UsageError, match=word):
        get_recipe("synthetic-depth", **overrides)
    with pytest.raises(UsageError, match="no training recipe"):
        get_recipe("imagenet")


def test_unet_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = build_model(preset="synthetic-depth", size="tiny").train()
    x = torch.rand(2, 3, 64, 64)
    grads = []
    for on in (False, True):
        model.zero_grad()
        model.backbone.grad_checkpointing = on
        model(x).square().mean().backward()
        grads.append(model.backbone.unet.down_blocks[0].resnets[0].conv1.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-7)
