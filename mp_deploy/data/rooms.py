"""Procedural indoor scenes with exact depth, class labels and people keypoints: rooms and corridors.

`room_scene(seed, index, size, people=False)` is a drop-in for mp_deploy.data.synthetic.synthetic_scene: a pure
function of its arguments giving a `Rendering` (image, depth, labels, instances, people) in the same format and
classes (synthetic.CLASSES). Each scene is drawn by a numpy Generator seeded with [seed, index, attempt]; a draw
that cannot be used (depth outside [MIN_DEPTH, MAX_DEPTH], a main person with too few labelled keypoints) is
redrawn with the next attempt, up to MAX_ATTEMPTS.

What a scene holds (modules rooms_*):
- the room (rooms_layout): a box room, an L-shaped room, a room with an alcove or a partition wall, or a
  corridor (sometimes with a side branch), 2.4-3.2 m high; doors recessed in their frames, doorways opening onto
  a space beyond, windows with recessed glowing panes and mullions; skirting boards, door frames and pictures on
  the walls. All of it is labelled floor / wall / ceiling (a doorway's threshold and the floor beyond are floor).
- furniture (rooms_furniture): tables with legs and chairs, desks, beds, sofas, bookcases with books, cabinets,
  counters, TV units, radiators (boxes); round tables, stools, bins, pillars, lamps (cylinders); balls, plant
  foliage, globes, lamp shades (spheres), small things on tops.
- people (rooms_people): 0-2 (1-3 with `people`, the first large and near the centre of the view, sometimes partly
  hidden by furniture), human proportions, eight kinds of pose, clothes and skin.
- look (rooms_look): wood, tiles, bricks, stripes, checker, noise, fabric, plain finishes; 1-3 point lights
  (ceiling lights, pendants, lamps, light from a window) with inverse-square falloff and hard shadows (one shadow
  ray per light per pixel), ambient light with corner and contact occlusion, glossy highlights; a camera response
  with auto exposure, white balance, vignetting, blur or defocus, shot and read noise.
- the camera: 0.6-2.2 m high, pitch -35..+10 degrees, roll within a few degrees, 45-90 degrees horizontal field of
  view, kept far enough from every surface that all depths are >= MIN_DEPTH.

Depth is the z-depth along the optical axis (ray range / |direction|, as synthetic.render), labels and instances
come from the same nearest hits, and people's keypoint flags follow COCO: 2 seen (the first hit at the keypoint's
pixel is its own person, no nearer than the keypoint's depth minus its tolerance), 1 inside the image but hidden,
0 outside. Instances: 0 the room (partition walls included), 1.. the objects, then the people.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mp_deploy.data.render import Camera
from mp_deploy.data.rooms_furniture import Layout, build, ceiling_light, clear_above, furnish, pendant, place_free, put
from mp_deploy.data.rooms_geometry import Box, Screen, Thing, cast, shadowed, take
from mp_deploy.data.rooms_layout import Flat, Plan, add_openings, cast_room, sample_plan, walls_shadow
from mp_deploy.data.rooms_look import (Finish, Light, Sensor, ceiling_finish, contact_occlusion, corner_occlusion,
                                       develop, floor_finish, furniture_finish, light_color, patterned, sample_sensor,
                                       shade, srgb, texture, wall_finish, window_pane, wood)
from mp_deploy.data.rooms_people import Person, sample_person
from mp_deploy.data.scene import CEILING, FLOOR, MAX_DEPTH, MIN_DEPTH, WALL, Rendering
from mp_deploy.errors import DataError

MAX_ATTEMPTS = 12
FLOOR_ID, CEILING_ID = 0, 1  # surface ids of the floor and the ceiling
DEPTH_MARGIN = 1.06  # the camera keeps MIN_DEPTH x this from everything (and MAX_DEPTH / this to the far corners)


@dataclass
class RoomScene:
    plan: Plan
    camera: Camera
    materials: list  # Finish
    surfaces: list  # Flat: floor, ceiling, walls, faces of openings (ids 0..)
    fixtures: list  # Thing: partition walls (instance 0, label wall)
    objects: list  # Thing: furniture, lamps, seats (instances 1..)
    people: list  # Person (instances after the objects)
    lights: list  # Light
    ambient: np.ndarray  # (3,) linear
    skirting: tuple | None  # (height, material)
    sensor: Sensor

    @property
    def things(self) -> list:
        return self.fixtures + self.objects + [p.thing for p in self.people]


# ------------------------------------------------------------------ the room

def dress_openings(rng, plan: Plan, surfaces: list, materials: list, add, floor_mat: int, wall_mat: int,
                   ceiling_mat: int) -> None:
    """Materials and surface ids of each opening's faces: door panels, frames, sills, panes, the space beyond."""

    def surface(normal, label, mat) -> int:
        surfaces.append(Flat(tuple(normal), label, mat))
        return len(surfaces) - 1

    for wall in plan.walls:
        for op in wall.openings:
            frame = add(wood(rng) if rng.random() < 0.4 else Finish(*(2 * [srgb(0.1, rng.uniform(0, 0.1),
                                                                                  rng.uniform(0.6, 0.95))])))
            if op.kind == "window":
                back = add(window_pane(rng, wall.u_axis, op.u0, op.u1, op.y0, op.y1, materials[frame].color))
                op.daylight = materials[back].emission > 1.0
            elif op.kind == "door":
                back = add(wood(rng) if rng.random() < 0.5 else furniture_finish(rng))
            else:
                back = -1
            op.faces = box_faces(surface, wall, back, frame, floor_mat if op.kind != "window" else frame,
                                 frame if op.kind != "window" else wall_mat, FLOOR if op.kind != "window" else WALL)
            if op.kind == "doorway":
                bfloor = floor_mat if rng.random() < 0.5 else add(floor_finish(rng))
                bwall = add(wall_finish(rng))
                bceil = ceiling_mat
                op.beyond_faces = box_faces(surface, wall, bwall, bwall, bfloor, bwall, FLOOR, bceil)
            wall.decals.extend(frame_decals(rng, op, frame))
        wall.decals.extend(pictures(rng, wall, plan.height, add))


