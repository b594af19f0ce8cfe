"""The evaluation-only scene family (mp_deploy.data.unseen): determinism, ranges, label / instance / keypoint
consistency, the people guarantees and analytic depth checks computed here from the scene description."""
import numpy as np
import pytest

from mp_deploy.data import unseen
from mp_deploy.data.keypoints import COCO_KEYPOINTS
from mp_deploy.data.synthetic import CLASSES, MAX_DEPTH, MIN_DEPTH
from mp_deploy.data.unseen import unseen_layout, unseen_scene
from mp_deploy.data.unseen_geometry import UnseenCamera
from mp_deploy.data.unseen_people import build_person
from mp_deploy.errors import DataError

FLOOR, WALL, CEILING, FIGURE = (CLASSES.index(c) for c in ("floor", "wall", "ceiling", "figure"))
ROOM = {FLOOR, WALL, CEILING}
SIDE = 64
L_SH, R_SH = COCO_KEYPOINTS.index("left_shoulder"), COCO_KEYPOINTS.index("right_shoulder")
L_HIP, R_HIP = COCO_KEYPOINTS.index("left_hip"), COCO_KEYPOINTS.index("right_hip")


@pytest.fixture(scope="module")
def scenes():
    """(scene, rendering) pairs: plain draws (people drawn by chance) and people draws."""
    plain = [unseen_layout(5, i, (SIDE, SIDE)) for i in range(14)]
    people = [unseen_layout(6, i, (96, 96), people=True) for i in range(8)]
    return plain + people


def _rays(cam, H, W):
    """Camera-frame directions (x, y, 1) per pixel: x right, y up; the pixel centre at integer coordinates."""
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    return (u - cam.cx) / cam.focal, -(v - cam.cy) / cam.focal


def _rotation(yaw, pitch, roll):
    """The documented convention, written out here: yaw about +y (0 looks along +z), then pitch (positive looks
    up), then roll about the optical axis."""
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    Rx = np.array([[1, 0, 0], [0, cp, sp], [0, -sp, cp]])
    Rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return Ry @ Rx @ Rz


def test_scenes_are_pure_functions_of_their_arguments():
    a, b = unseen_scene(0, 3, (48, 64)), unseen_scene(0, 3, (48, 64))
    for f in ("image", "depth", "labels", "instances"):
        assert np.array_equal(getattr(a, f), getattr(b, f))
    assert len(a.people) == len(b.people)
    for p, q in zip(a.people, b.people):
        assert np.array_equal(p["keypoints"], q["keypoints"]) and p["box"] == q["box"]
    assert a.image.shape == (48, 64, 3)
    assert not np.array_equal(a.image, unseen_scene(0, 4, (48, 64)).image)
    assert not np.array_equal(a.image, unseen_scene(1, 3, (48, 64)).image)


def test_fields_and_depth_range(scenes):
    layouts, labels = set(), set()
    for sc, r in scenes:
        H, W = r.depth.shape
        assert r.image.dtype == np.uint8 and r.image.shape == (H, W, 3)
        assert r.depth.dtype == np.float32 and np.isfinite(r.depth).all()
        assert MIN_DEPTH <= r.depth.min() and r.depth.max() <= MAX_DEPTH
        assert r.labels.dtype == np.uint8 and r.labels.max() < len(CLASSES)
        assert r.instances.dtype == np.int32 and r.instances.min() >= 0
        assert r.image.std() > 5  # not a flat frame
        layouts.add(sc.layout)
        labels |= set(np.unique(r.labels).tolist())
    assert len(layouts) >= 4 and labels == set(range(len(CLASSES)))


