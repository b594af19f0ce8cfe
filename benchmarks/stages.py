"""A task model's forward cut into separately callable stages, for per-stage timing.

    staged = Staged(model)
    out = staged.run(images)                      # == model(images), the same ops in the same order
    out = staged.run(images, mark=lambda name: ...)  # mark(name) is called after each stage

Stages: `vae_encode` (input check, [0, 1] -> [-1, 1], resize to the encoder size, VAE encoder), `unet_pass1` ..
`unet_passR` (pass k > 1 starts with SD's output head mapping f0 back to a latent; each pass includes its prompt
adapter), `neck` (features -> prompt rearrangement), `head` (task head with its resizes).
Each stage is `fn(state) -> new state` (dicts, never mutated), so one stage can be re-run on a saved state.
"""
from __future__ import annotations

import torch

from mp_deploy.models import _check_images, _resize
from mp_deploy.unet import unet_features, unet_out_head


class Staged:
    def __init__(self, model):
        self.model = model
        self.task = model.task
        steps = model.backbone.refine_steps
        self.stages = [("vae_encode", self.encode)]
        self.stages += [(f"unet_pass{k + 1}", self._unet_pass(k)) for k in range(steps)]
        self.stages += [("neck", self.neck), ("head", self.head)]

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.stages]

    def encode(self, s: dict) -> dict:
        images = s["images"]
        _check_images(images)
        h, w = images.shape[-2:]
        x = images * 2 - 1
        if self.task != "seg":
            x = _resize(x, self.model.encoder_size(h, w))
        return {"hw": (h, w), "batch": x.shape[0], "latent": self.model.backbone.encode(x)}

    def _unet_pass(self, step: int):
        def unet_pass(s: dict) -> dict:
            backbone = self.model.backbone
            latent = s["latent"] if step == 0 else unet_out_head(backbone.unet, s["features"][0])
            emb = backbone.step_embeddings[step].unsqueeze(0).expand(s["batch"], -1)
            prompts = backbone.prompts(step, s["batch"])
            features = unet_features(backbone.unet, latent, emb, prompts)
            return {"hw": s["hw"], "batch": s["batch"], "features": features, "prompts": prompts}

        unet_pass.__name__ = f"unet_pass{step + 1}"
        return unet_pass

    def neck(self, s: dict) -> dict:
        h, w = s["hw"]
        maps = self.model.neck(s["features"], s["prompts"])
        if self.task == "pose":
            maps = _resize(maps, (h // 8, w // 8))
        return {"hw": s["hw"], "maps": maps}

    def head(self, s: dict) -> dict:
        h, w = s["hw"]
        if self.task == "depth":
            out = self.model.head(_resize(s["maps"], (h // 8, w // 8)))
        elif self.task == "seg":
            out = _resize(self.model.decode_head(s["maps"]), (h, w))
        else:
            out = self.model.head(s["maps"])
        return {"out": out}

    def states(self, images: torch.Tensor) -> dict:
        """name -> the state each stage takes as input (for timing one stage alone)."""
        s, inputs = {"images": images}, {}
        with torch.no_grad():
            for name, fn in self.stages:
                inputs[name] = s
                s = fn(s)
        return inputs

    def run(self, images: torch.Tensor, mark=None) -> torch.Tensor:
        s = {"images": images}
        with torch.no_grad():
            for name, fn in self.stages:
                s = fn(s)
                if mark is not None:
                    mark(name)
        return s["out"]

    __call__ = run
