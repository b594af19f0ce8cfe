"""The OpenVINO backend (mp_deploy/backends/openvino.py): an IR (.xml + .bin) converted from the ONNX artifact of the
same build, with its own sidecar and its contract in the IR's rt_info. The session's depth build (`built`, backend
all) makes it beside the ONNX model it reads; nothing here builds another."""
import json
import shutil
import types

import pytest
import torch

from mp_deploy import backends
from mp_deploy.artifacts import ArtifactError, contract_of, read_sidecar, sidecar_path
from mp_deploy.backends import openvino as ov_backend
from mp_deploy.engine import Engine
from mp_deploy.errors import UsageError
from mp_deploy.util import rel_l2

OV = backends.get("openvino")
needs_openvino = pytest.mark.skipif(not OV.available("cpu")[0], reason=f"OpenVINO: {OV.available('cpu')[1]}")
XML, ONNX, BIN = "depth-nyu-tiny-fp32.xml", "depth-nyu-tiny-fp32.onnx", "depth-nyu-tiny-fp32.bin"


@pytest.fixture(scope="module")
def ov_engine(built):
    """The session's IR loaded once on one thread (a compile takes seconds)."""
    out, _ = built("depth")
    return Engine.load(out / XML, threads=1)


@needs_openvino
def test_openvino_matches_onnx_runtime_on_the_same_graph(built, ov_engine):
    # why: the IR is the ONNX graph converted; both runtimes must compute the same function. fp32 rounding only
    # (measured 2e-7): weights saved as fp16 (OpenVINO's default) measured 2.3e-5 and fail this bound
    out, _ = built("depth")
    ort_engine = Engine.load(out / ONNX)
    for batch, seed in ((1, 0), (1, 1)):
        x = torch.rand(batch, 3, 128, 128, generator=torch.Generator().manual_seed(seed))
        assert rel_l2(ov_engine.runner(x), ort_engine.runner(x)) <= 1e-5
    # why: on a CPU with AVX-512 BF16 or AMX the plugin computes an f32 model in bf16 unless told not to (measured
    # 6.8e-4 above); on a CPU without them the bound alone cannot see a lost hint, so the compiled model is asked
    compiled = ov_engine.runner.request.get_compiled_model()
    assert compiled.get_property("INFERENCE_PRECISION_HINT").to_string() == "f32"
    meta = ov_engine.meta
    assert meta["backend"] == "openvino" and meta["device"] == "cpu" and meta["parity"]["ok"] is True
    assert meta["parity"]["rule"] == 1e-4 and meta["parity"]["rel_l2"] <= 1e-4


@needs_openvino
def test_the_ir_carries_its_own_contract_and_not_the_onnx_one(built):
    # why: read_model imports the ONNX file's metadata (the ONNX artifact's contract, backend "onnx") under
    # rt_info["framework"]; the IR must hold its own (backend "openvino"), equal to its sidecar's, and nothing else
    out, _ = built("depth")
    meta = read_sidecar(out / XML)
    text = ov_backend.read_ir_contract(out / XML)
    assert json.loads(text) == contract_of(meta) and json.loads(text)["backend"] == "openvino"
    model = ov_backend.read_ir(ov_backend.openvino_module().Core(), out / XML)
    assert ov_backend.FRAMEWORK_KEY not in model.get_rt_info().keys()
    assert [f["name"] for f in meta["extra_files"]] == [BIN]  # the weights are checked with the IR


@needs_openvino
def test_altered_weights_or_contract_are_refused(built, tmp_path):
    # why: the .bin is half the artifact: a changed weight must be refused like a changed .xml; and an IR whose
    # contract was edited (its sidecar re-checksummed to match) must be refused naming the field
    from mp_deploy.artifacts import Sidecar, write_sidecar

    out, _ = built("depth")
    for name in (XML, BIN):
        shutil.copy(out / name, tmp_path / name)
    shutil.copy(sidecar_path(out / XML), sidecar_path(tmp_path / XML))
    data = bytearray((tmp_path / BIN).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / BIN).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="external data of .*does not match the checksum"):
        Engine.load(tmp_path / XML)

    meta = json.loads(sidecar_path(out / XML).read_text())
    ov = ov_backend.openvino_module()
    model = ov_backend.read_ir(ov.Core(), out / XML)
    model.set_rt_info(json.dumps(contract_of(meta) | {"precision": "fp16"}), [ov_backend.CONTRACT_KEY])
    ov.save_model(model, str(tmp_path / XML), compress_to_fp16=False)
    write_sidecar(tmp_path / XML, Sidecar(**meta))  # new checksums, the built contract fields
    with pytest.raises(ArtifactError, match="'precision' differs from the contract inside the artifact"):
        Engine.load(tmp_path / XML)


@needs_openvino
def test_the_runner_follows_the_cpu_thread_policy(ov_engine):
    # why: every CPU runner takes the policy's thread count and does not pin threads to cores (cpu_threads.py:
    # on a shared machine a pinned or spinning thread waits for a core another process holds)
    compiled = ov_engine.runner.request.get_compiled_model()
    assert compiled.get_property("INFERENCE_NUM_THREADS") == 1
    assert compiled.get_property("ENABLE_CPU_PINNING") is False


@needs_openvino
def test_predict_and_bench_find_it_by_its_name(built, monkeypatch):
    # why: registered, it is found by name with no branch elsewhere: predict's --engine DIR --backend openvino and
    # the bench's openvino row (its artifact search)
    from mp_deploy import bench
    from mp_deploy.prediction.runner import pick_artifact

    out, _ = built("depth")
    assert pick_artifact(out, "openvino", "depth").name == XML
    assert "openvino" in bench.row_names()
    spec = bench.BenchSpec(task="depth", backends=["openvino"], artifacts=str(out), device="cpu", height=128,
                           width=128).resolve()
    path, meta = bench.find_artifact(types.SimpleNamespace(spec=spec, device="cpu", cuda=False), "openvino", [1],
                                     128, 128)
    assert path.name == XML and meta["backend"] == "openvino"


def test_without_openvino_it_says_why(monkeypatch):
    # why: OpenVINO is optional: without it the backend is unavailable with the reason, and asking for it is a
    # usage error naming the install, before any work
    from mp_deploy.export.build_engine import plan_backends

    monkeypatch.setattr(ov_backend, "openvino_module", lambda: None)
    ok, why = OV.available("cpu")
    assert not ok and "pip install 'mp-deploy[openvino]'" in why
    assert "openvino" not in backends.all_available("cpu")
    with pytest.raises(UsageError, match=r"--backend openvino: the openvino package is not installed"):
        plan_backends("openvino", "cpu")
    assert not OV.available("cuda")[0]  # and never for CUDA builds (its GPU plugin is for Intel GPUs)


@needs_openvino
def test_build_makes_the_onnx_it_reads_first(tmp_path):
    # why: `--backend openvino` alone must still produce the ONNX model it converts, once, before it, and hand
    # its path to the conversion
    from mp_deploy.export.build_engine import BuildSpec, plan, plan_jobs

    for backend in ("openvino", "all"):
        jobs = plan_jobs(plan(BuildSpec(task="depth", backend=backend, model_size="tiny", output=str(tmp_path),
                                        device="cpu")))
        names = [j.backend for j in jobs]
        assert names.count("onnx") == 1 and names.index("onnx") < names.index("openvino"), names
        assert jobs[names.index("openvino")].source == ("onnx", "fp32")
