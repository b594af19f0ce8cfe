"""Inference protocols with fake runs whose answers are known, and once with a seeded tiny model."""
import numpy as np
import pytest
import torch

from mp_deploy.models import seeded_model
from mp_deploy.protocols import (DepthProtocol, PoseProtocol, SegProtocol, coco_results, decode_heatmaps,
                                 predict_depth, predict_pose, predict_seg, run_batched, slide_boxes, window_starts)


class Recorder:
    """A run that records its batch sizes and answers fn(batch)."""

    def __init__(self, fn):
        self.fn, self.sizes, self.inputs = fn, [], []

    def __call__(self, x):
        self.sizes.append(len(x))
        self.inputs.append(x)
        return self.fn(x)


def channel_mean(x):
    return x.mean(1, keepdim=True)


def test_run_batched_chunks_and_pads():
    run = Recorder(lambda x: x * 2)
    x = torch.arange(7.0).reshape(7, 1)
    out = run_batched(run, x, max_batch=3, min_batch=2)
    assert torch.equal(out, x * 2) and run.sizes == [3, 3, 2]  # the last single item padded to 2
    with pytest.raises(ValueError):
        run_batched(run, x, max_batch=2, min_batch=3)


def test_depth_windows_and_flips_in_one_batch():
    image = torch.rand(3, 48, 64)
    run = Recorder(channel_mean)
    out = predict_depth(image, run, DepthProtocol(shifts=2, flip=True), max_batch=8)
    assert run.sizes == [4]  # 2 windows + their flips
    batch = run.inputs[0]
    assert torch.equal(batch[0], image[:, :, 0:48]) and torch.equal(batch[1], image[:, :, 16:64])
    assert torch.equal(batch[2], image[:, :, 0:48].flip(-1))
    assert torch.allclose(out, channel_mean(image[None])[0], atol=1e-6)


def test_depth_overlap_is_averaged_by_count():
    # window k answers k + 1 everywhere (its flip too): the overlap of windows 0 and 1 averages to 1.5
    def answer(x):
        ids = torch.tensor([0, 1, 0, 1], dtype=torch.float32)[: len(x)]
        return (ids + 1).view(-1, 1, 1, 1).expand(len(x), 1, *x.shape[-2:]).clone()
    out = predict_depth(torch.rand(3, 48, 64), answer, DepthProtocol(shifts=2, flip=True))
    assert (out[0, :, :16] == 1).all() and (out[0, :, 16:48] == 1.5).all() and (out[0, :, 48:] == 2).all()


def test_depth_kitti_interval_leaves_the_reference_gap():
    # 352 x 1216 scaled down by 8: 44 x 152, 16 windows, interval (152 - 44) // 15 = 7, last ends at 149
    assert window_starts(152, 44, 16, False)[-1] == 105
    out = predict_depth(torch.rand(3, 44, 152), channel_mean, DepthProtocol(shifts=16, flip=True), max_batch=32)
    assert torch.isnan(out[..., 149:]).all() and not torch.isnan(out[..., :149]).any()
    full = predict_depth(torch.rand(3, 44, 152), channel_mean, DepthProtocol(shifts=16, cover_all=True))
    assert not torch.isnan(full).any()


def test_depth_resize_rule_for_images_the_window_does_not_fit():
    image = torch.full((3, 30, 100), 0.25)
    run = Recorder(channel_mean)
    out = predict_depth(image, run, DepthProtocol(shifts=2, flip=False, window=(48, 48), cover_all=True))
    # scale max(48 / 30, 48 / 100) = 1.6 -> 48 x 160; 2 windows would leave a gap: 4 (starts 0, 37, 75, 112);
    # back to 30 x 100
    assert [tuple(x.shape) for x in run.inputs] == [(4, 3, 48, 48)]
    assert out.shape == (1, 30, 100) and torch.allclose(out, torch.tensor(0.25))


def test_slide_boxes_as_mmseg():
    assert slide_boxes(512, 683, (512, 512), (341, 341)) == [(0, 512, 0, 512), (0, 512, 171, 683)]
    assert slide_boxes(300, 300, (512, 512), (341, 341)) == [(0, 300, 0, 300)]  # smaller: fed as it is
    assert len(slide_boxes(1024, 2048, (1024, 1024), (512, 512))) == 3


def test_seg_slide_and_flip_give_softmax_of_the_logits():
    image = torch.rand(3, 40, 72)
    logits = lambda x: 10 * x  # 3 classes: the channels
    protocol = SegProtocol(scale=(72, 40), crop=(32, 32), stride=(20, 20), flip=True)  # no resize at this size
    run = Recorder(logits)
    probs = predict_seg(image, run, protocol, max_batch=64)
    n_crops = len(slide_boxes(40, 72, (32, 32), (20, 20)))
    assert run.sizes == [2 * n_crops]  # crops of the image and of its flip in one batch
    assert torch.allclose(probs, (10 * image).softmax(0), atol=1e-6)
    whole = predict_seg(image, logits, SegProtocol(scale=(72, 40), mode="whole"))
    assert torch.allclose(whole, probs, atol=1e-6)


