"""Training end to end on synthetic data: the loss falls; a 2-process torchrun (gloo) run stopped and resumed
repeats the uninterrupted run's losses and weights bit for bit; SIGTERM leaves a resumable run; evaluation and
the commands' errors."""
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from mp_deploy import cli
from mp_deploy.checkpoints import load_model
from mp_deploy.data import build_dataset, collate
from mp_deploy.tasks import build_model
from mp_deploy.train.optim import build_optimizer
from mp_deploy.train.recipes import get_recipe
from mp_deploy.train.trainer import TaskLoss

ENV = dict(os.environ, OMP_NUM_THREADS="1")
# a few steps of the depth demo recipe on 64x64 scenes, 1 image per pass, evaluated on 2 images at the end
SMALL = ["--task", "depth", "--preset", "synthetic-depth", "--data", "synthetic", "--crop-h", "64", "--crop-w", "64",
         "--batch-size", "1", "--workers", "0", "--threads", "1", "--eval-limit", "2", "--log-every", "1",
         "--no-progress"]


def mp_deploy(*args, torchrun: int = 0, **kw) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}"] \
        if torchrun else [sys.executable]
    return subprocess.run([*launcher, "-m", "mp_deploy.cli", *map(str, args)], env=ENV, capture_output=True,
                          text=True, timeout=600, **kw)


def records(run_dir, kind="train"):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


@pytest.mark.parametrize("preset,size,key", [("synthetic-depth", (64, 64), "depth"),
                                             ("synthetic-seg", (64, 64), "labels"),
                                             ("synthetic-pose", (96, 64), "heatmaps")])
def test_the_loss_falls_on_synthetic_data(preset, size, key):
    torch.manual_seed(0)
    recipe = get_recipe(preset, lr=3e-3)
    model = build_model(preset=preset, size="tiny").train()
    task = model.task
    options = {"input_size": size} if task == "pose" else {"size": size}
    data = build_dataset("synthetic", "val", task=task, length=4, **options)
    batch = collate([data[i] for i in range(len(data))])
    loss_fn, opt = TaskLoss(model, "fp32"), build_optimizer(model, recipe)
    losses = []
    for _ in range(20):  # the recipe's optimizer at a constant rate on one batch
        loss = loss_fn(batch["image"], batch[key], batch.get("keypoint_weight"))["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert sum(losses[-3:]) < 0.8 * sum(losses[:3]), losses


def test_two_process_run_resumes_bit_for_bit(tmp_path):
    """torchrun --nproc_per_node 2 (gloo): 4 steps at once, and 2 steps + --resume for 2 more, give the same
    loss of every step and the same final weights; the checkpoints load as models and evaluate."""
    steps = ["--steps", "4", "--accumulate", "2", "--save-every", "100"]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    done = mp_deploy("train", *SMALL, *steps, "--run-dir", whole, torchrun=2)
    assert done.returncode == 0, done.stderr[-3000:]
    first = mp_deploy("train", *SMALL, *steps, "--run-dir", parts, "--stop-at", "2", torchrun=2)
    assert first.returncode == 0, first.stderr[-3000:]
    assert [r["step"] for r in records(parts)] == [1, 2] and records(parts, "summary")[0]["stopped"]
    again = mp_deploy("train", "--run-dir", parts, "--resume", torchrun=2)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming" in again.stderr + again.stdout

    losses = [(r["step"], r["loss"]) for r in records(whole)]
    assert [s for s, _ in losses] == [1, 2, 3, 4]
    assert [(r["step"], r["loss"]) for r in records(parts)] == losses  # bit-equal floats through JSON
    a, b = load_file(whole / "last.safetensors"), load_file(parts / "last.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    if importlib.util.find_spec("tensorboard"):
        assert list((whole / "tb").glob("events.out.tfevents.*"))
    config = json.loads((whole / "config.json").read_text())
    assert config["processes"] == 2 and config["global_batch"] == 4 and config["recipe"]["accumulate"] == 2

    model = load_model(whole / "best.safetensors")  # our checkpoint format: build and eval take it
    assert model.task == "depth" and model.preset.name == "synthetic-depth"
    out = tmp_path / "eval.json"
    ev = mp_deploy("eval", "--checkpoint", whole / "last.safetensors", "--data", "synthetic", "--limit", "2",
                   "--workers", "0", "--output", out)
    assert ev.returncode == 0, ev.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["images"] == 2 and 0 < result["abs_rel"] and 0 <= result["d1"] <= 1


def test_sigterm_saves_a_resumable_run(tmp_path):
    """SIGTERM to the whole process group (as schedulers send it), DataLoader worker included."""
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "mp_deploy.cli", "train", *SMALL, "--workers", "1", "--steps",
                             "500", "--run-dir", str(run_dir)], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 600  # a first step takes seconds; never wait forever
        while not ((run_dir / "metrics.jsonl").exists() and records(run_dir)):  # a step is done
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no training step recorded within 600 s"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err[-3000:]
    summary = records(run_dir, "summary")[0]
    assert summary["stopped"] == "SIGTERM" and 1 <= summary["steps"] < 500
    stopped = summary["steps"]
    assert records(run_dir)[-1]["step"] == stopped
    resumed = mp_deploy("train", "--run-dir", run_dir, "--resume", "--steps", stopped + 1)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [r["step"] for r in records(run_dir)] == list(range(1, stopped + 2))


def test_baseline_evaluation(tmp_path):
    out = tmp_path / "baseline.json"
    assert cli.main(["eval", "--baseline", "--preset", "synthetic-seg", "--data", "synthetic", "--limit", "3",
                     "--workers", "0", "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    # one class everywhere: its IoU is at most its pixel share and every other class scores 0
    assert result["model"] == "seg baseline" and 0 < result["mIoU"] < 0.3


@pytest.mark.parametrize("args,message", [
    (["--task", "depth", "--preset", "synthetic-depth", "--lr", "-1"], "lr"),
    (["--task", "depth", "--preset", "nyu"], "--sd-weights"),
    (["--task", "seg", "--preset", "synthetic-depth"], "not 'seg'"),
    (["--resume"], "nothing to resume"),
])
def test_bad_train_arguments_exit_2_with_one_line(tmp_path, capsys, args, message):
    assert cli.main(["train", "--run-dir", str(tmp_path / "run"), *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines


def test_an_existing_run_is_not_overwritten(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{}")
    assert cli.main(["train", *SMALL, "--steps", "1", "--run-dir", str(tmp_path)]) == 2
    assert "--resume" in capsys.readouterr().err
