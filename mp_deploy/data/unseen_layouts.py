"""Indoor layouts of the evaluation-only scene family (mp_deploy.data.unseen).

Rooms are convex: a convex floor polygon (rectangles, chamfered halls, pentagon offices) extruded up to one or
more ceiling planes (flat, gabled attic slopes, a single-pitch loft roof). Five layouts:

  hall       pillared hall: rows of columns, tall windows down one side, marble / tiled floor, coffered ceiling,
             an optional stage with steps (label floor), benches, pedestals with spheres, chandeliers
  attic      gabled attic: sloped ceilings, knee walls, a gable window, planks / parquet, trunks, stacked boxes,
             rolled carpets, a bare bulb
  warehouse  high hall: shelving racks with cartons and cans, pallets, barrels, ceiling pipes, a clerestory window
             strip, a roller door, concrete with painted lanes, sodium or cool high-bay lamps
  office     a glazed wall with strong sun, carpet, suspended ceiling with light panels, desks with monitors,
             chairs, cabinets, plants, bins, round tables, doors, pictures, a whiteboard
  loft       single-pitch roof, brick walls, a raised platform with a flight of steps (label floor), sofas, tables,
             pedestals, floor lamps, coloured accent lights, large windows on the high side

Windows, doors, panels, picture frames and skirting are decals on the wall planes (label wall).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mp_deploy.data.unseen_geometry import box, cylinder, rot_y, sphere, unit
from mp_deploy.data.unseen_textures import hsv, jitter, pick

FLOOR, WALL, CEILING, BOX, SPHERE, CYLINDER, FIGURE = range(7)
LAYOUTS = ("hall", "attic", "warehouse", "office", "loft")


@dataclass
class RoomPlane:
    label: int
    n: np.ndarray  # outward unit normal; inside the room n . p <= c
    c: float
    material: dict
    R: np.ndarray  # columns u, v, n (texture frame)
    origin: np.ndarray
    length: float = 0.0  # walls: edge length (u runs 0..length)
    decals: list = field(default_factory=list)


@dataclass
class Room:
    polygon: np.ndarray  # (K, 2) floor polygon (x, z), counter-clockwise seen from above
    planes: list
    ceilings: list  # indices of ceiling planes
    walls: list  # indices of wall planes (edge order)
    max_height: float
    platforms: list = field(default_factory=list)  # Prims, label floor, instance 0
    rects: list = field(default_factory=list)  # (x0, z0, x1, z1) floor areas the platforms cover

    def ceiling_at(self, x, z):
        h = np.inf
        for k in self.ceilings:
            p = self.planes[k]
            h = np.minimum(h, (p.c - p.n[0] * x - p.n[2] * z) / p.n[1])
        return h

    def clearance(self, point) -> float:
        """Distance from an interior point to the nearest room plane."""
        return min(p.c - float(p.n @ point) for p in self.planes)

    def edge_distance(self, x, z) -> float:
        """Signed distance from (x, z) to the polygon boundary (positive inside)."""
        return min(p.c - (p.n[0] * x + p.n[2] * z) for k, p in enumerate(self.planes) if k in self.walls)


def _flat(y, material, label):
    if label == FLOOR:
        n = np.array([0.0, -1.0, 0.0])
        R = np.stack([np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0]), n], axis=1)
        return RoomPlane(FLOOR, n, 0.0, material, R, np.zeros(3))
    n = np.array([0.0, 1.0, 0.0])
    R = np.stack([np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, -1.0]), n], axis=1)
    return RoomPlane(label, n, float(y), material, R, np.array([0.0, y, 0.0]))


def _sloped(normal, point, material):
    n = unit(normal)
    u = unit(np.cross(n, [0.0, 1.0, 0.0]))  # horizontal, in the plane
    v = np.cross(n, u)
    return RoomPlane(CEILING, n, float(n @ point), material, np.stack([u, v, n], axis=1), np.asarray(point, float))


def make_room(poly, ceilings, floor_mat, wall_mats, platforms=()) -> Room:
    poly = np.asarray(poly, float)
    planes = [_flat(0.0, floor_mat, FLOOR)]
    centre = poly.mean(axis=0)
    walls = []
    for i in range(len(poly)):
        a, b = poly[i], poly[(i + 1) % len(poly)]
        e = b - a
        length = float(np.linalg.norm(e))
        n2 = np.array([e[1], -e[0]]) / length
        if n2 @ (centre - a) > 0:
            n2 = -n2
        n = np.array([n2[0], 0.0, n2[1]])
        u = np.array([e[0], 0.0, e[1]]) / length
        R = np.stack([u, np.array([0.0, 1.0, 0.0]), n], axis=1)
        origin = np.array([a[0], 0.0, a[1]])
        mat = wall_mats[i % len(wall_mats)]
        walls.append(len(planes))
        planes.append(RoomPlane(WALL, n, float(n @ origin), mat, R, origin, length))
    ceil_idx = []
    for c in ceilings:
        ceil_idx.append(len(planes))
        planes.append(c)
    room = Room(poly, planes, ceil_idx, walls, 0.0, list(platforms))
    room.max_height = float(max(room.ceiling_at(x, z) for x, z in poly))
    # a ridge can be higher than every corner: sample along the edges
    for i in range(len(poly)):
        a, b = poly[i], poly[(i + 1) % len(poly)]
        for t in np.linspace(0, 1, 9):
            p = a + (b - a) * t
            room.max_height = max(room.max_height, float(room.ceiling_at(p[0], p[1])))
    return room


def _platform(c, half, material):
    """A raised floor block (label floor, instance 0); textured in world x / z like the floor."""
    p = box(c, half, label=FLOOR, instance=0, material=material)
    p.origin = np.zeros(3)
    return p


def wall_height(room: Room, k: int, u: float) -> float:
    p = room.planes[k]
    q = p.origin + p.R[:, 0] * u
    return float(room.ceiling_at(q[0], q[2]))


# ------------------------------------------------------------------ materials

def mat(tex, c1, c2=None, **kw):
    m = {"tex": tex, "c1": np.asarray(c1, float), "c2": np.asarray(c2 if c2 is not None else c1, float)}
    m.update(kw)
    m.setdefault("spec", 0.08)
    m.setdefault("shine", 16.0)
    return m


def _seed(rng):
    return int(rng.integers(1 << 30))


def marble_mat(rng, light=True):
    base = pick(rng, [(0.93, 0.92, 0.9), (0.88, 0.86, 0.8), (0.35, 0.36, 0.38), (0.85, 0.78, 0.7),
                      (0.12, 0.12, 0.13), (0.55, 0.62, 0.58)]) if light else (0.2, 0.2, 0.22)
    base = jitter(rng, base, 0.03)
    vein = np.clip(base * rng.uniform(0.3, 0.6) if base.mean() > 0.5 else base + 0.5, 0, 1)
    return mat("marble", base, vein, scale=rng.uniform(0.6, 1.6), seed=_seed(rng), spec=0.5, shine=60.0,
               vein=rng.uniform(5, 11))


def floor_material(rng, kind):
    s = _seed(rng)
    if kind == "tiles":
        inner = pick(rng, ["marble", "checker", "plain"])
        c1 = jitter(rng, pick(rng, [(0.9, 0.88, 0.84), (0.75, 0.7, 0.62), (0.5, 0.52, 0.55)]), 0.03)
        c2 = jitter(rng, pick(rng, [(0.15, 0.15, 0.16), (0.55, 0.3, 0.22), (0.3, 0.35, 0.45)]), 0.03)
        if inner == "marble":
            c2 = np.clip(c1 * 0.5, 0, 1)
        return mat("tiles", c1, c2, size=rng.uniform(0.35, 0.8), inner=inner, seed=s, spec=0.45, shine=50.0,
                   grout_color=jitter(rng, (0.6, 0.58, 0.55), 0.05))
    if kind == "marble":
        return marble_mat(rng)
    if kind == "chevron":
        wood = jitter(rng, pick(rng, [(0.62, 0.42, 0.24), (0.75, 0.58, 0.38), (0.42, 0.27, 0.15)]), 0.04)
        return mat("chevron", wood, np.clip(wood * 0.7, 0, 1), scale=rng.uniform(0.8, 1.4), seed=s, spec=0.3,
                   shine=35.0)
    if kind == "planks":
        wood = jitter(rng, pick(rng, [(0.6, 0.45, 0.3), (0.7, 0.62, 0.5), (0.45, 0.3, 0.2), (0.55, 0.5, 0.45)]), 0.04)
        return mat("planks", wood, np.clip(wood * 0.75, 0, 1), width=rng.uniform(0.12, 0.24), seed=s, spec=0.2,
                   shine=25.0)
    if kind == "carpet":
        c = hsv(rng.random(), rng.uniform(0.15, 0.6), rng.uniform(0.25, 0.65))
        return mat("carpet", c, jitter(rng, c * 0.6, 0.05), pattern=bool(rng.random() < 0.5),
                   scale=rng.uniform(0.8, 1.6), seed=s, spec=0.0, shine=4.0)
    if kind == "concrete":
        return mat("concrete", jitter(rng, (0.55, 0.55, 0.53), 0.05), seed=s, spec=0.15, shine=20.0)
    raise ValueError(kind)


def wall_material(rng, kind, height=3.0):
    s = _seed(rng)
    if kind == "plain":
        return mat("plain", hsv(rng.random(), rng.uniform(0.0, 0.35), rng.uniform(0.6, 0.95)), seed=s)
    if kind == "gradient":
        c1 = hsv(rng.random(), rng.uniform(0.1, 0.5), rng.uniform(0.55, 0.95))
        c2 = hsv(rng.random(), rng.uniform(0.05, 0.4), rng.uniform(0.5, 0.95))
        return mat("gradient", c1, c2, v0=rng.uniform(0.0, 0.8), v1=height, seed=s)
    if kind == "brick":
        c1 = jitter(rng, pick(rng, [(0.62, 0.3, 0.22), (0.7, 0.45, 0.32), (0.55, 0.52, 0.5), (0.8, 0.74, 0.62)]),
                    0.04)
        return mat("brick", c1, np.clip(c1 * rng.uniform(0.6, 0.85), 0, 1), scale=rng.uniform(0.9, 1.5), seed=s,
                   mortar=jitter(rng, (0.8, 0.78, 0.74), 0.05))
    if kind == "wallpaper":
        c1 = hsv(rng.random(), rng.uniform(0.1, 0.5), rng.uniform(0.55, 0.9))
        return mat("wallpaper", c1, np.clip(c1 * rng.uniform(0.65, 0.85), 0, 1), scale=rng.uniform(0.8, 1.6), seed=s)
    if kind == "marble":
        return marble_mat(rng)
    if kind == "corrugated":
        c1 = jitter(rng, pick(rng, [(0.6, 0.62, 0.64), (0.4, 0.5, 0.6), (0.7, 0.6, 0.45)]), 0.04)
        return mat("corrugated", c1, (0.45, 0.25, 0.12), scale=rng.uniform(0.8, 1.5), seed=s, spec=0.3, shine=30.0)
    if kind == "concrete":
        return mat("concrete", jitter(rng, (0.62, 0.6, 0.58), 0.05), seed=s)
    if kind == "planks":
        return floor_material(rng, "planks")
    raise ValueError(kind)


def window(u0, u1, v0, v1, cols, rows, frame):
    mull = list(np.linspace(u0, u1, cols + 1)[1:-1])
    trans = list(np.linspace(v0, v1, rows + 1)[1:-1])
    return dict(kind="window", u0=u0, u1=u1, v0=v0, v1=v1, mull=mull, trans=trans, bar=0.03, frame=frame)


def _frame_color(rng):
    return jitter(rng, pick(rng, [(0.95, 0.95, 0.93), (0.12, 0.12, 0.12), (0.45, 0.3, 0.18), (0.6, 0.62, 0.64)]),
                  0.02)


def add_windows(rng, room, k, n, width, v0, v1, cols=(1, 3), rows=(1, 3), margin=0.4):
    """n evenly spaced windows on wall k; returns the decals."""
    p = room.planes[k]
    L = p.length
    if L < width + 2 * margin:
        width = L - 2 * margin
    if width < 0.5:
        return []
    n = max(1, min(n, int((L - 2 * margin) // (width + 0.4))))
    frame = _frame_color(rng)
    out = []
    for c in np.linspace(margin + width / 2, L - margin - width / 2, n) if n > 1 else [L / 2]:
        u0, u1 = c - width / 2, c + width / 2
        top = min(v1, wall_height(room, k, u0) - 0.15, wall_height(room, k, u1) - 0.15)
        if top - v0 < 0.5:
            continue
        out.append(window(u0, u1, v0, top, int(rng.integers(cols[0], cols[1] + 1)),
                          int(rng.integers(rows[0], rows[1] + 1)), frame))
    p.decals.extend(out)
    return out


def _taken(p):
    return [(d["u0"], d["u1"]) for d in p.decals if d["kind"] != "band"]


def add_door(rng, room, k):
    p = room.planes[k]
    avoid = _taken(p)
    w, h = rng.uniform(0.85, 1.3), rng.uniform(2.0, 2.3)
    if p.length < w + 0.6:
        return
    for _ in range(6):
        u0 = rng.uniform(0.3, p.length - w - 0.3)
        if all(u0 + w < a - 0.1 or u0 > b + 0.1 for a, b in avoid) and wall_height(room, k, u0) > h + 0.2 and \
                wall_height(room, k, u0 + w) > h + 0.2:
            wood = jitter(rng, pick(rng, [(0.5, 0.32, 0.18), (0.85, 0.85, 0.82), (0.3, 0.35, 0.45), (0.6, 0.15, 0.1)]),
                          0.03)
            p.decals.append(dict(kind="door", u0=u0, u1=u0 + w, v0=0.0, v1=h, color=wood,
                                 frame=np.clip(wood * 0.7, 0, 1), seed=_seed(rng)))
            return


def add_frames(rng, room, k, n, whiteboard=False):
    p = room.planes[k]
    avoid = _taken(p)
    for _ in range(n):
        w, h = (rng.uniform(1.2, 2.0), rng.uniform(0.8, 1.1)) if whiteboard else \
            (rng.uniform(0.4, 1.2), rng.uniform(0.4, 1.0))
        if p.length < w + 0.6:
            return
        u0 = rng.uniform(0.3, p.length - w - 0.3)
        v0 = rng.uniform(1.0, 1.5)
        if v0 + h > min(wall_height(room, k, u0), wall_height(room, k, u0 + w)) - 0.15:
            continue
        if not all(u0 + w < a - 0.1 or u0 > b + 0.1 for a, b in avoid):
            continue
        avoid = list(avoid) + [(u0, u0 + w)]
        p.decals.append(dict(kind="frame", u0=u0, u1=u0 + w, v0=v0, v1=v0 + h, seed=_seed(rng),
                             border=(0.93, 0.93, 0.93) if whiteboard else _frame_color(rng),
                             colors=[hsv(rng.random(), rng.uniform(0.2, 0.9), rng.uniform(0.2, 0.95))
                                     for _ in range(3)],
                             white=whiteboard))


def add_bands(rng, room, wainscot=False):
    skirt = jitter(rng, pick(rng, [(0.95, 0.95, 0.93), (0.2, 0.18, 0.16), (0.45, 0.3, 0.2)]), 0.02)
    h = rng.uniform(0.8, 1.1)
    panel = mat("wood", jitter(rng, (0.45, 0.3, 0.18), 0.05), jitter(rng, (0.3, 0.2, 0.12), 0.04),
                scale=1.0, seed=_seed(rng)) if rng.random() < 0.5 else \
        mat("plain", hsv(rng.random(), rng.uniform(0.0, 0.3), rng.uniform(0.5, 0.9)), seed=_seed(rng))
    for k in room.walls:
        if wainscot:
            room.planes[k].decals.insert(0, dict(kind="band", v0=0.0, v1=h, material=panel, panels=True))
        room.planes[k].decals.insert(0, dict(kind="band", v0=0.0, v1=rng.uniform(0.08, 0.14),
                                             material=mat("plain", skirt, seed=_seed(rng)), panels=False))


# ------------------------------------------------------------------ room shapes

def _rect(W, L):
    return [(-W / 2, 0.0), (W / 2, 0.0), (W / 2, L), (-W / 2, L)]


def _chamfer(W, L, cut, corners=(2, 3)):
    """The rectangle with the given corners (0, 1 near at z = 0; 2, 3 far at z = L) cut off at 45 degrees."""
    pts = [np.array(p) for p in _rect(W, L)]
    out = []
    for i, p in enumerate(pts):
        if i in corners:
            out.append(tuple(p + cut * unit(pts[i - 1] - p)))
            out.append(tuple(p + cut * unit(pts[(i + 1) % 4] - p)))
        else:
            out.append(tuple(p))
    return out


def _poly_ok(poly):
    poly = np.asarray(poly)
    n = len(poly)
    cross = []
    for i in range(n):
        a, b, c = poly[i], poly[(i + 1) % n], poly[(i + 2) % n]
        e1, e2 = b - a, c - b
        cross.append(e1[0] * e2[1] - e1[1] * e2[0])
    cross = np.array(cross)
    return (cross > 1e-9).all() or (cross < -1e-9).all()


# ------------------------------------------------------------------ layouts: rooms

def room_hall(rng):
    W, L, H = rng.uniform(5.0, 7.5), rng.uniform(6.5, 9.5), rng.uniform(3.2, 4.3)
    poly = _chamfer(W, L, rng.uniform(0.8, 1.6)) if rng.random() < 0.5 else _rect(W, L)
    fl = floor_material(rng, pick(rng, ["tiles", "tiles", "marble", "chevron"]))
    ceil_m = mat("coffer", jitter(rng, (0.9, 0.88, 0.84), 0.04), jitter(rng, (0.75, 0.6, 0.3), 0.05),
                 size=rng.uniform(0.9, 1.6), seed=_seed(rng)) if rng.random() < 0.6 else wall_material(rng, "plain")
    wk = pick(rng, ["marble", "gradient", "wallpaper", "plain"])
    walls = [wall_material(rng, wk, H)]
    room = make_room(poly, [_flat(H, ceil_m, CEILING)], fl, walls)
    side = pick(rng, [k for k in room.walls if abs(room.planes[k].n[0]) > 0.99])
    wins = add_windows(rng, room, side, 6, rng.uniform(1.0, 1.7), rng.uniform(0.5, 1.0), H - rng.uniform(0.3, 0.7),
                       cols=(1, 2), rows=(1, 3))
    add_bands(rng, room, wainscot=wk != "marble" and rng.random() < 0.6)
    for k in room.walls:
        if k != side:
            if rng.random() < 0.35:
                add_door(rng, room, k)
            if rng.random() < 0.5:
                add_frames(rng, room, k, int(rng.integers(1, 3)))
    if rng.random() < 0.55:  # a stage at the far end with steps in front (label floor, part of the room)
        depth, h = rng.uniform(1.2, 2.0), rng.uniform(0.3, 0.6)
        zf = L - depth
        n = int(rng.integers(2, 4))
        sw = min(W - 0.02, rng.uniform(1.6, 3.2)) if rng.random() < 0.5 else W - 0.02
        room.platforms.append(_platform([0.0, h / 2, zf + depth / 2], [W / 2 - 0.001, h / 2, depth / 2], fl))
        for i in range(n):
            sh = h * (n - i) / (n + 1)
            room.platforms.append(_platform([0.0, sh / 2, zf - 0.3 * i - 0.15], [sw / 2, sh / 2, 0.15], fl))
        room.rects.append((-W / 2, zf - 0.3 * n, W / 2, L))
    return room, dict(W=W, L=L, H=H, sun_wall=side, windows=wins)


def room_attic(rng):
    W, L = rng.uniform(4.2, 6.2), rng.uniform(5.0, 8.0)
    knee, ridge = rng.uniform(0.9, 1.5), rng.uniform(2.9, 3.8)
    k = (ridge - knee) / (W / 2)
    cm = floor_material(rng, "planks") if rng.random() < 0.5 else wall_material(rng, "plain")
    ceilings = [_sloped([-k, 1.0, 0.0], [-W / 2, knee, 0.0], cm), _sloped([k, 1.0, 0.0], [W / 2, knee, 0.0], cm)]
    if rng.random() < 0.4:
        ceilings.append(_flat(rng.uniform(2.5, ridge - 0.25), cm, CEILING))
    fl = floor_material(rng, pick(rng, ["planks", "chevron", "carpet"]))
    wk = pick(rng, ["plain", "gradient", "brick", "planks"])
    room = make_room(_rect(W, L), ceilings, fl, [wall_material(rng, wk, ridge)])
    gables = [i for i in room.walls if abs(room.planes[i].n[2]) > 0.99]
    side = pick(rng, gables)
    width = rng.uniform(0.8, min(1.8, W - 1.6))
    v0 = rng.uniform(0.6, 1.0)
    wins = add_windows(rng, room, side, 1, width, v0, v0 + rng.uniform(1.0, 1.6), cols=(1, 2), rows=(1, 2))
    if rng.random() < 0.5:
        other = next(g for g in gables if g != side)
        add_door(rng, room, other)
    add_bands(rng, room)
    return room, dict(W=W, L=L, H=ridge, knee=knee, sun_wall=side, windows=wins)


def room_warehouse(rng):
    W, L, H = rng.uniform(6.0, 8.5), rng.uniform(6.0, 9.0), rng.uniform(3.8, 5.0)
    fl = floor_material(rng, "concrete")
    fl["stripe"] = rng.uniform(1.0, W / 2 - 1.2)
    fl["stripe_color"] = pick(rng, [(0.9, 0.75, 0.1), (0.95, 0.95, 0.95), (0.2, 0.5, 0.8)])
    walls = [wall_material(rng, pick(rng, ["corrugated", "brick", "concrete"]), H)]
    ceil_m = wall_material(rng, "corrugated") if rng.random() < 0.5 else \
        mat("plain", jitter(rng, (0.35, 0.36, 0.38), 0.05), seed=_seed(rng))
    room = make_room(_rect(W, L), [_flat(H, ceil_m, CEILING)], fl, walls)
    longs = [k for k in room.walls if abs(room.planes[k].n[0]) > 0.99]
    side = pick(rng, longs)
    p = room.planes[side]
    frame = _frame_color(rng)
    wins = [window(0.5, p.length - 0.5, H - rng.uniform(1.4, 1.8), H - rng.uniform(0.3, 0.5),
                   int(rng.integers(5, 10)), int(rng.integers(1, 3)), frame)]
    p.decals.extend(wins)
    ends = [k for k in room.walls if abs(room.planes[k].n[2]) > 0.99]
    e = room.planes[pick(rng, ends)]
    w = rng.uniform(2.4, 3.4)
    u0 = rng.uniform(0.5, e.length - w - 0.5)
    e.decals.append(dict(kind="door", u0=u0, u1=u0 + w, v0=0.0, v1=rng.uniform(2.6, min(3.4, H - 0.5)),
                         color=jitter(rng, pick(rng, [(0.7, 0.7, 0.72), (0.75, 0.35, 0.1), (0.2, 0.35, 0.6)]), 0.04),
                         frame=(0.25, 0.25, 0.27), seed=_seed(rng), slats=True))
    return room, dict(W=W, L=L, H=H, sun_wall=side, windows=wins)


def room_office(rng):
    W, L, H = rng.uniform(4.5, 7.0), rng.uniform(5.0, 8.0), rng.uniform(2.6, 3.1)
    poly = _chamfer(W, L, rng.uniform(1.0, 1.8), pick(rng, [(2,), (3,), (2, 3)])) if rng.random() < 0.45 else \
        _rect(W, L)
    if not _poly_ok(poly):
        poly = _rect(W, L)
    fl = floor_material(rng, "carpet") if rng.random() < 0.7 else \
        mat("tiles", jitter(rng, (0.5, 0.5, 0.52), 0.06), jitter(rng, (0.4, 0.42, 0.45), 0.05), size=0.5,
            inner="plain", grout=0.006, grout_color=(0.3, 0.3, 0.3), seed=_seed(rng), spec=0.0)
    ceil_m = mat("droptile", (0.9, 0.9, 0.88), (0.7, 0.7, 0.7), size=0.6, lamps=rng.uniform(0.08, 0.2),
                 lamp_color=pick(rng, [(1.0, 0.97, 0.92), (0.9, 0.95, 1.0)]), lamp_power=rng.uniform(2.0, 4.0),
                 seed=_seed(rng))
    wk = pick(rng, ["plain", "gradient", "wallpaper", "plain"])
    room = make_room(poly, [_flat(H, ceil_m, CEILING)], fl, [wall_material(rng, wk, H)])
    longs = [k for k in room.walls if abs(room.planes[k].n[0]) > 0.99 or abs(room.planes[k].n[2]) > 0.99]
    side = pick(rng, longs)
    p = room.planes[side]
    frame = _frame_color(rng)
    cols = max(2, int(p.length / rng.uniform(1.0, 1.6)))
    wins = [window(0.25, p.length - 0.25, rng.uniform(0.1, 0.8), H - rng.uniform(0.1, 0.3), cols,
                   int(rng.integers(1, 3)), frame)]
    p.decals.extend(wins)
    add_bands(rng, room)
    for k in room.walls:
        if k != side:
            if rng.random() < 0.4:
                add_door(rng, room, k)
            if rng.random() < 0.4:
                add_frames(rng, room, k, 1, whiteboard=rng.random() < 0.4)
    return room, dict(W=W, L=L, H=H, sun_wall=side, windows=wins)


def room_loft(rng):
    W, L = rng.uniform(5.0, 7.5), rng.uniform(6.0, 9.0)
    low, high = rng.uniform(2.8, 3.4), rng.uniform(3.8, 4.6)
    s = 1.0 if rng.random() < 0.5 else -1.0  # the high side is x = s * W / 2
    k = (high - low) / W
    cm = floor_material(rng, "planks") if rng.random() < 0.5 else wall_material(rng, "plain")
    ceil = _sloped([-s * k, 1.0, 0.0], [s * W / 2, high, 0.0], cm)
    poly = _chamfer(W, L, rng.uniform(0.8, 1.5), pick(rng, [(2, 3), (0, 1), ()]))
    fl = floor_material(rng, pick(rng, ["chevron", "planks", "concrete", "tiles"]))
    wk = pick(rng, ["brick", "brick", "plain", "gradient"])
    walls = [wall_material(rng, wk, high)]
    if rng.random() < 0.5:
        walls.append(wall_material(rng, pick(rng, ["plain", "gradient"]), high))
    room = make_room(poly, [ceil], fl, walls)
    hs = [w for w in room.walls if room.planes[w].n[0] * s > 0.99]
    side = hs[0]
    wins = add_windows(rng, room, side, int(rng.integers(2, 4)), rng.uniform(1.2, 2.2), rng.uniform(0.4, 0.9),
                       high - 0.3, cols=(2, 4), rows=(1, 3))
    add_bands(rng, room)
    for w in room.walls:
        if w != side and rng.random() < 0.4:
            add_frames(rng, room, w, int(rng.integers(1, 3)))
    if rng.random() < 0.75:  # a raised platform along the far wall with a flight of steps in front of it
        h = rng.uniform(0.45, 0.9)
        depth = rng.uniform(1.5, 2.4)
        n = int(rng.integers(3, 6))
        zf = L - depth
        # the chamfer may cut the platform's corners: only what lies inside the convex room is ever seen
        room.platforms.append(_platform([0.0, h / 2, zf + depth / 2], [W / 2 - 0.001, h / 2, depth / 2], fl))
        sw = rng.uniform(1.2, 2.0)
        sx = rng.uniform(-W / 2 + sw / 2 + 0.3, W / 2 - sw / 2 - 0.3)
        for i in range(n - 1):
            sh = h * (n - 1 - i) / n
            room.platforms.append(_platform([sx, sh / 2, zf - 0.3 * i - 0.15], [sw / 2, sh / 2, 0.15], fl))
        room.rects.append((-W / 2, zf - 0.3 * (n - 1), W / 2, L))
    return room, dict(W=W, L=L, H=high, low=low, high_side=s, sun_wall=side, windows=wins)


ROOMS = {"hall": room_hall, "attic": room_attic, "warehouse": room_warehouse, "office": room_office,
         "loft": room_loft}


# ------------------------------------------------------------------ furnishing

class Builder:
    """Places objects on the floor without overlaps, away from the camera and the line of sight to the main person."""

    def __init__(self, rng, room: Room, camera, dmin: float):
        self.rng, self.room, self.camera, self.dmin = rng, room, camera, dmin
        self.groups = []  # dicts: label, prims, lo, hi, foot (x, z, r) or None
        self.foot = []  # (x, z, r)
        self.rects = []  # (x0, z0, x1, z1) blocked floor areas (platforms)
        self.sight = None  # ((x0, z0), (x1, z1), half-width)
        self.points = []  # point lights (position, rgb power)

    def _sight_ok(self, x, z, r):
        if self.sight is None:
            return True
        a, b, w = self.sight
        a, b, p = np.asarray(a), np.asarray(b), np.array([x, z])
        ab = b - a
        t = np.clip((p - a) @ ab / (ab @ ab), 0.0, 1.0)
        return np.linalg.norm(p - (a + t * ab)) > r + w

    def free(self, x, z, r, margin=0.05, wall_gap=0.02, sight=True, wall_r=None) -> bool:
        if self.room.edge_distance(x, z) < (r if wall_r is None else wall_r) + wall_gap:
            return False
        if any(np.hypot(x - fx, z - fz) < r + fr + margin for fx, fz, fr in self.foot):
            return False
        if any(x0 - r < x < x1 + r and z0 - r < z < z1 + r for x0, z0, x1, z1 in self.rects):
            return False
        c = self.camera.position
        if np.hypot(x - c[0], z - c[2]) < r + self.dmin + 0.05:
            return False
        return self._sight_ok(x, z, r) if sight else True

    def spot(self, r, tries=25, near_wall=None, depth=None, **kw):
        """A free floor spot (x, z, yaw) for a footprint of radius r; near_wall: a gap to a random wall, with the
        object's depth axis (local z) facing into the room and `depth` its half depth."""
        poly = self.room.polygon
        lo, hi = poly.min(axis=0), poly.max(axis=0)
        for _ in range(tries):
            if near_wall is not None:  # against a random wall, facing into the room
                k = self.rng.choice(self.room.walls)
                p = self.room.planes[k]
                u = self.rng.uniform(r + 0.1, p.length - r - 0.1) if p.length > 2 * r + 0.2 else p.length / 2
                hd = r if depth is None else depth
                q = p.origin + p.R[:, 0] * u - p.n * (hd + near_wall)
                x, z = q[0], q[2]
                yaw = float(np.arctan2(-p.n[0], -p.n[2]))
                kw2 = dict(kw, wall_r=hd + near_wall - 0.03)
            else:
                x, z = self.rng.uniform(lo[0], hi[0]), self.rng.uniform(lo[1], hi[1])
                yaw = float(self.rng.uniform(-np.pi, np.pi))
                kw2 = kw
            if self.free(x, z, r, **kw2):
                return x, z, yaw
        return None

    def add(self, label, prims, foot=None, check_camera=True) -> bool:
        lo = np.min([p.lo for p in prims], axis=0)
        hi = np.max([p.hi for p in prims], axis=0)
        if check_camera:
            c = self.camera.position
            gap = np.linalg.norm(np.maximum(0.0, np.maximum(lo - c, c - hi)))
            if gap < self.dmin:
                return False
        # stay under the ceiling
        for x in (lo[0], hi[0]):
            for z in (lo[2], hi[2]):
                if hi[1] > self.room.ceiling_at(x, z) - 0.01 and label != CYLINDER:
                    return False
        for p in prims:
            p.label = label
        self.groups.append(dict(label=label, prims=prims, lo=lo, hi=hi, foot=foot))
        if foot is not None:
            self.foot.append(foot)
        return True

    def ceil(self, x, z):
        return float(self.room.ceiling_at(x, z))


