"""Parts and things of the room scenes (mp_deploy.data.rooms): analytic surfaces with exact ray hits.

A part is one primitive (an oriented box, a sphere, a vertical capped cylinder or a capsule) with its material
and whether it casts shadows. A thing is one instance: parts of one class label (a table's top and legs, a
lamp's base, pole and shade) with a bounding sphere around them and, when it stands on the floor, a footprint
(for placement and contact shading).

`cast` keeps each ray's nearest part; `shadowed` answers shadow rays sent from a light towards surface points.
Both cull by bounding spheres, first per thing (for camera rays by the sphere's exact outline on the image), then
per part, so that each primitive only meets the rays near it.

Rays are float32 and laid out as (3, N) arrays (x, y and z rows): numpy broadcasts a (3, 1) or (N,) operand
over such arrays at full speed, where (N, 3) arrays against (3,) or (N, 1) run an inner loop of three.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from mp_deploy.data.render import box_axes

F32 = np.float32
INF = np.float32(np.inf)
EPS = np.float32(1e-6)


def f32v(v) -> np.ndarray:
    return np.asarray(v, np.float32)


def take(a: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Columns `rows` of a (k, N) array (np.take is several times faster than a[:, rows])."""
    return np.take(a, rows, axis=1)


def box_range(ol: np.ndarray, dl: np.ndarray, half: np.ndarray) -> np.ndarray:
    """Slab test of rays (local origin ol (3,), local directions dl (3, M)) with the box |x| <= half: the entry
    range (inf on a miss or when the origin is inside). A ray parallel to a slab gives +-inf there (NaN exactly
    on its boundary, which counts as a miss)."""
    inv = F32(1.0) / dl
    t1, t2 = (-half - ol)[:, None] * inv, (half - ol)[:, None] * inv
    near = np.minimum(t1, t2).max(axis=0)
    far = np.maximum(t1, t2).min(axis=0)
    return np.where((near <= far) & (near > EPS), near, INF)


def sphere_range(oc: np.ndarray, c: np.float32, rd: np.ndarray) -> np.ndarray:
    """Rays from o (oc = o - centre, c = |oc|^2 - r^2) to a sphere: the entry range (inf on a miss)."""
    b = oc @ rd
    h = b * b - c
    t = -b - np.sqrt(np.maximum(h, 0))
    return np.where((h >= 0) & (t > EPS), t, INF)


class Part:
    """A primitive: `hit(o, rd)` -> entry range per ray (inf: miss), `normal(p)` for hit points (3, M),
    `frame(p, n)` -> texture-frame points and normals, `bound` (centre, radius) and `bound32` for culling,
    `lowest` (height of its lowest point) and `moved(rotation, yaw, offset)` -> a copy turned about +y and moved."""

    material: int
    shadow: bool

    def frame(self, p, n):
        return p, n

    def set_bound(self, centre, radius) -> None:
        self.bound = (np.asarray(centre, float), float(radius))
        self.bound32 = (f32v(centre), F32(radius))


class Box(Part):
    """A box of half extents `half` turned by `yaw` radians about +y (the axes of render.box_axes)."""

    def __init__(self, center, half, yaw: float = 0.0, material: int = 0, shadow: bool = True):
        self.center, self.half, self.yaw = np.asarray(center, float), np.asarray(half, float), float(yaw)
        self.material, self.shadow = material, shadow
        self.axes = box_axes(self.yaw).astype(np.float32)  # rows: the box's axes in world coordinates
        self.square = abs(np.sin(self.yaw)) < 1e-9 and np.cos(self.yaw) > 0  # axes are the world's
        self.c32, self.h32 = f32v(self.center), f32v(self.half)
        self.set_bound(self.center, math.sqrt(self.half @ self.half))

    @property
    def lowest(self) -> float:
        return float(self.center[1] - self.half[1])

    def hit(self, o, rd):
        if self.square:
            return box_range(o - self.c32, rd, self.h32)
        return box_range(self.axes @ (o - self.c32), self.axes @ rd, self.h32)

    def local(self, p):
        return self.axes @ (p - self.c32[:, None])

    def normal(self, p):
        q = self.local(p) / self.h32[:, None]
        k = np.argmax(np.abs(q), axis=0)
        cols = np.arange(q.shape[1])
        n = np.zeros_like(q)
        n[k, cols] = np.sign(q[k, cols])
        return self.axes.T @ n

    def frame(self, p, n):
        """Texture coordinates in the box's own axes (so grain and tiles follow a turned table)."""
        if self.square:
            return p, n
        return self.local(p) + self.c32[:, None], self.axes @ n

    def moved(self, rotation: np.ndarray, yaw: float, offset: np.ndarray) -> Box:
        return Box(rotation @ self.center + offset, self.half, self.yaw + yaw, self.material, self.shadow)


