"""The resumable training state: one safetensors file (no pickle) written atomically, holding

- `model.*`: the model's state dict (fp32, as trained);
- `optim.<param index>.<name>`: AdamW's per-parameter tensors (step, exp_avg, exp_avg_sq);
- `rng.torch.<rank>` / `rng.cuda.<rank>`: every rank's torch generator states (dropout);
- metadata `state`: JSON of the step, the optimizer's param groups, the counters and the best metric so far.

The data order needs no state: the sampler's order and each sample's augmentation are functions of (seed, epoch,
index), and the step fixes the epoch and the position in it.

Nothing non-finite is written (save_state refuses), and a file is checked whole before anything of it is used
(check_state): every tensor present, of its shape and finite, every counter in range, the metadata read with
mp_deploy.files' bounds; a ResumeError names the file and the first problem.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from mp_deploy.data.base import is_finite_number
from mp_deploy.errors import DataError, MpDeployError, UserError
from mp_deploy.files import atomic_write, parse_json, special_kind

FORMAT = "mp-deploy-train/1"
MAX_COUNT = 1 << 62  # images, skipped samples: counters no run reaches
MAX_PROCESSES = 1 << 16
ADAMW_STATE = ("step", "exp_avg", "exp_avg_sq")


class ResumeError(UserError):
    """A resume file that cannot be used for this run."""


class NonFiniteState(MpDeployError):
    """A training state holding NaN or infinity: it is not written."""


def non_finite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """The names of the floating-point tensors holding NaN or infinity (one device synchronisation)."""
    named = [(k, v) for k, v in tensors.items() if v.is_floating_point() and v.numel()]
    if not named:
        return []
    flags = torch.stack([torch.isfinite(v).all() for _, v in named]).cpu().tolist()
    return [k for (k, _), ok in zip(named, flags) if not ok]


def describe_names(names: list[str], shown: int = 3) -> str:
    """The first `shown` names and how many more."""
    return ", ".join(names[:shown]) + (f" ... (+{len(names) - shown} more)" if len(names) > shown else "")


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
    bad = non_finite(tensors)
    if bad:
        raise NonFiniteState(f"not saving {path}: {len(bad)} tensor(s) hold NaN or inf: "
                             f"{describe_names(bad)}")
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in opt["param_groups"]]
    meta = {"format": FORMAT, "state": json.dumps(dict(info, param_groups=groups))}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def read_state(path: Path) -> tuple[dict, dict]:
    """-> (tensors, info) of a file written by save_state (a regular file; its metadata JSON read with
    mp_deploy.files' bounds). Check them with check_state before use."""
    found = special_kind(path)
    if found == "missing":
        raise ResumeError(f"nothing to resume: {path} does not exist")
    if found is not None:
        raise ResumeError(f"{path}: not a regular file ({found})")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ResumeError(f"cannot read {path} (truncated or corrupt?): {str(e).splitlines()[0] if str(e) else e}") \
            from None
    if meta.get("format") != FORMAT:
        raise ResumeError(f"{path} is not an mp-deploy training state (format {meta.get('format')!r})")
    if not isinstance(meta.get("state"), str):
        raise ResumeError(f"{path}: its metadata lacks the training state")
    try:
        info = parse_json(meta["state"], f"{path} (its state metadata)")
    except DataError as e:
        raise ResumeError(str(e)) from None
    if not isinstance(info, dict):
        raise ResumeError(f"{path}: its state metadata is not a JSON object")
    return tensors, info


def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value) -> bool:
    return is_finite_number(value)


