"""Load test of `mp-deploy serve` on loopback: the server started on free ports, a fixed number of requests at each
concurrency, throughput and p50/p95/p99 latency, failed requests counted, the server's memory (RSS of it,
tritonserver and the Python stubs) sampled throughout and compared with its level after warm-up. Bounded in
requests and in time; results in benchmarks/results/serve-<device>-<date>.json and .csv.

    python benchmarks/load_test.py --engine artifacts/depth-nyu-tiny-fp32.onnx [--requests 96] [--concurrency 1,8,32]

Exit 1 when a request failed, a level ran out of time or the server's memory grew beyond the margin.
"""
from __future__ import annotations

import argparse
import datetime
import os
import re
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.request import urlopen

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the serve process helper

from helpers.serve_process import ServeProcess, serve_python  # noqa: E402

from mp_deploy import cli  # noqa: E402
from mp_deploy.client import Client  # noqa: E402
from mp_deploy.errors import MpDeployError, UsageError  # noqa: E402
from mp_deploy.serve.spec import describe  # noqa: E402
from mp_deploy.timing import write_results  # noqa: E402
from mp_deploy.util import device_name, slug  # noqa: E402

FIELDS = ["concurrency", "requests", "failed", "throughput_rps", "p50_ms", "p95_ms", "p99_ms", "mean_ms",
          "mean_batch", "wall_s", "rss_end_mb"]


def sampler(server: ServeProcess, samples: list, stop: threading.Event, period_s: float = 0.5) -> threading.Thread:
    def loop():
        while not stop.wait(period_s):
            samples.append((time.monotonic(), server.rss_mb()))

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


def batch_counters(server: ServeProcess, model: str) -> tuple[float, float]:
    """(requests, executions) of `model` so far, from Triton's Prometheus metrics: their ratio is the mean batch."""
    with urlopen(f"http://127.0.0.1:{server.metrics}/metrics", timeout=10) as r:
        text = r.read().decode()
    values = [sum(float(v) for v in re.findall(rf'^{name}{{model="{re.escape(model)}"[^}}]*}} (\S+)', text, re.M))
              for name in ("nv_inference_request_success", "nv_inference_exec_count")]
    return values[0], values[1]


def run_level(url: str, model: str, images: np.ndarray, concurrency: int, requests: int, deadline: float) -> dict:
    """`requests` requests from `concurrency` threads (one connection each), none started after `deadline`."""
    latencies, failures, lock, issued = [], [], threading.Lock(), [0]

    def worker():
        with Client(url) as client:
            while True:
                with lock:
                    if issued[0] >= requests or time.monotonic() > deadline:
                        return
                    issued[0] += 1
                t0 = time.perf_counter()
                try:
                    client.infer(model, images)
                    latencies.append((time.perf_counter() - t0) * 1e3)
                except MpDeployError as e:
                    failures.append(str(e))

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99]) if latencies else (float("nan"),) * 3
    return {"concurrency": concurrency, "requests": len(latencies) + len(failures), "failed": len(failures),
            "throughput_rps": len(latencies) / wall, "p50_ms": p50, "p95_ms": p95, "p99_ms": p99,
            "mean_ms": float(np.mean(latencies)) if latencies else float("nan"), "wall_s": wall,
            "first_failure": failures[0] if failures else None}


def in_process(artifact: Path, images: np.ndarray, runs: int) -> dict:
    """Engine.run on the same artifact and image in this process, before the server starts (nothing else runs):
    what serving adds is the served latency minus this."""
    from mp_deploy.engine import Engine

    engine = Engine.load(artifact)
    for _ in range(3):
        engine.run(images)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        engine.run(images)
        times.append((time.perf_counter() - t0) * 1e3)
    p50, p95 = np.percentile(times, [50, 95])
    return {"p50_ms": float(p50), "p95_ms": float(p95), "runs": runs}


