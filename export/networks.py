"""What gets exported: one task network with its inputs, outputs, shape range and precision.

The R refinement steps are a Python loop in the eager model; torch.export traces it into one static graph
(the loop unrolled, the shared UNet weights stored once, no Python control flow left).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.export import Dim

from mp_deploy import tasks
from mp_deploy.artifacts import describe_io
from mp_deploy.configs import preset_to_dict
from mp_deploy.errors import UsageError
from mp_deploy.precision import to_precision

MULTIPLE = 64  # every task network takes sides that are multiples of 64 (the UNet's total stride x 8)


@dataclass(frozen=True)
class ShapeRange:
    batch: tuple[int, int, int]
    height: tuple[int, int, int]
    width: tuple[int, int, int]
    multiple_of: int = MULTIPLE

    def __post_init__(self):
        for name in ("batch", "height", "width"):
            lo, opt, hi = getattr(self, name)
            if not 1 <= lo <= opt <= hi:
                raise UsageError(f"{name} range must satisfy 1 <= min <= opt <= max, got {lo},{opt},{hi}")
        for name in ("height", "width"):  # a dynamic side is 64 x a dynamic block count; a static one is free
            lo, opt, hi = getattr(self, name)
            if lo != hi and any(v % self.multiple_of for v in (lo, opt, hi)):
                raise UsageError(f"a dynamic {name} range must use multiples of {self.multiple_of}, got {lo},{opt},{hi}")
            if lo == hi and opt != lo:
                raise UsageError(f"static {name} {lo} needs opt {lo}, got {opt}")

    def shape(self, which: str = "opt") -> tuple[int, int, int, int]:
        i = {"min": 0, "opt": 1, "max": 2}[which]
        return (self.batch[i], 3, self.height[i], self.width[i])

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def static(self) -> bool:
        return all(lo == hi for lo, _, hi in (self.batch, self.height, self.width))


class TaskNetwork:
    """The exportable form of one task model: images (B, 3, H, W) in [0, 1] -> one output tensor."""

    def __init__(self, model: nn.Module, precision: str, shapes: ShapeRange, device: str = "cpu"):
        self.task = model.task
        self.preset = preset_to_dict(model.preset)
        self.size = model.size.name
        self.precision = precision
        self.shapes = shapes
        self.device = device
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        self.model = to_precision(model, precision).to(device)
        self.input_names = ["images"]
        self.output_names = [tasks.get(self.task).output_name]
        self.io = describe_io(self.task, self.preset, precision)

    def sample(self, which: str = "opt", seed: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return torch.rand(self.shapes.shape(which), generator=g).to(self.device, self.dtype)

    def dynamic_shapes(self):
        s = self.shapes
        dims = {}
        if s.batch[0] != s.batch[2]:
            dims[0] = Dim("batch", min=s.batch[0], max=s.batch[2])
        for axis, name, (lo, _, hi) in ((2, "height", s.height), (3, "width", s.width)):
            if lo != hi:
                # sides are multiples of 64: the UNet's size arithmetic then stays exact and guard-free
                dims[axis] = s.multiple_of * Dim(f"{name}_blocks", min=lo // s.multiple_of, max=hi // s.multiple_of)
        return ({k: v for k, v in dims.items()},)

    def trace_sample(self) -> torch.Tensor:
        """The opt shape, except that dynamic sizes of 1 (in batch or 64-px blocks) are traced at 2: torch.export
        would specialise a traced 1 into a constant."""
        b, _, h, w = self.shapes.shape("opt")
        m = self.shapes.multiple_of
        s = self.shapes
        if s.batch[0] != s.batch[2]:
            b = max(b, min(2, s.batch[2]))
        if s.height[0] != s.height[2]:
            h = max(h, min(2 * m, s.height[2]))
        if s.width[0] != s.width[2]:
            w = max(w, min(2 * m, s.width[2]))
        return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(0)).to(self.device, self.dtype)

    def export_program(self) -> torch.export.ExportedProgram:
        """torch.export with the dynamic ranges: the unrolled static graph."""
        with torch.no_grad():
            return torch.export.export(self.model, (self.trace_sample(),), dynamic_shapes=self.dynamic_shapes())
