"""A model (or any `run(batch)` callable) on a held-out split through mp_deploy.evaluation, with the protocol the
data set names (mp_deploy.protocols). Under DDP depth and segmentation split the
images over the ranks and merge their meters; pose is evaluated on rank 0 (its COCO evaluation needs every
result in one place) while the others wait.

Also the trivial baselines the demo models are compared with: the median training depth as a constant, the
most frequent training class everywhere, the mean training pose.
"""
from __future__ import annotations

import contextlib
import signal
import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from mp_deploy.configs import Preset
from mp_deploy.evaluation import evaluate_depth, evaluate_pose, evaluate_seg
from mp_deploy.protocols import DEPTH_PROTOCOLS, POSE_PROTOCOLS, SEG_PROTOCOLS, Run
from mp_deploy.train import dist
from mp_deploy.train.dist import Dist

# the metrics each task reports in logs and summaries
HEADLINE = {"depth": ("abs_rel", "rmse", "d1"), "seg": ("mIoU", "mAcc", "aAcc"), "pose": ("AP", "PCK")}


def model_run(model: torch.nn.Module, precision: str, device: torch.device) -> Run:
    """model(x) in inference mode, under bf16 autocast when asked; outputs in fp32."""
    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16"):
            return model(x.to(device)).float()
    return run


def ignore_sigterm(worker_id: int) -> None:
    """DataLoader workers outlive a SIGTERM sent to the whole process group (schedulers do): the main process
    decides when to stop, and shuts them down."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _samples(dataset, indices, workers: int):
    subset = Subset(dataset, indices)
    if workers == 0:
        return subset
    # batch_size None: samples one by one, in order; a generator of its own leaves the global RNG alone
    return DataLoader(subset, batch_size=None, num_workers=workers, generator=torch.Generator().manual_seed(0),
                      worker_init_fn=ignore_sigterm)


def evaluate(run: Run, dataset, preset: Preset, d: Dist = Dist(), limit: int = 0, workers: int = 0,
             max_batch: int = 8, progress: bool = True, pck_threshold: float = 0.05) -> dict | None:
    """The metrics of `run` on `dataset` (its first `limit` images, 0 = all; pose: PCK at `pck_threshold` of
    the box size). Returns them on rank 0, None on the other ranks."""
    n = len(dataset) if not limit else min(limit, len(dataset))
    task = preset.task
    kw = dict(max_batch=max_batch, progress=progress and d.main, device=d.device)
    if task == "pose":
        result = None
        if d.main:
            # the samples are crops already (the data set's input size): the protocol's flip test and scoring apply
            result, _ = evaluate_pose(_samples(dataset, range(n), workers), run, POSE_PROTOCOLS[dataset.protocol],
                                      coco_gt=getattr(dataset, "coco", None), sigmas=dataset.sigmas,
                                      keypoint_names=dataset.keypoint_names, pck_threshold=pck_threshold, **kw)
        dist.barrier(d)
        return result
    mine = _samples(dataset, range(d.rank, n, d.world), workers)
    if task == "depth":
        _, meter = evaluate_depth(mine, run, DEPTH_PROTOCOLS[dataset.protocol], min_depth=dataset.min_depth,
                                  max_depth=dataset.max_depth, crop=dataset.eval_crop, **kw)
    else:
        _, meter = evaluate_seg(mine, run, SEG_PROTOCOLS[dataset.protocol], num_classes=preset.num_classes, **kw)
    meters = dist.gather(d, meter)
    if not d.main:
        return None
    for other in meters[1:]:
        meter.merge(other)
    result = meter.result()
    result["images"] = meter.count if task == "depth" else n
    return result


# ------------------------------------------------------------------ baselines

def depth_baseline(train_samples) -> Run:
    """The median of the training depths (valid pixels) as a constant prediction."""
    values = np.concatenate([s["depth"][s["depth"] > 0].numpy() for s in train_samples])
    median = float(np.median(values))
    return lambda x: torch.full((len(x), 1, *x.shape[-2:]), median)


def seg_baseline(train_samples, num_classes: int) -> Run:
    """The most frequent training class at every pixel."""
    counts = np.zeros(num_classes)
    for s in train_samples:
        labels = s["labels"].numpy().ravel()
        counts += np.bincount(labels[labels < num_classes], minlength=num_classes)[:num_classes]
    majority = int(counts.argmax())
    return lambda x: torch.nn.functional.one_hot(torch.full((len(x), *x.shape[-2:]), majority),
                                                 num_classes).permute(0, 3, 1, 2).float()


def pose_baseline(train_samples, num_keypoints: int) -> Run:
    """The mean training pose: each keypoint's mean crop position (over the samples that label it), as
    one-hot heatmaps at stride 4."""
    total, count = np.zeros((num_keypoints, 2)), np.zeros(num_keypoints)
    for s in train_samples:
        kps = s["keypoints"].numpy()
        seen = kps[:, 2] > 0
        total[seen] += kps[seen, :2]
        count += seen
    mean = total / np.maximum(count, 1)[:, None]

    def run(x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2] // 4, x.shape[-1] // 4
        heat = torch.zeros(len(x), num_keypoints, h, w)
        for k, (px, py) in enumerate(mean / 4):
            heat[:, k, min(max(round(py), 0), h - 1), min(max(round(px), 0), w - 1)] = 1.0
        return heat
    return run


def baseline_run(task: str, train_dataset, preset: Preset, samples: int = 200) -> Run:
    """The task's trivial baseline fitted on the first `samples` training samples (as augmented)."""
    taken = [train_dataset[i] for i in range(min(samples, len(train_dataset)))]
    taken = [s for s in taken if "image" in s]
    if task == "depth":
        return depth_baseline(taken)
    if task == "seg":
        return seg_baseline(taken, preset.num_classes)
    return pose_baseline(taken, preset.num_keypoints)


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module):
    """The model in eval mode inside the block, back in its former mode after."""
    was = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was)
