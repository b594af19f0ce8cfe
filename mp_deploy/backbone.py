"""The Meta Prompts backbone: the VAE encoder, the UNet shared by the R refinement passes, the learned step
embeddings and prompts. The model (mp_deploy.models) runs them as its stages."""
from __future__ import annotations

import torch
from torch import nn

from mp_deploy.configs import SizeConfig
from mp_deploy.unet import VAEEncoder, build_unet, unet_features, unet_out_head


class MetaPrompts(nn.Module):
    """Learned prompts used as cross-attention context.

    depth: one (N, D) set per step, each through its own Linear-GELU-Linear adapter whose output replaces it;
    seg/pose: one shared (N, D) set for every step, no adapter.
    """

    def __init__(self, steps: int, num: int, dim: int, per_step: bool):
        super().__init__()
        self.per_step = per_step
        self.embeddings = nn.Parameter(torch.randn(steps if per_step else 1, num, dim))
        self.adapters = (
            nn.ModuleList(nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim)) for _ in range(steps))
            if per_step else None
        )

    def forward(self, step: int, batch: int) -> torch.Tensor:
        if self.per_step:
            p = self.adapters[step](self.embeddings[step])
        else:
            p = self.embeddings[0]
        return p.unsqueeze(0).expand(batch, -1, -1)  # plain broadcast (the reference's B == 50 quirk is not kept)


class MetaPromptsBackbone(nn.Module):
    def __init__(self, size: SizeConfig, refine_steps: int, num_prompts: int, per_step_prompts: bool):
        super().__init__()
        self.refine_steps = refine_steps
        self.grad_checkpointing = False  # training: recompute UNet blocks in the backward pass (less memory)
        self.vae = VAEEncoder(size.vae).requires_grad_(False)  # frozen, as in the reference
        self.unet = build_unet(size.unet)
        self.step_embeddings = nn.Parameter(torch.randn(refine_steps, size.embed_dim))
        self.prompts = MetaPrompts(refine_steps, num_prompts, size.prompt_dim, per_step_prompts)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x in [-1, 1] -> latent posterior mean. The VAE is frozen in the reference."""
        return self.vae(x)

    def unet_pass(self, step: int, latent: torch.Tensor):
        """One pass of the recurrent refinement: the shared UNet with step `step`'s embedding and prompts.
        -> ([f0, f1, f2, f3] decoder features at strides 8, 16, 32, 64 of the image, prompts (B, N, D))."""
        batch = latent.shape[0]
        emb = self.step_embeddings[step].unsqueeze(0).expand(batch, -1)
        prompts = self.prompts(step, batch)
        return unet_features(self.unet, latent, emb, prompts, self.grad_checkpointing), prompts

    def next_latent(self, f0: torch.Tensor) -> torch.Tensor:
        """The next pass's input: SD's own output head applied to the last pass's stride-8 feature."""
        return unet_out_head(self.unet, f0)
