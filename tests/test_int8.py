"""`mp-deploy build --precision int8`: ONNX Runtime static quantization of the fp32 ONNX artifact, calibrated on the
task's own images (the synthetic training split for the demo presets, or --calibration FOLDER), held to the int8
rule on held-out images (export.parity.INT8_RULE: relative L2 against eager fp32 and the task's headline metric).

Both builds start from a copy of the session's depth demo ONNX model (`depth_onnx`), which they reuse (up to date):
only the quantization and the checks run here."""
import shutil

import numpy as np
import onnx
import pytest
from PIL import Image

from mp_deploy import demo
from mp_deploy.artifacts import embedded_contract, read_sidecar, sidecar_path
from mp_deploy.engine import Engine
from mp_deploy.errors import UsageError
from mp_deploy.export.build_engine import BuildSpec, build, plan
from mp_deploy.export.parity import INT8_RULE

INT8, FP32 = "depth-synthetic-depth-tiny-int8.onnx", "depth-synthetic-depth-tiny-fp32.onnx"


CALIBRATION, HELD_OUT = 16, 16  # fewer than a real build's 64 / 32: test time (measured alike: 1.0-1.1% rel L2)


def int8_spec(out, **kw) -> BuildSpec:
    # the depth_onnx fixture's own spec, at int8: its fp32 artifact is reused
    return BuildSpec(**(dict(task="depth", checkpoint=str(demo.checkpoint("depth")), backend="onnx", precision="int8",
                             output=str(out), batch=(1, 2, 4), height=(128,) * 3, width=(128,) * 3, runs=1,
                             device="cpu", calibration_images=CALIBRATION, held_out_images=HELD_OUT) | kw))


def with_fp32(depth_onnx, folder):
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(depth_onnx, folder / FP32)
    shutil.copy(sidecar_path(depth_onnx), sidecar_path(folder / FP32))
    return folder


@pytest.fixture(scope="module")
def int8_build(depth_onnx, tmp_path_factory):
    out = with_fp32(depth_onnx, tmp_path_factory.mktemp("int8"))
    return out, build(int8_spec(out))


def test_int8_build_meets_its_rule_on_held_out_scenes(int8_build):
    # why: the rule, measured where it is stated: relative L2 against eager fp32 and AbsRel of both on the
    # held-out synthetic split (never calibrated on), calibrated on the training split; recorded in the sidecar
    out, artifacts = int8_build
    by_name = {a.path.name: a for a in artifacts}
    assert sorted(by_name) == [FP32, INT8]  # the fp32 artifact it is quantized from, reused and checked too
    a = by_name[INT8]
    assert a.ok, a.status
    meta = read_sidecar(a.path)
    parity, held = meta["parity"], meta["parity"]["held_out"]
    assert parity["ok"] is True and parity["rule"] == INT8_RULE.rel_l2 and "held-out" in parity["rule_text"]
    # quantized for real (not a copy of fp32, whose error is ~1e-7), and within the rule
    assert 1e-3 < parity["rel_l2"] <= INT8_RULE.rel_l2
    assert held["data"] == "synthetic val split" and held["images"] == HELD_OUT and held["metric"] == "abs_rel"
    assert held["worse_by"] <= INT8_RULE.metric_change and held["fp32"] > 0 and held["int8"] > 0
    assert meta["source"]["calibration"] == {"data": "synthetic train split", "images": CALIBRATION}
    assert parity["random_inputs"]["rel_l2"] is not None  # for information, recorded beside it


def test_the_int8_model_is_quantized_and_carries_its_contract(int8_build):
    # why: the contract inside must say int8 (the quantizer copies the fp32 model's metadata, which says fp32),
    # and the graph must hold int8 convolution weights with their quantize / dequantize pairs
    out, _ = int8_build
    meta = read_sidecar(out / INT8)
    assert embedded_contract(out / INT8, "onnx")["precision"] == "int8" == meta["precision"]
    assert meta["input"]["dtype"] == "float32"  # fed like the fp32 artifact
    model = onnx.load(str(out / INT8))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    int8_weights = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert len(int8_weights) > 10
    image = (np.random.default_rng(0).random((128, 128, 3)) * 255).astype(np.uint8)
    got, want = Engine.load(out / INT8).run(image)["depth"], Engine.load(out / FP32).run(image)["depth"]
    assert np.isfinite(got).all() and np.linalg.norm(got - want) / np.linalg.norm(want) < 0.05


def test_a_broken_calibration_fails_the_int8_rule(depth_onnx, tmp_path):
    # why: the rule must catch a quantization calibrated on the wrong data: constant grey images give activation
    # ranges far too narrow for real scenes (measured 5.9% relative L2 on held-out scenes against the rule's 3%)
    out = with_fp32(depth_onnx, tmp_path / "out")
    grey = tmp_path / "grey"
    grey.mkdir()
    for i in range(8):
        Image.fromarray(np.full((128, 128, 3), 128, np.uint8)).save(grey / f"{i}.png")
    artifacts = build(int8_spec(out, calibration=str(grey)))
    a = {x.path.name: x for x in artifacts}[INT8]
    assert not a.ok and "relative L2" in a.status, a.status
    meta = read_sidecar(out / INT8)
    assert meta["parity"]["ok"] is False and meta["parity"]["rel_l2"] > INT8_RULE.rel_l2
    assert meta["source"]["calibration"]["folder"] == str(grey.resolve()) and meta["source"]["calibration"][
        "images"] == 8


def test_int8_is_quantized_from_the_fp32_artifact(tmp_path):
    # why: the int8 file is made from its backend's fp32 artifact (built or reused first, and checked on its own),
    # never exported at int8; `--backend auto` keeps only the backends that quantize
    from mp_deploy.export.build_engine import plan_jobs

    for backend in ("onnx", "auto"):
        jobs = plan_jobs(plan(int8_spec(tmp_path, backend=backend)))
        assert [(j.backend, j.precision, j.source) for j in jobs] == [("onnx", "fp32", None),
                                                                       ("onnx", "int8", ("onnx", "fp32"))]


@pytest.mark.parametrize("change, message", [
    # why each: refused before any work, with what to do
    (dict(backend="aoti"), "--backend aoti builds fp32, fp16, not int8"),
    (dict(device="cuda"), "(builds CPU artifacts|no CUDA device here)"),
    (dict(precision="fp32", calibration="x"), "--calibration is for --precision int8"),
    (dict(checkpoint=None, model_size="tiny"), "preset nyu: its nyu data needs a root"),  # released data: a folder
    (dict(calibration="/nonexistent/folder"), "--calibration"),
])
def test_int8_plans_that_cannot_work_are_refused(tmp_path, change, message):
    with pytest.raises(UsageError, match=message):
        plan(int8_spec(tmp_path, **change))
