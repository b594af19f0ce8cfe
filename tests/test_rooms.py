"""The room scene generator (mp_deploy.data.rooms): exact depth and labels, determinism, keypoint flags, people."""
import numpy as np
import pytest

from mp_deploy.data.render import Camera
from mp_deploy.data.rooms import RoomScene, draw_room, render_room, room_scene
from mp_deploy.data.rooms_geometry import Ball, Box, Capsule, Cylinder, Thing
from mp_deploy.data.rooms_layout import Flat, Plan, union_walls
from mp_deploy.data.rooms_look import Finish, Light, Sensor
from mp_deploy.data.rooms_people import sample_person
from mp_deploy.data.synthetic import BOX, CEILING, CLASSES, CYLINDER, FIGURE, FLOOR, MAX_DEPTH, MIN_DEPTH, SPHERE, WALL

ROOM_LABELS = {FLOOR, WALL, CEILING}
OBJECT_LABELS = {BOX, SPHERE, CYLINDER}


def pixel_rays(cam, h, w) -> np.ndarray:
    """Un-normalised directions through pixel centres, D . forward = 1, from the camera's own vectors and field
    of view (written here, not taken from Camera.directions)."""
    f = (w / 2) / np.tan(np.radians(cam.hfov) / 2)
    u = (np.arange(w) + 0.5 - w / 2) / f
    v = (np.arange(h) + 0.5 - h / 2) / f
    return cam.forward + u[None, :, None] * cam.right - v[:, None, None] * cam.up  # (h, w, 3)


def project(cam, points, h, w):
    """Pixel coordinates (integer = pixel centre) and depth of world points, from the camera's vectors."""
    f = (w / 2) / np.tan(np.radians(cam.hfov) / 2)
    rel = points - cam.position
    z = rel @ cam.forward
    return np.stack([w / 2 + f * (rel @ cam.right) / z - 0.5, h / 2 - f * (rel @ cam.up) / z - 0.5], 1), z


def box_room(cam, things=(), width=4.0, length=6.0, height=3.0) -> RoomScene:
    """A plain box room [0, width] x [0, length], grey, one light, no sensor effects."""
    rects = [(0.0, 0.0, width, length)]
    plan = Plan("room", rects, height, union_walls(rects))
    grey = np.full(3, 0.5, np.float32)
    materials = [Finish(grey, grey)]
    surfaces = [Flat((0.0, 1.0, 0.0), FLOOR, 0), Flat((0.0, -1.0, 0.0), CEILING, 0)]
    for wall in plan.walls:
        n = np.zeros(3)
        n[wall.axis] = wall.inward
        wall.sid = len(surfaces)
        surfaces.append(Flat(tuple(n), WALL, 0))
    things = list(things)
    for k, thing in enumerate(things, start=1):
        thing.instance = k
    light = Light(np.array([width / 2, height - 0.2, length / 2]), 5.0, np.ones(3, np.float32))
    sensor = Sensor(0.2, np.ones(3, np.float32), 0.0, 0.0, None, 0.0, 0.0, 2.2)
    return RoomScene(plan, cam, materials, surfaces, [], things, [], [light], np.full(3, 0.2, np.float32), None,
                     sensor)


