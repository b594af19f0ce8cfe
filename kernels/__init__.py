"""The model's fused kernels as torch operators; importing this package registers them, with mp_deploy.ops too.

One file per op, each with its Triton kernels, launcher, torch op registration (with its fake) and TensorRT
plugin spec:
- group_norm.py: torch.ops.mp_deploy.group_norm_act(x, weight, bias, groups, eps, silu) -> x's shape
- norm_relu_rearrange.py: torch.ops.mp_deploy.norm_relu_rearrange(x, weight, bias, groups, eps, prompts)
  -> (B, N, H, W)
- group_stats.py: the statistics pass both launch (no torch op of its own; the `group_stats` TensorRT plugin)
tensorrt_plugins.py turns the specs into TensorRT AOT plugins.

- CUDA: Triton kernels, registered with torch.library.triton_op and, while torch traces, launched through
  wrap_triton, so torch.compile / torch.export + AOTInductor see the kernels and compile them into the
  artifact (eager calls launch them directly: utils.traceable).
- CPU: the plain-PyTorch references of mp_deploy.ops (CPU exports, tests of the op).
- fake/meta: shapes and dtypes only.
Without Triton the ops are still registered (torch.library.custom_op), backed by the references alone.
"""
from . import group_norm, norm_relu_rearrange  # noqa: F401  (each registers its torch op)
from .utils import HAS_TRITON  # noqa: F401