def box_faces(surface, wall, back, side, bottom, top, bottom_label, ceiling_mat=None) -> np.ndarray:
    """Surface ids for the exit faces (axis * 2 + (1 if leaving through the + side)) of a box behind a wall:
    its back (away from the room), its two sides along the wall, its bottom and its top; -1 for the front."""
    faces = np.full(6, -1, np.int64)
    a, u = wall.axis, wall.u_axis
    if back >= 0:
        n = np.zeros(3)
        n[a] = wall.inward
        faces[2 * a + (wall.inward < 0)] = surface(n, WALL, back)  # leaving away from the room
    for sign in (0, 1):
        n = np.zeros(3)
        n[u] = 1.0 if sign == 0 else -1.0
        faces[2 * u + sign] = surface(n, WALL, side)
    faces[2] = surface((0.0, 1.0, 0.0), bottom_label, bottom)
    faces[3] = surface((0.0, -1.0, 0.0), CEILING if ceiling_mat is not None else WALL,
                       ceiling_mat if ceiling_mat is not None else top)
    return faces


def frame_decals(rng, op, frame: int) -> list:
    """An architrave around a door (often) or a window (sometimes), drawn on the wall around the hole."""
    if rng.random() > (0.8 if op.kind != "window" else 0.5):
        return []
    fw = rng.uniform(0.04, 0.09)
    return [(op.u0 - fw, op.u1 + fw, max(op.y0 - fw, 0.0), op.y1 + fw, frame)]


def pictures(rng, wall, height: float, add) -> list:
    """Framed pictures at eye height, clear of the openings."""
    out = []
    if wall.length < 1.2 or rng.random() > 0.4:
        return out
    w, h = rng.uniform(0.3, min(1.1, wall.length - 0.6)), rng.uniform(0.3, 0.8)
    u0 = rng.uniform(wall.lo + 0.3, wall.hi - 0.3 - w)
    yc = min(rng.uniform(1.3, 1.7), height - 0.25 - h / 2)
    if any(u0 - 0.1 < op.u1 and u0 + w + 0.1 > op.u0 for op in wall.openings):
        return out
    border = rng.uniform(0.015, 0.05)
    frame = add(wood(rng) if rng.random() < 0.5 else Finish(*(2 * [srgb(0, 0, rng.uniform(0.05, 0.9))])))
    out.append((u0 - border, u0 + w + border, yc - h / 2 - border, yc + h / 2 + border, frame))
    out.append((u0, u0 + w, yc - h / 2, yc + h / 2, add(patterned(rng))))
    return out


