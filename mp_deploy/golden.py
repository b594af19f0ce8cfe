"""Golden parity against the reference implementation.

    mp-deploy golden --checkpoint CKPT --golden FILE      (or python -m mp_deploy.golden ...)

FILE (from ../shared/golden) holds inputs, intermediate tensors and outputs of the reference at the weights
that `make_weights.py` writes into CKPT (official layout). The model and its settings come from FILE's
metadata; CKPT goes through the official loader. Prints the relative L2 error of every stored tensor
(centred for `pred_d`) and fails when any is above the tolerance or not finite, when a tensor the reference
stores for that model is missing from FILE, when FILE holds a tensor this check does not know, or when nothing
was compared.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from mp_deploy import cli, tasks
from mp_deploy.checkpoints import load_official
from mp_deploy.errors import UsageError
from mp_deploy.models import Trace
from mp_deploy.util import rel_l2, tf32_off

TOLERANCE = 1e-4  # README of the golden files: reference noise <= 8e-6, real slips >= 2e-5


@dataclass
class Row:
    key: str
    shape: tuple | None
    rel_l2: float | None
    status: str  # ok | FAIL ... | missing

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def read_golden(path: str):
    """-> (metadata, tensors, input names) of a golden file; UsageError when it cannot be read."""
    try:
        with safe_open(path, "pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(path)
    except (SafetensorError, OSError) as e:
        raise UsageError(f"cannot read golden file {path}: {e}") from e
    inputs = [k.rsplit(".", 1)[0] for k in tensors if k.endswith(".input")]
    return meta, tensors, inputs


def golden_task(meta: dict, path: str) -> tuple[str, int]:
    """-> (task, refinement steps) from a golden file's metadata (the task whose GoldenSpec.model_word its model
    names)."""
    kind = meta.get("model", "")
    task = next((t.name for t in tasks.all_tasks() if t.golden and t.golden.model_word in kind), None)
    if task is None:
        raise UsageError(f"golden file {path} names an unknown model in its metadata: {kind!r}")
    try:
        return task, int(meta["refine_step"])
    except (KeyError, ValueError):
        raise UsageError(f"golden file {path} has no valid refine_step in its metadata") from None


def expected_tags(task: str, steps: int) -> list[str]:
    """Every tensor the reference stores per input for this model."""
    tags = ["z0", *(f"unet_input_step{k}" for k in range(2, steps + 1)), *Trace.FEATURES]
    return tags + list(tasks.get(task).golden.tags)


def golden_model(meta: dict, checkpoint: str, task: str, steps: int, size: str = "sd15"):
    """The model of a golden file: its checkpoint in the official layout, with the preset fields the file's
    metadata gives (depth: max_depth, resize_scale); heads may be absent where the file stores none."""
    spec = tasks.get(task).golden
    defaults = tasks.get_preset(spec.preset)
    try:
        fields = {name: kind(meta.get(name, getattr(defaults, name))) for name, kind in spec.preset_fields.items()}
    except ValueError:
        raise UsageError(f"golden file metadata has a bad {' or '.join(spec.preset_fields)}: {meta}") from None
    model = load_official(checkpoint, preset=spec.preset, size=size, allow_missing_heads=not spec.heads_stored,
                          **fields)
    if model.task != task:
        raise UsageError(f"{checkpoint} is a {model.task} checkpoint, the golden file is for {task}")
    if model.preset.refine_steps != steps:
        raise UsageError(f"checkpoint has {model.preset.refine_steps} refinement steps, golden file expects {steps}")
    return model


def compare(checkpoint: str, golden: str, tolerance: float = TOLERANCE, device: str = "cpu", size: str = "sd15",
            log=print) -> list[Row]:
    """Run the model on every input of the golden file -> one Row per expected tensor and per unknown one."""
    meta, tensors, inputs = read_golden(golden)
    task, steps = golden_task(meta, golden)
    t0 = time.perf_counter()
    model = golden_model(meta, checkpoint, task, steps, size).to(device)
    spec = tasks.get(task).golden
    settings = "".join(f"{name} {getattr(model.preset, name)}, " for name in spec.preset_fields)
    log(f"loaded {checkpoint} ({task}, {settings}R={steps}) in {time.perf_counter() - t0:.1f} s")
    tags = expected_tags(task, steps)
    known = {f"{name}.{tag}" for name in inputs for tag in tags + ["input"]}
    rows = [Row(key, tuple(tensors[key].shape), None, "FAIL: not a tensor this check knows")
            for key in sorted(set(tensors) - known)]
    for name in inputs:
        x = tensors[f"{name}.input"].to(device)
        trace = Trace()
        t0 = time.perf_counter()
        state = {spec.input: x}  # seg files store the encoder's [-1, 1] input (the reference's extract_feat's)
        with torch.no_grad(), tf32_off():
            model.run_stages(state, trace)
        log(f"  ({name}: forward {time.perf_counter() - t0:.1f} s)")
        for tag in tags:
            key = f"{name}.{tag}"
            if key not in tensors:
                rows.append(Row(key, None, None, "FAIL: missing from the golden file"))
                continue
            stored = tensors[key]
            out = trace.tensors["output" if tag == spec.output_tag else tag].detach().float().cpu()
            if out.shape != stored.shape:
                rows.append(Row(key, tuple(out.shape), None, f"FAIL: shape, expected {tuple(stored.shape)}"))
                continue
            err = rel_l2(out, stored, centred=(tag == spec.output_tag))
            status = "FAIL: not finite" if not torch.isfinite(out).all() else "ok" if err <= tolerance else "FAIL"
            rows.append(Row(key, tuple(out.shape), err, status))
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="weights in the official layout (make_weights.py output)")
    parser.add_argument("--golden", required=True, help="golden .safetensors file")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE,
                        help=f"the largest relative L2 error that passes (default {TOLERANCE:g})")
    cli.add_device(parser, "cpu or cuda (default cpu; fp32 with TF32 off)")
    parser.set_defaults(device="cpu")
    cli.add_model_size(parser, "size of the checkpoint's model (default sd15: the golden files' size)")


def run(args: argparse.Namespace) -> int:
    print(f"{'tensor':40s} {'shape':>20s} {'rel L2':>10s}  status")
    rows = compare(args.checkpoint, args.golden, args.tolerance, args.device, args.model_size or "sd15")
    for r in rows:
        err = "" if r.rel_l2 is None else f"{r.rel_l2:.2e}"
        print(f"{r.key:40s} {str(r.shape or ''):>20s} {err:>10s}  {r.status}")
    compared = [r for r in rows if r.rel_l2 is not None]
    worst = max((r.rel_l2 for r in compared), default=0.0)
    ok = bool(compared) and all(r.ok for r in rows)
    what = f"{len(compared)} tensors compared" if compared else "nothing compared"
    print(f"{'PASS' if ok else 'FAIL'}: {what}, worst relative L2 {worst:.2e} (tolerance {args.tolerance:.0e})")
    return 0 if ok else 1


def main(argv=None) -> int:
    return cli.main(["golden", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
