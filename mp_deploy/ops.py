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

_USE_KERNELS = os.environ.get("MP_DEPLOY_KERNELS", "0") == "1"


def kernels_enabled() -> bool:
    return _USE_KERNELS


def set_kernels(enabled: bool) -> None:
    global _USE_KERNELS
    _USE_KERNELS = bool(enabled)


@contextlib.contextmanager
def use_kernels(enabled: bool = True):
    """Temporarily route `prompt_rearrange`, `norm_relu_rearrange` and `group_norm_act` through Triton."""
    old = _USE_KERNELS
    set_kernels(enabled)
    try:
        yield
    finally:
        set_kernels(old)


def _kernel_ops():
    """The registered torch ops, or None when kernels are off or the input is not on CUDA."""
    if not _USE_KERNELS:
        return None
    from mp_deploy import kernels  # noqa: F401  (registers torch.ops.mp_deploy.*)

    return torch.ops.mp_deploy


def prompt_rearrange(features: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
    """out[b, n, h, w] = sum_c features[b, c, h, w] * prompts[b, n, c]; no softmax, no scaling.

    features (B, C, H, W), prompts (B, N, C) -> (B, N, H, W).
    """
    return torch.einsum("bchw,bnc->bnhw", features, prompts)


def norm_relu_rearrange(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int, eps: float,
                        prompts: torch.Tensor) -> torch.Tensor:
    """GroupNorm(groups) + affine + ReLU of the conv output x (B, C, H, W), then `prompt_rearrange`."""
    ops = _kernel_ops()
    if ops is not None and x.is_cuda:
        return ops.norm_relu_rearrange(x, weight, bias, groups, eps, prompts)
    y = F.relu(F.group_norm(x, groups, weight, bias, eps))
    return prompt_rearrange(y, prompts)


def group_norm_act(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int, eps: float,
                   silu: bool) -> torch.Tensor:
    """GroupNorm with fp32 statistics (also for fp16/bf16 x), optionally followed by SiLU."""
    ops = _kernel_ops()
    if ops is not None and x.is_cuda:
        return ops.group_norm_act(x, weight, bias, groups, eps, silu)
    y = F.group_norm(x.float(), groups, weight.float(), bias.float(), eps).to(x.dtype)
    return F.silu(y) if silu else y
