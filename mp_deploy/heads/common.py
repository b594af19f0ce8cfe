"""Layers shared by the model's stages and task heads."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def resize(x: torch.Tensor, size) -> torch.Tensor:
    """Bilinear, align_corners=False: every resize of the reference's models."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def conv_bn_relu(cin: int, cout: int, kernel: int = 3, bias: bool = True) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=bias), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def deconv_bn_relu(cin: int, cout: int, kernel: int) -> list[nn.Module]:
    """x2 up-sampling transposed conv (k4 p1 or k2 p0, stride 2), no bias, + BN + ReLU."""
    padding = 1 if kernel == 4 else 0
    return [nn.ConvTranspose2d(cin, cout, kernel, stride=2, padding=padding, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True)]


class DeconvStack(nn.Module):
    """`num` x2 deconvs to `width` channels, then conv3x3 to `cout` (reference: layer2-4 of the depth neck,
    and the depth decoder). Key names follow the reference: deconv_layers.*, conv_layers.*"""

    def __init__(self, cin: int, width: int, num: int, cout: int, kernel: int):
        super().__init__()
        layers = []
        for i in range(num):
            layers += deconv_bn_relu(cin if i == 0 else width, width, kernel)
        self.deconv_layers = nn.Sequential(*layers)
        self.conv_layers = nn.Sequential(*conv_bn_relu(width, cout))

    def forward(self, x):
        return self.conv_layers(self.deconv_layers(x))


class ConvGNReLU(nn.Sequential):
    """Conv3x3 + GroupNorm(16) + ReLU; keys .0 (conv) and .1 (norm) as in the reference."""

    def __init__(self, cin: int, cout: int, groups: int = 16):
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(groups, cout), nn.ReLU(inplace=True))
