"""Geometry of the evaluation-only scene family (mp_deploy.data.unseen): camera, primitives, ray intersection.

Written independently of the training generator; shares no code with it. World frame: metres, y up, the floor
at y = 0. Camera frame: x right, y up, z along the optical axis (forward). Ray directions are unit vectors, so
every intersector returns the distance along the ray (np.inf where the ray misses); the z-depth of a hit is that
distance times the cosine between the ray and the optical axis (UnseenCamera.rays returns that cosine).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EPS = 1e-4


def dot(a: np.ndarray, b: np.ndarray):
    """Row-wise dot product of (N, 3) / (3,) arrays (either side may be a single vector)."""
    if a.ndim == 1 and b.ndim == 1:
        return float(a @ b)
    if b.ndim == 1:
        return a @ b
    if a.ndim == 1:
        return b @ a
    return np.einsum("ij,ij->i", a, b)


def max3(a: np.ndarray) -> np.ndarray:
    """Row-wise maximum of an (N, 3) array (faster than a.max(axis=1))."""
    return np.maximum(np.maximum(a[:, 0], a[:, 1]), a[:, 2])


def min3(a: np.ndarray) -> np.ndarray:
    return np.minimum(np.minimum(a[:, 0], a[:, 1]), a[:, 2])


def unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def rot_y(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_x(a: float) -> np.ndarray:
    """Positive angle turns +z towards +y (a camera with positive pitch looks up) and +y towards -z."""
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, s], [0.0, -s, c]])


def rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def frame_from_axis(axis: np.ndarray) -> np.ndarray:
    """A rotation whose second column (local y) is `axis`."""
    y = unit(axis)
    helper = np.array([1.0, 0.0, 0.0]) if abs(y[0]) < 0.9 else np.array([0.0, 0.0, 1.0])
    x = unit(np.cross(y, helper))
    z = np.cross(x, y)
    return np.stack([x, y, z], axis=1)


@dataclass
class UnseenCamera:
    """A pinhole camera. camera-to-world rotation = rot_y(yaw) @ rot_x(pitch) @ rot_z(roll); pixel (row v,
    column u) has its centre at integer coordinates; the principal point is the image centre."""
    position: np.ndarray  # (3,) world; position[1] is the height above the floor
    yaw: float  # radians, about +y; 0 looks along +z
    pitch: float  # radians, positive looks up
    roll: float  # radians, about the optical axis
    hfov: float  # degrees, horizontal field of view
    height: int
    width: int

    @property
    def focal(self) -> float:
        return (self.width / 2.0) / np.tan(np.radians(self.hfov) / 2.0)

    @property
    def cx(self) -> float:
        return (self.width - 1) / 2.0

    @property
    def cy(self) -> float:
        return (self.height - 1) / 2.0

    @property
    def rotation(self) -> np.ndarray:
        return rot_y(self.yaw) @ rot_x(self.pitch) @ rot_z(self.roll)

    @property
    def forward(self) -> np.ndarray:
        return self.rotation[:, 2]

    def max_off_axis_cos(self) -> float:
        tx, ty = self.width / 2.0 / self.focal, self.height / 2.0 / self.focal
        return 1.0 / np.sqrt(1.0 + tx * tx + ty * ty)

    def rays(self) -> tuple[np.ndarray, np.ndarray]:
        """(H, W, 3) unit world directions and (H, W) cosines to the optical axis (z-depth = distance * cos)."""
        f = self.focal
        u = (np.arange(self.width) - self.cx) / f
        v = -(np.arange(self.height) - self.cy) / f
        cam = np.empty((self.height, self.width, 3))
        cam[..., 0] = u[None, :]
        cam[..., 1] = v[:, None]
        cam[..., 2] = 1.0
        norm = np.sqrt((cam * cam).sum(-1))
        cam /= norm[..., None]
        return cam @ self.rotation.T, 1.0 / norm

    def project(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) world points -> (N, 3) [u (column), v (row), z-depth]."""
        pc = (np.atleast_2d(points) - self.position) @ self.rotation
        z = pc[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            u = self.cx + self.focal * pc[:, 0] / z
            v = self.cy - self.focal * pc[:, 1] / z
        return np.stack([u, v, z], axis=1)


class Prim:
    """One solid: sphere, ellipsoid, box (oriented), capsule or capped cylinder, with a label, instance id,
    material and a local frame (origin, rotation) for texture coordinates."""
    __slots__ = ("kind", "label", "instance", "material", "origin", "R", "lo", "hi", "p")

    def __init__(self, kind, label, instance, material, origin, R, lo, hi, **p):
        self.kind, self.label, self.instance, self.material = kind, label, instance, material
        self.origin, self.R, self.lo, self.hi, self.p = origin, R, lo, hi, p

    def corners(self) -> np.ndarray:
        lo, hi = self.lo, self.hi
        return np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])