def partition(rng, plan: Plan, wall_mat: int) -> Thing | None:
    """A partition wall (full height or a half wall) standing out from a long wall, label wall, instance 0."""
    walls = [w for w in plan.walls if w.length > 3.0 and not w.openings]
    if not walls:
        return None
    wall = walls[rng.integers(len(walls))]
    u = rng.uniform(wall.lo + 0.35 * wall.length, wall.hi - 0.35 * wall.length)
    span = 5.0
    for other in plan.walls:  # how far the room reaches opposite
        if other.axis == wall.axis and other.inward != wall.inward and other.lo < u < other.hi:
            span = min(span, abs(other.c - wall.c))
    length = rng.uniform(0.3, 0.55) * span
    top = plan.height if rng.random() < 0.6 else rng.uniform(1.0, 1.4)
    th = rng.uniform(0.05, 0.08)
    x, z = wall.point(u, length / 2)
    half = np.array([th, top / 2, length / 2]) if wall.axis == 2 else np.array([length / 2, top / 2, th])
    return Thing(WALL, [Box(np.array([x, top / 2, z]), half, 0.0, wall_mat)], (x, z, half[0], half[2], 0.0))


# ------------------------------------------------------------------ camera and people

def view_limits(size, hfov: float) -> tuple[float, float, float]:
    """tan of the half fields of view (horizontal, vertical) and |D| at the image corners (D . forward = 1)."""
    h, w = size
    tan_h = np.tan(np.radians(hfov) / 2)
    tan_v = tan_h * h / w
    return tan_h, tan_v, float(np.sqrt(1 + tan_h ** 2 + tan_v ** 2))


def camera_position(rng, plan: Plan, layout: Layout, clear: float):
    """A floor point for the camera: in a corridor near one end, in a room mostly near a wall, always `clear`
    metres from every wall and taken rectangle; None if none is found."""
    lo, hi = plan.bounds()
    for _ in range(40):
        if plan.kind == "corridor":
            end = rng.integers(2)
            x = rng.uniform(lo[0], hi[0])
            z = lo[1] + rng.uniform(clear, clear + 1.5) if end == 0 else hi[1] - rng.uniform(clear, clear + 1.5)
        elif rng.random() < 0.7:
            wall = plan.walls[rng.integers(len(plan.walls))]
            x, z = wall.point(rng.uniform(wall.lo, wall.hi), rng.uniform(clear, clear + 1.0))
        else:
            x, z = rng.uniform(lo, hi)
        box = (np.array([x - clear, z - clear]), np.array([x + clear, z + clear]))
        if plan.inside(x, z, clear) and layout.free(*box, 0.0):
            return np.array([x, z])
    return None


def look_target(rng, plan: Plan, xz: np.ndarray) -> np.ndarray:
    """A floor point to look towards: the farthest of a few random points of the room (in a corridor, along it)."""
    lo, hi = plan.bounds()
    if plan.kind == "corridor":
        far = hi[1] if xz[1] < (lo[1] + hi[1]) / 2 else lo[1]
        return np.array([rng.uniform(lo[0], hi[0]), far])
    pts = [p for p in rng.uniform(lo, hi, (8, 2)) if plan.inside(*p)]
    if not pts:
        return (lo + hi) / 2
    return max(pts, key=lambda p: np.linalg.norm(p - xz))


