"""The Meta Prompts model: the base class every task model extends (heads/<task>.py: MetaPromptsDepth,
MetaPromptsSeg, MetaPromptsPose), its stages and the hook that looks inside. Build a model through the task
registry: `mp_deploy.tasks.build_model(task, preset, size)` (or `seeded_model` for deterministic random weights).
Each model takes RGB images (B, 3, H, W) in [0, 1] and returns one tensor (its task's raw output).

The forward pass is a list of named stages (`stages()`), each a function from one state dict to the next, that
`forward` runs in turn: `vae_encode`, `unet_pass1` .. `unet_passR`, `neck`, `head`. A hook called after each
stage with its name and state is the one way to look inside: per-stage timing (benchmarks), the reference's
intermediate tensors (`Trace`: golden parity, parity diagnostics). Nothing else re-implements the forward.
"""
from __future__ import annotations

import math
import re
from functools import partial
from typing import Callable, NamedTuple

import torch
from torch import nn

from mp_deploy.configs import Preset, SizeConfig
from mp_deploy.heads.common import resize


class Stage(NamedTuple):
    name: str
    fn: Callable[[dict], dict]


def check_images(x: torch.Tensor) -> None:
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

    # ------------------------------------------------------------ the forward pass, as stages

    def stages(self) -> list[Stage]:
        steps = [Stage(f"unet_pass{k + 1}", partial(self.refine, k)) for k in range(self.preset.refine_steps)]
        return [Stage("vae_encode", self.encode), *steps, Stage("neck", self.rearrange), Stage("head", self.decode)]

    def run_stages(self, state: dict, hook: Callable[[str, dict], None] | None = None) -> dict:
        for stage in self.stages():
            state = stage.fn(state)
            if hook is not None:
                hook(stage.name, state)
        return state

    def forward(self, images: torch.Tensor, hook: Callable[[str, dict], None] | None = None) -> torch.Tensor:
        return self.run_stages({"images": images}, hook)["output"]

    def encoder_size(self, h: int, w: int) -> tuple[int, int]:
        """Size the backbone sees: ((h // 64) + resize_scale) * 64 (depth, pose); seg crops go in as they are."""
        rs = self.preset.resize_scale
        return ((h // 64) + rs) * 64, ((w // 64) + rs) * 64

    def encode(self, s: dict) -> dict:
        """images in [0, 1] -> [-1, 1] at the encoder size -> VAE latent. A state may give `encoder_input`
        instead (already in [-1, 1] at the encoder size: the reference's extract_feat input)."""
        x = s.get("encoder_input")
        if x is None:
            images = s["images"]
            check_images(images)
            hw = tuple(images.shape[-2:])
            x = images * 2 - 1
            if self.encoder_size(*hw) != hw:
                x = resize(x, self.encoder_size(*hw))
        else:
            hw = tuple(x.shape[-2:])
        return {"hw": hw, "latent": self.backbone.encode(x)}

    def refine(self, step: int, s: dict) -> dict:
        """UNet pass `step` (0-based); a pass after the first starts from SD's output head on the last f0."""
        latent = s["latent"] if step == 0 else self.backbone.next_latent(s["features"][0])
        features, prompts = self.backbone.unet_pass(step, latent)
        return {"hw": s["hw"], "latent": latent, "features": features, "prompts": prompts}

    def rearrange(self, s: dict) -> dict:
        """The fusion neck: features -> GroupNorm + ReLU -> dot product with the last pass's prompts."""
        return {"hw": s["hw"], "prompt_map": self.neck(s["features"], s["prompts"])}

    def decode(self, s: dict) -> dict:
        """depth / pose: the stride-8 prompt map resized to (h // 8, w // 8) of the window, then the head."""
        h, w = s["hw"]
        return {"hw": s["hw"], "output": self.head(resize(s["prompt_map"], (h // 8, w // 8)))}

    # ------------------------------------------------------------ training init

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


class Trace:
    """A forward hook that keeps the intermediate tensors under the reference's names (those of the golden
    files), and the task output as `output`:

        trace = Trace(); model(x, hook=trace); trace.tensors["unet_f0_ob11"]
    """

    FEATURES = ("unet_f0_ob11", "unet_f1_ob7", "unet_f2_ob4", "unet_f3_ob1")  # ldm output blocks 11, 7, 4, 1

    def __init__(self):
        self.tensors: dict[str, torch.Tensor] = {}

    def __call__(self, stage: str, state: dict) -> None:
        t = self.tensors
        if stage == "vae_encode":
            t["z0"] = state["latent"]
        elif stage.startswith("unet_pass"):
            step = int(stage[len("unet_pass"):])
            if step > 1:
                t[f"unet_input_step{step}"] = state["latent"]
            t.update(zip(self.FEATURES, state["features"]))
            t["final_prompts"] = state["prompts"]  # the last pass's, once the loop is done
        elif stage == "neck":
            maps = state["prompt_map"]
            if isinstance(maps, torch.Tensor):
                t["prompt_map"] = maps
            else:
                t.update((f"prompt_map{i}", m) for i, m in enumerate(maps))
        elif stage == "head":
            t["output"] = state["output"]


SEEDED_RULE = 3  # bump when seeded_model's weight rule changes: artifact sidecars record it
# the last layer of every residual branch in the VAE encoder and the UNet (ResBlock conv2, attention output,
# transformer proj_out, feed-forward output)
RESIDUAL_BRANCH_OUT = re.compile(r"^backbone\..*\.(conv2|to_out\.0|proj_out|ff\.net\.2)\.weight$")


def seed_weights(model: MetaPromptsModel, seed: int = 0) -> MetaPromptsModel:
    """Deterministic random weights, for tests and speed measurements, on a model built on the meta device.

    Fan-in scaled normals everywhere, as in the golden weight rule, so activations stay at unit scale
    (the training init's tiny head weights give a near-constant output). Residual branches end at half that
    scale, so each block adds less to its skip path, as in trained networks; with full-scale branches fp16
    rounding alone came close to the fp16 parity rule (docs/performance.md).
    """
    model = model.to_empty(device="cpu")  # no double init (SD-1.5: 0.9 B)
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
