"""Smoke test of `mp-deploy bench` (mp_deploy.bench) and the results layout of benchmarks/latency.py on the CPU:
tiny model, 64 x 64, eager-fp32 and ONNX Runtime (the .onnx is built on the fly, about 1-2 minutes of CPU export),
2 timed runs; checks the JSON / CSV / PNG the harness writes (the library writes no plot).

Not a benchmark (no `benchmark` fixture), so `--benchmark-only` skips it; run it on its own:
    python -m pytest benchmarks/test_bench_latency.py -q -p no:cacheprovider -o addopts=""
"""
import csv
import json

from latency import write_outputs  # benchmarks/latency.py: the results layout (JSON, CSV, PNG)

from mp_deploy.bench import ALIASES, CSV_FIELDS, BenchSpec, bench

STAGES = ["vae_encode", "unet_pass1", "unet_pass2", "unet_pass3", "unet_x3", "neck", "head", "end_to_end"]
ROW_FIELDS = {"backend", "batch", "height", "width", "precision", "stage", "median_ms", "p20_ms", "p80_ms", "gflop",
              "tflops", "pct_ceiling", "speedup", "status", "note"}


def test_latency_cpu_smoke(tmp_path):
    out_dir = tmp_path / "results"
    result = bench(BenchSpec(task="depth", device="cpu", model_size="tiny", height=64, width=64, batches=[1],
                             runs=2, warmup=1, threads=1, build=True, artifacts=str(tmp_path / "artifacts"),
                             backends=["eager-fp32", "onnxruntime", "cudagraph-fp16", "tensorrt"]))
    stem = write_outputs(result, out_dir)
    files = sorted(out_dir.iterdir())
    assert {f.suffix for f in files} == {".json", ".csv", ".png"} and len({f.stem for f in files}) == 1
    assert stem == files[0].with_suffix("") and stem.name.startswith("cpu-")
    assert files[0].with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    meta = json.loads(stem.with_suffix(".json").read_text())
    assert meta["device"].startswith("CPU") and meta["device_type"] == "cpu"
    assert {"torch", "triton", "tensorrt", "onnxruntime"} <= set(meta["versions"])
    assert (meta["task"], meta["model_size"], meta["height"], meta["width"], meta["batches"]) == \
        ("depth", "tiny", 64, 64, [1])
    assert meta["baseline"] == "eager-fp32" and meta["timing"] == "wall clock" and meta["cpu_threads"] == 1
    assert meta["ceilings"]["matmul"]["tflops"] > 0 and meta["ceilings"]["copy"]["gbps"] > 0

    rows = meta["rows"]
    assert rows == result.rows
    assert all(ROW_FIELDS <= set(r) for r in rows)
    eager = {r["stage"]: r for r in rows if r["backend"] == "eager-fp32"}
    assert list(eager) == STAGES
    assert all(r["precision"] == "fp32" and r["p20_ms"] <= r["median_ms"] <= r["p80_ms"] for r in eager.values())
    assert all(r["gflop"] > 0 and r["tflops"] > 0 for r in eager.values())
    assert abs(eager["end_to_end"]["speedup"] - 1) < 1e-9
    assert eager["end_to_end"]["peak_mb"] > 0 and eager["end_to_end"]["rel_l2"] == 0
    assert abs(eager["unet_x3"]["gflop"] - sum(eager[f"unet_pass{k}"]["gflop"] for k in (1, 2, 3))) < 1e-6

    ort = [r for r in rows if r["backend"] == ALIASES["onnxruntime"]]  # asked for by its old name
    assert [r["stage"] for r in ort] == ["end_to_end"]
    assert ort[0]["speedup"] > 0 and ort[0]["rel_l2"] < 1e-4 and "built here" in ort[0]["note"]

    skipped = {s["backend"]: s for s in meta["skipped"]}
    assert set(skipped) == {"cudagraph-fp16", "tensorrt"}
    assert all(s["status"] == "skipped" and s["note"] for s in skipped.values())
    assert "CUDA" in skipped["cudagraph-fp16"]["note"]

    with open(stem.with_suffix(".csv")) as f:
        table = list(csv.DictReader(f))
    assert set(CSV_FIELDS) == set(table[0])
    assert len(table) == len(rows) + len(meta["skipped"])
    assert {r["status"] for r in table} == {"ok", "skipped"}
