"""Fused GroupNorm + affine + ReLU + prompt rearrangement, in Triton.

    torch.ops.mp_deploy.norm_relu_rearrange(x, weight, bias, groups, eps, prompts) -> (B, N, H, W)

out[b, n, s] = sum_c relu(groupnorm(x)[b, c, s]) * prompts[b, n, c] for x (B, C, H, W), prompts (B, N, C).
Pass 1 is `group_stats.group_stats` (partial moments per (batch, group)). Pass 2 reads x once per
BLOCK_N prompts: a program owns a (BLOCK_N, BLOCK_HW) output tile, walks the channels BLOCK_C at a time,
normalises + ReLUs the x tile in fp32 registers and feeds it to tl.dot against the prompt tile
(fp16/bf16 operands stay in their dtype for the tensor cores, fp32 ones stay exact fp32; fp32 accumulation).
The normalised activations never go to memory, unlike eager's group_norm -> relu -> einsum.
Single launch (`single_launch=True`, for maps of up to SINGLE_MAX_TILES spatial tiles): one persistent grid of
at most one program per SM computes the partial moments of its spatial tiles, waits at a grid-wide barrier,
then rearranges its tiles, re-reading x from L2. It saves the second launch: on small maps (the depth neck
at batch 1) latency, not bandwidth, bounds the time. Opt-in until a GPU run has timed it (docs/performance.md).
All programs must be resident at once, hence the grid of at most one per SM; under TRITON_INTERPRET, which
runs programs one after another, the two phases are two launches of the same kernel.
Kernel parameters follow TensorRT's AOT plugin order: input pointers, int scalars, output pointer, constexprs.
The TensorRT plugins keep the two-launch kernels (`norm_relu_rearrange_spec`, after group_stats' plugin).
"""
import torch
from torch import Tensor

from mp_deploy import ops

from .group_stats import TRT_SPLIT, group_stats, row_moments, store_moments
from .utils import define_op, tl, traceable, triton

BLOCK_HW = 32  # spatial tile when the shape is unknown at compile time (TensorRT plugin, dynamic shapes)
BLOCK_C = 64
NUM_WARPS = 4
NUM_STAGES = 3
TARGET_PROGRAMS = 264  # about 2 programs per SM on an H100/H200: the depth neck at batch 1 is only 4096 pixels
SINGLE_MAX_TILES = 128  # single launch: spatial tiles per map = the statistics' split (a tl.arange length)


@triton.jit
def _norm_relu_rearrange_kernel(x_ptr, stats_ptr, w_ptr, b_ptr, p_ptr, channels, hw, n_prompts, groups, out_ptr,
                                EPS: tl.constexpr, SPLIT: tl.constexpr, GROUPS_BLOCK: tl.constexpr,
                                BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr,
                                DOT_IN_FP32: tl.constexpr):
    """Program (prompt tile, spatial tile, batch): one output tile, given group_stats' partial moments.
    The prompt tile is the fastest grid axis: programs sharing an x tile run together and hit L2."""
    _rearrange_tile(x_ptr, stats_ptr, w_ptr, b_ptr, p_ptr, channels, hw, n_prompts, groups, out_ptr,
                    tl.program_id(0), tl.program_id(1), tl.program_id(2),
                    EPS, SPLIT, GROUPS_BLOCK, BLOCK_N, BLOCK_C, BLOCK_HW, DOT_IN_FP32)


