"""The bundled demo models judged on held-out scenes: every demo and its task's trivial baseline on the training
family's held-out split (`synthetic`) and on the independently written family it never saw (`unseen`), checked
against the demo issue's targets, written to benchmarks/results/demo-models-<device>-<date>.json; and pictures
(input | ground truth | prediction) of held-out scenes of both families into docs/images/.

    python benchmarks/demo_models.py                     # all 200 scenes of each split (~25 min on 2 cores)
    python benchmarks/demo_models.py --limit 24 --no-figures

Depth is judged median-scaled (each prediction times median(gt) / median(pred): the scale-free view, where the
constant baseline becomes each image's median depth) beside the plain metrics.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mp_deploy import cli, demo, tasks
from mp_deploy.checkpoints import load_model
from mp_deploy.evaluation import baseline_run, evaluate, model_run
from mp_deploy.files import atomic_write, read_json
from mp_deploy.train import build
from mp_deploy.train.recipes import get_recipe
from mp_deploy.util import device_name, slug

RESULTS = Path(__file__).parent / "results"
FIGURES = Path(__file__).parent.parent / "docs" / "images"
FAMILIES = ("synthetic", "unseen")


def held_out(preset: str, family: str):
    return build.dataset(get_recipe(preset, data=family), None, "val", train=False)


def judge(task: str, ours: dict, base: dict) -> list[dict]:
    rows = []
    for metric, bound, how in tasks.get(task).demo_targets:
        want = bound * base[metric] if how == "ratio" else bound
        met = ours[metric] <= want if how == "ratio" else ours[metric] >= want
        rows.append({"metric": metric, "demo": ours[metric], "baseline": base[metric], "target": want,
                     "rule": f"<= {bound} x baseline" if how == "ratio" else f">= {bound}", "met": bool(met)})
    return rows


def evaluate_task(task: str, limit: int) -> dict:
    model = load_model(demo.checkpoint(task)).eval()
    preset = model.preset
    run = model_run(model, "fp32", torch.device("cpu"))
    fit = baseline_run(task, build.dataset(get_recipe(preset.name), None, "train", train=False), preset)
    out = {}
    for family in FAMILIES:
        data = held_out(preset.name, family)
        t0 = time.perf_counter()
        ours = evaluate(run, data, preset, limit=limit)
        seconds = time.perf_counter() - t0
        base = evaluate(fit, data, preset, limit=limit)
        out[family] = {"demo": ours, "baseline": base, "targets": judge(task, ours, base), "eval_s": seconds}
    return out


def picture(task: str, model, run, data, index: int) -> np.ndarray:
    """Input | ground truth | prediction (`run`: the model's `model_run`) of one held-out sample, through its
    split's protocol, side by side."""
    spec, preset, sample = tasks.get(task), model.preset, data[index]
    protocol = spec.protocols[data.protocol]
    rgb = (sample["image"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    with torch.no_grad():
        result = spec.predict(sample["image"], run, protocol, preset)
    # threshold 0: every keypoint is drawn, however low its score, so that the picture shows where they land
    tiles = [rgb] + [np.asarray(spec.render(spec.picture, rgb, r, preset, 0.0, video=True))
                     for r in (spec.truth(sample), result)]
    return np.concatenate([t[..., :3] for t in tiles], 1)


def write_png(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: Image.fromarray(rgb).save(tmp, format="PNG"))


def figures(task: str, scenes: int, folder: Path) -> list[np.ndarray]:
    """docs/images/demo-<task>.png: `scenes` rows per family; returns each family's first row (for the montage)."""
    model = load_model(demo.checkpoint(task)).eval()
    run = model_run(model, "fp32", torch.device("cpu"))
    firsts, rows = [], []
    for family in FAMILIES:
        data = held_out(model.preset.name, family)
        made = [picture(task, model, run, data, i) for i in range(scenes)]
        firsts.append(made[0])
        rows += made
    write_png(folder / f"demo-{task}.png", np.concatenate(rows, 0))
    return firsts


def montage(rows: list[np.ndarray]) -> np.ndarray:
    """Rows of different heights, left-aligned on a white canvas, stacked."""
    width = max(r.shape[1] for r in rows)
    padded = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.concatenate(padded, 0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", help="comma-separated demo tasks to evaluate (default: every bundled demo; the "
                                    "pictures always show every demo)")
    ap.add_argument("--limit", type=cli.positive_int, default=200, help="held-out scenes per family (default 200)")
    ap.add_argument("--scenes", type=cli.positive_int, default=3, help="pictured scenes per family (default 3)")
    ap.add_argument("--no-figures", action="store_true", help="metrics only")
    ap.add_argument("--no-metrics", action="store_true", help="pictures only")
    ap.add_argument("--threads", type=cli.positive_int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--output", help="results JSON (default benchmarks/results/demo-models-<device>-<date>.json)")
    ap.add_argument("--figures", default=str(FIGURES), help="folder of the pictures (default docs/images)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    names = every = demo.tasks_with_demo()
    if args.tasks:
        unknown = sorted(set(args.tasks.split(",")) - set(names))
        if unknown:
            ap.error(f"--tasks: no bundled demo for {', '.join(unknown)}; choose from {', '.join(names)}")
        names = tuple(t for t in names if t in args.tasks.split(","))
    if not args.no_figures:
        folder = Path(args.figures)
        firsts = [row for task in every for row in figures(task, args.scenes, folder)]
        write_png(folder / "demo-montage.png", montage(firsts))
        print(f"wrote {', '.join(f'demo-{t}.png' for t in every)} and demo-montage.png in {folder}")
    if args.no_metrics:
        return 0
    date = datetime.date.today().isoformat()
    device = device_name("cpu")
    record = {"device": f"{device} ({args.threads} torch thread(s))", "date": date, "held_out": args.limit,
              "families": {"synthetic": "the training family's held-out split (seed of the val split)",
                           "unseen": "mp_deploy/data/unseen*.py: other layouts, textures and lighting, never "
                                     "trained on"},
              "tasks": {}}
    out = Path(args.output) if args.output else RESULTS / f"demo-models-{slug(device)}-{date}.json"
    if out.exists():  # today's file: the tasks evaluated now replace theirs, the others stay
        earlier = read_json(out)
        if earlier.get("device") != record["device"] or earlier.get("held_out") != args.limit:
            raise SystemExit(f"{out} holds another device or number of scenes; give another --output")
        record["tasks"] = earlier["tasks"]
    for task in names:
        record["tasks"][task] = evaluate_task(task, args.limit)
        for family, r in record["tasks"][task].items():
            for t in r["targets"]:
                print(f"{task:5s} {family:9s} {t['metric']:10s} demo {t['demo']:.4f} baseline {t['baseline']:.4f} "
                      f"target {t['rule']} ({t['target']:.4f}): {'met' if t['met'] else 'NOT met'}")
    text = json.dumps(record, indent=1) + "\n"
    atomic_write(out, lambda tmp: Path(tmp).write_text(text))
    met = sum(t["met"] for r in record["tasks"].values() for f in r.values() for t in f["targets"])
    total = sum(len(f["targets"]) for r in record["tasks"].values() for f in r.values())
    print(f"{len(record['tasks'])} demos on {args.limit} held-out scenes x {len(FAMILIES)} families: {met} of {total} "
          f"targets met, {time.perf_counter() - t0:.0f} s; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
