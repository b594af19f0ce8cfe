"""GroupNorm (+ optional SiLU) over contiguous (B, C, *spatial) activations, fp32 statistics, in Triton.

The channels of one group are contiguous in memory, so a (batch, group) pair is one flat row of
`group_numel = C / groups * HW` elements. Two paths:
- split (large groups): `_group_stats_kernel` reduces each row in SPLIT chunks to partial moments, then
  `_group_norm_apply_kernel` combines them (Chan's parallel formula) and normalises. Two launches, with
  enough programs to fill the GPU even at batch 1 (32 groups would otherwise use 32 SMs).
- fused (small groups): `_group_norm_fused_kernel`, one program per row. One launch: rows of up to
  FUSED_MAX_GROUP elements are held in registers (one read); longer rows (the TensorRT AOT plugin, which
  must be a single kernel of fixed block size) take two passes, the second one from L1/L2.
Every kernel takes (input pointers, int scalars, output pointers, constexprs): the order in which TensorRT
AOT plugins pass arguments (kernels/tensorrt_plugins.py compiles these same kernels). Int scalars are never
used as tensors (`x.to(...)`): torch's mutation analysis compiles the kernels with them as Python ints.
"""
import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

STATS_BLOCK = 1024
APPLY_BLOCK = 2048
FUSED_BLOCK = 2048  # the two-pass fused kernel's block (TensorRT plugin)
FUSED_MAX_GROUP = 16384  # rows up to this size are one register tile: 32 fp32 values per thread at 16 warps
STATS_PROGRAMS = 512  # stats programs to aim for: about 4 per SM on an H100
STAGES = 3  # loads in flight per program in the reduction loops (tl.range software pipelining)
MAX_SPLIT = 64
NUM_WARPS = 4


@triton.jit
def _group_stats_kernel(x_ptr, group_numel, stats_ptr, SPLIT: tl.constexpr, BLOCK: tl.constexpr,
                        STAGES: tl.constexpr):
    """Program (chunk, row) -> stats[row, :, chunk] = (count, mean - shift, M2) of that chunk of the row.

    shift = the row's first value: sums of (x - shift) keep fp32 precision when |mean| >> std, and the
    consumers normalise as ((x - shift) - (mean - shift)) * rstd so that the large shift cancels exactly.
    The loop is software-pipelined (STAGES blocks in flight): Triton pipelines only loads that feed a tl.dot
    unless the loop asks, and one block per round trip left this pass bound by memory latency.
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
    _store_moments(stats_ptr + row * (3 * SPLIT) + chunk_id, count, tl.sum(acc, 0), tl.sum(acc_sq, 0), SPLIT)


@triton.jit
def _store_moments(out, count, total, total_sq, SPLIT: tl.constexpr, mask=None):
    """Writes one chunk's (count, mean - shift, M2) at out, out + SPLIT, out + 2 * SPLIT (the partial-moments
    layout `_row_moments` reads), from the count and the sums of d and d^2 (d = x - shift)."""
    safe = tl.maximum(count, 1.0)
    tl.store(out, count, mask=mask)
    tl.store(out + SPLIT, total / safe, mask=mask)
    tl.store(out + 2 * SPLIT, tl.maximum(total_sq - total * total / safe, 0.0), mask=mask)


@triton.jit
def _row_moments(x_ptr, stats_ptr, rows, row_mask, group_numel, EPS: tl.constexpr, SPLIT: tl.constexpr):
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


@triton.jit
def _normalize(x, shift, mean_d, rstd, w_ptr, b_ptr, channel, mask, SILU: tl.constexpr):
    """`_normalize_loaded` with each element's channel weight and bias loaded here."""
    w = tl.load(w_ptr + channel, mask=mask, other=0.0)
    b = tl.load(b_ptr + channel, mask=mask, other=0.0)
    return _normalize_loaded(x, shift, mean_d, rstd, w, b, SILU)


@triton.jit
def _normalize_loaded(x, shift, mean_d, rstd, w, b, SILU: tl.constexpr):
    """Affine GroupNorm of fp32 x given shift and mean - shift (see `_group_stats_kernel`), SiLU if SILU."""
    y = ((x - shift) - mean_d) * (rstd * w.to(tl.float32)) + b.to(tl.float32)
    if SILU:
        y = y * tl.sigmoid(y)
    return y


