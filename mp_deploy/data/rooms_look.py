"""Appearance of the room scenes (mp_deploy.data.rooms): materials with solid procedural textures, point lights
with hard shadows, ambient light with corner and contact occlusion, and a camera response (exposure, white
balance, vignetting, optical blur, optional defocus, shot and read noise, gamma).

Colours are linear albedo (sampled as sRGB and linearised); the sensor maps linear radiance to 8-bit sRGB-like
values. Textures are laid in a surface's texture frame (world axes for the room, a box's own axes for a turned
box): the two coordinates along the surface are (horizontal, vertical) on walls and (x, z) on floors and ceilings.
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass, field

import numpy as np

from mp_deploy.data.render import value_noise

PLAIN, CHECKER, STRIPES, NOISE, WOOD, TILES, BRICK, PANELS, BOOKS, FABRIC, SKY = range(11)
PATTERNS = ("plain", "checker", "stripes", "noise", "wood", "tiles", "brick", "panels", "books", "fabric", "sky")
# the two axes along a surface whose normal is mostly along x, y or z: (horizontal, vertical) on walls
TANGENTS = np.array([[2, 1], [0, 2], [0, 1]])


@dataclass
class Finish:
    """A material: two colours mixed by a pattern of cells `scale` metres wide, seams (`line` metres) in
    `grout` colour for tiles, planks and panels, per-cell brightness `jitter`, a specular `gloss` and, for lamp
    shades and window panes, an `emission` (radiance = colour x emission)."""

    color: np.ndarray
    color2: np.ndarray
    pattern: int = PLAIN
    scale: float = 0.5
    axis: int = 0  # 0 / 1: along the first / second surface axis (stripes, wood grain)
    grout: np.ndarray | None = None
    line: float = 0.0
    jitter: float = 0.0
    gloss: float = 0.0
    emission: float = 0.0
    seed: int = 0
    extra: dict = field(default_factory=dict)  # window bars: u axis, bar positions, bar colour

    def __post_init__(self):
        self.color, self.color2 = np.asarray(self.color, np.float32), np.asarray(self.color2, np.float32)
        if self.grout is not None:
            self.grout = np.asarray(self.grout, np.float32)


def srgb(h: float, s: float, v: float) -> np.ndarray:
    """A linear albedo from an sRGB-ish HSV colour."""
    rgb = colorsys.hsv_to_rgb(float(h) % 1.0, min(max(float(s), 0.0), 1.0), min(max(float(v), 0.0), 1.0))
    return np.array([c ** 2.2 for c in rgb], np.float32)


def darker(c: np.ndarray, k: float) -> np.ndarray:
    return (c * k).astype(np.float32)


# ------------------------------------------------------------------ material sampling

def paint(rng, light: bool = True) -> Finish:
    """Wall paint / plaster: mostly pale, sometimes saturated; plain or a faint plaster noise."""
    s = rng.uniform(0.0, 0.25) if rng.random() < 0.75 else rng.uniform(0.25, 0.6)
    v = rng.uniform(0.6, 0.95) if light else rng.uniform(0.25, 0.9)
    c = srgb(rng.random(), s, v)
    if rng.random() < 0.3:
        return Finish(c, darker(c, rng.uniform(0.8, 0.93)), NOISE, rng.uniform(0.05, 0.4), seed=rng.integers(999))
    return Finish(c, c, PLAIN, gloss=rng.uniform(0.0, 0.1))


def wood(rng, planks: bool = False) -> Finish:
    """Wood: growth rings and streaks along the grain, planks with seams and per-plank shade (floors)."""
    h, s, v = rng.uniform(0.04, 0.11), rng.uniform(0.35, 0.75), rng.uniform(0.3, 0.85)
    c = srgb(h, s, v)
    width = rng.uniform(0.08, 0.22) if planks else rng.uniform(0.25, 0.6)
    return Finish(c, srgb(h, s * 1.1, v * rng.uniform(0.45, 0.75)), WOOD, width, axis=int(rng.integers(2)),
                  grout=darker(c, 0.35), line=rng.uniform(0.002, 0.005) if planks else 0.0,
                  jitter=rng.uniform(0.05, 0.25) if planks else 0.05, gloss=rng.uniform(0.0, 0.35),
                  seed=rng.integers(999))


def tiles(rng, brick: bool = False) -> Finish:
    """Tiles (square cells) or bricks (2:1, offset rows) with grout lines and per-tile colour jitter."""
    if brick:
        c = srgb(rng.uniform(0.0, 0.08), rng.uniform(0.35, 0.7), rng.uniform(0.35, 0.75))
        grout = srgb(0.1, 0.1, rng.uniform(0.55, 0.85))
        return Finish(c, darker(c, rng.uniform(0.6, 0.85)), BRICK, rng.uniform(0.2, 0.3), grout=grout,
                      line=rng.uniform(0.008, 0.015), jitter=rng.uniform(0.3, 0.9), seed=rng.integers(999))
    c = srgb(rng.random(), rng.uniform(0.0, 0.5), rng.uniform(0.4, 0.95))
    grout = srgb(rng.random(), rng.uniform(0.0, 0.2), rng.uniform(0.2, 0.9))
    return Finish(c, srgb(rng.random(), rng.uniform(0.0, 0.5), rng.uniform(0.3, 0.9)), TILES,
                  rng.uniform(0.1, 0.6), grout=grout, line=rng.uniform(0.003, 0.01),
                  jitter=rng.uniform(0.0, 0.25) if rng.random() < 0.8 else 1.0, gloss=rng.uniform(0.1, 0.6),
                  seed=rng.integers(999))


def fabric(rng) -> Finish:
    """Upholstery, carpet, bedding: a fine weave of value noise."""
    h, s, v = rng.random(), rng.uniform(0.05, 0.7), rng.uniform(0.2, 0.9)
    return Finish(srgb(h, s, v), srgb(h, s, v * rng.uniform(0.6, 0.85)), FABRIC, rng.uniform(0.01, 0.05),
                  seed=rng.integers(999))


def patterned(rng) -> Finish:
    """Any colour with checker, stripes, noise or nothing (wallpaper, toys, painted objects)."""
    h, s = rng.random(), rng.uniform(0.1, 0.85)
    c1, c2 = srgb(h, s, rng.uniform(0.4, 0.95)), srgb(h + rng.uniform(-0.3, 0.3), s, rng.uniform(0.2, 0.8))
    pattern = int(rng.choice([PLAIN, CHECKER, STRIPES, NOISE], p=[0.4, 0.2, 0.2, 0.2]))
    return Finish(c1, c2, pattern, rng.uniform(0.05, 0.5), axis=int(rng.integers(2)), gloss=rng.uniform(0, 0.5),
                  seed=rng.integers(999))


def metal(rng) -> Finish:
    c = srgb(rng.uniform(0, 1), rng.uniform(0, 0.15), rng.uniform(0.25, 0.85))
    return Finish(c, c, PLAIN, gloss=rng.uniform(0.4, 0.9))


def floor_finish(rng) -> Finish:
    r = rng.random()
    if r < 0.35:
        return wood(rng, planks=True)
    if r < 0.6:
        return tiles(rng)
    if r < 0.75:
        return fabric(rng)
    if r < 0.85:
        f = patterned(rng)
        f.pattern, f.scale = CHECKER, rng.uniform(0.2, 0.6)
        return f
    c = srgb(rng.random(), rng.uniform(0, 0.15), rng.uniform(0.3, 0.75))  # concrete / linoleum
    return Finish(c, darker(c, 0.8), NOISE, rng.uniform(0.2, 1.0), gloss=rng.uniform(0, 0.3), seed=rng.integers(999))


def wall_finish(rng) -> Finish:
    r = rng.random()
    if r < 0.6:
        return paint(rng)
    if r < 0.72:
        f = patterned(rng)
        f.pattern, f.axis, f.scale = STRIPES, 0, rng.uniform(0.04, 0.3)
        f.color2 = (f.color * rng.uniform(0.6, 0.9)).astype(np.float32)
        return f
    if r < 0.87:
        return tiles(rng)
    if r < 0.95:
        return tiles(rng, brick=True)
    c = srgb(0.1, 0.05, rng.uniform(0.4, 0.7))
    return Finish(c, darker(c, 0.75), NOISE, rng.uniform(0.3, 1.2), seed=rng.integers(999))  # concrete


def ceiling_finish(rng) -> Finish:
    c = srgb(rng.uniform(0, 1), rng.uniform(0, 0.08), rng.uniform(0.75, 0.95))
    if rng.random() < 0.2:  # office ceiling panels
        return Finish(c, c, TILES, rng.uniform(0.55, 0.65), grout=darker(c, 0.6), line=0.015, jitter=0.05)
    return Finish(c, c, PLAIN)


def furniture_finish(rng) -> Finish:
    r = rng.random()
    if r < 0.45:
        return wood(rng)
    if r < 0.75:
        return paint(rng, light=False)
    if r < 0.85:
        return metal(rng)
    return patterned(rng)


def panels(rng, base: Finish | None = None) -> Finish:
    """Cabinet fronts: a finish with horizontal seams every `scale` metres (drawers, doors)."""
    f = base or furniture_finish(rng)
    return Finish(f.color, f.color2, PANELS, rng.uniform(0.15, 0.45), grout=darker(f.color, 0.4),
                  line=rng.uniform(0.004, 0.01), gloss=f.gloss, seed=rng.integers(999))


def books(rng) -> Finish:
    """Book spines: vertical bands of random width-classes and colours."""
    palette = np.stack([srgb(rng.random(), rng.uniform(0.2, 0.8), rng.uniform(0.15, 0.85)) for _ in range(12)])
    return Finish(palette[0], palette[1], BOOKS, rng.uniform(0.02, 0.05), extra={"palette": palette},
                  seed=rng.integers(999))


def skin(rng) -> Finish:
    """Skin tones from pale to dark brown."""
    k = rng.random()
    c = srgb(rng.uniform(0.03, 0.09), 0.25 + 0.35 * k, 0.95 - 0.65 * k)
    return Finish(c, c, PLAIN, gloss=0.1)


def glow(color: np.ndarray, strength: float) -> Finish:
    """An emitting surface (lamp shade, ceiling light)."""
    return Finish(color, color, PLAIN, emission=strength)


def window_pane(rng, wall_u_axis: int, u0: float, u1: float, y0: float, y1: float, frame: np.ndarray) -> Finish:
    """A window pane: bright sky (day) or a dark blue night, with mullion bars in the frame colour."""
    day = rng.random() < 0.8
    sky = srgb(rng.uniform(0.55, 0.62), rng.uniform(0.1, 0.5), 1.0) if day else srgb(0.62, 0.6, 0.15)
    n_u, n_y = int(rng.integers(0, 3)), int(rng.integers(0, 2))
    bars_u = np.linspace(u0, u1, n_u + 2)[1:-1] if n_u else np.zeros(0)
    bars_y = np.linspace(y0, y1, n_y + 2)[1:-1] if n_y else np.zeros(0)
    edge = [u0, u1, y0, y1]
    return Finish(sky, srgb(0.1, 0.05, 1.0), SKY, rng.uniform(0.6, 2.0),
                  emission=rng.uniform(2.0, 7.0) if day else rng.uniform(0.05, 0.3), seed=rng.integers(999),
                  extra={"u_axis": wall_u_axis, "bars_u": bars_u, "bars_y": bars_y, "edge": edge,
                         "bar": rng.uniform(0.02, 0.05), "frame": frame})


# ------------------------------------------------------------------ textures

def cell_hash(*ints) -> np.ndarray:
    """A deterministic hash of integer cell indices to [0, 1)."""
    h = np.zeros(np.shape(ints[0]), np.int64)
    for k, v in zip((73856093, 19349663, 83492791), ints):
        h ^= np.asarray(v, np.int64) * k
    h = (h ^ (h >> 13)) * 1274126177
    return ((h >> 7) & 0xFFFF).astype(np.float32) * np.float32(1 / 65536.0)


def surface_coords(q: np.ndarray, nq: np.ndarray) -> np.ndarray:
    """The two coordinates along the surface (2, M), from texture-frame points and normals (3, M)."""
    major = np.argmax(np.abs(nq), axis=0)
    return np.take_along_axis(q, TANGENTS[major].T, axis=0)


def noise(q: np.ndarray) -> np.ndarray:
    """Value noise (render.value_noise) of points (3, M)."""
    return value_noise(q.T)


def texture(mat: Finish, q: np.ndarray, nq: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Albedo (3, M) of points q (texture frame, normals nq, both (3, M)) and, for emitting materials, their
    radiance (3, M)."""
    c1, c2 = mat.color, mat.color2
    p = mat.pattern
    m = q.shape[1]
    if p == PLAIN:
        albedo = np.repeat(c1[:, None], m, axis=1)
        return albedo, (albedo * np.float32(mat.emission) if mat.emission else None)
    if p == SKY:
        return sky(mat, q)
    inv = np.float32(1.0 / mat.scale)
    if p in (NOISE, FABRIC):
        x = q * inv + np.float32(mat.seed * 7.31)
        if p == FABRIC:  # one fine octave, contrasted
            mix = np.clip((noise(x) - 0.5) * 1.6 + 0.5, 0, 1)
        else:
            mix = 0.65 * noise(x) + 0.35 * noise(x * np.float32(2.9) + np.float32(3.7))
        return lerp(c1, c2, mix), None
    uv = surface_coords(q, nq) * inv
    if p == CHECKER:
        return lerp(c1, c2, np.floor(uv).sum(axis=0) % 2), None
    if p == STRIPES:
        return lerp(c1, c2, np.floor(uv[mat.axis]) % 2), None
    if p == WOOD:
        return wood_grain(mat, uv), None
    if p in (TILES, BRICK, PANELS):
        return tiled(mat, uv), None
    if p == BOOKS:
        return book_spines(mat, uv), None
    raise ValueError(f"unknown pattern {p}")


