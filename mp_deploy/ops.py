"""The model's replaceable ops, in plain PyTorch.

These are the reference definitions. `mp_deploy.kernels` (the top-level `kernels/` folder) provides fused
Triton versions registered as torch operators; `use_kernels(True)` routes the model through them on CUDA.
Every caller goes through the functions below, so switching is one flag (A/B runs, CPU exports).
"""
from __future__ import annotations

import contextlib
import os

import torch
import torch.nn.functional as F

KERNEL_OPS = ("norm_relu_rearrange", "group_norm_act")
_enabled: frozenset = frozenset(KERNEL_OPS) if os.environ.get("MP_DEPLOY_KERNELS", "0") == "1" else frozenset()
_any_device = False


def set_kernels(enabled: bool, only=KERNEL_OPS, any_device: bool = False) -> None:
    """Route the ops named in `only` through the registered torch ops (Triton on CUDA). `any_device` also
    routes CPU tensors there (the op's CPU kernel is the reference): exports then keep the op as one node,
    e.g. to become a TensorRT plugin node in ONNX."""
    global _enabled, _any_device
    _enabled = frozenset(only) if enabled else frozenset()
    _any_device = any_device


@contextlib.contextmanager
def use_kernels(enabled: bool = True, only=KERNEL_OPS, any_device: bool = False):
    """Temporarily route `norm_relu_rearrange` / `group_norm_act` through the kernels (A/B switch)."""
    old = (_enabled, _any_device)
    set_kernels(enabled, only, any_device)
    try:
        yield
    finally:
        set_kernels(bool(old[0]), old[0], old[1])


def _kernel_op(name: str, x: torch.Tensor):
    """The registered torch op for `name`, or None when it is off for this input."""
    if name not in _enabled or not (x.is_cuda or _any_device):
        return None
    from mp_deploy import kernels  # noqa: F401  (registers torch.ops.mp_deploy.*)

    return getattr(torch.ops.mp_deploy, name)


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
    # statistics and affine in fp32 (weight/bias may be fp32 beside fp16 activations)
    y = F.relu(F.group_norm(x.float(), groups, weight.float(), bias.float(), eps)).to(x.dtype)
    return prompt_rearrange(y, prompts)


def group_norm_act(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int, eps: float,
                   silu: bool) -> torch.Tensor:
    """GroupNorm with fp32 statistics (also for fp16/bf16 x), optionally followed by SiLU."""
    op = _kernel_op("group_norm_act", x)
    if op is not None:
        return op(x, weight, bias, groups, eps, silu)
    y = F.group_norm(x.float(), groups, weight.float(), bias.float(), eps).to(x.dtype)
    return F.silu(y) if silu else y
