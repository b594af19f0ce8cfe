"""The bundled demo models: fp16 weights of their presets, ahead of the trivial baselines on held-out synthetic
scenes, and `mp-deploy build`'s default."""
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from mp_deploy import demo
from mp_deploy.checkpoints import load_model
from mp_deploy.tasks import get_preset
from mp_deploy.export.build_engine import BuildSpec, load_source
from mp_deploy.train import build
from mp_deploy.train.recipes import get_recipe
from mp_deploy.evaluation import baseline_run, evaluate, model_run
from mp_deploy.util import sha256_file

HELD_OUT = 24  # images of the held-out split (the demos' README numbers use all 200)


def test_demo_files_are_fp16_models_of_their_presets():
    total = 0
    for task in demo.tasks_with_demo():
        path = demo.checkpoint(task)
        total += path.stat().st_size
        model = load_model(path)
        params = {k for k, _ in model.named_parameters()}
        assert {v.dtype for k, v in load_file(path).items() if k in params} == {torch.float16}
        assert (model.task, model.preset.name, model.size.name) == (task, f"synthetic-{task}", "tiny")
        assert next(model.parameters()).dtype == torch.float32  # cast on load
        h, w = get_preset(f"synthetic-{task}").window
        with Image.open(demo.sample_image(task)) as image:
            assert image.size == (w, h) and image.mode == "RGB"
    assert total <= 20 * 2 ** 20
    with pytest.raises(ValueError, match="no demo model"):
        demo.checkpoint("detection")


@pytest.mark.parametrize("task,metric,higher", [("depth", "abs_rel", False), ("depth", "d1", True),
                                                ("seg", "mIoU", True),
                                                # strict: the day a new pose demo beats the baseline this turns red
                                                # and the mark goes (issue 25)
                                                pytest.param("pose", "PCK", True, marks=pytest.mark.xfail(
                                                    strict=True, reason="the bundled pose demo does not beat the "
                                                    "mean-pose baseline: PCK 0.059 vs 0.061 on 24 held-out scenes "
                                                    "(issue 25)"))])
def test_demo_beats_its_baseline_on_held_out_scenes(task, metric, higher):
    torch.set_num_threads(1)
    model = load_model(demo.checkpoint(task)).eval()
    recipe = get_recipe(model.preset.name)
    val = build.dataset(recipe, None, "val", train=False)
    train = build.dataset(recipe, None, "train", train=False)
    ours = evaluate(model_run(model, "fp32", torch.device("cpu")), val, model.preset, limit=HELD_OUT, progress=False)
    base = evaluate(baseline_run(task, train, model.preset, samples=48), val, model.preset, limit=HELD_OUT,
                    progress=False)
    assert (ours[metric] > base[metric]) if higher else (ours[metric] < base[metric]), (ours[metric], base[metric])


def test_build_defaults_to_the_depth_demo():
    model, source = load_source(BuildSpec(task="depth"))
    assert source["demo"] == "depth" and source["sha256"] == sha256_file(demo.checkpoint("depth"))
    assert model.preset.name == "synthetic-depth" and not model.training