def camera_ok(cam: Camera, plan: Plan, size) -> bool:
    """Whether the floor and ceiling stay >= MIN_DEPTH (checked at the image corners, where their depth is least)
    and the room's far corners <= MAX_DEPTH (the largest depth of a view is at a corner of a box it sees)."""
    tan_h, tan_v, _ = view_limits(size, cam.hfov)
    y = cam.position[1]
    for sx in (-1, 1):
        for sy in (-1, 1):
            d = cam.forward + sx * tan_h * cam.right + sy * tan_v * cam.up
            if d[1] < 0 and -y / d[1] < MIN_DEPTH * DEPTH_MARGIN:
                return False
            if d[1] > 0 and (plan.height - y) / d[1] < MIN_DEPTH * DEPTH_MARGIN:
                return False
    far = (plan.corners() - cam.position) @ cam.forward
    return far.max() < MAX_DEPTH / DEPTH_MARGIN


def sample_camera(rng, plan: Plan, layout: Layout, size, hfov: float, clear: float, aim=None) -> Camera | None:
    """A camera at a free spot: 0.6-2.2 m high, looking into the room (or at `aim`(xz, cam_y) -> (yaw, pitch)),
    pitch -35..+10, small roll."""
    for _ in range(10):
        xz = camera_position(rng, plan, layout, clear)
        if xz is None:
            return None
        y = rng.uniform(0.6, min(2.2, plan.height - 0.45))
        if aim is not None:
            yp = aim(xz, y)
            if yp is None:
                continue
            yaw, pitch = yp
        else:
            target = look_target(rng, plan, xz)
            yaw = np.degrees(np.arctan2(target[0] - xz[0], target[1] - xz[1])) + rng.uniform(-20, 20)
            pitch = rng.uniform(-35, 10)
        roll = float(np.clip(rng.normal(0, 2.0), -5, 5))
        cam = Camera.look([xz[0], y, xz[1]], yaw, pitch, roll, hfov)
        if camera_ok(cam, plan, size):
            return cam
    return None


def fits(plan: Plan, layout: Layout, person: Person) -> bool:
    """Whether a person (limbs and seat included) stands inside the room on free floor."""
    lo, hi = person.extent
    return plan.rect_free(lo, hi, 0.03) and layout.free(lo, hi, 0.05)


def place_main_person(rng, plan: Plan, layout: Layout, add, size, hfov: float, clear: float):
    """The main person of a people scene and a camera looking at it: far enough to fill 35-85 % of the image
    height, near the centre of the view (the line of sight is kept clear of furniture by the caller)."""
    tan_h, tan_v, _ = view_limits(size, hfov)
    H = rng.uniform(1.5, 1.92)
    chosen = {}

    def aim(xz, cam_y):
        for _ in range(8):
            dist = float(np.clip(H / (rng.uniform(0.35, 0.85) * 2 * tan_v), 1.4, 5.5))
            heading = np.arctan2(*(look_target(rng, plan, xz) - xz)) + rng.uniform(-0.6, 0.6)
            facing = heading + np.pi + (rng.uniform(-1.0, 1.0) if rng.random() < 0.6 else rng.uniform(-np.pi, np.pi))
            person = sample_person(rng, add, xz, facing, None, H)
            while dist >= 1.4:  # nearer until it fits
                p = xz + dist * np.array([np.sin(heading), np.cos(heading)])
                if plan.inside(*p, 0.3):
                    person = person.moved_to(*p)
                    if fits(plan, layout, person):
                        break
                dist *= 0.85
            if dist < 1.4:
                continue
            centre_y = 0.5 * (person.keypoints[:, 1].max() + person.keypoints[:, 1].min())
            yaw = np.degrees(heading) + rng.uniform(-0.25, 0.25) * np.degrees(np.arctan(tan_h))
            pitch = np.degrees(np.arctan2(centre_y - cam_y, dist)) + rng.uniform(-0.2, 0.2) * np.degrees(
                np.arctan(tan_v))
            chosen["person"] = person
            return yaw, float(np.clip(pitch, -35, 10))
        return None

    cam = sample_camera(rng, plan, layout, size, hfov, clear, aim)
    if cam is None:
        return None, None
    return cam, chosen["person"]


def take_person(layout: Layout, person: Person) -> None:
    layout.take(*person.extent)


