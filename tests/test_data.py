"""Readers on tiny fixtures in the released layouts (made here), custom folders, augmentations, bad samples."""
import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from mp_deploy.data import SkipTally, build_dataset, collate
from mp_deploy.images import write_png
from mp_deploy.data.depth import DepthAugment, augment_depth, depth_strip, kitti, nyu
from mp_deploy.data.keypoints import COCO_KEYPOINTS
from mp_deploy.data.pose import TopDown, coco_keypoints, gaussian_heatmaps, topdown_sample
from mp_deploy.data.seg import ade20k, augment_seg, cityscapes, crop_with_category_rule, SegAugment
from mp_deploy.data.transforms import (affine_matrix, apply_affine, hsv_to_rgb, rescale_size, resize_nearest,
                                       rgb_to_hsv)
from mp_deploy.errors import DataError


def rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def read_back(path):  # what our reader should see for a written image
    return np.asarray(Image.open(path).convert("RGB"))


# ------------------------------------------------------------------ NYUv2 / KITTI

def make_nyu(root):
    """nyu_depth_v2/sync/SCENE/rgb_N.jpg + sync_depth_N.png, official_splits/test/CLASS/..., the lists."""
    depth = {}
    for split, base, scene in (("train", "sync", "kitchen_0028b"), ("test", "official_splits/test", "bathroom")):
        lines = []
        for n in (45, 46):
            d = np.random.default_rng(n).integers(500, 9000, (48, 64)).astype(np.uint16)
            d[0, 0] = 0  # an invalid pixel
            Image.fromarray(rgb(48, 64, n)).save(mkdir(root / "nyu_depth_v2" / base / scene) / f"rgb_{n:05d}.jpg")
            write_png(root / "nyu_depth_v2" / base / scene / f"sync_depth_{n:05d}.png", d)
            depth[(split, n)] = d
            lines.append(f"/{scene}/rgb_{n:05d}.jpg /{scene}/sync_depth_{n:05d}.png 518.8579")
        mkdir(root / "filenames" / "nyudepthv2")
        (root / "filenames" / "nyudepthv2" / f"{split}_list.txt").write_text("\n".join(lines))
    return depth


def mkdir(path):
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_nyu_test_split_reads_png_over_1000(tmp_path):
    depth = make_nyu(tmp_path)
    ds = nyu(tmp_path, "test")
    assert len(ds) == 2 and ds.eval_crop == "eigen" and ds.max_depth == 10.0
    s = ds[0]
    assert s["image"].shape == (3, 48, 64) and s["image"].dtype == torch.float32
    img = read_back(tmp_path / "nyu_depth_v2/official_splits/test/bathroom/rgb_00045.jpg").copy()
    assert torch.equal(s["image"], torch.from_numpy(img).permute(2, 0, 1).float() / 255)
    assert torch.allclose(s["depth"][0], torch.from_numpy(depth[("test", 45)].astype(np.float32)) / 1000)
    assert s["depth"][0, 0, 0] == 0 and s["skipped"] == 0


def test_nyu_train_crop_is_a_window_of_the_gt(tmp_path):
    depth = make_nyu(tmp_path)
    ds = nyu(tmp_path, "train", crop=(32, 40))
    for epoch in range(3):  # flips and crop positions vary; the depth is always a (possibly mirrored) window
        ds.set_epoch(epoch)
        s = ds[1]
        assert s["image"].shape == (3, 32, 40) and s["depth"].shape == (1, 32, 40)
        gt = depth[("train", 46)].astype(np.float32) / 1000
        d = s["depth"][0].numpy()
        found = any(np.array_equal(d, g[y:y + 32, x:x + 40]) for g in (gt, gt[:, ::-1])
                    for y in range(17) for x in range(25))
        assert found


