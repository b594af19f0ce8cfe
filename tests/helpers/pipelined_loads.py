"""Compiles the reduction loops for sm_90 with the pointer alignment and divisible sizes the JIT specialises
on, and prints how many asynchronous copies (software pipelining) and gpu-scope release / acquire operations
(the single launch's grid barrier) their PTX holds, as `name count` pairs for the test to check."""
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from mp_deploy.kernels import group_stats as gs, norm_relu_rearrange as nrr


def ptx(kernel, params, constexprs, warps, stages):
    signature = dict(params) | {name: "constexpr" for name in constexprs}
    attrs = {(i,): [["tt.divisibility", 16]] for i in range(len(params))}
    return triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=attrs),
                          target=GPUTarget("cuda", 90, 32),
                          options={"num_warps": warps, "num_stages": stages}).asm["ptx"]


stats = ptx(gs._group_stats_kernel, (("x_ptr", "*fp16"), ("group_numel", "i32"), ("stats_ptr", "*fp32")),
            {"SPLIT": 32, "BLOCK": gs.BLOCK, "STAGES": gs.STAGES}, gs.NUM_WARPS, 1)
apply = ptx(nrr._norm_relu_rearrange_kernel,
            (("x_ptr", "*fp16"), ("stats_ptr", "*fp32"), ("w_ptr", "*fp16"), ("b_ptr", "*fp16"),
             ("p_ptr", "*fp16"), ("channels", "i32"), ("hw", "i32"), ("n_prompts", "i32"),
             ("groups", "i32"), ("out_ptr", "*fp16")),
            {"EPS": 1e-5, "SPLIT": 32, "GROUPS_BLOCK": 16, "BLOCK_N": 64, "BLOCK_C": nrr.BLOCK_C,
             "BLOCK_HW": 16, "DOT_IN_FP32": False}, nrr.NUM_WARPS, nrr.NUM_STAGES)
single = ptx(nrr._norm_relu_rearrange_single_kernel,
             (("x_ptr", "*fp16"), ("w_ptr", "*fp16"), ("b_ptr", "*fp16"), ("p_ptr", "*fp16"),
              ("channels", "i32"), ("hw", "i32"), ("n_prompts", "i32"), ("groups", "i32"), ("batches", "i32"),
              ("stats_ptr", "*fp32"), ("sem_ptr", "*i32"), ("out_ptr", "*fp16")),
             {"EPS": 1e-5, "SPLIT": 128, "GROUPS_BLOCK": 16, "BLOCK_N": 64, "BLOCK_C": nrr.BLOCK_C,
              "BLOCK_HW": 32, "DOT_IN_FP32": False, "STAGES": nrr.NUM_STAGES, "PHASES": 3},
             nrr.NUM_WARPS, nrr.NUM_STAGES)
print("stats", stats.count("cp.async.cg"), "apply", apply.count("cp.async.cg"),
      "single", single.count("cp.async.cg"), "release", single.count(".gpu.release."),
      "acquire", single.count(".gpu.acquire."))
