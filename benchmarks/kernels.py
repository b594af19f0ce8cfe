"""Eager PyTorch vs the Triton kernels at the model's real shapes (needs a CUDA GPU).

    python benchmarks/kernels.py [--out PATH] [--reps 100] [--warmup 25]

Per kernel and shape: median microseconds over `reps` timed calls (CUDA events around each call, after
`warmup` untimed ones; L2 is flushed before every timed call, since these kernels are memory-bound and the
inputs would otherwise stay in the H100's 50 MB L2), the speed-up, and the Triton kernel's achieved GB/s
(the minimum bytes: inputs read once + outputs written once, over its time) against a device-to-device copy
measured in the same run. Prints a table and writes JSON (default benchmarks/results/kernels-<gpu>-<date>.json).
The Triton side is the registered op (torch.ops.mp_deploy.*), i.e. what the model calls with kernels on.
"""
import argparse
import datetime
import json
import re
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

FLUSH_BYTES = 256 << 20  # > L2 of any current GPU
COPY_BYTES = 1 << 30  # the copy ceiling's buffer: far larger than L2

# (name, x shape, prompts): the depth neck (stride 8) and the 4 segmentation levels (ADE20K 512 x 512)
NORM_RELU_REARRANGE_SHAPES = [
    ("depth neck", (1, 768, 64, 64), 50),
    ("seg level 1/4", (1, 768, 128, 128), 150),
    ("seg level 1/8", (1, 768, 64, 64), 150),
    ("seg level 1/16", (1, 768, 32, 32), 150),
    ("seg level 1/32", (1, 768, 16, 16), 150),
]
# UNet ResBlock GroupNorm(32) + SiLU inputs at a 512 x 512 image (64 x 64 latents)
GROUP_NORM_SHAPES = [(1, 320, 64, 64), (1, 640, 64, 64), (1, 1280, 64, 64), (1, 640, 32, 32),
                     (1, 1280, 32, 32), (1, 1280, 16, 16), (1, 2560, 8, 8)]
DTYPE = torch.float16


def time_us(fn, reps: int, warmup: int, flush: torch.Tensor) -> float:
    """Median microseconds of fn() on the GPU, L2 flushed before each timed call."""
    for _ in range(warmup):
        fn()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    torch.cuda.synchronize()
    for start, end in zip(starts, ends):
        flush.zero_()  # also keeps the GPU busy while the CPU enqueues fn: launch overhead stays hidden
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return 1000 * statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends))


