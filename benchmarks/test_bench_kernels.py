"""Triton kernels against the eager reference ops at model shapes (CUDA only; skipped elsewhere).

Both sides go through mp_deploy.ops with the kernel switch off / on, as the model calls them. Correctness is
checked loosely (tests/test_kernels.py does it properly); speed is never asserted.
"""
import pytest
import torch

import mp_deploy.kernels  # noqa: F401  (registers the kernels that ops.use_kernels switches on)
from mp_deploy import ops

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="the Triton kernels need a CUDA device")

GROUP_NORM_SHAPES = [(1, 320, 64, 64), (1, 1280, 16, 16), (8, 640, 32, 32)]  # SD-1.5 UNet, 512 x 512 encoder input
NECK_SHAPES = [(1, 768, 64, 64), (8, 768, 64, 64)]  # depth neck (stride 8 of 512 x 512), 50 prompts
IMPLS = ["eager", "triton"]


def cuda_synced(fn):
    """fn followed by a device synchronisation, so that the benchmark's wall clock sees the GPU work."""
    def run():
        out = fn()
        torch.cuda.synchronize()
        return out

    return run


def _ids(shape):
    return "x".join(map(str, shape))


def _inputs(shape, seed=0):
    pytest.importorskip("triton")
    g = torch.Generator(device="cuda").manual_seed(seed)
    c = shape[1]
    x = torch.randn(shape, generator=g, device="cuda").half()
    weight = (1 + 0.1 * torch.randn(c, generator=g, device="cuda")).half()
    bias = (0.1 * torch.randn(c, generator=g, device="cuda")).half()
    return x, weight, bias


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", GROUP_NORM_SHAPES, ids=_ids)
def test_group_norm_silu(benchmark, shape, impl):
    x, weight, bias = _inputs(shape)
    benchmark.group = f"group_norm_act silu {_ids(shape)} fp16"

    def run():
        with ops.use_kernels(impl == "triton"):
            return ops.group_norm_act(x, weight, bias, 32, 1e-5, True)

    out = benchmark(cuda_synced(run))
    with ops.use_kernels(False):
        want = ops.group_norm_act(x.float(), weight.float(), bias.float(), 32, 1e-5, True)
    torch.testing.assert_close(out.float(), want, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", NECK_SHAPES, ids=_ids)
def test_norm_relu_rearrange(benchmark, shape, impl):
    x, weight, bias = _inputs(shape)
    prompts = (torch.randn(shape[0], 50, shape[1], device="cuda") * shape[1] ** -0.5).half()
    benchmark.group = f"norm_relu_rearrange {_ids(shape)} N=50 fp16"

    def run():
        with ops.use_kernels(impl == "triton"):
            return ops.norm_relu_rearrange(x, weight, bias, 16, 1e-5, prompts)

    out = benchmark(cuda_synced(run))
    with ops.use_kernels(False):
        want = ops.norm_relu_rearrange(x.float(), weight.float(), bias.float(), 16, 1e-5, prompts.float())
    torch.testing.assert_close(out.float(), want, atol=5e-2, rtol=5e-2)
