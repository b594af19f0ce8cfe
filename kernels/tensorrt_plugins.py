"""The fused kernels as TensorRT Python plugins ("Quick Deployable Plugins", `tensorrt.plugin`).

Each plugin has an ahead-of-time implementation (`@trtp.aot_impl`): at engine build its Triton kernel is
compiled to PTX for the building GPU and embedded in the engine, so the engine runs from C++ (trtexec, the
cpp/ runner) with neither Python nor Triton. An AOT plugin launches exactly one kernel, with its arguments
in this order: input pointers, int32 scalars (symbolic shape expressions), output pointers; floats and
everything else are compile-time constants (attributes are not serialized into AOT engines). The kernels of
the op files take their parameters in that order, so they are reused unchanged: each op file says what its
plugin compiles (`*_spec`); this module holds the TensorRT side (compile, launch, register, add to a network).

Because of the one-kernel rule the fused rearrangement is two plugins, chained by `add_norm_relu_rearrange`:

  mp_deploy::group_stats(x) -> stats                        attrs: groups:int
      x      (B, C, H, W) fp32/fp16/bf16, C % groups == 0
      stats  (B * groups, 3, TRT_SPLIT) fp32: per chunk of each (batch, group) row: count,
             mean minus the row's first value, M2 (group_stats.py)
  mp_deploy::norm_relu_rearrange(x, stats, weight, bias, prompts) -> out    attrs: groups:int, eps:float
      weight, bias (C,) GroupNorm affine (any float dtype); prompts (B, N, C) same dtype as x
      out    (B, N, H, W) x's dtype: sum_c relu(groupnorm(x))[b, c] * prompts[b, n, c]
  mp_deploy::group_norm_act(x, weight, bias) -> y           attrs: groups:int, eps:float, silu:int (0/1)
      x (B, C, H, W), weight/bias (C,) -> y like x: GroupNorm (fp32 statistics), then SiLU if silu.
      One program per (batch, group) (the fused kernel): made for the UNet's small groups; for big groups
      the torch op's split path fills the GPU better (TensorRT's own GroupNorm is an alternative).

All tensors must be contiguous (linear format), which is TensorRT's default for plugins without autotune.
In ONNX, a node with op "group_stats" / "norm_relu_rearrange" / "group_norm_act", attribute
plugin_namespace="mp_deploy", the attributes above and aot=1 selects the same plugins.
Requires TensorRT >= 10.8 (aot_impl), Triton and a CUDA GPU at build time; none of them at run time.
"""
from functools import lru_cache
from typing import Optional, Tuple, Union

from . import norm_relu_rearrange as nrr
from .group_norm import group_norm_act_spec
from .group_stats import TRT_SPLIT, group_stats_spec

try:
    import tensorrt as trt
    import tensorrt.plugin as trtp
except ImportError:  # TensorRT is optional: the rest of mp_deploy.kernels works without it
    trt = None
    trtp = None

PLUGIN_NAMESPACE = "mp_deploy"
GROUP_STATS = "group_stats"
NORM_RELU_REARRANGE = "norm_relu_rearrange"
GROUP_NORM_ACT = "group_norm_act"
_registered = False


def _plugin_id(name: str) -> str:
    return f"{PLUGIN_NAMESPACE}::{name}"


def _require_tensorrt() -> None:
    if trt is None:
        raise RuntimeError("TensorRT plugins need the `tensorrt` Python package (>= 10.8, with tensorrt.plugin); "
                           "install mp-deploy[tensorrt] on a machine with a CUDA GPU")


def _triton_type(dtype) -> str:
    types = {trt.float32: "fp32", trt.float16: "fp16", trt.bfloat16: "bf16"}
    if dtype not in types:
        raise TypeError(f"mp_deploy TensorRT plugins support fp32/fp16/bf16 tensors, not {dtype}")
    return types[dtype]


@lru_cache(maxsize=None)
def compile_kernel(kernel, params: Tuple[Tuple[str, str], ...], constexprs: Tuple[Tuple[str, object], ...],
                   num_warps: int, num_stages: int, arch: Optional[int] = None):
    """triton.compile of `kernel` for sm_<arch> (default: the current GPU).

    params: (name, Triton type) of the runtime parameters in kernel order; constexprs: (name, value).
    """
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    if arch is None:
        import torch

        major, minor = torch.cuda.get_device_capability()
        arch = major * 10 + minor
    constants = dict(constexprs)
    signature = {name: kind for name, kind in params}
    signature.update({name: "constexpr" for name in constants})
    # TensorRT's buffers are 256-byte aligned: let Triton vectorise pointer accesses as its JIT does
    aligned = {(i,): [["tt.divisibility", 16]] for i, (_, kind) in enumerate(params) if kind.startswith("*")}
    compiled = triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=constants, attrs=aligned),
                              target=GPUTarget("cuda", arch, 32),
                              options={"num_warps": num_warps, "num_stages": num_stages})
    # Triton (>= 3.3) appends hidden scratch-pointer parameters that TensorRT does not pass: only kernels that
    # never use them may be launched this way
    meta = compiled.metadata
    if getattr(meta, "global_scratch_size", 0) or getattr(meta, "profile_scratch_size", 0):
        raise RuntimeError(f"{kernel.fn.__name__} needs Triton scratch memory, which TensorRT AOT plugins lack")
    return compiled


def _launch(compiled, grid, scalars):
    """(kernel name, PTX, launch params, int32 scalar args): what an aot_impl returns."""
    params = trtp.KernelLaunchParams()
    params.grid_x, params.grid_y, params.grid_z = grid
    params.block_x = compiled.metadata.num_warps * 32
    params.shared_mem = compiled.metadata.shared
    extra = trtp.SymIntExprs(len(scalars))
    for i, value in enumerate(scalars):
        extra[i] = trtp.SymInt32(value)
    return compiled.metadata.name, compiled.asm["ptx"], params, extra


