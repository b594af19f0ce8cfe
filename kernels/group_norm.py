"""GroupNorm (+ optional SiLU) over contiguous (B, C, *spatial) activations, fp32 statistics, in Triton.

    torch.ops.mp_deploy.group_norm_act(x, weight, bias, groups, eps, silu) -> x's shape and dtype

A (batch, group) pair is one flat row of `group_numel = C / groups * HW` elements. Two paths:
- split (large groups): group_stats reduces each row in SPLIT chunks to partial moments, then
  `_group_norm_apply_kernel` combines them and normalises. Two launches, with enough programs to fill the GPU
  even at batch 1 (32 groups would otherwise use 32 SMs).
- fused (small groups): `_group_norm_fused_kernel`, one program per row. One launch: rows of up to
  FUSED_MAX_GROUP elements are held in registers (one read); longer rows (the TensorRT AOT plugin, which
  must be a single kernel of fixed block size) take two passes, the second one from L1/L2.
Every kernel takes (input pointers, int scalars, output pointers, constexprs): the order in which TensorRT
AOT plugins pass arguments (`group_norm_act_spec`). Int scalars are never used as tensors (`x.to(...)`):
torch's mutation analysis compiles the kernels with them as Python ints.
"""
import torch
from torch import Tensor

from mp_deploy import ops

from .group_stats import group_stats, row_moments
from .utils import define_op, tl, traceable, triton

APPLY_BLOCK = 2048
FUSED_BLOCK = 2048  # the two-pass fused kernel's block (TensorRT plugin)
FUSED_MAX_GROUP = 16384  # rows up to this size are one register tile: 32 fp32 values per thread at 16 warps
STAGES = 3  # loads in flight per program in the two-pass fused kernel's loops (tl.range software pipelining)
NUM_WARPS = 4


@triton.jit
def _normalize(x, shift, mean_d, rstd, w_ptr, b_ptr, channel, mask, SILU: tl.constexpr):
    """`_normalize_loaded` with each element's channel weight and bias loaded here."""
    w = tl.load(w_ptr + channel, mask=mask, other=0.0)
    b = tl.load(b_ptr + channel, mask=mask, other=0.0)
    return _normalize_loaded(x, shift, mean_d, rstd, w, b, SILU)


@triton.jit
def _normalize_loaded(x, shift, mean_d, rstd, w, b, SILU: tl.constexpr):
    """Affine GroupNorm of fp32 x given shift and mean - shift (see group_stats), SiLU if SILU."""
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
    rows = row + tl.zeros([1], tl.int32)  # a 1-row vector: `row_moments` works on vectors
    shift, mean_d, rstd = row_moments(x_ptr, stats_ptr, rows, rows >= 0, group_numel, EPS, SPLIT)
    y = _normalize_loaded(x.to(tl.float32), shift, mean_d, rstd, w, b, SILU)
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _group_norm_fused_kernel(x_ptr, w_ptr, b_ptr, group_numel, hw, groups, y_ptr,
                             EPS: tl.constexpr, SILU: tl.constexpr, BLOCK: tl.constexpr, ONE_TILE: tl.constexpr,
                             STAGES: tl.constexpr):
    """Program (row,): statistics of the whole row, then normalise it. ONE_TILE: the row fits in BLOCK;
    otherwise two pipelined passes (STAGES blocks in flight, as in group_stats)."""
    row = tl.program_id(0)
    base = row.to(tl.int64) * group_numel
    first_channel = (row % groups) * (group_numel // hw)
    n = tl.cast(group_numel, tl.float32)
    shift = tl.load(x_ptr + base).to(tl.float32)  # see group_stats
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


def _op_body(x: Tensor, weight: Tensor, bias: Tensor, groups: int, eps: float, silu: bool) -> Tensor:
    # traced by torch.compile / AOTInductor for every device: CPU artifacts get the reference, no Triton kernel
    if x.device.type != "cuda":
        return ops.group_norm_act_reference(x, weight, bias, groups, eps, silu)
    return group_norm_act(x, weight, bias, groups, eps, silu)


def _fake(x: Tensor, weight: Tensor, bias: Tensor, groups: int, eps: float, silu: bool) -> Tensor:
    return x.new_empty(x.shape)


group_norm_act_op = define_op("group_norm_act", _op_body, ops.group_norm_act_reference, _fake)


def group_norm_act_spec(x_type: str, w_type: str, b_type: str, eps: float, silu: bool):
    """The `group_norm_act` TensorRT plugin's kernel as tensorrt_plugins.compile_kernel's arguments (less arch):
    the fused kernel's two-pass form, one program per (batch, group), for any row length. Types are Triton's."""
    params = (("x_ptr", "*" + x_type), ("w_ptr", "*" + w_type), ("b_ptr", "*" + b_type), ("group_numel", "i32"),
              ("hw", "i32"), ("groups", "i32"), ("y_ptr", "*" + x_type))
    constexprs = (("EPS", float(eps)), ("SILU", bool(silu)), ("BLOCK", FUSED_BLOCK), ("ONE_TILE", False),
                  ("STAGES", STAGES))
    return _group_norm_fused_kernel, params, constexprs, NUM_WARPS, 1
