"""Segmentation: per-level prompt maps (the reference's upconv1-4), UPerHead and the FCN auxiliary head, and the
segmentation model (RGB in [0, 1] -> class logits (B, K, H, W)).

UPerHead / FCNHead follow mmseg 0.30 (the reference's decode_head / auxiliary_head) in plain PyTorch, with
mmcv ConvModule's key names (`.conv` without bias, `.bn`), so official files load unchanged.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mp_deploy.backbone import MetaPromptsBackbone
from mp_deploy.configs import Preset, SizeConfig
from mp_deploy.heads.common import ConvGNReLU, resize
from mp_deploy.models import MetaPromptsModel
from mp_deploy.ops import norm_relu_rearrange


class SegNeck(nn.Module):
    """Per level: bilinear x2, conv3x3 to the prompt dim + GroupNorm(16) + ReLU, dot with the prompts.
    4 maps of N channels at strides 4, 8, 16, 32 of the image."""

    def __init__(self, feature_channels, prompt_dim: int):
        super().__init__()
        self.upconvs = nn.ModuleList(ConvGNReLU(c, prompt_dim) for c in feature_channels)

    def forward(self, features, prompts: torch.Tensor):
        maps = []
        for f, layer in zip(features, self.upconvs):
            f = F.interpolate(f, scale_factor=2, mode="bilinear", align_corners=False)
            conv, norm = layer[0], layer[1]
            maps.append(norm_relu_rearrange(conv(f), norm.weight, norm.bias, norm.num_groups, norm.eps, prompts))
        return maps


class ConvModule(nn.Module):
    """mmcv ConvModule(conv without bias, BN, ReLU)."""

    def __init__(self, cin: int, cout: int, kernel: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class UPerHead(nn.Module):
    def __init__(self, in_channels: int, channels: int, num_classes: int, pool_scales=(1, 2, 3, 6),
                 dropout: float = 0.0):
        super().__init__()
        self.psp_modules = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(s), ConvModule(in_channels, channels, 1)) for s in pool_scales)
        self.bottleneck = ConvModule(in_channels + len(pool_scales) * channels, channels, 3)
        self.lateral_convs = nn.ModuleList(ConvModule(in_channels, channels, 1) for _ in range(3))
        self.fpn_convs = nn.ModuleList(ConvModule(channels, channels, 3) for _ in range(3))
        self.fpn_bottleneck = ConvModule(4 * channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, inputs) -> torch.Tensor:
        top = inputs[-1]
        pooled = [resize(ppm(top), top.shape[-2:]) for ppm in self.psp_modules]
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, inputs[:-1])]
        laterals.append(self.bottleneck(torch.cat([top] + pooled, dim=1)))
        for i in range(len(laterals) - 1, 0, -1):  # top-down path
            laterals[i - 1] = laterals[i - 1] + resize(laterals[i], laterals[i - 1].shape[-2:])
        outs = [conv(x) for conv, x in zip(self.fpn_convs, laterals[:-1])] + [laterals[-1]]
        outs = [outs[0]] + [resize(x, outs[0].shape[-2:]) for x in outs[1:]]
        return self.conv_seg(self.dropout(self.fpn_bottleneck(torch.cat(outs, dim=1))))


class FCNHead(nn.Module):
    """Auxiliary head on the stride-16 map (training only): one ConvModule, no input concat."""

    in_index = 2

    def __init__(self, in_channels: int, channels: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.convs = nn.Sequential(ConvModule(in_channels, channels, 3))
        self.dropout = nn.Dropout2d(dropout)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, inputs) -> torch.Tensor:
        return self.conv_seg(self.dropout(self.convs(inputs[self.in_index])))


class MetaPromptsSeg(MetaPromptsModel):
    task = "seg"

    def __init__(self, size: SizeConfig, preset: Preset):
        super().__init__(size, preset)
        self.backbone = MetaPromptsBackbone(size, preset.refine_steps, preset.num_prompts, per_step_prompts=False)
        self.neck = SegNeck(size.feature_channels, size.prompt_dim)
        self.decode_head = UPerHead(preset.num_prompts, size.uper_channels, preset.num_classes,
                                    dropout=preset.dropout)
        self.auxiliary_head = FCNHead(preset.num_prompts, size.uper_channels, preset.num_classes,
                                      dropout=preset.dropout)

    def encoder_size(self, h: int, w: int) -> tuple[int, int]:
        return h, w

    def decode(self, s: dict) -> dict:
        """UPerHead on the 4 prompt maps, logits resized to the image. In training mode also the auxiliary
        FCN head's logits (`aux_output`, at its own stride 16), which only the loss uses."""
        out = {"hw": s["hw"], "output": resize(self.decode_head(s["prompt_map"]), s["hw"])}
        if self.training:
            out["aux_output"] = self.auxiliary_head(s["prompt_map"])
        return out
