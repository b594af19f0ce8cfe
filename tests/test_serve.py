"""`mp-deploy serve`, `mp-deploy triton-repo` and mp_deploy.client, end to end on loopback.

The servers run in the serve venv (PyTriton pins numpy<2: README, Serving): $MP_DEPLOY_SERVE_PYTHON, else
.venv-serve/bin/python in the checkout, which the first run makes (`pip install -e ".[serve]"` into it, a few
minutes once), so the README's test command runs these tests on a fresh machine too. Each
server is started on free loopback ports and stopped by its test or fixture, which checks that no process or
workspace is left.
"""
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from threading import Thread

import numpy as np
import pytest
import yaml

from mp_deploy.client import Client, ServerError, as_uint8_nhwc, infer
from mp_deploy.engine import Engine, EngineError
from mp_deploy.errors import UsageError
from mp_deploy.serve.guide import server_args
from mp_deploy.serve.process import ROOT, ServeProcess, free_ports, serve_python
from mp_deploy.serve.repo import model_configs, write_repository
from mp_deploy.serve.server import check_ports, repository_models, use_this_libpython
from mp_deploy.serve.spec import ModelSpec, describe
from mp_deploy.util import rel_l2

MODEL = "depth-synthetic-depth"
PARITY = 1e-4  # the fp32 parity rule (relative L2)
READY_TIMEOUT_S = 240  # a guard against hangs: a busy 2-core machine takes ~30 s to import torch & co and load
SIGTERM_EXIT_S = 10  # issue 16: SIGTERM -> exit 0 within 10 s


def python() -> Path:
    if serve_python() is None:
        if os.environ.get("MP_DEPLOY_SERVE_PYTHON"):
            pytest.fail(f"MP_DEPLOY_SERVE_PYTHON={os.environ['MP_DEPLOY_SERVE_PYTHON']} does not exist")
        make_serve_venv(ROOT / ".venv-serve")
    return serve_python()


def make_serve_venv(venv: Path) -> None:
    """python -m venv VENV && VENV/bin/pip install -e ".[serve]"; nothing is left of a failed attempt."""
    print(f"making the serve venv {venv} (once; a few minutes)", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, text=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "-e", ".[serve]"], cwd=ROOT, check=True,
                       capture_output=True, text=True, timeout=1800)
    except subprocess.CalledProcessError as e:
        shutil.rmtree(venv, ignore_errors=True)
        why = (e.stderr or e.stdout or "")[-2000:]
        if "glibc" in why.lower() or "no matching distribution found for nvidia-pytriton" in why.lower():
            pytest.skip(f"nvidia-pytriton cannot be installed here (it needs glibc >= 2.35): {why[-300:]}")
        pytest.fail(f"making the serve venv failed: {why}")


def ready(server: ServeProcess) -> ServeProcess:
    try:
        return server.wait_ready(MODEL, READY_TIMEOUT_S)
    except RuntimeError as e:
        server.kill()
        pytest.fail(str(e))


def stop(server: ServeProcess, timeout_s: float = 60) -> None:
    """SIGTERM: exit 0 within timeout_s, nothing left behind."""
    t0 = time.monotonic()
    status = server.stop(timeout_s)
    assert status == 0, f"exit {status} after {time.monotonic() - t0:.1f} s:\n{server.output()}"
    assert server.leftovers() == []


@pytest.fixture(scope="module")
def artifact(depth_onnx) -> Path:
    """The depth demo as ONNX, 128x128, batch 1..4 (dynamic batching has room for several requests)."""
    return depth_onnx


@pytest.fixture(scope="module")
def engine(artifact):
    return Engine.load(artifact)


@pytest.fixture(scope="module")
def serve_venv() -> Path:
    return python()


@pytest.fixture(scope="module")
def servers(serve_venv, artifact, tmp_path_factory):  # serve_venv first: no build when the tests are skipped
    """`mp-deploy serve` on the artifact, and on the Python-backend repository of it, started together (their
    start-ups overlap); each waited for where it is first used. Killed at the end if a test did not stop it."""
    repo = write_repository([artifact], tmp_path_factory.mktemp("repo") / "repo", python_backend=True,
                            log=lambda msg: None)
    servers = {name: ServeProcess(serve_venv, args, tmp_path_factory.mktemp(name))
               for name, args in (("engine", ["--engine", artifact]), ("repository", ["--repository", repo]))}
    yield servers
    for server in servers.values():
        if server.proc.poll() is None:
            server.kill()


@pytest.fixture(scope="module")
def server(servers):
    return ready(servers["engine"])