def _constant(expr, default: int) -> int:
    """A shape expression's value when fixed at build time, else `default` (for block sizes)."""
    return expr.constant_value() if not expr.is_fake and expr.is_constant else default


def register_plugins() -> None:
    """Register the mp_deploy plugins with TensorRT (idempotent). Raises RuntimeError without TensorRT."""
    global _registered
    _require_tensorrt()
    if _registered:
        return
    Launch = Tuple[Union[str, bytes], Union[str, bytes], trtp.KernelLaunchParams, trtp.SymIntExprs]

    @trtp.register(_plugin_id(GROUP_STATS))
    def _group_stats_desc(x: trtp.TensorDesc, groups: int) -> trtp.TensorDesc:
        return trtp.from_shape_expr((x.shape_expr[0] * groups, 3, TRT_SPLIT), trt.float32)

    @trtp.aot_impl(_plugin_id(GROUP_STATS))
    def _group_stats_aot(x: trtp.TensorDesc, groups: int, outputs: Tuple[trtp.TensorDesc], tactic: int) -> Launch:
        shape = x.shape_expr
        compiled = compile_kernel(*group_stats_spec(_triton_type(x.dtype)))
        return _launch(compiled, (TRT_SPLIT, shape[0] * groups, 1), [shape[1] // groups * shape[2] * shape[3]])

    @trtp.register(_plugin_id(NORM_RELU_REARRANGE))
    def _norm_relu_rearrange_desc(x: trtp.TensorDesc, stats: trtp.TensorDesc, weight: trtp.TensorDesc,
                                  bias: trtp.TensorDesc, prompts: trtp.TensorDesc, groups: int,
                                  eps: float) -> trtp.TensorDesc:
        shape = x.shape_expr
        return trtp.from_shape_expr((shape[0], prompts.shape_expr[1], shape[2], shape[3]), x.dtype)

    @trtp.aot_impl(_plugin_id(NORM_RELU_REARRANGE))
    def _norm_relu_rearrange_aot(x: trtp.TensorDesc, stats: trtp.TensorDesc, weight: trtp.TensorDesc,
                                 bias: trtp.TensorDesc, prompts: trtp.TensorDesc, groups: int, eps: float,
                                 outputs: Tuple[trtp.TensorDesc], tactic: int) -> Launch:
        shape = x.shape_expr
        n_prompts, hw = prompts.shape_expr[1], shape[2] * shape[3]
        fixed_prompts = _constant(n_prompts, 64)
        block_n = nrr.block_n(fixed_prompts)
        fixed_hw, fixed_batch = _constant(hw, 0), _constant(shape[0], 0)
        block_hw = nrr.BLOCK_HW  # dynamic shapes: a middle tile; fixed ones get the torch op's choice
        if fixed_hw and fixed_batch:
            block_hw = nrr.block_hw(fixed_hw, fixed_prompts, fixed_batch)
        compiled = compile_kernel(*nrr.norm_relu_rearrange_spec(
            _triton_type(x.dtype), _triton_type(weight.dtype), _triton_type(bias.dtype), _triton_type(prompts.dtype),
            groups, eps, block_n, block_hw))
        grid = (trtp.cdiv(n_prompts, block_n), trtp.cdiv(hw, block_hw), shape[0])
        return _launch(compiled, grid, [shape[1], hw, n_prompts, groups])

    @trtp.register(_plugin_id(GROUP_NORM_ACT))
    def _group_norm_act_desc(x: trtp.TensorDesc, weight: trtp.TensorDesc, bias: trtp.TensorDesc, groups: int,
                             eps: float, silu: int) -> trtp.TensorDesc:
        return x.like()

    @trtp.aot_impl(_plugin_id(GROUP_NORM_ACT))
    def _group_norm_act_aot(x: trtp.TensorDesc, weight: trtp.TensorDesc, bias: trtp.TensorDesc, groups: int,
                            eps: float, silu: int, outputs: Tuple[trtp.TensorDesc], tactic: int) -> Launch:
        shape = x.shape_expr
        hw = shape[2] * shape[3]
        compiled = compile_kernel(*group_norm_act_spec(
            _triton_type(x.dtype), _triton_type(weight.dtype), _triton_type(bias.dtype), eps, bool(silu)))
        return _launch(compiled, (shape[0] * groups, 1, 1), [shape[1] // groups * hw, hw, groups])

    _registered = True


def add_norm_relu_rearrange(network, x, weight, bias, prompts, groups: int, eps: float):
    """Add group_stats + norm_relu_rearrange (AOT) to a TensorRT network; returns the output ITensor."""
    register_plugins()
    ns = getattr(trtp.op, PLUGIN_NAMESPACE)
    stats = network.add_plugin(ns.group_stats(x, groups=int(groups)), aot=True).get_output(0)
    layer = network.add_plugin(ns.norm_relu_rearrange(x, stats, weight, bias, prompts, groups=int(groups),
                                                      eps=float(eps)), aot=True)
    return layer.get_output(0)


def add_group_norm_act(network, x, weight, bias, groups: int, eps: float, silu: bool):
    """Add group_norm_act (AOT) to a TensorRT network; returns the output ITensor."""
    register_plugins()
    ns = getattr(trtp.op, PLUGIN_NAMESPACE)
    layer = network.add_plugin(ns.group_norm_act(x, weight, bias, groups=int(groups), eps=float(eps),
                                                 silu=int(bool(silu))), aot=True)
    return layer.get_output(0)
