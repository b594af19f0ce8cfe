"""Per-stage benchmarks of the tiny model on the CPU: each of the model's own stages (`model.stages()`) timed
alone on the state the previous stage produced. Speed is never asserted; the benchmark fixture only records it.
"""
import pytest
import torch

from mp_deploy.tasks import PRESETS

STAGES = ["vae_encode"] + [f"unet_pass{k + 1}" for k in range(PRESETS["nyu"].refine_steps)] + ["neck", "head"]


@pytest.fixture(scope="module")
def depth_states(tiny_models, images):
    """stage name -> (its function, the state it takes)."""
    model = tiny_models("depth")
    state, inputs = {"images": images}, {}
    with torch.no_grad():
        for stage in model.stages():
            inputs[stage.name] = (stage.fn, state)
            state = stage.fn(state)
    return inputs


@pytest.mark.parametrize("stage", STAGES)
def test_depth_stage(benchmark, depth_states, stage):
    assert list(depth_states) == STAGES
    fn, state = depth_states[stage]
    benchmark.group = "depth stages (tiny, CPU)"
    with torch.no_grad():
        out = benchmark(fn, state)
    tensors = [v for v in out.values() if isinstance(v, torch.Tensor)] + list(out.get("features", []))
    assert tensors and all(torch.isfinite(t).all() for t in tensors)
