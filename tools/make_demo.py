"""Ship a trained demo run: its best weights as fp16 safetensors and one held-out sample image into mp_deploy/demo/.

    python tools/make_demo.py --task depth --run-dir /work/demo-runs/depth
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mp_deploy import demo, tasks
from mp_deploy.checkpoints import load_model, save_checkpoint
from mp_deploy.train import build
from mp_deploy.train.recipes import get_recipe
from mp_deploy.files import atomic_write


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", choices=tasks.names(), required=True)
    ap.add_argument("--run-dir", required=True, help="a finished demo run")
    ap.add_argument("--weights", default="best.safetensors", help="which of the run's checkpoints (default best)")
    ap.add_argument("--sample-index", type=int, default=0, help="the held-out sample to ship as the image")
    args = ap.parse_args(argv)
    model = load_model(Path(args.run_dir) / args.weights)
    if model.task != args.task or model.size.name != "tiny":
        ap.error(f"{args.run_dir} holds a {model.size.name} {model.task} model, not a tiny {args.task} demo")
    out = demo.FOLDER / f"{args.task}.safetensors"
    save_checkpoint(model, out, dtype=torch.float16)
    sample = build.dataset(get_recipe(model.preset.name), None, "val", train=False)[args.sample_index]
    rgb = (sample["image"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    image = demo.FOLDER / f"{args.task}.png"
    atomic_write(image, lambda tmp: Image.fromarray(rgb).save(tmp, format="PNG"))
    print(f"wrote {out} ({out.stat().st_size / 2 ** 20:.1f} MB, fp16 weights) and {image} ({rgb.shape[1]}x{rgb.shape[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
