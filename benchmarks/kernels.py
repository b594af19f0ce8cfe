"""Eager PyTorch vs the Triton kernels at the model's real shapes (needs a CUDA GPU).

    python benchmarks/kernels.py [--output benchmarks/results] [--runs 100] [--warmup 10]

Per kernel and shape, median microseconds of `runs` timed runs (mp_deploy.timing, the one timing harness) of:
- device: one call captured in a CUDA graph and replayed, L2 flushed before each replay (these kernels are
  memory-bound and the inputs would otherwise stay in the 50 MB L2). This is the GPU time, as inside the
  AOTInductor / TensorRT / CUDA-graph runtimes; the speed-up and GB/s columns use it.
- call: the Python call itself (eager dispatch + Triton launch), as in eager mode with kernels on.
The Triton side is the launcher (mp_deploy.kernels.group_norm / .norm_relu_rearrange), which the registered
torch op calls. Eager is plain PyTorch in fp16 (F.group_norm keeps fp32 statistics internally): group_norm -> silu, and
group_norm -> relu -> einsum. GB/s counts the minimum bytes (inputs read once, outputs written once).
Ceilings, measured in the same run: a device-to-device copy moving 1 GiB (eager), and an elementwise copy
kernel moving as many bytes as the kernel, timed like it (`size copy`): what launch latency and a small
grid leave of the bandwidth at that size.
Sweeps: the fused rearrangement's launch configurations on the depth neck (and its statistics pass alone,
against eager group_norm), then the fastest of each together; its single launch (`single`, `+` = its default)
on every shape and swept on the neck; GroupNorm's fused and split paths (`*` = the default).
Prints a table and writes <output>/kernels-<gpu>-<date>.json and .csv.
"""
import argparse
import datetime
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from mp_deploy.timing import call_us, copy_ceiling, device_us, flush_buffer, size_copy_gbps, write_results
from mp_deploy.util import slug

CSV_FIELDS = ["kernel", "shape", "dtype", "eager_us", "triton_us", "speedup", "bytes", "triton_gbps", "eager_gbps",
              "eager_call_us", "triton_call_us", "size_copy_gbps", "copy_fraction", "max_abs_diff"]

# (name, x shape, prompts): the depth neck (stride 8) and the 4 segmentation levels (ADE20K 512 x 512)
NORM_RELU_REARRANGE_SHAPES = [
    ("depth neck", (1, 768, 64, 64), 50),
    ("depth neck", (8, 768, 64, 64), 50),
    ("seg level 1/4", (1, 768, 128, 128), 150),
    ("seg level 1/8", (1, 768, 64, 64), 150),
    ("seg level 1/16", (1, 768, 32, 32), 150),
    ("seg level 1/32", (1, 768, 16, 16), 150),
]
# swept on the batch-1 depth neck after the default: (spatial tile, channel block, warps, pipeline stages).
# Both passes were latency-bound on an H200 (12 serial channel blocks, 6 serial stats blocks): fewer,
# larger blocks and deeper pipelines are what this sweep tries.
NECK_CONFIGS = [(32, 64, 4, 3), (64, 64, 4, 3), (16, 128, 4, 3), (16, 128, 8, 3), (16, 256, 8, 2),
                (16, 256, 8, 3), (32, 256, 8, 2), (16, 64, 4, 4), (32, 128, 8, 4)]
# the single launch (one persistent program per SM, a grid barrier between the two phases), swept on the same
# neck after its default: (spatial tile, channel block, warps, pipeline stages); 16-pixel tiles are too many
SINGLE_CONFIGS = [(32, 128, 8, 3), (32, 64, 8, 2), (32, 128, 4, 2), (64, 64, 4, 3), (64, 128, 8, 3)]
# the statistics pass, swept on the same neck after the default: (programs to aim for, block, warps, stages)
STATS_CONFIGS = [(512, 1024, 4, 1), (1024, 1024, 4, 3), (512, 2048, 8, 3), (512, 4096, 8, 2), (1024, 2048, 8, 3),
                 (2048, 2048, 8, 2), (256, 2048, 4, 4)]
# UNet ResBlock GroupNorm(32) + SiLU inputs at a 512 x 512 image (64 x 64 latents), and at batch 8
GROUP_NORM_SHAPES = [(1, 320, 64, 64), (1, 640, 64, 64), (1, 1280, 64, 64), (1, 640, 32, 32),
                     (1, 1280, 32, 32), (1, 1280, 16, 16), (1, 2560, 8, 8), (8, 320, 64, 64), (8, 1280, 16, 16)]
DTYPE = torch.float16


