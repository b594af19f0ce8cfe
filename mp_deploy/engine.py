"""One runtime for every backend: `Engine.load(path).run(images)` -> task outputs.

Pre- and post-processing are the same whatever runs the network (eager model, AOTInductor `.pt2`,
ONNX Runtime `.onnx`, TensorRT `.engine`, any registered backend); they are driven by the artifact's JSON
sidecar. The artifact's backend (mp_deploy.backends) loads its runner; its task (mp_deploy.tasks) says what
`run` returns.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mp_deploy import backends, tasks
from mp_deploy.artifacts import read_sidecar
from mp_deploy.contract import MAX_PIXELS
from mp_deploy.cpu_threads import apply_torch, cpu_threads
from mp_deploy.errors import EngineError, EngineFailure  # noqa: F401  (raised by Engine; importable from here)

_DTYPES = {"float32": torch.float32, "float16": torch.float16}
RANGE_SLACK = 1e-3  # float images may overshoot [0, 1] by rounding (e.g. after a resize), not more


def _cpu_threads(device: str, threads: int | None) -> int:
    """The CPU thread policy applied to torch for a CPU engine (a GPU engine leaves torch as it is) -> the count."""
    n = cpu_threads(threads)
    if not str(device).startswith("cuda"):
        apply_torch(n)
    return n


class EagerRunner:
    """An eager model behind the runner interface (Engine.from_model)."""

    def __init__(self, model):
        self.model = model

    def __call__(self, x):
        with torch.no_grad():
            return self.model(x)


class Engine:
    """A task network plus its sidecar contract. Build one with `Engine.load(path)` or `Engine.from_model`."""

    def __init__(self, runner, meta: dict, device: str, name: str):
        self.runner, self.meta, self.device, self.name = runner, meta, device, name
        self.task = meta["task"]
        self.dtype = _DTYPES[meta["input"]["dtype"]]

    @classmethod
    def load(cls, path, device: str | None = None, threads: int | None = None) -> "Engine":
        """The artifact at `path` on `device` (default: the one it was built for); on the CPU with
        mp_deploy.cpu_threads' policy (`threads`: an explicit count)."""
        path = Path(path)
        meta = read_sidecar(path)
        device = device or meta["device"]
        n = _cpu_threads(device, threads)
        runner = backends.get(meta["backend"]).load(path, meta, device, n)
        return cls(runner, meta, device, path.name)

    @classmethod
    def from_model(cls, model, precision: str = "fp32", device: str = "cpu", threads: int | None = None) -> "Engine":
        """The eager model behind the same interface (benchmarks, reference outputs)."""
        _cpu_threads(str(device), threads)
        from mp_deploy.artifacts import describe_io
        from mp_deploy.configs import preset_to_dict

        preset = preset_to_dict(model.preset)
        inp, out = describe_io(model.task, preset, precision)
        meta = {"task": model.task, "preset": preset, "input": inp, "output": out, "backend": "eager",
                "precision": precision, "shapes": None}
        return cls(EagerRunner(model), meta, device, f"eager-{precision}")

    # ------------------------------------------------------------ pre / post

    def preprocess(self, images) -> torch.Tensor:
        """Images -> the network input, every check before any copy or conversion:

        - uint8 (H, W, 3) / (B, H, W, 3) RGB arrays or tensors, 0..255;
        - floating-point (3, H, W) / (B, 3, H, W) RGB, in the contract's range ([0, 1]);
        numpy arrays of any strides are copied; at most MAX_PIXELS pixels per image; batch, height and width
        within the artifact's shape range. The contract's normalisation ((x * scale - mean) / std) follows.
        """
        b, h, w, channels_last = image_layout(images)
        if h * w > MAX_PIXELS:
            raise EngineError(f"a {h}x{w} image has {h * w} pixels, more than the {MAX_PIXELS} an engine takes "
                              "(resize it first)")
        self.check_shape((b, 3, h, w))
        x = as_tensor(images).reshape((b, h, w, 3) if channels_last else (b, 3, h, w))
        spec = self.meta["input"]
        if channels_last:
            x = x.permute(0, 3, 1, 2).float() * spec["scale"]
        else:
            x = x.float()
            if not torch.isfinite(x).all():
                raise EngineError("the input images contain NaN or inf values")
            lo, hi = spec["range"]
            if x.min() < lo - RANGE_SLACK or x.max() > hi + RANGE_SLACK:
                raise EngineError(f"floating-point images must be in [{lo:g}, {hi:g}], these span "
                                  f"{x.min().item():.4g}..{x.max().item():.4g}: pass 8-bit images as uint8 "
                                  "(H, W, 3) arrays, or divide them by 255")
        mean, std = spec["mean"], spec["std"]
        if any(mean) or any(v != 1 for v in std):
            x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
        if spec["color"] == "BGR":
            x = x.flip(1)
        return x.to(device=self.device, dtype=self.dtype).contiguous()

    def check_shape(self, shape) -> None:
        limits = self.meta.get("shapes")
        if not limits:
            return
        b, _, h, w = shape
        for name, value in (("batch", b), ("height", h), ("width", w)):
            lo, _, hi = limits[name]
            if not lo <= value <= hi:
                raise EngineError(f"{self.name}: {name} {value} is outside the range it was built for [{lo}, {hi}]")
        m = limits.get("multiple_of", 1)
        for name, value in (("height", h), ("width", w)):
            lo, _, hi = limits[name]
            if lo != hi and value % m:
                raise EngineError(f"{self.name}: {name} must be a multiple of {m} (dynamic range), got {value}")

    def postprocess(self, raw: torch.Tensor, input_hw) -> dict:
        raw = raw.float()
        if not torch.isfinite(raw).all():
            raise EngineFailure(f"{self.name}: the {self.meta['precision']} output contains NaN or inf")
        return tasks.get(self.task).run_outputs(raw, input_hw)

    def run(self, images) -> dict:
        x = self.preprocess(images)
        return self.postprocess(self.runner(x), x.shape[-2:])


