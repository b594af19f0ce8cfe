"""The reference's UNet forward over diffusers' SD-1.5 blocks.

Differences from `UNet2DConditionModel.forward`, all taken from the reference (meta_prompts/models.py):
- no time embedding: the per-step learned (B, 1280) vector is fed to every ResBlock as `temb`;
- when a skip's H x W differs from the decoder's (latents that are not multiples of 8), the SKIP is resized
  bilinearly to the decoder size (stock diffusers would resize the decoder instead);
- it returns the decoder features after ldm output blocks 11, 7, 4 and 1 (strides 8, 16, 32, 64 of the image).
ResBlock GroupNorm+SiLU goes through `ops.group_norm_act`, which the Triton kernels replace.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from diffusers import UNet2DConditionModel
from diffusers.models.autoencoders.vae import Encoder

from mp_deploy.ops import group_norm_act


def build_unet(config: dict) -> UNet2DConditionModel:
    unet = UNet2DConditionModel(**config)
    unet.time_embedding = None  # the learned step embeddings replace it; official depth files have no time_embed
    unet.time_proj = None
    return unet


def _norm_act(norm: torch.nn.GroupNorm, x: torch.Tensor, silu: bool) -> torch.Tensor:
    return group_norm_act(x, norm.weight, norm.bias, norm.num_groups, norm.eps, silu)


def resnet_forward(block, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    """diffusers ResnetBlock2D (SD-1.5 settings: default emb norm, no up/down) with the norm+SiLU op swapped."""
    h = block.conv1(_norm_act(block.norm1, x, silu=True))
    h = h + block.time_emb_proj(F.silu(emb))[:, :, None, None]
    h = block.conv2(block.dropout(_norm_act(block.norm2, h, silu=True)))
    if block.conv_shortcut is not None:
        x = block.conv_shortcut(x)
    return (x + h) / block.output_scale_factor


def _attend(attn, h: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    return attn(h, encoder_hidden_states=context, return_dict=False)[0]


def _block(resnet, attention, h: torch.Tensor, emb: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    h = resnet_forward(resnet, h, emb)
    return h if attention is None else _attend(attention, h, context)


def unet_features(unet: UNet2DConditionModel, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor,
                  checkpoint: bool = False):
    """One UNet pass -> [f0, f1, f2, f3] = outputs of ldm output blocks [11, 7, 4, 1].

    checkpoint: keep only each ResBlock(+attention)'s input for the backward pass and recompute the rest there
    (training memory; no effect without autograd)."""
    def block_fn(resnet, attention, h):
        if checkpoint and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(_block, resnet, attention, h, emb, context, use_reentrant=False)
        return _block(resnet, attention, h, emb, context)

    h = unet.conv_in(x)
    skips = [h]
    for block in unet.down_blocks:
        attentions = getattr(block, "attentions", None)
        for j, resnet in enumerate(block.resnets):
            h = block_fn(resnet, attentions[j] if attentions is not None else None, h)
            skips.append(h)
        if block.downsamplers is not None:
            h = block.downsamplers[0](h)
            skips.append(h)

    mid = unet.mid_block
    h = block_fn(mid.resnets[0], mid.attentions[0], h)
    h = block_fn(mid.resnets[1], None, h)

    taps = []
    last = len(unet.up_blocks) - 1
    for i, block in enumerate(unet.up_blocks):
        attentions = getattr(block, "attentions", None)
        for j, resnet in enumerate(block.resnets):
            skip = skips.pop()
            if skip.shape[-2:] != h.shape[-2:]:
                skip = F.interpolate(skip, size=h.shape[-2:], mode="bilinear", align_corners=False)
            h = block_fn(resnet, attentions[j] if attentions is not None else None, torch.cat([h, skip], dim=1))
            if j == 1 and i < last:  # ldm output blocks 1, 4, 7: before the level's upsampler
                taps.append(h)
        if block.upsamplers is not None:
            h = block.upsamplers[0](h)
    taps.append(h)  # ldm output block 11
    return taps[::-1]


def unet_out_head(unet: UNet2DConditionModel, f0: torch.Tensor) -> torch.Tensor:
    """SD's own output head (GroupNorm, SiLU, conv3x3 -> 4 ch): maps f0 back to a latent for the next step."""
    return unet.conv_out(_norm_act(unet.conv_norm_out, f0, silu=True))


class VAEEncoder(torch.nn.Module):
    """SD VAE encoder + quant_conv; returns the posterior mean (no 0.18215 scale, never a sample).

    post_quant_conv is never run; it is kept so that official files round-trip every key.
    """

    def __init__(self, config: dict):
        super().__init__()
        self.encoder = Encoder(**config)
        z = 2 * config["out_channels"]
        self.quant_conv = torch.nn.Conv2d(z, z, 1)
        self.post_quant_conv = torch.nn.Conv2d(config["out_channels"], config["out_channels"], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        moments = self.quant_conv(self.encoder(x))
        return moments.chunk(2, dim=1)[0]
