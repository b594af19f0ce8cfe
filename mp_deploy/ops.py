"""The model's replaceable ops, in plain PyTorch, and the switch that routes them through kernels.

Every caller goes through `norm_relu_rearrange` / `group_norm_act` below, so switching is one context manager
(A/B runs, exports). The kernels live in `mp_deploy.kernels` (the top-level `kernels/` folder), which
registers them here when it is imported: this module imports nothing of it.

    import mp_deploy.kernels          # fills the registry with torch.ops.mp_deploy.*
    with ops.use_kernels():           # CUDA inputs now take the Triton kernels
        model(x)

MP_DEPLOY_KERNELS=1 in the environment switches every kernel on by default (the importer must still import
mp_deploy.kernels). An op switched on for an input with no kernel registered raises KernelNotRegistered.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F

from mp_deploy.errors import MpDeployError, UsageError

KERNEL_OPS = ("norm_relu_rearrange", "group_norm_act")
_kernels: dict[str, Callable] = {}  # op name -> its torch op, filled by mp_deploy.kernels
_enabled: frozenset = frozenset(KERNEL_OPS) if os.environ.get("MP_DEPLOY_KERNELS", "0") == "1" else frozenset()
_any_device = False


class KernelNotRegistered(MpDeployError, RuntimeError):
    """A kernel is switched on but nothing registered it (mp_deploy.kernels was not imported)."""


def register_kernel(name: str, op: Callable) -> None:
    """Route `name` through `op` wherever it is switched on. Called by mp_deploy.kernels when imported."""
    if name not in KERNEL_OPS:
        raise UsageError(f"unknown kernel op {name!r}; known: {', '.join(KERNEL_OPS)}")
    _kernels[name] = op


@contextlib.contextmanager
def use_kernels(enabled: bool = True, only: Iterable[str] = KERNEL_OPS, any_device: bool = False):
    """Inside the block, route the ops named in `only` through their registered kernels (Triton on CUDA).

    `any_device` also routes non-CUDA tensors there (the op's CPU kernel is the reference): exports then keep
    the op as one node, e.g. to become a TensorRT plugin node in ONNX. `enabled=False` switches every op off.
    """
    global _enabled, _any_device
    names = frozenset([only] if isinstance(only, str) else only)
    if names - set(KERNEL_OPS):
        raise UsageError(f"unknown kernel op(s) {sorted(names - set(KERNEL_OPS))}; known: {', '.join(KERNEL_OPS)}")
    old = _enabled, _any_device
    _enabled, _any_device = (names if enabled else frozenset()), any_device
    try:
        yield
    finally:
        _enabled, _any_device = old


def _kernel_op(name: str, x: torch.Tensor):
    """The registered torch op for `name`, or None when it is off for this input."""
    if name not in _enabled or not (x.is_cuda or _any_device):
        return None
    op = _kernels.get(name)
    if op is None:
        raise KernelNotRegistered(f"the {name} kernel is switched on but not registered: `import mp_deploy.kernels` "
                                  "before switching kernels on (it registers torch.ops.mp_deploy.*)")
    return op


def prompt_rearrange(features: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
    """out[b, n, h, w] = sum_c features[b, c, h, w] * prompts[b, n, c]; no softmax, no scaling.

    features (B, C, H, W), prompts (B, N, C) -> (B, N, H, W).
    """
    return torch.einsum("bchw,bnc->bnhw", features, prompts)


def norm_relu_rearrange(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int, eps: float,
                        prompts: torch.Tensor) -> torch.Tensor:
    """GroupNorm(groups) + affine + ReLU of the conv output x (B, C, H, W), then `prompt_rearrange`."""
    op = _kernel_op("norm_relu_rearrange", x)
    if op is not None:
        return op(x, weight, bias, groups, eps, prompts)
    return norm_relu_rearrange_reference(x, weight, bias, groups, eps, prompts)


def norm_relu_rearrange_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int,
                                  eps: float, prompts: torch.Tensor) -> torch.Tensor:
    """`norm_relu_rearrange` in plain PyTorch, whatever the switch says (the kernels' CPU op and reference)."""
    # statistics and affine in fp32 (weight/bias may be fp32 beside fp16 activations)
    y = F.relu(F.group_norm(x.float(), groups, weight.float(), bias.float(), eps)).to(x.dtype)
    return prompt_rearrange(y, prompts)


def group_norm_act(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int, eps: float,
                   silu: bool) -> torch.Tensor:
    """GroupNorm with fp32 statistics (also for fp16/bf16 x), optionally followed by SiLU."""
    op = _kernel_op("group_norm_act", x)
    if op is not None:
        return op(x, weight, bias, groups, eps, silu)
    return group_norm_act_reference(x, weight, bias, groups, eps, silu)


def group_norm_act_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int, eps: float,
                             silu: bool) -> torch.Tensor:
    """`group_norm_act` in plain PyTorch, whatever the switch says (the kernels' CPU op and reference)."""
    y = F.group_norm(x.float(), groups, weight.float(), bias.float(), eps).to(x.dtype)
    return F.silu(y) if silu else y