def test_labels_and_instances_agree(scenes):
    for sc, r in scenes:
        room = r.instances == 0
        assert set(np.unique(r.labels[room]).tolist()) <= ROOM
        assert not np.isin(r.labels[~room], list(ROOM)).any()
        for inst in np.unique(r.instances[~room]):
            assert len(np.unique(r.labels[r.instances == inst])) == 1, f"{sc.layout}: instance {inst}"
        people = {p["instance"]: p for p in r.people}
        assert set(np.unique(r.instances[r.labels == FIGURE]).tolist()) == set(people)
        for inst, p in people.items():
            ys, xs = np.nonzero(r.instances == inst)
            assert p["area"] == len(xs) > 0
            assert p["box"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert p["keypoints"].shape == (17, 3)


def test_keypoint_flags(scenes):
    seen = 0
    for sc, r in scenes:
        H, W = r.depth.shape
        for p in r.people:
            x, y, f = p["keypoints"].T
            assert set(np.unique(f).tolist()) <= {0.0, 1.0, 2.0}
            inside = (x >= -0.5) & (x < W - 0.5) & (y >= -0.5) & (y < H - 0.5)
            assert inside[f > 0].all()
            for k in np.nonzero(f == 2)[0]:  # a visible keypoint's pixel shows its own figure
                assert r.instances[int(np.floor(y[k] + 0.5)), int(np.floor(x[k] + 0.5))] == p["instance"]
                seen += 1
    assert seen > 50


def test_people_guarantees(scenes):
    for sc, r in scenes[14:]:
        H, W = r.depth.shape
        assert 1 <= len(r.people) <= 3
        p0 = r.people[0]
        assert p0["instance"] == sc.people[0].instance
        assert p0["area"] >= 0.008 * H * W and (p0["keypoints"][:, 2] > 0).sum() >= 6
        ys, xs = np.nonzero(r.instances == p0["instance"])
        assert 0.2 * W <= xs.mean() <= 0.8 * W and 0.2 * H <= ys.mean() <= 0.8 * H


def test_floor_depth_follows_from_camera_height_pitch_and_roll(scenes):
    """z-depth of the floor plane y = 0 seen from height h: the direction (x, y, 1) rises by
    cos(pitch) (x sin(roll) + y cos(roll)) + sin(pitch) per metre of depth, so depth = -h / rise."""
    exact = 0
    for sc, r in scenes:
        cam = sc.camera
        H, W = r.depth.shape
        x, y = _rays(cam, H, W)
        rise = np.cos(cam.pitch) * (x * np.sin(cam.roll) + y * np.cos(cam.roll)) + np.sin(cam.pitch)
        with np.errstate(divide="ignore"):
            ground = np.where(rise < 0, -cam.position[1] / rise, np.inf)
        # nothing is ever seen below the floor
        assert (r.depth <= ground * (1 + 1e-5) + 1e-5).all()
        floor = (r.labels == FLOOR) & (r.instances == 0)
        if not sc.room.platforms:  # then every floor pixel lies on y = 0
            np.testing.assert_allclose(r.depth[floor], ground[floor], rtol=1e-5)
            exact += int(floor.sum())
        else:  # platforms and steps stand above the floor: nearer
            assert (r.depth[floor] <= ground[floor] * (1 + 1e-5)).all()
    assert exact > 2000


def test_walls_and_ceilings_lie_on_the_room_planes(scenes):
    """Back-projected with the z-depth, wall and ceiling pixels land on one of the room's planes (n . p = c)."""
    for sc, r in scenes:
        cam = sc.camera
        H, W = r.depth.shape
        x, y = _rays(cam, H, W)
        R = _rotation(cam.yaw, cam.pitch, cam.roll)
        d = r.depth.astype(np.float64)
        cam_pts = np.stack([x * d, y * d, d], axis=-1)
        P = cam_pts @ R.T + cam.position
        for label in (WALL, CEILING):
            m = (r.labels == label) & (r.instances == 0)
            if not m.any():
                continue
            planes = [p for p in sc.room.planes if p.label == label]
            off = np.min([np.abs(P[m] @ p.n - p.c) for p in planes], axis=0)
            assert off.max() < 1e-3 * d[m].max(), (sc.layout, label, off.max())


def test_left_is_the_figures_own_left():
    cam = UnseenCamera(np.array([0.0, 1.0, 0.0]), 0.0, 0.0, 0.0, 60.0, 96, 96)
    for seed in range(5):
        # 3 m ahead, facing the camera (yaw pi looks along -z): the figure's left appears on the image's right
        person = build_person(np.random.default_rng(seed), (0.0, 3.0), np.pi, 1)
        u, v, _ = cam.project(person.keypoints).T
        assert u[L_SH] > u[R_SH] and u[L_HIP] > u[R_HIP]
        assert v[0] < v[L_SH] < v[L_HIP] < v[COCO_KEYPOINTS.index("left_ankle")]  # nose .. ankle downwards
        assert abs(person.keypoints[:, 1].min() - 0.039 * person.height) < 0.1  # standing on the floor
        back = build_person(np.random.default_rng(seed), (0.0, 3.0), 0.0, 1)  # seen from behind: mirrored
        ub = cam.project(back.keypoints)[:, 0]
        assert ub[L_SH] < ub[R_SH]


def test_errors():
    with pytest.raises(DataError):
        unseen_scene(0, 0, (8, 8))
    old = unseen.MAX_ATTEMPTS
    try:
        unseen.MAX_ATTEMPTS = 0
        with pytest.raises(DataError):
            unseen_scene(0, 0, (32, 32))
    finally:
        unseen.MAX_ATTEMPTS = old
