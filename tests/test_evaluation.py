"""The evaluation loops end to end on synthetic held-out samples with runs whose answers are known."""
import numpy as np
import pytest
import torch

from mp_deploy.data import build_dataset
from mp_deploy.tasks import get_preset
from mp_deploy.evaluation import evaluate_samples
from mp_deploy.tasks.depth import DepthMeter
from mp_deploy.tasks.seg import SegMeter
from mp_deploy.tasks.depth import DEPTH_PROTOCOLS
from mp_deploy.tasks.pose import PoseProtocol
from mp_deploy.tasks.seg import SEG_PROTOCOLS


def test_depth_and_seg_loops_match_their_meters():
    depth = build_dataset("synthetic", "val", task="depth", size=(32, 32), length=3)
    const = lambda x: torch.full((len(x), 1, *x.shape[-2:]), 3.0)
    result, _ = evaluate_samples("depth", depth, const, depth, None, DEPTH_PROTOCOLS["synthetic"], progress=False)
    meter = DepthMeter(max_depth=depth.max_depth)
    for i in range(3):
        meter.update(torch.full((1, 32, 32), 3.0), depth[i]["depth"])
    assert result["abs_rel"] == pytest.approx(meter.result()["abs_rel"]) and result["images"] == 3

    seg = build_dataset("synthetic", "val", task="seg", size=(32, 32), length=3)
    floor = lambda x: torch.stack([torch.ones_like(x[:, 0])] + [torch.zeros_like(x[:, 0])] * 6, 1)
    protocol = SEG_PROTOCOLS["synthetic"]
    result, _ = evaluate_samples("seg", seg, floor, seg, get_preset("synthetic-seg"),
                                 protocol.__class__(scale=(32, 32), crop=(32, 32), stride=(21, 21)), progress=False)
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
    result, meter = evaluate_samples("pose", samples, oracle, ds, None, protocol, progress=False)
    assert len(meter.results) == 6 and result["instances"] == 6
    assert result["PCK"] > 0.6 and result["AP"] > 0.8  # targets are quantised to the stride-4 grid
    # the mean pose (every keypoint at the crop centre) is far worse
    centre = lambda x: torch.nn.functional.one_hot(torch.tensor(16 * 24 + 12), 32 * 24).float().view(1, 1, 32, 24)\
        .expand(len(x), 17, 32, 24)
    worse, _ = evaluate_samples("pose", samples, centre, ds, None, protocol, progress=False)
    assert worse["AP"] < result["AP"] and worse["PCK"] < 0.5


# ------------------------------------------------------------------ runs whose output varies in space, by hand

class Split(list):
    """A held-out split of samples given in the test, with the attributes a data set gives the evaluation."""

    def __init__(self, samples, **attributes):
        super().__init__(samples)
        self.__dict__.update(attributes)


def depth_by_position(x):
    """Depth = 1 + the red channel + 0.1 x the column inside the window: position-dependent, so where windows
    start, whether flipped windows are flipped back and how overlaps are averaged all change the result."""
    col = torch.arange(x.shape[-1], dtype=x.dtype).view(1, 1, 1, -1)
    return 1 + x[:, :1] + 0.1 * col.expand(len(x), 1, *x.shape[-2:])


def by_hand_depth_metrics(pred: np.ndarray, gt: np.ndarray) -> dict:
    ratio = np.maximum(pred / gt, gt / pred)
    return {"abs_rel": np.mean(np.abs(pred - gt) / gt), "rmse": np.sqrt(np.mean((pred - gt) ** 2)),
            "d1": np.mean(ratio < 1.25)}


