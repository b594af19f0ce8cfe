"""mp_deploy.ops imports nothing of mp_deploy.kernels (the kernels register themselves with ops), and an op
switched on with nothing registered says what to import."""
import sys

import torch

from mp_deploy import ops

assert not any(name.startswith("mp_deploy.kernels") for name in sys.modules), sorted(sys.modules)
x = torch.randn(1, 4, 2, 2)
with ops.use_kernels(any_device=True):
    try:
        ops.group_norm_act(x, torch.ones(4), torch.zeros(4), 2, 1e-5, True)
    except ops.KernelNotRegistered as e:
        assert "import mp_deploy.kernels" in str(e), e
    else:
        raise AssertionError("no KernelNotRegistered with nothing registered")
assert not any(name.startswith("mp_deploy.kernels") for name in sys.modules)
print("ok")
