"""Fused GroupNorm + affine + ReLU + prompt rearrangement, in Triton.

out[b, n, s] = sum_c relu(groupnorm(x)[b, c, s]) * prompts[b, n, c] for x (B, C, H, W), prompts (B, N, C).
Pass 1 is `group_norm.group_stats` (partial moments per (batch, group)). Pass 2 reads x once per
BLOCK_N prompts: a program owns a (BLOCK_N, BLOCK_HW) output tile, walks the channels BLOCK_C at a time,
normalises + ReLUs the x tile in fp32 registers and feeds it to tl.dot against the prompt tile
(fp16/bf16 operands stay in their dtype for the tensor cores, fp32 ones stay exact fp32; fp32 accumulation).
The normalised activations never go to memory, unlike eager's group_norm -> relu -> einsum.
Kernel parameters follow TensorRT's AOT plugin order: input pointers, int scalars, output pointer, constexprs.
"""
import torch
import triton
import triton.language as tl

from .group_norm import _row_moments, group_stats, traceable

BLOCK_HW = 32  # spatial tile when the shape is unknown at compile time (TensorRT plugin, dynamic shapes)
BLOCK_C = 64
NUM_WARPS = 4
NUM_STAGES = 3
TARGET_PROGRAMS = 264  # about 2 programs per SM on an H100/H200: the depth neck at batch 1 is only 4096 pixels