def images(batch: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (batch, 128, 128, 3), dtype=np.uint8)


# ------------------------------------------------------------------ mp-deploy serve

@pytest.mark.parametrize("scheme", ["http", "grpc"])
def test_outputs_equal_engine_run(server, engine, scheme):
    with Client(server.url(scheme)) as client:
        assert client.model_info(MODEL) == {"height": 128, "width": 128, "max_batch": 4, "outputs": ["depth"]}
    x = images(2, seed=1)
    out = infer(server.url(scheme), MODEL, x)
    assert set(out) == {"depth"} and out["depth"].shape == (2, 1, 128, 128)
    assert rel_l2(out["depth"], engine.run(x)["depth"]) <= PARITY


def test_concurrent_requests_are_answered_each(server, engine):
    """Requests that dynamic batching may put in one batch each get their own result."""
    xs = [images(1, seed=10 + i) for i in range(4)]
    results = [None] * len(xs)

    def call(i):
        results[i] = infer(server.url("grpc"), MODEL, xs[i])["depth"]

    threads = [Thread(target=call, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for x, out in zip(xs, results):
        assert out is not None and rel_l2(out, engine.run(x)["depth"]) <= PARITY


@pytest.mark.parametrize("what, data, dtype", [
    ("wrong dtype", np.zeros((1, 128, 128, 3), np.float32), "FP32"),
    ("wrong shape", np.zeros((1, 64, 128, 3), np.uint8), "UINT8"),
    ("empty image", np.zeros((1, 0, 0, 3), np.uint8), "UINT8"),
    ("batch too large", np.zeros((5, 128, 128, 3), np.uint8), "UINT8"),
])
def test_bad_request_is_4xx_and_server_stays_ready(server, what, data, dtype):
    import tritonclient.http as http
    from tritonclient.utils import InferenceServerException

    client = http.InferenceServerClient(f"127.0.0.1:{server.http}")
    inp = http.InferInput("images", list(data.shape), dtype)
    inp.set_data_from_numpy(data)
    with pytest.raises(InferenceServerException) as e:
        client.infer(MODEL, [inp])
    assert str(e.value.status()).startswith("4"), f"{what}: {e.value}"
    assert client.is_server_ready() and client.is_model_ready(MODEL)


def test_client_raises_engine_error_for_refused_images(server):
    with Client(server.url("grpc")) as client:
        with pytest.raises(EngineError, match="batch-size"):
            client.infer(MODEL, images(5, seed=2))
        with pytest.raises(EngineError, match="empty"):  # refused before it is sent
            client.infer(MODEL, np.zeros((1, 0, 0, 3), np.uint8))
        with pytest.raises(UsageError, match="no model"):
            client.infer("seg-ade20k", images(1, seed=3))


def test_health_and_metrics_endpoints(server):
    from urllib.request import urlopen

    for path in ("/v2/health/live", "/v2/health/ready", f"/v2/models/{MODEL}/ready"):
        with urlopen(f"http://127.0.0.1:{server.http}{path}", timeout=10) as r:
            assert r.status == 200, path
    with urlopen(f"http://127.0.0.1:{server.metrics}/metrics", timeout=10) as r:
        metrics = r.read().decode()
    assert f'nv_inference_request_success{{model="{MODEL}"' in metrics


def test_busy_port_is_named(server):
    """What a second `mp-deploy serve` on these ports says before it starts anything (instead of PyTriton's
    misleading `[403] ... triton-access-token`)."""
    a, b, c = free_ports(3)
    with pytest.raises(UsageError, match=f"port {server.grpc} is in use"):
        check_ports("127.0.0.1", {"http": a, "grpc": server.grpc, "metrics": b})
    with pytest.raises(UsageError, match="must differ"):
        check_ports("127.0.0.1", {"http": a, "grpc": a, "metrics": b})
    check_ports("127.0.0.1", {"http": a, "grpc": b, "metrics": c})


def test_sigterm_stops_cleanly(server):
    stop(server, SIGTERM_EXIT_S)


def test_server_loads_this_interpreters_libpython(monkeypatch):
    """The Python backend stub links libpython3.X: this interpreter's must come first (issue 16's trap)."""
    monkeypatch.setenv("LD_LIBRARY_PATH", "/elsewhere")
    use_this_libpython()
    assert os.environ["LD_LIBRARY_PATH"].split(":") == [sysconfig.get_config_var("LIBDIR"), "/elsewhere"]


# ------------------------------------------------------------------ mp-deploy triton-repo

def test_python_backend_repository_on_bundled_tritonserver(servers, engine):
    server = ready(servers["repository"])
    try:
        x = images(2, seed=4)
        for scheme in ("http", "grpc"):
            assert rel_l2(infer(server.url(scheme), MODEL, x)["depth"], engine.run(x)["depth"]) <= PARITY
    finally:
        stop(server)


def parse(path: Path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_onnx_repository_is_an_ensemble(artifact, tmp_path):
    out = write_repository([artifact], tmp_path / "repo", log=lambda msg: None)
    models = out / "models"
    configs = {p.parent.name: parse(p) for p in models.glob("*/config.pbtxt")}
    assert set(configs) == {MODEL, f"{MODEL}-pre", f"{MODEL}-net", f"{MODEL}-post"}
    ensemble, net = configs[MODEL], configs[f"{MODEL}-net"]
    assert ensemble.platform == "ensemble" and ensemble.max_batch_size == 4
    assert [s.model_name for s in ensemble.ensemble_scheduling.step] == [f"{MODEL}-{r}" for r in ("pre", "net", "post")]
    assert list(ensemble.input[0].dims) == [128, 128, 3] and list(ensemble.output[0].dims) == [1, 128, 128]
    # every tensor a step reads is one the ensemble has or an earlier step writes
    known = {ensemble.input[0].name}
    for step in ensemble.ensemble_scheduling.step:
        assert set(step.input_map.values()) <= known
        known |= set(step.output_map.values())
    assert {o.name for o in ensemble.output} <= known
    assert net.backend == "onnxruntime" and (models / f"{MODEL}-net/1" / net.default_model_filename).is_file()
    assert net.instance_group[0].kind == net.instance_group[0].KIND_GPU
    for name in (f"{MODEL}-pre", f"{MODEL}-post"):
        config = configs[name]
        assert config.backend == "python" and config.HasField("dynamic_batching") and config.model_warmup
        assert (models / name / "1/model.py").is_file()
        assert (models / name / "1" / config.parameters["sidecar"].string_value).is_file()
    assert (out / "Dockerfile").is_file() and MODEL in (out / "README.md").read_text()
    docs = list(yaml.safe_load_all((out / "deployment.yaml").read_text()))
    container = docs[0]["spec"]["template"]["spec"]["containers"][0]
    assert [d["kind"] for d in docs] == ["Deployment", "Service"] and container["args"] == ["--model-repository=/models"]
    with pytest.raises(UsageError, match="exists"):
        write_repository([artifact], out, log=lambda msg: None)
    with pytest.raises(UsageError, match="Python backend only"):  # what `mp-deploy serve --repository` says
        repository_models(models)


def test_tensorrt_and_pt2_configs(artifact):
    """From sidecars as a TensorRT and an AOTInductor build write them (no such artifact is built here)."""
    [spec] = describe([artifact])
    plugin = {"name": "libmp_plugins.so", "sha256": "0" * 64}
    trt = ModelSpec(MODEL, artifact.with_suffix(".engine"), dict(spec.meta, backend="tensorrt", device="cuda",
                                                                 precision="fp16", plugins=[plugin]))
    configs = model_configs(trt)
    net = configs[f"{MODEL}-net"]
    assert net.platform == "tensorrt_plan" and net.default_model_filename == trt.path.name
    assert net.instance_group[0].kind == net.instance_group[0].KIND_GPU
    assert server_args([trt], {MODEL: configs})[1] == \
        f"--backend-config=tensorrt,plugins=/models/{MODEL}-net/1/libmp_plugins.so"
    with pytest.raises(UsageError, match="runs on a GPU"):
        model_configs(trt, kind="cpu")
    pt2 = ModelSpec(MODEL, artifact.with_suffix(".pt2"), dict(spec.meta, backend="aoti"))
    [(name, config)] = model_configs(pt2).items()
    assert name == MODEL and config.backend == "python" and config.parameters["artifact"].string_value == pt2.path.name
    assert config.instance_group[0].kind == config.instance_group[0].KIND_CPU


# ------------------------------------------------------------------ the client alone

def test_client_inputs_and_errors():
    x = images(1, seed=5)
    assert np.array_equal(as_uint8_nhwc(x[0]), x)
    assert np.array_equal(as_uint8_nhwc(x.transpose(0, 3, 1, 2) / 255.0), x)  # float NCHW in [0, 1]
    with pytest.raises(EngineError):
        as_uint8_nhwc(np.full((1, 3, 8, 8), 2.0))
    with pytest.raises(UsageError, match="URL"):
        Client("ftp://localhost:1")
    with pytest.raises(ServerError):
        infer(f"http://127.0.0.1:{free_ports(1)[0]}", MODEL, x)

