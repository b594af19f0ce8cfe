"""Every kernel through Triton's real compiler for sm_90 (no GPU needed): the TensorRT plugins' specs as
tensorrt_plugins.compile_kernel compiles them, and the kernels only the torch ops launch."""
from mp_deploy.kernels import group_norm as gn, group_stats as gs, norm_relu_rearrange as nrr, tensorrt_plugins as tp

specs = [gs.group_stats_spec("fp16"),
         gn.group_norm_act_spec("bf16", "fp32", "fp32", 1e-6, True),
         nrr.norm_relu_rearrange_spec("fp16", "fp16", "fp16", "fp16", 16, 1e-5, 64),
         nrr.norm_relu_rearrange_spec("bf16", "bf16", "bf16", "bf16", 16, 1e-5, 16),
         nrr.norm_relu_rearrange_spec("fp32", "fp32", "fp32", "fp32", 32, 1e-5, 16),
         nrr.norm_relu_rearrange_spec("fp16", "fp16", "fp16", "fp16", 16, 1e-5, 64, 16),
         nrr.norm_relu_rearrange_spec("fp16", "fp32", "fp32", "fp16", 16, 1e-5, 64, 128),
         (gn._group_norm_fused_kernel,
          (("x_ptr", "*fp16"), ("w_ptr", "*fp16"), ("b_ptr", "*fp16"), ("group_numel", "i32"),
           ("hw", "i32"), ("groups", "i32"), ("y_ptr", "*fp16")),
          (("EPS", 1e-5), ("SILU", True), ("BLOCK", gn.FUSED_MAX_GROUP), ("ONE_TILE", True),
           ("STAGES", gn.STAGES)), 16, 1),
         (gn._group_norm_apply_kernel,
          (("x_ptr", "*fp16"), ("stats_ptr", "*fp32"), ("w_ptr", "*fp16"), ("b_ptr", "*fp16"),
           ("group_numel", "i32"), ("hw", "i32"), ("groups", "i32"), ("y_ptr", "*fp16")),
          (("EPS", 1e-5), ("SILU", True), ("SPLIT", 16), ("BLOCK", gn.APPLY_BLOCK)), gn.NUM_WARPS, 1)]
for spec in specs:
    kernel = tp.compile_kernel(*spec, arch=90)
    assert ".entry " + kernel.metadata.name in kernel.asm["ptx"]
print("ok")
