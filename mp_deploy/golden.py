"""Golden parity against the reference implementation.

    python -m mp_deploy.golden --checkpoint CKPT --golden FILE

FILE (from ../shared/golden) holds inputs, intermediate tensors and outputs of the reference at the weights
that `make_weights.py` writes into CKPT (official layout). The model and its settings come from FILE's
metadata; CKPT goes through the official loader. Prints the relative L2 error of every stored tensor
(centred for `pred_d`) and exits non-zero when any is above the tolerance or not finite.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from mp_deploy.checkpoints import load_official

TOLERANCE = 1e-4  # README of the golden files: reference noise <= 8e-6, real slips >= 2e-5


def rel_l2(out: torch.Tensor, ref: torch.Tensor, centred: bool = False) -> float:
    """||out - ref|| / ||ref|| (centred: / ||ref - mean(ref)||, for outputs with a large mean like depth)."""
    out, ref = out.double().cpu(), ref.double().cpu()
    denom = (ref - ref.mean()) if centred else ref
    return ((out - ref).norm() / denom.norm().clamp_min(1e-30)).item()


def read_golden(path: str):
    with safe_open(path, "pt") as f:
        meta = f.metadata() or {}
    tensors = load_file(path)
    inputs = [k.split(".", 1)[0] for k in tensors if k.endswith(".input")]
    return meta, tensors, inputs


def model_for(meta: dict, checkpoint: str):
    """-> (model, run(model, x, trace)) as the golden file's metadata says."""
    kind = meta.get("model", "")
    steps = int(meta["refine_step"])
    if "Depth" in kind:
        model = load_official(checkpoint, preset="nyu", max_depth=float(meta["max_depth"]),
                              resize_scale=int(meta["resize_scale"]))
        run = lambda m, x, t: m(x, trace=t)  # noqa: E731
    elif "Seg" in kind:
        model = load_official(checkpoint, preset="ade20k", allow_missing_heads=True)
        print("segmentation backbone golden: decode/auxiliary heads absent from the checkpoint, as expected")
        run = lambda m, x, t: m.prompt_maps(x, trace=t)  # noqa: E731  (input is already in [-1, 1])
    else:
        raise SystemExit(f"golden file metadata names an unknown model: {kind!r}")
    if model.preset.refine_steps != steps:
        raise SystemExit(f"checkpoint has {model.preset.refine_steps} refinement steps, golden file expects {steps}")
    return model, run


def check(checkpoint: str, golden: str, tolerance: float = TOLERANCE, device: str = "cpu") -> bool:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    meta, tensors, inputs = read_golden(golden)
    t0 = time.perf_counter()
    model, run = model_for(meta, checkpoint)
    model = model.to(device)
    settings = (f"max_depth {model.preset.max_depth}, resize_scale {model.preset.resize_scale}, "
                if model.task == "depth" else "")
    print(f"loaded {checkpoint} ({model.task}, {settings}R={model.preset.refine_steps}) "
          f"in {time.perf_counter() - t0:.1f} s")
    ok = True
    worst = 0.0
    print(f"{'tensor':40s} {'shape':>20s} {'rel L2':>10s}  status")
    for name in inputs:
        trace: dict = {}
        t0 = time.perf_counter()
        with torch.no_grad():
            run(model, tensors[f"{name}.input"].to(device), trace)
        elapsed = time.perf_counter() - t0
        for key in sorted(k for k in tensors if k.startswith(name + ".") and not k.endswith(".input")):
            stored = tensors[key]
            tag = key.split(".", 1)[1]
            if tag not in trace:
                print(f"{key:40s} {'':>20s} {'':>10s}  not produced")
                continue
            out = trace[tag].detach().float().cpu()
            if out.shape != stored.shape:
                print(f"{key:40s} {str(tuple(out.shape)):>20s} {'':>10s}  FAIL shape, expected {tuple(stored.shape)}")
                ok = False
                continue
            err = rel_l2(out, stored, centred=(tag == "pred_d"))
            finite = bool(torch.isfinite(out).all())
            good = finite and err <= tolerance
            ok &= good
            worst = max(worst, err)
            status = "ok" if good else ("FAIL not finite" if not finite else "FAIL")
            print(f"{key:40s} {str(tuple(out.shape)):>20s} {err:10.2e}  {status}")
        print(f"  ({name}: forward {elapsed:.1f} s)")
    print(f"{'PASS' if ok else 'FAIL'}: worst relative L2 {worst:.2e} (tolerance {tolerance:.0e})")
    return ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="weights in the official layout (make_weights.py output)")
    ap.add_argument("--golden", required=True, help="golden .safetensors file")
    ap.add_argument("--tolerance", type=float, default=TOLERANCE)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args(argv)
    return 0 if check(a.checkpoint, a.golden, a.tolerance, a.device) else 1


if __name__ == "__main__":
    sys.exit(main())
