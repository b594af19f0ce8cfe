"""Evaluation loops: a task's samples through its inference protocol (mp_deploy.protocols) into its metrics
(mp_deploy.metrics), with a progress bar and a one-line summary.

`samples` is a dataset from mp_deploy.data (its eval split: no augmentation, bad files marked rather than
replaced) or any iterable of its samples, e.g. `DataLoader(dataset, batch_size=None, num_workers=4)`. Under DDP,
give each rank its share of the samples and merge the returned meters (`merge`) before reading them.
"""
from __future__ import annotations

import contextlib
import io
import logging
from typing import Iterable

import numpy as np
import torch
from tqdm import tqdm

from mp_deploy.data.keypoints import COCO_KEYPOINTS
from mp_deploy.metrics import DepthMeter, SegMeter, coco_keypoint_ap, pck
from mp_deploy.protocols import (DepthProtocol, PoseProtocol, Run, SegProtocol, decode_heatmaps, person_score,
                                 pose_heatmaps, predict_depth, seg_labels)

log = logging.getLogger("mp_deploy.evaluation")


class Stream:
    """The good samples of `samples` (datasets by index, up to `limit`; other iterables as they come), with a
    progress bar; `skipped` counts the bad samples met on the way."""

    def __init__(self, samples, limit: int | None, desc: str, progress: bool):
        self.samples, self.limit, self.desc, self.progress = samples, limit, desc, progress
        self.skipped = 0

    def __iter__(self):
        total = len(self.samples) if hasattr(self.samples, "__len__") else None
        if self.limit is not None:
            total = min(total, self.limit) if total is not None else self.limit
        indexed = hasattr(self.samples, "__getitem__") and total is not None
        items = (self.samples[i] for i in range(total)) if indexed else self.samples
        for n, sample in enumerate(tqdm(items, total=total, desc=self.desc, disable=not self.progress, leave=False)):
            if self.limit is not None and n >= self.limit:
                break
            self.skipped += int(sample.get("skipped", 0))
            if "image" in sample:
                yield sample


def summary(task: str, result: dict, keys: tuple, images: int, skipped: int) -> str:
    values = ", ".join(f"{k} {result[k]:.4f}" for k in keys)
    return f"{task} eval: {images} images, {values}; bad samples skipped: {skipped}"


def evaluate_depth(samples: Iterable[dict], run: Run, protocol: DepthProtocol, min_depth: float = 1e-3,
                   max_depth: float = 10.0, crop: str | None = None, device=None, max_batch: int = 8,
                   min_batch: int = 1, limit: int | None = None, progress: bool = True) -> tuple[dict, DepthMeter]:
    """The nine depth metrics averaged over images. For a depth dataset pass its eval_crop, min_depth and
    max_depth, and DEPTH_PROTOCOLS[dataset.protocol]."""
    meter = DepthMeter(min_depth, max_depth, crop)
    stream = Stream(samples, limit, "depth eval", progress)
    with torch.no_grad():
        for s in stream:
            pred = predict_depth(s["image"].to(device), run, protocol, max_batch, min_batch)
            meter.update(pred.cpu(), s["depth"])
    result = meter.result() | {"images": meter.count, "empty": meter.empty, "skipped": stream.skipped}
    say(progress, summary("depth", result, ("abs_rel", "rmse", "d1"), meter.count, stream.skipped))
    return result, meter


def evaluate_seg(samples: Iterable[dict], run: Run, protocol: SegProtocol, num_classes: int, device=None,
                 max_batch: int = 8, min_batch: int = 1, limit: int | None = None,
                 progress: bool = True) -> tuple[dict, SegMeter]:
    """mIoU, mAcc, aAcc over the samples (labels 255 ignored)."""
    meter = SegMeter(num_classes)
    stream = Stream(samples, limit, "seg eval", progress)
    images = 0
    with torch.no_grad():
        for s in stream:
            labels, _ = seg_labels(s["image"].to(device), run, protocol, max_batch, min_batch)
            meter.update(labels.cpu(), s["labels"])
            images += 1
    result = meter.result() | {"images": images, "skipped": stream.skipped}
    say(progress, summary("seg", result, ("mIoU", "aAcc"), images, stream.skipped))
    return result, meter


