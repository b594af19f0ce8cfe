"""The training losses, as the reference trains (../shared/reference-architecture.md sections 4-5).

- depth: scale-invariant log loss (SiLog), lambda 0.5, no x10 factor, over pixels with valid ground truth;
- seg: cross-entropy + Lovasz-softmax (mmseg LovaszLoss: multi-class, present classes, over the whole batch),
  both weight 1.0, on the decode head's logits; cross-entropy x 0.4 on the auxiliary FCN head's;
- pose (our design, the reference has none): mean squared error of the heatmaps against Gaussian targets,
  masked per keypoint by its visibility weight, as top-down heatmap models (SimpleBaseline, ViTPose) train.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from mp_deploy.heads.common import resize

IGNORE_INDEX = 255
AUX_WEIGHT = 0.4


def silog(pred: torch.Tensor, target: torch.Tensor, variance_focus: float = 0.5) -> torch.Tensor:
    """sqrt(mean(d^2) - 0.5 mean(d)^2), d = log(target) - log(pred) over target > 0."""
    valid = target > 0
    d = torch.log(target[valid]) - torch.log(pred[valid].clamp_min(1e-6))
    return torch.sqrt((d ** 2).mean() - variance_focus * d.mean() ** 2)


def lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovasz extension of the Jaccard loss w.r.t. sorted errors (Berman et al. 2018, Alg. 1)."""
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1 - gt_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    if len(gt_sorted) > 1:
        jaccard[1:] = jaccard[1:] - jaccard[:-1]
    return jaccard


def lovasz_softmax(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Multi-class Lovasz-softmax over every valid pixel of the batch, averaged over the classes present."""
    probs = logits.softmax(1).permute(0, 2, 3, 1).reshape(-1, logits.shape[1])
    labels = labels.reshape(-1)
    valid = labels != ignore_index
    probs, labels = probs[valid], labels[valid]
    if labels.numel() == 0:
        return logits.sum() * 0.0
    losses = []
    for c in labels.unique():
        fg = (labels == c).float()
        errors = (fg - probs[:, c]).abs()
        errors_sorted, perm = torch.sort(errors, descending=True)
        losses.append(torch.dot(errors_sorted, lovasz_grad(fg[perm])))
    return torch.stack(losses).mean()


def seg_loss(logits: torch.Tensor, aux_logits: torch.Tensor | None, labels: torch.Tensor,
             ignore_index: int = IGNORE_INDEX) -> dict[str, torch.Tensor]:
    """-> {"ce", "lovasz", "aux_ce", "loss"}; logits are resized to the labels (bilinear), as mmseg does."""
    logits = resize(logits, labels.shape[-2:])
    parts = {"ce": F.cross_entropy(logits, labels, ignore_index=ignore_index),
             "lovasz": lovasz_softmax(logits, labels, ignore_index)}
    if aux_logits is not None:
        parts["aux_ce"] = AUX_WEIGHT * F.cross_entropy(resize(aux_logits, labels.shape[-2:]), labels,
                                                       ignore_index=ignore_index)
    parts["loss"] = sum(parts.values())
    return parts


def heatmap_mse(heatmaps: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared heatmap error; `weight` (B, K) masks invisible keypoints."""
    err = ((heatmaps - target) ** 2).mean(dim=(2, 3))
    if weight is not None:
        err = err * weight
    return err.mean()
