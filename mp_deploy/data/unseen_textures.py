"""Procedural materials of the evaluation-only scene family (mp_deploy.data.unseen).

A material is a dict: "tex" (the pattern), "c1"/"c2" (sRGB colours in [0, 1]), "scale", "seed", "spec"
(specular strength), "shine" (Blinn-Phong exponent) and pattern-specific keys. `albedo(material, uv, lp)` returns
linear albedo (N, 3) and linear emission (N, 3) or None for surface coordinates uv (N, 2) in metres and local
points lp (N, 3) of the surface's frame. Patterns: plain, gradient, marble, tiles, chevron (parquet), brick,
carpet, concrete, planks, wallpaper, corrugated, droptile (suspended ceiling with light panels), coffer,
cardboard, fabric, skin, face, hair, metal, leaves, lamp, screen, wood.
"""
from __future__ import annotations

import numpy as np

_M1, _M2 = np.uint32(0x8DA6B343), np.uint32(0xD8163841)


def _hash(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    """Integer lattice hash -> uniform [0, 1)."""
    h = (ix.astype(np.int64).astype(np.uint32) * _M1) ^ (iy.astype(np.int64).astype(np.uint32) * _M2)
    h ^= np.uint32((int(seed) * 0xCB1AB31F) & 0xFFFFFFFF)
    h ^= h >> np.uint32(15)
    h *= np.uint32(0x2C1B3C6D)
    h ^= h >> np.uint32(12)
    h *= np.uint32(0x297A2D39)
    h ^= h >> np.uint32(15)
    return h.astype(np.float64) * (1.0 / 4294967296.0)


def cell_rand(ix, iy, seed: int) -> np.ndarray:
    return _hash(np.asarray(ix), np.asarray(iy), seed)


def vnoise(x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """Value noise in [0, 1] with smooth (C1) interpolation."""
    fx, fy = np.floor(x), np.floor(y)
    tx, ty = x - fx, y - fy
    tx = tx * tx * (3.0 - 2.0 * tx)
    ty = ty * ty * (3.0 - 2.0 * ty)
    ix, iy = fx.astype(np.int64), fy.astype(np.int64)
    a = _hash(ix, iy, seed)
    b = _hash(ix + 1, iy, seed)
    c = _hash(ix, iy + 1, seed)
    d = _hash(ix + 1, iy + 1, seed)
    top = a + (b - a) * tx
    bot = c + (d - c) * tx
    return top + (bot - top) * ty


def fbm(x, y, seed: int, octaves: int = 3) -> np.ndarray:
    total, amp, norm = 0.0, 1.0, 0.0
    for o in range(octaves):
        total = total + amp * vnoise(x, y, seed + 101 * o)
        norm += amp
        x, y = x * 2.03 + 17.1, y * 2.03 - 9.7
        amp *= 0.5
    return total / norm


def _col(c) -> np.ndarray:
    return np.asarray(c, dtype=np.float64)[None, :]


def _mix(a, b, t):
    t = np.asarray(t)[:, None] if np.ndim(t) == 1 else t
    return a + (b - a) * t


def _smooth(e0, e1, x):
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _lines(x, period, width):
    """1 on thin lines of `width` every `period` (distance to the nearest line), soft by a small margin."""
    f = np.abs(((x / period) + 0.5) % 1.0 - 0.5) * period
    return 1.0 - _smooth(width * 0.5, width * 0.5 + 0.004, f)


def albedo(m: dict, uv: np.ndarray, lp: np.ndarray):
    u, v = uv[:, 0], uv[:, 1]
    tex, s = m["tex"], m.get("scale", 1.0)
    seed = int(m.get("seed", 0))
    c1, c2 = _col(m["c1"]), _col(m.get("c2", m["c1"]))
    n = len(u)
    emit = None
    if tex == "plain":
        out = c1 * (0.94 + 0.12 * vnoise(u * 5.0 / s, v * 5.0 / s, seed))[:, None]
    elif tex == "gradient":
        t = _smooth(m.get("v0", 0.0), m.get("v1", 3.0), v)
        out = _mix(c1, c2, t) * (0.96 + 0.08 * vnoise(u * 3.0, v * 3.0, seed))[:, None]
    elif tex == "marble":
        out = _marble(u / s, v / s, c1, c2, seed, m.get("vein", 8.0))
    elif tex == "tiles":
        size, grout = m.get("size", 0.5), m.get("grout", 0.012)
        iu, iv = np.floor(u / size), np.floor(v / size)
        r = cell_rand(iu, iv, seed)
        inner = m.get("inner", "marble")
        if inner == "checker":
            base = np.where(((iu + iv) % 2 == 0)[:, None], c1, c2)
            base = base * (0.92 + 0.16 * r)[:, None]
        elif inner == "marble":
            base = _marble(u / (size * 1.7) + r * 13.0, v / (size * 1.7), c1, c2, seed, 7.0)
        else:
            base = _mix(c1, c2, r * 0.6)
        g = np.maximum(_lines(u, size, grout), _lines(v, size, grout))
        out = _mix(base, _col(m.get("grout_color", (0.55, 0.53, 0.5))), g)
    elif tex == "chevron":
        out = _chevron(u / s, v / s, c1, c2, seed)
    elif tex == "brick":
        bw, bh, mort = m.get("bw", 0.30) * s, m.get("bh", 0.09) * s, 0.012 * s
        row = np.floor(v / bh)
        uu = u + (row % 2) * bw * 0.5
        col = np.floor(uu / bw)
        r = cell_rand(col, row, seed)
        base = _mix(c1, c2, r) * (0.85 + 0.3 * vnoise(u * 40.0, v * 40.0, seed + 7))[:, None]
        g = np.maximum(_lines(v, bh, mort), _lines(uu, bw, mort))
        out = _mix(base, _col(m.get("mortar", (0.78, 0.76, 0.72))), g)
    elif tex == "carpet":
        fine = _hash(np.floor(u * 180.0), np.floor(v * 180.0), seed)
        blot = fbm(u * 1.3, v * 1.3, seed + 3, 2)
        out = c1 * (0.78 + 0.22 * fine + 0.25 * (blot - 0.5))[:, None]
        if m.get("pattern", False):
            q = np.abs(((u + v) / (0.45 * s)) % 1.0 - 0.5) + np.abs(((u - v) / (0.45 * s)) % 1.0 - 0.5)
            out = _mix(out, c2 * (0.8 + 0.2 * fine)[:, None], (q < 0.22).astype(np.float64))
    elif tex == "concrete":
        n1 = fbm(u * 2.0, v * 2.0, seed, 3)
        n2 = vnoise(u * 35.0, v * 35.0, seed + 5)
        out = c1 * (0.75 + 0.35 * n1 + 0.1 * n2)[:, None]
        out = out * (1.0 - 0.35 * np.maximum(_lines(u, 3.0, 0.015), _lines(v, 3.0, 0.015)))[:, None]
        if "stripe" in m:  # painted lane line along v at u = stripe
            a, w = m["stripe"], 0.1
            lane = (np.abs(u - a) < w / 2) | (np.abs(u + a) < w / 2)
            out = np.where(lane[:, None], _col(m.get("stripe_color", (0.9, 0.75, 0.1))) * (0.8 + 0.2 * n2)[:, None],
                           out)
    elif tex == "planks":
        pw = m.get("width", 0.18) * s
        row = np.floor(u / pw)
        off = cell_rand(row, row * 0 + 3, seed) * 2.0
        seg = np.floor((v + off) / 1.6)
        r = cell_rand(row, seg, seed + 1)
        grain = 0.5 + 0.5 * np.sin(v * 9.0 + 6.0 * fbm(u * 3.0, v * 0.6, seed + 2, 2) + row * 2.1)
        base = _mix(c1, c2, 0.35 * r + 0.4 * grain)
        g = np.maximum(_lines(u, pw, 0.006), _lines(v + off, 1.6, 0.006))
        out = base * (1.0 - 0.6 * g)[:, None]
    elif tex == "wallpaper":
        k = 2 * np.pi / (0.25 * s)
        motif = np.sin(u * k) * np.sin(v * k * 0.7) + 0.3 * np.sin((u + v) * k * 0.5)
        stripe = _lines(u, 0.5 * s, 0.05 * s)
        t = np.clip((motif > 0.55).astype(np.float64) * 0.8 + stripe * 0.5, 0.0, 1.0)
        out = _mix(c1, c2, t)
    elif tex == "corrugated":
        w = np.sin(u * 2 * np.pi / (0.12 * s))
        out = c1 * (0.72 + 0.22 * w + 0.12 * vnoise(u * 2.0, v * 9.0, seed))[:, None]
        rust = fbm(u * 1.5, v * 1.5, seed + 9, 3)
        out = _mix(out, c2, _smooth(0.62, 0.8, rust) * 0.8)
    elif tex == "droptile":
        size = m.get("size", 0.6)
        iu, iv = np.floor(u / size), np.floor(v / size)
        speck = _hash(np.floor(u * 150.0), np.floor(v * 150.0), seed)
        out = c1 * (0.9 + 0.1 * speck)[:, None]
        g = np.maximum(_lines(u, size, 0.02), _lines(v, size, 0.02))
        out = _mix(out, c2, g)
        lit = (cell_rand(iu, iv, seed + 11) < m.get("lamps", 0.15)) & (g < 0.5)
        emit = np.where(lit[:, None], _col(m.get("lamp_color", (1.0, 0.97, 0.9))) * m.get("lamp_power", 3.0), 0.0)
    elif tex == "coffer":
        size = m.get("size", 1.2)
        fu = np.abs((u / size) % 1.0 - 0.5) * 2
        fv = np.abs((v / size) % 1.0 - 0.5) * 2
        rim = np.maximum(fu, fv)
        shade = np.where(rim > 0.8, 0.65, np.where(rim > 0.7, 1.05, 0.9))
        out = c1 * shade[:, None]
        out = _mix(out, c2, (rim > 0.93).astype(np.float64) * 0.7)
    elif tex == "cardboard":
        out = c1 * (0.85 + 0.2 * vnoise(u * 20.0, v * 20.0, seed))[:, None]
        tape = np.abs(u - m.get("tape", 0.0)) < 0.03
        out = np.where(tape[:, None], c2, out)
    elif tex == "fabric":
        weave = _hash(np.floor(u * 220.0), np.floor(v * 220.0), seed)
        base = c1
        if m.get("stripes", 0.0) > 0.0:
            base = np.where((((v / m["stripes"]) % 1.0) < 0.5)[:, None], c1, c2)
        out = base * (0.88 + 0.12 * weave + 0.1 * (vnoise(u * 6.0, v * 6.0, seed) - 0.5))[:, None]
    elif tex in ("skin", "face"):
        out = c1 * (0.95 + 0.07 * vnoise(u * 30.0, v * 30.0, seed))[:, None]
        if tex == "face":  # eyes, brows and mouth painted in the head's local frame (x left, y up, z forward)
            H = m["H"]
            ex = np.abs(lp[:, 0]) - 0.0175 * H
            eye = (ex * ex + (lp[:, 1] - 0.010 * H) ** 2 < (0.0075 * H) ** 2) & (lp[:, 2] > 0.02 * H)
            brow = (np.abs(ex) < 0.011 * H) & (np.abs(lp[:, 1] - 0.022 * H) < 0.0025 * H) & (lp[:, 2] > 0.02 * H)
            mouth = (np.abs(lp[:, 0]) < 0.014 * H) & (np.abs(lp[:, 1] + 0.036 * H) < 0.003 * H) & \
                (lp[:, 2] > 0.02 * H)
            out = np.where(eye[:, None], _col((0.08, 0.06, 0.05)), out)
            out = np.where(brow[:, None], c2, out)
            out = np.where(mouth[:, None], c1 * _col((0.7, 0.45, 0.45)), out)
    elif tex == "hair":
        out = c1 * (0.8 + 0.3 * vnoise(u * 60.0, v * 8.0, seed))[:, None]
    elif tex == "metal":
        out = c1 * (0.85 + 0.15 * vnoise(u * 3.0, v * 120.0, seed))[:, None]
    elif tex == "leaves":
        n1 = vnoise(u * 25.0, v * 25.0, seed)
        out = _mix(c1, c2, n1) * (0.7 + 0.4 * vnoise(u * 60.0, v * 60.0, seed + 1))[:, None]
    elif tex == "lamp":
        out = c1 * np.ones((n, 1))
        emit = np.broadcast_to(_col(m["emit"]), (n, 3)).copy()
    elif tex == "screen":
        out = c1 * np.ones((n, 1))
        glow = 0.4 + 0.6 * vnoise(u * 8.0, v * 8.0, seed)
        emit = _col(m["emit"]) * glow[:, None] if m.get("on", True) else None
    elif tex == "wood":
        grain = 0.5 + 0.5 * np.sin(u * 30.0 / s + 8.0 * fbm(u * 2.0, v * 2.0, seed, 2))
        out = _mix(c1, c2, grain * 0.7)
    else:
        raise ValueError(f"unknown texture {tex!r}")
    out = np.clip(out, 0.0, 1.0) ** 2.2
    return out, emit


def _marble(u, v, c1, c2, seed, vein):
    t = fbm(u * 1.5, v * 1.5, seed, 4)
    band = np.abs(np.sin((u * 0.7 + v * 0.45) * vein * 0.5 + 9.0 * t))
    veins = (1.0 - band) ** 10
    cloud = fbm(u * 0.6 + 3.0, v * 0.6, seed + 13, 2)
    base = c1 * (0.9 + 0.15 * (cloud - 0.5))[:, None]
    return _mix(base, c2, np.clip(veins * 0.9, 0.0, 1.0))


def _chevron(u, v, c1, c2, seed, w=0.09, L=0.45):
    """Chevron parquet: strips of width w; planks slanted at +-45 degrees alternately across strips."""
    strip = np.floor(u / w)
    fu = u / w - strip
    sgn = np.where(strip % 2 == 0, 1.0, -1.0)
    along = v + sgn * fu * w
    k = np.floor(along / L)
    r = cell_rand(strip, k, seed)
    grain = 0.5 + 0.5 * np.sin(along * 60.0 + 5.0 * vnoise(u * 40.0, along * 4.0, seed + 3))
    base = _mix(c1, c2, 0.55 * r + 0.25 * grain)
    gap = np.maximum(1.0 - _smooth(0.0, 0.06, np.minimum(fu, 1.0 - fu)),
                     _lines(along, L, 0.006))
    return base * (1.0 - 0.55 * gap)[:, None]


# ------------------------------------------------------------------ palettes

def hsv(h, s, v):
    h = (h % 1.0) * 6.0
    i = int(h) % 6
    f = h - int(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i])


def jitter(rng, c, amount=0.06):
    return np.clip(np.asarray(c, float) + rng.normal(0, amount, 3), 0.02, 0.98)


def pick(rng, options):
    return options[int(rng.integers(len(options)))]
