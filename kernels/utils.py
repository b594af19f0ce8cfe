"""What every op file shares: Triton (or a stand-in where it is not installed), the eager/traced launch
switch, and the registration of an op as torch.ops.mp_deploy.<name> plus mp_deploy.ops' kernel registry."""
import types

import torch
from torch.library import wrap_triton

from mp_deploy import ops

try:
    import triton
    import triton.language as tl
except ImportError:  # the ops still register, backed by their plain-PyTorch references alone
    HAS_TRITON = False
    # enough for the op files to define their kernels (decorators, constexpr annotations); none of them runs
    triton = types.SimpleNamespace(jit=lambda fn: fn)
    tl = types.SimpleNamespace(constexpr=None)
else:
    HAS_TRITON = True


def traceable(kernel, x: torch.Tensor):
    """`kernel`, or `wrap_triton(kernel)` while torch traces (export, compile: fake tensors or a dispatch mode
    active), where it turns the launch into a graph node. In eager mode wrap_triton would send every launch
    through torch's tracing machinery, host time that a direct launch does not spend."""
    if type(x) is torch.Tensor and torch._C._len_torch_dispatch_stack() == 0:
        return kernel
    return wrap_triton(kernel)


def define_op(name: str, triton_body, reference, fake):
    """torch.ops.mp_deploy.<name>, registered with mp_deploy.ops as the kernel of its op `name`.

    With Triton, a triton_op running `triton_body` (the body torch.compile / AOTInductor trace, for every
    device); without it, a custom_op running `reference`. Either way CPU inputs take `reference` and fake or
    meta inputs `fake`. Both functions carry the op's typed signature (torch infers the schema from it).
    """
    qualname = f"mp_deploy::{name}"
    if HAS_TRITON:
        op = torch.library.triton_op(qualname, triton_body, mutates_args=())
    else:
        op = torch.library.custom_op(qualname, reference, mutates_args=())
    op.register_kernel("cpu")(reference)
    op.register_fake(fake)
    ops.register_kernel(name, getattr(torch.ops.mp_deploy, name))
    return op