def copy_gbps(reps: int, warmup: int, flush: torch.Tensor) -> float:
    src = torch.empty(COPY_BYTES // 2, dtype=DTYPE, device="cuda").normal_()
    dst = torch.empty_like(src)
    us = time_us(lambda: dst.copy_(src), reps, warmup, flush)
    return 2 * COPY_BYTES / us / 1e3


def nbytes(*tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def bench_norm_relu_rearrange(args, flush, gen):
    from mp_deploy import ops

    rows = []
    for name, shape, n_prompts in NORM_RELU_REARRANGE_SHAPES:
        batch, channels = shape[:2]
        x = torch.randn(shape, generator=gen, device="cuda").to(DTYPE)
        weight = (1 + 0.1 * torch.randn(channels, generator=gen, device="cuda")).to(DTYPE)
        bias = (0.1 * torch.randn(channels, generator=gen, device="cuda")).to(DTYPE)
        prompts = (torch.randn(batch, n_prompts, channels, generator=gen, device="cuda") * channels ** -0.5).to(DTYPE)

        def eager():
            with ops.use_kernels(False):
                return ops.norm_relu_rearrange(x, weight, bias, 16, 1e-5, prompts)

        def triton():
            return torch.ops.mp_deploy.norm_relu_rearrange(x, weight, bias, 16, 1e-5, prompts)

        out = triton()
        rows.append(_row("norm_relu_rearrange", f"{name} {'x'.join(map(str, shape))} N={n_prompts}", eager, triton,
                         nbytes(x, prompts, weight, bias, out), (out.float() - eager().float()).abs().max().item(),
                         args, flush))
    return rows


def bench_group_norm_act(args, flush, gen):
    rows = []
    for shape in GROUP_NORM_SHAPES:
        channels = shape[1]
        x = torch.randn(shape, generator=gen, device="cuda").to(DTYPE)
        weight = (1 + 0.1 * torch.randn(channels, generator=gen, device="cuda")).to(DTYPE)
        bias = (0.1 * torch.randn(channels, generator=gen, device="cuda")).to(DTYPE)

        def eager():
            return F.silu(F.group_norm(x, 32, weight, bias, 1e-5))

        def triton():
            return torch.ops.mp_deploy.group_norm_act(x, weight, bias, 32, 1e-5, True)

        out = triton()
        rows.append(_row("group_norm_act silu", "x".join(map(str, shape)), eager, triton, nbytes(x, weight, bias, out),
                         (out.float() - eager().float()).abs().max().item(), args, flush))
    return rows


def _row(kernel, shape, eager, triton, moved_bytes, max_diff, args, flush):
    eager_us = time_us(eager, args.reps, args.warmup, flush)
    triton_us = time_us(triton, args.reps, args.warmup, flush)
    return {"kernel": kernel, "shape": shape, "dtype": str(DTYPE).replace("torch.", ""), "eager_us": eager_us,
            "triton_us": triton_us, "speedup": eager_us / triton_us, "bytes": moved_bytes,
            "triton_gbps": moved_bytes / triton_us / 1e3, "eager_gbps": moved_bytes / eager_us / 1e3,
            "max_abs_diff": max_diff}


def print_table(rows, copy: float) -> None:
    header = f"| {'kernel':<20} | {'shape':<40} | {'eager us':>9} | {'triton us':>9} | {'speed-up':>8} | " \
             f"{'GB/s':>7} | {'% of copy':>9} | {'max diff':>9} |"
    print(header)
    print("|" + "|".join("-" * (len(col)) for col in header.split("|")[1:-1]) + "|")
    for r in rows:
        print(f"| {r['kernel']:<20} | {r['shape']:<40} | {r['eager_us']:>9.1f} | {r['triton_us']:>9.1f} | "
              f"{r['speedup']:>7.2f}x | {r['triton_gbps']:>7.0f} | {100 * r['triton_gbps'] / copy:>8.0f}% | "
              f"{r['max_abs_diff']:>9.2e} |")
    print(f"\ncopy ceiling (device-to-device, {COPY_BYTES >> 20} MiB): {copy:.0f} GB/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="JSON path (default benchmarks/results/kernels-<gpu>-<date>.json)")
    parser.add_argument("--reps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=25)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("benchmarks/kernels.py needs a CUDA GPU (the Triton kernels and CUDA-event timing); none found")
    import triton

    import mp_deploy.kernels  # noqa: F401  (registers torch.ops.mp_deploy.*)

    flush = torch.empty(FLUSH_BYTES, dtype=torch.uint8, device="cuda")
    gen = torch.Generator(device="cuda").manual_seed(0)
    copy = copy_gbps(args.reps, args.warmup, flush)
    rows = bench_norm_relu_rearrange(args, flush, gen) + bench_group_norm_act(args, flush, gen)
    for r in rows:
        r["copy_fraction"] = r["triton_gbps"] / copy
    print_table(rows, copy)

    gpu = torch.cuda.get_device_name()
    now = datetime.datetime.now(datetime.timezone.utc)
    out = args.out or Path(__file__).parent / "results" / (
        f"kernels-{re.sub(r'[^A-Za-z0-9]+', '-', gpu).strip('-').lower()}-{now:%Y-%m-%d}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"gpu": gpu, "torch": torch.__version__, "triton": triton.__version__,
                               "cuda": torch.version.cuda, "date": now.isoformat(timespec="seconds"),
                               "reps": args.reps, "warmup": args.warmup, "copy_gbps": copy, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
