"""The resumable training state: one safetensors file (no pickle) written atomically, holding

- `model.*`: the model's state dict (fp32, as trained);
- `optim.<param index>.<name>`: AdamW's per-parameter tensors (step, exp_avg, exp_avg_sq);
- `rng.torch.<rank>` / `rng.cuda.<rank>`: every rank's torch generator states (dropout);
- metadata `state`: JSON of the step, the optimizer's param groups, the counters and the best metric so far.

The data order needs no state: the sampler's order and each sample's augmentation are functions of (seed, epoch,
index), and the step fixes the epoch and the position in it.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from mp_deploy.errors import UserError
from mp_deploy.util import atomic_write

FORMAT = "mp-deploy-train/1"


class ResumeError(UserError):
    """A resume file that cannot be used for this run."""


def save_state(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, rng: list[dict],
               info: dict) -> None:
    """rng: per rank {"torch": ByteTensor, "cuda": ByteTensor or None}; info: JSON-able counters."""
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    for index, values in opt["state"].items():
        for name, value in values.items():
            tensors[f"optim.{index}.{name}"] = torch.as_tensor(value).detach().contiguous()
    for rank, state in enumerate(rng):
        tensors[f"rng.torch.{rank}"] = state["torch"]
        if state.get("cuda") is not None:
            tensors[f"rng.cuda.{rank}"] = state["cuda"]
    tensors = {k: v.cpu() for k, v in tensors.items()}
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in opt["param_groups"]]
    meta = {"format": FORMAT, "state": json.dumps(dict(info, param_groups=groups))}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def read_state(path: Path) -> tuple[dict, dict]:
    """-> (tensors, info) of a file written by save_state."""
    if not path.is_file():
        raise ResumeError(f"nothing to resume: {path} does not exist")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise ResumeError(f"cannot read {path} (truncated or corrupt?): {e}") from None
    if meta.get("format") != FORMAT:
        raise ResumeError(f"{path} is not an mp-deploy training state (format {meta.get('format')!r})")
    return tensors, json.loads(meta["state"])


def restore(tensors: dict, info: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Put the model weights and the optimizer state back (strict: a different model is refused)."""
    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(model_state, strict=True)
    except RuntimeError as e:
        raise ResumeError(f"the saved model does not fit this run's model: {str(e).splitlines()[0]}") from None
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    groups = [dict(g, betas=tuple(g["betas"])) for g in info["param_groups"]]
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError) as e:
        raise ResumeError(f"the saved optimizer state does not fit this run: {e}") from None


def rng_state(device: torch.device) -> dict:
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def set_rng_state(tensors: dict, rank: int, device: torch.device) -> bool:
    """This rank's generators as saved; False when the file has none for it (another number of processes)."""
    key = f"rng.torch.{rank}"
    if key not in tensors:
        return False
    torch.set_rng_state(tensors[key])
    if device.type == "cuda" and f"rng.cuda.{rank}" in tensors:
        torch.cuda.set_rng_state(tensors[f"rng.cuda.{rank}"], device)
    return True