def test_known_geometry_depth_labels_and_instances():
    # camera 1.5 m up at z = 0.5 looking along +z at the far wall z = 6: the wall is 5.5 m away along the axis
    cam = Camera.look([2.0, 1.5, 0.5], 0.0, 0.0, 0.0, 40.0)
    out = render_room(box_room(cam), (17, 17))
    assert out.labels[8, 8] == WALL and out.depth[8, 8] == pytest.approx(5.5, abs=1e-4)
    assert (out.instances == 0).all()
    # a ball of radius 0.5 centred 3 m ahead: its nearest point is 2.5 m away at the image centre; a box and a
    # cylinder stand on the floor at either side
    things = [Thing(SPHERE, [Ball([2.0, 1.5, 3.5], 0.5)]),
              Thing(BOX, [Box([1.0, 0.5, 4.0], [0.3, 0.5, 0.3])]),
              Thing(CYLINDER, [Cylinder([3.0, 4.0], 0.0, 1.0, 0.3)])]
    out = render_room(box_room(cam, things), (33, 33))
    assert out.labels[16, 16] == SPHERE and out.instances[16, 16] == 1
    assert out.depth[16, 16] == pytest.approx(2.5, abs=1e-4)
    (bu, bv), (cu, cv) = [np.rint(project(cam, np.array([p]), 33, 33)[0][0]).astype(int)
                          for p in ([1.0, 0.5, 3.7], [3.0, 0.5, 3.7])]
    assert out.labels[bv, bu] == BOX and out.instances[bv, bu] == 2
    assert out.depth[bv, bu] == pytest.approx(3.2, abs=0.05)  # the box's front face, z = 3.7
    assert out.labels[cv, cu] == CYLINDER and out.instances[cv, cu] == 3
    assert out.depth[cv, cu] == pytest.approx(3.2, abs=0.1)  # the cylinder's front, z = 3.7 at its axis


def test_scenes_are_deterministic_and_varied():
    a, b = room_scene(0, 3, (48, 64)), room_scene(0, 3, (48, 64))
    for field in ("image", "depth", "labels", "instances"):
        assert np.array_equal(getattr(a, field), getattr(b, field))
    assert len(a.people) == len(b.people)
    for p, q in zip(a.people, b.people):
        assert np.array_equal(p["keypoints"], q["keypoints"]) and p["box"] == q["box"]
    assert not np.array_equal(a.depth, room_scene(0, 4, (48, 64)).depth)
    assert not np.array_equal(a.depth, room_scene(1, 3, (48, 64)).depth)


@pytest.mark.parametrize("people", [False, True])
def test_depth_range_dtypes_and_label_instance_consistency(people):
    seen = set()
    for i in range(8):
        s = room_scene(5, i, (40, 48), people)
        assert s.image.dtype == np.uint8 and s.image.shape == (40, 48, 3)
        assert s.depth.dtype == np.float32 and s.depth.shape == (40, 48)
        assert s.labels.dtype == np.uint8 and s.instances.dtype == np.int32
        assert MIN_DEPTH <= s.depth.min() and s.depth.max() <= MAX_DEPTH
        assert s.labels.max() < len(CLASSES)
        person_ids = {p["instance"] for p in s.people}
        room = s.instances == 0
        assert set(np.unique(s.labels[room]).tolist()) <= ROOM_LABELS
        figure = np.isin(s.instances, list(person_ids))
        assert np.array_equal(figure, s.labels == FIGURE)
        things = ~room & ~figure
        assert set(np.unique(s.labels[things]).tolist()) <= OBJECT_LABELS
        if person_ids:  # people are numbered after the objects
            assert min(person_ids) > s.instances[things].max(initial=0)
        seen |= set(np.unique(s.labels).tolist())
    assert {FLOOR, WALL} <= seen


def test_floor_depth_is_the_floor_plane_depth():
    for i in range(4):
        scene, out = draw_room(11, i, (36, 44))
        cam = scene.camera
        D = pixel_rays(cam, 36, 44)
        floor = out.labels == FLOOR
        assert floor.any()
        expected = -cam.position[1] / D[..., 1]  # where the ray meets y = 0, in units of D (= depth)
        np.testing.assert_allclose(out.depth[floor], expected[floor], rtol=2e-5, atol=2e-5)
        # everything else seen looking down is in front of the floor plane
        other = (out.labels != FLOOR) & (D[..., 1] < 0)
        assert (out.depth[other] <= expected[other] * (1 + 1e-5)).all()


