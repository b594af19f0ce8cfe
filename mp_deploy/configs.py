"""Model sizes and the preset record, as data. Imports nothing of ours but errors: every layer can read it.

Every model takes RGB images in [0, 1] (B, 3, H, W) and maps them to [-1, 1] itself (the reference
depth model does x*2-1; the reference seg pipeline normalises with mean = std = 127.5, the same map).

A model is (size, preset): the size fixes the Stable Diffusion backbone (full SD-1.5 or a tiny one for
tests); the preset carries what the official checkpoints do not store (task, max depth, resize scale,
refinement steps, classes). The presets themselves belong to their tasks (mp_deploy/tasks/<task>.py); the
registry (mp_deploy.tasks) finds, reads and checks them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from mp_deploy.errors import UsageError

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


def get_size(name: str) -> SizeConfig:
    if name not in SIZES:
        raise UsageError(f"unknown model size {name!r}; choose one of {sorted(SIZES)}")
    return SIZES[name]


def preset_to_dict(p: Preset) -> dict:
    return asdict(p)