@triton.jit
def _group_norm_apply_kernel(x_ptr, stats_ptr, w_ptr, b_ptr, group_numel, hw, groups, y_ptr,
                             EPS: tl.constexpr, SILU: tl.constexpr, SPLIT: tl.constexpr, BLOCK: tl.constexpr):
    """Program (block, row): normalise BLOCK elements of one (batch, group) row."""
    row = tl.program_id(1)
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < group_numel
    # every load is issued before the statistics are used: one memory round trip per program, not two
    channel = (row % groups) * (group_numel // hw) + idx // hw
    offs = row.to(tl.int64) * group_numel + idx
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    w = tl.load(w_ptr + channel, mask=mask, other=0.0)
    b = tl.load(b_ptr + channel, mask=mask, other=0.0)
    rows = row + tl.zeros([1], tl.int32)  # a 1-row vector: `_row_moments` works on vectors
    shift, mean_d, rstd = _row_moments(x_ptr, stats_ptr, rows, rows >= 0, group_numel, EPS, SPLIT)
    y = _normalize_loaded(x.to(tl.float32), shift, mean_d, rstd, w, b, SILU)
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _group_norm_fused_kernel(x_ptr, w_ptr, b_ptr, group_numel, hw, groups, y_ptr,
                             EPS: tl.constexpr, SILU: tl.constexpr, BLOCK: tl.constexpr, ONE_TILE: tl.constexpr,
                             STAGES: tl.constexpr):
    """Program (row,): statistics of the whole row, then normalise it. ONE_TILE: the row fits in BLOCK;
    otherwise two pipelined passes (STAGES blocks in flight, see `_group_stats_kernel`)."""
    row = tl.program_id(0)
    base = row.to(tl.int64) * group_numel
    first_channel = (row % groups) * (group_numel // hw)
    n = tl.cast(group_numel, tl.float32)
    shift = tl.load(x_ptr + base).to(tl.float32)  # see `_group_stats_kernel`
    if ONE_TILE:  # exact two-pass moments from registers: one read of x
        idx = tl.arange(0, BLOCK)
        mask = idx < group_numel
        x = tl.load(x_ptr + base + idx, mask=mask, other=0.0).to(tl.float32)
        mean_d = tl.sum(tl.where(mask, x - shift, 0.0), 0) / n
        d = tl.where(mask, x - shift - mean_d, 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(d * d, 0) / n + EPS)
        y = _normalize(x, shift, mean_d, rstd, w_ptr, b_ptr, first_channel + idx // hw, mask, SILU)
        tl.store(y_ptr + base + idx, y.to(y_ptr.dtype.element_ty), mask=mask)
    else:
        acc = tl.zeros([BLOCK], tl.float32)
        acc_sq = tl.zeros([BLOCK], tl.float32)
        for off in tl.range(0, group_numel, BLOCK, num_stages=STAGES):
            idx = off + tl.arange(0, BLOCK)
            mask = idx < group_numel
            d = tl.where(mask, tl.load(x_ptr + base + idx, mask=mask, other=0.0).to(tl.float32) - shift, 0.0)
            acc += d
            acc_sq += d * d
        mean_d = tl.sum(acc, 0) / n
        var = tl.maximum(tl.sum(acc_sq, 0) / n - mean_d * mean_d, 0.0)
        rstd = 1.0 / tl.sqrt(var + EPS)
        for off in tl.range(0, group_numel, BLOCK, num_stages=STAGES):
            idx = off + tl.arange(0, BLOCK)
            mask = idx < group_numel
            x = tl.load(x_ptr + base + idx, mask=mask, other=0.0).to(tl.float32)
            y = _normalize(x, shift, mean_d, rstd, w_ptr, b_ptr, first_channel + idx // hw, mask, SILU)
            tl.store(y_ptr + base + idx, y.to(y_ptr.dtype.element_ty), mask=mask)


def traceable(kernel, x: torch.Tensor):
    """`kernel`, or `wrap_triton(kernel)` while torch traces (export, compile: fake tensors or a dispatch mode
    active), where it turns the launch into a graph node. In eager mode wrap_triton would route every launch
    through torch's tracing machinery, about 0.3 ms of host time per call on an H200's host."""
    if type(x) is torch.Tensor and torch._C._len_torch_dispatch_stack() == 0:
        return kernel
    return wrap_triton(kernel)


def stats_split(rows: int, group_numel: int, programs: int = STATS_PROGRAMS, block: int = STATS_BLOCK) -> int:
    """Chunks per row for `_group_stats_kernel`: a power of two (it is a tl.arange length), >= 2."""
    split = min(max(1, programs // rows), triton.cdiv(group_numel, block), MAX_SPLIT)
    return max(2, 1 << (split.bit_length() - 1))


def group_stats(x: torch.Tensor, groups: int, programs: int = STATS_PROGRAMS, block: int = STATS_BLOCK,
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


def group_norm_act(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int, eps: float,
                   silu: bool, fused: bool | None = None) -> torch.Tensor:
    """GroupNorm(groups, eps) with affine weight/bias, then SiLU if `silu`; x (B, C, ...) -> same shape/dtype.

    `fused` forces a path (tests); by default rows of up to FUSED_MAX_GROUP elements take the fused one.
    """
    if x.dim() < 2 or x.shape[1] % groups:
        raise ValueError(f"group_norm_act: need (B, C, ...) with C divisible by groups={groups}, got {tuple(x.shape)}")
    x = x.contiguous()
    batch, channels = x.shape[:2]
    hw = x.numel() // max(batch * channels, 1)
    group_numel = channels // groups * hw
    rows = batch * groups
    y = torch.empty_like(x)
    if x.numel() == 0:
        return y
    weight, bias = weight.contiguous(), bias.contiguous()
    one_tile = group_numel <= FUSED_MAX_GROUP
    if fused is None:
        fused = one_tile
    if fused:
        block = max(16, triton.next_power_of_2(group_numel)) if one_tile else FUSED_BLOCK
        traceable(_group_norm_fused_kernel, x)[(rows,)](
            x, weight, bias, group_numel, hw, groups, y,
            EPS=eps, SILU=silu, BLOCK=block, ONE_TILE=one_tile, STAGES=STAGES,
            num_warps=min(16, max(4, block // 512)))
    else:
        stats = group_stats(x, groups)
        grid = (triton.cdiv(group_numel, APPLY_BLOCK), rows)
        traceable(_group_norm_apply_kernel, x)[grid](
            x, stats, weight, bias, group_numel, hw, groups, y,
            EPS=eps, SILU=silu, SPLIT=stats.shape[-1], BLOCK=APPLY_BLOCK, num_warps=NUM_WARPS)
    return y