class Ball(Part):
    """A sphere."""

    def __init__(self, center, radius: float, material: int = 0, shadow: bool = True):
        self.center, self.radius = np.asarray(center, float), float(radius)
        self.material, self.shadow = material, shadow
        self.c32 = f32v(self.center)
        self.set_bound(self.center, self.radius)

    @property
    def lowest(self) -> float:
        return float(self.center[1] - self.radius)

    def hit(self, o, rd):
        oc = o - self.c32
        return sphere_range(oc, oc @ oc - F32(self.radius * self.radius), rd)

    def normal(self, p):
        return (p - self.c32[:, None]) * F32(1.0 / self.radius)

    def moved(self, rotation, yaw, offset) -> Ball:
        return Ball(rotation @ self.center + offset, self.radius, self.material, self.shadow)


class Cylinder(Part):
    """A vertical capped cylinder over the floor point `center_xz`, from height y0 to y1."""

    def __init__(self, center_xz, y0: float, y1: float, radius: float, material: int = 0, shadow: bool = True):
        self.center_xz = np.asarray(center_xz, float)
        self.y0, self.y1, self.radius = float(y0), float(y1), float(radius)
        self.material, self.shadow = material, shadow
        half = (self.y1 - self.y0) / 2
        self.set_bound([self.center_xz[0], self.y0 + half, self.center_xz[1]], math.hypot(half, self.radius))

    @property
    def lowest(self) -> float:
        return self.y0

    def hit(self, o, rd):
        """The side (a quadratic in x, z) within [y0, y1], else the cap facing the origin."""
        ox, oz = F32(o[0] - self.center_xz[0]), F32(o[2] - self.center_xz[1])
        r2 = F32(self.radius * self.radius)
        dx, dy, dz = rd
        a = dx * dx + dz * dz
        b = ox * dx + oz * dz
        h = b * b - a * (ox * ox + oz * oz - r2)
        t = (-b - np.sqrt(np.maximum(h, 0))) / a
        y = F32(o[1]) + t * dy
        t = np.where((h >= 0) & (t > EPS) & (y >= self.y0) & (y <= self.y1), t, INF)
        if o[1] > self.y1 or o[1] < self.y0:  # the cap on the origin's side
            tc = (F32(self.y1 if o[1] > self.y1 else self.y0) - F32(o[1])) / dy
            px, pz = ox + tc * dx, oz + tc * dz
            t = np.where((tc > EPS) & (px * px + pz * pz <= r2) & (tc < t), tc, t)
        return t

    def normal(self, p):
        rx, rz = p[0] - F32(self.center_xz[0]), p[2] - F32(self.center_xz[1])
        radial = np.sqrt(rx * rx + rz * rz)
        side_err = np.abs(radial - F32(self.radius))
        top_err, bottom_err = np.abs(p[1] - F32(self.y1)), np.abs(p[1] - F32(self.y0))
        inv = F32(1.0) / np.maximum(radial, EPS)
        cap = np.minimum(top_err, bottom_err) < side_err
        n = np.stack([rx * inv, np.zeros_like(rx), rz * inv])
        n[:, cap] = 0.0
        n[1, cap] = np.where(top_err[cap] < bottom_err[cap], F32(1), F32(-1))
        return n

    def moved(self, rotation, yaw, offset) -> Cylinder:
        c = rotation @ np.array([self.center_xz[0], 0.0, self.center_xz[1]]) + offset
        return Cylinder(c[[0, 2]], self.y0 + offset[1], self.y1 + offset[1], self.radius, self.material, self.shadow)


