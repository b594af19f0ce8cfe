"""Procedural synthetic scenes with exact depth, class labels and people keypoints (tests and the demo models).

`synthetic_scene(seed, index, size)` is a pure function of its arguments: a closed room (floor, four walls,
ceiling) with boxes, spheres, cylinders and articulated capsule figures, solid procedural textures (plain,
checker, stripes, noise), a ceiling lamp with Lambertian + ambient shading, a camera with a random pose and field
of view. Every depth lies in [MIN_DEPTH, MAX_DEPTH] metres (NYU-like); a draw that leaves it is redrawn.

Classes (index = label value): see CLASSES. People carry the 17 COCO keypoints with COCO visibility flags:
2 = seen, 1 = inside the image but hidden (by another object or the figure itself), 0 = outside the image.
Boxes are the tight boxes of each figure's visible pixels, [x, y, w, h] with integer = pixel centre.

The datasets render at the size asked and yield samples in the task's format (docs/data.md).
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np
import torch

from mp_deploy.data.base import MAX_SIDE, SampleDataset
from mp_deploy.images import to_image_tensor
from mp_deploy.data.depth import DepthAugment, augment_depth
from mp_deploy.data.figures import Figure, sample_figure
from mp_deploy.data.keypoints import COCO_KEYPOINTS
from mp_deploy.data.pose import PoseAugment, TopDown, topdown_sample
from mp_deploy.data.render import (CHECKER, NOISE, PLAIN, STRIPES, Camera, Hits, Lighting, Material, albedo,
                                   box_axes, capsule, capsule_normal, cylinder, oriented_box, rays_near, room_exit,
                                   shade, sphere)
from mp_deploy.data.seg import SegAugment, augment_seg
from mp_deploy.errors import DataError, UsageError

from mp_deploy.data.scene import (BOX, CEILING, CLASSES, CYLINDER, FIGURE, FLOOR, MAX_DEPTH, MIN_DEPTH,  # noqa: F401
                                  SPHERE, WALL, Rendering)

DEPTH_PNG_SCALE = 1000.0  # the depth strip augmentation sees NYU-like PNG units (millimetres)
MAX_REDRAWS = 20


@dataclass
class Scene:
    camera: Camera
    room: tuple  # (lo, hi) corners
    materials: list
    room_materials: tuple  # floor, wall, ceiling
    objects: list  # dicts: kind, material, params
    figures: list[Figure]
    light: Lighting


# ------------------------------------------------------------------ sampling

def random_material(rng: np.random.Generator, light: bool = False) -> Material:
    hue, sat = rng.random(), rng.uniform(0.15, 0.8)
    val = rng.uniform(0.6, 0.95) if light else rng.uniform(0.3, 0.9)
    c1 = colorsys.hsv_to_rgb(hue, sat, val)
    c2 = colorsys.hsv_to_rgb((hue + rng.uniform(-0.15, 0.15)) % 1, sat * rng.uniform(0.3, 1.0),
                             val * rng.uniform(0.4, 0.8))
    pattern = int(rng.choice([PLAIN, CHECKER, STRIPES, NOISE], p=[0.25, 0.25, 0.25, 0.25]))
    axis = rng.normal(size=3)
    return Material(c1, c2, pattern, float(rng.uniform(0.08, 0.6)), tuple(axis / np.linalg.norm(axis)))


def sample_scene(rng: np.random.Generator, num_figures: tuple[int, int] = (0, 2), focus_figure: bool = False) -> Scene:
    """A random room. `focus_figure` places the first figure 2-4.2 m ahead near the view's centre (pose data)."""
    width, length, height = rng.uniform(3.0, 6.5), rng.uniform(3.5, 6.5), rng.uniform(2.5, 3.2)
    lo, hi = np.array([-width / 2, 0.0, 0.0]), np.array([width / 2, height, length])
    hfov = rng.uniform(50, 75)
    cam_pos = np.array([rng.uniform(lo[0] + 0.9, hi[0] - 0.9), rng.uniform(1.0, 1.7), rng.uniform(0.5, 1.0)])
    camera = Camera.look(cam_pos, rng.uniform(-25, 25), rng.uniform(-15, 5), rng.uniform(-3, 3), hfov)
    materials = [random_material(rng), random_material(rng), random_material(rng, light=True)]
    materials[2].pattern = PLAIN if rng.random() < 0.7 else materials[2].pattern
    flat = np.array([camera.forward[0], 0.0, camera.forward[2]])
    flat /= np.linalg.norm(flat)
    side = np.cross(flat, [0.0, 1.0, 0.0])
    tan_half = np.tan(np.radians(hfov) / 2)

    def place(dist_range, spread, margin):
        d = rng.uniform(*dist_range)
        p = cam_pos + flat * d + side * rng.uniform(-1, 1) * spread * (d * tan_half + 0.3)
        return np.clip(p[[0, 2]], lo[[0, 2]] + margin, hi[[0, 2]] - margin)

    far = max(length - cam_pos[2] - 0.3, 1.6)
    objects = []
    for _ in range(rng.integers(2, 8)):
        kind = rng.choice(["box", "sphere", "cylinder"])
        materials.append(random_material(rng))
        obj = {"kind": str(kind), "material": len(materials) - 1}
        if kind == "box":
            half = rng.uniform([0.15, 0.15, 0.15], [0.6, 0.6, 0.6])
            xz = place((1.4, far), 1.0, half.max())
            obj.update(center=np.array([xz[0], half[1], xz[1]]), half=half, yaw=rng.uniform(0, np.pi))
        elif kind == "sphere":
            r = rng.uniform(0.12, 0.45)
            xz = place((1.4, far), 1.0, r)
            y = r if rng.random() < 0.6 else rng.uniform(r, min(2.0, height - r))
            obj.update(center=np.array([xz[0], y, xz[1]]), radius=r)
        else:
            r = rng.uniform(0.08, 0.35)
            xz = place((1.4, far), 1.0, r)
            obj.update(center_xz=xz, y0=0.0, y1=rng.uniform(0.3, min(1.9, height - 0.1)), radius=r)
        objects.append(obj)
    figures = []
    for k in range(rng.integers(num_figures[0], num_figures[1] + 1)):
        focus = focus_figure and k == 0
        xz = place((2.0, min(4.2, far)) if focus else (1.6, far), 0.3 if focus else 1.0, 0.5)
        figures.append(sample_figure(rng, xz, rng.uniform(0, 2 * np.pi)))
        materials.append(random_material(rng))
        if focus:  # keep the line of sight to the main figure clear of objects
            objects = [obj for obj in objects if not blocks(obj, cam_pos, xz)]
    light = Lighting(np.array([rng.uniform(lo[0] + 0.5, hi[0] - 0.5), height - 0.15, rng.uniform(1.0, length - 0.5)]),
                     ambient=rng.uniform(0.2, 0.4), diffuse=rng.uniform(0.7, 1.1))
    return Scene(camera, (lo, hi), materials, (0, 1, 2), objects, figures, light)


