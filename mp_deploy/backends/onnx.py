"""ONNX (dynamo exporter, opset 20) run by ONNX Runtime: dynamic batch and height/width range, cleaned and folded;
the contract in the model's metadata (`metadata_props["mp_deploy_contract"]`).

fp16 graphs keep every normalisation's statistics in fp32 (explicit casts); past 2 GB the weights go to an
external data file beside the model. The TensorRT backend exports the same graph with its plugin nodes through
`export_onnx` (backends/tensorrt.py), the OpenVINO backend converts this file (backends/openvino.py).

int8 (`--precision int8`, CPU): ONNX Runtime static quantization of the fp32 artifact, calibrated on the task's own
images (export/calibration.py): `quantize_onnx`.
"""
from __future__ import annotations

import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from mp_deploy.backends.base import Backend, BuildOptions, Product, no_contract
from mp_deploy.contract import ONNX_METADATA_KEY, contract_json
from mp_deploy.errors import ArtifactError

OPSET = 20
TWO_GB = 2 * 1024 ** 3


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


def export_onnx(network, path: Path, contract: dict | None = None, translation_table=None,
                kernel_ops: tuple[str, ...] = ()) -> list[str]:
    """Export `network` (export.networks.TaskNetwork) to `path` atomically, with `contract` (the artifact's,
    mp_deploy.artifacts) in its metadata. `kernel_ops` stay single nodes in the exported program and
    `translation_table` turns them into ONNX nodes (the TensorRT plugins). Returns the extra files written beside
    it (external data)."""
    import mp_deploy.kernels  # noqa: F401  (registers the kernels that ops.use_kernels switches on)
    from mp_deploy import ops

    path = Path(path)
    with ops.use_kernels(bool(kernel_ops), only=kernel_ops or ops.KERNEL_OPS, any_device=True):
        program = network.export_program()
    onnx_program = torch.onnx.export(program, (network.trace_sample(),), dynamo=True, opset_version=OPSET,
                                     input_names=network.input_names, output_names=network.output_names,
                                     custom_translation_table=translation_table, optimize=False, verify=False)
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


def load_checked(path: Path):
    """onnx.checker on the saved file (by path, so external data past 2 GB is fine) -> the model proto."""
    import onnx

    onnx.checker.check_model(str(path), full_check=False)
    return onnx.load(str(path), load_external_data=False)


def read_onnx_contract(path: Path) -> str | None:
    """The contract's JSON text in an ONNX file's metadata, None when it holds none."""
    import onnx


    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return props.get(ONNX_METADATA_KEY)


# ------------------------------------------------------------------ int8

# The recipe measured best on the tiny depth demo (an AVX2 CPU without VNNI, issue #24's research; on an
# AVX-512 VNNI CPU quantizing MatMul too was slower than fp32, 30.5 vs 28.2 ms, Conv-only 1.28x faster):
# QDQ, unsigned activations and signed per-channel weights, MinMax ranges, Conv/ConvTranspose only. Quantizing
# MatMul as well made it slower (QLinearMatMul and the fused QLinearSoftmax lose to fp32 there). The network's
# first convolution (the VAE's, on the image) stays fp32: quantized, it alone took the 2026-12-03 depth demo to
# 3.9% relative L2 on 16 held-out scenes, against 1.1% without it (the last two convolutions: 3.9% either way).
INT8_OPS = ("Conv", "ConvTranspose")


def fp32_nodes(model) -> list[str]:
    """The nodes int8 leaves in fp32: the first convolution in graph (topological) order."""
    first = next((n for n in model.graph.node if n.op_type in INT8_OPS), None)
    return [] if first is None else [first.name]


class _Batches:
    """onnxruntime's CalibrationDataReader over a list of network inputs."""

    def __init__(self, name: str, batches):
        self.name, self.batches = name, list(batches)
        self.it = iter(self.batches)

    def get_next(self):
        x = next(self.it, None)
        return None if x is None else {self.name: x}

    def rewind(self):
        self.it = iter(self.batches)


