"""One runtime for every backend: `Engine.load(path).run(images)` -> task outputs.

Pre- and post-processing are the same whatever runs the network (eager model, AOTInductor `.pt2`,
ONNX Runtime `.onnx`, TensorRT `.engine`); they are driven by the artifact's JSON sidecar.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mp_deploy.artifacts import MAX_PIXELS, ArtifactError, read_sidecar
from mp_deploy.errors import MpDeployError, UserError

_DTYPES = {"float32": torch.float32, "float16": torch.float16}
RANGE_SLACK = 1e-3  # float images may overshoot [0, 1] by rounding (e.g. after a resize), not more


class EngineError(UserError, RuntimeError):
    """Input an engine cannot take (shape, dtype, values)."""


class EngineFailure(MpDeployError, RuntimeError):
    """A run that failed inside the backend, or gave a non-finite output."""


class _EagerRunner:
    def __init__(self, model):
        self.model = model

    def __call__(self, x):
        with torch.no_grad():
            return self.model(x)


class _AOTIRunner:
    def __init__(self, path: Path, device: str):
        index = -1
        if device == "cuda":  # the package's model container is created at load: give it a CUDA context first
            import mp_deploy.kernels  # noqa: F401  (our ops, registered: for a package that calls them by name)

            torch.empty(1, device=device)
            index = torch.cuda.current_device()  # an explicit index: the container sets that device itself
        try:
            self.fn = torch._inductor.aoti_load_package(str(path), device_index=index)
        except Exception as e:  # a corrupt zip or a package for another platform
            raise ArtifactError(f"cannot load AOTInductor package {path}: {e}") from e
        self.device = device

    def __call__(self, x):
        with torch.no_grad():
            return self.fn(x.to(self.device))


class _ONNXRunner:
    def __init__(self, path: Path, device: str):
        import onnxruntime as ort

        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
        providers = [p for p in providers if p in ort.get_available_providers()]
        try:
            self.session = ort.InferenceSession(str(path), providers=providers)
        except Exception as e:
            raise ArtifactError(f"cannot load ONNX model {path}: {e}") from e
        self.input = self.session.get_inputs()[0].name

    def __call__(self, x):
        out = self.session.run(None, {self.input: x.detach().cpu().numpy()})[0]
        return torch.from_numpy(out)


class _TensorRTRunner:
    """TensorRT 10/11 runtime: deserialize, set the input shape, enqueueV3 on the current stream."""

    def __init__(self, path: Path, meta: dict):
        import ctypes

        import tensorrt as trt

        for plugin in meta["plugins"]:  # plain names beside the artifact, checksums verified by read_sidecar
            ctypes.CDLL(str(Path(path).parent / plugin["name"]), mode=ctypes.RTLD_GLOBAL)
        self.trt = trt
        logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(logger)
        self.engine = self.runtime.deserialize_cuda_engine(Path(path).read_bytes())
        if self.engine is None:
            raise ArtifactError(f"TensorRT could not deserialize {path} (corrupt, or built by another version)")
        self.input, self.output = meta["input"]["name"], meta["output"]["name"]
        # a plan holds no contract: its I/O names must at least be the ones the sidecar's contract names
        names = {self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)}
        if names != {self.input, self.output}:
            raise ArtifactError(f"{path}: the engine's tensors {sorted(names)} are not the sidecar's "
                                f"{self.input!r} -> {self.output!r}")
        self.context = self.engine.create_execution_context()

    def __call__(self, x):
        x = x.cuda().contiguous()
        self.context.set_input_shape(self.input, tuple(x.shape))
        shape = tuple(self.context.get_tensor_shape(self.output))
        dtype = _DTYPES["float16" if self.engine.get_tensor_dtype(self.output) == self.trt.DataType.HALF else "float32"]
        out = torch.empty(shape, dtype=dtype, device="cuda")
        self.context.set_tensor_address(self.input, x.data_ptr())
        self.context.set_tensor_address(self.output, out.data_ptr())
        if not self.context.execute_async_v3(torch.cuda.current_stream().cuda_stream):
            raise EngineFailure("TensorRT execution failed")
        return out


class Engine:
    """A task network plus its sidecar contract. Build one with `Engine.load(path)` or `Engine.from_model`."""

    def __init__(self, runner, meta: dict, device: str, name: str):
        self.runner, self.meta, self.device, self.name = runner, meta, device, name
        self.task = meta["task"]
        self.dtype = _DTYPES[meta["input"]["dtype"]]

    @classmethod
    def load(cls, path, device: str | None = None) -> "Engine":
        path = Path(path)
        meta = read_sidecar(path)
        device = device or meta["device"]
        if meta["backend"] in ("aoti", "torch-tensorrt"):
            if meta["backend"] == "torch-tensorrt":
                import torch_tensorrt  # noqa: F401  (its runtime op runs the engines inside the package)
                from mp_deploy.kernels.tensorrt_plugins import register_plugins

                register_plugins()
            runner = _AOTIRunner(path, meta["device"])
        elif meta["backend"] == "onnx":
            runner = _ONNXRunner(path, device)
        elif meta["backend"] == "tensorrt":
            runner = _TensorRTRunner(path, meta)
        else:
            raise ArtifactError(f"unknown backend {meta['backend']!r} in the sidecar of {path}")
        return cls(runner, meta, device, path.name)

    @classmethod
    def from_model(cls, model, precision: str = "fp32", device: str = "cpu") -> "Engine":
        """The eager model behind the same interface (benchmarks, reference outputs)."""
        from mp_deploy.artifacts import describe_io
        from mp_deploy.configs import preset_to_dict

        preset = preset_to_dict(model.preset)
        inp, out = describe_io(model.task, preset, precision)
        meta = {"task": model.task, "preset": preset, "input": inp, "output": out, "backend": "eager",
                "precision": precision, "shapes": None}
        return cls(_EagerRunner(model), meta, device, f"eager-{precision}")

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
        if self.task == "depth":
            return {"depth": raw}
        if self.task == "seg":
            return {"logits": raw, "labels": raw.argmax(1)}
        return {"heatmaps": raw, "keypoints": heatmap_keypoints(raw, input_hw)}

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


def heatmap_keypoints(heatmaps: torch.Tensor, input_hw) -> torch.Tensor:
    """(B, K, h, w) heatmaps -> (B, K, 3): x, y in input pixels (cell centres) and the peak value."""
    b, k, h, w = heatmaps.shape
    score, idx = heatmaps.reshape(b, k, -1).max(-1)
    sy, sx = input_hw[0] / h, input_hw[1] / w
    x = (idx % w).float() * sx + sx / 2
    y = torch.div(idx, w, rounding_mode="floor").float() * sy + sy / 2
    return torch.stack([x, y, score], dim=-1)