class Capsule(Part):
    """A segment a-b grown by `radius` (limbs and torsos of the people)."""

    def __init__(self, a, b, radius: float, material: int = 0, shadow: bool = True):
        self.a, self.b, self.radius = np.asarray(a, float), np.asarray(b, float), float(radius)
        self.material, self.shadow = material, shadow
        self.a32 = f32v(self.a)
        self.ba = f32v(self.b - self.a)
        self.baba = F32(self.ba @ self.ba)
        self.set_bound((self.a + self.b) / 2, math.sqrt(self.baba) / 2 + self.radius)

    @property
    def lowest(self) -> float:
        return float(min(self.a[1], self.b[1]) - self.radius)

    def hit(self, o, rd):
        """The closed-form capsule intersection: the body's quadric, else the end sphere on the ray's side."""
        ba, baba, r2 = self.ba, self.baba, F32(self.radius * self.radius)
        oa = o - self.a32
        baoa, oaoa = F32(ba @ oa), F32(oa @ oa)
        bard, rdoa = ba @ rd, oa @ rd
        k2 = baba - bard * bard
        k1 = baba * rdoa - baoa * bard
        k0 = baba * oaoa - baoa * baoa - r2 * baba
        h = k1 * k1 - k2 * k0
        t = (-k1 - np.sqrt(np.maximum(h, 0))) / k2
        y = baoa + t * bard
        body = (y > 0) & (y < baba)
        at_a = y <= 0  # else the sphere at b, with ob = oa - ba
        ob = oa - ba
        bc = np.where(at_a, rdoa, rdoa - bard)
        cc = np.where(at_a, oaoa - r2, F32(ob @ ob) - r2)
        hc = bc * bc - cc
        tc = -bc - np.sqrt(np.maximum(hc, 0))
        t = np.where(body, t, np.where(hc >= 0, tc, INF))
        return np.where((h >= 0) & (t > EPS), t, INF)

    def normal(self, p):
        rel = p - self.a32[:, None]
        s = np.clip((self.ba @ rel) / self.baba, 0, 1)
        return (rel - self.ba[:, None] * s) * F32(1.0 / self.radius)

    def moved(self, rotation, yaw, offset) -> Capsule:
        return Capsule(rotation @ self.a + offset, rotation @ self.b + offset, self.radius, self.material, self.shadow)


@dataclass
class Thing:
    """One instance: parts sharing a class label. `footprint` (cx, cz, hx, hz, yaw) is the floor rectangle it
    stands on (None for things that do not touch the floor); `bound` is a sphere around all its parts."""

    label: int
    parts: list
    footprint: tuple | None = None
    instance: int = 0
    bound: tuple = field(init=False)
    bound32: tuple = field(init=False)

    def __post_init__(self):
        centres = np.array([p.bound[0] for p in self.parts])
        radii = np.array([p.bound[1] for p in self.parts])
        centre = ((centres - radii[:, None]).min(0) + (centres + radii[:, None]).max(0)) / 2
        self.bound = centre, float((np.sqrt(((centres - centre) ** 2).sum(1)) + radii).max())
        self.bound32 = f32v(self.bound[0]), F32(self.bound[1])

    def moved(self, x: float, z: float, yaw: float, lift: float = 0.0) -> Thing:
        """This thing (built around the origin, facing +z) turned by `yaw` and moved to (x, lift, z)."""
        c, s = np.cos(yaw), np.sin(yaw)
        rotation = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])  # local +z -> (sin yaw, 0, cos yaw)
        offset = np.array([x, lift, z])
        foot = None
        if self.footprint is not None:
            fx, fz, hx, hz, fyaw = self.footprint
            p = rotation @ np.array([fx, 0.0, fz]) + offset
            foot = (float(p[0]), float(p[2]), hx, hz, fyaw + yaw)
        return Thing(self.label, [p.moved(rotation, yaw, offset) for p in self.parts], foot, self.instance)


