"""What a served model looks like from outside, read from an artifact's sidecar: its name `<task>-<preset>`, one
uint8 input `images` (N, H, W, 3) and the task's outputs as `Engine.run` returns them. One description for
`mp-deploy serve` (PyTriton) and for the model repository (config.pbtxt), so both expose the same tensors.
Imports neither PyTriton nor tritonclient."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mp_deploy import tasks
from mp_deploy.artifacts import read_sidecar
from mp_deploy.errors import UsageError

INPUT = "images"
# a Python-backend model's config parameters (repo.py writes them, triton_model.py reads them), and the tensors
# between the pre-processing, network and post-processing models of an ensemble
ROLE, ARTIFACT, SIDECAR = "mp_deploy_role", "artifact", "sidecar"
PIXELS, RAW = "pixels", "raw"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: type  # a numpy scalar type
    dims: tuple  # without the batch dimension; -1 where it varies


@dataclass(frozen=True)
class ModelSpec:
    name: str
    path: Path
    meta: dict

    @property
    def max_batch(self) -> int:
        return self.meta["shapes"]["batch"][2]

    def hw(self, which: int) -> tuple[int, int]:
        """(height, width) at index `which` of the shape ranges: 0 min, 1 opt, 2 max."""
        shapes = self.meta["shapes"]
        return shapes["height"][which], shapes["width"][which]

    # dims: -1 where the artifact takes a range of sizes, or its size at `at` (0 min, 1 opt, 2 max) when given

    def inputs(self, at: int | None = None) -> list[TensorSpec]:
        h, w = (_side(self.meta["shapes"][k], at) for k in ("height", "width"))
        return [TensorSpec(INPUT, np.uint8, (h, w, 3))]

    def outputs(self, at: int | None = None) -> list[TensorSpec]:
        """What Engine.run returns, per image (the task's Task.served_outputs)."""
        c, h, w = self.network(at)[1].dims
        return [TensorSpec(name, dtype, tuple(dims))
                for name, dtype, dims in tasks.get(self.meta["task"]).served_outputs(c, h, w)]

    def network(self, at: int | None = None) -> tuple[TensorSpec, TensorSpec]:
        """The artifact's own input and output (the contract's names and dtypes): normalised NCHW pixels in, the
        raw (C, H / stride, W / stride) map out."""
        shapes, inp, out = self.meta["shapes"], self.meta["input"], self.meta["output"]
        h, w = (_side(shapes[k], at) for k in ("height", "width"))
        oh, ow = (_side(shapes[k], at, out["stride"]) for k in ("height", "width"))
        channels = tasks.get(self.meta["task"]).output_channels(out)
        return (TensorSpec(inp["name"], np.dtype(inp["dtype"]).type, (3, h, w)),
                TensorSpec(out["name"], np.dtype(out["dtype"]).type, (channels, oh, ow)))


def _side(limits, at: int | None, stride: int = 1) -> int:
    lo, _, hi = limits
    return limits[at] // stride if at is not None else lo // stride if lo == hi else -1


def model_name(meta: dict) -> str:
    return f"{meta['task']}-{meta['preset']['name']}"


def describe(paths, check_machine: bool = True) -> list[ModelSpec]:
    """One ModelSpec per artifact (sidecar verified); UsageError when two would get the same model name.
    check_machine=False for a repository that runs elsewhere (a TensorRT plan for another GPU)."""
    specs, seen = [], {}
    for path in map(Path, paths):
        meta = read_sidecar(path, check_machine=check_machine)
        name = model_name(meta)
        if name in seen:
            raise UsageError(f"{seen[name].name} and {path.name} would both be served as model {name!r}: "
                             "give one artifact per task and preset")
        seen[name] = path
        specs.append(ModelSpec(name, path, meta))
    if not specs:
        raise UsageError("no artifact to serve")
    return specs
