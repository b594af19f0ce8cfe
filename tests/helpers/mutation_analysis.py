"""torch's mutation analysis of every Triton kernel call sees only the outputs written.

torch.export / AOTInductor run it on each kernel call: it compiles the kernel to TTIR and reads which pointers
it stores to. If that fails, torch assumes every input is mutated (extra copies) and logs a traceback per call;
torch 2.11 passes the int scalars as Python ints there, so each kernel is also compiled that way here.
"""
import torch
import torch._higher_order_ops.triton_kernel_wrap as wrap
import triton

from mp_deploy.kernels import group_norm as gn, group_stats as gs, norm_relu_rearrange as nrr

if not torch.cuda.is_available():  # the analysis only needs a target, not a GPU
    from triton.backends.compiler import GPUTarget

    class Target:
        def get_current_target(self):
            return GPUTarget("cuda", 90, 32)

    triton.runtime.driver.set_active(Target())
x, y, w = torch.empty(2, 64, 8, 8, dtype=torch.float16), torch.empty(2, 64, 8, 8, dtype=torch.float16), torch.empty(64)
stats, p, out = torch.empty(32, 3, 16), torch.empty(2, 50, 64, dtype=torch.float16), torch.empty(2, 50, 8, 8)
sem = torch.zeros(1, dtype=torch.int32)
calls = [
    (gs._group_stats_kernel, dict(x_ptr=x, group_numel=256, stats_ptr=stats, SPLIT=16, BLOCK=1024, STAGES=3),
     "stats_ptr"),
    (gn._group_norm_apply_kernel, dict(x_ptr=x, stats_ptr=stats, w_ptr=w, b_ptr=w, group_numel=256, hw=64, groups=16,
                                       y_ptr=y, EPS=1e-5, SILU=True, SPLIT=16, BLOCK=2048), "y_ptr"),
    (gn._group_norm_fused_kernel, dict(x_ptr=x, w_ptr=w, b_ptr=w, group_numel=256, hw=64, groups=16, y_ptr=y,
                                       EPS=1e-5, SILU=True, BLOCK=256, ONE_TILE=True, STAGES=3), "y_ptr"),
    (gn._group_norm_fused_kernel, dict(x_ptr=x, w_ptr=w, b_ptr=w, group_numel=256, hw=64, groups=16, y_ptr=y,
                                       EPS=1e-5, SILU=True, BLOCK=128, ONE_TILE=False, STAGES=3), "y_ptr"),
    (nrr._norm_relu_rearrange_kernel, dict(x_ptr=x, stats_ptr=stats, w_ptr=w, b_ptr=w, p_ptr=p, channels=64, hw=64,
                                           n_prompts=50, groups=16, out_ptr=out, EPS=1e-5, SPLIT=16, GROUPS_BLOCK=16,
                                           BLOCK_N=64, BLOCK_C=64, BLOCK_HW=32, DOT_IN_FP32=False), "out_ptr"),
    (nrr._norm_relu_rearrange_single_kernel,
     dict(x_ptr=x, w_ptr=w, b_ptr=w, p_ptr=p, channels=64, hw=64, n_prompts=50, groups=16, batches=2, stats_ptr=stats,
          sem_ptr=sem, out_ptr=out, EPS=1e-5, SPLIT=16, GROUPS_BLOCK=16, BLOCK_N=64, BLOCK_C=64, BLOCK_HW=32,
          DOT_IN_FP32=False, STAGES=3, PHASES=3), "stats_ptr sem_ptr out_ptr"),
]
for kernel, kwargs, written in calls:
    if hasattr(wrap, "identify_accessed_tensors"):  # torch >= 2.12
        writes = {dep.name for dep in wrap.identify_accessed_tensors(kernel, kwargs, {}).read_writes.writes}
    else:
        writes = set(wrap.identify_mutated_tensors(kernel, kwargs, {}))
    assert writes == set(written.split()), (kernel.fn.__name__, writes)
    # the same kernel with every int scalar a compile-time constant, as torch 2.11's analysis compiles it
    ints = {k: v for k, v in kwargs.items() if isinstance(v, int) and not isinstance(v, bool)}
    signature = {k: ("constexpr" if k in ints or kernel.params[kernel.arg_names.index(k)].is_constexpr else
                     {torch.float16: "*fp16", torch.float32: "*fp32", torch.int32: "*i32"}[v.dtype])
                 for k, v in kwargs.items()}
    constants = {k: v for k, v in kwargs.items() if signature[k] == "constexpr"}
    triton.compile(triton.compiler.ASTSource(fn=kernel, signature=signature, constexprs=constants),
                   target=triton.backends.compiler.GPUTarget("cuda", 90, 32))
print("ok")