def _k(m):
    return dict(label=-1, instance=-1, material=m)


def wood_mat(rng):
    c = jitter(rng, pick(rng, [(0.55, 0.38, 0.22), (0.72, 0.58, 0.4), (0.35, 0.22, 0.13), (0.85, 0.8, 0.72)]), 0.04)
    return mat("wood", c, np.clip(c * 0.7, 0, 1), scale=rng.uniform(0.7, 1.5), seed=_seed(rng), spec=0.2, shine=25.0)


def paint_mat(rng, sat=(0.2, 0.8), val=(0.3, 0.9)):
    return mat("plain", hsv(rng.random(), rng.uniform(*sat), rng.uniform(*val)), seed=_seed(rng),
               spec=rng.uniform(0.05, 0.4), shine=rng.uniform(10, 60))


def metal_mat(rng, c=None):
    c = c if c is not None else jitter(rng, pick(rng, [(0.7, 0.72, 0.75), (0.3, 0.32, 0.35), (0.75, 0.6, 0.3)]), 0.03)
    return mat("metal", c, seed=_seed(rng), spec=0.7, shine=80.0)


def yaw_box(cx, y0, cz, w, h, d, yaw, m):
    """A box standing on height y0, footprint w x d turned by yaw."""
    return box([cx, y0 + h / 2, cz], [w / 2, h / 2, d / 2], R=rot_y(yaw), **_k(m))