def test_kitti_kb_crop_and_png_over_256(tmp_path):
    base = tmp_path / "kitti"
    img_rel = "raw_data/2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png"
    gt_rel = "data_depth_annotated/val/2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/0000000069.png"
    image = rgb(356, 1220)
    gt = np.random.default_rng(1).integers(0, 20000, (356, 1220)).astype(np.uint16)
    write_png(base / img_rel, image)
    write_png(base / gt_rel, gt)
    lst = mkdir(tmp_path / "filenames" / "eigen_benchmark") / "test_list.txt"
    lst.write_text(f"/{img_rel} /{gt_rel} 721.5377\n/{img_rel} None 721.5377\n")
    ds = kitti(tmp_path, "test")
    assert len(ds) == 1 and ds.eval_crop == "garg" and ds.max_depth == 80.0
    s = ds[0]
    # KB crop: bottom 352 rows, columns from int((1220 - 1216) / 2) = 2
    assert torch.equal(s["image"], torch.from_numpy(image[4:, 2:1218]).permute(2, 0, 1).float() / 255)
    assert torch.allclose(s["depth"][0], torch.from_numpy(gt[4:, 2:1218].astype(np.float32)) / 256)


class Draws:
    """A stand-in for numpy's Generator that answers the draws given, in order, and counts them."""

    def __init__(self, randoms=(), integers=()):
        self.randoms, self.ints, self.calls = list(randoms), list(integers), 0

    def random(self):
        self.calls += 1
        return self.randoms.pop(0)

    def integers(self, lo, hi=None):
        self.calls += 1
        return self.ints.pop(0)


def test_depth_strip_geometry_and_low_byte():
    """The reference's strip with alpha 0.3, beta 0.5, p 0.75 on a 10-wide image: from column int(0.3 * 10) = 3,
    int(max((10 - 3) * 0.5 * 0.75, 1)) = int(2.625) = 2 wide: columns 3 and 4 take the depth's low byte."""
    image = np.full((4, 10, 3), 200, np.uint8)
    raw = np.full((4, 10), 1000.7, np.float32)  # 1000 = 0x3E8: the low byte is 232
    out = depth_strip(image, raw, Draws(randoms=[0.3, 0.5]), 0.75)
    assert (out[:, 3:5] == 232).all()
    assert (np.delete(out, [3, 4], axis=1) == 200).all()
    # the narrowest band is one column: alpha 0.9, beta 0.01 -> int(max(0.0075, 1)) = 1 wide at column 9
    out = depth_strip(image, raw, Draws(randoms=[0.9, 0.01]), 0.75)
    assert (out[:, 9] == 232).all() and (out[:, :9] == 200).all()


def test_depth_augment_is_reproducible_and_crops():
    image, raw = rgb(40, 50), np.random.default_rng(0).random((40, 50)).astype(np.float32) * 5000
    aug = DepthAugment((32, 32))
    a = augment_depth(image, raw, np.random.default_rng(3), aug, strip=True)
    b = augment_depth(image, raw, np.random.default_rng(3), aug, strip=True)
    assert a[0].shape == (32, 32, 3) and a[1].shape == (32, 32)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    with pytest.raises(DataError, match="smaller than the training crop"):
        augment_depth(image, raw, np.random.default_rng(0), DepthAugment((64, 64)), strip=False)


def test_hsv_round_trip_and_opencv_ranges():
    img = rgb(16, 16)
    hsv = rgb_to_hsv(img)
    assert hsv[..., 0].max() < 180
    back = hsv_to_rgb(hsv)
    assert np.abs(back.astype(int) - img).max() <= 5  # hue in 2-degree steps (uint8), as OpenCV
    pure = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    assert rgb_to_hsv(pure)[0, :, 0].tolist() == [0, 60, 120]


# ------------------------------------------------------------------ ADE20K / Cityscapes

