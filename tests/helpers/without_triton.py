"""mp_deploy.kernels without Triton installed: the ops still register, backed by the plain-PyTorch references."""
import sys

sys.modules["triton"] = None  # before anything imports it: `import triton` now raises ImportError

import torch  # noqa: E402

import mp_deploy.kernels as k  # noqa: E402
from mp_deploy import ops  # noqa: E402

x, w, b, p = torch.randn(1, 32, 3, 5), torch.randn(32), torch.randn(32), torch.randn(1, 4, 32)
assert not k.HAS_TRITON
assert torch.equal(torch.ops.mp_deploy.norm_relu_rearrange(x, w, b, 16, 1e-5, p),
                   ops.norm_relu_rearrange(x, w, b, 16, 1e-5, p))
assert torch.ops.mp_deploy.group_norm_act(x.to("meta"), w, b, 8, 1e-5, True).shape == x.shape
print("ok")