def _local(x, z, yaw, dx, dz):
    R = rot_y(yaw)
    v = R @ np.array([dx, 0.0, dz])
    return x + v[0], z + v[2]


def add_crate(b, rng, x=None, z=None, y0=0.0, size=None, label_check=True):
    s = size or rng.uniform(0.3, 0.7)
    if x is None:
        sp = b.spot(s * 0.75)
        if sp is None:
            return
        x, z, _ = sp
    m = mat("cardboard", jitter(rng, (0.65, 0.5, 0.32), 0.05), (0.8, 0.75, 0.6), tape=0.0, seed=_seed(rng)) \
        if rng.random() < 0.6 else wood_mat(rng)
    h = s * rng.uniform(0.6, 1.1)
    b.add(BOX, [yaw_box(x, y0, z, s, h, s * rng.uniform(0.7, 1.0), rng.uniform(-0.5, 0.5), m)],
          foot=(x, z, s * 0.75) if y0 == 0.0 else None)
    return h


def add_ball(b, rng, r=None):
    r = r or rng.uniform(0.1, 0.35)
    sp = b.spot(r)
    if sp:
        x, z, _ = sp
        b.add(SPHERE, [sphere([x, r, z], r, **_k(paint_mat(rng)))], foot=(x, z, r))


def add_can(b, rng, r=None, h=None, m=None):
    r, h = r or rng.uniform(0.12, 0.32), h or rng.uniform(0.3, 1.0)
    sp = b.spot(r)
    if sp:
        x, z, _ = sp
        b.add(CYLINDER, [cylinder([x, 0.0, z], [x, h, z], r, **_k(m or paint_mat(rng)))], foot=(x, z, r))