def nbytes(*tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _affine(channels, gen):
    weight = (1 + 0.1 * torch.randn(channels, generator=gen, device="cuda")).to(DTYPE)
    bias = (0.1 * torch.randn(channels, generator=gen, device="cuda")).to(DTYPE)
    return weight, bias


def _neck_inputs(shape, n_prompts, gen):
    """x, GroupNorm weight and bias, prompts (model-like magnitudes) for one rearrangement shape."""
    batch, channels = shape[:2]
    x = torch.randn(shape, generator=gen, device="cuda").to(DTYPE)
    weight, bias = _affine(channels, gen)
    prompts = (torch.randn(batch, n_prompts, channels, generator=gen, device="cuda") * channels ** -0.5).to(DTYPE)
    return x, weight, bias, prompts


def bench_norm_relu_rearrange(args, flush, gen):
    from mp_deploy.kernels import group_stats as gs, norm_relu_rearrange as nrr

    # the launchers' defaults first (starred), then the alternatives
    neck_configs = [(None, nrr.BLOCK_C, nrr.NUM_WARPS, nrr.NUM_STAGES)] + NECK_CONFIGS
    stats_configs = [(gs.PROGRAMS, gs.BLOCK, gs.NUM_WARPS, gs.STAGES)] + STATS_CONFIGS
    rows = []
    for index, (name, shape, n_prompts) in enumerate(NORM_RELU_REARRANGE_SHAPES):
        x, weight, bias, prompts = _neck_inputs(shape, n_prompts, gen)

        def eager():
            return torch.einsum("bchw,bnc->bnhw", F.relu(F.group_norm(x, 16, weight, bias, 1e-5)), prompts)

        default = nrr.block_hw(shape[2] * shape[3], n_prompts, shape[0])
        # (tile, channel block, warps, stages, single launch, mark): the two-launch defaults starred, the single
        # launch's marked +; the sweeps on the neck only
        configs = [(tile or default, *rest, False, "" if i else "*")
                   for i, (tile, *rest) in enumerate(neck_configs if index == 0 else neck_configs[:1])]
        if args.single_launch:
            single_default = (nrr.single_tile(shape[2] * shape[3]), nrr.BLOCK_C, nrr.NUM_WARPS, nrr.NUM_STAGES)
            configs += [(*config, True, "" if i else "+") for i, config in
                        enumerate([single_default] + (SINGLE_CONFIGS if index == 0 else []))]
        for tile, block_c, warps, stages, single, mark in configs:
            def triton(tile=tile, block_c=block_c, warps=warps, stages=stages, single=single):
                return nrr.norm_relu_rearrange(x, weight, bias, 16, 1e-5, prompts, tile_hw=tile, block_c=block_c,
                                               num_warps=warps, num_stages=stages, single_launch=single)

            label = "{} {} N={} {}t{} c{} w{} s{}{}".format(name, "x".join(map(str, shape)), n_prompts,
                                                            "single " if single else "", tile, block_c, warps,
                                                            stages, mark)
            rows.append(_row("norm_relu_rearrange", label, eager, triton, (x, prompts, weight, bias), args, flush))
        if index == 0:  # its statistics pass alone: how the time splits between the two launches
            for i, config in enumerate(stats_configs):
                label = "{} p{} b{} w{} s{}{} (vs group_norm)".format(name, *config, "*" if i == 0 else "")
                rows.append(_row("group_stats", label, lambda: F.group_norm(x, 16, weight, bias, 1e-5),
                                 lambda c=config: gs.group_stats(x, 16, *c), (x,), args, flush, compare=False))
            # the fastest rearrangement with the fastest statistics pass: what the swept constants can reach
            apply = min(zip(rows, neck_configs), key=lambda pair: pair[0]["triton_us"])[1]
            stats = min(zip(rows[-len(stats_configs):], stats_configs), key=lambda pair: pair[0]["triton_us"])[1]
            tile, block_c, warps, stages = apply[0] or default, *apply[1:]
            label = "{} t{} c{} w{} s{} + stats p{} b{} w{} s{}".format(name, tile, block_c, warps, stages, *stats)
            rows.append(_row("norm_relu_rearrange", label, eager,
                             lambda: nrr.norm_relu_rearrange(x, weight, bias, 16, 1e-5, prompts, tile_hw=tile,
                                                             block_c=block_c, num_warps=warps, num_stages=stages,
                                                             stats_config=stats),
                             (x, prompts, weight, bias), args, flush))
    return rows


def check_single_launch() -> int:
    """The single launch against the two-launch path on the depth neck and the other shapes; 0 if all match."""
    from mp_deploy.kernels import norm_relu_rearrange as nrr

    gen = torch.Generator(device="cuda").manual_seed(0)
    failed = 0
    for name, shape, n_prompts in NORM_RELU_REARRANGE_SHAPES:
        x, weight, bias, prompts = _neck_inputs(shape, n_prompts, gen)
        two = nrr.norm_relu_rearrange(x, weight, bias, 16, 1e-5, prompts)
        one = nrr.norm_relu_rearrange(x, weight, bias, 16, 1e-5, prompts, single_launch=True)
        torch.cuda.synchronize()
        diff = (one.float() - two.float()).abs().max().item()
        ok = diff <= 2e-3 * max(1.0, two.float().abs().max().item())  # both fp16: a few ulps apart at most
        failed += not ok
        print(f"single launch {name} {'x'.join(map(str, shape))} N={n_prompts}: max diff vs two launches "
              f"{diff:.1e} {'ok' if ok else 'MISMATCH'}")
    return int(failed > 0)


def bench_group_norm_act(args, flush, gen):
    from mp_deploy.kernels import group_norm as gn

    rows = []
    for shape in GROUP_NORM_SHAPES:
        x = torch.randn(shape, generator=gen, device="cuda").to(DTYPE)
        weight, bias = _affine(shape[1], gen)

        def eager():
            return F.silu(F.group_norm(x, 32, weight, bias, 1e-5))

        default_fused = shape[1] // 32 * shape[2] * shape[3] <= gn.FUSED_MAX_GROUP
        for fused in (True, False):
            def triton(fused=fused):
                return gn.group_norm_act(x, weight, bias, 32, 1e-5, True, fused=fused)

            star = "*" if fused == default_fused else ""
            label = f"{'x'.join(map(str, shape))} {'fused' if fused else 'split'}{star}"
            rows.append(_row("group_norm_act silu", label, eager, triton, (x, weight, bias), args, flush))
    return rows


def _row(kernel, shape, eager, triton, inputs, args, flush, compare: bool = True):
    out = triton()
    want = eager()
    moved = nbytes(*inputs, out)
    eager_us = device_us(eager, args.runs, args.warmup, flush)
    triton_us = device_us(triton, args.runs, args.warmup, flush)
    return {"kernel": kernel, "shape": shape, "dtype": str(DTYPE).replace("torch.", ""), "eager_us": eager_us,
            "triton_us": triton_us, "speedup": eager_us / triton_us, "bytes": moved,
            "triton_gbps": moved / triton_us / 1e3, "eager_gbps": moved / eager_us / 1e3,
            "eager_call_us": call_us(eager, args.runs, args.warmup, flush),
            "triton_call_us": call_us(triton, args.runs, args.warmup, flush),
            "size_copy_gbps": size_copy_gbps(moved, args.runs, args.warmup, flush, DTYPE),
            "max_abs_diff": (out.float() - want.float()).abs().max().item() if compare else float("nan")}


def print_table(rows, copy: dict) -> None:
    header = (f"| {'kernel':<19} | {'shape':<58} | {'eager us':>8} | {'triton us':>9} | {'speed-up':>8} | "
              f"{'GB/s':>6} | {'% of copy':>9} | {'% size copy':>11} | {'call us e/t':>13} | {'max diff':>8} |")
    print(header)
    print("|" + "|".join("-" * (len(col)) for col in header.split("|")[1:-1]) + "|")
    for r in rows:
        print(f"| {r['kernel']:<19} | {r['shape']:<58} | {r['eager_us']:>8.1f} | {r['triton_us']:>9.1f} | "
              f"{r['speedup']:>7.2f}x | {r['triton_gbps']:>6.0f} | {100 * r['copy_fraction']:>8.0f}% | "
              f"{100 * r['triton_gbps'] / r['size_copy_gbps']:>10.0f}% | "
              f"{r['eager_call_us']:>6.0f}/{r['triton_call_us']:<6.0f} | {r['max_abs_diff']:>8.1e} |")
    print(f"\ncopy ceiling ({copy['what']}, eager): {copy['gbps']:.0f} GB/s; times are GPU time "
          "from CUDA graph replays (L2 flushed); `call us` is the eager Python call (eager / triton); "
          "* = default path")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", "--out-dir", type=Path, default=Path("benchmarks/results"), help="results folder")
    parser.add_argument("--runs", type=int, default=100, help="timed runs per measurement")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--no-single-launch", dest="single_launch", action="store_false",
                        help="skip the single-launch rows (the GPU script sets it when check_single_launch failed)")
    parser.add_argument("--check-single-launch", action="store_true",
                        help="only run the single launch once on the depth neck against the two-launch path; exit 1 "
                             "if they differ (the GPU script runs this under a timeout first: a grid barrier that "
                             "never opens hangs)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("benchmarks/kernels.py needs a CUDA GPU (the Triton kernels and CUDA-event timing); none found",
              file=sys.stderr)
        return 2
    import triton

    import mp_deploy.kernels  # noqa: F401  (registers torch.ops.mp_deploy.*)

    if args.check_single_launch:
        return check_single_launch()

    flush = flush_buffer()
    gen = torch.Generator(device="cuda").manual_seed(0)
    copy = copy_ceiling("cuda")
    rows = bench_norm_relu_rearrange(args, flush, gen) + bench_group_norm_act(args, flush, gen)
    for r in rows:
        r["copy_fraction"] = r["triton_gbps"] / copy["gbps"]
    print_table(rows, copy)

    gpu = torch.cuda.get_device_name()
    now = datetime.datetime.now(datetime.timezone.utc)
    meta = {"gpu": gpu, "torch": torch.__version__, "triton": triton.__version__, "cuda": torch.version.cuda,
            "date": now.isoformat(timespec="seconds"), "runs": args.runs, "warmup": args.warmup,
            "copy_gbps": copy["gbps"]}
    stem = write_results(args.output / f"kernels-{slug(gpu)}-{now:%Y-%m-%d}", meta, rows, CSV_FIELDS,
                         {"gpu": gpu, "date": meta["date"]})
    print(f"wrote {stem}.json and .csv: {len(rows)} kernel rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