def near_rows(o, rd, centre, radius, tmax=None) -> np.ndarray:
    """Indices of the rays (float32 unit directions (3, M) from `o`) that meet a sphere in front of the origin
    and, given `tmax` per ray, could reach it before tmax: a ray meets the sphere iff its angle to the centre is
    at most asin(radius / distance) (rays_near of mp_deploy.data.render, as one dot product per ray)."""
    oc = centre - o
    dist2 = F32(oc @ oc)
    if dist2 <= radius * radius:
        return np.arange(rd.shape[1])
    dist = np.sqrt(dist2)
    ok = (oc / dist) @ rd >= np.sqrt(dist2 - radius * radius) / dist
    if tmax is not None:
        ok &= tmax > dist - radius
    return np.nonzero(ok)[0]


class Screen:
    """The image of a camera, to cull camera rays: the pixels (row-major ray indices) within the outline of a
    bounding sphere on the image, from its exact tangent lines; None when the sphere reaches the camera's plane."""

    def __init__(self, camera, h: int, w: int):
        self.position, self.h, self.w = camera.position, h, w
        self.axes = np.stack([camera.right, camera.up, camera.forward])
        self.f = camera.focal(w)

    def rows(self, centre, radius: float) -> np.ndarray | None:
        x, y, z = self.axes @ (np.asarray(centre, float) - self.position)
        k = z * z - radius * radius
        if z <= radius or k < 1e-3:
            return None
        spans = []
        for c, n, sign in ((x, self.w, 1.0), (y, self.h, -1.0)):
            root = radius * np.sqrt(max(c * c + k, 0.0))
            s = np.array([(c * z - root) / k, (c * z + root) / k])  # tangent slopes
            px = n / 2.0 + sign * self.f * s - 0.5
            spans.append((max(int(np.floor(px.min())) - 1, 0), min(int(np.ceil(px.max())) + 1, n - 1)))
        (u0, u1), (v0, v1) = spans
        if u0 > u1 or v0 > v1:
            return np.zeros(0, np.int64)
        return (np.arange(v0, v1 + 1)[:, None] * self.w + np.arange(u0, u1 + 1)[None, :]).ravel()


def cast(o, rd, things: list[Thing], first_ids: list[int], t: np.ndarray, pid: np.ndarray,
         screen: Screen | None = None) -> None:
    """Nearest hits of the rays `rd` (3, N) from `o` with the things' parts: where a part is nearer than `t`,
    write its range into t and its id (the thing's first id + the part's index) into pid. `screen` culls camera
    rays by the image."""
    for thing, first in zip(things, first_ids):
        rows = screen.rows(*thing.bound) if screen is not None else None
        if rows is None:
            rows = near_rows(o, rd, *thing.bound32)
        if not len(rows):
            continue
        sub = take(rd, rows)
        for k, part in enumerate(thing.parts):
            near = near_rows(o, sub, *part.bound32)
            if not len(near):
                continue
            r = rows[near]
            tp = part.hit(o, take(sub, near))
            closer = tp < t[r]
            t[r[closer]] = tp[closer]
            pid[r[closer]] = first + k


def shadowed(light, dirs, tmax, things: list[Thing], out: np.ndarray) -> None:
    """Shadow rays from the point `light` along unit `dirs` (3, M) to surface points `tmax` away: set `out`
    where a shadow-casting part lies in between. Rays already in shadow are not tested again."""
    for thing in things:
        rows = near_rows(light, dirs, *thing.bound32, tmax=tmax)
        rows = rows[~out[rows]]
        if not len(rows):
            continue
        sub, tm = take(dirs, rows), tmax[rows]
        for part in thing.parts:
            if not part.shadow:
                continue
            near = near_rows(light, sub, *part.bound32, tmax=tm)
            if not len(near):
                continue
            out[rows[near[part.hit(light, take(sub, near)) < tm[near]]]] = True