def blocks(obj: dict, cam_pos: np.ndarray, target_xz: np.ndarray, clearance: float = 0.6) -> bool:
    """Whether an object stands within `clearance` (plus its size) of the floor line from camera to target."""
    centre, radius = bounding_sphere(obj)
    a, b, p = cam_pos[[0, 2]], np.asarray(target_xz), np.asarray(centre)[[0, 2]]
    s = np.clip((p - a) @ (b - a) / ((b - a) @ (b - a)), 0, 1)
    return bool(np.linalg.norm(p - (a + s * (b - a))) < radius + clearance)


# ------------------------------------------------------------------ rendering

def render(scene: Scene, size: tuple[int, int], rng: np.random.Generator | None = None) -> Rendering:
    """Ray-cast the scene at size (h, w); `rng` adds sensor noise (1.5 levels) when given."""
    h, w = size
    cam = scene.camera
    D = cam.directions(h, w)
    norm = np.linalg.norm(D, axis=1)
    rd = (D / norm[:, None]).astype(np.float32)
    o = cam.position.astype(np.float32)
    hits = Hits.empty(len(rd))
    lo, hi = scene.room
    t, face = room_exit(o, rd, lo, hi)
    axis = face // 2
    hits.rng[:] = t
    hits.normal[np.arange(len(rd)), axis] = np.where(face % 2 == 1, -1.0, 1.0)
    floor_mat, wall_mat, ceiling_mat = scene.room_materials
    hits.label[:] = np.where(face == 2, FLOOR, np.where(face == 3, CEILING, WALL))
    hits.material[:] = np.where(face == 2, floor_mat, np.where(face == 3, ceiling_mat, wall_mat))
    for inst, obj in enumerate(scene.objects, start=1):
        add_object(hits, obj, inst, o, rd)
    first_figure = len(scene.objects) + 1
    for k, fig in enumerate(scene.figures):
        add_figure(hits, fig, first_figure + k, len(scene.materials) - len(scene.figures) + k, o, rd)
    points = o + rd * hits.rng[:, None]
    colour = shade(points, hits.normal, albedo(points, hits.normal, scene.materials, hits.material), scene.light)
    colour = np.clip(colour, 0, 1) ** (1 / 1.4) * 255.0
    if rng is not None:
        colour = colour + rng.normal(0, 1.5, colour.shape)
    image = np.clip(np.rint(colour), 0, 255).astype(np.uint8).reshape(h, w, 3)
    depth = (hits.rng / norm).astype(np.float32).reshape(h, w)
    labels = hits.label.reshape(h, w)
    instances = hits.instance.reshape(h, w)
    people = [annotate_person(fig, first_figure + k, cam, depth, instances) for k, fig in enumerate(scene.figures)]
    return Rendering(image, depth, labels, instances, people)


