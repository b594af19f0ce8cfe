"""Golden parity with the reference at full SD-1.5 size (CPU, fp32): both shared golden files through the CLI.

Needs ../shared/golden (beside the checkout, as on the developers' and CI machines); about 2 minutes and
8 GB of RAM, of which most is writing the seeded weights with the golden folder's own make_weights.py.
"""
import subprocess
import sys
from pathlib import Path

import pytest

GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "golden"
CASES = [("depth_keys.tsv", 1, "depth_nyu_seed1.safetensors"), ("seg_backbone_keys.tsv", 2, "seg_backbone_seed2.safetensors")]

pytestmark = pytest.mark.skipif(not (GOLDEN / "make_weights.py").is_file(), reason=f"no golden files at {GOLDEN}")


@pytest.mark.parametrize("keys,seed,golden", CASES, ids=["depth_nyu", "seg_backbone"])
def test_golden_cli(keys, seed, golden, tmp_path):
    weights = tmp_path / f"weights_seed{seed}.safetensors"
    subprocess.run([sys.executable, str(GOLDEN / "make_weights.py"), str(GOLDEN / keys), "--seed", str(seed),
                    "--out", str(weights)], check=True)
    run = subprocess.run([sys.executable, "-m", "mp_deploy.golden", "--checkpoint", str(weights),
                          "--golden", str(GOLDEN / golden)], capture_output=True, text=True)
    print(run.stdout, run.stderr)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "PASS" in run.stdout and " ok" in run.stdout and "FAIL" not in run.stdout
