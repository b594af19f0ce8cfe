"""TensorRT engines: the model exported to ONNX with our plugin nodes (`*.trt.onnx`: the fused prompt
rearrangement as the `group_stats` + `norm_relu_rearrange` TensorRT plugins of kernels/tensorrt_plugins.py,
plugin_namespace "mp_deploy"), checked against what TensorRT's ONNX parser imports, then built as a strongly typed
network (types from the fp16 ONNX, fp32 normalisation statistics), one optimization profile, a timing cache: one
`.engine` per task head. A plan cannot hold the contract: its sidecar and checksum bind it, and its I/O tensor
names must be the contract's.

TensorRT 10.x / 11.x Python API, import-guarded: TensorRT cannot be installed on the project's CI machines, so
everything here up to the builder call is what the tests check; building and running engines is untested there.
"""
from __future__ import annotations

import ctypes
from pathlib import Path

import torch

from mp_deploy.backends.base import Backend, BuildOptions, Product
from mp_deploy.contract import gpu_info
from mp_deploy.errors import ArtifactError, BuildError, EngineFailure

PLUGIN_DOMAIN = "trt.plugins"
PLUGIN_NAMESPACE = "mp_deploy"
INTERMEDIATE = "onnx-trt"  # the product kind of the parser's ONNX

# ONNX ops the TensorRT 10 parser imports (onnx-tensorrt docs/operators.md, 10.x: "Y" rows; opset 9..20).
TENSORRT_ONNX_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast CastLike Ceil Celu
Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DeformConv DepthToSpace DequantizeLinear Div
Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND Gelu Gemm
GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample GroupNormalization GRU HardSigmoid
HardSwish Hardmax Identity If ImageScaler InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less
LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean MeanVarianceNormalization
Min Mish Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad ParametricSoftplus Pow PRelu QuantizeLinear
RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range Reciprocal ReduceLogSum ReduceLogSumExp ReduceMax
ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RNN RoiAlign Round
ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus
Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze
Upsample Where Xor
""".split())
TENSORRT_MAX_OPSET = 20
# our plugin nodes: op -> (inputs, required attributes)
PLUGIN_NODES = {"group_stats": (1, {"groups", "plugin_namespace"}),
                "norm_relu_rearrange": (5, {"groups", "eps", "plugin_namespace"})}
NORM_OPS = ("GroupNormalization", "InstanceNormalization", "LayerNormalization", "BatchNormalization")


def tensorrt_module():
    try:
        import tensorrt
    except ImportError:
        return None
    return tensorrt


def tensorrt_version() -> str | None:
    trt = tensorrt_module()
    return trt.__version__ if trt is not None else None


def available() -> tuple[bool, str]:
    """(usable, reason)."""
    trt = tensorrt_module()
    if trt is None:
        return False, "the tensorrt Python package is not installed"
    if not torch.cuda.is_available():
        return False, "no CUDA device"
    return True, f"TensorRT {trt.__version__}"


# ------------------------------------------------------------------ the ONNX with plugin nodes

def _schema(name: str, inputs: list[str], output: str, attrs: list[str]):
    """ONNX has no schema for plugin ops; onnxscript needs one to build the node."""
    from onnx.defs import OpSchema

    any_float = ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"]
    types = {"eps": OpSchema.AttrType.FLOAT, "groups": OpSchema.AttrType.INT, "aot": OpSchema.AttrType.INT,
             "plugin_namespace": OpSchema.AttrType.STRING, "plugin_version": OpSchema.AttrType.STRING}
    return OpSchema(
        name, PLUGIN_DOMAIN, 1,
        inputs=[OpSchema.FormalParameter(i, "T" if i not in ("stats", "weight", "bias") else "F") for i in inputs],
        outputs=[OpSchema.FormalParameter(output, "T" if output == "out" else "S")],
        type_constraints=[("T", any_float, "activations"), ("F", any_float, "fp32 statistics / affine"),
                          ("S", ["tensor(float)"], "statistics")],
        attributes=[OpSchema.Attribute(a, types[a], a, required=a in attrs)
                    for a in attrs + ["plugin_namespace", "plugin_version", "aot"]],
    )


def plugin_translation():
    """torch.ops.mp_deploy.norm_relu_rearrange -> group_stats + norm_relu_rearrange plugin nodes."""
    import onnxscript

    import mp_deploy.kernels  # noqa: F401  (registers torch.ops.mp_deploy.*)

    plugins = onnxscript.values.Opset(PLUGIN_DOMAIN, 1)
    group_stats = onnxscript.values.Op(plugins, "group_stats", _schema("group_stats", ["x"], "stats", ["groups"]))
    rearrange = onnxscript.values.Op(
        plugins, "norm_relu_rearrange",
        _schema("norm_relu_rearrange", ["x", "stats", "weight", "bias", "prompts"], "out", ["groups", "eps"]))

    def norm_relu_rearrange(x, weight, bias, groups: int, eps: float, prompts):
        common = dict(plugin_namespace=PLUGIN_NAMESPACE, plugin_version="1", aot=1)
        stats = group_stats(x, groups=groups, **common)
        return rearrange(x, stats, weight, bias, prompts, groups=groups, eps=eps, **common)

    return {torch.ops.mp_deploy.norm_relu_rearrange.default: norm_relu_rearrange}


def export_plugin_onnx(network, path: Path, contract: dict | None = None) -> list[str]:
    """The ONNX that TensorRT's parser reads: the standard export with the fused rearrangement as plugin nodes."""
    from mp_deploy.backends.onnx import export_onnx

    return export_onnx(network, path, contract, translation_table=plugin_translation(),
                       kernel_ops=("norm_relu_rearrange",))


