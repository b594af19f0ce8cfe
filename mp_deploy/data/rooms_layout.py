"""Floor plans of the room scenes (mp_deploy.data.rooms): rooms, L-shaped rooms, rooms with an alcove and
corridors, as unions of axis-aligned floor rectangles under one flat ceiling, with doors and windows.

The walls are the boundary of the union of rectangles: vertical axis-aligned segments from the floor (y = 0) to
the ceiling (y = height), each facing into the room. A camera inside the union sees, along any ray, the nearest
of the floor plane, the ceiling plane and the wall segments; no wall needs a height test because the floor and
ceiling planes are nearer wherever a wall's plane is met above or below the room.

Openings are holes in a wall: a ray that meets a wall inside a hole goes on into the opening's jamb box (the
reveal, recessed `depth` behind the wall plane); a closed door's panel or a window's pane is the jamb's back
face; a doorway's jamb opens into a further box (a space beyond, with its own floor and ceiling). Every face is a
flat surface with a constant normal, a label (the bottom of a door's jamb and the space beyond's floor are floor,
its ceiling is ceiling, the rest wall) and a material.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np

OTHER = {0: 2, 2: 0}  # a wall on the plane x = c runs along z, and the other way round


@dataclass
class Flat:
    """A flat surface of the room: its unit normal, class label and material."""

    normal: tuple
    label: int
    material: int


@dataclass
class Opening:
    """A hole [u0, u1] x [y0, y1] in a wall (u along the wall), its jamb `depth` behind the wall plane and, for a
    doorway, the box (lo, hi) of the space seen through it. `faces` / `beyond_faces` map an exit face (axis * 2 +
    (1 if the ray leaves through the + side)) to a surface id; the scene fills them in."""

    kind: str  # "door", "window" or "doorway"
    u0: float
    u1: float
    y0: float
    y1: float
    depth: float
    beyond: tuple | None = None
    faces: np.ndarray | None = None
    beyond_faces: np.ndarray | None = None
    jamb: tuple | None = None  # (lo, hi) world corners of the jamb box
    daylight: bool = False  # a window with a bright sky

    @property
    def surfaces(self) -> np.ndarray:
        """The surface ids of its faces (jamb and beyond)."""
        ids = [self.faces] + ([self.beyond_faces] if self.beyond is not None else [])
        ids = np.concatenate(ids)
        return ids[ids >= 0]

    def contains(self, u, y):
        return (u > self.u0) & (u < self.u1) & (y > self.y0) & (y < self.y1)


@dataclass
class Wall:
    """The wall on the plane (axis coordinate) = c, from lo to hi along the other horizontal axis; `inward` is
    the sign of its normal along `axis` (towards the room)."""

    axis: int
    c: float
    lo: float
    hi: float
    inward: float
    openings: list = field(default_factory=list)
    decals: list = field(default_factory=list)  # (u0, u1, y0, y1, material): paintings, door frames
    occludes: bool = False  # at a reflex corner, so it can cast shadows into the room
    sid: int = -1  # surface id

    @property
    def u_axis(self) -> int:
        return OTHER[self.axis]

    @property
    def length(self) -> float:
        return self.hi - self.lo

    def point(self, u: float, off: float = 0.0) -> np.ndarray:
        """The floor point (x, z) at `u` along the wall, `off` metres into the room."""
        p = np.zeros(3)
        p[self.axis], p[self.u_axis] = self.c + self.inward * off, u
        return p[[0, 2]]

    def distance(self, x, z):
        """Distance in the floor plane from points (x, z) to this wall segment."""
        a, u = (x, z) if self.axis == 0 else (z, x)
        du = np.maximum(np.maximum(self.lo - u, 0.0), u - self.hi)
        return np.hypot(a - self.c, du)


@dataclass
class Plan:
    kind: str  # "room", "L", "alcove", "partition" or "corridor"
    rects: list  # (x0, z0, x1, z1)
    height: float
    walls: list

    def inside(self, x: float, z: float, margin: float = 0.0) -> bool:
        """Whether the floor point lies inside the room, at least `margin` from every wall."""
        if not any(r[0] < x < r[2] and r[1] < z < r[3] for r in self.rects):
            return False
        return margin <= 0 or self.wall_distance(x, z) >= margin

    def wall_distance(self, x, z):
        return np.min([w.distance(x, z) for w in self.walls], axis=0)

    def rect_free(self, lo: np.ndarray, hi: np.ndarray, margin: float = 0.0) -> bool:
        """Whether the floor rectangle [lo, hi] (x, z) lies inside the room and no wall passes through it."""
        corners = [(lo[0], lo[1]), (hi[0], lo[1]), (lo[0], hi[1]), (hi[0], hi[1]), ((lo[0] + hi[0]) / 2,
                                                                                  (lo[1] + hi[1]) / 2)]
        if not all(self.inside(x, z) for x, z in corners):
            return False
        for w in self.walls:  # a wall crossing the rectangle (grown by the margin) would cut it
            a_lo, a_hi = (lo[0], hi[0]) if w.axis == 0 else (lo[1], hi[1])
            u_lo, u_hi = (lo[1], hi[1]) if w.axis == 0 else (lo[0], hi[0])
            if a_lo - margin < w.c < a_hi + margin and w.lo < u_hi + margin and w.hi > u_lo - margin:
                return False
        return True

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        r = np.array(self.rects)
        return r[:, :2].min(0), r[:, 2:].max(0)

    def corners(self) -> np.ndarray:
        """Corners of every box the camera may see (the rectangles up to the ceiling, the spaces beyond doorways);
        the largest depth of a view is reached at one of them."""
        pts = [(r[0], y, r[1]) for r in self.rects for y in (0.0, self.height)]
        pts += [(r[2], y, r[3]) for r in self.rects for y in (0.0, self.height)]
        pts += [(r[0], y, r[3]) for r in self.rects for y in (0.0, self.height)]
        pts += [(r[2], y, r[1]) for r in self.rects for y in (0.0, self.height)]
        for w in self.walls:
            for op in w.openings:
                boxes = [op.jamb] + ([op.beyond] if op.beyond is not None else [])
                for lo, hi in boxes:
                    pts += [(x, y, z) for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])]
        return np.array(pts, float)


# ------------------------------------------------------------------ plans

def union_walls(rects: list) -> list[Wall]:
    """The boundary of a union of rectangles as maximal wall segments facing into the union."""

    def inside(x, z):
        return any(r[0] < x < r[2] and r[1] < z < r[3] for r in rects)

    xs = sorted({v for r in rects for v in (r[0], r[2])})
    zs = sorted({v for r in rects for v in (r[1], r[3])})
    pieces = []  # (axis, c, lo, hi, inward)
    eps = 1e-4
    for r in rects:
        edges = [(0, r[0], r[1], r[3], 1.0), (0, r[2], r[1], r[3], -1.0),
                 (2, r[1], r[0], r[2], 1.0), (2, r[3], r[0], r[2], -1.0)]
        for axis, c, lo, hi, inward in edges:
            cuts = [lo] + [v for v in (zs if axis == 0 else xs) if lo < v < hi] + [hi]
            for a, b in pairwise(cuts):
                m = (a + b) / 2
                out = (c - inward * eps, m) if axis == 0 else (m, c - inward * eps)
                inn = (c + inward * eps, m) if axis == 0 else (m, c + inward * eps)
                if not inside(*out) and inside(*inn):
                    pieces.append((axis, c, a, b, inward))
    pieces.sort()
    walls: list[Wall] = []
    for axis, c, a, b, inward in pieces:  # merge collinear neighbours
        last = walls[-1] if walls else None
        if last and last.axis == axis and last.c == c and last.inward == inward and abs(last.hi - a) < 1e-9:
            last.hi = b
        else:
            walls.append(Wall(axis, c, a, b, inward))
    mark_reflex(walls, inside)
    return walls


def mark_reflex(walls: list[Wall], inside) -> None:
    """Mark the walls that end at a reflex (inner) corner: only they can shadow one part of the room from
    another."""
    eps = 1e-3
    for w in walls:
        for u in (w.lo, w.hi):
            p = np.zeros(3)
            p[w.axis], p[w.u_axis] = w.c, u
            quads = sum(inside(p[0] + dx, p[2] + dz) for dx in (-eps, eps) for dz in (-eps, eps))
            if quads == 3:
                w.occludes = True


def sample_plan(rng: np.random.Generator, corridor: bool | None = None) -> Plan:
    """A random floor plan: a room (box, L-shaped, with an alcove or a partition) or a corridor."""
    if corridor is None:
        corridor = rng.random() < 0.2
    if corridor:
        width, length = rng.uniform(1.5, 2.6), rng.uniform(5.5, 9.0)
        height = rng.uniform(2.4, 2.9)
        rects = [(0.0, 0.0, width, length)]
        if rng.random() < 0.5:  # a side branch
            bw, bd = rng.uniform(1.3, 2.2), rng.uniform(1.2, 2.8)
            z0 = rng.uniform(2.2, length - bw - 0.8)
            rects.append((width, z0, width + bd, z0 + bw) if rng.random() < 0.5 else (-bd, z0, 0.0, z0 + bw))
        return Plan("corridor", rects, height, union_walls(rects))
    width, length, height = rng.uniform(3.2, 6.5), rng.uniform(3.5, 7.2), rng.uniform(2.45, 3.2)
    kind = str(rng.choice(["room", "L", "alcove", "partition"], p=[0.3, 0.25, 0.2, 0.25]))
    rects = [(0.0, 0.0, width, length)]
    if kind == "L":
        width, length = max(width, 4.2), max(length, 4.5)
        cw, cl = width * rng.uniform(0.35, 0.6), length * rng.uniform(0.3, 0.55)
        x_cut = (width - cw, width) if rng.random() < 0.5 else (0.0, cw)
        rects = [(0.0, 0.0, width, length - cl)]
        rects.append((0.0, length - cl, x_cut[0], length) if x_cut[0] > 0 else (x_cut[1], length - cl, width,
                                                                                  length))
    elif kind == "alcove":
        aw, ad = rng.uniform(1.0, min(2.6, width - 0.8)), rng.uniform(0.6, 1.6)
        a0 = rng.uniform(0.3, width - aw - 0.3)
        side = rng.integers(3)  # back, left or right wall
        if side == 0:
            rects.append((a0, length, a0 + aw, length + ad))
        else:
            aw = min(aw, length - 1.0)
            z0 = rng.uniform(0.5, length - aw - 0.3)
            rects.append((-ad, z0, 0.0, z0 + aw) if side == 1 else (width, z0, width + ad, z0 + aw))
    return Plan(kind, rects, height, union_walls(rects))


# ------------------------------------------------------------------ openings

def add_openings(rng: np.random.Generator, plan: Plan) -> None:
    """Doors (closed, recessed in their frames), doorways (open onto a space beyond) and windows (recessed
    panes) on the walls, apart from each other and from the wall ends."""
    corridor = plan.kind == "corridor"
    doors = 0
    max_doors = 4 if corridor else 2
    for w in rng.permutation(len(plan.walls)):
        wall = plan.walls[w]
        if wall.length < 1.3:
            continue
        long_side = wall.axis == 0 if corridor else True
        for _ in range(3 if corridor and long_side else 2):
            r = rng.random()
            if r < (0.45 if corridor and long_side else 0.3) and doors < max_doors:
                kind = "door" if rng.random() < 0.55 else "doorway"
                width = rng.uniform(0.78, 0.98) if rng.random() < 0.85 else rng.uniform(1.3, 1.7)
                y0, y1 = 0.0, min(rng.uniform(1.98, 2.2), plan.height - 0.12)
                depth = rng.uniform(0.05, 0.16) if kind == "door" else rng.uniform(0.1, 0.25)
            elif r < 0.75 and (not corridor or not long_side or rng.random() < 0.3):
                kind = "window"
                width = rng.uniform(0.6, min(2.4, wall.length - 0.4))
                y0 = rng.uniform(0.55, 1.1)
                y1 = min(plan.height - 0.12, y0 + rng.uniform(0.9, 1.7))
                depth = rng.uniform(0.12, 0.35)
            else:
                continue
            if wall.length - 0.3 < width:
                continue
            u0 = rng.uniform(wall.lo + 0.15, wall.hi - 0.15 - width)
            if any(u0 - 0.2 < op.u1 and u0 + width + 0.2 > op.u0 for op in wall.openings):
                continue
            op = Opening(kind, u0, u0 + width, y0, y1, depth)
            op.jamb = box_behind(wall, op.u0, op.u1, op.y0, op.y1, 0.0, depth)
            if kind == "doorway":
                wider = rng.uniform(0.0, 1.5, 2)
                far = rng.uniform(1.2, 2.8)
                op.beyond = box_behind(wall, op.u0 - wider[0], op.u1 + wider[1], 0.0,
                                       max(plan.height, y1 + 0.2) + rng.uniform(-0.2, 0.3), depth, depth + far)
            wall.openings.append(op)
            doors += kind != "window"


def box_behind(wall: Wall, u0, u1, y0, y1, near, far) -> tuple[np.ndarray, np.ndarray]:
    """World corners (lo, hi) of the box behind a wall between `near` and `far` metres behind its plane."""
    lo, hi = np.zeros(3), np.zeros(3)
    a = sorted((wall.c - wall.inward * near, wall.c - wall.inward * far))
    lo[wall.axis], hi[wall.axis] = a
    lo[wall.u_axis], hi[wall.u_axis] = u0, u1
    lo[1], hi[1] = y0, y1
    return lo, hi


# ------------------------------------------------------------------ ray casting

def box_exit(o: np.ndarray, rd: np.ndarray, lo: np.ndarray, hi: np.ndarray):
    """Rays (3, M) that pass through an axis-aligned box: the range where each leaves it, and the face (axis * 2
    + (1 if through the + side)); render.room_exit for (3, M) rays."""
    best = np.full(rd.shape[1], np.inf, np.float32)
    face = np.zeros(rd.shape[1], np.int64)
    for k in range(3):
        d = rd[k]
        t = np.where(d > 0, (np.float32(hi[k]) - o[k]) / d, (np.float32(lo[k]) - o[k]) / d)
        t[d == 0] = np.inf
        nearer = t < best
        best = np.where(nearer, t, best)
        face = np.where(nearer, 2 * k + (d > 0), face)
    return best, face


def cast_room(plan: Plan, floor_id: int, ceiling_id: int, o: np.ndarray, rd: np.ndarray):
    """Range and surface id of each ray's (rd: (3, N) float32) hit with the room: floor, ceiling, walls, and
    through the holes of openings, the jamb faces and the spaces beyond doorways."""
    o = o.astype(np.float32)
    dy = rd[1]
    t = np.where(dy < 0, -o[1] / dy, np.where(dy > 0, (np.float32(plan.height) - o[1]) / dy, np.float32(np.inf)))
    sid = np.where(dy < 0, floor_id, ceiling_id).astype(np.int32)
    for wall in plan.walls:
        a, u = wall.axis, wall.u_axis
        d = rd[a]
        tw = (np.float32(wall.c) - o[a]) / d
        pu = o[u] + tw * rd[u]
        ok = (d * np.float32(wall.inward) < 0) & (tw > 0) & (tw < t) & (pu >= wall.lo) & (pu <= wall.hi)
        t = np.where(ok, tw, t)
        sid = np.where(ok, wall.sid, sid)
    for wall in plan.walls:
        if not wall.openings:
            continue
        rows = np.nonzero(sid == wall.sid)[0]
        tr = t[rows]
        pu, py = o[wall.u_axis] + tr * rd[wall.u_axis, rows], o[1] + tr * rd[1, rows]
        for op in wall.openings:
            r = rows[op.contains(pu, py)]
            if not len(r):
                continue
            sub = np.take(rd, r, axis=1)
            te, face = box_exit(o, sub, *op.jamb)
            ids = op.faces[face]
            if op.beyond is not None:
                through = np.nonzero(face // 2 == wall.axis)[0]
                if len(through):
                    te[through], face2 = box_exit(o, np.take(sub, through, axis=1), *op.beyond)
                    ids[through] = op.beyond_faces[face2]
            t[r], sid[r] = te, ids
    return t, sid


def walls_shadow(plan: Plan, light: np.ndarray, dirs: np.ndarray, tmax: np.ndarray, sid: np.ndarray,
                 out: np.ndarray) -> None:
    """Shadow rays from `light` along `dirs` (3, M) towards surface points (`sid`, `tmax` away): the walls at
    reflex corners block them (outside their holes), and a point inside an opening is lit only through its hole
    (both the wall plane and the jamb's back plane must be crossed inside it)."""
    light = light.astype(np.float32)
    for wall in plan.walls:
        a, u = wall.axis, wall.u_axis
        if wall.occludes:
            cross = plane_crossing(light, dirs, tmax, a, wall.c, u)
            if cross is not None:
                rows, pu, py = cross
                block = (pu >= wall.lo) & (pu <= wall.hi) & (py >= 0) & (py <= plan.height)
                for op in wall.openings:
                    block &= ~op.contains(pu, py)
                out[rows[block]] = True
        for op in wall.openings:
            rows = np.nonzero(np.isin(sid, op.surfaces))[0]
            if not len(rows):
                continue
            sub, tm = np.take(dirs, rows, axis=1), tmax[rows]
            for plane in (wall.c, wall.c - wall.inward * op.depth):
                cross = plane_crossing(light, sub, tm, a, plane, u)
                if cross is not None:
                    r, pu, py = cross
                    out[rows[r[~op.contains(pu, py)]]] = True


def plane_crossing(light, dirs, tmax, axis: int, c: float, u: int):
    """Rays from `light` that cross the plane (axis coordinate) = c before tmax: their indices and the crossing
    point's coordinates along `u` and y."""
    tc = (np.float32(c) - light[axis]) / dirs[axis]
    rows = np.nonzero((tc > 1e-4) & (tc < tmax))[0]
    if not len(rows):
        return None
    tr = tc[rows]
    return rows, light[u] + tr * dirs[u, rows], light[1] + tr * dirs[1, rows]
