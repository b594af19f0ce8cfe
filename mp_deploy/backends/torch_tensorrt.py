"""torch-tensorrt: the exported program compiled by `torch_tensorrt.dynamo`, saved as an AOTInductor `.pt2`.

The same unrolled graph as the other backends, exported with the kernels on so that the fused ops stay single
nodes; converters registered here turn each into our TensorRT AOT plugins (kernels/tensorrt_plugins.py), so
the engines inside the package run the Triton kernels without Python. The package loads through
`torch._inductor.aoti_load_package` once `torch_tensorrt` is imported (its runtime op executes the engines);
C++ needs libtorchtrt_runtime linked as well. The contract is the package's zip entry, as for aoti. torch-tensorrt
is optional and not installable on the project's CI machines: untested there beyond what imports.
"""
from __future__ import annotations

from pathlib import Path

import torch

from mp_deploy.backends.aoti import AOTIRunner, check_torch_version, embed_contract_pt2, read_contract_pt2
from mp_deploy.backends.base import Backend, BuildOptions, Product
from mp_deploy.backends.tensorrt import check_tensorrt_version
from mp_deploy.errors import BuildError

_converters_registered = False


def torch_tensorrt_module():
    try:
        import torch_tensorrt
    except ImportError:
        return None
    return torch_tensorrt


def available() -> tuple[bool, str]:
    """(usable, reason)."""
    module = torch_tensorrt_module()
    if module is None:
        return False, "the torch_tensorrt Python package is not installed"
    if not torch.cuda.is_available():
        return False, "no CUDA device"
    return True, f"torch-tensorrt {module.__version__}"


def register_converters() -> None:
    """Converters from our torch ops to the TensorRT plugins (idempotent)."""
    global _converters_registered
    if _converters_registered:
        return
    from torch_tensorrt.dynamo.conversion import dynamo_tensorrt_converter
    from torch_tensorrt.dynamo.conversion.converter_utils import get_trt_tensor

    import mp_deploy.kernels  # noqa: F401  (registers torch.ops.mp_deploy.*)
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
    import mp_deploy.kernels  # noqa: F401  (registers the kernel that ops.use_kernels switches on)
    from mp_deploy import ops
    from mp_deploy.files import atomic_write

    torch_tensorrt = torch_tensorrt_module()
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


class TorchTensorRTBackend(Backend):
    name, label, suffix = "torch-tensorrt", "torch-tensorrt", ".pt2"
    artifact_devices = ("cuda",)
    gpu_rank = 1
    gpu_only = True

    def available(self, device):
        if device != "cuda":
            return False, "torch-tensorrt needs a CUDA device"
        return available()

    def products(self, stem, device):
        return [Product(self.name, "-torch-trt.pt2", self.name, "cuda")]

    def write(self, product: Product, network, path: Path, options: BuildOptions, contract: dict) -> list[str]:
        build_package(network, path, optimization_level=options.opt_level, contract=contract)
        return []

    def read_contract(self, path):
        return read_contract_pt2(path)

    def check_machine(self, meta, artifact):
        check_tensorrt_version(meta, artifact)
        check_torch_version(meta, artifact)

    def load(self, path, meta, device, threads=1):
        torch_tensorrt_module()  # its runtime op runs the engines inside the package
        from mp_deploy.kernels.tensorrt_plugins import register_plugins

        register_plugins()
        return AOTIRunner(path, meta["device"])
