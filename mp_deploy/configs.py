"""Model sizes and task presets, as data.

Every model takes RGB images in [0, 1] (B, 3, H, W) and maps them to [-1, 1] itself (the reference
depth model does x*2-1; the reference seg pipeline normalises with mean = std = 127.5, the same map).

A model is (size, preset): the size fixes the Stable Diffusion backbone (full SD-1.5 or a tiny one for
tests); the preset carries what the official checkpoints do not store (task, max depth, resize scale,
refinement steps, classes).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

from mp_deploy.errors import UsageError
from mp_deploy.util import check_name

# diffusers UNet2DConditionModel kwargs. attention_head_dim=8 means 8 heads (legacy SD-1.5 naming).
SD15_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    cross_attention_dim=768,
    attention_head_dim=8,
    norm_num_groups=32,
    norm_eps=1e-5,
)

# diffusers vae.Encoder kwargs (the decoder is never used). No 0.18215 scaling anywhere.
SD15_VAE = dict(
    in_channels=3,
    out_channels=4,
    down_block_types=("DownEncoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    norm_num_groups=32,
    double_z=True,
)


@dataclass(frozen=True)
class SizeConfig:
    """Backbone and head widths. `sd15` matches the official checkpoints; `tiny` is a few MB for tests."""

    name: str
    unet: dict
    vae: dict
    neck_deconv_channels: int = 32  # depth/pose neck: deconv stacks to stride 8
    depth_decoder_channels: int = 32
    depth_head_channels: int = 192
    uper_channels: int = 512  # segmentation UPerHead / FCNHead width
    pose_head_channels: int = 256

    @property
    def prompt_dim(self) -> int:  # meta prompts live in the cross-attention space
        return self.unet["cross_attention_dim"]

    @property
    def embed_dim(self) -> int:  # step embeddings replace the time embedding (4 x first block width)
        return 4 * self.unet["block_out_channels"][0]

    @property
    def feature_channels(self) -> tuple[int, int, int, int]:
        """Channels of the 4 decoder taps (strides 8, 16, 32, 64): ob11, ob7, ob4, ob1."""
        c = self.unet["block_out_channels"]
        return (c[0], c[1], c[2], c[3])


SIZES = {
    "sd15": SizeConfig("sd15", SD15_UNET, SD15_VAE),
    "tiny": SizeConfig(
        "tiny",
        # one ResBlock per level keeps the unrolled graph (and CPU export times) small
        unet=dict(SD15_UNET, block_out_channels=(32, 64, 64, 64), cross_attention_dim=32, norm_num_groups=8,
                  attention_head_dim=4, layers_per_block=1),
        vae=dict(SD15_VAE, block_out_channels=(16, 32, 32, 32), norm_num_groups=8, layers_per_block=1),
        neck_deconv_channels=16,
        depth_decoder_channels=16,
        depth_head_channels=32,
        uper_channels=32,
        pose_head_channels=32,
    ),
}


@dataclass(frozen=True)
class Preset:
    """What a task needs beyond the weights. Values follow the reference's training/test scripts."""

    name: str
    task: str  # depth | seg | pose
    refine_steps: int = 3
    num_prompts: int = 50
    # depth
    max_depth: float = 10.0
    resize_scale: int = 1
    png16_scale: float = 1000.0  # depth x this in 16-bit PNGs (the dataset's own convention: NYU mm, KITTI 1/256 m)
    # seg / pose
    num_classes: int = 0
    num_keypoints: int = 0
    dropout: float = 0.0  # before the segmentation heads' classifiers
    # inference window (H, W) used by export and benchmarks by default
    window: tuple[int, int] = (480, 480)


