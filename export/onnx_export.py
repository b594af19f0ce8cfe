"""ONNX export (dynamo exporter, opset 20): dynamic batch and height/width range, cleaned and folded.

Two flavours of the same graph:
- `standard`: every op is a standard ONNX op (ONNX Runtime);
- `tensorrt`: the fused prompt rearrangement is two TensorRT plugin nodes (`group_stats`,
  `norm_relu_rearrange`, attribute plugin_namespace="mp_deploy"), implemented by kernels/tensorrt_plugins.py.
fp16 graphs keep every normalisation's statistics in fp32 (explicit casts), as TensorRT's strongly typed
mode needs; past 2 GB the weights go to an external data file beside the model.
"""
from __future__ import annotations

import functools
import shutil
import tempfile
from pathlib import Path

import onnx
import torch

import mp_deploy.kernels  # noqa: F401  (registers the kernel that ops.use_kernels switches on)
from mp_deploy import ops
from mp_deploy.artifacts import ONNX_METADATA_KEY, contract_json

OPSET = 20
PLUGIN_DOMAIN = "trt.plugins"
PLUGIN_NAMESPACE = "mp_deploy"
TWO_GB = 2 * 1024 ** 3


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


def _plugin_translation():
    """torch.ops.mp_deploy.norm_relu_rearrange -> group_stats + norm_relu_rearrange plugin nodes."""
    import onnxscript

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


def _optimize(model) -> None:
    """onnxscript's optimizer (what `optimize=True` runs) with the constants lifted to initializers before its
    rewrite rules: in its own order the rules match over thousands of Constant nodes of the unrolled graph, which
    took ~200 s of a ~230 s tiny depth export on a CPU; in this order the same passes take ~20 s."""
    import onnx_ir.passes.common as common
    import onnxscript.optimizer
    import onnxscript.rewriter
    import onnxscript.rewriter.onnx_fusions

    lift = common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)
    fold = functools.partial(onnxscript.optimizer.fold_constants, onnx_shape_inference=True)
    for step in (common.InlinePass(), fold, common.RemoveUnusedNodesPass(), lift,
                 onnxscript.rewriter.rewrite, onnxscript.rewriter.onnx_fusions.fuse,
                 fold, common.RemoveUnusedNodesPass(), lift,
                 common.DeduplicateInitializersPass(), common.CommonSubexpressionEliminationPass(),
                 common.RemoveUnusedNodesPass(), common.OutputFixPass(), common.NameFixPass()):
        step(model)


def export_onnx(network, path: Path, flavour: str = "standard", contract: dict | None = None) -> list[str]:
    """Export `network` (export.networks.TaskNetwork) to `path` atomically, with `contract` (the artifact's,
    mp_deploy.artifacts) in its metadata. Returns the extra files written beside it (external data)."""
    if flavour not in ("standard", "tensorrt"):
        raise ValueError(f"ONNX flavour must be standard or tensorrt, got {flavour!r}")
    path = Path(path)
    plugin = flavour == "tensorrt"
    with ops.use_kernels(plugin, only=("norm_relu_rearrange",), any_device=True):
        program = network.export_program()
    table = _plugin_translation() if plugin else None
    onnx_program = torch.onnx.export(program, (network.trace_sample(),), dynamo=True, opset_version=OPSET,
                                     input_names=network.input_names, output_names=network.output_names,
                                     custom_translation_table=table, optimize=False, verify=False)
    _optimize(onnx_program.model)
    if contract is not None:
        onnx_program.model.metadata_props[ONNX_METADATA_KEY] = contract_json(contract)
    big = sum(p.numel() * p.element_size() for p in network.model.parameters()) > TWO_GB * 0.9
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmp:
        tmp_model = Path(tmp) / path.name
        onnx_program.save(str(tmp_model), external_data=big)
        extras = sorted(p.name for p in Path(tmp).iterdir() if p.name != path.name)
        for name in extras:  # data first, the model last: a visible .onnx always has its data
            shutil.move(str(Path(tmp) / name), str(path.parent / name))
        shutil.move(str(tmp_model), str(path))
    return extras


def load_checked(path: Path) -> onnx.ModelProto:
    """onnx.checker on the saved file (by path, so external data past 2 GB is fine)."""
    onnx.checker.check_model(str(path), full_check=False)
    return onnx.load(str(path), load_external_data=False)
