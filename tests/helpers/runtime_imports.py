"""The runtime is a leaf: importing mp_deploy.engine, and loading and running an .onnx through it (argv[1], if
given), imports neither diffusers nor the model or checkpoint code."""
import sys

import numpy as np

from mp_deploy.engine import Engine

HEAVY = ("diffusers", "mp_deploy.models", "mp_deploy.checkpoints", "mp_deploy.backbone", "mp_deploy.unet")


def loaded() -> list[str]:
    return sorted(m for m in sys.modules if m.split(".")[0] == "diffusers" or m in HEAVY)


assert not loaded(), loaded()
if len(sys.argv) > 1:
    engine = Engine.load(sys.argv[1])
    h, w = engine.meta["shapes"]["height"][1], engine.meta["shapes"]["width"][1]
    out = engine.run(np.zeros((h, w, 3), np.uint8))
    assert out and not loaded(), loaded()
print("ok")
