"""The parity gate every artifact passes: its output against the eager fp32 model's on fresh random inputs, finite,
and where it breaks, the eager model's error per stage at the artifact's precision. An int8 artifact is held to
its own rule (INT8_RULE) on held-out images of the task's data instead (export/calibration.py): quantization is
calibrated for real images, and its error is judged where it will run."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from mp_deploy.errors import MpDeployError
from mp_deploy.models import Trace
from mp_deploy.util import rel_l2

class ParityError(MpDeployError):
    def __init__(self, message: str, rel_l2: float = float("nan"), centred_rel_l2: float = float("nan")):
        super().__init__(message)
        self.rel_l2 = rel_l2  # the measured errors when there are (a table still shows them)
        self.centred_rel_l2 = centred_rel_l2


def first_nonfinite_stage(model, x: torch.Tensor) -> str | None:
    """Run the eager model with its trace and name the first traced tensor that is not finite."""
    trace = Trace()
    with torch.no_grad():
        model(x, hook=trace)
    return next((name for name, t in trace.tensors.items() if not torch.isfinite(t).all()), None)


@dataclass(frozen=True)
class ParityRule:
    """What an artifact's output must meet against eager fp32, on two measures of the same error e = out - ref:
    ||e|| / ||ref|| (the error relative to the output) and ||e|| / ||ref - mean(ref)|| (relative to the output's
    own variation: a flat output, such as depth of mean 5 m and spread 0.1 m, cannot hide a large error behind
    its mean)."""

    rel_l2: float
    centred_rel_l2: float

    def describe(self) -> str:
        return (f"relative L2 <= {self.rel_l2:g} and relative L2 of the centred output (the error over the "
                f"output's own variation) <= {self.centred_rel_l2:g}")


# fp32: rounding only (measured 2e-7 / 1e-5 on CPU builds); fp16: the half-precision network's own rounding
# (the tiny seeded depth model: 8.3e-3 of its variation in eager fp16 itself)
RULES = {"fp32": ParityRule(1e-4, 1e-3), "fp16": ParityRule(5e-3, 2.5e-2)}


@dataclass(frozen=True)
class Parity:
    rel_l2: float  # worst over the inputs tried
    centred_rel_l2: float


def measure_parity(run, reference_model, network, rule: ParityRule, seeds=(1, 2)) -> Parity:
    """The worst of both errors of `run(x)` against the eager fp32 model over fresh random inputs at the opt and
    min shapes; ParityError when either exceeds `rule` (naming the stage where eager at the artifact's precision
    departs, from `stage_errors`), or when the output is not finite (naming the first stage where eager breaks)."""
    worst, worst_centred, worst_x = 0.0, 0.0, None
    for seed, which in zip(seeds, ("opt", "min")):
        x = network.sample(which, seed=seed)
        device = next(reference_model.parameters()).device
        with torch.no_grad():
            ref = reference_model(x.float().to(device)).cpu()
        out = run(x).float().cpu()
        if out.shape != ref.shape:
            raise ParityError(f"output shape {tuple(out.shape)} != eager {tuple(ref.shape)} for input {tuple(x.shape)}")
        if not torch.isfinite(out).all():
            stage = first_nonfinite_stage(network.model, x)
            where = f"eager {network.precision} first breaks at {stage}" if stage else \
                "eager at the same precision stays finite: the backend itself breaks"
            raise ParityError(f"non-finite values in the artifact's output ({where})")
        err, centred = rel_l2(out, ref), rel_l2(out, ref, centred=True)
        if err / rule.rel_l2 + centred / rule.centred_rel_l2 >= worst / rule.rel_l2 + worst_centred / rule.centred_rel_l2:
            worst_x = x
        worst, worst_centred = max(worst, err), max(worst_centred, centred)
    if worst > rule.rel_l2 or worst_centred > rule.centred_rel_l2:
        stages = stage_errors(network.model, reference_model, worst_x)
        where = ", ".join(f"{name} {err:.1e}" for name, err in stages.items())
        raise ParityError(f"relative L2 {worst:.2e} (centred {worst_centred:.2e}) against eager fp32 exceeds the "
                          f"rule: {rule.describe()} (eager {network.precision} on the same input, per stage: "
                          f"{where})", worst, worst_centred)
    return Parity(worst, worst_centred)


@dataclass(frozen=True)
class Int8Rule:
    """An int8 artifact against eager fp32 on held-out images of the task's own data: the relative L2 of the raw
    output over all of them, and the task's headline metric (depth AbsRel, seg mIoU, pose AP) no worse than
    fp32's by more than `metric_change` of fp32's value (where the held-out split has labels)."""

    rel_l2: float
    metric_change: float

    def describe(self) -> str:
        return (f"on held-out images: relative L2 against eager fp32 <= {self.rel_l2:g}, and the task's headline "
                f"metric no worse than eager fp32's by more than {self.metric_change:.0%} of its value")


# measured with 64 synthetic training scenes on the tiny depth demo: 1.0% (max 1.5% per image), AbsRel unchanged;
# calibrated on constant grey images instead: 5.9%
INT8_RULE = Int8Rule(rel_l2=0.03, metric_change=0.05)


@dataclass(frozen=True)
class Int8Parity:
    rel_l2: float
    centred_rel_l2: float
    held_out: dict  # what it was measured on, the metric of both and its change


class _Recorder:
    """A run(x) that keeps what it returned, in call order (the fp32 and int8 runs see the same windows)."""

    def __init__(self, run):
        self.run, self.outputs = run, []

    def __call__(self, x):
        out = self.run(x).float().cpu()
        self.outputs.append(out)
        return out


def measure_int8_parity(run, reference_model, network, held_out, rule: Int8Rule = INT8_RULE) -> Int8Parity:
    """`run` (the int8 artifact's runner) against the eager fp32 model on `held_out` (export.calibration.HeldOut):
    the relative L2 of all raw outputs and, with a labelled split, the task's headline metric of both through its
    evaluation protocol at the artifact's window (TTA off: both see the same windows); ParityError when the rule
    fails or the output is not finite."""
    from mp_deploy import tasks

    device = next(reference_model.parameters()).device
    ours = _Recorder(run)
    theirs = _Recorder(lambda x: reference_model(x.float().to(device)))
    spec = tasks.get(network.task)
    record = dict(held_out.record)
    with torch.no_grad():
        if held_out.dataset is not None:
            from mp_deploy.evaluation import evaluate_samples
            from mp_deploy.tasks import preset_from_dict

            preset, data = preset_from_dict(network.preset), held_out.dataset
            window = tuple(network.shapes.shape("opt")[2:])
            protocol = spec.fit_protocol(spec.protocols[data.protocol], window, True, "off")
            batches = dict(max_batch=network.shapes.batch[2], min_batch=network.shapes.batch[0], limit=held_out.count,
                           progress=False)
            metric = spec.headline[0]
            got, _ = evaluate_samples(network.task, data, ours, data, preset, protocol=protocol, **batches)
            want, _ = evaluate_samples(network.task, data, theirs, data, preset, protocol=protocol, **batches)
            larger_better = spec.metrics.get(metric, True)
            worse = (want[metric] - got[metric]) if larger_better else (got[metric] - want[metric])
            change = worse / abs(want[metric]) if want[metric] else (0.0 if worse <= 0 else math.inf)
            record |= {"metric": metric, "fp32": want[metric], "int8": got[metric], "worse_by": change,
                       "metric_rule": rule.metric_change}
        else:
            for image in held_out.images:
                x = image[None].to(network.dtype)
                if tuple(x.shape[-2:]) != tuple(network.shapes.shape("opt")[2:]):
                    x = torch.nn.functional.interpolate(x, size=network.shapes.shape("opt")[2:], mode="bilinear",
                                                        antialias=True).clamp(0, 1)
                ours(x)
                theirs(x)
            record |= {"metric": None}
    if not ours.outputs:
        raise ParityError("no held-out image was run")
    out, ref = torch.cat([o.flatten() for o in ours.outputs]), torch.cat([o.flatten() for o in theirs.outputs])
    if not torch.isfinite(out).all():
        raise ParityError("non-finite values in the int8 artifact's output on held-out images")
    err, centred = rel_l2(out, ref), rel_l2(out, ref, centred=True)
    record |= {"rel_l2": err, "centred_rel_l2": centred, "windows": len(ours.outputs)}
    problems = []
    if err > rule.rel_l2:
        problems.append(f"relative L2 {err:.2e} > {rule.rel_l2:g}")
    if record.get("metric") is not None and record["worse_by"] > rule.metric_change:
        problems.append(f"{record['metric']} {record['int8']:.4f} against fp32's {record['fp32']:.4f}: worse by "
                        f"{record['worse_by']:.1%} > {rule.metric_change:.0%}")
    if problems:
        error = ParityError(f"int8 on {record['data']} ({record['images']} images): {'; '.join(problems)} "
                            f"(rule: {rule.describe()})", err, centred)
        error.held_out = record
        raise error
    return Int8Parity(err, centred, record)


def check_parity(run, reference_model, network, tolerance: float, seeds=(1, 2)) -> float:
    """Worst relative L2 of `run(x)` against the eager fp32 model (measure_parity with the plain measure only)."""
    return measure_parity(run, reference_model, network, ParityRule(tolerance, math.inf), seeds).rel_l2


def stage_errors(model, reference_model, x: torch.Tensor) -> dict[str, float]:
    """Relative L2 against the eager fp32 model of each traced tensor of `model` (eager, at the artifact's
    precision) on input x, in model order, ending with the output: where the error grows. Eager already over
    the rule at the output: the precision itself; eager within it: the backend loses the rest."""
    device = next(reference_model.parameters()).device
    ours, ref = Trace(), Trace()
    with torch.no_grad():
        model(x, hook=ours)
        reference_model(x.float().to(device), hook=ref)
    return {name: rel_l2(t.float(), ref.tensors[name].float()) for name, t in ours.tensors.items()
            if t.shape == ref.tensors[name].shape}
