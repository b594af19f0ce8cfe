"""The training losses against hand-computed values."""
import math

import pytest
import torch

from mp_deploy.tasks.depth import silog
from mp_deploy.tasks.pose import heatmap_mse
from mp_deploy.tasks.seg import lovasz_softmax, seg_loss


def test_silog_by_hand():
    pred = torch.tensor([[[[1.0, 2.0], [4.0, 1.0]]]])
    target = torch.tensor([[[[2.0, 2.0], [1.0, 0.0]]]])  # the last pixel is invalid
    d = torch.tensor([math.log(2.0), 0.0, math.log(0.25)])
    want = math.sqrt((d ** 2).mean() - 0.5 * d.mean() ** 2)
    assert silog(pred, target).item() == pytest.approx(want, rel=1e-6)
    assert silog(target.clamp_min(1), target.clamp_min(1)).item() == pytest.approx(0.0, abs=1e-6)
    # scale-invariant up to lambda: a global scale s leaves sqrt(0.5) * |log s|
    assert silog(target.clamp_min(1) * 2, target.clamp_min(1)).item() == pytest.approx(
        math.sqrt(0.5) * math.log(2), rel=1e-5)


def test_lovasz_softmax_by_hand():
    # 2 classes, 3 pixels; labels [0, 1, 1]; probabilities of class 1: 0.2, 0.9, 0.4
    p1 = torch.tensor([0.2, 0.9, 0.4])
    logits = torch.log(torch.stack([1 - p1, p1]))[None, :, :, None]  # (1, 2, 3, 1)
    labels = torch.tensor([[[0], [1], [1]]])
    # class 0: fg [1,0,0], errors |fg - p0| = [0.2, 0.1, 0.6] -> sorted [0.6, 0.2, 0.1] with fg [0, 1, 0]
    #   jaccard after each: 1 - (1-0)/(1+1) = 0.5, 1 - 0/2 = 1.0, 1 - 0/3 = 1.0 -> grad [0.5, 0.5, 0]
    # class 1: fg [0,1,1], errors [0.2, 0.1, 0.6] -> sorted [0.6, 0.2, 0.1] with fg [1, 0, 1]
    #   jaccard: 1 - 1/2 = 0.5, 1 - 1/3 = 2/3, 1 - 0/3 = 1 -> grad [0.5, 1/6, 1/3]
    want = ((0.6 * 0.5 + 0.2 * 0.5) + (0.6 * 0.5 + 0.2 / 6 + 0.1 / 3)) / 2
    assert lovasz_softmax(logits, labels).item() == pytest.approx(want, rel=1e-5)
    labels_ignored = torch.tensor([[[0], [1], [255]]])  # an ignored pixel is left out
    assert lovasz_softmax(logits, labels_ignored).item() != pytest.approx(want, rel=1e-3)


def test_seg_loss_parts_and_gradients():
    logits = torch.randn(2, 5, 8, 8, requires_grad=True)
    aux = torch.randn(2, 5, 4, 4, requires_grad=True)
    labels = torch.randint(0, 5, (2, 16, 16))
    labels[0, :4] = 255
    parts = seg_loss(logits, aux, labels)
    assert set(parts) == {"ce", "lovasz", "aux_ce", "loss"}
    assert parts["loss"].item() == pytest.approx(sum(parts[k].item() for k in ("ce", "lovasz", "aux_ce")))
    parts["loss"].backward()
    assert logits.grad.abs().sum() > 0 and aux.grad.abs().sum() > 0


def test_heatmap_mse_masks_invisible_keypoints():
    target = torch.zeros(1, 2, 4, 4)
    pred = torch.zeros(1, 2, 4, 4)
    pred[0, 1] = 1.0  # wrong everywhere on keypoint 1
    assert heatmap_mse(pred, target).item() == pytest.approx(0.5)
    assert heatmap_mse(pred, target, torch.tensor([[1.0, 0.0]])).item() == 0.0
