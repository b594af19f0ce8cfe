"""A small vectorised ray caster for the synthetic scenes: a pinhole camera, analytic primitives (the room's
inner box, oriented boxes, spheres, vertical cylinders, capsules), solid procedural textures and Lambertian +
ambient shading. Depth is exact: each ray's hit distance along the optical axis, in metres.

World frame: right-handed, y up, metres. Rays are unit vectors; a ray's range r maps to depth r / |D| where
D = forward + x right + y up is the un-normalised pixel direction (D . forward = 1).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# texture patterns
PLAIN, CHECKER, STRIPES, NOISE = 0, 1, 2, 3


@dataclass
class Camera:
    position: np.ndarray
    forward: np.ndarray
    right: np.ndarray
    up: np.ndarray
    hfov: float  # horizontal field of view, degrees

    @classmethod
    def look(cls, position, yaw: float, pitch: float, roll: float, hfov: float) -> "Camera":
        """yaw about +y from +z, pitch up, roll about the optical axis; all in degrees."""
        y, p, r = np.radians([yaw, pitch, roll])
        forward = np.array([np.sin(y) * np.cos(p), np.sin(p), np.cos(y) * np.cos(p)])
        right = np.cross(forward, [0.0, 1.0, 0.0])
        right /= np.linalg.norm(right)
        up = np.cross(right, forward)
        right, up = right * np.cos(r) + up * np.sin(r), up * np.cos(r) - right * np.sin(r)
        return cls(np.asarray(position, float), forward, right, up, hfov)

    def focal(self, width: int) -> float:
        return (width / 2.0) / np.tan(np.radians(self.hfov) / 2.0)

    def directions(self, h: int, w: int) -> np.ndarray:
        """Un-normalised ray directions (h*w, 3) through pixel centres, row-major."""
        f = self.focal(w)
        xs = (np.arange(w) + 0.5 - w / 2.0) / f
        ys = -(np.arange(h) + 0.5 - h / 2.0) / f
        return (self.forward[None, None] + xs[None, :, None] * self.right + ys[:, None, None] * self.up).reshape(-1, 3)

    def project(self, points: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        """World points (N, 3) -> pixel coordinates (N, 2) with integer = pixel centre, and depth (N,)."""
        rel = points - self.position
        z = rel @ self.forward
        f = self.focal(w)
        u = w / 2.0 + f * (rel @ self.right) / z - 0.5
        v = h / 2.0 - f * (rel @ self.up) / z - 0.5
        return np.stack([u, v], axis=1), z


@dataclass
class Material:
    color: tuple
    color2: tuple
    pattern: int = PLAIN
    scale: float = 0.5  # metres per texture cell
    axis: tuple = (1.0, 0.0, 0.0)  # stripe direction


@dataclass
class Hits:
    """Per-ray nearest hit: range (inf = none), unit normal, material, class label and instance id."""

    rng: np.ndarray
    normal: np.ndarray
    material: np.ndarray
    label: np.ndarray
    instance: np.ndarray

    @classmethod
    def empty(cls, n: int) -> "Hits":
        return cls(np.full(n, np.inf, np.float32), np.zeros((n, 3), np.float32), np.zeros(n, np.int32),
                   np.zeros(n, np.uint8),
                   np.zeros(n, np.int32))

    def take(self, t: np.ndarray, rows: np.ndarray | None, normal_fn, material: int, label: int,
             instance: int, origin: np.ndarray, rd: np.ndarray) -> None:
        """Keep the hits t (for the rays `rows`, or all) that are nearer than the current ones."""
        rows = np.arange(len(self.rng)) if rows is None else rows
        nearer = t < self.rng[rows]
        idx, tn = rows[nearer], t[nearer]
        if not len(idx):
            return
        points = origin + rd[idx] * tn[:, None]
        self.rng[idx] = tn
        self.normal[idx] = normal_fn(points, nearer)
        self.material[idx] = material
        self.label[idx] = label
        self.instance[idx] = instance


# ------------------------------------------------------------------ primitives: (origin, unit dirs) -> range

def room_exit(o, rd, lo, hi):
    """Inside an axis-aligned box: the range to the wall each ray leaves through, and which face (axis*2 +
    (1 if the + side)). The camera must be inside."""
    best = np.full(len(rd), np.inf, rd.dtype)
    face = np.zeros(len(rd), np.int64)
    for k in range(3):
        d = rd[:, k]
        with np.errstate(divide="ignore"):
            t = np.where(d > 0, (hi[k] - o[k]) / d, (lo[k] - o[k]) / d)
        t[d == 0] = np.inf
        nearer = t < best
        best = np.where(nearer, t, best)
        face = np.where(nearer, 2 * k + (d > 0), face)
    return best, face


def rays_near(o, rd, centre, radius) -> np.ndarray:
    """Indices of the rays that meet a bounding sphere in front of the camera (to skip the rest)."""
    o, centre, radius = f32(o, centre, radius)
    oc = o - centre
    b = rd @ oc
    disc = b * b - (oc @ oc - radius * radius)
    return np.nonzero((disc >= 0) & (np.sqrt(np.maximum(disc, 0)) > b))[0]


def f32(*values):
    """Scene parameters as float32, so that the per-ray arithmetic stays float32 (numpy scalars would upcast)."""
    return [np.asarray(v, np.float32) for v in values]


def sphere(o, rd, center, radius):
    o, center, radius = f32(o, center, radius)
    oc = o - center
    b = rd @ oc
    h = b * b - (oc @ oc - radius * radius)
    with np.errstate(invalid="ignore"):
        t = -b - np.sqrt(h)
    return np.where((h >= 0) & (t > 1e-6), t, np.inf)


def oriented_box(o, rd, center, half, yaw):
    """A box turned by `yaw` radians about +y. Returns (range, local axis of the face hit, local directions)."""
    o, center, half = f32(o, center, half)
    axes = box_axes(yaw).astype(np.float32)
    ol = axes @ (o - center)
    dl = rd @ axes.T
    near = np.full(len(rd), -np.inf, rd.dtype)
    far = np.full(len(rd), np.inf, rd.dtype)
    face = np.zeros(len(rd), np.int64)
    for k in range(3):
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / dl[:, k]
            t1, t2 = (-half[k] - ol[k]) * inv, (half[k] - ol[k]) * inv
        lo_t = np.nan_to_num(np.minimum(t1, t2), nan=-np.inf)  # a ray parallel to a slab and inside it
        hi_t = np.nan_to_num(np.maximum(t1, t2), nan=np.inf)
        face = np.where(lo_t > near, k, face)
        near, far = np.maximum(near, lo_t), np.minimum(far, hi_t)
    return np.where((near <= far) & (near > 1e-6), near, np.inf), face, dl


def box_axes(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, 0.0, -s], [0.0, 1.0, 0.0], [s, 0.0, c]])


def cylinder(o, rd, center_xz, y0, y1, radius):
    """A vertical capped cylinder. Returns (range, True where the side was hit)."""
    o, center_xz, y0, y1, radius = f32(o, center_xz, y0, y1, radius)
    ox, oz = o[0] - center_xz[0], o[2] - center_xz[1]
    dx, dz = rd[:, 0], rd[:, 2]
    a = dx * dx + dz * dz
    b = ox * dx + oz * dz
    h = b * b - a * (ox * ox + oz * oz - radius * radius)
    with np.errstate(invalid="ignore", divide="ignore"):
        t_side = (-b - np.sqrt(h)) / a
        y = o[1] + t_side * rd[:, 1]
        side = (h >= 0) & (t_side > 1e-6) & (y >= y0) & (y <= y1)
        cap_y = np.where(o[1] > y1, y1, y0)
        t_cap = (cap_y - o[1]) / rd[:, 1]
        px, pz = ox + t_cap * dx, oz + t_cap * dz
    cap = (t_cap > 1e-6) & (px * px + pz * pz <= radius * radius) & ((o[1] > y1) | (o[1] < y0))
    t = np.where(side, t_side, np.where(cap, t_cap, np.inf))
    return t, side


def capsule(o, rd, a, b, radius):
    """A capsule (segment a-b grown by radius): the closed-form cylinder body, else the nearer end sphere."""
    o, a, b, radius = f32(o, a, b, radius)
    ba, oa = b - a, o - a
    baba, baoa = ba @ ba, ba @ oa
    bard, rdoa = rd @ ba, rd @ oa
    k2 = baba - bard * bard
    k1 = baba * rdoa - baoa * bard
    k0 = baba * (oa @ oa) - baoa * baoa - radius * radius * baba
    h = k1 * k1 - k2 * k0
    with np.errstate(invalid="ignore", divide="ignore"):
        t = (-k1 - np.sqrt(h)) / k2
    y = baoa + t * bard
    body = (h >= 0) & (y > 0) & (y < baba) & (t > 1e-6)
    t_a, t_b = sphere(o, rd, a, radius), sphere(o, rd, b, radius)
    ends = np.minimum(t_a, t_b)
    return np.where(body, t, np.where(h >= 0, ends, np.inf))


def capsule_normal(points, a, b, radius):
    ba = b - a
    s = np.clip(((points - a) @ ba) / (ba @ ba), 0.0, 1.0)
    return (points - (a + s[:, None] * ba)) / radius


# ------------------------------------------------------------------ textures and shading

# a fixed random lattice for value noise (a permutation hash, as in Perlin's reference noise)
_PERM = np.random.default_rng(1234).permutation(256)
_PERM = np.concatenate([_PERM, _PERM])
_VALUES = np.random.default_rng(4321).random(256).astype(np.float32)


def value_noise(q: np.ndarray) -> np.ndarray:
    """Smooth 3-D value noise in [0, 1] on the integer lattice (trilinear, smoothstep weights)."""
    i = np.floor(q)
    f = q - i
    f = f * f * (3 - 2 * f)
    i = i.astype(np.int64) & 255
    out = 0.0
    for cx, cy, cz in np.ndindex(2, 2, 2):
        h = _PERM[_PERM[_PERM[(i[:, 0] + cx) & 255] + ((i[:, 1] + cy) & 255)] + ((i[:, 2] + cz) & 255)]
        wgt = (f[:, 0] if cx else 1 - f[:, 0]) * (f[:, 1] if cy else 1 - f[:, 1]) * (f[:, 2] if cz else 1 - f[:, 2])
        out = out + wgt * _VALUES[h]
    return out


def albedo(points: np.ndarray, normals: np.ndarray, materials: list[Material], index: np.ndarray) -> np.ndarray:
    """Per-pixel colour: each material mixes its two colours by its solid pattern at the hit point."""
    out = np.empty((len(points), 3), np.float32)
    inside = points - normals * 1e-3  # off the surface, so lattice-aligned faces do not flicker
    for m_id in np.unique(index):
        mat = materials[m_id]
        rows = np.nonzero(index == m_id)[0]
        q = inside[rows] * np.float32(1.0 / mat.scale)
        if mat.pattern == CHECKER:
            mix = np.floor(q).sum(axis=1) % 2
        elif mat.pattern == STRIPES:
            mix = np.floor(q @ np.asarray(mat.axis, np.float32)) % 2
        elif mat.pattern == NOISE:
            mix = 0.65 * value_noise(q) + 0.35 * value_noise(q * np.float32(2.7) + np.float32(5.1))
        else:
            mix = np.zeros(len(rows), np.float32)
        c1, c2 = f32(mat.color, mat.color2)
        out[rows] = c1 + (c2 - c1) * mix[:, None]
    return out


@dataclass
class Lighting:
    position: np.ndarray  # a point light (ceiling lamp)
    ambient: float = 0.3
    diffuse: float = 0.9
    fill_direction: np.ndarray = field(default_factory=lambda: np.array([0.3, 0.8, -0.5]) / np.sqrt(0.98))
    fill: float = 0.25


def shade(points, normals, colours, light: Lighting) -> np.ndarray:
    position, fill_direction = f32(light.position, light.fill_direction)
    to_light = position - points
    dist = np.linalg.norm(to_light, axis=1)
    lambert = np.clip(np.einsum("ij,ij->i", normals, to_light) / np.maximum(dist, 1e-6), 0, None)
    falloff = 1.0 / (1.0 + 0.04 * dist * dist)
    fill = np.clip(normals @ fill_direction, 0, None)
    ambient, diffuse, fill_k = f32(light.ambient, light.diffuse, light.fill)
    intensity = ambient + diffuse * lambert * falloff + fill_k * fill
    return colours * intensity[:, None]