def add_object(hits: Hits, obj: dict, inst: int, o, rd) -> None:
    kind, mat = obj["kind"], obj["material"]
    rows = rays_near(o, rd, *bounding_sphere(obj))
    if not len(rows):
        return
    sub = rd[rows]
    if kind == "sphere":
        c, r = obj["center"], obj["radius"]
        hits.take(sphere(o, sub, c, r), rows, lambda p, m: (p - c) / r, mat, SPHERE, inst, o, rd)
    elif kind == "box":
        t, face_axis, dl = oriented_box(o, sub, obj["center"], obj["half"], obj["yaw"])
        axes = box_axes(obj["yaw"])

        def normal(p, nearer):
            ax = face_axis[nearer]
            sign = -np.sign(dl[nearer][np.arange(len(ax)), ax])
            return axes[ax] * sign[:, None]
        hits.take(t, rows, normal, mat, BOX, inst, o, rd)
    else:
        cx, cz = obj["center_xz"]
        t, side = cylinder(o, sub, obj["center_xz"], obj["y0"], obj["y1"], obj["radius"])

        def normal(p, nearer):
            radial = np.stack([p[:, 0] - cx, np.zeros(len(p)), p[:, 2] - cz], 1) / obj["radius"]
            cap = np.zeros_like(p)
            cap[:, 1] = np.where(p[:, 1] >= obj["y1"] - 1e-4, 1.0, -1.0)
            return np.where(side[nearer][:, None], radial, cap)
        hits.take(t, rows, normal, mat, CYLINDER, inst, o, rd)


def bounding_sphere(obj: dict) -> tuple[np.ndarray, float]:
    if obj["kind"] == "sphere":
        return obj["center"], obj["radius"]
    if obj["kind"] == "box":
        return obj["center"], float(np.linalg.norm(obj["half"]))
    cx, cz = obj["center_xz"]
    half_h = (obj["y1"] - obj["y0"]) / 2
    return np.array([cx, obj["y0"] + half_h, cz]), float(np.hypot(half_h, obj["radius"]))