def load_test(engine: Path, levels: list[int], requests: int, max_seconds: float, margin_mb: float,
              out_dir: Path, log=print) -> tuple[Path, list[str]]:
    """-> (results stem, problems: failed or missing requests, memory growth beyond margin_mb)."""
    python = serve_python()
    if python is None:
        raise UsageError(f"$MP_DEPLOY_SERVE_PYTHON names no Python: {os.environ.get('MP_DEPLOY_SERVE_PYTHON')}")
    [spec] = describe([engine])
    h, w = spec.hw(1)
    images = np.random.default_rng(0).integers(0, 256, (1, h, w, 3), dtype=np.uint8)
    local = in_process(engine, images, requests)
    log(f"in process: Engine.run p50 {local['p50_ms']:.1f} ms (p95 {local['p95_ms']:.1f}) over {requests} calls")
    deadline = time.monotonic() + max_seconds
    with tempfile.TemporaryDirectory(prefix="mp-deploy-load-") as tmp:
        server = ServeProcess(python, ["--engine", engine], Path(tmp))
        samples, stop = [], threading.Event()
        try:
            server.wait_ready(spec.name, timeout_s=min(300, max_seconds))
            url = server.url("grpc")
            warm = [run_level(url, spec.name, images, c, c, deadline) for c in levels]  # each level's batches
            time.sleep(1)
            baseline = server.rss_mb()
            log(f"warm-up: {sum(w['requests'] for w in warm)} requests, {sum(w['failed'] for w in warm)} failed; "
                f"server RSS {baseline:.0f} MB")
            sampler(server, samples, stop)
            rows = []
            for c in levels:
                before = batch_counters(server, spec.name)
                row = run_level(url, spec.name, images, c, requests, deadline)
                after = batch_counters(server, spec.name)
                row["mean_batch"] = (after[0] - before[0]) / max(after[1] - before[1], 1)
                row["rss_end_mb"] = server.rss_mb()
                rows.append(row)
                log(f"concurrency {c:3d}: {row['requests']} requests ({row['failed']} failed) in {row['wall_s']:.1f} s,"
                    f" {row['throughput_rps']:.2f} req/s, p50 {row['p50_ms']:.0f} / p95 {row['p95_ms']:.0f} / p99 "
                    f"{row['p99_ms']:.0f} ms, mean batch {row['mean_batch']:.2f}, RSS {row['rss_end_mb']:.0f} MB")
            stop.set()
            time.sleep(1)
            final = server.rss_mb()
        finally:
            stop.set()
            status = server.stop()
        leftovers = server.leftovers()
    rss = [mb for _, mb in samples] + [final]
    growth = final - baseline
    problems = [f"concurrency {r['concurrency']}: {r['failed']} failed ({r['first_failure']})" for r in rows if r["failed"]]
    problems += [f"concurrency {r['concurrency']}: {r['requests']} of {requests} requests before the time limit"
                 for r in rows if r["requests"] < requests]
    if growth > margin_mb:
        problems.append(f"server RSS grew {growth:.0f} MB after warm-up ({baseline:.0f} -> {final:.0f}), more than "
                        f"the {margin_mb:.0f} MB margin")
    if status != 0 or leftovers:
        problems.append(f"the server exited with {status}, leaving {leftovers}")
    device = device_name("cpu")
    meta = {"what": "mp-deploy serve load test (loopback, gRPC, one connection per client thread)",
            "device": device, "cpus": os.cpu_count(), "load_average_at_end": os.getloadavg(),
            "date": datetime.datetime.now().isoformat(timespec="seconds"), "model": spec.name,
            "artifact": engine.name, "image": [h, w], "max_batch": spec.max_batch, "requests_per_level": requests,
            "warmup": [{k: w[k] for k in ("concurrency", "requests", "failed")} for w in warm],
            "rss_mb": {"after_warmup": baseline, "max": max(rss), "min": min(rss), "end": final, "growth": growth,
                       "margin": margin_mb, "samples": len(rss)},
            "server_exit": status, "problems": problems, "in_process": local,
            "overhead_c1": rows[0]["p50_ms"] / local["p50_ms"] - 1 if rows and rows[0]["concurrency"] == 1 else None,
            "throughput_c8_over_c1": next((r["throughput_rps"] for r in rows if r["concurrency"] == 8), 0) /
            max(next((r["throughput_rps"] for r in rows if r["concurrency"] == 1), float("inf")), 1e-9)}
    stem = write_results(Path(out_dir) / f"serve-{slug(device)}-{meta['date'][:10]}", meta,
                         [{k: v for k, v in r.items() if k != "first_failure"} for r in rows], FIELDS,
                         {"device": device, "model": spec.name})
    return stem, problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="load_test.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--engine", required=True, type=Path, help="the artifact to serve")
    ap.add_argument("--concurrency", type=cli.int_list, default=[1, 8, 32], help="client threads per level")
    ap.add_argument("--requests", type=cli.positive_int, default=96, help="requests per level (default 96)")
    ap.add_argument("--max-seconds", type=float, default=1200, help="the whole run's time limit (default 1200)")
    ap.add_argument("--rss-margin-mb", type=float, default=64,
                    help="allowed growth of the server's RSS after warm-up (default 64 MB)")
    ap.add_argument("--output", "--out-dir", type=Path, default=Path(__file__).parent / "results",
                    help="results folder (default benchmarks/results)")
    args = ap.parse_args(argv)
    try:
        stem, problems = load_test(args.engine, args.concurrency, args.requests, args.max_seconds,
                                   args.rss_margin_mb, args.output, log=lambda msg: print(msg, flush=True))
    except MpDeployError as e:
        print(f"load_test: error: {e}")
        return e.exit_code
    print(f"wrote {stem}.json and .csv; " + ("; ".join(problems) if problems else
                                               "no failed request, server memory flat"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