@triton.jit
def _norm_relu_rearrange_single_kernel(x_ptr, w_ptr, b_ptr, p_ptr, channels, hw, n_prompts, groups, batches,
                                       stats_ptr, sem_ptr, out_ptr,
                                       EPS: tl.constexpr, SPLIT: tl.constexpr, GROUPS_BLOCK: tl.constexpr,
                                       BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr,
                                       DOT_IN_FP32: tl.constexpr, STAGES: tl.constexpr, PHASES: tl.constexpr):
    """Persistent program p of P: the partial moments of spatial tiles p, p + P, ... (SPLIT tiles per map, the
    last ones possibly empty), a grid-wide barrier, then output tiles p, p + P, ... PHASES: 1 moments only,
    2 rearrangement only (the interpreter's two launches), 3 both (one launch, with the barrier)."""
    pid = tl.program_id(0)
    programs = tl.num_programs(0)
    if PHASES % 2 == 1:
        for item in range(pid, batches * SPLIT, programs):
            _tile_moments(x_ptr, stats_ptr, channels, hw, groups, item // SPLIT, item % SPLIT,
                          SPLIT, GROUPS_BLOCK, BLOCK_C, BLOCK_HW, STAGES)
    if PHASES == 3:
        _grid_barrier(sem_ptr)
    if PHASES >= 2:
        n_tiles = tl.cdiv(n_prompts, BLOCK_N)
        hw_tiles = tl.cdiv(hw, BLOCK_HW)
        for item in range(pid, batches * hw_tiles * n_tiles, programs):
            _rearrange_tile(x_ptr, stats_ptr, w_ptr, b_ptr, p_ptr, channels, hw, n_prompts, groups, out_ptr,
                            item % n_tiles, item // n_tiles % hw_tiles, item // (n_tiles * hw_tiles),
                            EPS, SPLIT, GROUPS_BLOCK, BLOCK_N, BLOCK_C, BLOCK_HW, DOT_IN_FP32)


@triton.jit
def _grid_barrier(sem_ptr):
    """Returns once every program of the grid has called it. sem_ptr: an int32 zeroed for this launch.
    The release add publishes this program's stores (bar.sync first gathers all of its threads'); the acquire
    reads make the other programs' stores visible here."""
    tl.debug_barrier()
    tl.atomic_add(sem_ptr, 1, sem="release", scope="gpu")
    arrived = tl.atomic_add(sem_ptr, 0, sem="acquire", scope="gpu")
    while arrived < tl.num_programs(0):
        arrived = tl.atomic_add(sem_ptr, 0, sem="acquire", scope="gpu")
    tl.debug_barrier()


