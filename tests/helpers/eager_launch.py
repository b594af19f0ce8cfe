"""Eager calls launch the kernel itself; under tracing (fake tensors, dispatch modes) wrap_triton's wrapper."""
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from mp_deploy.kernels.group_stats import _group_stats_kernel as k
from mp_deploy.kernels.utils import traceable

assert traceable(k, torch.empty(2)) is k
with FakeTensorMode() as mode:
    wrapped = traceable(k, torch.empty(2))
assert type(wrapped).__name__ == "TraceableTritonKernelWrapper", type(wrapped)
print("ok")
