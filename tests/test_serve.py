"""`mp-deploy serve`, `mp-deploy triton-repo` and mp_deploy.client, end to end on loopback.

The servers run in this environment (the `test` extra holds the `serve` one), or in $MP_DEPLOY_SERVE_PYTHON's.
Each server is started on free loopback ports and stopped by its test or fixture, which checks that no process or
workspace is left.
"""
import json
import os
import re
import sysconfig
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from threading import Thread

import numpy as np
import pytest
import yaml

from mp_deploy.client import Client, ServerError, as_uint8_nhwc, infer
from mp_deploy.engine import Engine, EngineError
from mp_deploy.errors import UsageError
from mp_deploy.serve.guide import server_args
from helpers.serve_process import ServeProcess, free_ports, serve_python
from mp_deploy.serve.repo import model_configs, write_repository
from mp_deploy.serve.server import check_ports, repository_models
from mp_deploy.serve.spec import ModelSpec, describe
from mp_deploy.util import rel_l2

MODEL = "depth-synthetic-depth"
PARITY = 1e-4  # the fp32 parity rule (relative L2)
READY_TIMEOUT_S = 240  # a guard against hangs: a busy 2-core machine takes ~30 s to import torch & co and load
POLL_HZ = 20  # readiness samples per second from the server's start
SIGTERM_EXIT_S = 10  # issue 16: SIGTERM -> exit 0 within 10 s


def python() -> Path:
    found = serve_python()
    if found is None:
        pytest.fail(f"MP_DEPLOY_SERVE_PYTHON={os.environ['MP_DEPLOY_SERVE_PYTHON']} does not exist")
    return found


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


class ReadinessPoll:
    """From the server's start, at POLL_HZ: HTTP and gRPC health and the model's readiness on both, each sample
    (time, http health, grpc health, http model, grpc model) until `stop`; refused connections count as not
    ready."""

    def __init__(self, server: ServeProcess):
        self.server, self.samples, self.stop = server, [], threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        import tritonclient.grpc as grpcclient
        from urllib.request import urlopen

        def http(path):
            try:
                with urlopen(f"http://127.0.0.1:{self.server.http}{path}", timeout=0.5) as r:
                    return r.status == 200
            except OSError:
                return False

        def grpc(call):
            try:
                with grpcclient.InferenceServerClient(f"127.0.0.1:{self.server.grpc}") as c:
                    return bool(call(c))
            except Exception:  # noqa: BLE001 (unavailable)
                return False

        while not self.stop.is_set():
            t0 = time.monotonic()
            self.samples.append((t0, http("/v2/health/ready"), grpc(lambda c: c.is_server_ready(client_timeout=0.5)),
                                 http(f"/v2/models/{MODEL}/ready"),
                                 grpc(lambda c: c.is_model_ready(MODEL, client_timeout=0.5))))
            self.stop.wait(max(0.0, 1 / POLL_HZ - (time.monotonic() - t0)))


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
def servers(serve_venv, artifact, tmp_path_factory):
    """`mp-deploy serve` on the artifact (its readiness polled from its start), and on the Python-backend
    repository of it, started together (their start-ups overlap); each waited for where it is first used.
    Killed at the end if a test did not stop it."""
    repo = write_repository([artifact], tmp_path_factory.mktemp("repo") / "repo", python_backend=True,
                            log=lambda msg: None)
    servers = {name: ServeProcess(serve_venv, args, tmp_path_factory.mktemp(name))
               for name, args in (("engine", ["--engine", artifact]), ("repository", ["--repository", repo]))}
    servers["poll"] = ReadinessPoll(servers["engine"])
    yield servers
    servers["poll"].stop.set()
    for name, server in servers.items():
        if name != "poll" and server.proc.poll() is None:
            server.kill()


@pytest.fixture(scope="module")
def server(servers):
    server = ready(servers["engine"])
    time.sleep(1.0)  # a second of samples after ready: readiness must not go back
    servers["poll"].stop.set()
    servers["poll"].thread.join(10)
    return server


def images(batch: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (batch, 128, 128, 3), dtype=np.uint8)


# ------------------------------------------------------------------ mp-deploy serve

def test_ready_means_ready_from_the_first_answer(servers, server):
    """Polled from the process start at >= 10 Hz on HTTP and gRPC: no sample where health says ready and the
    model is not, and once ready, never not-ready again."""
    samples = servers["poll"].samples
    times = [t for t, *_ in samples]
    assert len(samples) > 20 and (times[-1] - times[0]) / (len(times) - 1) <= 1 / 10 + 0.02, "polled too slowly"
    lies = [s for s in samples if (s[1] or s[2]) and not (s[3] and s[4])]
    assert not lies, f"health said ready while the model was not: {lies[:3]}"
    first = next(i for i, s in enumerate(samples) if all(s[1:]))
    assert all(all(s[1:]) for s in samples[first:]), "readiness went back to not-ready"
    # nothing answered before: connections were refused. One sample may straddle the moment the front opens (its
    # four probes run one after another: an early one refused, the later ones answered), none before it.
    assert not any(any(s[1:]) for s in samples[:max(first - 1, 0)]), samples[:first][-3:]


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


