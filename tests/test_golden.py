"""Golden parity with the reference at full SD-1.5 size (CPU, fp32): both shared golden files through the CLI;
and the CLI's own failure modes on a tiny golden file of our own.

Needs ../shared/golden (beside the checkout, as on the developers' and CI machines); about 2 minutes and
8 GB of RAM, of which most is writing the seeded weights with the golden folder's own make_weights.py.
"""
import subprocess
import sys
from pathlib import Path

import pytest

GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "golden"
CASES = [("depth_keys.tsv", 1, "depth_nyu_seed1.safetensors"), ("seg_backbone_keys.tsv", 2, "seg_backbone_seed2.safetensors")]


@pytest.mark.skipif(not (GOLDEN / "make_weights.py").is_file(), reason=f"no golden files at {GOLDEN}")
@pytest.mark.parametrize("keys,seed,golden", CASES, ids=["depth_nyu", "seg_backbone"])
def test_golden_cli(keys, seed, golden, tmp_path):
    weights = tmp_path / f"weights_seed{seed}.safetensors"
    subprocess.run([sys.executable, str(GOLDEN / "make_weights.py"), str(GOLDEN / keys), "--seed", str(seed),
                    "--out", str(weights)], check=True)
    run = subprocess.run([sys.executable, "-m", "mp_deploy.cli", "golden", "--checkpoint", str(weights),
                          "--golden", str(GOLDEN / golden)], capture_output=True, text=True)
    print(run.stdout, run.stderr)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "PASS" in run.stdout and " ok" in run.stdout and "FAIL" not in run.stdout


# ------------------------------------------------------------------ the CLI's own failure modes (tiny, fast)

def _tiny_golden(tmp_path, task="depth"):
    """A golden file in the reference's layout made from our own tiny model, and its official checkpoint."""
    import torch

    from mp_deploy.checkpoints import ours_to_official
    from mp_deploy.golden import expected_tags
    from mp_deploy.models import Trace
    from mp_deploy.tasks import seeded_model

    model = seeded_model(task)
    x = torch.rand(1, 3, 64, 64)
    trace = Trace()
    with torch.no_grad():
        model.run_stages({"images": x} if task == "depth" else {"encoder_input": x * 2 - 1}, trace)
    trace.tensors["pred_d"] = trace.tensors["output"]
    tensors = {f"1x3x64x64.{tag}": trace.tensors[tag].contiguous() for tag in expected_tags(task, 3)}
    tensors["1x3x64x64.input"] = x if task == "depth" else x * 2 - 1
    meta = {"model": "MetaPromptDepth (depth)" if task == "depth" else "MetaPromptsSeg.extract_feat", "refine_step": "3",
            "max_depth": "10.0", "resize_scale": "1"}
    ckpt = tmp_path / f"{task}.pth"
    torch.save({"model": ours_to_official(model)} if task == "depth" else {"state_dict": ours_to_official(model)}, ckpt)
    return tensors, meta, ckpt


def _golden_cli(tmp_path, tensors, meta, ckpt):
    from safetensors.torch import save_file

    from mp_deploy import cli

    path = tmp_path / "golden.safetensors"
    save_file(tensors, path, metadata=meta)
    return cli.main(["golden", "--checkpoint", str(ckpt), "--golden", str(path), "--model-size", "tiny"])


def test_golden_cli_fails_on_missing_unknown_or_nothing(tmp_path, capsys):
    tensors, meta, ckpt = _tiny_golden(tmp_path)
    assert _golden_cli(tmp_path, tensors, meta, ckpt) == 0
    assert "PASS: 10 tensors compared" in capsys.readouterr().out
    no_pred = {k: v for k, v in tensors.items() if not k.endswith("pred_d")}
    assert _golden_cli(tmp_path, no_pred, meta, ckpt) == 1
    assert "1x3x64x64.pred_d" in (out := capsys.readouterr().out) and "missing from the golden file" in out
    no_inputs = {k: v for k, v in tensors.items() if not k.endswith(".input")}
    assert _golden_cli(tmp_path, no_inputs, meta, ckpt) == 1
    assert "FAIL: nothing compared" in capsys.readouterr().out
    extra = dict(tensors, **{"1x3x64x64.mystery": tensors["1x3x64x64.z0"].clone()})
    assert _golden_cli(tmp_path, extra, meta, ckpt) == 1
    assert "not a tensor this check knows" in capsys.readouterr().out


def test_golden_cli_task_mismatch_is_a_usage_error(tmp_path, capsys):
    tensors, meta, _ = _tiny_golden(tmp_path)
    _, _, seg_ckpt = _tiny_golden(tmp_path, "seg")
    assert _golden_cli(tmp_path, tensors, meta, seg_ckpt) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "checkpoint is a seg model but preset 'nyu' is for depth" in err
