"""Training against hostile inputs and runs that go wrong: a non-finite step changes nothing, nothing non-finite is
saved, a run that never learns fails; resume files and config.json are checked whole before any training (seeded
fuzz); BatchNorm with one sample per process (every shipped recipe trains at its batch); crops, environment
variables. Every failure is a typed error of one line, never a traceback or a hang. Tiny models, 64x64 crops."""
import json
import os
import random
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, safe_open, save_file

from mp_deploy import cli
from mp_deploy.errors import MpDeployError, UsageError
from mp_deploy.tasks import build_model
from mp_deploy.train import build, dist, state
from mp_deploy.train.command import add_arguments, resolve
from mp_deploy.train.logs import read_records
from mp_deploy.train.optim import build_optimizer
from mp_deploy.train.recipes import RECIPES, get_recipe, recipe_to_dict
from mp_deploy.train.trainer import TaskLoss, Trainer, TrainingError, TrainSpec, save_model

SMALL = ["--data", "synthetic", "--crop-h", "64", "--crop-w", "64", "--batch-size", "1", "--workers", "0",
         "--threads", "1", "--eval-limit", "1", "--log-every", "1", "--no-progress"]
DEPTH = ["--task", "depth", "--preset", "synthetic-depth", *SMALL]
RECIPE = dict(data="synthetic", crop_h=64, crop_w=64, batch_size=1, workers=0, threads=1, eval_limit=1, log_every=1)


def train(*args) -> int:
    return cli.main(["train", *map(str, args)])


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def nan_loss(monkeypatch):
    """Every training forward runs (BatchNorm statistics move) and then returns a NaN loss."""
    real = TaskLoss.forward

    def forward(self, *args):
        out = real(self, *args)
        return {k: v * float("nan") for k, v in out.items()}
    monkeypatch.setattr(TaskLoss, "forward", forward)


# ------------------------------------------------------------------ a run cannot poison itself

def snapshot(t: Trainer) -> dict:
    s = {f"model.{k}": v.detach().clone() for k, v in t.model.state_dict().items()}
    for index, values in t.optimizer.state_dict()["state"].items():
        s.update({f"optim.{index}.{k}": torch.as_tensor(v).clone() for k, v in values.items()})
    return s


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_non_finite_step_changes_nothing(tmp_path, monkeypatch):
    """A NaN loss, and a finite loss with an infinite gradient: the weights, AdamW's state and every BatchNorm
    running statistic and count stay as they were, although the step's forward passes moved the statistics."""
    spec = TrainSpec(recipe=get_recipe("synthetic-seg", **RECIPE, steps=4), run_dir=tmp_path / "run",
                     progress=False)
    t = Trainer(spec, dist.Dist())
    batches = t.batches(0, 0)
    t.train_step(batches)  # a finite step first: AdamW has state to keep
    norms = {n: m for n, m in t.model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}

    before = snapshot(t)
    real = TaskLoss.forward
    moved = []

    def forward(self, *args):
        out = real(self, *args)
        moved.append(sum(not torch.equal(m.running_mean, before[f"model.{n}.running_mean"]) for n, m in norms.items()))
        return {k: v * float("nan") for k, v in out.items()}
    monkeypatch.setattr(TaskLoss, "forward", forward)
    t.train_step(batches)
    assert len(moved) == 1 and moved[0] > 0  # the forward pass did move statistics ...
    assert same(before, snapshot(t))  # ... and the skipped step put them back; nothing else moved
    monkeypatch.undo()

    weight = next(p for p in t.model.parameters() if p.requires_grad)
    hook = weight.register_hook(lambda g: g * float("inf"))  # a finite loss, an infinite gradient
    t.train_step(batches)
    hook.remove()
    assert same(before, snapshot(t))
    assert t.skipped_steps == 2 and t.finite_steps == 1

    t.train_step(batches)  # a finite step does change them (the comparison can see a change)
    assert not same(before, snapshot(t))


def test_a_run_without_a_finite_step_fails_and_keeps_no_best(tmp_path, monkeypatch, capsys):
    nan_loss(monkeypatch)
    run = tmp_path / "run"
    assert train(*DEPTH, "--steps", 2, "--eval-every", 1, "--run-dir", run) == 1
    assert "none of the run's 2 steps had a finite loss" in one_error_line(capsys)
    assert not (run / "best.safetensors").exists() and not (run / "last.safetensors").exists()
    assert not (run / "best.json").exists()