def test_a_batch_of_4_is_answered_and_batches_form(server, engine):
    """A batch-4 request is one request; 16 concurrent single-image requests are executed in fewer batches
    (dynamic batching, from tritonserver's own counters)."""
    x = images(4, seed=6)
    assert rel_l2(infer(server.url("http"), MODEL, x)["depth"], engine.run(x)["depth"]) <= PARITY
    before = batch_counters(server)
    xs = [images(1, seed=20 + i) for i in range(16)]

    def call(i):
        with Client(server.url("grpc")) as client:
            return client.infer(MODEL, xs[i])["depth"]

    with ThreadPoolExecutor(16) as pool:
        outs = list(pool.map(call, range(16)))
    for x_, out in zip(xs, outs):
        assert rel_l2(out, engine.run(x_)["depth"]) <= PARITY
    requests, executions = (a - b for a, b in zip(batch_counters(server), before))
    assert requests == 16 and executions < 16, (requests, executions)


def batch_counters(server) -> tuple[float, float]:
    """(inference requests, executions) of MODEL so far, from the Prometheus metrics."""
    from urllib.request import urlopen

    with urlopen(f"http://127.0.0.1:{server.metrics}/metrics", timeout=10) as r:
        text = r.read().decode()
    return tuple(sum(float(v) for v in re.findall(rf'^{name}{{model="{MODEL}"[^}}]*}} (\S+)', text, re.M))
                 for name in ("nv_inference_request_success", "nv_inference_exec_count"))


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


def raw_post(server, body: bytes, headers=None) -> tuple[int, str]:
    from urllib.error import HTTPError
    from urllib.request import Request, urlopen

    request = Request(f"http://127.0.0.1:{server.http}/v2/models/{MODEL}/infer", data=body, method="POST",
                      headers=headers or {})
    try:
        with urlopen(request, timeout=60) as r:
            return r.status, r.read().decode(errors="replace")
    except HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def infer_json(shape, data, datatype="UINT8"):
    return json.dumps({"inputs": [{"name": "images", "shape": shape, "datatype": datatype, "data": data}]}).encode()


@pytest.mark.parametrize("what, body, status, needle", [
    ("the request that killed tritonserver", infer_json([1, 100000, 100000, 3], list(range(10))), 400, "height 100000"),
    ("a huge declared image", infer_json([1, 20000, 20000, 3], [0]), 400, "height 20000"),
    ("values that wrapped", infer_json([1, 128, 128, 3], [300] * (128 * 128 * 3)), 400, "0..255"),
    ("malformed JSON", b"{not json", 400, "not valid JSON"),
    ("a negative side", infer_json([1, -1, 128, 3], [0]), 400, "height -1"),
    ("too few values", infer_json([1, 128, 128, 3], [0] * 7), 400, "needs 49152 values"),
    ("too many values", infer_json([1, 128, 128, 3], [0] * (128 * 128 * 3 + 1)), 400, "needs 49152 values"),
    ("rank 3", infer_json([128, 128, 3], [0] * (128 * 128 * 3)), 400, "rank 3, expected 4"),
    ("an unknown model", b"{}", 404, "unknown model"),
])
def test_client_errors_are_client_errors(server, engine, what, body, status, needle):
    """Each answered as a 4xx naming the rule (they were 500s, wrapped values or a crash); the server stays
    ready and answers a good request right after."""
    if what == "an unknown model":
        from urllib.error import HTTPError
        from urllib.request import Request, urlopen

        with pytest.raises(HTTPError) as e:
            urlopen(Request(f"http://127.0.0.1:{server.http}/v2/models/banana/infer", data=body, method="POST"),
                    timeout=60)
        got, text = e.value.code, e.value.read().decode()
    else:
        got, text = raw_post(server, body)
    assert got == status and needle in text, (what, got, text[:300])
    x = images(1, seed=7)
    assert rel_l2(infer(server.url("http"), MODEL, x)["depth"], engine.run(x)["depth"]) <= PARITY


FUZZ_SEED, FUZZ_CASES = int(os.environ.get("MP_FUZZ_SEED", "0")), int(os.environ.get("MP_FUZZ_CASES", "40"))


