"""The statistics pass of the GroupNorms: partial moments per chunk of each (batch, group) row, in Triton.

The channels of one group are contiguous in memory, so a (batch, group) pair is one flat row of
`group_numel = C / groups * HW` elements. `_group_stats_kernel` reduces each row in SPLIT chunks, so that even
batch 1 with 32 groups fills the GPU, to the partial-moments layout

    stats[row, :, chunk] = (count, mean - shift, M2)      (B * groups, 3, SPLIT) fp32

with shift = the row's first value: sums of (x - shift) keep fp32 precision when |mean| >> std, and the
consumers normalise as ((x - shift) - (mean - shift)) * rstd so that the large shift cancels exactly.
`store_moments` writes that layout (also for norm_relu_rearrange's single launch), `row_moments` combines it
(Chan's parallel formula) into (shift, mean - shift, rstd). No torch op of its own: group_norm_act's split
path and norm_relu_rearrange launch it; TensorRT runs it as the `group_stats` plugin (`group_stats_spec`).
Kernel parameters follow TensorRT's AOT plugin order: input pointers, int scalars, output pointers, constexprs.
"""
import torch

from .utils import tl, traceable, triton

BLOCK = 1024
PROGRAMS = 512  # programs to aim for: about 4 per SM on an H100
STAGES = 3  # loads in flight per program in the reduction loop (tl.range software pipelining)
MAX_SPLIT = 64
NUM_WARPS = 4
TRT_SPLIT = 16  # chunks per row in the TensorRT plugin: fixed, so that dynamic shapes work


@triton.jit
def _group_stats_kernel(x_ptr, group_numel, stats_ptr, SPLIT: tl.constexpr, BLOCK: tl.constexpr,
                        STAGES: tl.constexpr):
    """Program (chunk, row) -> stats[row, :, chunk] = (count, mean - shift, M2) of that chunk of the row.

    The loop asks for software pipelining (STAGES blocks in flight): Triton pipelines only loads that feed a
    tl.dot unless the loop asks, and one block per memory round trip leaves the pass latency-bound.
    """
    chunk_id = tl.program_id(0)
    row = tl.program_id(1).to(tl.int64)
    # chunks are whole BLOCKs so every load starts aligned; trailing chunks may be empty (count 0)
    chunk = tl.cdiv(tl.cdiv(group_numel, SPLIT), BLOCK) * BLOCK
    start = chunk_id * chunk
    end = tl.minimum(start + chunk, group_numel)
    base = x_ptr + row * group_numel
    shift = tl.load(base).to(tl.float32)
    acc = tl.zeros([BLOCK], tl.float32)
    acc_sq = tl.zeros([BLOCK], tl.float32)
    for off in tl.range(start, end, BLOCK, num_stages=STAGES):
        idx = off + tl.arange(0, BLOCK)
        mask = idx < end
        d = tl.where(mask, tl.load(base + idx, mask=mask, other=0.0).to(tl.float32) - shift, 0.0)
        acc += d
        acc_sq += d * d
    count = tl.maximum(end - start, 0).to(tl.float32)
    store_moments(stats_ptr + row * (3 * SPLIT) + chunk_id, count, tl.sum(acc, 0), tl.sum(acc_sq, 0), SPLIT)


@triton.jit
def store_moments(out, count, total, total_sq, SPLIT: tl.constexpr, mask=None):
    """Writes one chunk's (count, mean - shift, M2) at out, out + SPLIT, out + 2 * SPLIT (the partial-moments
    layout `row_moments` reads), from the count and the sums of d and d^2 (d = x - shift)."""
    safe = tl.maximum(count, 1.0)
    tl.store(out, count, mask=mask)
    tl.store(out + SPLIT, total / safe, mask=mask)
    tl.store(out + 2 * SPLIT, tl.maximum(total_sq - total * total / safe, 0.0), mask=mask)


@triton.jit
def row_moments(x_ptr, stats_ptr, rows, row_mask, group_numel, EPS: tl.constexpr, SPLIT: tl.constexpr):
    """(shift, mean - shift, rstd) for a vector of rows: their SPLIT partial moments combined."""
    shift = tl.load(x_ptr + rows.to(tl.int64) * group_numel, mask=row_mask, other=0.0).to(tl.float32)
    part = stats_ptr + rows[:, None] * (3 * SPLIT) + tl.arange(0, SPLIT)[None, :]
    mask = row_mask[:, None]
    count = tl.load(part, mask=mask, other=0.0)
    mean_i = tl.load(part + SPLIT, mask=mask, other=0.0)
    m2_i = tl.load(part + 2 * SPLIT, mask=mask, other=0.0)
    n = tl.cast(group_numel, tl.float32)
    mean = tl.sum(count * mean_i, 1) / n
    dev = mean_i - mean[:, None]
    var = tl.sum(m2_i + count * dev * dev, 1) / n
    return shift, mean, 1.0 / tl.sqrt(var + EPS)


def stats_split(rows: int, group_numel: int, programs: int = PROGRAMS, block: int = BLOCK) -> int:
    """Chunks per row for `_group_stats_kernel`: a power of two (it is a tl.arange length), >= 2."""
    split = min(max(1, programs // rows), triton.cdiv(group_numel, block), MAX_SPLIT)
    return max(2, 1 << (split.bit_length() - 1))


def group_stats(x: torch.Tensor, groups: int, programs: int = PROGRAMS, block: int = BLOCK,
                num_warps: int = NUM_WARPS, stages: int = STAGES) -> torch.Tensor:
    """Partial moments of a contiguous x: (B * groups, 3, SPLIT) fp32, per chunk of each (batch, group) row
    (count, mean - the row's first value, M2); SPLIT = stats.shape[-1]. `programs`, `block`, `num_warps`
    and `stages` are for tests and benchmark sweeps."""
    batch, channels = x.shape[:2]
    group_numel = channels // groups * (x.numel() // max(batch * channels, 1))
    rows = batch * groups
    split = stats_split(rows, group_numel, programs, block)
    stats = torch.empty((rows, 3, split), device=x.device, dtype=torch.float32)
    traceable(_group_stats_kernel, x)[(split, rows)](
        x, group_numel, stats, SPLIT=split, BLOCK=block, STAGES=stages, num_warps=num_warps)
    return stats


def group_stats_spec(x_type: str):
    """The `group_stats` TensorRT plugin's kernel as tensorrt_plugins.compile_kernel's arguments (less arch):
    x of Triton type `x_type` (fp32/fp16/bf16) -> stats (B * groups, 3, TRT_SPLIT)."""
    params = (("x_ptr", "*" + x_type), ("group_numel", "i32"), ("stats_ptr", "*fp32"))
    constexprs = (("SPLIT", TRT_SPLIT), ("BLOCK", BLOCK), ("STAGES", STAGES))
    return _group_stats_kernel, params, constexprs, NUM_WARPS, 1
