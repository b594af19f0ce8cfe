"""The synthetic scene generator: exact depth, labels, figures' keypoints, determinism, the task datasets."""
import numpy as np
import pytest
import torch

from mp_deploy.data import build_dataset, collate
from mp_deploy.data.figures import sample_figure
from mp_deploy.data.render import PLAIN, Camera, Lighting, Material
from mp_deploy.data.synthetic import (CLASSES, FIGURE, FLOOR, SPHERE, WALL, MAX_DEPTH, MIN_DEPTH, Scene, render,
                                      synthetic_scene)


def empty_room(camera, objects=(), figures=(), n_materials=3):
    lo, hi = np.array([-5.0, 0.0, -1.0]), np.array([5.0, 4.0, 6.0])
    mats = [Material((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), PLAIN) for _ in range(n_materials)]
    return Scene(camera, (lo, hi), mats, (0, 1, 2), list(objects), list(figures), Lighting(np.array([0, 3.9, 2.0])))


def test_depth_is_the_distance_along_the_optical_axis():
    # looking straight at the far wall (z = 6) from z = 1: every wall pixel is 5 m away along the axis
    cam = Camera.look([0.0, 2.0, 1.0], 0.0, 0.0, 0.0, 40.0)
    out = render(empty_room(cam), (16, 16))
    assert (out.labels == WALL).all()
    assert np.allclose(out.depth, 5.0, atol=1e-5)
    # a sphere of radius 0.5 centred 3 m ahead: its nearest point is 2.5 m away at the image centre
    sphere = {"kind": "sphere", "material": 0, "center": np.array([0.0, 2.0, 4.0]), "radius": 0.5}
    out = render(empty_room(cam, [sphere]), (17, 17))
    assert out.labels[8, 8] == SPHERE and out.depth[8, 8] == pytest.approx(2.5, abs=1e-5)
    assert out.instances[8, 8] == 1 and out.labels[0, 0] == WALL


def test_floor_depth_matches_the_pinhole_formula():
    cam = Camera.look([0.0, 1.5, 0.0], 0.0, -20.0, 0.0, 60.0)
    h = w = 32
    out = render(empty_room(cam), (h, w))
    f = cam.focal(w)
    v = h - 1  # bottom row, pixel centre (v + 0.5) in continuous coordinates
    ray = cam.forward + (-(v + 0.5 - h / 2) / f) * cam.up + (0.5 / f) * cam.right
    t = -1.5 / ray[1]  # where the ray meets y = 0, in units of its un-normalised length (depth)
    assert out.labels[v, w // 2] == FLOOR
    assert out.depth[v, w // 2] == pytest.approx(t, rel=1e-5)


def test_scenes_are_deterministic_in_range_and_varied():
    a, b = synthetic_scene(0, 3, (48, 64)), synthetic_scene(0, 3, (48, 64))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.depth, b.depth)
    assert not np.array_equal(a.image, synthetic_scene(0, 4, (48, 64)).image)
    assert not np.array_equal(a.image, synthetic_scene(1, 3, (48, 64)).image)
    seen = set()
    for i in range(12):
        s = synthetic_scene(0, i, (48, 48))
        assert s.image.dtype == np.uint8 and s.image.shape == (48, 48, 3)
        assert MIN_DEPTH <= s.depth.min() and s.depth.max() <= MAX_DEPTH
        seen |= set(np.unique(s.labels).tolist())
    assert seen == set(range(len(CLASSES)))


def test_figure_keypoints_left_is_the_figures_own_left():
    # a figure 3 m ahead facing the camera (yaw pi: it looks towards -z): its left side appears on image right
    cam = Camera.look([0.0, 1.2, 0.0], 0.0, 0.0, 0.0, 60.0)
    fig = sample_figure(np.random.default_rng(0), (0.0, 3.0), np.pi)
    out = render(empty_room(cam, figures=[fig], n_materials=4), (96, 96))
    kps = out.people[0]["keypoints"]
    assert kps.shape == (17, 3)
    assert kps[5, 0] > kps[6, 0] and kps[11, 0] > kps[12, 0]  # left shoulder, left hip: right of the image
    assert kps[0, 1] < kps[5, 1] < kps[11, 1] < kps[15, 1]  # nose above shoulders above hips above ankles
    x, y, w, h = out.people[0]["box"]
    inside = kps[kps[:, 2] > 0]
    assert (inside[:, 0] >= x - 2).all() and (inside[:, 0] <= x + w + 1).all()
    assert out.people[0]["area"] == (out.labels == FIGURE).sum()


def test_visibility_flags_occlusion_and_outside():
    cam = Camera.look([0.0, 1.2, 0.0], 0.0, 0.0, 0.0, 60.0)
    fig = sample_figure(np.random.default_rng(1), (0.0, 3.0), np.pi)
    wall = {"kind": "box", "material": 0, "center": np.array([0.0, 0.5, 2.0]), "half": np.array([2.0, 0.5, 0.05]),
            "yaw": 0.0}  # a low wall hides the legs
    out = render(empty_room(cam, [wall], [fig], n_materials=4), (96, 96))
    flags = out.people[0]["keypoints"][:, 2]
    assert flags[0] == 2 and (flags[[13, 14, 15, 16]] == 1).all()
    side = sample_figure(np.random.default_rng(1), (3.5, 1.0), np.pi)  # far off to the side: out of view
    out = render(empty_room(cam, figures=[side], n_materials=4), (32, 32))
    assert (out.people[0]["keypoints"][:, 2] == 0).all()


@pytest.mark.parametrize("task,key,shape", [("depth", "depth", (1, 32, 48)), ("seg", "labels", (32, 48))])
def test_dense_datasets(task, key, shape):
    ds = build_dataset("synthetic", "train", task=task, size=(32, 48), length=4)
    batch = collate([ds[i] for i in range(2)])
    assert batch["image"].shape == (2, 3, 32, 48) and batch[key].shape == (2, *shape)
    assert 0 <= batch["image"].min() and batch["image"].max() <= 1
    if task == "seg":
        assert batch[key].dtype == torch.int64 and set(batch[key].unique().tolist()) <= set(range(7)) | {255}
    else:
        assert (batch[key] > 0).all()
    held_out = build_dataset("synthetic", "val", task=task, size=(32, 48))
    assert len(held_out) == 200 and not torch.equal(held_out[0]["image"], ds[0]["image"])


def test_pose_dataset_sample_format():
    ds = build_dataset("synthetic", "val", task="pose", input_size=(64, 48))
    s = ds[0]
    assert s["image"].shape == (3, 64, 48) and s["heatmaps"].shape == (17, 16, 12)
    assert s["keypoint_weight"].sum() >= 6 and s["keypoints"].shape == (17, 3)
    assert s["image_keypoints"].shape == (17, 3) and s["area"] > 0 and s["image_id"] == 0
    hot = s["keypoint_weight"] > 0
    assert torch.allclose(s["heatmaps"][hot].amax(dim=(1, 2)), torch.ones(int(hot.sum())))
