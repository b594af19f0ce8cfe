"""The three task models. Each takes RGB images (B, 3, H, W) in [0, 1] and returns one tensor:

- MetaPromptsDepth: depth in metres (B, 1, H, W)
- MetaPromptsSeg:   class logits (B, K, H, W)
- MetaPromptsPose:  keypoint heatmaps (B, K, H/4, W/4)
"""
from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

from mp_deploy.backbone import MetaPromptsBackbone
from mp_deploy.configs import DEFAULT_PRESET, Preset, SizeConfig, get_preset, get_size
from mp_deploy.heads.depth import DepthHead, FusionNeck
from mp_deploy.heads.pose import PoseHead
from mp_deploy.heads.seg import FCNHead, SegNeck, UPerHead


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _check_images(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"expected RGB images of shape (B, 3, H, W), got {shape}")
    if not x.is_floating_point():
        raise TypeError(f"expected floating-point images in [0, 1], got dtype {x.dtype}")


class MetaPromptsModel(nn.Module):
    task: str

    def __init__(self, size: SizeConfig, preset: Preset):
        super().__init__()
        self.size = size
        self.preset = preset

    def encoder_size(self, h: int, w: int) -> tuple[int, int]:
        """Size the backbone sees: ((h // 64) + resize_scale) * 64 (depth, pose); seg crops go in as they are."""
        rs = self.preset.resize_scale
        return ((h // 64) + rs) * 64, ((w // 64) + rs) * 64

    def window_prompt_map(self, images: torch.Tensor, trace: dict | None = None) -> torch.Tensor:
        """depth / pose: [0, 1] images -> [-1, 1] at the encoder size -> backbone -> fusion neck, whose
        (B, N, H'/8, W'/8) map is resized back to (h // 8, w // 8) of the window."""
        _check_images(images)
        h, w = images.shape[-2:]
        features, prompts = self.backbone(_resize(images * 2 - 1, self.encoder_size(h, w)), trace)
        prompt_map = self.neck(features, prompts)
        if trace is not None:
            trace["prompt_map"] = prompt_map
        return _resize(prompt_map, (h // 8, w // 8))

    def init_weights(self) -> "MetaPromptsModel":
        """Training init of the reference: trunc-normal(.02) convs/linears; head decoder normal(.001)."""
        for name, m in self.named_modules():
            if name.startswith("backbone.vae") or name.startswith("backbone.unet"):
                continue
            if isinstance(m, (nn.Conv2d, nn.Linear, nn.ConvTranspose2d)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        if hasattr(self, "head"):
            for m in self.head.modules():
                if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                    nn.init.normal_(m.weight, std=0.001)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
        return self


class MetaPromptsDepth(MetaPromptsModel):
    task = "depth"

    def __init__(self, size: SizeConfig, preset: Preset):
        super().__init__(size, preset)
        self.backbone = MetaPromptsBackbone(size, preset.refine_steps, preset.num_prompts, per_step_prompts=True)
        self.neck = FusionNeck(size.feature_channels, size.neck_deconv_channels, size.prompt_dim)
        self.head = DepthHead(preset.num_prompts, size.depth_decoder_channels, size.depth_head_channels,
                              preset.max_depth)

    def forward(self, images: torch.Tensor, trace: dict | None = None) -> torch.Tensor:
        depth = self.head(self.window_prompt_map(images, trace))
        if trace is not None:
            trace["pred_d"] = depth
        return depth

    @staticmethod
    def loss(pred: torch.Tensor, target: torch.Tensor, variance_focus: float = 0.5) -> torch.Tensor:
        """Scale-invariant log loss of the reference: sqrt(mean(d^2) - 0.5 mean(d)^2) over target > 0."""
        valid = target > 0
        d = torch.log(target[valid]) - torch.log(pred[valid])
        return torch.sqrt((d ** 2).mean() - variance_focus * d.mean() ** 2)


class MetaPromptsSeg(MetaPromptsModel):
    task = "seg"

    def __init__(self, size: SizeConfig, preset: Preset):
        super().__init__(size, preset)
        self.backbone = MetaPromptsBackbone(size, preset.refine_steps, preset.num_prompts, per_step_prompts=False)
        self.neck = SegNeck(size.feature_channels, size.prompt_dim)
        dropout = 0.1 if preset.name.startswith("cityscapes") else 0.0
        self.decode_head = UPerHead(preset.num_prompts, size.uper_channels, preset.num_classes, dropout=dropout)
        self.auxiliary_head = FCNHead(preset.num_prompts, size.uper_channels, preset.num_classes, dropout=dropout)

    def encoder_size(self, h: int, w: int) -> tuple[int, int]:
        return h, w

    def prompt_maps(self, x: torch.Tensor, trace: dict | None = None):
        """x already in [-1, 1] (the reference's extract_feat) -> 4 maps at strides 4, 8, 16, 32."""
        features, prompts = self.backbone(x, trace)
        maps = self.neck(features, prompts)
        if trace is not None:
            for i, m in enumerate(maps):
                trace[f"prompt_map{i}"] = m
        return maps

    def forward(self, images: torch.Tensor, trace: dict | None = None) -> torch.Tensor:
        _check_images(images)
        maps = self.prompt_maps(images * 2 - 1, trace)
        return _resize(self.decode_head(maps), images.shape[-2:])

    def loss(self, images: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
        """Cross-entropy of the decode head + 0.4 x the auxiliary head (logits resized to the labels)."""
        maps = self.prompt_maps(images * 2 - 1)
        total = 0.0
        for head, weight in ((self.decode_head, 1.0), (self.auxiliary_head, 0.4)):
            logits = _resize(head(maps), labels.shape[-2:])
            total = total + weight * F.cross_entropy(logits, labels, ignore_index=ignore_index)
        return total


class MetaPromptsPose(MetaPromptsModel):
    task = "pose"

    def __init__(self, size: SizeConfig, preset: Preset):
        super().__init__(size, preset)
        self.backbone = MetaPromptsBackbone(size, preset.refine_steps, preset.num_prompts, per_step_prompts=False)
        self.neck = FusionNeck(size.feature_channels, size.neck_deconv_channels, size.prompt_dim)
        self.head = PoseHead(preset.num_prompts, size.pose_head_channels, preset.num_keypoints)

    def forward(self, images: torch.Tensor, trace: dict | None = None) -> torch.Tensor:
        return self.head(self.window_prompt_map(images, trace))

    @staticmethod
    def loss(heatmaps: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """Mean squared heatmap error; `weight` (B, K) masks invisible keypoints."""
        err = ((heatmaps - target) ** 2).mean(dim=(2, 3))
        if weight is not None:
            err = err * weight
        return err.mean()


MODELS = {"depth": MetaPromptsDepth, "seg": MetaPromptsSeg, "pose": MetaPromptsPose}


def build_model(task: str | None = None, preset: str | Preset | None = None, size: str | SizeConfig = "sd15",
                device=None, dtype=None, init: bool = True, **preset_overrides) -> MetaPromptsModel:
    """Build a model. `init=False` builds on the meta device (fast; every weight must then be loaded with assign)."""
    if preset is None:
        if task is None:
            raise ValueError("give a task (depth, seg, pose) or a preset")
        preset = DEFAULT_PRESET[task]
    if isinstance(preset, str):
        preset = get_preset(preset, **preset_overrides)
    if task is not None and preset.task != task:
        raise ValueError(f"preset {preset.name!r} is for task {preset.task!r}, not {task!r}")
    if isinstance(size, str):
        size = get_size(size)
    cls = MODELS[preset.task]
    if not init:
        with torch.device("meta"):
            return cls(size, preset)
    model = cls(size, preset).init_weights()
    return model.to(device=device, dtype=dtype)


SEEDED_RULE = 3  # bump when seeded_model's weight rule changes: artifact sidecars record it
# the last layer of every residual branch in the VAE encoder and the UNet (ResBlock conv2, attention output,
# transformer proj_out, feed-forward output)
RESIDUAL_BRANCH_OUT = re.compile(r"^backbone\..*\.(conv2|to_out\.0|proj_out|ff\.net\.2)\.weight$")


def seeded_model(task: str, size: str = "tiny", seed: int = 0, **kw) -> MetaPromptsModel:
    """Deterministic random weights (tests and the bundled default until a trained demo model ships).

    Fan-in scaled normals everywhere, as in the golden weight rule, so activations stay at unit scale
    (the training init's tiny head weights give a near-constant output). Residual branches end at half that
    scale, so each block adds less to its skip path, as in trained networks: with full-scale branches the
    tiny pose model's own fp16 rounding reached 4.8e-3 relative L2 (against the 5e-3 fp16 parity rule),
    with half-scale ones 2.8e-3 (CPU, its 256 x 192 window).
    """
    model = build_model(task, size=size, init=False, **kw).to_empty(device="cpu")  # no double init (SD-1.5: 0.9 B)
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "embeddings" in name:
                p.normal_()
            elif p.dim() >= 2:
                p.normal_(0, 1 / math.sqrt(p[0].numel()))
            elif name.endswith("weight"):
                p.normal_(1, 0.1)
            else:
                p.normal_(0, 0.02)
            if RESIDUAL_BRANCH_OUT.match(name):
                p.mul_(0.5)
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
    return model.eval()