def lerp(c1, c2, mix) -> np.ndarray:
    """Colours (3, M) between c1 (mix 0) and c2 (mix 1)."""
    mix = np.asarray(mix, np.float32)
    return c1[:, None] + (c2 - c1)[:, None] * mix[None, :]


def wood_grain(mat: Finish, uv: np.ndarray) -> np.ndarray:
    """Planks `scale` wide across the grain; inside each, growth rings bent by noise and fine streaks."""
    along, across = uv[mat.axis], uv[1 - mat.axis]  # in plank widths
    plank = np.floor(across)
    length = 6.0 + 4.0 * cell_hash(plank, mat.seed)  # planks 6-10 widths long, staggered
    pos = along / length + cell_hash(plank + 17, mat.seed)
    piece = np.floor(pos)
    warp = noise(np.stack([along * np.float32(0.35), across * np.float32(6.0), plank + piece * 13]))
    rings = (across - plank) * np.float32(3.0) + warp * np.float32(2.5) + cell_hash(plank, piece) * 4
    ring = np.abs(2 * (rings - np.floor(rings)) - 1) ** 3
    colour = lerp(mat.color, mat.color2, np.clip(0.55 * ring + 0.45 * warp, 0, 1))
    if mat.jitter:
        colour *= 1 + np.float32(mat.jitter) * (cell_hash(plank, piece, mat.seed) - 0.5)
    if mat.line > 0:
        w = np.float32(mat.line / mat.scale)
        seam = ((across - plank) < w) | ((pos - piece) * length < w)
        colour[:, seam] = mat.grout[:, None]
    return colour