def make_ade(root):
    for split in ("training", "validation"):
        for n in (1, 2):
            name = f"ADE_{'train' if split == 'training' else 'val'}_{n:08d}"
            Image.fromarray(rgb(40, 60, n)).save(mkdir(root / "images" / split) / f"{name}.jpg")
            labels = np.zeros((40, 60), np.uint8)
            labels[:, 20:] = 1
            labels[10:, 40:] = 150
            write_png(root / "annotations" / split / f"{name}.png", labels)


def test_ade20k_reduce_zero_label(tmp_path):
    make_ade(tmp_path)
    ds = ade20k(tmp_path, "val")
    s = ds[0]
    assert s["labels"].dtype == torch.int64 and s["labels"].shape == (40, 60)
    assert s["labels"][0, 0] == 255 and s["labels"][0, 30] == 0 and s["labels"][20, 50] == 149
    assert ds.protocol == "ade20k"


def test_ade20k_train_pipeline_pads_with_ignore(tmp_path):
    make_ade(tmp_path)
    aug = SegAugment(scale=(120, 40), crop=(48, 48))  # ratio 0.5-2.0 of a 40x60 image
    ds = ade20k(tmp_path, "train", augment=aug)
    shapes = set()
    for epoch in range(4):
        ds.set_epoch(epoch)
        s = ds[0]
        assert s["image"].shape == (3, 48, 48) and s["labels"].shape == (48, 48)
        assert set(s["labels"].unique().tolist()) <= {0, 149, 255}
        shapes.add(int((s["labels"] == 255).sum()))
    assert len(shapes) > 1  # the resize ratio changes what is padded


def test_seg_resize_follows_mmcv_rule():
    assert rescale_size(480, 640, (2048, 512)) == (512, 683)
    assert rescale_size(1024, 2048, (2048, 1024)) == (1024, 2048)
    assert rescale_size(100, 1000, (2048, 512)) == (205, 2048)  # the long edge binds
    lab = np.arange(12).reshape(3, 4)
    assert resize_nearest(lab, (6, 8))[::2, ::2].tolist() == lab.tolist()


def test_category_rule_redraws_up_to_ten_times():
    labels = np.zeros((20, 100), np.int64)
    labels[:, 50:] = 1  # a 20-wide crop holds both classes under 0.75 only for x in 36..44 (9 of 81 starts)
    good = 0
    for seed in range(50):
        y, x = crop_with_category_rule(labels, (20, 20), 0.75, np.random.default_rng(seed))
        good += 36 <= x <= 44
    assert good >= 25  # 11 draws pass 1 - (72/81)^11 = 73% of the time, one draw 11%
    # one class everywhere: the rule never passes, so the first draw and 10 redraws (2 integers each) are made
    # and the 11th is kept
    draws = Draws(integers=[v for i in range(11) for v in (0, 5 * i)])
    y, x = crop_with_category_rule(np.zeros((20, 100), np.int64), (20, 20), 0.75, draws)
    assert (y, x) == (0, 50) and draws.calls == 22
    # a crop that passes at once is the first draw, no redraw
    draws = Draws(integers=[0, 40, 0, 0])
    assert crop_with_category_rule(labels, (20, 20), 0.75, draws) == (0, 40) and draws.calls == 2


def make_cityscapes(root):
    img = rgb(32, 64)
    write_png(root / "leftImg8bit/val/aachen/aachen_000000_000019_leftImg8bit.png", img)
    write_png(root / "leftImg8bit/val/bonn/bonn_000000_000019_leftImg8bit.png", img)
    train_ids = np.full((32, 64), 13, np.uint8)
    write_png(root / "gtFine/val/aachen/aachen_000000_000019_gtFine_labelTrainIds.png", train_ids)
    label_ids = np.zeros((32, 64), np.uint8)
    label_ids[:, 16:] = 7   # road -> 0
    label_ids[:, 32:] = 26  # car -> 13
    label_ids[:, 48:] = 4   # static -> ignored
    write_png(root / "gtFine/val/bonn/bonn_000000_000019_gtFine_labelIds.png", label_ids)


