"""Evaluation metrics, computed as the reference (depth), mmseg (segmentation) and mmpose/pycocotools (pose) do.

- Depth: `depth_metrics(pred, gt, ...)` for one image (the reference's utils_depth/metrics.py: predictions' inf
  -> max, nan -> min; eval mask = gt in (min, max) and the Eigen (NYU) or Garg (KITTI) crop); `DepthMeter`
  averages the per-image values over images, as the reference's test loop does.
- Segmentation: `SegMeter` accumulates intersection, union, prediction and label areas per class over the data
  set and gives mIoU (nan classes left out), mAcc and aAcc (mmseg's total_area_to_metrics).
- Pose: `coco_keypoint_ap` (OKS AP through pycocotools), `pck` (mmpose's keypoint_pck_accuracy).
"""
from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import torch

DEPTH_METRICS = ("d1", "d2", "d3", "abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog")
EVAL_CROPS = ("eigen", "garg", None)


def eval_mask(gt: torch.Tensor, min_depth: float, max_depth: float, crop: str | None) -> torch.Tensor:
    """The reference's mask: gt in (min_depth, max_depth), inside the Eigen crop (rows 45:471, cols 41:601 of
    a 480x640 NYU image) or the Garg crop (rows 0.4081-0.9919, cols 0.0359-0.9641 of the KITTI image)."""
    valid = (gt > min_depth) & (gt < max_depth)
    if crop is None:
        return valid
    h, w = gt.shape[-2:]
    region = torch.zeros_like(valid)
    if crop == "eigen":
        if (h, w) != (480, 640):
            raise ValueError(f"the Eigen crop is defined on 480x640 NYU images, got {w}x{h}")
        region[..., 45:471, 41:601] = True
    elif crop == "garg":
        region[..., int(0.40810811 * h):int(0.99189189 * h), int(0.03594771 * w):int(0.96405229 * w)] = True
    else:
        raise ValueError(f"unknown eval crop {crop!r}; choose one of {EVAL_CROPS}")
    return valid & region


def depth_metrics(pred, gt, min_depth: float = 1e-3, max_depth: float = 10.0, crop: str | None = None) -> dict | None:
    """The nine depth metrics of one image (pred and gt in metres, same shape). None when no pixel is valid
    (the reference would average a NaN in; we leave the image out and the meter counts it)."""
    pred = torch.as_tensor(pred, dtype=torch.float64).squeeze()
    gt = torch.as_tensor(gt, dtype=torch.float64).squeeze()
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and ground truth {tuple(gt.shape)} differ in shape")
    pred = torch.where(torch.isinf(pred), torch.full_like(pred, max_depth), pred)
    pred = torch.where(torch.isnan(pred), torch.full_like(pred, min_depth), pred)
    mask = eval_mask(gt, min_depth, max_depth, crop)
    if not mask.any():
        return None
    p, g = pred[mask], gt[mask]
    thresh = torch.maximum(g / p, p / g)
    diff, diff_log = p - g, torch.log(p) - torch.log(g)
    return {
        "d1": (thresh < 1.25).double().mean().item(),
        "d2": (thresh < 1.25 ** 2).double().mean().item(),
        "d3": (thresh < 1.25 ** 3).double().mean().item(),
        "abs_rel": (diff.abs() / g).mean().item(),
        "sq_rel": (diff ** 2 / g).mean().item(),
        "rmse": diff.pow(2).mean().sqrt().item(),
        "rmse_log": diff_log.pow(2).mean().sqrt().item(),
        "log10": (torch.log10(p) - torch.log10(g)).abs().mean().item(),
        "silog": (diff_log.pow(2).mean() - 0.5 * diff_log.mean() ** 2).sqrt().item(),
    }


class DepthMeter:
    """Per-image depth metrics averaged over images."""

    def __init__(self, min_depth: float = 1e-3, max_depth: float = 10.0, crop: str | None = None):
        self.min_depth, self.max_depth, self.crop = min_depth, max_depth, crop
        self.sums = dict.fromkeys(DEPTH_METRICS, 0.0)
        self.count = 0
        self.empty = 0  # images with no valid pixel, left out

    def update(self, pred, gt) -> dict | None:
        m = depth_metrics(pred, gt, self.min_depth, self.max_depth, self.crop)
        if m is None:
            self.empty += 1
            return None
        for k, v in m.items():
            self.sums[k] += v
        self.count += 1
        return m

    def merge(self, other: "DepthMeter") -> "DepthMeter":
        """Add another meter's images (another DDP rank's share)."""
        for k in self.sums:
            self.sums[k] += other.sums[k]
        self.count += other.count
        self.empty += other.empty
        return self

    def result(self) -> dict:
        return {k: (v / self.count if self.count else math.nan) for k, v in self.sums.items()}