def tiled(mat: Finish, uv: np.ndarray) -> np.ndarray:
    """Square tiles, bricks (half-offset rows, 2:1) or panels (horizontal seams only), with grout lines."""
    u, v = uv[0], uv[1]
    brick = mat.pattern == BRICK
    if brick:
        v = v * np.float32(2.0)
        u = u + np.float32(0.5) * (np.floor(v) % 2)
    iu, iv = np.floor(u), np.floor(v)
    w = np.float32(mat.line / mat.scale * (2 if brick else 1))
    if mat.pattern == PANELS:
        grout = (v - iv) < w
        colour = np.repeat(mat.color[:, None], len(u), axis=1)
    else:
        grout = ((u - iu) < w) | ((v - iv) < w)
        colour = lerp(mat.color, mat.color2, np.float32(mat.jitter) * cell_hash(iu, iv, mat.seed))
    colour[:, grout] = mat.grout[:, None]
    return colour


def book_spines(mat: Finish, uv: np.ndarray) -> np.ndarray:
    """Spines along the shelf: each `scale`-wide band one palette colour, with dark gaps."""
    u = uv[0]
    band = np.floor(u)
    palette = mat.extra["palette"]
    colour = palette[(cell_hash(band, mat.seed) * len(palette)).astype(np.int64)].T.copy()
    colour *= np.where((u - band) < 0.08, np.float32(0.15), 0.8 + 0.4 * cell_hash(band, 7))
    return colour