def check_person(out, scene, person_index, h, w):
    """Flags and boxes as the rules say, recomputed from the camera and the people's keypoints."""
    person = out.people[person_index]
    truth = scene.people[person_index]
    inst = person["instance"]
    kps = person["keypoints"]
    assert kps.shape == (17, 3) and set(np.unique(kps[:, 2]).tolist()) <= {0.0, 1.0, 2.0}
    uv, z = project(scene.camera, truth.keypoints, h, w)
    px, py = np.rint(uv[:, 0]).astype(int), np.rint(uv[:, 1]).astype(int)
    inside = (z > 0) & (px >= 0) & (px < w) & (py >= 0) & (py < h)
    assert np.array_equal(kps[:, 2] > 0, inside)
    np.testing.assert_allclose(kps[inside, :2], uv[inside], atol=1e-6)
    for k in np.nonzero(inside)[0]:
        own = out.instances[py[k], px[k]] == inst
        in_front = out.depth[py[k], px[k]] >= z[k] - truth.tolerance[k]
        assert kps[k, 2] == (2 if own and in_front else 1)
        if kps[k, 2] == 2:
            assert out.labels[py[k], px[k]] == FIGURE
    ys, xs = np.nonzero(out.instances == inst)
    assert person["area"] == len(xs)
    if len(xs):
        assert person["box"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]


def test_people_scenes_guarantees_and_keypoint_flags():
    h = w = 64
    for i in range(8):
        scene, out = draw_room(3, i, (h, w), people=True)
        assert 1 <= len(out.people) <= 3 and len(out.people) == len(scene.people)
        main = out.people[0]
        assert (main["keypoints"][:, 2] > 0).sum() >= 6
        assert main["area"] >= 0.01 * h * w
        ys, xs = np.nonzero(out.instances == main["instance"])
        assert 0.2 * w < xs.mean() < 0.8 * w and 0.2 * h < ys.mean() < 0.8 * h  # near the centre
        for k in range(len(out.people)):
            check_person(out, scene, k, h, w)


def test_people_without_the_flag():
    counts = set()
    for i in range(10):
        scene, out = draw_room(4, i, (32, 32))
        counts.add(len(out.people))
        for k in range(len(out.people)):
            check_person(out, scene, k, 32, 32)
    assert counts <= {0, 1, 2} and len(counts) > 1


def test_person_proportions_and_sides():
    materials = []

    def add(finish):
        materials.append(finish)
        return len(materials) - 1

    person = sample_person(np.random.default_rng(0), add, (0.0, 3.0), np.pi, pose="stand", height=1.75)
    kp = person.keypoints
    parts = person.thing.parts
    assert min(p.lowest for p in parts) == pytest.approx(0.0, abs=1e-9)  # standing on the floor
    top = max(p.bound[0][1] + p.bound[1] for p in parts if isinstance(p, Ball))
    head = next(p for p in parts if isinstance(p, Ball))  # the face sphere (the hair cap comes after it)
    assert 1 / 8.5 < (top - (head.center[1] - head.radius)) / 1.75 < 1 / 7  # head ~ 1/7.5 of the height
    assert 0.95 * 1.75 < top < 1.02 * 1.75
    # facing -z, seen from z = 0 looking +z: the person's left is on the image's right
    cam = Camera.look([0.0, 1.0, 0.0], 0.0, 0.0, 0.0, 60.0)
    uv, _ = project(cam, kp, 96, 96)
    assert uv[5, 0] > uv[6, 0] and uv[11, 0] > uv[12, 0] and uv[15, 0] > uv[16, 0]
    assert uv[0, 1] < uv[5, 1] < uv[11, 1] < uv[13, 1] < uv[15, 1]  # nose, shoulders, hips, knees, ankles
    assert 0.18 < np.linalg.norm(kp[5] - kp[6]) / 1.75 < 0.25  # shoulder joints ~ 0.2 of the height apart
    assert all(isinstance(p, (Ball, Capsule)) for p in parts)