def test_a_model_gone_non_finite_is_never_saved(tmp_path, monkeypatch, capsys):
    """A step that leaves a NaN weight (here planted after AdamW's step): the next evaluation stops the run with
    one line, and no best, last or resume file holds it."""
    real = torch.optim.AdamW.step

    def step(self, *args, **kw):
        out = real(self, *args, **kw)
        with torch.no_grad():
            self.param_groups[0]["params"][0].view(-1)[0] = float("nan")
        return out
    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    run = tmp_path / "run"
    assert train(*DEPTH, "--steps", 3, "--eval-every", 1, "--save-every", 1, "--run-dir", run) == 1
    line = one_error_line(capsys)
    assert "step 1:" in line and "hold NaN or inf" in line and "nothing is saved" in line
    assert not [p.name for p in run.glob("*.safetensors")]


def test_saving_refuses_non_finite_tensors_and_keeps_the_good_file(tmp_path):
    model = build_model(preset="synthetic-depth", size="tiny")
    good = tmp_path / "last.safetensors"
    save_model(model, good)
    kept = good.read_bytes()
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.running_var[0] = float("inf")
    with pytest.raises(TrainingError, match="running_var"):
        save_model(model, good)
    optimizer = build_optimizer(model, get_recipe("synthetic-depth"))
    resume = tmp_path / "resume.safetensors"
    with pytest.raises(state.NonFiniteState, match="running_var"):
        state.save_state(resume, model, optimizer, [state.rng_state(torch.device("cpu"))], {"step": 0})
    assert good.read_bytes() == kept and not resume.exists()


# ------------------------------------------------------------------ resume files, checked whole first

@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """A depth run stopped (resumably) after step 1 of 2."""
    run = tmp_path_factory.mktemp("stopped") / "run"
    assert train(*DEPTH, "--steps", 2, "--stop-at", 1, "--run-dir", run) == 0
    return run


def rewrite(path: Path, edit) -> None:
    tensors = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    info = json.loads(meta["state"])
    edit(tensors, info)
    save_file(tensors, str(path), metadata=dict(meta, state=json.dumps(info)))


def first(tensors, prefix, suffix=""):
    return next(k for k in sorted(tensors) if k.startswith(prefix) and k.endswith(suffix)
                and tensors[k].is_floating_point() and tensors[k].numel() > 1)


def poison(tensors, key, value):
    tensors[key] = tensors[key].clone()
    tensors[key].view(-1)[0] = value


@pytest.mark.parametrize("case,edit,message", [
    ("step", lambda t, i: i.update(step=10 ** 9), "step 1000000000 is past this run's 2 steps"),
    ("model", lambda t, i: poison(t, first(t, "model."), float("nan")), "hold NaN or inf: model."),
    ("moment", lambda t, i: poison(t, first(t, "optim.", "exp_avg_sq"), float("inf")), "hold NaN or inf: optim."),
])
def test_a_bad_resume_file_stops_before_any_training(stopped_run, tmp_path, capsys, case, edit, message):
    run = tmp_path / case
    shutil.copytree(stopped_run, run)
    rewrite(run / "resume.safetensors", edit)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert train("--run-dir", run, "--resume", "--no-progress") == 2
    line = one_error_line(capsys)
    assert str(run / "resume.safetensors") in line and message in line, line
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before  # nothing trained or written


def state_fixture(stopped_run):
    path = stopped_run / "resume.safetensors"
    tensors, info = state.read_state(path)
    recipe = get_recipe("synthetic-depth", **RECIPE, steps=2)
    torch.manual_seed(0)
    model = build.model_for(recipe)
    build.set_trainable(model, recipe)
    return path, tensors, info, model, build_optimizer(model, recipe)


