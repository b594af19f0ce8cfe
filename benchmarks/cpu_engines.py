"""CPU engines alone and beside a competing load: `mp-deploy bench`'s rows (mp_deploy/bench.py) for each CPU backend,
timed in alternating blocks with and without one busy process (a pure-Python loop, one core's worth), written to
benchmarks/results/cpu-engines-<device>-<date>.json with the issue's targets checked against what was measured.

    python benchmarks/cpu_engines.py --task depth --preset synthetic-depth --batches 1,4 --runs 10 --build

Each block times every backend once at every batch (bench's own loop: warm-up, then `--runs` timed calls); blocks
alternate alone / loaded `--rounds` times, so that a drift of the machine's own load falls on both conditions.
A row's latency is the median over its blocks' medians; its spread is p80 / p20 of all its timed calls.
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from mp_deploy.cpu_threads import prepare_environment

prepare_environment()  # the wait policy, before torch loads (as `mp-deploy` does)

from mp_deploy import cli  # noqa: E402
from mp_deploy.bench import BenchSpec, bench  # noqa: E402
from mp_deploy.files import atomic_write  # noqa: E402
from mp_deploy.util import device_name, slug  # noqa: E402

RESULTS = Path(__file__).parent / "results"
DEFAULT_BACKENDS = "eager-fp32,compile,onnx,aoti,openvino"
BUSY = "while True:\n    pass\n"  # one core of competing load


class CompetingLoad:
    """One busy process for the block's duration (started before, killed after)."""

    def __enter__(self):
        self.process = subprocess.Popen([sys.executable, "-c", BUSY])
        time.sleep(0.5)  # let it reach its core
        return self

    def __exit__(self, *exc):
        self.process.kill()
        self.process.wait(timeout=30)


def run_block(spec: BenchSpec, loaded: bool) -> list[dict]:
    if loaded:
        with CompetingLoad():
            return bench(spec).rows
    return bench(spec).rows


def summarize(blocks: list[tuple[str, list[dict]]]) -> list[dict]:
    """(condition, rows) per block -> one row per (condition, backend, batch): median of the block medians,
    p20 / p80 over the blocks' rows, speed-up over eager-fp32 in the same condition."""
    groups: dict[tuple, list[dict]] = {}
    for condition, rows in blocks:
        for r in rows:
            if r["status"] == "ok" and r["stage"] == "end_to_end":
                groups.setdefault((condition, r["backend"], r["batch"]), []).append(r)
    out = []
    for (condition, backend, batch), rows in sorted(groups.items()):
        out.append({"condition": condition, "backend": backend, "batch": batch, "blocks": len(rows),
                    "median_ms": statistics.median(r["median_ms"] for r in rows),
                    "p20_ms": statistics.median(r["p20_ms"] for r in rows),
                    "p80_ms": statistics.median(r["p80_ms"] for r in rows)})
    eager = {(r["condition"], r["batch"]): r["median_ms"] for r in out if r["backend"] == "eager-fp32"}
    for r in out:
        r["spread"] = r["p80_ms"] / r["p20_ms"] if r["p20_ms"] else None
        base = eager.get((r["condition"], r["batch"]))
        r["speedup_vs_eager_fp32"] = base / r["median_ms"] if base else None
    return out


ARTIFACT_ROWS_EXCLUDED = ("eager-fp32", "compile")