def sky(mat: Finish, q: np.ndarray):
    """A window pane: sky radiance with faint clouds, and mullion bars that reflect instead of glowing."""
    x = mat.extra
    u, y = q[x["u_axis"]], q[1]
    clouds = noise(np.stack([u, y * 2, np.full_like(u, mat.seed)]) * np.float32(1 / mat.scale))
    e = x["edge"]
    height = (y - e[2]) / max(e[3] - e[2], 1e-3)
    radiance = lerp(mat.color, mat.color2, np.clip(0.6 * clouds + 0.25 * (1 - height), 0, 1)) * np.float32(
        mat.emission)
    half = x["bar"] / 2
    bar = (u - e[0] < half) | (e[1] - u < half) | (y - e[2] < half) | (e[3] - y < half)
    for b in x["bars_u"]:
        bar |= np.abs(u - b) < half
    for b in x["bars_y"]:
        bar |= np.abs(y - b) < half
    albedo = np.zeros_like(radiance)
    albedo[:, bar] = x["frame"][:, None]
    radiance[:, bar] = 0
    return albedo, radiance


# ------------------------------------------------------------------ lighting

@dataclass
class Light:
    """A point light: radiance at distance d is intensity x colour / (d^2 + soft^2) times the cosine."""

    position: np.ndarray
    intensity: float
    color: np.ndarray
    soft: float = 0.3