def image_layout(images) -> tuple[int, int, int, bool]:
    """(batch, height, width, channels_last) of a numpy array or torch tensor of images, read from its shape and
    dtype alone (no copy): uint8 is (H, W, 3) / (B, H, W, 3), floating point (3, H, W) / (B, 3, H, W)."""
    if isinstance(images, np.ndarray):
        if images.dtype == object or images.dtype.kind not in "uif":
            raise EngineError(f"images must be a numeric array, got dtype {images.dtype}")
        uint8, floating = images.dtype == np.uint8, images.dtype.kind == "f"
    elif isinstance(images, torch.Tensor):
        uint8, floating = images.dtype == torch.uint8, images.is_floating_point()
    else:
        raise EngineError(f"expected an image array or tensor, got {type(images).__name__}")
    if not (uint8 or floating):
        raise EngineError(f"images must be uint8 (0..255) or floating point in [0, 1], got {images.dtype}")
    shape = tuple(images.shape)
    shape = shape if len(shape) == 4 else (1, *shape) if len(shape) == 3 else shape
    channels = shape[-1] if uint8 else shape[1] if len(shape) == 4 else None
    if len(shape) != 4 or channels != 3:
        layout = "(H, W, 3) or (B, H, W, 3) RGB" if uint8 else "(3, H, W) or (B, 3, H, W) RGB"
        raise EngineError(f"{images.dtype} images must be {layout}, got {tuple(images.shape)}")
    b, h, w = (shape[0], shape[1], shape[2]) if uint8 else (shape[0], shape[2], shape[3])
    if b * h * w == 0:
        raise EngineError(f"empty images: shape {tuple(images.shape)}")
    return b, h, w, uint8


def as_tensor(images) -> torch.Tensor:
    """A torch tensor of the images (after image_layout): numpy arrays of any strides and byte order copied."""
    if isinstance(images, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(images, dtype=images.dtype.newbyteorder("=")))
    return images