def test_cityscapes_train_ids_and_label_id_conversion(tmp_path):
    make_cityscapes(tmp_path)
    ds = cityscapes(tmp_path, "val")
    assert len(ds) == 2
    assert (ds[0]["labels"] == 13).all()
    row = ds[1]["labels"][0]
    assert row[0] == 255 and row[20] == 0 and row[40] == 13 and row[60] == 255


# ------------------------------------------------------------------ COCO keypoints

def make_coco(root):
    images, anns = [], []
    for image_id, (h, w) in ((1, (60, 80)), (2, (50, 50))):
        Image.fromarray(rgb(h, w, image_id)).save(mkdir(root / "val2017") / f"{image_id:012d}.jpg")
        images.append({"id": image_id, "file_name": f"{image_id:012d}.jpg", "height": h, "width": w})
    kps = np.zeros((17, 3))
    kps[5] = [30, 20, 2]   # left shoulder
    kps[6] = [40, 20, 1]   # right shoulder, occluded but labelled
    kps[11] = [32, 40, 2]
    anns.append({"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [20, 10, 30, 40], "area": 900,
                 "num_keypoints": 3, "keypoints": kps.ravel().tolist()})
    anns.append({"id": 2, "image_id": 1, "category_id": 1, "iscrowd": 1, "bbox": [0, 0, 10, 10], "area": 100,
                 "num_keypoints": 3, "keypoints": kps.ravel().tolist()})  # crowd: left out
    anns.append({"id": 3, "image_id": 2, "category_id": 1, "iscrowd": 0, "bbox": [5, 5, 20, 20], "area": 300,
                 "num_keypoints": 0, "keypoints": [0] * 51})  # no keypoints: left out
    anns.append({"id": 4, "image_id": 2, "category_id": 1, "iscrowd": 0, "bbox": [60, 60, 20, 20], "area": 300,
                 "num_keypoints": 3, "keypoints": kps.ravel().tolist()})  # box outside the image: left out
    ann = {"images": images, "annotations": anns,
           "categories": [{"id": 1, "name": "person", "keypoints": list(COCO_KEYPOINTS)}]}
    (mkdir(root / "annotations") / "person_keypoints_val2017.json").write_text(json.dumps(ann))


def test_coco_top_down_crop_and_targets(tmp_path):
    make_coco(tmp_path)
    cfg = TopDown(input_size=(64, 48))
    ds = coco_keypoints(tmp_path, "val2017", cfg=cfg)
    assert len(ds) == 1 and ds.coco is not None
    s = ds[0]
    assert s["image"].shape == (3, 64, 48) and s["heatmaps"].shape == (17, 16, 12)
    # box [20, 10, 30, 40] cleaned as mmpose does to [20, 10, 29, 39]: centre (34.5, 29.5), width grown to
    # the 0.75 aspect (29.25), x 1.25
    assert s["center"].tolist() == [34.5, 29.5] and s["scale"].tolist() == pytest.approx([36.5625, 48.75])
    assert s["keypoint_weight"].tolist() == [0] * 5 + [1, 1] + [0] * 4 + [1] + [0] * 5
    ls = s["keypoints"][5]
    expected = ((30 - 34.5) * 48 / 36.5625 + 24, (20 - 29.5) * 64 / 48.75 + 32)
    assert ls[:2].tolist() == pytest.approx(expected) and ls[2] == 2 and s["keypoints"][6, 2] == 1
    peak = divmod(int(s["heatmaps"][5].argmax()), 12)
    assert peak == (int(expected[1] / 4 + 0.5), int(expected[0] / 4 + 0.5)) and s["heatmaps"][5].max() == 1
    assert s["image_id"] == 1 and s["area"] == 900