def test_depth_evaluation_by_hand():
    """An 8 x 12 image through the NYU protocol (2 windows of 8 x 8 at columns 0 and 4, and their flips): the
    flipped window's column term is 7 - c, so flip-averaging gives 1 + red + 0.35 everywhere; without flips,
    columns 0-3 see window 0 (0.1 X), 4-7 both (0.1 (X - 2)), 8-11 window 4 (0.1 (X - 4)). Metrics per image
    against ground truth, averaged over the two images, computed here with numpy."""
    rng = np.random.default_rng(0)
    images = [rng.random((8, 12)) for _ in range(2)]
    gts = [1.2 + rng.random((8, 12)) for _ in range(2)]
    samples = [{"image": torch.from_numpy(np.stack([im, im * 0, im * 0])).float(), "depth": torch.from_numpy(g)[None]}
               for im, g in zip(images, gts)]
    split = Split(samples, protocol="nyu", min_depth=1e-3, max_depth=10.0, eval_crop=None)
    cols = np.arange(12)
    for flip, term in ((True, np.full(12, 0.35)),
                       (False, 0.1 * np.where(cols < 4, cols, np.where(cols < 8, cols - 2, cols - 4)))):
        protocol = DEPTH_PROTOCOLS["nyu"].__class__(shifts=2, flip=flip)
        result, _ = evaluate_samples("depth", split, depth_by_position, split, None, protocol, progress=False)
        want = [by_hand_depth_metrics(1 + im + term, g) for im, g in zip(images, gts)]
        for k in ("abs_rel", "rmse", "d1"):
            assert result[k] == pytest.approx(np.mean([w[k] for w in want]), rel=1e-6), (flip, k)
        # median-scaled: each prediction times median(gt) / median(pred) (96 pixels: numpy's median averages the
        # middle two, torch's takes the lower one, so the scale is computed here as torch defines it)
        lower_median = lambda a: np.sort(a, axis=None)[(a.size - 1) // 2]
        scaled = [(1 + im + term) * lower_median(g) / lower_median(1 + im + term) for im, g in zip(images, gts)]
        want = [by_hand_depth_metrics(p, g) for p, g in zip(scaled, gts)]
        for k in ("abs_rel", "rmse", "d1"):
            assert result[k + "_ms"] == pytest.approx(np.mean([w[k] for w in want]), rel=1e-6), (flip, k)
        assert result["images"] == 2


def seg_by_position(x):
    """Two classes: class 0's logit is 2.5, class 1's the column inside the crop (0..5)."""
    col = torch.arange(x.shape[-1], dtype=x.dtype).view(1, 1, -1).expand(len(x), x.shape[-2], -1)
    return torch.stack([torch.full_like(col, 2.5), col], 1)


def test_seg_evaluation_by_hand():
    """A 4 x 10 image slid by crops of 6 every 4 (crops at columns 0 and 4; mmseg sums logits and divides by
    the count): class 1's logit is X (X < 4), X - 2 (4, 5: both crops), X - 4 (X >= 6); above 2.5 it wins:
    labels 0001010111 in every row. Against 0001110011 by hand: class 0 predicted at {0,1,2,4,6}, labelled at
    {0,1,2,6,7}: I 4, U 6; class 1 predicted at {3,5,7,8,9}, labelled at {3,4,5,8,9}: I 4, U 6; 8 of 10 right."""
    image = torch.rand(3, 4, 10)
    gt = torch.tensor([0, 0, 0, 1, 1, 1, 0, 0, 1, 1]).repeat(4, 1)
    split = Split([{"image": image, "labels": gt}], protocol="synthetic")
    protocol = SEG_PROTOCOLS["synthetic"].__class__(scale=(10, 4), crop=(4, 6), stride=(4, 4))
    preset = get_preset("synthetic-seg", num_classes=2)
    result, meter = evaluate_samples("seg", split, seg_by_position, split, preset, protocol, progress=False)
    assert result["IoU"] == pytest.approx([4 / 6, 4 / 6]) and result["mIoU"] == pytest.approx(4 / 6)
    assert result["aAcc"] == pytest.approx(32 / 40) and result["images"] == 1


def test_pose_evaluation_by_hand():
    """Each crop's heatmaps peak at one cell per keypoint; the sample's own ground truth puts keypoint k at
    that cell's image position plus an offset of 0, 2 or 6 pixels in x (box 100 wide: PCK@0.05 counts
    offsets under 5 px). 12 of the 17 keypoint types have offsets 0 or 2 in every sample: PCK = 12/17."""
    from mp_deploy.data.keypoints import COCO_KEYPOINTS, COCO_SIGMAS

    h_in, w_in = 64, 48
    cells = [(4 + k % 6, 3 + k % 5) for k in range(17)]
    offsets = [0.0 if k < 6 else 2.0 if k < 12 else 6.0 for k in range(17)]

    def heat(x):
        out = torch.zeros(len(x), 17, h_in // 4, w_in // 4)
        for k, (r, c) in enumerate(cells):
            out[:, k, r, c] = 1.0
        return out

    samples = []
    for i in range(3):
        centre, scale = np.array([50.0 + 10 * i, 80.0]), np.array([100.0, 100.0 * h_in / w_in])
        gt = np.zeros((17, 3), np.float32)
        for k, (r, c) in enumerate(cells):
            gt[k] = [c * scale[0] / (w_in // 4) + centre[0] - scale[0] / 2 + offsets[k],
                     r * scale[1] / (h_in // 4) + centre[1] - scale[1] / 2, 2]
        samples.append({"image": torch.rand(3, h_in, w_in), "center": torch.tensor(centre),
                        "scale": torch.tensor(scale), "image_id": i, "box": torch.tensor([0.0, 0.0, 100.0, 133.3]),
                        "area": 100.0 * 133.3, "image_keypoints": torch.from_numpy(gt)})
    split = Split(samples, protocol="synthetic", coco=None, sigmas=COCO_SIGMAS, keypoint_names=COCO_KEYPOINTS)
    protocol = PoseProtocol(input_size=(h_in, w_in), flip=False)
    result, meter = evaluate_samples("pose", split, heat, split, None, protocol, progress=False)
    assert result["PCK"] == pytest.approx(12 / 17) and result["instances"] == 3
    exact = [dict(s, image_keypoints=s["image_keypoints"] * torch.tensor([1.0, 1.0, 1.0])) for s in samples]
    for s in exact:
        s["image_keypoints"][:, 0] -= torch.tensor(offsets)
    result, _ = evaluate_samples("pose", Split(exact, **split.__dict__), heat, split, None, protocol, progress=False)
    assert result["PCK"] == 1.0 and result["AP"] == pytest.approx(1.0)


def test_seg_slide_and_flip_against_a_loop_written_here():
    """The flip test on: each view's (the image's and its mirror image's) logits summed over the crops and
    divided by the count, softmaxed, the mirrored view's probabilities mirrored back, averaged: written here as
    plain loops over mmseg's slide grid (crops at columns 0 and 4). The run reads the image (class 1's logit:
    half the column inside the crop plus 4 x the red value), so a view that is not mirrored back shows."""
    red = np.random.default_rng(3).random((4, 10))
    image = torch.from_numpy(np.stack([red, red * 0, red * 0])).float()
    gt = torch.tensor([0, 0, 1, 1, 1, 1, 0, 0, 1, 1]).repeat(4, 1)
    split = Split([{"image": image, "labels": gt}], protocol="synthetic")
    protocol = SEG_PROTOCOLS["synthetic"].__class__(scale=(10, 4), crop=(4, 6), stride=(4, 4), flip=True)

    def run(x):
        col = torch.arange(x.shape[-1], dtype=x.dtype).view(1, 1, -1).expand(len(x), x.shape[-2], -1)
        return torch.stack([torch.full_like(col, 2.0), 0.5 * col + 4 * x[:, 0]], 1)

    probs = np.zeros((2, 4, 10))
    for mirrored in (False, True):
        view = red[:, ::-1] if mirrored else red
        total, count = np.zeros((2, 4, 10)), np.zeros(10)
        for x0 in (0, 4):
            for c in range(6):
                total[0, :, x0 + c] += 2.0
                total[1, :, x0 + c] += 0.5 * c + 4 * view[:, x0 + c]
                count[x0 + c] += 1
        logits = total / count
        p = np.exp(logits) / np.exp(logits).sum(0)
        probs += p[:, :, ::-1] if mirrored else p
    want = probs.argmax(0)
    preset = get_preset("synthetic-seg", num_classes=2)
    result, _ = evaluate_samples("seg", split, run, split, preset, protocol, progress=False)
    assert result["aAcc"] == pytest.approx((want == gt.numpy()).mean())
    inter = [((want == k) & (gt.numpy() == k)).sum() for k in (0, 1)]
    union = [((want == k) | (gt.numpy() == k)).sum() for k in (0, 1)]
    assert result["IoU"] == pytest.approx([i / u for i, u in zip(inter, union)])
    assert 0 < want.mean() < 1  # both classes predicted: a case the flip can get wrong
