"""torch-tensorrt route: the exported program compiled by `torch_tensorrt.dynamo`, saved as an AOTInductor `.pt2`.

The same unrolled graph as the other backends, exported with the kernels on so that the fused ops stay single
nodes; converters registered here turn each into our TensorRT AOT plugins (kernels/tensorrt_plugins.py), so
the engines inside the package run the Triton kernels without Python. The package loads through
`torch._inductor.aoti_load_package` once `torch_tensorrt` is imported (its runtime op executes the engines);
C++ needs libtorchtrt_runtime linked as well. torch-tensorrt is optional: `available()` says whether it can
run here.
"""
from __future__ import annotations

from pathlib import Path

import torch

import mp_deploy.kernels  # noqa: F401  (registers the kernel that ops.use_kernels switches on)
from mp_deploy import ops
from mp_deploy.artifacts import embed_contract_pt2
from mp_deploy.errors import BuildError
from mp_deploy.util import atomic_write

try:
    import torch_tensorrt
except ImportError:
    torch_tensorrt = None

_converters_registered = False


def available() -> tuple[bool, str]:
    """(usable, reason)."""
    if torch_tensorrt is None:
        return False, "the torch_tensorrt Python package is not installed"
    if not torch.cuda.is_available():
        return False, "no CUDA device"
    return True, f"torch-tensorrt {torch_tensorrt.__version__}"


def register_converters() -> None:
    """Converters from our torch ops to the TensorRT plugins (idempotent)."""
    global _converters_registered
    if _converters_registered:
        return
    from torch_tensorrt.dynamo.conversion import dynamo_tensorrt_converter
    from torch_tensorrt.dynamo.conversion.converter_utils import get_trt_tensor

    from mp_deploy.kernels import tensorrt_plugins

    def tensors(ctx, name, *values):
        # weights arrive as torch tensors (graph constants), activations as ITensors
        return [get_trt_tensor(ctx, v, f"{name}_in{i}") for i, v in enumerate(values)]

    @dynamo_tensorrt_converter(torch.ops.mp_deploy.norm_relu_rearrange.default, supports_dynamic_shapes=True)
    def _norm_relu_rearrange(ctx, target, args, kwargs, name):
        x, weight, bias, groups, eps, prompts = args
        x, weight, bias, prompts = tensors(ctx, name, x, weight, bias, prompts)
        return tensorrt_plugins.add_norm_relu_rearrange(ctx.net, x, weight, bias, prompts, groups, eps)

    @dynamo_tensorrt_converter(torch.ops.mp_deploy.group_norm_act.default, supports_dynamic_shapes=True)
    def _group_norm_act(ctx, target, args, kwargs, name):
        x, weight, bias, groups, eps, silu = args
        x, weight, bias = tensors(ctx, name, x, weight, bias)
        return tensorrt_plugins.add_group_norm_act(ctx.net, x, weight, bias, groups, eps, silu)

    _converters_registered = True


def build_package(network, path: Path, optimization_level: int = 3, contract: dict | None = None) -> None:
    """Compile `network` (TaskNetwork, CUDA) with torch_tensorrt.dynamo and save an AOTInductor .pt2 at `path`,
    with `contract` (the artifact's, mp_deploy.artifacts) embedded in it."""
    if torch_tensorrt is None:
        raise BuildError("torch-tensorrt is not installed (pip install torch-tensorrt matching this torch, "
                           "on a machine with a CUDA GPU)")
    register_converters()
    # as in the TensorRT-flavour ONNX: the neck's op becomes the plugin pair; the UNet's GroupNorms stay
    # TensorRT's own normalization layers
    with ops.use_kernels(True, only=("norm_relu_rearrange",), any_device=True):
        program = network.export_program()
    s = network.shapes
    images = torch_tensorrt.Input(min_shape=s.shape("min"), opt_shape=s.shape("opt"), max_shape=s.shape("max"),
                                  dtype=network.dtype)
    module = torch_tensorrt.dynamo.compile(
        program, arg_inputs=[images],
        use_explicit_typing=True,  # strongly typed: the fp16 graph with its fp32 norms, as exported
        min_block_size=1, optimization_level=optimization_level, truncate_double=True)
    sample = network.sample("opt")
    extra = {} if s.static else {"dynamic_shapes": network.dynamic_shapes()}

    def write(tmp):
        torch_tensorrt.save(module, tmp, output_format="aot_inductor", arg_inputs=[sample], retrace=True, **extra)
        if contract is not None:
            embed_contract_pt2(tmp, contract)

    atomic_write(Path(path), write)
