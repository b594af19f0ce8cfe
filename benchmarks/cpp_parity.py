"""mp_infer (C++) against the Python runtime on one artifact: the same image in, relative L2 of the outputs.

    python benchmarks/cpp_parity.py --engine artifacts/depth-nyu-sd15-fp16-cuda.pt2 --mp-infer build/cpp/mp_infer
"""
import argparse
import faulthandler
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mp_deploy.engine import Engine

KEYS = {"depth": "depth", "seg": "logits", "pose": "heatmaps"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engine", required=True)
    ap.add_argument("--mp-infer", required=True)
    ap.add_argument("--tolerance", type=float, default=1e-4)
    a = ap.parse_args(argv)
    faulthandler.enable()  # a crash in a native loader names the Python line it came from
    print(f"loading {a.engine} in Python ...", flush=True)
    engine = Engine.load(a.engine)
    _, h, w = [engine.meta["shapes"][k][1] for k in ("batch", "height", "width")]
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        Image.fromarray(image).save(f"{tmp}/in.png")
        print("running mp_infer ...", flush=True)
        t0 = time.perf_counter()
        run = subprocess.run([a.mp_infer, "--engine", a.engine, "--input", f"{tmp}/in.png", "--output",
                              f"{tmp}/vis.png", "--npy", f"{tmp}/out.npy"], capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if run.returncode != 0:
            print(f"mp_infer exited with {run.returncode}:", run.stdout, run.stderr)
            return 1
        cpp = torch.from_numpy(np.load(f"{tmp}/out.npy")).float()
    py = engine.run(torch.from_numpy(image))[KEYS[engine.task]].float().cpu().reshape(cpp.shape)
    err = ((cpp - py).norm() / py.norm()).item()
    ok = err <= a.tolerance
    print(f"{Path(a.engine).name}: mp_infer vs Python runtime relative L2 {err:.2e} "
          f"({'ok' if ok else 'FAIL'}, tolerance {a.tolerance:.0e}); mp_infer wall time {wall:.1f} s incl. load")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
