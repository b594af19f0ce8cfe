"""Each metric against values computed by hand on small arrays."""
import math

import numpy as np
import pytest
import torch

from mp_deploy.data.keypoints import COCO_KEYPOINTS, COCO_SIGMAS
from mp_deploy.tasks.depth import DepthMeter, depth_metrics
from mp_deploy.tasks.pose import coco_from_records as coco_from_samples, coco_keypoint_ap, pck
from mp_deploy.tasks.seg import SegMeter

LN2 = math.log(2)


def test_depth_metrics_by_hand():
    # pred [1, 2] against gt [1, 1]: ratios 1 and 2, differences 0 and 1, log differences 0 and ln 2
    m = depth_metrics(torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0, 1.0]]))
    expected = {"d1": 0.5, "d2": 0.5, "d3": 0.5, "abs_rel": 0.5, "sq_rel": 0.5, "rmse": math.sqrt(0.5),
                "rmse_log": LN2 / math.sqrt(2), "log10": math.log10(2) / 2,
                "silog": math.sqrt(LN2 ** 2 / 2 - 0.5 * (LN2 / 2) ** 2)}
    assert m == pytest.approx(expected, rel=1e-9)
    # ratio 1.3 passes d2 (1.5625) but not d1
    m = depth_metrics(torch.tensor([1.3, 1.0]), torch.tensor([1.0, 1.0]))
    assert (m["d1"], m["d2"]) == (0.5, 1.0)


def test_depth_mask_and_sanitising():
    gt = torch.tensor([0.0, 1.0, 10.0, 2.0, 4.0])  # 0 invalid, 10 not < max_depth
    pred = torch.tensor([5.0, 1.0, 3.0, float("nan"), float("inf")])  # nan -> min (1e-3), inf -> max (10)
    m = depth_metrics(pred, gt, min_depth=1e-3, max_depth=10.0)
    # kept: (1, 1), (1e-3, 2), (10, 4): abs_rel = (0 + 1.9995 / 2 + 6 / 4) / 3
    assert m["abs_rel"] == pytest.approx((0 + (2 - 1e-3) / 2 + 1.5) / 3)
    assert m["d1"] == pytest.approx(1 / 3)
    assert depth_metrics(pred, torch.zeros(5)) is None


def test_eigen_and_garg_crops():
    gt = torch.full((480, 640), 2.0)
    pred = torch.full((480, 640), 4.0)
    pred[45:471, 41:601] = 2.0  # perfect inside the Eigen crop, wrong outside
    assert depth_metrics(pred, gt, crop="eigen")["rmse"] == 0.0
    assert depth_metrics(pred, gt)["rmse"] > 0
    with pytest.raises(ValueError, match="480x640"):
        depth_metrics(pred[:100], gt[:100], crop="eigen")
    gt = torch.full((352, 1216), 20.0)
    pred = torch.full((352, 1216), 10.0)
    # Garg rows int(0.40810811 * 352) = 143 .. int(0.99189189 * 352) = 349, cols 43 .. 1172
    pred[143:349, 43:1172] = 20.0
    assert depth_metrics(pred, gt, max_depth=80.0, crop="garg")["abs_rel"] == 0.0
    pred[142, 43] = 10.0
    pred[143, 42] = 10.0
    assert depth_metrics(pred, gt, max_depth=80.0, crop="garg")["abs_rel"] == 0.0
    pred[143, 43] = 10.0
    assert depth_metrics(pred, gt, max_depth=80.0, crop="garg")["abs_rel"] > 0


def test_depth_meter_averages_per_image():
    meter = DepthMeter()
    meter.update(torch.tensor([2.0]), torch.tensor([1.0]))  # rmse 1
    meter.update(torch.tensor([4.0, 4.0, 4.0]), torch.tensor([1.0, 1.0, 1.0]))  # rmse 3
    meter.update(torch.tensor([4.0]), torch.tensor([0.0]))  # no valid pixel: left out
    assert meter.result()["rmse"] == 2.0  # pooled pixels would give sqrt((1 + 27) / 4)
    assert (meter.count, meter.empty) == (2, 1)
    other = DepthMeter()
    other.update(torch.tensor([1.0]), torch.tensor([1.0]))
    assert meter.merge(other).result()["rmse"] == pytest.approx(4 / 3)


def test_seg_meter_by_hand():
    meter = SegMeter(num_classes=3)
    # image 1: labels [0 0 1 255], pred [0 1 1 2]; image 2: labels [1 1], pred [1 0]
    meter.update(torch.tensor([[0, 1], [1, 2]]), torch.tensor([[0, 0], [1, 255]]))
    meter.update(np.array([1, 0]), np.array([1, 1]))
    # class 0: I 1, pred 2, label 2 -> U 3; class 1: I 2, pred 3, label 3 -> U 4; class 2: never -> nan
    r = meter.result()
    assert r["IoU"][:2] == pytest.approx([1 / 3, 2 / 4]) and math.isnan(r["IoU"][2])
    assert r["mIoU"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert r["aAcc"] == pytest.approx(3 / 5) and r["Acc"][:2] == pytest.approx([1 / 2, 2 / 3])
    # a class predicted but never labelled counts with IoU 0
    meter.update(np.array([2]), np.array([0]))
    assert meter.result()["IoU"][2] == 0.0


def test_pck_by_hand():
    gt = np.zeros((2, 3, 2))
    pred = gt.copy()
    pred[0, 0] = [3, 4]  # distance 5 with normalize 100 -> 0.05: not under 0.05
    pred[1, 1] = [0, 4]  # 4 / 100 = 0.04: correct
    visible = np.array([[1, 1, 0], [1, 1, 0]], bool)  # keypoint 2 never visible: not averaged
    normalize = np.full((2, 2), 100.0)
    # per keypoint: k0 1/2, k1 2/2 -> mean 0.75
    assert pck(pred, gt, visible, normalize, 0.05) == pytest.approx(0.75)


def person(kps, image_id=1):
    return {"image_keypoints": torch.tensor(kps, dtype=torch.float32), "image_id": image_id,
            "box": torch.tensor([0.0, 0.0, 100.0, 100.0]), "area": 10000.0}


def test_coco_oks_ap_by_hand():
    rng = np.random.default_rng(0)
    kps = np.concatenate([rng.uniform(10, 90, (17, 2)), np.full((17, 1), 2.0)], 1)
    coco = coco_from_samples([person(kps)], COCO_KEYPOINTS)
    exact = {"image_id": 1, "category_id": 1, "score": 1.0,
             "keypoints": np.concatenate([kps[:, :2], np.ones((17, 1))], 1).ravel().tolist()}
    assert coco_keypoint_ap(coco, [exact])["AP"] == pytest.approx(1.0)
    # move every keypoint so that its OKS term is exactly 0.72: e = d^2 / (2 area (2 sigma)^2) = -ln 0.72;
    # OKS 0.72 passes the thresholds .50-.70 (5 of 10): AP = 0.5
    d = np.sqrt(-math.log(0.72) * 2 * 10000.0 * (2 * np.array(COCO_SIGMAS)) ** 2)
    moved = kps[:, :2] + np.stack([d, np.zeros(17)], 1)
    shifted = dict(exact, keypoints=np.concatenate([moved, np.ones((17, 1))], 1).ravel().tolist())
    r = coco_keypoint_ap(coco, [shifted])
    assert r["AP"] == pytest.approx(0.5) and r["AP50"] == pytest.approx(1.0) and r["AP75"] == pytest.approx(0.0)