def evaluate_pose(samples: Iterable[dict], run: Run, protocol: PoseProtocol, coco_gt=None, sigmas=None,
                  keypoint_names=COCO_KEYPOINTS, pck_threshold: float = 0.05, device=None, max_batch: int = 8,
                  min_batch: int = 1, limit: int | None = None, progress: bool = True) -> tuple[dict, list[dict]]:
    """OKS AP (pycocotools) and PCK@pck_threshold (normalised by the box size) of top-down samples (their crops
    of ground-truth boxes, as mmpose's COCO evaluation with use_gt_bbox). `coco_gt`: the data set's COCO
    (PoseInstances.coco), else built from the samples. Returns the metrics and the COCO results."""
    results, pred_pts, gt_pts, vis, sizes, records = [], [], [], [], [], []
    pending: list[dict] = []

    def flush():
        crops = torch.stack([s["image"] for s in pending]).to(device)
        heat = pose_heatmaps(crops, run, protocol, max_batch, min_batch)
        coords, maxvals = decode_heatmaps(heat, [s["center"].numpy() for s in pending],
                                          [s["scale"].numpy() for s in pending])
        for s, c, m in zip(pending, coords, maxvals):
            results.append({"image_id": int(s["image_id"]), "category_id": 1,
                            "keypoints": np.concatenate([c, m[:, None]], 1).ravel().tolist(),
                            "score": person_score(m, 1.0, protocol.vis_threshold)})
            gt = s["image_keypoints"].numpy()
            pred_pts.append(c), gt_pts.append(gt[:, :2]), vis.append(gt[:, 2] > 0)
            sizes.append(s["box"].numpy()[2:4])
            records.append(s)
        pending.clear()

    stream = Stream(samples, limit, "pose eval", progress)
    with torch.no_grad():
        for s in stream:
            pending.append(s)
            if len(pending) * (2 if protocol.flip else 1) >= max_batch:
                flush()
        if pending:
            flush()
    if coco_gt is None:
        coco_gt = coco_from_samples(records, keypoint_names)
    result = coco_keypoint_ap(coco_gt, results, sigmas)
    result["PCK"] = pck(np.array(pred_pts), np.array(gt_pts), np.array(vis), np.array(sizes), pck_threshold) \
        if pred_pts else 0.0
    result |= {"instances": len(results), "skipped": stream.skipped}
    say(progress, summary("pose", result, ("AP", "PCK"), len(results), stream.skipped))
    return result, results


def coco_from_samples(samples: list[dict], keypoint_names=COCO_KEYPOINTS):
    """A pycocotools COCO ground truth made of top-down samples' persons (image_keypoints, box, area)."""
    from pycocotools.coco import COCO  # the `train` extra

    anns, images = [], {}
    for i, s in enumerate(samples):
        kps = s["image_keypoints"].numpy().astype(np.float64)
        images[int(s["image_id"])] = {"id": int(s["image_id"])}
        anns.append({"id": i + 1, "image_id": int(s["image_id"]), "category_id": 1, "iscrowd": 0,
                     "keypoints": kps.ravel().tolist(), "num_keypoints": int((kps[:, 2] > 0).sum()),
                     "bbox": [float(v) for v in s["box"]], "area": float(s["area"])})
    coco = COCO()
    coco.dataset = {"images": list(images.values()), "annotations": anns,
                    "categories": [{"id": 1, "name": "person", "keypoints": list(keypoint_names)}]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def say(progress: bool, line: str) -> None:
    log.info(line)
    if progress:
        tqdm.write(line)