@triton.jit
def _tile_moments(x_ptr, stats_ptr, channels, hw, groups, batch, tile,
                  SPLIT: tl.constexpr, GROUPS_BLOCK: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr,
                  STAGES: tl.constexpr):
    """stats[batch * groups + g, :, tile] = (count, mean - shift, M2) of group g over one spatial tile: the
    layout of group_stats.group_stats, with the tile as the chunk (shift = the group's first value)."""
    channels_per_group = channels // groups
    g = tl.arange(0, GROUPS_BLOCK)
    g_mask = g < groups
    rows = batch * groups + g
    shift_g = tl.load(x_ptr + rows.to(tl.int64) * channels_per_group * hw, mask=g_mask, other=0.0).to(tl.float32)
    s = tile * BLOCK_HW + tl.arange(0, BLOCK_HW)
    s_mask = s < hw
    x_base = x_ptr + tl.cast(batch, tl.int64) * channels * hw  # tl.cast: an int under the interpreter
    acc = tl.zeros([GROUPS_BLOCK], tl.float32)
    acc_sq = tl.zeros([GROUPS_BLOCK], tl.float32)
    for c0 in tl.range(0, channels, BLOCK_C, num_stages=STAGES):
        c = c0 + tl.arange(0, BLOCK_C)
        mask = (c < channels)[:, None] & s_mask[None, :]
        one_hot = (c // channels_per_group)[:, None] == g[None, :]
        shift_c = tl.sum(tl.where(one_hot, shift_g[None, :], 0.0), 1)
        x = tl.load(x_base + c[:, None] * hw + s[None, :], mask=mask, other=0.0)
        d = tl.where(mask, x.to(tl.float32) - shift_c[:, None], 0.0)
        acc += tl.sum(tl.where(one_hot, tl.sum(d, 1)[:, None], 0.0), 0)
        acc_sq += tl.sum(tl.where(one_hot, tl.sum(d * d, 1)[:, None], 0.0), 0)
    pixels = tl.minimum(tl.maximum(hw - tile * BLOCK_HW, 0), BLOCK_HW)
    count = tl.cast(pixels * channels_per_group, tl.float32) + tl.zeros([GROUPS_BLOCK], tl.float32)
    store_moments(stats_ptr + rows * (3 * SPLIT) + tile, count, acc, acc_sq, SPLIT, g_mask)


@triton.jit
def _rearrange_tile(x_ptr, stats_ptr, w_ptr, b_ptr, p_ptr, channels, hw, n_prompts, groups, out_ptr,
                    pid_n, pid_hw, batch, EPS: tl.constexpr, SPLIT: tl.constexpr, GROUPS_BLOCK: tl.constexpr,
                    BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr,
                    DOT_IN_FP32: tl.constexpr):
    """out[batch, prompt tile pid_n, spatial tile pid_hw], the statistics' SPLIT partial moments combined."""
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
    shift_g, mean_g, rstd_g = row_moments(x_ptr, stats_ptr, batch * groups + g, g < groups,
                                           channels_per_group * hw, EPS, SPLIT)

    batch64 = tl.cast(batch, tl.int64)  # batch: a program id, a loop index, or (interpreter) a Python int
    x_base = x_ptr + batch64 * channels * hw
    p_base = p_ptr + batch64 * n_prompts * channels
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

    out = out_ptr + (batch64 * n_prompts + n[:, None]) * hw + s[None, :]
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


def single_tile(hw: int) -> int:
    """Spatial tile of the single launch: the narrowest (16..128) that cuts the map into at most
    SINGLE_MAX_TILES tiles; 0 if none does (the map is too large for it)."""
    tile = 16
    while tile <= 128 and triton.cdiv(hw, tile) > SINGLE_MAX_TILES:
        tile *= 2
    return tile if tile <= 128 else 0


def _interpreted() -> bool:
    return not isinstance(_norm_relu_rearrange_kernel, triton.runtime.JITFunction)


def dot_in_fp32(dtype: torch.dtype) -> bool:
    """fp32 inputs keep fp32 operands. So does bf16 under TRITON_INTERPRET: the interpreter multiplies bf16
    dot operands as their raw uint16 bits."""
    return dtype == torch.float32 or (_interpreted() and dtype == torch.bfloat16)


def norm_relu_rearrange(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int, eps: float,
                        prompts: torch.Tensor, tile_hw: int | None = None, block_c: int = BLOCK_C,
                        num_warps: int = NUM_WARPS, num_stages: int = NUM_STAGES,
                        stats_config: tuple[int, int, int, int] | None = None, single_launch: bool = False,
                        programs: int | None = None) -> torch.Tensor:
    """relu(group_norm(x)) contracted with prompts: x (B, C, H, W), prompts (B, N, C) -> (B, N, H, W), x's dtype.

    `single_launch` takes the one-launch path (maps of up to SINGLE_MAX_TILES x 128 pixels), on `programs`
    persistent programs (default: one per SM, the most that are surely resident together; where the process
    may use fewer SMs than the device has, as under an MPS SM limit, pass at most that many).
    `tile_hw` forces the spatial tile (by default `block_hw` or `single_tile` picks it); it, `block_c`,
    `num_warps`, `num_stages`, `stats_config` (group_stats' programs, block, warps, stages) and `programs`
    are there for tests and benchmark sweeps."""
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
    x, prompts, weight, bias = x.contiguous(), prompts.contiguous(), weight.contiguous(), bias.contiguous()
    bn = block_n(n_prompts)
    common = dict(EPS=eps, GROUPS_BLOCK=max(2, triton.next_power_of_2(groups)), BLOCK_N=bn, BLOCK_C=block_c,
                  DOT_IN_FP32=dot_in_fp32(x.dtype), num_warps=num_warps, num_stages=num_stages)
    if single_launch:
        bhw = tile_hw or single_tile(hw)
        if not bhw or triton.cdiv(hw, bhw) > SINGLE_MAX_TILES:
            raise ValueError(f"norm_relu_rearrange: a {height}x{width} map is more than {SINGLE_MAX_TILES} "
                             f"spatial tiles of {bhw or 128} pixels: too large for the single launch")
        hw_tiles = triton.cdiv(hw, bhw)
        split = max(2, triton.next_power_of_2(hw_tiles))
        items = batch * max(split, hw_tiles * triton.cdiv(n_prompts, bn))
        if programs is None:
            programs = torch.cuda.get_device_properties(x.device).multi_processor_count if x.is_cuda else 4
        grid = (min(programs, items),)
        stats = torch.empty((batch * groups, 3, split), device=x.device, dtype=torch.float32)
        sem = torch.zeros(1, device=x.device, dtype=torch.int32)
        kernel = traceable(_norm_relu_rearrange_single_kernel, x)
        # the interpreter runs programs one after another: a barrier would wait forever
        for phases in ((1, 2) if _interpreted() else (3,)):
            kernel[grid](x, weight, bias, prompts, channels, hw, n_prompts, groups, batch, stats, sem, out,
                         SPLIT=split, BLOCK_HW=bhw, STAGES=num_stages, PHASES=phases, **common)
        return out
    stats = group_stats(x, groups, *(stats_config or ()))
    bhw = tile_hw or block_hw(hw, n_prompts, batch)
    grid = (triton.cdiv(n_prompts, bn), triton.cdiv(hw, bhw), batch)
    traceable(_norm_relu_rearrange_kernel, x)[grid](
        x, stats, weight, bias, prompts, channels, hw, n_prompts, groups, out,
        SPLIT=stats.shape[-1], BLOCK_HW=bhw, **common)
    return out


def _op_body(x: Tensor, weight: Tensor, bias: Tensor, groups: int, eps: float, prompts: Tensor) -> Tensor:
    # traced by torch.compile / AOTInductor for every device: CPU artifacts get the reference, no Triton kernel
    if x.device.type != "cuda":
        return ops.norm_relu_rearrange_reference(x, weight, bias, groups, eps, prompts)
    return norm_relu_rearrange(x, weight, bias, groups, eps, prompts)


def _fake(x: Tensor, weight: Tensor, bias: Tensor, groups: int, eps: float, prompts: Tensor) -> Tensor:
    batch, _, height, width = x.shape
    return x.new_empty((batch, prompts.shape[1], height, width))


norm_relu_rearrange_op = define_op("norm_relu_rearrange", _op_body, ops.norm_relu_rearrange_reference, _fake)


def norm_relu_rearrange_spec(x_type: str, w_type: str, b_type: str, p_type: str, groups: int, eps: float,
                             block_n: int, block_hw: int | None = None):
    """The `norm_relu_rearrange` TensorRT plugin's kernel as tensorrt_plugins.compile_kernel's arguments (less
    arch): the two-launch main pass over the group_stats plugin's TRT_SPLIT partial moments. Types are Triton's."""
    params = (("x_ptr", "*" + x_type), ("stats_ptr", "*fp32"), ("w_ptr", "*" + w_type), ("b_ptr", "*" + b_type),
              ("p_ptr", "*" + p_type), ("channels", "i32"), ("hw", "i32"), ("n_prompts", "i32"), ("groups", "i32"),
              ("out_ptr", "*" + x_type))
    constexprs = (("EPS", float(eps)), ("SPLIT", TRT_SPLIT), ("GROUPS_BLOCK", max(2, 1 << (groups - 1).bit_length())),
                  ("BLOCK_N", block_n), ("BLOCK_C", BLOCK_C), ("BLOCK_HW", block_hw or BLOCK_HW),
                  ("DOT_IN_FP32", x_type == "fp32"))
    return _norm_relu_rearrange_kernel, params, constexprs, NUM_WARPS, NUM_STAGES