def targets(rows: list[dict]) -> list[str]:
    """The issue's targets, each as measured: met or not, with the numbers."""
    lines = []
    for batch in sorted({r["batch"] for r in rows}):
        alone = {r["backend"]: r for r in rows if r["condition"] == "alone" and r["batch"] == batch}
        loaded = {r["backend"]: r for r in rows if r["condition"] == "loaded" and r["batch"] == batch}
        artifacts = {k: v for k, v in alone.items() if k not in ARTIFACT_ROWS_EXCLUDED}
        if artifacts and "eager-fp32" in alone:
            best = min(artifacts.values(), key=lambda r: r["median_ms"])
            x = alone["eager-fp32"]["median_ms"] / best["median_ms"]
            lines.append(f"batch {batch}: best CPU artifact {best['backend']} {best['median_ms']:.1f} ms = {x:.2f}x "
                         f"eager fp32 (target >= 3x: {'met' if x >= 3 else 'not met'})")
            if "compile" in alone:
                y = alone["compile"]["median_ms"] / best["median_ms"]
                lines.append(f"batch {batch}: {y:.2f}x torch.compile (target >= 1.5x: {'met' if y >= 1.5 else 'not met'})")
        if "eager-fp32" in loaded:
            slower = [f"{k} {v['median_ms']:.1f} ms" for k, v in loaded.items()
                      if k not in ARTIFACT_ROWS_EXCLUDED and v["median_ms"] > loaded["eager-fp32"]["median_ms"]]
            lines.append(f"batch {batch} under load: eager fp32 {loaded['eager-fp32']['median_ms']:.1f} ms; artifacts "
                         f"slower than it: {', '.join(slower) or 'none'} (target: none)")
    return lines


def run(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="benchmarks/cpu_engines.py", description=__doc__.splitlines()[0])
    cli.add_task(ap, default="depth")
    cli.add_preset(ap)
    ap.add_argument("--backends", default=DEFAULT_BACKENDS, type=cli.name_list,
                    help=f"bench rows to time (default {DEFAULT_BACKENDS})")
    ap.add_argument("--batches", type=cli.int_list, default=[1, 4], help="batch sizes (default 1,4)")
    cli.add_runs(ap, 10, "timed calls per backend, batch and block")
    ap.add_argument("--rounds", type=cli.positive_int, default=2, help="alone / loaded block pairs (default 2)")
    ap.add_argument("--artifacts", default="artifacts", help="where the artifacts are (built there with --build)")
    ap.add_argument("--build", action="store_true", help="build the artifacts that are missing")
    cli.add_threads(ap)
    cli.add_output(ap, f"the results folder (default {RESULTS})")
    args = ap.parse_args(argv)
    spec = BenchSpec(task=args.task, preset=args.preset, backends=list(args.backends), batches=args.batches,
                     device="cpu", runs=args.runs, artifacts=args.artifacts, build=args.build,
                     threads=args.threads or None)
    blocks = []
    if args.build:  # the builds first, outside any timed block
        bench(BenchSpec(**{**spec.__dict__, "runs": 1}))
    for i in range(args.rounds):
        for condition in ("alone", "loaded"):
            print(f"round {i + 1}/{args.rounds}: {condition}", flush=True)
            blocks.append((condition, run_block(spec, condition == "loaded")))
    rows = summarize(blocks)
    lines = targets(rows)
    for r in rows:
        print(f"{r['condition']:7s} {r['backend']:12s} b{r['batch']}: {r['median_ms']:8.1f} ms "
              f"(p20-p80 {r['p20_ms']:.1f}-{r['p80_ms']:.1f}, spread {r['spread']:.2f}) "
              f"{r['speedup_vs_eager_fp32'] or 0:.2f}x eager", flush=True)
    print("\n".join(lines), flush=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    meta = {"device": device_name("cpu"), "date": now.isoformat(timespec="seconds"), "task": spec.task,
            "preset": spec.preset, "batches": spec.batches, "runs": spec.runs, "rounds": args.rounds,
            "load": "one busy Python process (one core) during the loaded blocks",
            "bench_meta": bench(BenchSpec(**{**spec.__dict__, "backends": ["eager-fp32"], "runs": 1})).meta}
    folder = Path(args.output or RESULTS)
    path = folder / f"cpu-engines-{slug(meta['device'])}-{meta['date'][:10]}.json"
    text = json.dumps({"meta": meta, "rows": rows, "targets": lines,
                       "blocks": [{"condition": c, "rows": r} for c, r in blocks]}, indent=1)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    print(f"wrote {path}: {len(rows)} rows over {len(blocks)} blocks", flush=True)
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(cli.run_main("benchmarks/cpu_engines.py", run))
