"""Inference protocols with fake runs whose answers are known, and once with a seeded tiny model."""
import numpy as np
import pytest
import torch

from mp_deploy.tasks import seeded_model
from mp_deploy.inference import run_batched
from mp_deploy.tasks.depth import DepthProtocol, predict_depth, window_starts
from mp_deploy.tasks.pose import PoseProtocol, coco_results, decode_heatmaps, predict_pose
from mp_deploy.tasks.seg import SegProtocol, predict_seg, slide_boxes


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


def box_crop(box, input_hw, padding=1.25):
    """The crop of a box as mmpose makes it, computed here from its definition: centre of the box; the box's
    aspect widened (never narrowed) to the input's; times the padding -> (centre, size) in image pixels."""
    x, y, w, h = box
    aspect = input_hw[1] / input_hw[0]
    if w > aspect * h:
        h = w / aspect
    else:
        w = h * aspect
    return np.array([x + box[2] / 2, y + box[3] / 2]), np.array([w, h]) * padding


def test_pose_keypoints_back_in_image_coordinates():
    """A run answering one-hot heatmaps at a known cell: every keypoint lands where the crop's geometry puts that
    cell, exactly; the person's score is the box score times the mean of the keypoint scores above 0.2."""
    h_in, w_in = 64, 48
    cells = [(3 + k % 5, 2 + k % 7) for k in range(17)]  # (row, col) per keypoint, away from the border
    values = [0.1 + 0.05 * k for k in range(17)]  # scores; those <= 0.2 do not count for the person

    def one_hot(x):
        heat = torch.zeros(len(x), 17, h_in // 4, w_in // 4)
        for k, ((r, c), v) in enumerate(zip(cells, values)):
            heat[:, k, r, c] = v
        return heat

    box, score = [20.0, 30.0, 45.0, 60.0], 0.9
    people = predict_pose(torch.rand(3, 120, 100), one_hot, boxes=[box], box_scores=[score],
                          protocol=PoseProtocol(input_size=(h_in, w_in), flip=False))
    centre, size = box_crop(box, (h_in, w_in))
    kps = people[0]["keypoints"]
    for k, (r, c) in enumerate(cells):  # no quarter shift: the neighbours are equal (0)
        want = np.array([c, r]) * size / [w_in // 4, h_in // 4] + centre - size / 2
        assert kps[k, :2] == pytest.approx(want, abs=1e-9) and kps[k, 2] == pytest.approx(values[k])
    good = [v for v in values if v > 0.2]
    assert people[0]["score"] == pytest.approx(score * np.mean(good))
    res = coco_results(people, image_id=7)
    assert res[0]["image_id"] == 7 and len(res[0]["keypoints"]) == 51 and res[0]["score"] == people[0]["score"]
    whole = predict_pose(torch.rand(3, 120, 100), one_hot, protocol=PoseProtocol(input_size=(h_in, w_in), flip=False))
    centre, size = box_crop([0, 0, 100, 120], (h_in, w_in))  # no boxes: the whole image is the box
    r, c = cells[0]
    assert whole[0]["keypoints"][0, :2] == pytest.approx(np.array([c, r]) * size / [12, 16] + centre - size / 2)


def test_flip_back_swaps_left_and_right_and_shifts_one_pixel():
    """Heatmaps of a flipped crop back in the crop's frame, checked element by element against a loop written
    from the definition: map k comes from map pair(k) mirrored (x -> w - 1 - x); with the shift, every column
    moves one to the right and column 0 keeps its value (mmpose's shift_heatmap)."""
    from mp_deploy.data.keypoints import COCO_FLIP_PAIRS
    from mp_deploy.tasks.pose import flip_back

    heat = torch.arange(2 * 17 * 3 * 5, dtype=torch.float32).reshape(2, 17, 3, 5)  # every value distinct
    pair = list(range(17))
    for a, b in COCO_FLIP_PAIRS:
        pair[a], pair[b] = b, a
    plain = flip_back(heat, COCO_FLIP_PAIRS, shift=False)
    shifted = flip_back(heat, COCO_FLIP_PAIRS, shift=True)
    for n in range(2):
        for k in range(17):
            for y in range(3):
                for x in range(5):
                    assert plain[n, k, y, x] == heat[n, pair[k], y, 4 - x]
                    assert shifted[n, k, y, x] == heat[n, pair[k], y, 4 - max(x - 1, 0)]
    assert pair[1] == 2 and pair[0] == 0  # the left eye takes the right eye's map; the nose keeps its own


def test_pose_flip_test_averages_the_flipped_crop_flipped_back():
    """pose_heatmaps sends the crops and their mirror images in one batch and averages the second half
    flipped back; a run that answers A for a crop and B for its mirror image (told apart by a marker pixel)
    must give (A + flip_back(B)) / 2, computed here by hand."""
    from mp_deploy.data.keypoints import COCO_FLIP_PAIRS
    from mp_deploy.tasks.pose import pose_heatmaps

    g = torch.Generator().manual_seed(0)
    A, B = torch.rand(17, 8, 6, generator=g), torch.rand(17, 8, 6, generator=g)
    crop = torch.zeros(1, 3, 32, 24)
    crop[0, 0, 0, 0] = 1.0  # top-left marker: the mirror image has it top-right
    sizes = []

    def run(x):
        sizes.append(len(x))
        return torch.stack([A if c[0, 0, 0] == 1 else B for c in x])

    out = pose_heatmaps(crop, run, PoseProtocol(input_size=(32, 24), flip=True))
    assert sizes == [2]
    pair = list(range(17))
    for a, b in COCO_FLIP_PAIRS:
        pair[a], pair[b] = b, a
    want = torch.empty(17, 8, 6)
    for k in range(17):
        for x in range(6):
            want[k, :, x] = (A[k, :, x] + B[pair[k], :, 5 - max(x - 1, 0)]) / 2
    assert torch.equal(out[0], want)


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
    from mp_deploy.tasks.seg import seg_labels

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