def add_pendant(b, rng, x, z, r, color, power, drop):
    top = b.ceil(x, z)
    y = top - drop
    lamp = mat("lamp", color, emit=np.asarray(color) * rng.uniform(4.0, 7.0))
    if b.add(SPHERE, [sphere([x, y, z], r, **_k(lamp))], check_camera=True):
        cord = metal_mat(rng, (0.1, 0.1, 0.1))
        b.add(CYLINDER, [cylinder([x, y + r * 0.9, z], [x, top + 0.05, z], 0.012, **_k(cord))])
        b.points.append((np.array([x, y - r * 1.2, z]), np.asarray(color) * power))


def add_plant(b, rng):
    r = rng.uniform(0.14, 0.25)
    sp = b.spot(r * 1.8)
    if not sp:
        return
    x, z, _ = sp
    h = rng.uniform(0.3, 0.55)
    pot = mat(pick(rng, ["plain", "concrete"]), jitter(rng, pick(rng, [(0.7, 0.35, 0.2), (0.9, 0.9, 0.88),
                                                                      (0.2, 0.2, 0.22)]), 0.04), seed=_seed(rng))
    if b.add(CYLINDER, [cylinder([x, 0.0, z], [x, h, z], r, **_k(pot))], foot=(x, z, r * 1.8)):
        fr = rng.uniform(1.4, 2.2) * r
        leaves = mat("leaves", jitter(rng, (0.2, 0.45, 0.15), 0.05), jitter(rng, (0.1, 0.25, 0.08), 0.03),
                     seed=_seed(rng), spec=0.15, shine=20.0)
        b.add(SPHERE, [sphere([x, h + fr * 0.85, z], fr, **_k(leaves))])