@triton.jit
def _norm_relu_rearrange_kernel(x_ptr, stats_ptr, w_ptr, b_ptr, p_ptr, channels, hw, n_prompts, groups, out_ptr,
                                EPS: tl.constexpr, SPLIT: tl.constexpr, GROUPS_BLOCK: tl.constexpr,
                                BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr,
                                DOT_IN_FP32: tl.constexpr):
    # the prompt tile is the fastest grid axis: programs sharing an x tile run together and hit L2
    pid_n = tl.program_id(0)
    pid_hw = tl.program_id(1)
    batch = tl.program_id(2)
    n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    s = pid_hw * BLOCK_HW + tl.arange(0, BLOCK_HW)
    n_mask = n < n_prompts
    s_mask = s < hw
    channels_per_group = channels // groups

    # the affine weights are prefetched one channel block ahead: Triton's pipeliner takes the x and prompt
    # tiles (they feed tl.dot) but not these small loads, which would otherwise cost a memory round trip
    # per channel block
    c_next = tl.arange(0, BLOCK_C)
    w_next = tl.load(w_ptr + c_next, mask=c_next < channels, other=0.0)
    b_next = tl.load(b_ptr + c_next, mask=c_next < channels, other=0.0)
    # statistics of this batch's groups, once per program; per channel they are picked by a one-hot sum below
    # (registers cannot be indexed), which is far cheaper than re-reading the partial moments per channel block
    g = tl.arange(0, GROUPS_BLOCK)
    shift_g, mean_g, rstd_g = _row_moments(x_ptr, stats_ptr, batch * groups + g, g < groups,
                                           channels_per_group * hw, EPS, SPLIT)

    x_base = x_ptr + batch.to(tl.int64) * channels * hw
    p_base = p_ptr + batch.to(tl.int64) * n_prompts * channels
    acc = tl.zeros([BLOCK_N, BLOCK_HW], tl.float32)
    for c0 in range(0, channels, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        c_mask = c < channels
        w = w_next.to(tl.float32)
        b = b_next.to(tl.float32)
        c_next = c + BLOCK_C
        w_next = tl.load(w_ptr + c_next, mask=c_next < channels, other=0.0)
        b_next = tl.load(b_ptr + c_next, mask=c_next < channels, other=0.0)
        one_hot = (c // channels_per_group)[:, None] == g[None, :]
        shift_c = tl.sum(tl.where(one_hot, shift_g[None, :], 0.0), 1)
        mean = tl.sum(tl.where(one_hot, mean_g[None, :], 0.0), 1)  # relative to shift_c
        rstd = tl.sum(tl.where(one_hot, rstd_g[None, :], 0.0), 1)
        scale = rstd * w
        offset = b - mean * scale
        x = tl.load(x_base + c[:, None] * hw + s[None, :], mask=c_mask[:, None] & s_mask[None, :], other=0.0)
        y = tl.maximum((x.to(tl.float32) - shift_c[:, None]) * scale[:, None] + offset[:, None], 0.0)
        y = tl.where(c_mask[:, None], y, 0.0)  # padded channels would otherwise add relu(offset) terms
        p = tl.load(p_base + n[:, None] * channels + c[None, :], mask=n_mask[:, None] & c_mask[None, :], other=0.0)
        if DOT_IN_FP32:  # exact fp32 products ("ieee": no TF32), as the eager einsum
            acc = tl.dot(p.to(tl.float32), y, acc, input_precision="ieee")
        else:  # fp16/bf16 operands for the tensor cores
            acc = tl.dot(p.to(x_ptr.dtype.element_ty), y.to(x_ptr.dtype.element_ty), acc)

    out = out_ptr + (batch.to(tl.int64) * n_prompts + n[:, None]) * hw + s[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=n_mask[:, None] & s_mask[None, :])


def block_n(n_prompts: int) -> int:
    """Prompt tile: 16..64 (tl.dot needs >= 16; 64 x BLOCK_HW fp32 accumulators fit 4 warps' registers)."""
    return min(64, max(16, triton.next_power_of_2(n_prompts)))


def block_hw(hw: int, n_prompts: int, batch: int) -> int:
    """Spatial tile, 16..128: the widest one that still gives TARGET_PROGRAMS programs (wide tiles read x in
    longer contiguous runs; narrow ones keep every SM busy on small maps)."""
    n_tiles = triton.cdiv(n_prompts, block_n(n_prompts))
    tile = 128
    while tile > 16 and n_tiles * batch * triton.cdiv(hw, tile) < TARGET_PROGRAMS:
        tile //= 2
    return tile


def dot_in_fp32(dtype: torch.dtype) -> bool:
    """fp32 inputs keep fp32 operands. So does bf16 under TRITON_INTERPRET: the interpreter multiplies bf16
    dot operands as their raw uint16 bits."""
    interpreted = not isinstance(_norm_relu_rearrange_kernel, triton.runtime.JITFunction)
    return dtype == torch.float32 or (interpreted and dtype == torch.bfloat16)


def norm_relu_rearrange(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int, eps: float,
                        prompts: torch.Tensor, tile_hw: int | None = None, block_c: int = BLOCK_C,
                        num_warps: int = NUM_WARPS, num_stages: int = NUM_STAGES,
                        stats_config: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """relu(group_norm(x)) contracted with prompts: x (B, C, H, W), prompts (B, N, C) -> (B, N, H, W), x's dtype.

    `tile_hw` forces the spatial tile (by default `block_hw` picks it); it, `block_c`, `num_warps`,
    `num_stages` and `stats_config` (group_stats' programs, block, warps, stages) are there for tests and
    benchmark sweeps."""
    if x.dim() != 4 or prompts.dim() != 3 or prompts.shape[0] != x.shape[0] or prompts.shape[2] != x.shape[1]:
        raise ValueError(f"norm_relu_rearrange: need x (B, C, H, W) and prompts (B, N, C), got "
                         f"{tuple(x.shape)} and {tuple(prompts.shape)}")
    if x.shape[1] % groups:
        raise ValueError(f"norm_relu_rearrange: C={x.shape[1]} is not divisible by groups={groups}")
    batch, channels, height, width = x.shape
    n_prompts = prompts.shape[1]
    hw = height * width
    out = torch.empty((batch, n_prompts, height, width), device=x.device, dtype=x.dtype)
    if out.numel() == 0:
        return out
    x, prompts = x.contiguous(), prompts.contiguous()
    stats = group_stats(x, groups, *(stats_config or ()))
    bn = block_n(n_prompts)
    bhw = tile_hw or block_hw(hw, n_prompts, batch)
    grid = (triton.cdiv(n_prompts, bn), triton.cdiv(hw, bhw), batch)
    traceable(_norm_relu_rearrange_kernel, x)[grid](
        x, stats, weight.contiguous(), bias.contiguous(), prompts, channels, hw, n_prompts, groups, out,
        EPS=eps, SPLIT=stats.shape[-1], GROUPS_BLOCK=max(2, triton.next_power_of_2(groups)),
        BLOCK_N=bn, BLOCK_C=block_c, BLOCK_HW=bhw, DOT_IN_FP32=dot_in_fp32(x.dtype),
        num_warps=num_warps, num_stages=num_stages)
    return out
