"""The training loop: one process, or one per device under torchrun (DistributedDataParallel).

A run folder holds config.json (the resolved recipe and what the run was started from), metrics.jsonl, tb/,
resume.safetensors (mp_deploy.train.state), last.safetensors and best.safetensors (model weights in our
checkpoint format: `mp_deploy.checkpoints.load_model`, `mp-deploy build --checkpoint`) and best.json.

Exact resume: the step fixes the epoch and the position in it; the sampler order and every sample's
augmentation are functions of (seed, epoch, index); the weights, AdamW's state and every rank's torch generator
are restored. On the CPU a resumed run repeats the uninterrupted run's losses bit for bit (same number of
processes and threads). SIGTERM finishes the current step, saves the resumable state on every rank's agreement
(the stop flag travels with the step's loss all-reduce) and returns.

A run cannot poison itself: a step whose loss or gradient is not finite (on any rank) changes nothing: no
optimizer step, and the BatchNorm running statistics its forward passes updated are put back. Nothing non-finite
is ever saved (state.save_state and save_model refuse), and a run whose model is not finite, or that never took
a finite step, stops with a TrainingError and keeps no best.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from mp_deploy import tasks
from mp_deploy.checkpoints import save_checkpoint
from mp_deploy.data.base import SkipTally, collate, one_line_errors
from mp_deploy.errors import MpDeployError, UsageError
from mp_deploy.files import special_kind
from mp_deploy.evaluation import eval_mode, evaluate, ignore_sigterm, model_run
from mp_deploy.tasks import get_preset
from mp_deploy.train import build, dist, state
from mp_deploy.train.logs import RunLog
from mp_deploy.train.optim import build_optimizer, lr_at, set_lr
from mp_deploy.train.recipes import Recipe, recipe_to_dict
from mp_deploy.files import atomic_write

log = logging.getLogger("mp_deploy.train")

MAX_BAD_STEPS = 20  # consecutive steps with a non-finite loss after which the run is taken to have diverged


class TrainingError(MpDeployError):
    """The run cannot go on (the loss diverged, the model is not finite)."""


def save_model(model: nn.Module, path: Path) -> None:
    """save_checkpoint, refused (TrainingError) when a weight or buffer is not finite: such a file would not
    load (load_model refuses it) and must not replace a good one."""
    bad = state.non_finite(model.state_dict())
    if bad:
        raise TrainingError(f"not saving {path}: {len(bad)} tensor(s) of the model hold NaN or inf: "
                            f"{state.describe_names(bad)}")
    save_checkpoint(model, path)


def norm_buffers(model: nn.Module) -> list[torch.Tensor]:
    """The buffers a training forward pass changes: every BatchNorm layer's running statistics and count."""
    return [b for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]


@dataclass
class TrainSpec:
    recipe: Recipe
    run_dir: Path
    data_root: str | None = None
    sd_weights: str | None = None
    init_checkpoint: str | None = None
    resume: bool = False
    device: str | None = None
    stop_at: int = 0  # stop (resumably) after this step; 0: run to the end
    progress: bool = True


