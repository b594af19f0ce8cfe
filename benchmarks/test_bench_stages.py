"""Per-stage benchmarks of the tiny model on the CPU, and the staged run == model(x) check.

Speed is never asserted; the benchmark fixture only records it.
"""
import pytest
import torch
from stages import Staged

from mp_deploy.configs import PRESETS

STAGES = ["vae_encode"] + [f"unet_pass{k + 1}" for k in range(PRESETS["nyu"].refine_steps)] + ["neck", "head"]


@pytest.fixture(scope="module")
def depth_states(tiny_models, images):
    staged = Staged(tiny_models("depth"))
    return staged, staged.states(images)


@pytest.mark.parametrize("stage", STAGES)
def test_depth_stage(benchmark, depth_states, stage):
    staged, states = depth_states
    assert staged.names == STAGES
    fn = dict(staged.stages)[stage]
    benchmark.group = "depth stages (tiny, CPU)"
    with torch.no_grad():
        out = benchmark(fn, states[stage])
    tensors = [v for v in out.values() if isinstance(v, torch.Tensor)] + list(out.get("features", []))
    assert tensors and all(torch.isfinite(t).all() for t in tensors)


@pytest.mark.parametrize("task", ["depth", "seg", "pose"])
def test_staged_run_equals_model(benchmark, tiny_models, images, task):
    """The stages reproduce model.forward exactly: same ops, same order, bit-identical output."""
    model = tiny_models(task)
    staged = Staged(model)
    benchmark.group = "end to end (tiny, CPU)"
    out = benchmark.pedantic(staged.run, args=(images,), rounds=1, iterations=1)
    with torch.no_grad():
        want = model(images)
    assert out.shape == want.shape
    assert torch.equal(out, want)

    marks = []
    staged.run(images, mark=marks.append)
    assert marks == staged.names