def quantize_onnx(source: Path, path: Path, calibration, contract: dict | None = None) -> list[str]:
    """The int8 (QDQ) model of the fp32 ONNX `source` at `path`, atomically, its activation ranges calibrated on
    `calibration` (network inputs, numpy float32 (1, 3, H, W)), with `contract` in its metadata -> the extra files
    written beside it (none: a quantized model of over 2 GB is refused)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from mp_deploy.errors import BuildError

    path = Path(path)
    batches = [np.ascontiguousarray(x, dtype=np.float32) for x in calibration]
    if not batches:
        raise BuildError("int8 calibration needs at least one image")
    name = onnx.load(str(source), load_external_data=False).graph.input[0].name
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmp:
        # the optimizer's graph as it is (symbolic shape inference cannot follow the unrolled UNet); shapes and
        # fusions that calibration and quantization need
        pre, out = Path(tmp) / "pre.onnx", Path(tmp) / path.name
        quant_pre_process(str(source), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(out), _Batches(name, batches), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                        calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=list(INT8_OPS),
                        nodes_to_exclude=fp32_nodes(onnx.load(str(pre), load_external_data=False)),
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
        model = onnx.load(str(out))
        if model.ByteSize() > TWO_GB * 0.9:
            raise BuildError(f"the int8 model of {Path(source).name} is over 2 GB: not supported")
        if contract is not None:  # the quantizer keeps the fp32 model's metadata: the int8 contract replaces it
            props = {p.key: p.value for p in model.metadata_props} | {ONNX_METADATA_KEY: contract_json(contract)}
            del model.metadata_props[:]
            for key, value in props.items():
                model.metadata_props.add(key=key, value=value)
        onnx.save(model, str(out))
        shutil.move(str(out), str(path))
    return []


class ONNXRunner:
    """An ONNX Runtime session (CUDA provider when asked and present, else CPU on `threads` threads that do not
    spin: mp_deploy.cpu_threads)."""

    def __init__(self, path: Path, device: str, threads: int = 1):
        import onnxruntime as ort

        from mp_deploy.cpu_threads import onnxruntime_options

        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
        providers = [p for p in providers if p in ort.get_available_providers()]
        try:
            self.session = ort.InferenceSession(str(path), onnxruntime_options(threads), providers=providers)
        except Exception as e:
            raise ArtifactError(f"cannot load ONNX model {path}: {e}") from e
        self.input = self.session.get_inputs()[0].name

    def __call__(self, x):
        out = self.session.run(None, {self.input: x.detach().cpu().numpy()})[0]
        return torch.from_numpy(out)


class ONNXBackend(Backend):
    name, label, suffix = "onnx", "ONNX Runtime", ".onnx"
    artifact_devices = ("cpu",)  # one file for every device; ONNX Runtime's CUDA provider runs it on a GPU
    gpu_rank = 3
    auto = "always"
    precisions = ("fp32", "fp16", "int8")
    triton_network = {"backend": "onnxruntime"}
    bench_note = "includes numpy input/output copies"

    def available(self, device):
        for module in ("onnx", "onnxscript", "onnxruntime"):
            try:
                __import__(module)
            except ImportError:
                return False, f"the {module} package is not installed (pip install 'mp-deploy[export]')"
        return True, ""

    def runs_on(self, device):
        ok, why = self.available(device)
        if ok and device == "cuda":
            import onnxruntime as ort

            if "CUDAExecutionProvider" not in ort.get_available_providers():
                return False, ("onnxruntime has no CUDAExecutionProvider here (pip install onnxruntime-gpu); its CPU "
                               "provider on a CUDA run would not be comparable")
        return ok, why

    def write(self, product: Product, network, path: Path, options: BuildOptions, contract: dict) -> list[str]:
        return export_onnx(network, path, contract)

    def quantize(self, source, path, calibration, contract):
        return quantize_onnx(source, path, calibration, contract)

    def read_contract(self, path):

        text = read_onnx_contract(path)
        if text is None:
            raise no_contract(path, f"metadata {ONNX_METADATA_KEY!r}")
        return text

    def load(self, path, meta, device, threads=1):
        return ONNXRunner(path, device, threads)