class TaskLoss(nn.Module):
    """The model and its task loss (the task's Task.loss) as one module, so that DDP wraps the whole training
    forward. Returns the loss and its parts (seg: ce, lovasz, aux_ce), computed in fp32."""

    def __init__(self, model: nn.Module, precision: str):
        super().__init__()
        self.model, self.precision = model, precision
        self.task = tasks.get(model.task)

    def forward(self, images: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> dict:
        with torch.autocast(images.device.type, torch.bfloat16, enabled=self.precision == "bf16"):
            s = self.model.run_stages({"images": images})
        return self.task.loss(s, target, weight)


def train(spec: TrainSpec) -> dict:
    """Run (or resume) a training run; returns the summary (on every rank; rank 0's is the one logged)."""
    d = dist.setup(spec.device)
    try:
        return Trainer(spec, d).run()
    finally:
        dist.teardown(d)


class Trainer:
    def __init__(self, spec: TrainSpec, d: dist.Dist):
        self.spec, self.d, self.r = spec, d, spec.recipe
        r, run_dir = self.r, Path(spec.run_dir)
        self.run_dir, self.resume_path = run_dir, run_dir / "resume.safetensors"
        self.preset = get_preset(r.preset)
        found = special_kind(run_dir)
        if found not in ("missing", "a folder"):
            raise UsageError(f"--run-dir {run_dir}: not a folder ({found or 'a regular file'})")
        # every rank looks before rank 0 writes config.json: DDP's construction below waits for all of them
        if not spec.resume and special_kind(run_dir / "config.json") != "missing":
            raise UsageError(f"{run_dir} already holds a run: add --resume to continue it, or choose another "
                             "--run-dir")
        if r.threads:
            torch.set_num_threads(r.threads)
        torch.manual_seed(r.seed)  # the same initial weights on every rank
        self.model = build.model_for(r, spec.sd_weights, spec.init_checkpoint).to(d.device)
        build.set_trainable(self.model, r)
        self.sync_bn = build.sync_batchnorm(self.model, d.world, d.device)
        self.single_value_norms = build.SingleValueNorms(self.model)  # batch 1 per process without SyncBatchNorm
        self.norm_buffers = norm_buffers(self.model)
        torch.manual_seed(r.seed + 1 + d.rank)  # dropout differs between ranks
        self.train_set = build.dataset(r, spec.data_root, r.train_split, train=True)
        self.val_set = build.dataset(r, spec.data_root, r.val_split, train=False)
        self.sampler = DistributedSampler(self.train_set, num_replicas=d.world, rank=d.rank, shuffle=True,
                                          seed=r.seed, drop_last=True)
        self.steps_per_epoch = len(self.sampler) // r.batch_size // r.accumulate
        if self.steps_per_epoch < 1:
            raise UsageError(f"the {r.train_split} split has {len(self.train_set)} samples: fewer than one step "
                             f"needs ({r.batch_size} x {r.accumulate} accumulated x {d.world} processes)")
        self.total = r.steps or r.epochs * self.steps_per_epoch
        self.rise = r.rise_steps or (self.steps_per_epoch * (r.epochs // 2) if not r.steps else 0) or \
            max(1, self.total // 2)
        self.eval_every = r.eval_every or self.steps_per_epoch
        self.optimizer = build_optimizer(self.model, r)
        loss = TaskLoss(self.model, r.precision)
        self.net = DistributedDataParallel(
            loss, device_ids=[d.device.index] if d.device.type == "cuda" else None,
            find_unused_parameters=self.preset.refine_steps == 1) if d.active else loss  # one pass: no out head
        self.step, self.images, self.train_seconds, self.bad_steps = 0, 0, 0.0, 0
        self.finite_steps, self.skipped_steps = 0, 0  # steps taken / skipped (not finite) over the whole run
        self.best: dict | None = None
        self.skips = SkipTally()
        self.skipped_before = 0
        if spec.resume:
            self.load()
        self.log = RunLog(run_dir, self.step if spec.resume else None) if d.main else None
        if d.main:
            self.write_config()
        self.stop_requested = False

    # ------------------------------------------------------------ state

    def write_config(self) -> None:
        s = self.spec
        config = {"recipe": recipe_to_dict(self.r), "data_root": s.data_root, "sd_weights": s.sd_weights,
                  "init_checkpoint": s.init_checkpoint, "processes": self.d.world, "device": self.d.device.type,
                  "total_steps": self.total, "steps_per_epoch": self.steps_per_epoch, "rise_steps": self.rise,
                  "eval_every": self.eval_every,
                  "global_batch": self.r.batch_size * self.r.accumulate * self.d.world}
        text = json.dumps(config, indent=1) + "\n"
        atomic_write(self.run_dir / "config.json", lambda tmp: Path(tmp).write_text(text))

    def load(self) -> None:
        """The resume file, every tensor and counter checked against this run before anything is restored
        (state.check_state: a ResumeError names the file and the problem)."""
        tensors, info = state.read_state(self.resume_path)
        state.check_state(self.resume_path, tensors, info, self.model, self.optimizer, self.total)
        state.restore(tensors, info, self.model, self.optimizer)
        self.step, self.best, self.images = info["step"], info["best"], info["images"]
        self.skipped_before = info["skipped"]
        self.finite_steps = info.get("finite_steps", self.step)
        self.skipped_steps = info.get("skipped_steps", 0)
        if self.best is not None and self.best["metric"] != self.r.best_metric:
            log.warning("the run's best so far is by %s, this recipe picks by %s: the best starts afresh",
                        self.best["metric"], self.r.best_metric)
            self.best = None
        if info["processes"] != self.d.world or not state.set_rng_state(tensors, self.d.rank, self.d.device):
            log.warning("resuming with %d processes where the run had %d: the data order and random state differ "
                        "from an uninterrupted run", self.d.world, info["processes"])
        if self.d.main:
            tqdm.write(f"resuming {self.run_dir} at step {self.step} of {self.total}")

    def save(self) -> None:
        rng = dist.gather(self.d, state.rng_state(self.d.device))
        if self.d.main:
            info = {"step": self.step, "best": self.best, "images": self.images, "processes": self.d.world,
                    "skipped": self.skipped_before + self.skips.count, "finite_steps": self.finite_steps,
                    "skipped_steps": self.skipped_steps, "recipe": recipe_to_dict(self.r)}
            try:
                state.save_state(self.resume_path, self.model, self.optimizer, rng, info)
            except state.NonFiniteState as e:
                raise TrainingError(f"step {self.step}: {e}; the last good save is kept") from None
            if self.finite_steps:  # the initial weights are not a result
                save_model(self.model, self.run_dir / "last.safetensors")
        dist.barrier(self.d)

    # ------------------------------------------------------------ data

    def loader(self, epoch: int, skip_batches: int) -> DataLoader:
        """This rank's batches of `epoch` after the first `skip_batches` (a resume mid-epoch)."""
        r = self.r
        self.sampler.set_epoch(epoch)
        self.train_set.set_epoch(epoch)
        used = self.steps_per_epoch * r.accumulate * r.batch_size
        indices = list(self.sampler)[skip_batches * r.batch_size:used]
        return DataLoader(self.train_set, batch_size=r.batch_size, sampler=indices, collate_fn=collate,
                          num_workers=r.workers, drop_last=True, pin_memory=self.d.device.type == "cuda",
                          generator=torch.Generator().manual_seed(r.seed), worker_init_fn=ignore_sigterm)

    def batches(self, epoch: int, skip_batches: int):
        """loader()'s batches, a typed error from a worker process as its one line."""
        return one_line_errors(self.loader(epoch, skip_batches))

    # ------------------------------------------------------------ one step

    def train_step(self, batches) -> dict[str, float]:
        """One optimizer step over `accumulate` passes. Taken only when the loss, the gradient and the BatchNorm
        statistics are finite on every rank (the verdict travels with the loss all-reduce); otherwise nothing
        changes: no optimizer step, the BatchNorm running statistics put back as they were."""
        r = self.r
        lr = lr_at(self.step + 1, r, self.total, self.rise)
        set_lr(self.optimizer, lr)
        task = tasks.get(self.model.task)
        key, weight_key = task.target, task.target_weight
        parts: dict[str, torch.Tensor] = {}
        saved_norms = [b.clone() for b in self.norm_buffers]
        for i in range(r.accumulate):
            batch = next(batches)
            self.skips.update(batch)
            images = batch["image"].to(self.d.device, non_blocking=True)
            target = batch[key].to(self.d.device, non_blocking=True)
            weight = batch[weight_key].to(self.d.device) if weight_key else None
            last = i == r.accumulate - 1
            sync = contextlib.nullcontext() if last or not self.d.active else self.net.no_sync()
            with sync:
                out = self.net(images, target, weight)
                (out["loss"] / r.accumulate).backward()
            for k, v in out.items():
                parts[k] = parts.get(k, 0.0) + v.detach().float() / r.accumulate
        params = [p for p in self.model.parameters() if p.grad is not None]
        grad_norm = nn.utils.get_total_norm([p.grad for p in params]) if params else torch.zeros(())
        checks = [torch.isfinite(grad_norm)] + [torch.isfinite(b).all() for b in self.norm_buffers
                                                 if b.is_floating_point()]
        locally_bad = not bool(torch.stack(checks).all())
        names = sorted(parts)
        values = dist.sum_values(self.d, [parts[k].item() for k in names]
                                 + [float(self.stop_requested), float(locally_bad)])
        result = {k: v / self.d.world for k, v in zip(names, values)}
        self.stop_requested = values[-2] > 0
        if math.isfinite(result["loss"]) and values[-1] == 0:
            self.bad_steps = 0
            self.finite_steps += 1
            if r.clip_grad:
                result["grad_norm"] = float(grad_norm)
                nn.utils.clip_grads_with_norm_(params, r.clip_grad, grad_norm)
            self.optimizer.step()
        else:  # every rank sees the same reduced verdict, so all skip together
            with torch.no_grad():
                for b, saved in zip(self.norm_buffers, saved_norms):
                    b.copy_(saved)
            self.bad_steps += 1
            self.skipped_steps += 1
            what = "loss" if not math.isfinite(result["loss"]) else "gradient or BatchNorm statistics"
            log.warning("step %d: the %s is not finite; the step is skipped (nothing changed)", self.step + 1, what)
            if self.bad_steps >= MAX_BAD_STEPS:
                raise TrainingError(f"the {what} was not finite for {MAX_BAD_STEPS} steps in a row (step "
                                    f"{self.step + 1}): lower --lr, or try --precision fp32")
        self.optimizer.zero_grad(set_to_none=True)
        result["lr"] = lr
        return result

    def check_model(self) -> None:
        """TrainingError when a weight or buffer of the model, or a tensor of AdamW's state, is not finite: nothing
        is saved from it. The same verdict on every rank (the weights and the optimizer state are the same on all,
        and the BatchNorm statistics were checked with the step's all-reduce)."""
        tensors = dict(self.model.state_dict())
        for index, values in self.optimizer.state_dict()["state"].items():
            tensors.update({f"optimizer state {index}.{k}": v for k, v in values.items()
                            if isinstance(v, torch.Tensor)})
        bad = state.non_finite(tensors)
        if bad:
            raise TrainingError(f"step {self.step}: {len(bad)} tensor(s) of the model or its optimizer hold NaN or "
                                f"inf ({state.describe_names(bad)}); nothing is saved from it, the last good save is "
                                "kept: lower --lr, or try --precision fp32")

    # ------------------------------------------------------------ evaluation

    def evaluate(self) -> None:
        r = self.r
        self.check_model()
        with eval_mode(self.model):
            result = evaluate(model_run(self.model, r.precision, self.d.device), self.val_set, self.preset,
                              self.d, limit=r.eval_limit, workers=min(r.workers, 2), progress=self.spec.progress)
        if not self.d.main:
            return
        numbers = {k: v for k, v in result.items() if isinstance(v, (int, float))}
        self.log.write("eval", self.step, numbers)
        value = result[r.best_metric]
        higher = tasks.get(self.model.task).metrics[r.best_metric]
        last = self.best["value"] if self.best else None
        if not self.finite_steps:
            log.warning("step %d: no step has been taken yet (every loss so far was not finite): not a best",
                        self.step)
        elif math.isfinite(value) and (last is None or (value > last if higher else value < last)):
            self.best = {"metric": r.best_metric, "value": value, "step": self.step}
            save_model(self.model, self.run_dir / "best.safetensors")
            text = json.dumps({"step": self.step, "metric": r.best_metric, "metrics": numbers}, indent=1) + "\n"
            atomic_write(self.run_dir / "best.json", lambda tmp: Path(tmp).write_text(text))
        shown = ", ".join(f"{k} {result[k]:.4f}" for k in tasks.get(self.model.task).headline)
        tqdm.write(f"step {self.step}: {shown}; best {r.best_metric} {self.best['value']:.4f} at step "
                   f"{self.best['step']}" if self.best else f"step {self.step}: {shown}")

    # ------------------------------------------------------------ the loop

    def _on_sigterm(self, signum, frame) -> None:
        self.stop_requested = True

    def run(self) -> dict:
        r, d = self.r, self.d
        previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        bar = tqdm(total=self.total, initial=self.step, desc=f"train {r.preset}", unit="step",
                   disable=not (d.main and self.spec.progress), dynamic_ncols=True)
        global_batch = r.batch_size * r.accumulate * d.world
        start_step, stopped, batches = self.step, None, None
        try:
            while self.step < self.total and stopped is None:
                epoch, first = divmod(self.step, self.steps_per_epoch)
                batches = self.batches(epoch, first * r.accumulate)
                for _ in range(first, self.steps_per_epoch):
                    t0 = time.perf_counter()
                    values = self.train_step(batches)
                    self.step += 1
                    dt = time.perf_counter() - t0
                    self.train_seconds += dt
                    self.images += global_batch
                    bar.update(1)
                    bar.set_postfix(loss=f"{values['loss']:.4f}", lr=f"{values['lr']:.2e}",
                                    img_s=f"{global_batch / dt:.1f}", refresh=False)
                    if d.main and (self.step % r.log_every == 0 or self.step == self.total):
                        self.log.write("train", self.step, dict(values, epoch=epoch, images_per_s=global_batch / dt))
                    if self.stop_requested:
                        stopped = "SIGTERM"
                    elif self.step == self.spec.stop_at:
                        stopped = f"--stop-at {self.spec.stop_at}"
                    if stopped is None and (self.step % self.eval_every == 0 or self.step == self.total):
                        self.evaluate()
                    if stopped or self.step % r.save_every == 0 or self.step == self.total:
                        self.check_model()
                        self.save()
                    if stopped or self.step >= self.total:
                        break
                batches.close()  # shuts the epoch's workers down
        finally:
            if batches is not None:  # an error mid-epoch: the workers go now, not at exit
                batches.close()
            signal.signal(signal.SIGTERM, previous)
            bar.close()
        return self.finish(start_step, stopped)

    def finish(self, start_step: int, stopped: str | None) -> dict:
        d, r = self.d, self.r
        if stopped is None and self.step > 0 and not self.finite_steps:
            raise TrainingError(f"none of the run's {self.step} steps had a finite loss and gradient: nothing "
                                "was learned and nothing is kept as best; lower --lr, or try --precision fp32")
        skipped = int(dist.sum_values(d, [float(self.skips.count)])[0]) + self.skipped_before
        steps = self.step - start_step
        speed = steps * r.batch_size * r.accumulate * d.world / self.train_seconds if self.train_seconds else 0.0
        bad_records = getattr(self.train_set, "bad_records", 0)
        summary = {"steps": self.step, "total_steps": self.total, "images": self.images, "images_per_s": speed,
                   "skipped": skipped, "skipped_steps": self.skipped_steps, "bad_records": bad_records,
                   "best": self.best, "stopped": stopped, "run_dir": str(self.run_dir)}
        if d.main:
            self.log.write("summary", self.step, {k: v for k, v in summary.items() if k != "best"}
                           | ({"best_" + self.best["metric"]: self.best["value"]} if self.best else {}))
            self.log.close()
            best = f"best {self.best['metric']} {self.best['value']:.4f} at step {self.best['step']}" \
                if self.best else "no evaluation yet"
            skip_line = f"bad samples skipped: {skipped}" + (f" (first: {self.skips.examples[0]})"
                                                             if self.skips.examples else "")
            if bad_records:
                skip_line += f"; bad annotations left out: {bad_records}"
            if self.skipped_steps:
                skip_line += f"; steps skipped (not finite): {self.skipped_steps}"
            state_line = f"stopped by {stopped} at step {self.step} of {self.total}; continue with --resume" \
                if stopped else f"finished {self.step} steps"
            tqdm.write(f"train {r.preset}: {state_line} ({self.images} images, {speed:.1f} images/s over {steps} "
                       f"steps here); {skip_line}; {best}; run folder {self.run_dir}")
        return summary
