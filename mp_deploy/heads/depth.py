"""Depth: the reference's stride-8 fusion neck with the prompt rearrangement, its deconv decoder, and the depth model
(RGB in [0, 1] -> depth in metres (B, 1, H, W))."""
from __future__ import annotations

import torch
from torch import nn

from mp_deploy.backbone import MetaPromptsBackbone
from mp_deploy.configs import Preset, SizeConfig
from mp_deploy.heads.common import ConvGNReLU, DeconvStack
from mp_deploy.models import MetaPromptsModel
from mp_deploy.ops import norm_relu_rearrange


class FusionNeck(nn.Module):
    """Brings the 4 UNet features to stride 8, concatenates them, conv3x3 to the prompt dim + GroupNorm(16) +
    ReLU, and takes the dot product with the prompts -> (B, N, H/8, W/8). Also used by the pose model."""

    def __init__(self, feature_channels, deconv_channels: int, prompt_dim: int):
        super().__init__()
        c0, c1, c2, c3 = feature_channels
        self.layer1 = ConvGNReLU(c0, c0)
        self.layer2 = DeconvStack(c1, deconv_channels, 1, c1, kernel=4)
        self.layer3 = DeconvStack(c2, deconv_channels, 2, c2, kernel=4)
        self.layer4 = DeconvStack(c3, deconv_channels, 3, c3, kernel=4)
        self.out_layer = ConvGNReLU(c0 + c1 + c2 + c3, prompt_dim)

    def forward(self, features, prompts: torch.Tensor) -> torch.Tensor:
        f0, f1, f2, f3 = features
        x = torch.cat([self.layer1(f0), self.layer2(f1), self.layer3(f2), self.layer4(f3)], dim=1)
        conv, norm = self.out_layer[0], self.out_layer[1]
        return norm_relu_rearrange(conv(x), norm.weight, norm.bias, norm.num_groups, norm.eps, prompts)


class DepthHead(nn.Module):
    """(B, N, h/8, w/8) prompt map -> 3 x2 deconvs -> conv -> conv-ReLU-conv -> sigmoid * max_depth."""

    def __init__(self, num_prompts: int, decoder_channels: int, head_channels: int, max_depth: float):
        super().__init__()
        self.max_depth = max_depth
        self.decoder = DeconvStack(num_prompts, decoder_channels, 3, head_channels, kernel=2)
        self.last_layer = nn.Sequential(nn.Conv2d(head_channels, head_channels, 3, padding=1), nn.ReLU(inplace=False),
                                        nn.Conv2d(head_channels, 1, 3, padding=1))

    def forward(self, prompt_map: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.last_layer(self.decoder(prompt_map))) * self.max_depth


class MetaPromptsDepth(MetaPromptsModel):
    task = "depth"

    def __init__(self, size: SizeConfig, preset: Preset):
        super().__init__(size, preset)
        self.backbone = MetaPromptsBackbone(size, preset.refine_steps, preset.num_prompts, per_step_prompts=True)
        self.neck = FusionNeck(size.feature_channels, size.neck_deconv_channels, size.prompt_dim)
        self.head = DepthHead(preset.num_prompts, size.depth_decoder_channels, size.depth_head_channels,
                              preset.max_depth)