def extra_people(rng, plan: Plan, layout: Layout, add, cam: Camera, count: int) -> list:
    """Further people, mostly in view, on free floor."""
    out = []
    yaw0 = np.arctan2(cam.forward[0], cam.forward[2])
    half = np.radians(cam.hfov) / 2
    xz = cam.position[[0, 2]]
    for _ in range(count):
        for _ in range(10):
            heading = yaw0 + rng.uniform(-1.2, 1.2) * half
            p = xz + rng.uniform(1.5, 6.0) * np.array([np.sin(heading), np.cos(heading)])
            if not plan.inside(*p, 0.3):
                continue
            person = sample_person(rng, add, p, rng.uniform(-np.pi, np.pi))
            if fits(plan, layout, person):
                take_person(layout, person)
                out.append(person)
                break
    return out


# ------------------------------------------------------------------ lights

def sample_lights(rng, plan: Plan, layout: Layout, add, people: list, camera_xz: np.ndarray,
                  clear: float) -> list[Light]:
    """1-3 point lights: some of the lamps already placed (floor and table lamps), ceiling lights and pendants
    (placed here, not over the camera, tall things or, for pendants, people), daylight in front of a window."""
    want = int(rng.integers(1, 4))
    lights = []
    lamps = [layout.lamps[k] for k in rng.permutation(len(layout.lamps))]
    for pos, k in lamps[: int(rng.integers(0, want + 1))]:
        lights.append(Light(pos, rng.uniform(2.0, 5.0) * k, light_color(rng), 0.2))
    windows = [(w, op) for w in plan.walls for op in w.openings if op.kind == "window" and op.daylight]
    lo, hi = plan.bounds()
    for _ in range(20):
        if len(lights) >= want:
            break
        if windows and rng.random() < 0.2:
            wall, op = windows[rng.integers(len(windows))]
            xz = wall.point((op.u0 + op.u1) / 2, rng.uniform(0.3, 0.7))
            if layout.free(xz - 0.25, xz + 0.25, 0.0, lines=False):
                lights.append(Light(np.array([xz[0], (op.y0 + op.y1) / 2, xz[1]]), rng.uniform(5.0, 12.0),
                                    np.array([0.85, 0.92, 1.0], np.float32), 0.5))
            continue
        x, z = rng.uniform(lo, hi)
        if not plan.inside(x, z, 0.6) or np.hypot(x - camera_xz[0], z - camera_xz[1]) < clear + 0.4:
            continue
        hanging = rng.random() < 0.3 and all(np.hypot(*(p.position - [x, z])) > 0.8 for p in people)
        item = pendant(rng, add, plan.height, 1.9) if hanging else ceiling_light(rng, add, plan.height)
        if clear_above(layout.things, x, z, 1.8 if hanging else plan.height - 0.3, 0.3):
            for pos, k in put(layout, item, x, z, 0.0, floor=False):
                lights.append(Light(pos, rng.uniform(2.5, 7.0) * k, light_color(rng), 0.3))
    if not lights:
        c = (lo + hi) / 2
        lights.append(Light(np.array([c[0], plan.height - 0.2, c[1]]), 5.0, light_color(rng), 0.3))
    return lights


# ------------------------------------------------------------------ the scene

class Materials(list):
    """The scene's materials (Finish); `add(finish)` appends one and returns its id."""

    def add(self, finish: Finish) -> int:
        self.append(finish)
        return len(self) - 1


@dataclass
class Shell:
    """The room without its contents: plan, materials, flat surfaces, skirting, partition walls."""

    plan: Plan
    materials: Materials
    surfaces: list
    skirting: tuple | None
    fixtures: list


def sample_shell(rng: np.random.Generator) -> Shell:
    """A floor plan with its openings, finishes, surface ids, skirting boards, pictures and partition walls."""
    plan = sample_plan(rng)
    add_openings(rng, plan)
    materials = Materials()
    add = materials.add
    floor_mat, wall_mat, ceiling_mat = add(floor_finish(rng)), add(wall_finish(rng)), add(ceiling_finish(rng))
    surfaces = [Flat((0.0, 1.0, 0.0), FLOOR, floor_mat), Flat((0.0, -1.0, 0.0), CEILING, ceiling_mat)]
    for wall in plan.walls:
        n = np.zeros(3)
        n[wall.axis] = wall.inward
        wall.sid = len(surfaces)
        surfaces.append(Flat(tuple(n), WALL, wall_mat))
    dress_openings(rng, plan, surfaces, materials, add, floor_mat, wall_mat, ceiling_mat)
    skirting = None
    if rng.random() < 0.6:
        skirting = (rng.uniform(0.05, 0.14), add(wood(rng) if rng.random() < 0.4 else Finish(
            *(2 * [srgb(0.1, rng.uniform(0, 0.1), rng.uniform(0.1, 0.95))]), gloss=0.2)))
    fixtures = []
    if plan.kind == "partition":
        part = partition(rng, plan, wall_mat if rng.random() < 0.6 else add(wall_finish(rng)))
        fixtures += [part] if part is not None else []
    return Shell(plan, materials, surfaces, skirting, fixtures)