def add_pedestal(b, rng):
    w = rng.uniform(0.35, 0.55)
    sp = b.spot(w * 0.75)
    if not sp:
        return
    x, z, yaw = sp
    h = rng.uniform(0.8, 1.2)
    m = marble_mat(rng) if rng.random() < 0.5 else paint_mat(rng, (0.0, 0.1), (0.7, 0.95))
    if b.add(BOX, [yaw_box(x, 0.0, z, w, h, w, yaw, m)], foot=(x, z, w * 0.75)):
        r = rng.uniform(0.12, 0.25)
        sm = metal_mat(rng) if rng.random() < 0.5 else marble_mat(rng)
        b.add(SPHERE, [sphere([x, h + r, z], r, **_k(sm))])


def add_bench(b, rng, m=None):
    Lb, d, h = rng.uniform(1.2, 2.0), rng.uniform(0.35, 0.5), rng.uniform(0.42, 0.5)
    sp = b.spot(Lb / 2, near_wall=rng.uniform(0.1, 0.5), depth=d / 2)
    if sp:
        x, z, yaw = sp
        b.add(BOX, [yaw_box(x, 0.0, z, Lb, h, d, yaw, m or wood_mat(rng))], foot=(x, z, Lb / 2))


def add_desk(b, rng):
    w, d = rng.uniform(1.1, 1.6), rng.uniform(0.6, 0.8)
    sp = b.spot(np.hypot(w, d) / 2 + 0.1, near_wall=rng.uniform(0.02, 0.8) if rng.random() < 0.5 else None,
                depth=d / 2)
    if not sp:
        return
    x, z, yaw = sp
    top_m = wood_mat(rng) if rng.random() < 0.6 else paint_mat(rng, (0.0, 0.1), (0.6, 0.95))
    leg_m = metal_mat(rng) if rng.random() < 0.5 else top_m
    hgt = rng.uniform(0.72, 0.76)
    prims = [yaw_box(x, hgt - 0.03, z, w, 0.03, d, yaw, top_m)]
    for s in (-1, 1):
        px, pz = _local(x, z, yaw, s * (w / 2 - 0.03), 0.0)
        prims.append(yaw_box(px, 0.0, pz, 0.04, hgt - 0.03, d * 0.9, yaw, leg_m))
    if not b.add(BOX, prims, foot=(x, z, np.hypot(w, d) / 2 + 0.1)):
        return
    # a monitor and a mug on it; a chair in front
    mx, mz = _local(x, z, yaw, rng.uniform(-0.2, 0.2), -d * 0.15)
    scr = mat("screen", (0.05, 0.05, 0.06), emit=jitter(rng, (0.35, 0.45, 0.6), 0.1) * rng.uniform(0.5, 1.5),
              seed=_seed(rng), on=rng.random() < 0.7, spec=0.6, shine=80.0)
    b.add(BOX, [yaw_box(mx, hgt + 0.12, mz, rng.uniform(0.45, 0.6), rng.uniform(0.28, 0.36), 0.03, yaw, scr)],
          check_camera=True)
    if rng.random() < 0.5:
        cx, cz = _local(x, z, yaw, rng.uniform(0.3, w / 2 - 0.1), d * 0.2)
        b.add(CYLINDER, [cylinder([cx, hgt, cz], [cx, hgt + 0.1, cz], 0.04, **_k(paint_mat(rng)))])
    if rng.random() < 0.7:
        cx, cz = _local(x, z, yaw, rng.uniform(-0.2, 0.2), d / 2 + 0.35)
        if b.free(cx, cz, 0.32, margin=-0.3):
            add_chair(b, rng, cx, cz, yaw + np.pi + rng.uniform(-0.5, 0.5))


