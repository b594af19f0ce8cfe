"""Checkpoints: official Meta Prompts files, Stable Diffusion 1.5 weights, and our own safetensors.

Official layouts (reference repo): depth `{'model': state_dict}` with `encoder.`-prefixed ldm keys;
segmentation (mmcv) `{'meta', 'state_dict', ...}` without prefix. The ldm UNet / VAE keys are converted with
diffusers' own converters; the way back (our model -> official) is the inverse rename, checked against the
diffusers converter every time it runs. Every load is strict: a wrong file names its missing, unexpected
and mis-shaped keys.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import replace
from pathlib import Path

import torch
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from mp_deploy import tasks
from mp_deploy.configs import Preset, get_size, preset_to_dict
from mp_deploy.errors import UserError
from mp_deploy.models import MetaPromptsModel
from mp_deploy.tasks import build_model, get_preset, preset_from_dict
from mp_deploy.files import atomic_write, parse_json, special_kind

FORMAT_TAG = "mp-deploy/1"
_LDM_UNET = "model.diffusion_model."


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be read or does not fit the model."""


# ---------------------------------------------------------------- files

def _check_file(path) -> Path:
    """`path` if it is a regular file (never a FIFO or device, which would block or stream forever)."""
    found = special_kind(path)
    if found == "missing":
        raise CheckpointError(f"checkpoint not found: {path}")
    if found is not None:
        raise CheckpointError(f"checkpoint {path}: not a regular file ({found})")
    return Path(path)


def safetensors_metadata(path: str | os.PathLike) -> dict:
    """The string metadata of a .safetensors file (CheckpointError when it cannot be read)."""
    _check_file(path)
    try:
        with safe_open(str(path), "pt") as f:
            return f.metadata() or {}
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint not found: {path}") from None
    except Exception as e:  # SafetensorError, OSError, and whatever a garbage header raises
        raise CheckpointError(f"cannot read checkpoint {path} (truncated or corrupt?): {type(e).__name__}: {e}") from e


def read_state_dict(path: str | os.PathLike) -> tuple[dict, dict]:
    """-> (flat state dict, metadata). Reads .safetensors or torch files (weights_only: no pickled code runs),
    unwrapping {'model': ...} (official depth) and {'state_dict': ...} (mmcv / official seg, SD .ckpt)."""
    path = _check_file(path)
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path)), safetensors_metadata(path)
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except (SafetensorError, RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"cannot read checkpoint {path} (truncated or corrupt?): {e}") from e
    except Exception as e:  # pickle.UnpicklingError and friends
        raise CheckpointError(f"cannot read checkpoint {path} (truncated, corrupt or not a torch file?): "
                              f"{type(e).__name__}: {e}") from e
    meta = {}
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    elif isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        meta = obj.get("meta") or {}
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} holds no state dict of tensors")
    # DDP / DataParallel prefix, as the reference's test.py strips it
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj, meta


# ---------------------------------------------------------------- strict loading