def keep_free(layout: Layout, shell: Shell) -> None:
    """Take the floor of the partition walls and in front of the doors (furniture must not block them)."""
    for part in shell.fixtures:
        cx, cz, hx, hz, _ = part.footprint
        layout.take([cx - hx, cz - hz], [cx + hx, cz + hz])
    for wall in shell.plan.walls:
        for op in wall.openings:
            if op.kind != "window":
                a, b = wall.point(op.u0 - 0.1, 0.0), wall.point(op.u1 + 0.1, 0.8)
                layout.take(np.minimum(a, b), np.maximum(a, b))


def sample_room(rng: np.random.Generator, size: tuple[int, int], people: bool = False) -> RoomScene | None:
    """A random scene for an image of `size` (h, w); None when this draw cannot be used. Order: the room, the
    camera (with people: the main person first, then a camera looking at it), further people, furniture (an
    occluder before the main person, sometimes), lights."""
    shell = sample_shell(rng)
    plan, add = shell.plan, shell.materials.add
    layout = Layout()
    keep_free(layout, shell)
    hfov = float(rng.uniform(45, 90))
    clear = max(0.5, MIN_DEPTH * DEPTH_MARGIN * view_limits(size, hfov)[2])
    figures = []
    if people:
        cam, main = place_main_person(rng, plan, layout, add, size, hfov, clear)
        if cam is None:
            return None
        figures.append(main)
        take_person(layout, main)
        layout.lines.append((cam.position[[0, 2]], main.position, 0.35))
    else:
        cam = sample_camera(rng, plan, layout, size, hfov, clear)
        if cam is None:
            return None
    cam_xz = cam.position[[0, 2]]
    layout.take(cam_xz - clear, cam_xz + clear)
    count = int(rng.integers(0, 3)) if people else int(rng.choice([0, 0, 1, 2]))
    figures += extra_people(rng, plan, layout, add, cam, count)
    view = (cam_xz, float(np.arctan2(cam.forward[0], cam.forward[2])), np.radians(cam.hfov) / 2)
    furnish(rng, plan, add, layout, int(rng.integers(2, 6) if plan.kind == "corridor" else rng.integers(4, 11)), view)
    if people and rng.random() < 0.3:  # something between the camera and the main person
        name = str(rng.choice(["table", "coffee table", "chair", "cartons", "sofa", "stool", "balls", "pouf"]))
        spot = cam_xz + rng.uniform(0.45, 0.75) * (figures[0].position - cam_xz)
        place_free(rng, plan, layout, build(rng, add, name, plan.height), 8, spot, 0.3, lines=False)
    layout.things += [person.seat for person in figures if person.seat is not None]
    lights = sample_lights(rng, plan, layout, add, figures, cam_xz, clear)
    ambient = np.mean([light.color for light in lights], axis=0) * np.float32(rng.uniform(0.03, 0.25))
    objects = layout.things
    for k, thing in enumerate(objects, start=1):
        thing.instance = k
    for k, person in enumerate(figures, start=len(objects) + 1):
        person.thing.instance = k
    return RoomScene(plan, cam, shell.materials, shell.surfaces, shell.fixtures, objects, figures, lights,
                     ambient.astype(np.float32), shell.skirting, sample_sensor(rng))


# ------------------------------------------------------------------ rendering

