"""Latency of one task network per backend, per stage and end to end, kept as results: `mp-deploy bench`'s rows
(mp_deploy/bench.py) written after each backend to benchmarks/results/<device>-<date>.json, .csv and .png.

    python benchmarks/latency.py --task depth --batches 1,8 --height 480 --width 480 [--output DIR]

Every flag is `mp-deploy bench`'s; --output is the results folder here (default benchmarks/results).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mp_deploy import cli
from mp_deploy.bench import CSV_FIELDS, BenchResult, BenchSpec, add_arguments, bench, stage_rank
from mp_deploy.timing import write_results
from mp_deploy.util import slug

RESULTS = Path(__file__).parent / "results"


def plot(meta: dict, rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["status"] == "ok"]
    batches = sorted({r["batch"] for r in ok}) or [0]
    stages = sorted({r["stage"] for r in ok if r["stage"].startswith(("vae", "unet_pass", "neck", "head"))},
                    key=stage_rank)
    colors = dict(zip(stages, plt.cm.tab10.colors))
    backends = list(dict.fromkeys(r["backend"] for r in ok))
    fig, axes = plt.subplots(1, len(batches), figsize=(max(6, 1.1 * len(backends)) * len(batches), 5),
                             squeeze=False)
    for ax, b in zip(axes[0], batches):
        for i, backend in enumerate(backends):
            mine = {r["stage"]: r["median_ms"] for r in ok if r["backend"] == backend and r["batch"] == b}
            if "end_to_end" not in mine:
                ax.text(i, 0, "not run", ha="center", va="bottom", rotation=90, fontsize=8, color="0.4")
                continue
            bottom = 0.0
            for s in stages:
                if s in mine:
                    ax.bar(i, mine[s], 0.6, bottom=bottom, color=colors[s], label=s)
                    bottom += mine[s]
            rest = mine["end_to_end"] - bottom
            if rest > 0:
                ax.bar(i, rest, 0.6, bottom=bottom, color="0.6" if bottom == 0 else "0.85",
                       hatch="" if bottom == 0 else "//",
                       label="end to end only" if bottom == 0 else "end to end - sum of stage medians")
            ax.text(i, mine["end_to_end"], f"{mine['end_to_end']:.1f}", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(backends)), backends, rotation=30, ha="right", fontsize=8)
        ax.set_xlim(-0.7, len(backends) - 0.3)
        ax.set_title(f"batch {b}, {meta['height']}x{meta['width']}")
        ax.set_ylabel("median latency (ms)")
        handles, labels = ax.get_legend_handles_labels()
        uniq = dict(zip(labels, handles))
        ax.legend(uniq.values(), uniq.keys(), fontsize=7, loc="upper right")
    fig.suptitle(f"{meta['task']}/{meta['preset']} {meta['model_size']} on {meta['device']} "
                 f"(torch {meta['versions']['torch']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(result: BenchResult, folder: Path) -> Path:
    """The results layout: folder/<device>-<date>.json (the run and its rows), .csv (rows of every run keyed by
    device, task, preset and size), .png (the stacked per-stage plot) -> the stem."""
    meta, rows, skipped = result.meta, result.rows, result.skipped
    key = {"device": meta["device"], "task": meta["task"], "preset": meta["preset"], "model_size": meta["model_size"]}
    stem = write_results(Path(folder) / f"{slug(meta['device'])}-{meta['date'][:10]}", dict(meta, skipped=skipped),
                         rows, CSV_FIELDS, key, csv_rows=rows + skipped)
    plot(meta, rows, Path(f"{stem}.png"))
    return stem


def run(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="benchmarks/latency.py", description=__doc__.splitlines()[0])
    add_arguments(ap)
    args = ap.parse_args(argv)
    folder = Path(args.output or RESULTS)
    spec = BenchSpec(task=args.task, preset=args.preset, backends=args.backends.split(","), batches=args.batches,
                     height=cli.one_size(args.height, "--height"), width=cli.one_size(args.width, "--width"),
                     model_size=args.model_size, device=args.device, warmup=args.warmup, runs=args.runs,
                     artifacts=args.artifacts, build=args.build, kernel_variants=args.kernels == "on",
                     threads=args.threads or None)
    written = []
    result = bench(spec, on_progress=lambda r: written.append(write_outputs(r, folder)))
    if written:
        print(f"wrote {written[-1]}.json, .csv, .png", flush=True)
    return 0 if result.rows else 1


if __name__ == "__main__":
    sys.exit(cli.run_main("benchmarks/latency.py", run))