def add_chair(b, rng, x, z, yaw):
    m = paint_mat(rng, (0.1, 0.7), (0.1, 0.6))
    sh = rng.uniform(0.44, 0.5)
    prims = [yaw_box(x, sh - 0.07, z, 0.46, 0.07, 0.46, yaw, m)]
    bx, bz = _local(x, z, yaw, 0.0, -0.21)
    prims.append(yaw_box(bx, sh, bz, 0.44, rng.uniform(0.35, 0.55), 0.05, yaw, m))
    prims.append(yaw_box(x, 0.0, z, 0.06, sh - 0.07, 0.06, yaw, metal_mat(rng, (0.15, 0.15, 0.16))))
    prims.append(yaw_box(x, 0.0, z, 0.5, 0.04, 0.5, yaw + np.pi / 4, metal_mat(rng, (0.15, 0.15, 0.16))))
    b.add(BOX, prims, foot=(x, z, 0.34))


def add_cabinet(b, rng):
    w, d, h = rng.uniform(0.5, 1.2), rng.uniform(0.4, 0.6), rng.uniform(0.7, 1.9)
    sp = b.spot(np.hypot(w, d) / 2, near_wall=0.02, depth=d / 2)
    if sp:
        x, z, yaw = sp
        h = min(h, b.ceil(x, z) - 0.3)
        if h > 0.4:
            b.add(BOX, [yaw_box(x, 0.0, z, w, h, d, yaw, paint_mat(rng, (0.0, 0.4), (0.3, 0.95)))],
                  foot=(x, z, np.hypot(w, d) / 2))