def add_figure(hits: Hits, fig: Figure, inst: int, mat: int, o, rd) -> None:
    rows = rays_near(o, rd, *fig.bound)
    if not len(rows):
        return
    sub = rd[rows]
    for a, bb, r in fig.capsules:
        hits.take(capsule(o, sub, a, bb, r), rows, lambda p, m, a=a, bb=bb, r=r: capsule_normal(p, a, bb, r),
                  mat, FIGURE, inst, o, rd)
    hc, hr = fig.head
    hits.take(sphere(o, sub, hc, hr), rows, lambda p, m: (p - hc) / hr, mat, FIGURE, inst, o, rd)


def annotate_person(fig: Figure, inst: int, cam: Camera, depth: np.ndarray, instances: np.ndarray) -> dict:
    """Keypoints in pixels with COCO flags, and the tight box and area of the figure's visible pixels."""
    h, w = depth.shape
    uv, z = cam.project(fig.keypoints, h, w)
    px, py = np.rint(uv[:, 0]).astype(int), np.rint(uv[:, 1]).astype(int)
    inside = (z > 0) & (px >= 0) & (px < w) & (py >= 0) & (py < h)
    flags = np.zeros(len(uv))
    for k in np.nonzero(inside)[0]:
        seen = instances[py[k], px[k]] == inst and depth[py[k], px[k]] >= z[k] - fig.tolerance[k]
        flags[k] = 2 if seen else 1
    ys, xs = np.nonzero(instances == inst)
    box = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)] \
        if len(xs) else [0.0, 0.0, 0.0, 0.0]
    kps = np.concatenate([np.where(inside[:, None], uv, 0.0), flags[:, None]], 1)
    return {"keypoints": kps, "box": box, "area": float(len(xs)), "instance": inst}


def synthetic_scene(seed: int, index: int, size: tuple[int, int], people: bool = False) -> Rendering:
    """The scene of (seed, index) at size (h, w). `people`: 1-3 figures, the first large and central, with at
    least 6 labelled keypoints (pose data); otherwise 0-2 figures anywhere."""
    for attempt in range(MAX_REDRAWS):
        rng = np.random.default_rng([seed, index, attempt])
        scene = sample_scene(rng, (1, 3) if people else (0, 2), focus_figure=people)
        out = render(scene, size, rng)
        if out.depth.min() < MIN_DEPTH or out.depth.max() > MAX_DEPTH:
            continue
        main = out.people[0] if people else None
        if main is not None and ((main["keypoints"][:, 2] > 0).sum() < 6 or main["area"] < 0.008 * size[0] * size[1]):
            continue
        return out
    raise DataError(f"synthetic scene (seed {seed}, index {index}): no valid draw in {MAX_REDRAWS} tries")


# ------------------------------------------------------------------ datasets

def scene_function(family: str):
    """The renderer of a scene family: rooms (the training scenes: mp_deploy/data/rooms.py), unseen (an
    independently written family for evaluation only: data/unseen.py), classic (this module's boxes in a room)."""
    if family == "rooms":
        from mp_deploy.data.rooms import room_scene

        return room_scene
    if family == "unseen":
        from mp_deploy.data.unseen import unseen_scene

        return unseen_scene
    if family == "classic":
        return synthetic_scene
    raise DataError(f"unknown scene family {family!r}; choose rooms, unseen or classic")


SCENE_FAMILIES = ("rooms", "unseen", "classic")

def check_size(size, what: str) -> tuple[int, int]:
    """(h, w) of two integers in [16, MAX_SIDE], else UsageError naming `what`."""
    if not isinstance(size, (list, tuple)) or len(size) != 2 or any(
            isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 16 <= v <= MAX_SIDE for v in size):
        raise UsageError(f"synthetic data: {what} must be two integers in [16, {MAX_SIDE}], got {size!r}")
    return int(size[0]), int(size[1])


