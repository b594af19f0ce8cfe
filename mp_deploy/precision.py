"""A model at the precision it runs in: fp32, or fp16 with every normalisation kept in fp32 (the statistics of
fp16 activations overflow). Export, predict and the benchmarks share it."""
from __future__ import annotations

import copy

import torch.nn.functional as F
from torch import nn

from mp_deploy.errors import UsageError


class FP32GroupNorm(nn.GroupNorm):
    """GroupNorm whose statistics and affine run in fp32 for fp16 activations (fp16 overflow risk)."""

    def forward(self, x):
        return F.group_norm(x.float(), self.num_groups, self.weight, self.bias, self.eps).to(x.dtype)


class FP32LayerNorm(nn.LayerNorm):
    def forward(self, x):
        return F.layer_norm(x.float(), self.normalized_shape, self.weight, self.bias, self.eps).to(x.dtype)


def to_precision(model: nn.Module, precision: str) -> nn.Module:
    """A copy of the model in fp32, or in fp16 with every normalisation kept in fp32."""
    model = copy.deepcopy(model).eval()
    if precision == "fp32":
        return model.float()
    if precision != "fp16":
        raise UsageError(f"precision must be fp16 or fp32, got {precision!r}")
    model.half()
    for m in model.modules():
        if type(m) is nn.GroupNorm:
            m.__class__ = FP32GroupNorm
            m.float()
        elif type(m) is nn.LayerNorm:
            m.__class__ = FP32LayerNorm
            m.float()
    return model