def _describe(names, limit=12) -> str:
    names = sorted(names)
    more = f" ... (+{len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def check_keys(expected: dict[str, torch.Size], given: dict[str, torch.Tensor], allow_missing=(),
               source: str = "checkpoint") -> None:
    """Raise CheckpointError naming missing / unexpected / mis-shaped keys (prefixes in allow_missing may be absent)."""
    missing = [k for k in expected if k not in given and not k.startswith(tuple(allow_missing))]
    unexpected = [k for k in given if k not in expected]
    shapes = [f"{k}: {tuple(given[k].shape)} in file, {tuple(expected[k])} in model"
              for k in expected if k in given and tuple(given[k].shape) != tuple(expected[k])]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_describe(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_describe(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} mis-shaped key(s): {_describe(shapes)}")
    if problems:
        raise CheckpointError(f"{source} does not fit the model: " + "; ".join(problems))


def _materialize(model: torch.nn.Module) -> None:
    """Give modules that were left on the meta device (allowed-missing keys) fresh default-initialised tensors."""
    for module in model.modules():
        own = list(module.parameters(recurse=False)) + list(module.buffers(recurse=False))
        if any(t.is_meta for t in own):
            module.to_empty(device="cpu", recurse=False)
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
            elif hasattr(module, "reset_running_stats"):
                module.reset_running_stats()


def load_into(model: MetaPromptsModel, state: dict, allow_missing=(), source: str = "checkpoint") -> MetaPromptsModel:
    """Strict load (assign=True, so a meta-device model takes the tensors without a copy). Floating-point
    tensors of another precision (fp16/bf16 files) are cast to the model's; NaN or inf weights are refused."""
    own = model.state_dict()
    check_keys({k: v.shape for k, v in own.items()}, state, allow_missing, source)
    kinds = [f"{k}: {v.dtype} in file, {own[k].dtype} in model" for k, v in state.items()
             if v.is_floating_point() != own[k].is_floating_point()]
    if kinds:
        raise CheckpointError(f"{source}: {len(kinds)} tensor(s) of the wrong kind: {_describe(kinds)}")
    state = {k: v.to(own[k].dtype) if v.dtype != own[k].dtype else v for k, v in state.items()}
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{source}: {len(bad)} tensor(s) hold NaN or inf: {_describe(bad)}")
    model.load_state_dict(state, strict=False, assign=True)
    _materialize(model)
    return model.eval()


# ---------------------------------------------------------------- ldm <-> diffusers (UNet, VAE)

_RESNET_TO_LDM = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                  "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_VAE_ATTN_TO_LDM = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _resnet(rest: str) -> str:
    name, _, tail = rest.partition(".")
    return f"{_RESNET_TO_LDM[name]}.{tail}"


def unet_key_to_ldm(key: str, layers_per_block: int, has_attn_up: list[bool]) -> str:
    n = layers_per_block + 1
    if m := re.match(r"conv_in\.(.*)", key):
        return f"input_blocks.0.0.{m[1]}"
    if m := re.match(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
        return f"input_blocks.{1 + int(m[1]) * n + int(m[2])}.0.{_resnet(m[3])}"
    if m := re.match(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", key):
        return f"input_blocks.{1 + int(m[1]) * n + int(m[2])}.1.{m[3]}"
    if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
        return f"input_blocks.{(int(m[1]) + 1) * n}.0.op.{m[2]}"
    if m := re.match(r"mid_block\.resnets\.(\d)\.(.*)", key):
        return f"middle_block.{2 * int(m[1])}.{_resnet(m[2])}"
    if m := re.match(r"mid_block\.attentions\.0\.(.*)", key):
        return f"middle_block.1.{m[1]}"
    if m := re.match(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
        return f"output_blocks.{int(m[1]) * n + int(m[2])}.0.{_resnet(m[3])}"
    if m := re.match(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", key):
        return f"output_blocks.{int(m[1]) * n + int(m[2])}.1.{m[3]}"
    if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
        b = int(m[1])
        return f"output_blocks.{b * n + layers_per_block}.{2 if has_attn_up[b] else 1}.conv.{m[2]}"
    if m := re.match(r"conv_norm_out\.(.*)", key):
        return f"out.0.{m[1]}"
    if m := re.match(r"conv_out\.(.*)", key):
        return f"out.2.{m[1]}"
    if m := re.match(r"time_embedding\.linear_(\d)\.(.*)", key):
        return f"time_embed.{2 * (int(m[1]) - 1)}.{m[2]}"
    raise KeyError(f"no ldm name for UNet key {key}")


def vae_key_to_ldm(key: str) -> str:
    k = key
    k = re.sub(r"down_blocks\.(\d+)\.resnets\.(\d+)\.", r"down.\1.block.\2.", k)
    k = re.sub(r"down_blocks\.(\d+)\.downsamplers\.0\.", r"down.\1.downsample.", k)
    k = re.sub(r"mid_block\.resnets\.(\d)\.", lambda m: f"mid.block_{int(m[1]) + 1}.", k)
    if m := re.match(r"(encoder\.)mid_block\.attentions\.0\.(.*)\.(weight|bias)$", k):
        return f"{m[1]}mid.attn_1.{_VAE_ATTN_TO_LDM[m[2]]}.{m[3]}"
    k = k.replace("conv_shortcut", "nin_shortcut").replace("conv_norm_out", "norm_out")
    return k


def unet_from_ldm(ldm: dict, layers_per_block: int = 2) -> dict:
    """ldm UNet keys (no prefix) -> diffusers keys, with diffusers' converter; every tensor must be consumed."""
    out = convert_ldm_unet_checkpoint({_LDM_UNET + k: v for k, v in ldm.items()}, {"layers_per_block": layers_per_block})
    if len(out) != len(ldm):
        used = {id(v) for v in out.values()}
        lost = [k for k, v in ldm.items() if id(v) not in used]
        raise CheckpointError(f"UNet keys not understood by the ldm->diffusers converter: {_describe(lost)}")
    return out


def vae_from_ldm(ldm: dict) -> dict:
    out = convert_ldm_vae_checkpoint(ldm, {"down_block_types": [0] * 4, "up_block_types": [0] * 4})
    if len(out) != len(ldm):
        used = {v.data_ptr() for v in out.values()}
        lost = [k for k, v in ldm.items() if v.data_ptr() not in used]
        raise CheckpointError(f"VAE keys not understood by the ldm->diffusers converter: {_describe(lost)}")
    return out


def unet_to_ldm(state: dict, layers_per_block: int, has_attn_up: list[bool]) -> dict:
    ldm = {unet_key_to_ldm(k, layers_per_block, has_attn_up): v for k, v in state.items()}
    back = unet_from_ldm(ldm, layers_per_block)  # the inverse must agree with diffusers' own converter
    if set(back) != set(state) or any(back[k] is not state[k] for k in state):
        raise AssertionError("UNet diffusers->ldm rename disagrees with diffusers' converter")
    return ldm


def vae_to_ldm(state: dict) -> dict:
    ldm = {}
    for k, v in state.items():
        name = vae_key_to_ldm(k)
        ldm[name] = v[:, :, None, None] if ".mid.attn_1." in name and v.dim() == 2 else v
    back = vae_from_ldm(ldm)
    if set(back) != set(state) or any(not torch.equal(back[k], state[k]) for k in state):
        raise AssertionError("VAE diffusers->ldm rename disagrees with diffusers' converter")
    return ldm


# ---------------------------------------------------------------- official <-> ours

def official_layout(task: str):
    """The reference's checkpoint layout of `task` (CheckpointError when it released none)."""
    layout = tasks.get(task).official
    if layout is None:
        raise CheckpointError(f"the reference has no official {task} checkpoint layout")
    return layout


def detect_task(state: dict) -> str:
    """The task of an official checkpoint, from where its UNet keys are (each task's layout prefix)."""
    official = [t for t in tasks.all_tasks() if t.official is not None]
    for t in sorted(official, key=lambda t: -len(t.official.prefix)):  # the longest prefix first
        if any(k.startswith(f"{t.official.prefix}unet.unet.diffusion_model.") for k in state):
            return t.name
    expected = " or ".join(f"`{t.official.prefix}unet.unet.diffusion_model.*` ({t.name})" for t in official)
    raise CheckpointError(f"not an official Meta Prompts checkpoint: no {expected} keys")


def official_refine_steps(state: dict, task: str) -> int:
    pat = re.compile(rf"^{re.escape(official_layout(task).prefix)}t(\d+)$")
    steps = sorted(int(m[1]) for k in state if (m := pat.match(k)))
    if not steps or steps != list(range(1, len(steps) + 1)):
        raise CheckpointError(f"official {task} checkpoint: step embeddings t1..tR missing or not contiguous "
                              f"(found {steps})")
    return len(steps)


def official_to_ours(state: dict, task: str, layers_per_block: int = 2) -> tuple[dict, dict]:
    """-> (our state dict, unused official tensors kept for the way back). Aliases of the UNet output head
    (`cross_unet_conv*`) must equal it."""
    layout = official_layout(task)
    p = layout.prefix
    unet_p, vae_p = f"{p}unet.unet.diffusion_model.", f"{p}encoder_vq."
    ours, unet, vae, extras, steps, prompts = {}, {}, {}, {}, {}, {}
    aliases = {}
    for k, v in state.items():
        head = next((h for h in layout.head_renames if k.startswith(h)), None)
        if head is not None:  # the depth head: decoder.* -> head.decoder.*, ...
            ours[layout.head_renames[head] + k[len(head):]] = v
            continue
        if not k.startswith(p):
            ours[k] = v  # left as is: check_keys reports it as unexpected
            continue
        r = k[len(p):]
        if k.startswith(unet_p):
            sub = k[len(unet_p):]
            if sub.startswith("time_embed."):
                extras[k] = v  # seg files keep SD's time embedding; the learned step embeddings replace it
            else:
                unet[sub] = v
        elif k.startswith(vae_p):
            vae[k[len(vae_p):]] = v
        elif m := re.fullmatch(r"t(\d+)", r):
            steps[int(m[1])] = v
        elif m := re.fullmatch(r"meta_prompts(\d*)", r):
            prompts[int(m[1] or 1)] = v
        elif m := re.fullmatch(r"text_adapter(\d+)\.fc\.(.*)", r):
            ours[f"backbone.prompts.adapters.{int(m[1]) - 1}.{m[2]}"] = v
        elif m := re.fullmatch(r"cross_unet_conv\d+\.([02])\.(.*)", r):
            aliases[k] = (f"out.{m[1]}.{m[2]}", v)
        elif m := re.fullmatch(r"upconv(\d)\.(.*)", r):
            ours[f"neck.upconvs.{int(m[1]) - 1}.{m[2]}"] = v
        elif r.startswith(("layer1.", "layer2.", "layer3.", "layer4.", "out_layer.")):
            ours[f"neck.{r}"] = v
        elif r.startswith("sd_model."):
            extras[k] = v  # diffusion-schedule buffers: never used for perception
        else:
            ours[k] = v
    for k, (target, v) in aliases.items():
        if target not in unet or unet[target].shape != v.shape or not torch.equal(unet[target], v):
            raise CheckpointError(f"{k} should be an alias of the UNet output head {unet_p}{target} but differs")
    if steps:
        ours["backbone.step_embeddings"] = torch.cat([steps[i].reshape(1, -1) for i in sorted(steps)])
    if prompts:
        ours["backbone.prompts.embeddings"] = torch.stack([prompts[i] for i in sorted(prompts)])
    ours.update({f"backbone.unet.{k}": v for k, v in unet_from_ldm(unet, layers_per_block).items()} if unet else {})
    ours.update({f"backbone.vae.{k}": v for k, v in vae_from_ldm(vae).items()} if vae else {})
    return ours, extras


def ours_to_official(model: MetaPromptsModel, extras: dict | None = None) -> dict:
    """Our model -> the official layout of its task (depth or seg), aliases included."""
    task = model.task
    if tasks.get(task).official is None:
        raise ValueError(f"the reference has no official {task} checkpoint layout")
    layout = official_layout(task)
    p = layout.prefix
    unet_cfg = model.size.unet
    has_attn_up = [t.startswith("CrossAttn") for t in unet_cfg["up_block_types"]]
    state = model.state_dict()
    out = {}
    group = lambda prefix: {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}  # noqa: E731
    for i, v in enumerate(state["backbone.step_embeddings"]):
        out[f"{p}t{i + 1}"] = v.reshape(1, -1).clone()
    emb = state["backbone.prompts.embeddings"]
    if model.backbone.prompts.per_step:  # one set per step, each with its adapter (depth)
        for i, v in enumerate(emb):
            out[f"{p}meta_prompts{i + 1}"] = v.clone()
        for k, v in group("backbone.prompts.adapters.").items():
            i, rest = k.split(".", 1)
            out[f"{p}text_adapter{int(i) + 1}.fc.{rest}"] = v
    else:
        out[f"{p}meta_prompts"] = emb[0].clone()
    unet = unet_to_ldm(group("backbone.unet."), unet_cfg["layers_per_block"], has_attn_up)
    out.update({f"{p}unet.unet.diffusion_model.{k}": v for k, v in unet.items()})
    for i in range(2, model.preset.refine_steps + 1):
        for j in ("0", "2"):
            for t in ("weight", "bias"):
                out[f"{p}cross_unet_conv{i}.{j}.{t}"] = unet[f"out.{j}.{t}"].clone()
    out.update({f"{p}encoder_vq.{k}": v for k, v in vae_to_ldm(group("backbone.vae.")).items()})
    for k, v in state.items():
        if k.startswith("neck.upconvs."):
            i, rest = k[len("neck.upconvs."):].split(".", 1)
            out[f"upconv{int(i) + 1}.{rest}"] = v
        elif k.startswith("neck."):
            out[f"{p}{k[len('neck.'):]}"] = v
        elif not k.startswith("backbone."):  # the heads: renamed where the layout renames them
            theirs = next((o for o, ours in layout.head_renames.items() if k.startswith(ours)), None)
            out[theirs + k[len(layout.head_renames[theirs]):] if theirs else k] = v
    out.update(extras or getattr(model, "official_extras", {}) or {})
    return out


def _official_preset(state: dict, task: str, preset: str | Preset | None, **overrides) -> Preset:
    steps = official_refine_steps(state, task)
    layout = official_layout(task)
    name = preset if isinstance(preset, str) else (preset.name if preset else layout.default_preset)
    base = preset if isinstance(preset, Preset) else get_preset(name)
    if base.task != task:
        raise CheckpointError(f"checkpoint is a {task} model but preset {base.name!r} is for {base.task}")
    kw = dict(refine_steps=steps)
    prompts = state.get(f"{layout.prefix}{layout.prompts_key}")
    if prompts is not None:
        kw["num_prompts"] = prompts.shape[0]
    for key, (field_name, dim) in layout.preset_from_shapes.items():  # e.g. the class count of the seg head
        if key in state:
            kw[field_name] = state[key].shape[dim]
    kw.update(overrides)
    return replace(base, **kw)


def load_official(source, preset: str | Preset | None = None, size: str = "sd15", allow_missing_heads=False,
                  **preset_overrides) -> MetaPromptsModel:
    """Load an official Meta Prompts file (depth `{'model': sd}` or mmcv seg `{'state_dict': sd}`, or a flat
    state dict / safetensors in that layout). The official files do not store max_depth / resize_scale: they
    come from the preset (depth default nyu; pass preset='kitti' or max_depth=...). Refinement steps, prompt
    count and class count are read from the file. `allow_missing_heads` lets the seg heads be absent."""
    state, _ = read_state_dict(source) if not isinstance(source, dict) else (source, {})
    task = detect_task(state)
    p = _official_preset(state, task, preset, **preset_overrides)
    size = get_size(size)
    ours, extras = official_to_ours(state, task, size.unet["layers_per_block"])
    model = build_model(preset=p, size=size, init=False)
    allow = ("decode_head.", "auxiliary_head.") if allow_missing_heads else ()
    load_into(model, ours, allow_missing=allow, source=f"official {task} checkpoint")
    model.official_extras = extras
    return model


def save_official(model: MetaPromptsModel, path) -> None:
    """Write our model in the official layout (depth: {'model': sd}; seg: mmcv {'meta', 'state_dict'})."""
    sd = ours_to_official(model)
    wrapper = official_layout(model.task).wrapper
    obj = {"meta": {}, "state_dict": sd} if wrapper == "state_dict" else {wrapper: sd}
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


# ---------------------------------------------------------------- our own checkpoints

def save_checkpoint(model: MetaPromptsModel, path, dtype: torch.dtype | None = None) -> None:
    """safetensors with the model's task, size and preset as metadata; written atomically. `dtype` (e.g.
    torch.float16 for shipped weights) casts the floating-point parameters; loading casts them back. Buffers
    (BatchNorm running statistics) keep their dtype: a running variance can exceed fp16's range."""
    meta = {"format": FORMAT_TAG, "task": model.task, "size": model.size.name,
            "preset": json.dumps(preset_to_dict(model.preset))}
    params = {k for k, _ in model.named_parameters()}
    state = {k: (v.to(dtype) if dtype is not None and k in params and v.is_floating_point() else v).detach()
             .contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=meta))


def checkpoint_preset(meta: dict, path) -> tuple[Preset, str]:
    """(preset, size name) from our checkpoint's metadata, every field checked (CheckpointError names it)."""
    missing = [k for k in ("task", "size", "preset") if k not in meta]
    if missing:
        raise CheckpointError(f"{path}: metadata lacks {', '.join(missing)}")
    try:
        preset = preset_from_dict(parse_json(meta["preset"], "metadata preset"))
        size = get_size(meta["size"]).name
    except UserError as e:
        raise CheckpointError(f"{path}: {e}") from e
    if meta["task"] != preset.task:
        raise CheckpointError(f"{path}: metadata task {meta['task']!r} differs from its preset's task "
                              f"{preset.task!r}")
    return preset, size


def load_checkpoint(path, device=None) -> MetaPromptsModel:
    """Load a file written by save_checkpoint."""
    state, meta = read_state_dict(path)
    if meta.get("format") != FORMAT_TAG:
        raise CheckpointError(f"{path} is not an mp-deploy checkpoint (metadata format {meta.get('format')!r}); "
                              "for official files use load_official")
    preset, size = checkpoint_preset(meta, path)
    model = build_model(preset=preset, size=size, init=False)
    load_into(model, state, source=str(path))
    return model.to(device) if device else model


def load_model(path, preset: str | Preset | None = None, **kw) -> MetaPromptsModel:
    """Ours or official, whichever the file is. Our checkpoints carry their preset: a `preset` that names another
    is a CheckpointError (an official file takes the preset it is given, default its task's)."""
    path = Path(path)
    if path.suffix == ".safetensors" and safetensors_metadata(path).get("format") == FORMAT_TAG:
        own, _ = checkpoint_preset(safetensors_metadata(path), path)
        asked = preset.name if isinstance(preset, Preset) else preset
        if asked not in (None, own.name):
            raise CheckpointError(f"{path} is a model of preset {own.name}, not {asked}: drop the preset (an "
                                  "official file takes one)")
        return load_checkpoint(path)
    return load_official(path, preset=preset, **kw)


# ---------------------------------------------------------------- Stable Diffusion 1.5 weights

def read_sd_weights(path, layers_per_block: int = 2) -> tuple[dict, dict]:
    """SD-1.5 from an original single file (.ckpt / .safetensors, ldm keys) or a diffusers folder
    (unet/, vae/) -> (diffusers UNet state without time_embedding, VAE encoder + quant convs state)."""
    path = Path(path)
    if path.is_dir():
        def part(name):
            for f in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"):
                if (path / name / f).is_file():
                    return read_state_dict(path / name / f)[0]
            raise CheckpointError(f"diffusers folder {path} has no {name}/diffusion_pytorch_model.*")
        unet, vae = part("unet"), part("vae")
    else:
        state, _ = read_state_dict(path)
        ldm_unet = {k[len(_LDM_UNET):]: v for k, v in state.items() if k.startswith(_LDM_UNET)}
        ldm_vae = {k[len("first_stage_model."):]: v for k, v in state.items() if k.startswith("first_stage_model.")}
        if not ldm_unet or not ldm_vae:
            raise CheckpointError(f"{path} is not a Stable Diffusion single-file checkpoint: no "
                                  f"`{_LDM_UNET}*` or `first_stage_model.*` keys")
        ldm_vae = {k: v for k, v in ldm_vae.items() if k.startswith(("encoder.", "quant_conv.", "post_quant_conv."))}
        unet, vae = unet_from_ldm(ldm_unet, layers_per_block), vae_from_ldm(ldm_vae)
    unet = {k: v for k, v in unet.items() if not k.startswith("time_embedding.")}
    vae = {k: v for k, v in vae.items() if k.startswith(("encoder.", "quant_conv.", "post_quant_conv."))}
    return unet, vae


def load_sd_weights(model: MetaPromptsModel, path) -> MetaPromptsModel:
    """Put SD-1.5 UNet + VAE encoder weights into a freshly built model (training start)."""
    unet, vae = read_sd_weights(path, model.size.unet["layers_per_block"])
    for name, part, sub in (("UNet", unet, model.backbone.unet), ("VAE", vae, model.backbone.vae)):
        check_keys({k: v.shape for k, v in sub.state_dict().items()}, part, source=f"Stable Diffusion {name} in {path}")
        sub.load_state_dict(part, strict=True)
    return model