def test_seg_pad_to_crop_for_fixed_windows():
    image = torch.rand(3, 20, 24)
    seen = []

    def fixed(x):
        seen.append(tuple(x.shape[-2:]))
        return 10 * x
    probs = predict_seg(image, fixed, SegProtocol(scale=(24, 20), crop=(32, 32), stride=(20, 20), pad_to_crop=True))
    assert seen == [(32, 32)] and torch.allclose(probs, (10 * image).softmax(0), atol=1e-6)


def dot_heatmaps(x):
    """17 identical heatmaps: the red channel pooled by 4 (a bright dot gives a peak at its cell)."""
    return torch.nn.functional.avg_pool2d(x[:, :1], 4).expand(-1, 17, -1, -1).clone()


def test_pose_keypoints_back_in_image_coordinates():
    image = torch.zeros(3, 120, 100)
    image[0, 60:62, 40:42] = 1.0  # a dot centred at (40.5, 60.5)
    people = predict_pose(image, dot_heatmaps, boxes=[[20, 30, 45, 60]], box_scores=[0.9],
                          protocol=PoseProtocol(input_size=(64, 48), flip=True))
    kps = people[0]["keypoints"]
    assert kps.shape == (17, 3)
    assert np.abs(kps[:, 0] - 40.5).max() < 2.5 and np.abs(kps[:, 1] - 60.5).max() < 2.5
    assert people[0]["score"] == pytest.approx(0.9 * kps[0, 2]) or kps[0, 2] <= 0.2
    whole = predict_pose(image, dot_heatmaps, protocol=PoseProtocol(input_size=(64, 48), flip=False))
    assert np.abs(whole[0]["keypoints"][:, :2] - [40.5, 60.5]).max() < 4  # the whole image as the box
    res = coco_results(people, image_id=7)
    assert res[0]["image_id"] == 7 and len(res[0]["keypoints"]) == 51


def test_decode_quarter_shift_and_mapping():
    hm = torch.zeros(1, 1, 8, 8)
    hm[0, 0, 4, 4], hm[0, 0, 4, 5], hm[0, 0, 3, 4] = 1.0, 0.5, 0.2  # right and up neighbours higher
    coords, maxvals = decode_heatmaps(hm, [[100.0, 50.0]], [[32.0, 32.0]])
    # (4.25, 3.75) on an 8 x 8 map of a 32 x 32 box centred at (100, 50): x4 - 16 + centre
    assert coords[0, 0].tolist() == pytest.approx([4.25 * 4 + 84, 3.75 * 4 + 34]) and maxvals[0, 0] == 1.0


class Memo:
    """A model whose answers are remembered by input, so the hand-written reference loop below costs nothing
    more when it asks for the same batch (the protocol must have built exactly that batch)."""

    def __init__(self, model):
        self.model, self.seen = model, []

    def __call__(self, x):
        for inp, out in self.seen:
            if inp.shape == x.shape and torch.equal(inp, x):
                return out
        self.seen.append((x.clone(), self.model(x)))
        return self.seen[-1][1]


def test_protocols_with_a_seeded_tiny_model():
    depth = Memo(seeded_model("depth").eval())
    image = torch.rand(3, 32, 48)
    with torch.no_grad():
        out = predict_depth(image, depth, DepthProtocol(shifts=2, flip=True))
        # the reference's loop written out: windows at 0 and 16, flips averaged, overlap averaged
        windows = torch.stack([image[:, :, :32], image[:, :, 16:]])
        pred = depth(torch.cat([windows, windows.flip(-1)]))
        pred = (pred[:2] + pred[2:].flip(-1)) / 2
        ref = torch.zeros(1, 32, 48)
        count = torch.zeros(1, 32, 48)
        for s, p in zip((0, 16), pred):
            ref[:, :, s:s + 32] += p
            count[:, :, s:s + 32] += 1
    assert len(depth.seen) == 1  # the protocol's one batch is the reference's
    assert torch.allclose(out, ref / count, rtol=1e-4, atol=1e-5)
    seg = Memo(seeded_model("seg").eval())
    with torch.no_grad():
        probs = predict_seg(image, seg, SegProtocol(scale=(48, 32), mode="whole"))
        assert torch.allclose(probs, seg(image[None])[0].softmax(0), atol=1e-5)


def test_seg_labels_equal_the_argmax_of_the_probabilities():
    """Chunked over classes (a few at a time): the same labels and confidences as predict_seg(...).max(0)."""
    from mp_deploy.protocols import seg_labels

    torch.manual_seed(0)
    weight = torch.randn(7, 3)

    def run(batch):  # a fixed per-pixel linear map to 7 classes at half resolution
        small = torch.nn.functional.avg_pool2d(batch, 2)
        return torch.einsum("kc,bchw->bkhw", weight, small) * 5

    image = torch.rand(3, 40, 56)
    for protocol in (SegProtocol(scale=(48, 32), crop=(16, 16), stride=(11, 11), flip=True, ratios=(1.0, 0.75)),
                     SegProtocol(scale=(64, 40), mode="whole")):
        want_conf, want = predict_seg(image, run, protocol).max(0)
        labels, conf = seg_labels(image, run, protocol, budget_bytes=2 * 4 * 40 * 56)  # 2 classes per chunk
        assert torch.equal(labels, want)
        torch.testing.assert_close(conf, want_conf, rtol=1e-5, atol=1e-6)