def check_state(path: Path, tensors: dict, info: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                total_steps: int) -> None:
    """ResumeError naming `path` and the first problem, unless the state fits this run whole: the counters in
    range (step <= total_steps), the best so far well formed, the optimizer's groups those of this run's
    optimizer, every model tensor present with its shape and finite, AdamW's state of each parameter complete,
    of the parameter's shape and finite, and the generator states of the size torch takes."""
    def bad(why: str):
        raise ResumeError(f"{path}: {why}")

    def counter(key: str, hi: int, required: bool = True) -> int | None:
        if key not in info:
            if required:
                bad(f"the state lacks {key!r}")
            return None
        value = info[key]
        if not _integer(value) or not 0 <= value <= hi:
            bad(f"{key} {str(value)[:40]!r} is not an integer in [0, {hi}]")
        return value

    step = info.get("step")
    if not _integer(step) or step < 0:
        bad(f"step {str(step)[:40]!r} is not a non-negative integer")
    if step > total_steps:
        bad(f"step {step} is past this run's {total_steps} steps (give --steps {step} or more to go on)")
    counter("images", MAX_COUNT)
    counter("skipped", MAX_COUNT)
    processes = info.get("processes")
    if not _integer(processes) or not 1 <= processes <= MAX_PROCESSES:
        bad(f"processes {str(processes)[:40]!r} is not an integer in [1, {MAX_PROCESSES}]")
    counter("finite_steps", step, required=False)
    counter("skipped_steps", step, required=False)
    best = info.get("best")
    if best is not None:
        if not isinstance(best, dict) or not isinstance(best.get("metric"), str) or \
                not _number(best.get("value")) or not _integer(best.get("step")) or not 0 <= best["step"] <= step:
            bad(f"best {str(best)[:80]!r} is not {{metric: name, value: a finite number, step: 0..{step}}}")
    _check_groups(info.get("param_groups"), optimizer, bad)

    own = model.state_dict()
    for key in tensors:
        if not key.startswith(("model.", "optim.", "rng.")):
            bad(f"unknown tensor {key!r}")
    model_keys = {k[len("model."):] for k in tensors if k.startswith("model.")}
    missing, extra = sorted(set(own) - model_keys), sorted(model_keys - set(own))
    if missing or extra:
        bad(f"the saved model does not fit this run's model (missing {describe_names(missing) or 'none'}; "
            f"unexpected {describe_names(extra) or 'none'})")
    for key, value in own.items():
        saved = tensors["model." + key]
        if tuple(saved.shape) != tuple(value.shape) or saved.is_floating_point() != value.is_floating_point():
            bad(f"model tensor {key} is {saved.dtype} {tuple(saved.shape)}, this run's model has {value.dtype} "
                f"{tuple(value.shape)}")
    params = [p for g in optimizer.param_groups for p in g["params"]]
    seen: dict[int, set] = {}
    for key, value in tensors.items():
        if not key.startswith("optim."):
            continue
        parts = key.split(".", 2)
        if len(parts) != 3 or not parts[1].isdigit() or not int(parts[1]) < len(params) or \
                parts[2] not in ADAMW_STATE:
            bad(f"unknown optimizer tensor {key!r} (this run's AdamW has {len(params)} parameters)")
        index, name = int(parts[1]), parts[2]
        seen.setdefault(index, set()).add(name)
        if not value.is_floating_point():
            bad(f"optimizer tensor {key} is {value.dtype}, not floating point")
        if name == "step":
            if value.numel() != 1 or not math.isfinite(float(value)) or float(value) != int(float(value)) or \
                    not 0 <= float(value) <= step:
                bad(f"optimizer tensor {key} is not a step count in [0, {step}]")
        elif tuple(value.shape) != tuple(params[index].shape):
            bad(f"optimizer tensor {key} has shape {tuple(value.shape)}, its parameter {tuple(params[index].shape)}")
        elif name == "exp_avg_sq" and value.numel() and bool((value < 0).any()):
            bad(f"optimizer tensor {key} holds negative values (a second moment is at least 0)")
    for index, names in sorted(seen.items()):
        if names != set(ADAMW_STATE):
            bad(f"the optimizer state of parameter {index} lacks {', '.join(sorted(set(ADAMW_STATE) - names))}")
    not_finite = non_finite(tensors)
    if not_finite:
        bad(f"{len(not_finite)} tensor(s) hold NaN or inf: {describe_names(not_finite)}")
    sizes = {"torch": torch.get_rng_state().numel()}
    if torch.cuda.is_available():
        sizes["cuda"] = torch.cuda.get_rng_state().numel()
    for key, value in tensors.items():
        if key.startswith("rng."):
            parts = key.split(".")
            if len(parts) != 3 or parts[1] not in ("torch", "cuda") or not parts[2].isdigit() or \
                    not int(parts[2]) < processes:
                bad(f"unknown generator state {key!r} (the run had {processes} processes)")
            want = sizes.get(parts[1])
            if value.dtype != torch.uint8 or value.dim() != 1 or (want is not None and value.numel() != want):
                bad(f"generator state {key} is {value.dtype} {tuple(value.shape)}, not the {want or 'right'} bytes "
                    "torch takes")


def _check_groups(groups, optimizer: torch.optim.Optimizer, bad) -> None:
    """The saved param groups: as many as this run's optimizer has, with the same parameters and settings of the
    same kinds (numbers finite and in range; the others equal to this run's)."""
    own = optimizer.state_dict()["param_groups"]
    if not isinstance(groups, list) or len(groups) != len(own):
        bad(f"param_groups is not a list of {len(own)} optimizer groups")
    for n, (g, mine) in enumerate(zip(groups, own)):
        if not isinstance(g, dict) or set(g) != set(mine):
            bad(f"optimizer group {n} does not have this run's settings ({', '.join(sorted(mine))})")
        if g["params"] != mine["params"]:
            bad(f"optimizer group {n} holds other parameters than this run's")
        for key, value in g.items():
            if key == "params":
                continue
            if key == "betas":
                if not isinstance(value, list) or len(value) != 2 or not all(_number(b) and 0 <= b < 1 for b in value):
                    bad(f"optimizer group {n}: betas {str(value)[:40]} are not two numbers in [0, 1)")
            elif key in ("lr", "initial_lr", "eps", "weight_decay", "lr_mult"):
                if not _number(value) or value < 0 or (key == "eps" and value == 0):
                    bad(f"optimizer group {n}: {key} {str(value)[:40]!r} is not a finite number"
                        + (" above 0" if key == "eps" else " of at least 0"))
            elif _number(mine[key]) and not isinstance(mine[key], bool):
                if not _number(value):
                    bad(f"optimizer group {n}: {key} {str(value)[:40]!r} is not a finite number")
            elif value != mine[key] and not (isinstance(mine[key], tuple) and value == list(mine[key])):
                bad(f"optimizer group {n}: {key} is {str(value)[:40]!r}, this run's optimizer has {mine[key]!r}")


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