def graph_problems(model, plugin_namespace: str = PLUGIN_NAMESPACE) -> list[str]:
    """Everything that would stop TensorRT's ONNX parser: unknown ops, too new an opset, bad plugin nodes."""
    import onnx

    problems = []
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx") and imp.version > TENSORRT_MAX_OPSET:
            problems.append(f"opset {imp.version} > {TENSORRT_MAX_OPSET}, the newest TensorRT 10 imports")
    functions = {(f.domain, f.name) for f in model.functions}
    for node in _all_nodes(model):
        if (node.domain, node.op_type) in functions:
            continue
        if node.domain in ("", "ai.onnx"):
            if node.op_type not in TENSORRT_ONNX_OPS:
                problems.append(f"node {node.name or node.op_type}: op {node.op_type} is not supported by TensorRT")
            continue
        spec = PLUGIN_NODES.get(node.op_type)
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if spec is None:
            problems.append(f"node {node.name}: {node.domain}::{node.op_type} is neither an ONNX op nor one of our plugins")
            continue
        n_inputs, required = spec
        if len(node.input) != n_inputs:
            problems.append(f"plugin node {node.name} ({node.op_type}) has {len(node.input)} inputs, expects {n_inputs}")
        missing = required - set(attrs)
        if missing:
            problems.append(f"plugin node {node.name} ({node.op_type}) lacks attributes {sorted(missing)}")
        ns = attrs.get("plugin_namespace")
        if isinstance(ns, bytes):
            ns = ns.decode()
        if ns is not None and ns != plugin_namespace:
            problems.append(f"plugin node {node.name}: plugin_namespace {ns!r}, expected {plugin_namespace!r}")
    return problems


def _all_nodes(model):
    yield from model.graph.node
    for f in model.functions:
        yield from f.node


def norm_input_types(model) -> dict[str, int]:
    """elem type of the data input of every normalisation node (after shape inference)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in
             list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
    types.update({t.name: t.data_type for t in inferred.graph.initializer})
    return {f"{n.name}:{n.op_type}": types.get(n.input[0], 0) for n in inferred.graph.node
            if n.op_type in NORM_OPS and n.op_type != "BatchNormalization"}


# ------------------------------------------------------------------ the engine

def create_network(onnx_path: Path):
    """-> (builder, network, parser) with the ONNX parsed into a strongly typed network."""
    trt = tensorrt_module()
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
    from mp_deploy.files import atomic_write

    trt = tensorrt_module()
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


def check_tensorrt_version(meta: dict, artifact: Path) -> None:
    """An engine runs on the GPU model and TensorRT version that built it."""

    built_gpu, here_gpu = meta.get("gpu"), gpu_info()
    if here_gpu is not None and built_gpu and here_gpu["name"] != built_gpu["name"]:
        raise ArtifactError(f"{artifact} was built for {built_gpu['name']}, this GPU is {here_gpu['name']}: "
                            "TensorRT engines are GPU-specific, rebuild it here")
    built, here = meta["versions"].get("tensorrt"), tensorrt_version()
    if here is None:
        raise ArtifactError(f"{artifact} is a TensorRT {built} engine; TensorRT is not installed here")
    if built != here:
        raise ArtifactError(f"{artifact} was built with TensorRT {built}, this machine has TensorRT {here}: "
                            "engines do not carry across versions, rebuild it")


class TensorRTRunner:
    """TensorRT 10/11 runtime: deserialize, set the input shape, enqueueV3 on the current stream."""

    def __init__(self, path: Path, meta: dict):

        trt = tensorrt_module()
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
        half = self.engine.get_tensor_dtype(self.output) == self.trt.DataType.HALF
        out = torch.empty(shape, dtype=torch.float16 if half else torch.float32, device="cuda")
        self.context.set_tensor_address(self.input, x.data_ptr())
        self.context.set_tensor_address(self.output, out.data_ptr())
        if not self.context.execute_async_v3(torch.cuda.current_stream().cuda_stream):
            raise EngineFailure("TensorRT execution failed")
        return out


class TensorRTBackend(Backend):
    name, label, suffix = "tensorrt", "TensorRT", ".engine"
    artifact_devices = ("cuda",)
    gpu_rank = 0
    auto = "primary"
    triton_network = {"platform": "tensorrt_plan"}
    gpu_only = True
    intermediate_suffixes = (".trt.onnx",)

    def available(self, device):
        if device != "cuda":
            return False, "TensorRT engines need a CUDA device"
        return available()

    def products(self, stem, device):
        return [Product(INTERMEDIATE, ".trt.onnx", "onnx", "cpu", runnable=False,
                        output_extra={"onnx_flavour": "tensorrt plugins"}),
                Product(self.name, self.suffix, self.name, "cuda")]

    def write(self, product: Product, network, path: Path, options: BuildOptions, contract: dict) -> list[str]:
        from mp_deploy.backends.onnx import load_checked

        if product.kind == INTERMEDIATE:
            extras = export_plugin_onnx(network, path, contract)
            problems = graph_problems(load_checked(path))
            if problems:
                raise BuildError(f"{path.name} would not import into TensorRT: " + "; ".join(problems))
            return extras
        onnx_path = path.with_name(path.name[: -len(self.suffix)] + ".trt.onnx")
        build_engine(onnx_path, path, network.shapes, optimization_level=options.opt_level,
                     timing_cache=(options.out_dir or path.parent) / "timing.cache")
        return []

    def check_machine(self, meta, artifact):
        check_tensorrt_version(meta, artifact)

    def load(self, path, meta, device, threads=1):
        return TensorRTRunner(path, meta)