def test_pose_flip_swaps_left_and_right():
    image = np.zeros((40, 40, 3), np.uint8)
    kps = np.zeros((17, 3))
    kps[5], kps[6] = [10, 20, 2], [26, 22, 2]
    inst = {"file": "x", "image_id": 0, "box": [5, 5, 30, 30], "keypoints": kps, "area": 900}
    from mp_deploy.data.pose import PoseAugment
    flip_only = PoseAugment(shift_prob=0, flip_prob=1.0, half_body_prob=0, scale_factor=0, rot_prob=0)
    cfg = TopDown(input_size=(32, 32))
    plain = topdown_sample(image, inst, cfg, None, np.random.default_rng(0))
    flipped = topdown_sample(image, inst, cfg, flip_only, np.random.default_rng(0))
    # x -> W - 1 - x in the image and the centre with it, labels swapped: the new left shoulder is the old
    # right one mirrored about the crop's centre line (the centre maps to w / 2 = 16)
    f, p = flipped["keypoints"].numpy(), plain["keypoints"].numpy()
    assert f[5, 0] == pytest.approx(32 - p[6, 0]) and f[5, 1] == pytest.approx(p[6, 1])
    assert f[6, 0] == pytest.approx(32 - p[5, 0]) and f[6, 1] == pytest.approx(p[5, 1])


def test_affine_matrix_maps_centre_and_rotates():
    m = affine_matrix((50, 40), (20, 40), 0.0, (10, 20))
    assert apply_affine(np.array([[50.0, 40.0], [40.0, 20.0]]), m).tolist() == [[5.0, 10.0], [0.0, 0.0]]
    r = affine_matrix((0, 0), (10, 10), 90.0, (10, 10))
    # mmpose: the source direction rotate_point((0, -w / 2), r), here pointing right, maps to (0, -w / 2): up
    assert apply_affine(np.array([[1.0, 0.0]]), r)[0] == pytest.approx([5.0, 4.0])


def test_heatmap_weight_zero_outside():
    joints = np.array([[8.0, 8.0], [200.0, 8.0]])
    hm, w = gaussian_heatmaps(joints, np.array([1, 1]), (8, 8), 1.0, 4)
    assert w.tolist() == [1, 0] and hm[1].max() == 0 and hm[0, 2, 2] == 1


# ------------------------------------------------------------------ custom folders

def test_custom_folders(tmp_path):
    depth_root, seg_root, pose_root = tmp_path / "d", tmp_path / "s", tmp_path / "p"
    mkdir(depth_root).joinpath("dataset.json").write_text(json.dumps({"task": "depth", "depth_scale": 256}))
    Image.fromarray(rgb(20, 30)).save(mkdir(depth_root / "val/images") / "a.png")
    write_png(depth_root / "val/depth/a.png", np.full((20, 30), 512, np.uint16))
    ds = build_dataset("folder", "val", root=depth_root)
    assert ds[0]["depth"].unique().tolist() == [2.0]

    mkdir(seg_root).joinpath("dataset.json").write_text(json.dumps(
        {"task": "seg", "classes": ["bg", "cat"], "ignore_index": 7}))
    Image.fromarray(rgb(20, 30)).save(mkdir(seg_root / "val/images") / "a.jpg")
    lab = np.zeros((20, 30), np.uint8)
    lab[:, 10:] = 1
    lab[:, 20:] = 7
    write_png(seg_root / "val/labels/a.png", lab)
    s = build_dataset("folder", "val", task="seg", root=seg_root)[0]
    assert s["labels"][0, [0, 15, 25]].tolist() == [0, 1, 255]

    mkdir(pose_root).joinpath("dataset.json").write_text(json.dumps({"task": "pose", "input_size": [32, 24]}))
    Image.fromarray(rgb(40, 40)).save(mkdir(pose_root / "val/images") / "a.jpg")
    kps = [[0, 0, 0]] * 17
    kps[0] = [20, 10, 2]
    kps[15] = [18, 35, 2]
    (mkdir(pose_root / "val/keypoints") / "a.json").write_text(json.dumps({"people": [{"keypoints": kps}]}))
    p = build_dataset("folder", "val", root=pose_root)[0]
    assert p["image"].shape == (3, 32, 24) and p["keypoint_weight"][[0, 15]].tolist() == [1, 1]
    # no box given: the keypoints' extent grown by 10% on each side
    assert p["box"].tolist() == pytest.approx([17.8, 7.5, 2.4, 30.0])
    with pytest.raises(DataError, match="task is 'pose', expected 'depth'"):
        from mp_deploy.data.depth import depth_folder
        depth_folder(pose_root, "val")


