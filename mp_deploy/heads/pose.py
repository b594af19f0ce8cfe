"""Pose (our design; the reference has not released one): top-down heatmaps at stride 4.

The fused stride-8 prompt map of the depth neck (one prompt per channel of evidence) goes through a
ViTPose-style simple decoder: one x2 deconv (stride 8 -> 4), a conv3x3, and a 1x1 conv to K heatmaps. The pose
model: RGB crops in [0, 1] -> keypoint heatmaps (B, K, H/4, W/4).
"""
from __future__ import annotations

import torch
from torch import nn

from mp_deploy.backbone import MetaPromptsBackbone
from mp_deploy.configs import Preset, SizeConfig
from mp_deploy.heads.common import conv_bn_relu, deconv_bn_relu
from mp_deploy.heads.depth import FusionNeck
from mp_deploy.models import MetaPromptsModel


class PoseHead(nn.Module):
    def __init__(self, num_prompts: int, channels: int, num_keypoints: int):
        super().__init__()
        self.decoder = nn.Sequential(*deconv_bn_relu(num_prompts, channels, 4), *conv_bn_relu(channels, channels))
        self.final_layer = nn.Conv2d(channels, num_keypoints, 1)

    def forward(self, prompt_map: torch.Tensor) -> torch.Tensor:
        return self.final_layer(self.decoder(prompt_map))


class MetaPromptsPose(MetaPromptsModel):
    task = "pose"

    def __init__(self, size: SizeConfig, preset: Preset):
        super().__init__(size, preset)
        self.backbone = MetaPromptsBackbone(size, preset.refine_steps, preset.num_prompts, per_step_prompts=False)
        self.neck = FusionNeck(size.feature_channels, size.neck_deconv_channels, size.prompt_dim)
        self.head = PoseHead(preset.num_prompts, size.pose_head_channels, preset.num_keypoints)