@dataclass
class PartTable:
    """Per surface / part id: the primitive (None for the room's flat surfaces), label, instance, material."""

    parts: list
    label: np.ndarray
    instance: np.ndarray
    material: np.ndarray
    normal: np.ndarray  # (n, 3) for flat surfaces (zeros elsewhere)
    firsts: list  # the first id of each thing, in scene.things order


def part_table(scene: RoomScene) -> PartTable:
    parts, label, inst, mat, normal = [], [], [], [], []
    for s in scene.surfaces:
        parts.append(None)
        label.append(s.label)
        inst.append(0)
        mat.append(s.material)
        normal.append(s.normal)
    firsts = []
    for thing in scene.things:
        firsts.append(len(parts))
        for p in thing.parts:
            parts.append(p)
            label.append(thing.label)
            inst.append(thing.instance)
            mat.append(p.material)
            normal.append((0.0, 0.0, 0.0))
    return PartTable(parts, np.array(label, np.uint8), np.array(inst, np.int32), np.array(mat, np.int32),
                     np.array(normal, np.float32), firsts)


def groups(ids: np.ndarray):
    """(id, rows) for each distinct id, rows in increasing order."""
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    cuts = np.nonzero(np.diff(sorted_ids))[0] + 1
    for rows in np.split(order, cuts):
        if len(rows):
            yield int(ids[rows[0]]), rows


def surface_frames(table: PartTable, pid: np.ndarray, points: np.ndarray):
    """Normals, texture-frame points and texture-frame normals (each (3, N)) of every hit."""
    normals = table.normal[pid].T.copy()  # the room's flat surfaces; the parts' normals are filled in below
    q, nq = points.copy(), normals.copy()
    for part_id, rows in groups(pid):
        part = table.parts[part_id]
        if part is None:
            continue
        p = take(points, rows)
        n = part.normal(p)
        normals[:, rows] = n
        q[:, rows], nq[:, rows] = part.frame(p, n)
    return normals, q, nq


def colours(scene: RoomScene, table: PartTable, pid, points, q, nq):
    """Albedo (3, N), emitted radiance (3, N) or None, and gloss (N,) of every hit, with the walls' skirting and
    decals (door frames, pictures) painted over."""
    n = len(pid)
    albedo = np.empty((3, n), np.float32)
    emission = None
    gloss = np.zeros(n, np.float32)
    for m, rows in groups(table.material[pid]):
        mat = scene.materials[m]
        a, e = texture(mat, take(q, rows), take(nq, rows))
        albedo[:, rows] = a
        gloss[rows] = mat.gloss
        if e is not None:
            if emission is None:
                emission = np.zeros((3, n), np.float32)
            emission[:, rows] = e
    for wall in scene.plan.walls:
        if not wall.decals and scene.skirting is None:
            continue
        rows = np.nonzero(pid == wall.sid)[0]
        if not len(rows):
            continue
        u, y = points[wall.u_axis, rows], points[1, rows]
        layers = [(y < scene.skirting[0], scene.skirting[1])] if scene.skirting is not None else []
        layers += [((u > u0) & (u < u1) & (y > y0) & (y < y1), mat) for u0, u1, y0, y1, mat in wall.decals]
        for inside, mat in layers:
            r = rows[inside]
            if len(r):
                albedo[:, r], _ = texture(scene.materials[mat], take(q, r), take(nq, r))
                gloss[r] = scene.materials[mat].gloss
    return albedo, emission, gloss


def render_room(scene: RoomScene, size: tuple[int, int], rng: np.random.Generator | None = None) -> Rendering:
    """Ray-cast the scene at size (h, w): exact depth, labels and instances from the nearest hits, shaded with
    shadows; `rng` draws the sensor noise (a fixed draw without it)."""
    with np.errstate(all="ignore"):  # rays parallel to a plane or slab divide by zero; the results are misses
        return cast_and_shade(scene, size, rng)