def _box_aabb(c, R, half):
    ext = np.abs(R) @ half
    return c - ext, c + ext


def sphere(c, r, **kw) -> Prim:
    c = np.asarray(c, float)
    return Prim("sphere", origin=c, R=np.eye(3), lo=c - r, hi=c + r, c=c, r=float(r), **kw)


def ellipsoid(c, R, semi, **kw) -> Prim:
    c, semi = np.asarray(c, float), np.asarray(semi, float)
    lo, hi = _box_aabb(c, R, semi)
    return Prim("ellipsoid", origin=c, R=R, lo=lo, hi=hi, c=c, semi=semi, **kw)


def box(c, half, R=None, **kw) -> Prim:
    c, half = np.asarray(c, float), np.asarray(half, float)
    R = np.eye(3) if R is None else R
    lo, hi = _box_aabb(c, R, half)
    return Prim("box", origin=c, R=R, lo=lo, hi=hi, c=c, half=half, **kw)


def capsule(a, b, r, **kw) -> Prim:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return Prim("capsule", origin=a, R=frame_from_axis(b - a), lo=np.minimum(a, b) - r, hi=np.maximum(a, b) + r,
                a=a, b=b, r=float(r), **kw)


def cylinder(a, b, r, **kw) -> Prim:
    a, b = np.asarray(a, float), np.asarray(b, float)
    R = frame_from_axis(b - a)
    # exact AABB of a capped cylinder: the disc's extent along each world axis is r * sqrt(1 - axis_i^2)
    ax = unit(b - a)
    ext = r * np.sqrt(np.clip(1.0 - ax * ax, 0.0, 1.0))
    return Prim("cylinder", origin=a, R=R, lo=np.minimum(a, b) - ext, hi=np.maximum(a, b) + ext,
                a=a, b=b, r=float(r), **kw)


# ------------------------------------------------------------------ intersection (unit directions)

def _sqrt_pos(h):
    return np.sqrt(np.where(h > 0.0, h, 0.0))