class SyntheticDepth(SampleDataset):
    """Synthetic depth samples at `size`; `augment` applies the reference's depth augmentation (the crop is the
    full size, so it only flips, colours and strips)."""

    eval_crop, min_depth, max_depth, protocol = None, 1e-3, MAX_DEPTH, "synthetic"

    def __init__(self, size=(128, 128), length: int = 100_000, seed: int = 0, augment: bool = False,
                 scenes: str = "rooms"):
        self.size, self.length, self.seed, self.scenes = check_size(size, "size"), length, seed, scenes
        self.render = scene_function(scenes)
        self.augment = DepthAugment(self.size) if augment else None
        self.sample_size = self.size

    def __len__(self) -> int:
        return self.length

    def load(self, index: int, rng: np.random.Generator) -> dict:
        scene = self.render(self.seed, index, self.size)
        image, depth = scene.image, scene.depth
        if self.augment is not None:
            strip = (index + self.epoch) % self.augment.strip_every == 0
            image, raw = augment_depth(image, depth * DEPTH_PNG_SCALE, rng, self.augment, strip)
            depth = raw / DEPTH_PNG_SCALE
        return {"image": to_image_tensor(image), "depth": torch.from_numpy(np.ascontiguousarray(depth))[None],
                "file": f"synthetic:{self.seed}:{index}"}


class SyntheticSeg(SampleDataset):
    """Synthetic segmentation samples (CLASSES) at `size`; `augment` applies mmseg's pipeline with the scale
    bound (4 x long side, short side) of the render, so the resize ratio 0.5-2.0 acts on the render size."""

    num_classes, protocol = len(CLASSES), "synthetic"

    def __init__(self, size=(128, 128), length: int = 100_000, seed: int = 0, augment: bool = False,
                 scenes: str = "rooms"):
        self.size, self.length, self.seed, self.scenes = check_size(size, "size"), length, seed, scenes
        self.render = scene_function(scenes)
        self.augment = SegAugment(scale=(4 * max(size), min(size)), crop=self.size) if augment else None
        self.sample_size = self.size

    def __len__(self) -> int:
        return self.length

    def load(self, index: int, rng: np.random.Generator) -> dict:
        scene = self.render(self.seed, index, self.size)
        image, labels = scene.image, scene.labels.astype(np.int64)
        if self.augment is not None:
            image, labels = augment_seg(image, labels, rng, self.augment)
        return {"image": to_image_tensor(image), "labels": torch.from_numpy(np.ascontiguousarray(labels)),
                "file": f"synthetic:{self.seed}:{index}"}


class SyntheticPose(SampleDataset):
    """Top-down samples of the main figure of each synthetic people scene, rendered at `scene_size` (default
    1.5 x the input's long side, square) and cropped by the same pipeline as COCO (mp_deploy.data.pose)."""

    keypoint_names, sigmas, coco, protocol = COCO_KEYPOINTS, None, None, "synthetic"

    def __init__(self, input_size=(128, 96), length: int = 100_000, seed: int = 0, augment: bool = False,
                 scene_size: tuple[int, int] | None = None, sigma: float = 2.0, scenes: str = "rooms"):
        input_size = check_size(input_size, "input_size")
        side = int(1.5 * max(input_size))
        self.scene_size = check_size(scene_size, "scene_size") if scene_size else (side, side)
        self.length, self.seed, self.scenes = length, seed, scenes
        self.render = scene_function(scenes)
        self.cfg = TopDown(input_size=tuple(input_size), sigma=sigma)
        self.augment = PoseAugment() if augment else None
        self.sample_size = self.cfg.input_size

    def __len__(self) -> int:
        return self.length

    def load(self, index: int, rng: np.random.Generator) -> dict:
        scene = self.render(self.seed, index, self.scene_size, people=True)
        person = scene.people[0]
        instance = {"file": f"synthetic:{self.seed}:{index}", "image_id": index, "box": person["box"],
                    "keypoints": person["keypoints"], "area": person["area"]}
        return topdown_sample(scene.image, instance, self.cfg, self.augment, rng)