def light_color(rng) -> np.ndarray:
    kelvin = rng.choice([(1.0, 0.78, 0.55), (1.0, 0.9, 0.78), (1.0, 0.97, 0.93), (0.85, 0.92, 1.0)])
    return np.array(kelvin, np.float32)


def corner_occlusion(plan, points: np.ndarray, sid: np.ndarray, floor_id: int, ceiling_id: int) -> np.ndarray:
    """Ambient occlusion of the room's own surfaces near the edges where floor, walls and ceiling meet."""
    ao = np.ones(points.shape[1], np.float32)
    x, y, z = points
    flat = np.nonzero((sid == floor_id) | (sid == ceiling_id))[0]
    if len(flat):
        d = plan.wall_distance(x[flat], z[flat])
        ao[flat] *= 1 - np.float32(0.35) * np.exp(d * np.float32(-4.0))
    for wall in plan.walls:
        rows = np.nonzero(sid == wall.sid)[0]
        if not len(rows):
            continue
        yy = y[rows]
        k = (1 - np.float32(0.3) * np.exp(yy * np.float32(-5.0))) * (
            1 - np.float32(0.25) * np.exp((np.float32(plan.height) - yy) * np.float32(-5.0)))
        others = [w for w in plan.walls if w is not wall]
        if others:
            d = np.min([w.distance(x[rows], z[rows]) for w in others], axis=0)
            k *= 1 - np.float32(0.3) * np.exp(d * np.float32(-4.0))
        ao[rows] *= k
    return ao


def contact_occlusion(things, points: np.ndarray, floor_rows: np.ndarray, ao: np.ndarray) -> None:
    """Darken the floor under and around the things standing on it (their footprints)."""
    if not len(floor_rows):
        return
    x, z = points[0, floor_rows], points[2, floor_rows]
    k = np.ones(len(floor_rows), np.float32)
    for thing in things:
        if thing.footprint is None:
            continue
        cx, cz, hx, hz, yaw = thing.footprint
        c, s = np.float32(np.cos(yaw)), np.float32(np.sin(yaw))
        dx, dz = x - np.float32(cx), z - np.float32(cz)
        ox = np.maximum(np.abs(dx * c - dz * s) - np.float32(hx), 0)
        oz = np.maximum(np.abs(dx * s + dz * c) - np.float32(hz), 0)
        k *= 1 - np.float32(0.4) * np.exp(np.sqrt(ox * ox + oz * oz) * np.float32(-1 / (0.12 + 0.1 * min(hx, hz))))
    ao[floor_rows] *= k


def dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Column-wise dot products of (3, N) arrays."""
    return np.einsum("ij,ij->j", a, b)


def shade(points, normals, rd, albedo, emission, gloss, lights: list[Light], ambient: np.ndarray, ao: np.ndarray,
          shadow_test) -> np.ndarray:
    """Linear radiance (3, N): ambient x occlusion + per light (Lambert + Blinn-Phong highlight) x falloff x
    visibility (`shadow_test(light, rows, dirs, dist)` -> blocked, dirs (3, M) from the light to the points),
    plus emission. All arrays are (3, N) or (N,)."""
    radiance = albedo * ambient[:, None] * (ao * (np.float32(0.8) + np.float32(0.2) * normals[1]))
    receives = np.ones(points.shape[1], bool) if emission is None else ~(emission > 0).any(axis=0)
    for light in lights:
        to = light.position.astype(np.float32)[:, None] - points
        dist = np.sqrt(dot(to, to))
        lam = dot(normals, to) / np.maximum(dist, np.float32(1e-6))
        rows = np.nonzero((lam > 0) & receives)[0]
        if not len(rows):
            continue
        d = dist[rows]
        dirs = np.take(to, rows, axis=1) / -d
        keep = np.nonzero(~shadow_test(light, rows, dirs, d))[0]
        rows, dirs, d = rows[keep], np.take(dirs, keep, axis=1), d[keep]
        falloff = np.float32(light.intensity) / (d * d + np.float32(light.soft ** 2))
        lit = np.take(albedo, rows, axis=1) * (lam[rows] * falloff)
        g = gloss[rows]
        shiny = np.nonzero(g > 0)[0]
        if len(shiny):
            half = -np.take(dirs, shiny, axis=1) - np.take(rd, rows[shiny], axis=1)
            spec = np.maximum(dot(np.take(normals, rows[shiny], axis=1), half), 0) / np.sqrt(
                np.maximum(dot(half, half), np.float32(1e-12)))
            for _ in range(5):  # cos^32
                spec = spec * spec
            lit[:, shiny] += spec * g[shiny] * falloff[shiny] * np.float32(0.5)
        radiance[:, rows] += lit * light.color[:, None]
    if emission is not None:
        radiance += emission
    return radiance


# ------------------------------------------------------------------ camera response

@dataclass
class Sensor:
    """The camera response of one image."""

    key: float  # exposure: the median luminance maps to this linear value
    gains: np.ndarray  # white balance (r, g, b)
    vignette: float
    blur: float  # optical blur, Gaussian sigma in pixels
    defocus: tuple | None  # (focus depth, strength) or None
    shot: float
    read: float
    gamma: float


def sample_sensor(rng) -> Sensor:
    gains = np.exp(rng.normal(0, 0.07, 3)).astype(np.float32)
    defocus = (float(rng.uniform(1.0, 5.0)), float(rng.uniform(0.5, 2.0))) if rng.random() < 0.15 else None
    return Sensor(key=float(rng.uniform(0.12, 0.32)), gains=gains / gains[1], vignette=float(rng.uniform(0, 0.35)),
                  blur=float(rng.uniform(0.3, 0.8)) if rng.random() < 0.5 else 0.0, defocus=defocus,
                  shot=float(rng.uniform(0.0, 0.02)), read=float(rng.uniform(0.002, 0.012)),
                  gamma=float(rng.uniform(2.0, 2.4)))


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of a (C, H, W) image with edge padding (radius ceil(2.5 sigma))."""
    if sigma < 0.2:
        return img
    r = int(np.ceil(2.5 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2).astype(np.float32)
    k /= k.sum()
    h, w = img.shape[1:]
    pad = np.pad(img, ((0, 0), (r, r), (0, 0)), mode="edge")
    out = sum(k[i] * pad[:, i:i + h] for i in range(2 * r + 1))
    pad = np.pad(out, ((0, 0), (0, 0), (r, r)), mode="edge")
    return sum(k[i] * pad[:, :, i:i + w] for i in range(2 * r + 1))


def develop(radiance: np.ndarray, depth: np.ndarray, sensor: Sensor, rng) -> np.ndarray:
    """Linear radiance (3, H, W) -> uint8 image (H, W, 3): blur / defocus, auto exposure (the median luminance
    to `key`), white balance, vignetting, shot and read noise, gamma."""
    h, w = depth.shape
    img = gaussian_blur(radiance, sensor.blur)
    if sensor.defocus is not None:
        focus, strength = sensor.defocus
        wide = gaussian_blur(img, 1.8)
        mix = np.clip(np.abs(1 / depth - 1 / focus) * (focus * strength * 0.5), 0, 1).astype(np.float32)
        img = img + (wide - img) * mix
    lum = np.float32(0.2126) * img[0] + np.float32(0.7152) * img[1] + np.float32(0.0722) * img[2]
    median = float(np.partition(lum.ravel(), lum.size // 2)[lum.size // 2])
    img = img * (np.float32(sensor.key / max(median, 1e-6)) * sensor.gains)[:, None, None]
    if sensor.vignette:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        r2 = ((xx - w / 2) ** 2 + (yy - h / 2) ** 2) / np.float32((w / 2) ** 2 + (h / 2) ** 2)
        img *= 1 - np.float32(sensor.vignette) * r2
    img = np.clip(img, 0, 1)
    img += rng.standard_normal(img.shape, np.float32) * (np.sqrt(img) * np.float32(sensor.shot)
                                                         + np.float32(sensor.read))
    img = np.clip(img, 0, 1) ** np.float32(1 / sensor.gamma)
    return np.ascontiguousarray(np.clip(np.rint(img * 255), 0, 255).astype(np.uint8).transpose(1, 2, 0))
