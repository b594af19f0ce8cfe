"""Checks every artifact must pass: ONNX graph validity for TensorRT, parity with eager fp32, finiteness."""
from __future__ import annotations

import onnx
import torch

from mp_deploy.errors import MpDeployError
from mp_deploy.models import Trace
from mp_deploy.util import rel_l2

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
FP32 = onnx.TensorProto.FLOAT


class ParityError(MpDeployError):
    def __init__(self, message: str, rel_l2: float = float("nan")):
        super().__init__(message)
        self.rel_l2 = rel_l2  # the measured error when there is one (a table still shows it)


def tensorrt_graph_problems(model: onnx.ModelProto, plugin_namespace: str = "mp_deploy") -> list[str]:
    """Everything that would stop TensorRT's ONNX parser: unknown ops, too new an opset, bad plugin nodes."""
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


def _all_nodes(model: onnx.ModelProto):
    yield from model.graph.node
    for f in model.functions:
        yield from f.node


def norm_input_types(model: onnx.ModelProto) -> dict[str, int]:
    """elem type of the data input of every normalisation node (after shape inference)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in
             list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
    types.update({t.name: t.data_type for t in inferred.graph.initializer})
    return {f"{n.name}:{n.op_type}": types.get(n.input[0], 0) for n in inferred.graph.node
            if n.op_type in NORM_OPS and n.op_type != "BatchNormalization"}


def first_nonfinite_stage(model, x: torch.Tensor) -> str | None:
    """Run the eager model with its trace and name the first traced tensor that is not finite."""
    trace = Trace()
    with torch.no_grad():
        model(x, hook=trace)
    return next((name for name, t in trace.tensors.items() if not torch.isfinite(t).all()), None)


def check_parity(run, reference_model, network, tolerance: float, seeds=(1, 2)) -> float:
    """Worst relative L2 of `run(x)` against the eager fp32 model over fresh random inputs at the min and opt
    shapes. Non-finite output fails, naming the stage where eager at the artifact's precision first breaks."""
    worst, worst_x = 0.0, None
    for seed, which in zip(seeds, ("opt", "min")):
        x = network.sample(which, seed=seed)
        device = next(reference_model.parameters()).device
        with torch.no_grad():
            ref = reference_model(x.float().to(device)).cpu()
        out = run(x).float().cpu()
        if out.shape != ref.shape:
            raise ParityError(f"output shape {tuple(out.shape)} != eager {tuple(ref.shape)} for input {tuple(x.shape)}")
        if not torch.isfinite(out).all():
            stage = first_nonfinite_stage(network.model, x)
            where = f"eager {network.precision} first breaks at {stage}" if stage else \
                "eager at the same precision stays finite: the backend itself breaks"
            raise ParityError(f"non-finite values in the artifact's output ({where})")
        # ||out - ref|| / ||ref|| on the task output, the parity rule. (The golden check centres depth,
        # but an fp16 output's own rounding already costs the tiny seeded model 8.3e-3 centred.)
        err = rel_l2(out, ref)
        if err >= worst:
            worst, worst_x = err, x
    if worst > tolerance:
        stages = stage_errors(network.model, reference_model, worst_x)
        where = ", ".join(f"{name} {err:.1e}" for name, err in stages.items())
        raise ParityError(f"relative L2 {worst:.2e} against eager fp32 exceeds {tolerance:.0e} (eager "
                          f"{network.precision} on the same input, per stage: {where})", worst)
    return worst


def stage_errors(model, reference_model, x: torch.Tensor) -> dict[str, float]:
    """Relative L2 against the eager fp32 model of each traced tensor of `model` (eager, at the artifact's
    precision) on input x, in model order, ending with the output: where the error grows. Eager already over
    the rule at the output: the precision itself; eager within it: the backend loses the rest."""
    device = next(reference_model.parameters()).device
    ours, ref = Trace(), Trace()
    with torch.no_grad():
        model(x, hook=ours)
        reference_model(x.float().to(device), hook=ref)
    return {name: rel_l2(t.float(), ref.tensors[name].float()) for name, t in ours.tensors.items()
            if t.shape == ref.tensors[name].shape}
