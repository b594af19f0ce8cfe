"""Load an AOTInductor package in this fresh process, as a deployment would, run it on saved inputs and
compare with the saved eager output.

    python -m helpers.load_aoti_package IO.pt PACKAGE.pt2
"""
import sys

import torch

io = torch.load(sys.argv[1])
run = torch._inductor.aoti_load_package(sys.argv[2])
with torch.no_grad():
    got = run(io["x"], io["prompts"])
torch.testing.assert_close(got, io["expected"], atol=2e-2, rtol=2e-2)
print("ok")