def mutations(tensors, info):
    """Edits each of which makes the state unusable: (description, edit(tensors, info))."""
    model_key, optim_key = first(tensors, "model."), first(tensors, "optim.", "exp_avg")
    junk = [None, "x", -1, 1.5, True, [1], {"a": 1}, 10 ** 30, float("inf")]
    out = []
    for key in ("step", "images", "skipped", "processes"):
        out += [(f"{key}={v!r}", lambda t, i, k=key, v=v: i.update({k: v})) for v in junk]
        out.append((f"no {key}", lambda t, i, k=key: i.pop(k)))
    out += [(f"best={v!r}", lambda t, i, v=v: i.update(best=v)) for v in
            ("x", 3, {"metric": "rmse"}, {"metric": "rmse", "value": float("nan"), "step": 1},
             {"metric": "rmse", "value": 1.0, "step": 5}, {"metric": 1, "value": 1.0, "step": 0})]
    out += [("finite_steps past step", lambda t, i: i.update(finite_steps=i["step"] + 1)),
            ("param_groups junk", lambda t, i: i.update(param_groups="x")),
            ("one group fewer", lambda t, i: i["param_groups"].pop()),
            ("group lr NaN", lambda t, i: i["param_groups"][0].update(lr=float("nan"))),
            ("group betas", lambda t, i: i["param_groups"][0].update(betas=[1.5, 0.9])),
            ("group amsgrad", lambda t, i: i["param_groups"][0].update(amsgrad=True)),
            ("group params", lambda t, i: i["param_groups"][0].update(params=[10 ** 6])),
            ("group key", lambda t, i: i["param_groups"][0].update(extra=1)),
            ("model NaN", lambda t, i: poison(t, model_key, float("nan"))),
            ("model -inf", lambda t, i: poison(t, model_key, float("-inf"))),
            ("moment inf", lambda t, i: poison(t, optim_key, float("inf"))),
            ("model missing", lambda t, i: t.pop(model_key)),
            ("model extra", lambda t, i: t.update({"model.extra": torch.zeros(2)})),
            ("model shape", lambda t, i: t.update({model_key: torch.zeros(3, 1, 1, 1, 1)})),
            ("unknown tensor", lambda t, i: t.update({"other": torch.zeros(1)})),
            ("optim index", lambda t, i: t.update({"optim.99999.exp_avg": torch.zeros(1)})),
            ("optim name", lambda t, i: t.update({"optim.0.momentum": torch.zeros(1)})),
            ("optim shape", lambda t, i: t.update({optim_key: torch.zeros(7)})),
            ("optim missing part", lambda t, i: t.pop(optim_key)),
            ("optim step past", lambda t, i: t.update({"optim.0.step": torch.tensor(1e6)})),
            ("optim step NaN", lambda t, i: t.update({"optim.0.step": torch.tensor(float("nan"))})),
            ("negative second moment", lambda t, i: poison(t, first(t, "optim.", "exp_avg_sq"), -1.0)),
            ("rng size", lambda t, i: t.update({"rng.torch.0": torch.zeros(3, dtype=torch.uint8)})),
            ("rng dtype", lambda t, i: t.update({"rng.torch.0": t["rng.torch.0"].float()})),
            ("rng rank", lambda t, i: t.update({"rng.torch.7": t["rng.torch.0"]}))]
    return out


def test_resume_state_fuzz_gives_one_typed_line(stopped_run):
    """Seeded fuzz: random single and combined edits of a real resume state; each is refused by check_state with
    a ResumeError naming the file, and the untouched state passes."""
    path, tensors, info, model, optimizer = state_fixture(stopped_run)
    state.check_state(path, tensors, info, model, optimizer, 2)
    cases = mutations(tensors, info)
    rng = random.Random(0)
    picks = [[c] for c in cases] + [rng.sample(cases, 3) for _ in range(20)]
    for chosen in picks:
        t, i = dict(tensors), json.loads(json.dumps(info))
        for _, edit in chosen:
            try:
                edit(t, i)
            except (KeyError, TypeError, AttributeError, IndexError):  # an earlier edit took what this one edits
                pass
        with pytest.raises(state.ResumeError) as caught:
            state.check_state(path, t, i, model, optimizer, 2)
        text = str(caught.value)
        assert text.startswith(f"{path}: ") and "\n" not in text, ([d for d, _ in chosen], text)


