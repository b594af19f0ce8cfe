"""TensorRT engines from the `tensorrt`-flavour ONNX: strongly typed network (types come from the fp16 ONNX,
with fp32 normalisation statistics), one optimization profile, a timing cache, one engine per task head.

TensorRT 10.x / 11.x Python API. TensorRT is optional: `available()` says whether it can run here.
"""
from __future__ import annotations

from pathlib import Path

from mp_deploy.errors import BuildError
from mp_deploy.util import atomic_write

try:
    import tensorrt as trt
except ImportError:
    trt = None


def available() -> tuple[bool, str]:
    """(usable, reason)."""
    if trt is None:
        return False, "the tensorrt Python package is not installed"
    import torch

    if not torch.cuda.is_available():
        return False, "no CUDA device"
    return True, f"TensorRT {trt.__version__}"


def create_network(onnx_path: Path):
    """-> (builder, network, parser) with the ONNX parsed into a strongly typed network."""
    if trt is None:
        raise BuildError("TensorRT is not installed (pip install 'mp-deploy[tensorrt]' on a machine with a GPU)")
    from mp_deploy.kernels.tensorrt_plugins import register_plugins

    register_plugins()  # the ONNX plugin nodes resolve to these (namespace mp_deploy)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # also reads external data beside the file
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BuildError(f"TensorRT could not parse {onnx_path}: {errors}")
    return builder, network, parser


def build_engine(onnx_path: Path, engine_path: Path, shapes, input_name: str = "images",
                 optimization_level: int = 3, workspace_gb: float = 8.0,
                 timing_cache: Path | None = None) -> None:
    """Build and write (atomically) a serialized engine for the `shapes` (export.networks.ShapeRange)."""
    builder, network, _parser = create_network(onnx_path)
    config = builder.create_builder_config()
    config.builder_optimization_level = optimization_level
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    cache_bytes = Path(timing_cache).read_bytes() if timing_cache and Path(timing_cache).is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, shapes.shape("min"), shapes.shape("opt"), shapes.shape("max"))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BuildError(f"TensorRT failed to build an engine from {onnx_path} (see the log above)")
    atomic_write(Path(engine_path), lambda tmp: Path(tmp).write_bytes(bytes(serialized)))
    if timing_cache:
        data = config.get_timing_cache().serialize()
        atomic_write(Path(timing_cache), lambda tmp: Path(tmp).write_bytes(bytes(data)))