def intersect(prim: Prim, o: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Distances along unit rays (o: (3,) or (N, 3); d: (N, 3)) to the first hit beyond EPS, np.inf if none."""
    p, k = prim.p, prim.kind
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if k == "sphere":
            oc = o - p["c"]
            b = dot(d, oc)
            h = b * b - (dot(oc, oc) - p["r"] ** 2)
            sq = _sqrt_pos(h)
            t0, t1 = -b - sq, -b + sq
            t = np.where(t0 > EPS, t0, t1)
            return np.where((h > 0.0) & (t > EPS), t, np.inf)
        if k == "ellipsoid":
            ol = ((o - p["c"]) @ prim.R) / p["semi"]
            dl = (d @ prim.R) / p["semi"]
            a = np.einsum("ij,ij->i", dl, dl)
            b = dot(dl, ol)
            h = b * b - a * (dot(ol, ol) - 1.0)
            sq = _sqrt_pos(h)
            t0, t1 = (-b - sq) / a, (-b + sq) / a
            t = np.where(t0 > EPS, t0, t1)
            return np.where((h > 0.0) & (t > EPS), t, np.inf)
        if k == "box":
            ol = (o - p["c"]) @ prim.R
            dl = d @ prim.R
            dl = np.where(np.abs(dl) < 1e-12, 1e-12, dl)
            inv = 1.0 / dl
            t1 = (-p["half"] - ol) * inv
            t2 = (p["half"] - ol) * inv
            tn = max3(np.minimum(t1, t2))
            tf = min3(np.maximum(t1, t2))
            return np.where((tf >= tn) & (tn > EPS), tn, np.inf)
        if k == "capsule":
            a, b, r = p["a"], p["b"], p["r"]
            ba, oa = b - a, o - a
            baba = float(ba @ ba)
            bard = d @ ba
            baoa = dot(oa, ba)
            rdoa = dot(d, oa)
            A = baba - bard * bard
            B = baba * rdoa - baoa * bard
            C = baba * dot(oa, oa) - baoa * baoa - r * r * baba
            h = B * B - A * C
            t = (-B - _sqrt_pos(h)) / A
            y = baoa + t * bard
            body = (h >= 0.0) & (y > 0.0) & (y < baba) & (t > EPS)
            # end caps: the sphere at the end the infinite-cylinder hit lies beyond
            oc = np.where((y <= 0.0)[:, None], oa, o - b)
            bb = np.einsum("ij,ij->i", d, oc)
            hh = bb * bb - (np.einsum("ij,ij->i", oc, oc) - r * r)
            tc = -bb - _sqrt_pos(hh)
            cap = (h >= 0.0) & ~body & (hh > 0.0) & (tc > EPS)
            return np.where(body, t, np.where(cap, tc, np.inf))
        if k == "cylinder":
            a, b, r = p["a"], p["b"], p["r"]
            ba, oc = b - a, o - a
            baba = float(ba @ ba)
            bard = d @ ba
            baoc = dot(oc, ba)
            k2 = baba - bard * bard
            k1 = baba * dot(d, oc) - baoc * bard
            k0 = baba * dot(oc, oc) - baoc * baoc - r * r * baba
            h = k1 * k1 - k2 * k0
            ok = h >= 0.0
            h = _sqrt_pos(h)
            t = (-k1 - h) / k2
            y = baoc + t * bard
            body = ok & (y > 0.0) & (y < baba) & (t > EPS)
            tc = (np.where(y < 0.0, 0.0, baba) - baoc) / bard
            cap = ok & ~body & (np.abs(k1 + k2 * tc) < h) & (tc > EPS)
            return np.where(body, t, np.where(cap, tc, np.inf))
    raise ValueError(f"unknown primitive kind {k!r}")


def normals(prim: Prim, P: np.ndarray) -> np.ndarray:
    """Outward unit normals at surface points P (N, 3)."""
    p, k = prim.p, prim.kind
    if k == "sphere":
        n = P - p["c"]
    elif k == "ellipsoid":
        n = (((P - p["c"]) @ prim.R) / p["semi"] ** 2) @ prim.R.T
    elif k == "box":
        lp = ((P - p["c"]) @ prim.R) / p["half"]
        ax = np.abs(lp).argmax(axis=1)
        nl = np.zeros_like(lp)
        rows = np.arange(len(lp))
        nl[rows, ax] = np.sign(lp[rows, ax])
        n = nl @ prim.R.T
    elif k == "capsule":
        a, b = p["a"], p["b"]
        ba = b - a
        h = np.clip(((P - a) @ ba) / (ba @ ba), 0.0, 1.0)
        n = P - (a + h[:, None] * ba)
    elif k == "cylinder":
        a, b, r = p["a"], p["b"], p["r"]
        ba = b - a
        L = np.linalg.norm(ba)
        axis = ba / L
        y = (P - a) @ axis
        radial = P - a - y[:, None] * axis
        rad_len = np.linalg.norm(radial, axis=1)
        side = np.abs(rad_len - r) < np.minimum(np.abs(y), np.abs(L - y))
        capn = np.where((y < L / 2)[:, None], -axis, axis)
        n = np.where(side[:, None], radial / np.maximum(rad_len, 1e-12)[:, None], capn)
    else:
        raise ValueError(f"unknown primitive kind {k!r}")
    return n / np.maximum(np.linalg.norm(n, axis=1), 1e-12)[:, None]


def hits_any(prims: list, o: np.ndarray, d: np.ndarray, tmax: np.ndarray) -> np.ndarray:
    """(N,) bool: does any of `prims` block the segment o + t d, 0 < t < tmax (shadow rays)?"""
    blocked = np.zeros(len(d), dtype=bool)
    for prim in prims:
        live = ~blocked
        if not live.any():
            break
        idx = np.nonzero(live)[0]
        oo = o[idx] if o.ndim == 2 else o
        t = intersect(prim, oo, d[idx])
        blocked[idx[t < tmax[idx]]] = True
    return blocked


def ray_hits_aabb(o: np.ndarray, d: np.ndarray, lo: np.ndarray, hi: np.ndarray, tmax: np.ndarray) -> np.ndarray:
    """(N,) bool: rays that pass through the box [lo, hi] before tmax (a cheap cull for shadow rays)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        dd = np.where(np.abs(d) < 1e-12, 1e-12, d)
        inv = 1.0 / dd
        t1, t2 = (lo - o) * inv, (hi - o) * inv
        tn = max3(np.minimum(t1, t2))
        tf = min3(np.maximum(t1, t2))
    return (tf >= np.maximum(tn, 0.0)) & (tn < tmax)
