"""A model at the precision it runs in: fp32, or fp16 with every normalisation kept in fp32 (the statistics of
fp16 activations overflow); int8 artifacts are quantized from the fp32 network by their backend (calibrated on
the task's own data, export/calibration.py), so their network is the fp32 one. Export, predict and the
benchmarks share it."""
from __future__ import annotations

import copy

import torch.nn.functional as F
from torch import nn

from mp_deploy.errors import UsageError

PRECISIONS = ("fp32", "fp16", "int8")  # what an artifact's sidecar says it runs in (artifact_schema.json)
QUANTIZED = ("int8",)  # made from the fp32 artifact by its backend, never exported at that precision
# `--backend auto` among artifacts of one backend without measurements: the exact precision first
PREFERENCE = {name: i for i, name in enumerate(PRECISIONS)}


def network_precision(precision: str) -> str:
    """The precision of the network an artifact of `precision` is exported from (int8: fp32)."""
    return "fp32" if precision in QUANTIZED else precision


class FP32GroupNorm(nn.GroupNorm):
    """GroupNorm whose statistics and affine run in fp32 for fp16 activations (fp16 overflow risk)."""

    def forward(self, x):
        return F.group_norm(x.float(), self.num_groups, self.weight, self.bias, self.eps).to(x.dtype)


class FP32LayerNorm(nn.LayerNorm):
    def forward(self, x):
        return F.layer_norm(x.float(), self.normalized_shape, self.weight, self.bias, self.eps).to(x.dtype)


def to_precision(model: nn.Module, precision: str) -> nn.Module:
    """A copy of the model in fp32 (also the network of an int8 artifact), or in fp16 with every normalisation kept
    in fp32."""
    model = copy.deepcopy(model).eval()
    if network_precision(precision) == "fp32":
        return model.float()
    if precision != "fp16":
        raise UsageError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    model.half()
    for m in model.modules():
        if type(m) is nn.GroupNorm:
            m.__class__ = FP32GroupNorm
            m.float()
        elif type(m) is nn.LayerNorm:
            m.__class__ = FP32LayerNorm
            m.float()
    return model