class SegMeter:
    """mmseg's mIoU: per-class intersection and union areas summed over all images, IoU = I / U per class,
    mIoU = the mean over classes whose IoU is not nan (classes never labelled nor predicted); also per-class
    accuracy (I / label area), mAcc and aAcc (all intersections / all labelled pixels). Labels equal to
    `ignore_index` are left out, and so are values outside [0, num_classes) (as torch.histc does)."""

    def __init__(self, num_classes: int, ignore_index: int = 255):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.intersect = np.zeros(num_classes, np.float64)
        self.union = np.zeros(num_classes, np.float64)
        self.pred_area = np.zeros(num_classes, np.float64)
        self.label_area = np.zeros(num_classes, np.float64)

    def area(self, values: np.ndarray) -> np.ndarray:
        values = values[(values >= 0) & (values < self.num_classes)]
        return np.bincount(values, minlength=self.num_classes)[: self.num_classes].astype(np.float64)

    def update(self, pred, labels) -> None:
        pred = np.asarray(torch.as_tensor(pred).cpu()).astype(np.int64).ravel()
        labels = np.asarray(torch.as_tensor(labels).cpu()).astype(np.int64).ravel()
        if pred.shape != labels.shape:
            raise ValueError(f"prediction of {pred.size} pixels against labels of {labels.size}")
        keep = labels != self.ignore_index
        pred, labels = pred[keep], labels[keep]
        inter = self.area(pred[pred == labels])
        p_area, l_area = self.area(pred), self.area(labels)
        self.intersect += inter
        self.pred_area += p_area
        self.label_area += l_area
        self.union += p_area + l_area - inter

    def merge(self, other: "SegMeter") -> "SegMeter":
        """Add another meter's areas (another DDP rank's share)."""
        for name in ("intersect", "union", "pred_area", "label_area"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self

    def result(self) -> dict:
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = self.intersect / self.union
            acc = self.intersect / self.label_area
            a_acc = self.intersect.sum() / self.label_area.sum()
        return {"mIoU": float(np.nanmean(iou)) if np.isfinite(iou).any() else math.nan,
                "mAcc": float(np.nanmean(acc)) if np.isfinite(acc).any() else math.nan,
                "aAcc": float(a_acc), "IoU": iou.tolist(), "Acc": acc.tolist()}


# ------------------------------------------------------------------ pose

COCO_STATS = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


def coco_keypoint_ap(coco_gt, results: list[dict], sigmas=None) -> dict:
    """OKS AP of keypoint results in COCO's result format ({image_id, category_id, keypoints: [x, y, score] x K
    flat, score}) against a pycocotools COCO ground truth, through COCOeval. `sigmas` (K,) for non-COCO
    keypoints. Returns COCO_STATS (nan where COCOeval has nothing to average)."""
    from pycocotools.cocoeval import COCOeval  # the `train` extra

    if not results:
        return dict.fromkeys(COCO_STATS, 0.0)
    with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints its progress and table
        dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, dt, "keypoints")
        if sigmas is not None:
            ev.params.kpt_oks_sigmas = np.asarray(sigmas, np.float64)
        ev.params.useSegm = None
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {name: (float(v) if v >= 0 else math.nan) for name, v in zip(COCO_STATS, ev.stats)}


def pck(pred, gt, visible, normalize, threshold: float = 0.05) -> float:
    """mmpose's keypoint_pck_accuracy: distance / normalize (per sample, (N, 2) for x and y), a keypoint is
    correct under `threshold`; accuracy per keypoint type over the samples where it is visible, then the mean
    over the keypoint types that are visible anywhere. pred, gt (N, K, 2), visible (N, K)."""
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    visible = np.asarray(visible, bool) & (np.asarray(normalize) > 0).all(axis=1)[:, None]
    dist = np.linalg.norm((pred - gt) / np.asarray(normalize, np.float64)[:, None, :], axis=-1)  # (N, K)
    per_joint = [(dist[visible[:, k], k] < threshold).mean() for k in range(dist.shape[1]) if visible[:, k].any()]
    return float(np.mean(per_joint)) if per_joint else 0.0