def fuzz_http_case(rng: np.random.Generator) -> tuple[bytes, dict]:
    """A good request, mutated one way: its declared shape, datatype, values, binary sizes, header length, the
    bytes themselves."""
    n = 128 * 128 * 3
    shape = [1, 128, 128, 3]
    kind = rng.integers(8)
    if kind == 0:  # a declared shape from hostile to plausible
        shape = [int(rng.choice([0, 1, 4, 5, 10 ** 5, -3, 2 ** 31])) for _ in range(int(rng.integers(1, 6)))]
        return infer_json(shape, [0] * int(rng.integers(0, 20))), {}
    if kind == 1:  # values out of range or of the wrong type
        bad = rng.choice([256, 300, -1, 1.5, 1e9, True, "x", None])
        data = [0] * n
        data[int(rng.integers(n))] = bad.item() if hasattr(bad, "item") else bad
        return infer_json(shape, data), {}
    if kind == 2:  # a datatype that is not uint8
        return infer_json(shape, [0] * n, str(rng.choice(["FP32", "INT8", "BYTES", "", "UINT8 "]))), {}
    if kind == 3:  # binary data of a size that does not add up, or a header length that lies
        size = int(rng.choice([n, n - 1, n + 1, 0, -n]))
        head = json.dumps({"inputs": [{"name": "images", "shape": shape, "datatype": "UINT8",
                                       "parameters": {"binary_data_size": size}}]}).encode()
        cut = int(rng.choice([len(head), len(head) - 1, len(head) + 5, 0, 10 ** 9]))
        return head + bytes(max(0, int(rng.integers(n - 2, n + 3)))), {"Inference-Header-Content-Length": str(cut)}
    if kind == 4:  # random bytes
        return rng.integers(0, 256, int(rng.integers(0, 4096)), dtype=np.uint8).tobytes(), {}
    if kind == 5:  # a good request truncated
        good = infer_json(shape, [7] * n)
        return good[:int(rng.integers(1, len(good)))], {}
    if kind == 6:  # nesting, odd JSON
        return (b"[" * int(rng.integers(1, 50000)) if rng.random() < 0.5 else
                json.dumps({"inputs": [{"name": "images", "shape": shape, "datatype": "UINT8",
                                        "data": [[[0] * 3] * 128] * 128}], "outputs": [{"name": "nope"}]}).encode()), {}
    return infer_json(shape, [int(v) for v in rng.integers(0, 256, n)]), {"Content-Encoding": "gzip"}


def test_fuzz_requests(server, engine):
    """Seeded, bounded: FUZZ_CASES mutated HTTP requests and as many gRPC ones; none may be answered as a server
    fault or hurt it: after each, the server is ready and answers a good request right."""
    import grpc
    from tritonclient.grpc import service_pb2

    rng = np.random.default_rng(FUZZ_SEED)
    good = images(1, seed=8)
    want = engine.run(good)["depth"]
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc}")
    model_infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
    statuses, codes = set(), set()
    try:
        for case in range(FUZZ_CASES):
            body, headers = fuzz_http_case(rng)
            status, text = raw_post(server, body, headers)
            assert status < 500, (case, status, text[:300])
            statuses.add(status)
            request = service_pb2.ModelInferRequest(model_name=str(rng.choice([MODEL, MODEL, "other"])))
            item = request.inputs.add(name="images", datatype=str(rng.choice(["UINT8", "UINT8", "FP32"])),
                                      shape=[int(v) for v in rng.choice([1, 2, 128, 0, 10 ** 6, -1], 4)])
            if rng.random() < 0.5:
                request.raw_input_contents.append(bytes(int(rng.integers(0, 50000))))
            else:
                item.contents.uint_contents.extend([int(v) for v in rng.integers(0, 400, int(rng.integers(0, 100)))])
            raw = request.SerializeToString() if rng.random() < 0.8 else rng.bytes(int(rng.integers(1, 200)))
            try:
                model_infer(raw, timeout=60)
                codes.add(grpc.StatusCode.OK)
            except grpc.RpcError as e:
                assert e.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), (case, e.details())
                codes.add(e.code())
            assert rel_l2(infer(server.url("http"), MODEL, good)["depth"], want) <= PARITY, case
            with Client(server.url("grpc")) as client:
                assert client.ready(MODEL)
    finally:
        channel.close()
    assert 400 in statuses and grpc.StatusCode.INVALID_ARGUMENT in codes  # the cases reached the checks


def test_client_raises_engine_error_for_refused_images(server):
    with Client(server.url("grpc")) as client:
        with pytest.raises(EngineError, match="batch 5 is outside 1..4"):
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


def test_tritonserver_runs_on_this_interpreters_libpython(monkeypatch):
    """The Python backend stub links libpython3.X: this interpreter's must come first (issue 16's trap)."""
    from mp_deploy.serve.tritonserver import environment, find_bundle

    monkeypatch.setenv("LD_LIBRARY_PATH", "/elsewhere")
    env = environment(find_bundle())
    assert env["LD_LIBRARY_PATH"].split(":")[0] == sysconfig.get_config_var("LIBDIR")
    assert env["LD_LIBRARY_PATH"].split(":")[-1] == "/elsewhere" and "TRITON_INTERPRET" not in env


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