def add_round_table(b, rng):
    r = rng.uniform(0.35, 0.6)
    sp = b.spot(r)
    if sp:
        x, z, _ = sp
        h = rng.uniform(0.7, 0.75)
        m = wood_mat(rng) if rng.random() < 0.5 else paint_mat(rng, (0.0, 0.2), (0.7, 0.95))
        b.add(CYLINDER, [cylinder([x, h - 0.035, z], [x, h, z], r, **_k(m)),
                         cylinder([x, 0.0, z], [x, h - 0.035, z], 0.05, **_k(metal_mat(rng))),
                         cylinder([x, 0.0, z], [x, 0.03, z], r * 0.55, **_k(metal_mat(rng)))], foot=(x, z, r))


def add_rack(b, rng, x, z, yaw, length, depth, height, levels):
    m = metal_mat(rng, jitter(rng, pick(rng, [(0.2, 0.35, 0.65), (0.85, 0.45, 0.1), (0.5, 0.5, 0.52)]), 0.03))
    board = wood_mat(rng) if rng.random() < 0.5 else m
    prims = []
    for sx in (-1, 1):
        for sz in (-1, 1):
            px, pz = _local(x, z, yaw, sx * (length / 2 - 0.04), sz * (depth / 2 - 0.04))
            prims.append(yaw_box(px, 0.0, pz, 0.07, height, 0.07, yaw, m))
    ys = np.linspace(0.12, height - 0.05, levels)
    for y in ys:
        prims.append(yaw_box(x, y - 0.02, z, length, 0.04, depth, yaw, board))
    if not b.add(BOX, prims, foot=None):
        return
    # cartons and cans on the shelves
    gap = ys[1] - ys[0] if levels > 1 else 1.0
    for y in ys[:-1] if levels > 2 else ys:
        n = int(rng.integers(0, 4))
        for i in range(n):
            t = (i + 0.5) / max(n, 1) - 0.5 + rng.uniform(-0.05, 0.05)
            cx, cz = _local(x, z, yaw, t * (length - 0.3), rng.uniform(-0.05, 0.05))
            if rng.random() < 0.7:
                s = min(rng.uniform(0.25, 0.45), length / max(n, 1) - 0.05)
                h = min(s * rng.uniform(0.6, 1.0), gap - 0.1)
                cm = mat("cardboard", jitter(rng, (0.65, 0.5, 0.32), 0.05), (0.8, 0.75, 0.6), tape=0.0,
                         seed=_seed(rng))
                b.add(BOX, [yaw_box(cx, y + 0.02, cz, s, h, min(s, depth - 0.1), yaw + rng.uniform(-0.15, 0.15),
                                    cm)])
            else:
                r = rng.uniform(0.06, 0.14)
                h = min(rng.uniform(0.15, 0.4), gap - 0.1)
                b.add(CYLINDER, [cylinder([cx, y + 0.02, cz], [cx, y + 0.02 + h, cz], r, **_k(paint_mat(rng)))])


def add_sofa(b, rng):
    w, d = rng.uniform(1.6, 2.3), rng.uniform(0.8, 0.95)
    sp = b.spot(w / 2 + 0.05, near_wall=rng.uniform(0.05, 1.0) if rng.random() < 0.6 else None, depth=d / 2)
    if not sp:
        return
    x, z, yaw = sp
    m = mat("fabric", hsv(rng.random(), rng.uniform(0.1, 0.7), rng.uniform(0.2, 0.8)), seed=_seed(rng), spec=0.02,
            shine=6.0)
    prims = [yaw_box(x, 0.0, z, w, 0.42, d, yaw, m)]
    bx, bz = _local(x, z, yaw, 0.0, -d / 2 + 0.1)
    prims.append(yaw_box(bx, 0.42, bz, w, rng.uniform(0.3, 0.45), 0.2, yaw, m))
    for s in (-1, 1):
        ax, az = _local(x, z, yaw, s * (w / 2 - 0.1), 0.0)
        prims.append(yaw_box(ax, 0.42, az, 0.2, 0.2, d, yaw, m))
    b.add(BOX, prims, foot=(x, z, w / 2 + 0.05))


def add_floor_lamp(b, rng, color, power):
    sp = b.spot(0.25)
    if not sp:
        return
    x, z, _ = sp
    h = rng.uniform(1.3, 1.8)
    if b.add(CYLINDER, [cylinder([x, 0.0, z], [x, h, z], 0.02, **_k(metal_mat(rng))),
                        cylinder([x, 0.0, z], [x, 0.03, z], 0.16, **_k(metal_mat(rng)))], foot=(x, z, 0.25)):
        r = rng.uniform(0.14, 0.22)
        b.add(SPHERE, [sphere([x, h + r * 0.8, z], r, **_k(mat("lamp", color, emit=np.asarray(color) * 5.0)))])
        b.points.append((np.array([x, h + r * 0.8, z]), np.asarray(color) * power))


# ------------------------------------------------------------------ layouts: contents

WARM, NEUTRAL, COOL = np.array([1.0, 0.78, 0.52]), np.array([1.0, 0.93, 0.82]), np.array([0.82, 0.9, 1.0])
SODIUM = np.array([1.0, 0.62, 0.28])