# ------------------------------------------------------------------ bad samples

def test_bad_samples_are_skipped_counted_and_named(tmp_path, caplog):
    make_nyu(tmp_path)
    test_dir = tmp_path / "nyu_depth_v2/official_splits/test/bathroom"
    (test_dir / "rgb_00045.jpg").write_bytes(b"not a jpeg")
    write_png(test_dir / "sync_depth_00046.png", np.zeros((48, 64), np.uint16))  # no valid depth
    evaluation = nyu(tmp_path, "test")
    with caplog.at_level(logging.WARNING, logger="mp_deploy.data"):
        a, b = evaluation[0], evaluation[1]
    assert "image" not in a and "image" not in b  # evaluation: marked, never replaced
    assert "rgb_00045.jpg: cannot read image" in caplog.text and "no valid depth" in caplog.text
    batch = collate([a, b])
    assert batch["size"] == 0 and int(batch["skipped"]) == 2

    # training: substituted by the next index, the count travels with the sample (through worker processes)
    train = nyu(tmp_path, "train", crop=(32, 32))
    train_dir = tmp_path / "nyu_depth_v2/sync/kitchen_0028b"
    write_png(train_dir / "sync_depth_00045.png", np.ones((40, 64), np.uint16))  # size mismatch
    loader = torch.utils.data.DataLoader(train, batch_size=2, collate_fn=collate, num_workers=1)
    tally = SkipTally()
    for batch in loader:
        assert batch["size"] == 2 and batch["image"].shape == (2, 3, 32, 32)
        tally.update(batch)
    assert tally.count == 1 and "sync_depth_00045.png: size 64x40 differs" in tally.line()


def test_all_bad_raises(tmp_path):
    make_nyu(tmp_path)
    for n in (45, 46):
        (tmp_path / f"nyu_depth_v2/sync/kitchen_0028b/rgb_{n:05d}.jpg").unlink()
    with pytest.raises(DataError, match="bad samples in a row"):
        nyu(tmp_path, "train", crop=(32, 32))[0]


def test_same_seed_same_sample_new_epoch_new_augmentation(tmp_path):
    make_ade(tmp_path)
    aug = SegAugment(scale=(120, 40), crop=(32, 32))
    ds = ade20k(tmp_path, "train", augment=aug)
    a, b = ds[1], ds[1]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["labels"], b["labels"])
    ds.set_epoch(5)
    assert not torch.equal(ds[1]["image"], a["image"])


def test_augment_seg_keeps_labels_aligned():
    # the image's red channel encodes the class; after resize/crop/flip the labels must still match it
    labels = np.zeros((40, 60), np.int64)
    labels[:, 30:] = 1
    image = np.zeros((40, 60, 3), np.uint8)
    image[..., 0] = labels * 200
    aug = SegAugment(scale=(120, 40), crop=(32, 32), brightness_delta=0, contrast_range=(1, 1),
                     saturation_range=(1, 1), hue_delta=1)
    for seed in range(5):
        img, lab = augment_seg(image, labels, np.random.default_rng(seed), aug)
        keep = (lab != 255)
        red = img[..., 0][keep]
        # bilinear image edges may blend one pixel; away from the boundary the colour must agree
        agree = ((red > 100) == (lab[keep] == 1)).mean()
        assert agree > 0.9
