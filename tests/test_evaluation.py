"""The evaluation loops end to end on synthetic held-out samples with runs whose answers are known."""
import pytest
import torch

from mp_deploy.data import build_dataset
from mp_deploy.evaluation import evaluate_depth, evaluate_pose, evaluate_seg
from mp_deploy.metrics import DepthMeter, SegMeter
from mp_deploy.protocols import DEPTH_PROTOCOLS, PoseProtocol, SEG_PROTOCOLS


def test_depth_and_seg_loops_match_their_meters():
    depth = build_dataset("synthetic", "val", task="depth", size=(32, 32), length=3)
    const = lambda x: torch.full((len(x), 1, *x.shape[-2:]), 3.0)
    result, _ = evaluate_depth(depth, const, DEPTH_PROTOCOLS["synthetic"], max_depth=depth.max_depth,
                               progress=False)
    meter = DepthMeter(max_depth=depth.max_depth)
    for i in range(3):
        meter.update(torch.full((1, 32, 32), 3.0), depth[i]["depth"])
    assert result["abs_rel"] == pytest.approx(meter.result()["abs_rel"]) and result["images"] == 3

    seg = build_dataset("synthetic", "val", task="seg", size=(32, 32), length=3)
    floor = lambda x: torch.stack([torch.ones_like(x[:, 0])] + [torch.zeros_like(x[:, 0])] * 6, 1)
    protocol = SEG_PROTOCOLS["synthetic"]
    result, _ = evaluate_seg(seg, floor, protocol.__class__(scale=(32, 32), crop=(32, 32), stride=(21, 21)),
                             num_classes=7, progress=False)
    meter = SegMeter(7)
    for i in range(3):
        meter.update(torch.zeros(32, 32, dtype=torch.int64), seg[i]["labels"])
    assert result["mIoU"] == pytest.approx(meter.result()["mIoU"]) and result["aAcc"] > 0


def test_pose_loop_with_an_oracle():
    ds = build_dataset("synthetic", "val", task="pose", input_size=(128, 96), length=6)
    samples = [ds[i] for i in range(6)]
    # the oracle answers each crop with its own target heatmaps (looked up by the crop's pixel sum)
    table = {round(float(s["image"].sum()), 3): s["heatmaps"] for s in samples}
    oracle = lambda x: torch.stack([table[round(float(c.sum()), 3)] for c in x])
    protocol = PoseProtocol(input_size=(128, 96), flip=False)
    result, results = evaluate_pose(samples, oracle, protocol, progress=False)
    assert len(results) == 6 and result["instances"] == 6
    assert result["PCK"] > 0.6 and result["AP"] > 0.8  # targets are quantised to the stride-4 grid
    # the mean pose (every keypoint at the crop centre) is far worse
    centre = lambda x: torch.nn.functional.one_hot(torch.tensor(16 * 24 + 12), 32 * 24).float().view(1, 1, 32, 24)\
        .expand(len(x), 17, 32, 24)
    worse, _ = evaluate_pose(samples, centre, protocol, progress=False)
    assert worse["AP"] < result["AP"] and worse["PCK"] < 0.5