def cast_and_shade(scene: RoomScene, size: tuple[int, int], rng) -> Rendering:
    h, w = size
    cam = scene.camera
    D = cam.directions(h, w).astype(np.float32).T.copy()  # (3, N), D . forward = 1
    norm = np.sqrt(np.einsum("ij,ij->j", D, D))
    rd = D / norm
    o = cam.position.astype(np.float32)
    table = part_table(scene)
    things = scene.things
    t, pid = cast_room(scene.plan, FLOOR_ID, CEILING_ID, cam.position, rd)
    cast(o, rd, things, table.firsts, t, pid, Screen(cam, h, w))
    points = o[:, None] + rd * t
    normals, q, nq = surface_frames(table, pid, points)
    albedo, emission, gloss = colours(scene, table, pid, points, q, nq)
    ao = corner_occlusion(scene.plan, points, pid, FLOOR_ID, CEILING_ID)
    contact_occlusion(scene.objects, points, np.nonzero(pid == FLOOR_ID)[0], ao)

    def shadow_test(light: Light, rows, dirs, dist):
        tmax = dist * np.float32(1 - 2e-3) - np.float32(2e-3)
        out = np.zeros(len(rows), bool)
        origin = light.position.astype(np.float32)
        walls_shadow(scene.plan, origin, dirs, tmax, pid[rows], out)
        shadowed(origin, dirs, tmax, things, out)
        return out

    radiance = shade(points, normals, rd, albedo, emission, gloss, scene.lights, scene.ambient, ao, shadow_test)
    depth = (t / norm).reshape(h, w)
    image = develop(radiance.reshape(3, h, w), depth, scene.sensor,
                    rng if rng is not None else np.random.default_rng(0))
    labels = table.label[pid].reshape(h, w)
    instances = table.instance[pid].reshape(h, w)
    people = [annotate(person, cam, depth, instances) for person in scene.people]
    return Rendering(image, depth, labels, instances, people)


def annotate(person: Person, cam: Camera, depth: np.ndarray, instances: np.ndarray) -> dict:
    """Keypoints in pixels with COCO flags, and the tight box and area of the person's visible pixels."""
    h, w = depth.shape
    inst = person.thing.instance
    uv, z = cam.project(person.keypoints, h, w)
    px, py = np.rint(uv[:, 0]).astype(int), np.rint(uv[:, 1]).astype(int)
    inside = (z > 0) & (px >= 0) & (px < w) & (py >= 0) & (py < h)
    flags = np.zeros(len(uv))
    for k in np.nonzero(inside)[0]:
        seen = instances[py[k], px[k]] == inst and depth[py[k], px[k]] >= z[k] - person.tolerance[k]
        flags[k] = 2 if seen else 1
    ys, xs = np.nonzero(instances == inst)
    box = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)] \
        if len(xs) else [0.0, 0.0, 0.0, 0.0]
    kps = np.concatenate([np.where(inside[:, None], uv, 0.0), flags[:, None]], 1)
    return {"keypoints": kps, "box": box, "area": float(len(xs)), "instance": inst}


def usable(out: Rendering, size, people: bool) -> bool:
    """Depth in range; with people, a main person with >= 6 labelled keypoints covering >= 1 % of the image."""
    if out.depth.min() < MIN_DEPTH or out.depth.max() > MAX_DEPTH:
        return False
    if people:
        main = out.people[0]
        if (main["keypoints"][:, 2] > 0).sum() < 6 or main["area"] < 0.01 * size[0] * size[1]:
            return False
    return True


def draw_room(seed: int, index: int, size: tuple[int, int], people: bool = False) -> tuple[RoomScene, Rendering]:
    """The scene of (seed, index) and its rendering at size (h, w) (room_scene, with the scene for inspection)."""
    size = (int(size[0]), int(size[1]))
    for attempt in range(MAX_ATTEMPTS):
        rng = np.random.default_rng([seed, index, attempt])
        scene = sample_room(rng, size, people)
        if scene is None:
            continue
        out = render_room(scene, size, rng)
        if usable(out, size, people):
            return scene, out
    raise DataError(f"room scene (seed {seed}, index {index}): no valid draw in {MAX_ATTEMPTS} tries")


def room_scene(seed: int, index: int, size: tuple[int, int], people: bool = False) -> Rendering:
    """The scene of (seed, index) at size (h, w). `people`: 1-3 people, the first large and central, with at
    least 6 labelled keypoints (pose data); otherwise 0-2 people anywhere."""
    return draw_room(seed, index, size, people)[1]