def furnish(layout, rng, b: Builder, info: dict):
    room = b.room
    if layout == "hall":
        W, L, H = info["W"], info["L"], info["H"]
        # two rows of columns
        off = rng.uniform(0.9, 1.5)
        r = rng.uniform(0.16, 0.3)
        col_m = marble_mat(rng) if rng.random() < 0.5 else paint_mat(rng, (0.0, 0.15), (0.7, 0.95))
        plinth = rng.random() < 0.5
        step = rng.uniform(1.8, 2.6)
        zs = np.arange(rng.uniform(1.4, 2.4), L - 0.8, step)
        for sx in (-1, 1):
            for z in zs:
                x = sx * (W / 2 - off)
                if not b.free(x, z, r + (0.08 if plinth else 0.0), margin=0.0):
                    continue
                if b.add(CYLINDER, [cylinder([x, 0.0, z], [x, H, z], r, **_k(col_m))], foot=(x, z, r)) and plinth:
                    b.add(BOX, [box([x, 0.12, z], [r + 0.08, 0.12, r + 0.08], **_k(col_m))])
        for _ in range(int(rng.integers(1, 4))):
            add_bench(b, rng)
        for _ in range(int(rng.integers(0, 3))):
            add_pedestal(b, rng)
        for _ in range(int(rng.integers(0, 3))):
            add_plant(b, rng)
        if rng.random() < 0.5:
            add_ball(b, rng)
        for z in rng.uniform(1.5, L - 1.5, int(rng.integers(1, 3))):
            add_pendant(b, rng, rng.uniform(-0.5, 0.5), z, rng.uniform(0.2, 0.35), WARM, rng.uniform(1.5, 4.0),
                        rng.uniform(0.8, 1.3))
    elif layout == "attic":
        W, L = info["W"], info["L"]
        for _ in range(int(rng.integers(1, 3))):  # trunks against the knee walls
            w, d = rng.uniform(0.7, 1.1), rng.uniform(0.4, 0.6)
            sp = b.spot(w / 2, near_wall=0.05, depth=d / 2)
            if sp:
                x, z, yaw = sp
                h = min(rng.uniform(0.4, 0.65), b.ceil(x, z) - 0.2)
                if h > 0.25:
                    b.add(BOX, [yaw_box(x, 0.0, z, w, h, d, yaw, wood_mat(rng))], foot=(x, z, w / 2))
        for _ in range(int(rng.integers(1, 3))):  # stacks of cartons
            sp = b.spot(0.4)
            if sp:
                x, z, _ = sp
                y = 0.0
                for j in range(int(rng.integers(1, 4))):
                    s = rng.uniform(0.35, 0.55) * (0.9 ** j)
                    h = add_crate(b, rng, x + rng.uniform(-0.05, 0.05), z + rng.uniform(-0.05, 0.05), y, s)
                    if h is None:
                        break
                    y += h
                b.foot.append((x, z, 0.4))
        if rng.random() < 0.6:  # a rolled carpet lying on the floor
            r, ln = rng.uniform(0.1, 0.18), rng.uniform(1.2, 2.0)
            sp = b.spot(ln / 2)
            if sp:
                x, z, yaw = sp
                d = rot_y(yaw) @ np.array([1.0, 0.0, 0.0]) * ln / 2
                b.add(CYLINDER, [cylinder([x - d[0], r, z - d[2]], [x + d[0], r, z + d[2]], r,
                                          **_k(mat("carpet", hsv(rng.random(), 0.5, 0.5), seed=_seed(rng))))],
                      foot=(x, z, ln / 2))
        for _ in range(int(rng.integers(0, 3))):
            add_can(b, rng, h=rng.uniform(0.25, 0.7))
        for _ in range(int(rng.integers(0, 3))):
            add_ball(b, rng)
        if rng.random() < 0.5:
            add_cabinet(b, rng)
        add_pendant(b, rng, 0.0, rng.uniform(1.5, L - 1.5), 0.06, WARM, rng.uniform(1.0, 3.0), rng.uniform(0.4, 0.8))
    elif layout == "warehouse":
        W, L, H = info["W"], info["L"], info["H"]
        n_racks = int(rng.integers(1, 4))
        for i in range(n_racks):
            length, depth = rng.uniform(2.0, 3.6), rng.uniform(0.6, 0.9)
            height = min(rng.uniform(2.0, 3.2), H - 0.6)
            sp = b.spot(length / 2, near_wall=0.05 if rng.random() < 0.6 else None, depth=depth / 2)
            if sp:
                x, z, yaw = sp
                b.foot.append((x, z, length / 2))
                add_rack(b, rng, x, z, yaw, length, depth, height, int(rng.integers(3, 5)))
        for _ in range(int(rng.integers(1, 3))):  # pallets of crates
            sp = b.spot(0.7)
            if sp:
                x, z, yaw = sp
                wm = wood_mat(rng)
                if b.add(BOX, [yaw_box(x, 0.0, z, 1.2, 0.14, 1.0, yaw, wm)], foot=(x, z, 0.8)):
                    cx, cz = _local(x, z, yaw, rng.uniform(-0.2, 0.2), rng.uniform(-0.15, 0.15))
                    add_crate(b, rng, cx, cz, 0.14, rng.uniform(0.5, 0.8))
        bm = paint_mat(rng, (0.5, 0.9), (0.3, 0.8))
        for _ in range(int(rng.integers(1, 5))):  # barrels
            add_can(b, rng, r=rng.uniform(0.26, 0.32), h=rng.uniform(0.85, 0.95), m=bm)
        pm = metal_mat(rng)
        for i in range(int(rng.integers(1, 4))):  # pipes along the ceiling
            r = rng.uniform(0.05, 0.15)
            x = rng.uniform(-W / 2 + 0.5, W / 2 - 0.5)
            y = H - rng.uniform(0.25, 0.7)
            b.add(CYLINDER, [cylinder([x, y, 0.002], [x, y, L - 0.002], r, **_k(pm))])
        color = SODIUM if rng.random() < 0.5 else COOL
        for _ in range(int(rng.integers(2, 4))):
            add_pendant(b, rng, rng.uniform(-W / 2 + 1, W / 2 - 1), rng.uniform(1, L - 1), 0.16, color,
                        rng.uniform(3.0, 6.0), rng.uniform(0.8, 1.4))
    elif layout == "office":
        for _ in range(int(rng.integers(2, 5))):
            add_desk(b, rng)
        for _ in range(int(rng.integers(0, 3))):
            add_cabinet(b, rng)
        for _ in range(int(rng.integers(0, 3))):
            add_plant(b, rng)
        for _ in range(int(rng.integers(0, 3))):
            add_can(b, rng, r=rng.uniform(0.12, 0.18), h=rng.uniform(0.3, 0.4))
        if rng.random() < 0.4:
            add_round_table(b, rng)
        color = NEUTRAL if rng.random() < 0.5 else COOL
        poly = room.polygon
        for _ in range(int(rng.integers(2, 4))):
            x, z = rng.uniform(poly[:, 0].min() + 1, poly[:, 0].max() - 1), rng.uniform(1, poly[:, 1].max() - 1)
            b.points.append((np.array([x, info["H"] - 0.15, z]), color * rng.uniform(1.0, 2.0)))
    elif layout == "loft":
        W, L = info["W"], info["L"]
        if rng.random() < 0.8:
            add_sofa(b, rng)
        if rng.random() < 0.6:
            sp = b.spot(0.6)
            if sp:
                x, z, yaw = sp
                b.add(BOX, [yaw_box(x, 0.0, z, rng.uniform(0.8, 1.2), rng.uniform(0.35, 0.45), rng.uniform(0.5, 0.7),
                                    yaw, wood_mat(rng))], foot=(x, z, 0.6))
        for _ in range(int(rng.integers(0, 3))):
            add_pedestal(b, rng)
        for _ in range(int(rng.integers(0, 2))):
            add_cabinet(b, rng)
        for _ in range(int(rng.integers(0, 3))):
            add_plant(b, rng)
        if rng.random() < 0.5:
            add_round_table(b, rng)
        add_floor_lamp(b, rng, WARM, rng.uniform(1.0, 2.5))
        accent = [np.array([1.0, 0.25, 0.7]), np.array([0.2, 0.8, 1.0]), np.array([0.6, 0.3, 1.0]),
                  np.array([1.0, 0.5, 0.1])]
        poly = room.polygon
        for _ in range(int(rng.integers(1, 3))):
            x, z = rng.uniform(poly[:, 0].min() + 0.4, poly[:, 0].max() - 0.4), rng.uniform(0.5, L - 0.5)
            y = rng.uniform(0.3, 2.4)
            if room.clearance(np.array([x, y, z])) > 0.2:
                b.points.append((np.array([x, y, z]), pick(rng, accent) * rng.uniform(0.5, 1.5)))