PRESETS = {
    "nyu": Preset("nyu", "depth", max_depth=10.0, resize_scale=1, window=(480, 480)),
    "kitti": Preset("kitti", "depth", max_depth=80.0, resize_scale=2, png16_scale=256.0, window=(352, 352)),
    "ade20k": Preset("ade20k", "seg", num_prompts=150, num_classes=150, window=(512, 512)),
    "cityscapes": Preset("cityscapes", "seg", num_prompts=150, num_classes=19, dropout=0.1, window=(1024, 1024)),
    # Cityscapes model pretrained on Mapillary: one refinement step (reference configs/cityscapes_extra*.py)
    "cityscapes-mapillary": Preset("cityscapes-mapillary", "seg", refine_steps=1, num_prompts=150,
                                   num_classes=19, dropout=0.1, window=(1024, 1024)),
    # Our own design (no official pose model): top-down 256x192 person crops, heatmaps at stride 4.
    "coco": Preset("coco", "pose", num_prompts=64, num_keypoints=17, resize_scale=0, window=(256, 192)),
    # The bundled demo models, trained on our synthetic scenes (mp_deploy.data.synthetic) with the tiny size:
    # small windows that train on a CPU; depth in the NYU range and its mm PNGs, no extra resize (windows are
    # multiples of 64); 7 scene classes; the 17 COCO keypoints on 192x128 person crops.
    "synthetic-depth": Preset("synthetic-depth", "depth", max_depth=10.0, resize_scale=0, window=(128, 128)),
    "synthetic-seg": Preset("synthetic-seg", "seg", num_prompts=150, num_classes=7, window=(128, 128)),
    "synthetic-pose": Preset("synthetic-pose", "pose", num_prompts=64, num_keypoints=17, resize_scale=0,
                             window=(192, 128)),
}

TASKS = ("depth", "seg", "pose")
DEFAULT_PRESET = {"depth": "nyu", "seg": "ade20k", "pose": "coco"}
# the network output of each task, as exported artifacts name it
OUTPUT_NAMES = {"depth": "depth", "seg": "logits", "pose": "heatmaps"}


def get_size(name: str) -> SizeConfig:
    if name not in SIZES:
        raise UsageError(f"unknown model size {name!r}; choose one of {sorted(SIZES)}")
    return SIZES[name]


def get_preset(name: str, **overrides) -> Preset:
    if name not in PRESETS:
        raise UsageError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return replace(PRESETS[name], **overrides) if overrides else PRESETS[name]


def preset_to_dict(p: Preset) -> dict:
    return asdict(p)


def preset_from_dict(d: dict) -> Preset:
    """A Preset from a dict read from a file (checkpoint metadata, sidecar): every field checked, so that a
    wrong one is named instead of failing later."""
    if not isinstance(d, dict):
        raise UsageError(f"a preset must be a JSON object, got {type(d).__name__}")
    known = {f.name: f for f in fields(Preset)}
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise UsageError(f"unknown preset field(s): {', '.join(map(repr, unknown))}")
    missing = [name for name in ("name", "task") if name not in d]
    if missing:
        raise UsageError(f"preset lacks {', '.join(missing)}")
    values = {}
    for name, value in d.items():
        kind = known[name].type
        if kind == "str":
            ok = isinstance(value, str)
        elif kind == "int":
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif kind == "float":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            value = float(value) if ok else value
        else:  # window
            ok = isinstance(value, (list, tuple)) and len(value) == 2 and all(
                isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
            value = tuple(value) if ok else value
        if not ok:
            raise UsageError(f"preset field {name!r} has a wrong value {value!r} (expected {kind})")
        values[name] = value
    try:
        check_name(values["name"], "preset name")
    except ValueError as e:
        raise UsageError(str(e)) from None
    if values["task"] not in TASKS:
        raise UsageError(f"preset task {values['task']!r} is not one of {', '.join(TASKS)}")
    preset = Preset(**values)
    check_preset(preset)
    return preset


def check_preset(p: Preset) -> None:
    """Values a model can be built from: refinement steps and counts at least 1 where the task needs them."""
    if p.refine_steps < 1:
        raise UsageError(f"preset {p.name!r}: refine_steps must be at least 1, got {p.refine_steps}")
    if p.num_prompts < 1:
        raise UsageError(f"preset {p.name!r}: num_prompts must be at least 1, got {p.num_prompts}")
    if p.task == "depth" and not (p.max_depth > 0 and p.png16_scale > 0 and p.resize_scale >= 0):
        raise UsageError(f"preset {p.name!r}: max_depth and png16_scale must be positive, resize_scale >= 0")
    if p.task == "seg" and p.num_classes < 1:
        raise UsageError(f"preset {p.name!r}: num_classes must be at least 1, got {p.num_classes}")
    if p.task == "pose" and p.num_keypoints < 1:
        raise UsageError(f"preset {p.name!r}: num_keypoints must be at least 1, got {p.num_keypoints}")
    if not 0.0 <= p.dropout < 1.0:
        raise UsageError(f"preset {p.name!r}: dropout must be in [0, 1), got {p.dropout}")