@pytest.mark.parametrize("meta", [
    {"format": state.FORMAT},
    {"format": "other", "state": "{}"},
    {"format": state.FORMAT, "state": "[" * 5000 + "]" * 5000},
    {"format": state.FORMAT, "state": '{"step": ' + "7" * 5001 + "}"},
    {"format": state.FORMAT, "state": '{"step": NaN}'},
    {"format": state.FORMAT, "state": "not json"},
    {"format": state.FORMAT, "state": "[1, 2]"},
])
def test_resume_metadata_is_read_with_bounds(tmp_path, meta):
    path = tmp_path / "resume.safetensors"
    save_file({"model.x": torch.zeros(1)}, str(path), metadata=meta)
    with pytest.raises(state.ResumeError) as caught:
        state.read_state(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_a_resume_file_that_is_a_fifo_is_refused(tmp_path):
    os.mkfifo(tmp_path / "resume.safetensors")
    with pytest.raises(state.ResumeError, match="not a regular file \\(a FIFO\\)"):
        state.read_state(tmp_path / "resume.safetensors")


def resume_args(run_dir):
    import argparse

    ap = argparse.ArgumentParser()
    add_arguments(ap)
    return ap.parse_args(["--run-dir", str(run_dir), "--resume"])


def test_config_json_fuzz_gives_one_typed_line(tmp_path):
    """Seeded fuzz of a run's config.json (what --resume reads first): hostile documents and values, each refused
    with one line naming the file (resolve: before any model or data is built)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "resume.safetensors").write_bytes(b"")  # resolve only looks that it is there
    good = {"recipe": recipe_to_dict(get_recipe("synthetic-depth")), "data_root": None}
    path = run / "config.json"
    path.write_text(json.dumps(good))
    assert resolve(resume_args(run))[0] == get_recipe("synthetic-depth")  # the untouched config is taken
    documents = ["", "[]", "null", "{" * 100 + "}" * 100, '{"recipe": ' + "9" * 5001 + "}", '{"recipe": NaN}',
                 '{"recipe": {"preset": "nyu", "lr": Infinity}}', b"\xff\xfe{}", '{"a": "' + "x" * 100 + '"']
    bad_values = {"preset": [None, 7, "no-such-preset", "nyu ", [], {}], "lr": [None, "x", -1, 0, True, []],
                  "crop_h": [-1, 17, 100000, 1.5, "64", True], "batch_size": [0, -1, 1.5, "1", None],
                  "steps": [-1, 1.5, "x", None], "schedule": ["cosine", 1, None], "beta1": [1.0, -0.1, "x"],
                  "best_metric": ["mIoU", 3, None], "threads": [-1, 1.5, "1"], "precision": ["fp16", None, 16],
                  "warmup_ratio": [0, 1.5, -1, None], "unknown_field": [1, None]}
    rng = random.Random(0)
    for _ in range(30):
        recipe = dict(good["recipe"])
        for key in rng.sample(sorted(bad_values), rng.choice([1, 2])):
            recipe[key] = rng.choice(bad_values[key])
        documents.append(json.dumps(dict(good, recipe=recipe)))
    documents.append(json.dumps(dict(good, data_root=["/x"])))
    for text in documents:
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        with pytest.raises(MpDeployError) as caught:
            resolve(resume_args(run))
        message = str(caught.value)
        assert caught.value.exit_code == 2 and str(path) in message and "\n" not in message, (text[:80], message)


def test_a_huge_or_special_config_json_is_refused(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "resume.safetensors").write_bytes(b"")
    with open(run / "config.json", "wb") as f:  # past mp_deploy.files.MAX_JSON_BYTES, never read whole
        f.truncate((64 << 20) + 10)
    with pytest.raises(MpDeployError, match="more than"):
        resolve(resume_args(run))
    (run / "config.json").unlink()
    os.mkfifo(run / "config.json")
    with pytest.raises(MpDeployError, match="a FIFO"):
        resolve(resume_args(run))


def test_metrics_lines_that_are_not_records_are_left_out(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"kind": "train", "step": 1}\n{"kind": "train", "step": ' + "1" * 5001 + '}\n[' * 100 + "\n"
                    + '{"kind": "eval", "step": 2}\n{"step": "x"}\n{"kind": "train", "st')
    assert read_records(path) == [{"kind": "train", "step": 1}, {"kind": "eval", "step": 2}]


# ------------------------------------------------------------------ BatchNorm: one sample per process, SyncBN

@pytest.mark.parametrize("preset", sorted(RECIPES))
def test_every_recipe_trains_at_its_batch_per_process(preset):
    """One training forward/backward of the preset's (tiny) model at its recipe's per-process batch: ade20k and
    cityscapes take 1 sample, whose UPerHead pooling branch then sees one value per channel."""
    recipe = RECIPES[preset]
    torch.manual_seed(0)
    model = build_model(preset=preset, size="tiny").train()
    norms = build.SingleValueNorms(model)
    n, (h, w) = recipe.batch_size, (64, 64)
    images = torch.rand(n, 3, h, w)
    task = model.task
    target = {"depth": lambda: torch.rand(n, 1, h, w) + 0.5,
              "seg": lambda: torch.randint(0, model.preset.num_classes, (n, h, w)),
              "pose": lambda: torch.rand(n, model.preset.num_keypoints, h // 4, w // 4)}[task]()
    weight = torch.ones(n, model.preset.num_keypoints) if model.preset.num_keypoints else None
    out = TaskLoss(model, "fp32")(images, target, weight)
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    assert norms.used == (n == 1 and task == "seg")


def test_one_sample_per_process_trains_end_to_end(tmp_path, capsys):
    run = tmp_path / "run"
    assert train("--task", "seg", "--preset", "synthetic-seg", *SMALL, "--steps", 1, "--run-dir", run) == 0
    assert "finished 1 steps" in capsys.readouterr().out
    assert (run / "best.safetensors").is_file()


def test_sync_batchnorm_under_ddp_keeps_keys_and_eval_outputs():
    torch.manual_seed(0)
    model = build_model(preset="synthetic-seg", size="tiny").eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
    keys = {k: v.clone() for k, v in model.state_dict().items()}
    assert not build.sync_batchnorm(model, 1, torch.device("cuda"))  # one process: nothing to synchronise
    assert not build.sync_batchnorm(model, 2, torch.device("cpu"))  # SyncBatchNorm runs on CUDA only
    assert build.sync_batchnorm(model, 2, torch.device("cuda"))
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and all(isinstance(m, torch.nn.SyncBatchNorm) for m in norms)
    assert model.state_dict().keys() == keys.keys() and all(torch.equal(v, keys[k])
                                                           for k, v in model.state_dict().items())
    with torch.no_grad():
        assert torch.equal(model(x), expected)
    assert build.SingleValueNorms(model).handles == []  # SyncBatchNorm's statistics span the processes


# ------------------------------------------------------------------ values from flags and the environment

@pytest.mark.parametrize("flags,message", [
    (["--crop-h", "17", "--crop-w", "64"], "crop_h"),
    (["--crop-h", "100000", "--crop-w", "64"], "crop_h"),
    (["--crop-h", "64", "--crop-w", "60"], "crop_w"),
])
def test_a_bad_crop_is_refused_before_anything_is_written(tmp_path, capsys, flags, message):
    run = tmp_path / "run"
    args = ["--task", "depth", "--preset", "synthetic-depth", "--data", "synthetic", "--workers", "0",
            "--no-progress", "--steps", "1", *flags, "--run-dir", run]
    assert train(*args) == 2
    assert message in one_error_line(capsys)
    assert not run.exists()


@pytest.mark.parametrize("env,name", [({"WORLD_SIZE": "two"}, "WORLD_SIZE"), ({"WORLD_SIZE": "0"}, "WORLD_SIZE"),
                                      ({"WORLD_SIZE": "2", "RANK": "2"}, "RANK"),
                                      ({"LOCAL_RANK": "-1"}, "LOCAL_RANK"),
                                      ({"WORLD_SIZE": "9" * 5000}, "WORLD_SIZE")])
def test_torchrun_environment_is_checked(monkeypatch, env, name):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(UsageError, match=f"environment variable {name}="):
        dist.setup("cpu")


def test_a_run_dir_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert train(*DEPTH, "--steps", 1, "--run-dir", tmp_path / "file") == 2
    assert "not a folder" in one_error_line(capsys)
