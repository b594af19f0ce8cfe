"""The model's fused kernels as torch operators (importing this module registers them).

    torch.ops.mp_deploy.norm_relu_rearrange(x, weight, bias, groups, eps, prompts) -> (B, N, H, W)
    torch.ops.mp_deploy.group_norm_act(x, weight, bias, groups, eps, silu) -> x's shape

- CUDA: Triton kernels, registered with torch.library.triton_op and, while torch traces, launched through
  wrap_triton, so torch.compile / torch.export + AOTInductor see the kernels and compile them into the
  artifact (eager calls launch them directly: group_norm.traceable).
- CPU: the plain-PyTorch references of mp_deploy.ops (CPU exports, tests of the op).
- fake/meta: shapes and dtypes only.
Without Triton the ops are still registered (torch.library.custom_op), backed by the references alone.
The Triton launchers themselves are `group_norm.group_norm_act` and `norm_relu_rearrange.norm_relu_rearrange`
(the op objects here are named `*_op` so that they do not shadow those submodules).
"""
import contextlib

import torch
from torch import Tensor

from mp_deploy import ops as _reference

try:
    import triton  # noqa: F401
except ImportError:
    HAS_TRITON = False
else:
    HAS_TRITON = True


def _reference_norm_relu_rearrange(x: Tensor, weight: Tensor, bias: Tensor, groups: int, eps: float,
                                   prompts: Tensor) -> Tensor:
    # with kernels on, the reference sends a CUDA x straight back to this op (only without Triton)
    with _reference.use_kernels(False) if x.is_cuda else contextlib.nullcontext():
        return _reference.norm_relu_rearrange(x, weight, bias, groups, eps, prompts)


def _reference_group_norm_act(x: Tensor, weight: Tensor, bias: Tensor, groups: int, eps: float, silu: bool) -> Tensor:
    with _reference.use_kernels(False) if x.is_cuda else contextlib.nullcontext():
        return _reference.group_norm_act(x, weight, bias, groups, eps, silu)


if HAS_TRITON:
    from .group_norm import group_norm_act as _triton_group_norm_act
    from .norm_relu_rearrange import norm_relu_rearrange as _triton_norm_relu_rearrange

    @torch.library.triton_op("mp_deploy::norm_relu_rearrange", mutates_args=())
    def norm_relu_rearrange_op(x: Tensor, weight: Tensor, bias: Tensor, groups: int, eps: float,
                            prompts: Tensor) -> Tensor:
        # this body is also what torch.compile / AOTInductor trace, for every device: non-CUDA
        # inputs get the reference ops so that CPU artifacts hold no Triton kernel
        if x.device.type != "cuda":
            return _reference.norm_relu_rearrange(x, weight, bias, groups, eps, prompts)
        return _triton_norm_relu_rearrange(x, weight, bias, groups, eps, prompts)

    @torch.library.triton_op("mp_deploy::group_norm_act", mutates_args=())
    def group_norm_act_op(x: Tensor, weight: Tensor, bias: Tensor, groups: int, eps: float, silu: bool) -> Tensor:
        if x.device.type != "cuda":
            return _reference.group_norm_act(x, weight, bias, groups, eps, silu)
        return _triton_group_norm_act(x, weight, bias, groups, eps, silu)
else:
    norm_relu_rearrange_op = torch.library.custom_op("mp_deploy::norm_relu_rearrange", mutates_args=())(
        _reference_norm_relu_rearrange)
    group_norm_act_op = torch.library.custom_op("mp_deploy::group_norm_act", mutates_args=())(
        _reference_group_norm_act)

norm_relu_rearrange_op.register_kernel("cpu")(_reference_norm_relu_rearrange)
group_norm_act_op.register_kernel("cpu")(_reference_group_norm_act)


@norm_relu_rearrange_op.register_fake
def _(x, weight, bias, groups, eps, prompts):
    batch, _, height, width = x.shape
    return x.new_empty((batch, prompts.shape[1], height, width))


@group_norm_act_op.register_fake
def _(x, weight, bias, groups, eps, silu):
    return x.new_empty(x.shape)
