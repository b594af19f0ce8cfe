"""Furniture and fittings of the room scenes (mp_deploy.data.rooms), and their placement in a floor plan.

Each builder makes an item around the origin, standing on the floor and facing +z (its back at -z): things
(instances of one class label each: a table's top and legs are one "box", a floor lamp's base, pole and shade one
"cylinder", a pendant's cord a cylinder and its shade a sphere), the footprint's half extents, its height and the
lamps it carries (local light positions). `furnish` places items against walls (beds, shelves, cabinets, sofas:
back to the wall, clear of doors, under windows only when low) or free in the room (tables with chairs, plants,
bins, balls, pillars, cartons), never overlapping each other, the camera's clearance or what the caller keeps free.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np

from mp_deploy.data.rooms_geometry import Ball, Box, Cylinder, Thing
from mp_deploy.data.rooms_look import (NOISE, STRIPES, Finish, books, fabric, furniture_finish, glow, light_color,
                                       metal, panels, patterned, srgb, wood)
from mp_deploy.data.scene import BOX, CYLINDER, SPHERE



@dataclass
class Item:
    things: list
    half: tuple  # footprint half extents (x, z) in the item's frame
    height: float
    lamps: list = field(default_factory=list)  # (local position, intensity)
    name: str = ""


def box(center, half, mat, yaw=0.0, shadow=True) -> Box:
    return Box(np.asarray(center, float), np.asarray(half, float), yaw, mat, shadow)


def legs(w2, d2, height, size, inset, mat) -> list:
    """Four square legs under a top of half extents (w2, d2), from the floor to `height`."""
    lx, lz = w2 - inset - size / 2, d2 - inset - size / 2
    return [box([sx * lx, height / 2, sz * lz], [size / 2, height / 2, size / 2], mat)
            for sx in (1, -1) for sz in (1, -1)]


# ------------------------------------------------------------------ builders

def table(rng, add, low: bool = False) -> Item:
    """A table (rectangular: top + four legs, boxes; or round: top, pedestal and foot, cylinders), sometimes
    with things on it."""
    h = rng.uniform(0.38, 0.5) if low else rng.uniform(0.7, 0.78)
    th = rng.uniform(0.025, 0.06)
    top_mat = add(wood(rng) if rng.random() < 0.6 else furniture_finish(rng))
    if rng.random() < 0.25:
        r = rng.uniform(0.35, 0.6)
        foot_mat = top_mat if rng.random() < 0.5 else add(metal(rng))
        parts = [Cylinder([0, 0], h - th, h, r, top_mat), Cylinder([0, 0], 0.03, h - th, rng.uniform(0.03, 0.07),
                                                                  foot_mat),
                 Cylinder([0, 0], 0.0, 0.03, rng.uniform(0.18, 0.3), foot_mat)]
        things = [Thing(CYLINDER, parts, (0.0, 0.0, r * 0.5, r * 0.5, 0.0))]
        w2 = d2 = r
    else:
        w2, d2 = rng.uniform(0.4, 0.9), rng.uniform(0.3, 0.5)
        leg_mat = top_mat if rng.random() < 0.6 else add(metal(rng))
        parts = [box([0, h - th / 2, 0], [w2, th / 2, d2], top_mat)]
        parts += legs(w2, d2, h - th, rng.uniform(0.035, 0.07), rng.uniform(0.02, 0.1), leg_mat)
        things = [Thing(BOX, parts, (0.0, 0.0, w2, d2, 0.0))]
    item = Item(things, (w2, d2), h, name="table")
    on_top(rng, add, item, h, w2 * 0.7, d2 * 0.7)
    return item


def chair(rng, add, mat: int | None = None) -> Thing:
    """A chair facing +z: seat, four legs and a backrest at -z (boxes)."""
    mat = add(furniture_finish(rng)) if mat is None else mat
    s, sh, th = rng.uniform(0.2, 0.24), rng.uniform(0.42, 0.48), 0.04
    bh = rng.uniform(0.35, 0.5)
    parts = [box([0, sh - th / 2, 0], [s, th / 2, s], mat)] + legs(s, s, sh - th, 0.035, 0.0, mat)
    parts.append(box([0, sh + bh / 2, -s + 0.02], [s, bh / 2, 0.02], mat))
    return Thing(BOX, parts, (0.0, 0.0, s, s, 0.0))


def dining(rng, add) -> Item:
    """A table with up to four chairs around it, facing it."""
    item = table(rng, add)
    w2, d2 = item.half
    mat = add(furniture_finish(rng))
    sides = [(0.0, d2 + 0.15, np.pi), (0.0, -d2 - 0.15, 0.0), (w2 + 0.15, 0.0, -np.pi / 2), (-w2 - 0.15, 0.0,
                                                                                           np.pi / 2)]
    for k in rng.permutation(4)[: rng.integers(1, 5)]:
        x, z, yaw = sides[k]
        pull = rng.uniform(0.0, 0.25)
        x, z = x + np.sign(x) * pull, z + np.sign(z) * pull
        item.things.append(chair(rng, add, mat).moved(x, z, yaw + rng.uniform(-0.3, 0.3)))
    item.half = (w2 + 0.7, d2 + 0.7)
    item.name = "dining"
    return item


def bed(rng, add) -> Item:
    """A bed, headboard at -z: frame, mattress, blanket, pillows and headboard (boxes)."""
    length, w2 = rng.uniform(1.9, 2.1), rng.uniform(0.45, 0.9)
    fh, mt = rng.uniform(0.2, 0.35), rng.uniform(0.15, 0.25)
    frame = add(wood(rng) if rng.random() < 0.6 else furniture_finish(rng))
    sheet = add(Finish(*(2 * [srgb(rng.random(), rng.uniform(0, 0.15), rng.uniform(0.7, 0.95))])))
    blanket, pillow = add(fabric(rng)), add(fabric(rng) if rng.random() < 0.5 else patterned(rng))
    hh = rng.uniform(0.8, 1.2)
    L2 = length / 2
    parts = [box([0, fh / 2, 0], [w2, fh / 2, L2], frame),
             box([0, fh + mt / 2, 0.0], [w2 - 0.03, mt / 2, L2 - 0.05], sheet),
             box([0, fh + mt / 2 + 0.015, L2 * 0.3], [w2 - 0.01, mt / 2 + 0.03, L2 * 0.7], blanket),
             box([0, hh / 2, -L2 + 0.03], [w2 + 0.02, hh / 2, 0.03], frame)]
    n = 2 if w2 > 0.65 else 1
    for k in range(n):
        x = 0.0 if n == 1 else (k - 0.5) * w2
        parts.append(box([x, fh + mt + 0.06, -L2 + 0.3], [min(0.3, w2 / n - 0.05), 0.06, 0.18], pillow))
    return Item([Thing(BOX, parts, (0.0, 0.0, w2, L2, 0.0))], (w2 + 0.02, L2), hh, name="bed")


def sofa(rng, add) -> Item:
    """A sofa, back at -z: base, seat cushions, backrest and arms (boxes)."""
    w2, d2 = rng.uniform(0.7, 1.2), rng.uniform(0.4, 0.48)
    sh, bh, aw, ah = rng.uniform(0.38, 0.45), rng.uniform(0.75, 0.95), rng.uniform(0.1, 0.22), rng.uniform(0.55, 0.68)
    mat = add(fabric(rng))
    cushion = mat if rng.random() < 0.6 else add(fabric(rng))
    bt = rng.uniform(0.15, 0.25)
    parts = [box([0, (sh - 0.12) / 2, 0], [w2, (sh - 0.12) / 2, d2], mat),
             box([0, bh / 2, -d2 + bt / 2], [w2, bh / 2, bt / 2], mat)]
    parts += [box([s * (w2 - aw / 2), ah / 2, 0], [aw / 2, ah / 2, d2], mat) for s in (1, -1)]
    n = int(rng.integers(2, 4))
    inner = w2 - aw
    for k in range(n):
        cw = inner / n
        parts.append(box([-inner + cw * (2 * k + 1), sh - 0.06, bt / 2], [cw - 0.01, 0.06, d2 - bt / 2], cushion))
    return Item([Thing(BOX, parts, (0.0, 0.0, w2, d2, 0.0))], (w2, d2), bh, name="sofa")


def shelf(rng, add, max_h: float) -> Item:
    """A bookcase, back at -z: sides, top, bottom, shelves and back (boxes), with rows of books."""
    w2, d2 = rng.uniform(0.3, 0.8), rng.uniform(0.13, 0.2)
    h = rng.uniform(0.8, max_h)
    t = rng.uniform(0.018, 0.03)
    mat = add(wood(rng) if rng.random() < 0.6 else furniture_finish(rng))
    parts = [box([s * (w2 - t / 2), h / 2, 0], [t / 2, h / 2, d2], mat) for s in (1, -1)]
    parts.append(box([0, h / 2, -d2 + 0.005], [w2 - t, h / 2, 0.005], mat))
    levels = max(2, round(h / rng.uniform(0.3, 0.42)))
    ys = np.linspace(0.05, h - t / 2, levels + 1)
    for y in ys:
        parts.append(box([0, y, 0], [w2 - t, t / 2, d2], mat))
    for y0, y1 in pairwise(ys):
        if rng.random() < 0.75:
            fill = rng.uniform(0.3, 0.95) * (w2 - t)
            x = rng.uniform(-(w2 - t) + fill, (w2 - t) - fill)
            bh = (y1 - y0 - t) * rng.uniform(0.55, 0.9)
            parts.append(box([x, y0 + t / 2 + bh / 2, -d2 * 0.1], [fill, bh / 2, d2 * 0.8], add(books(rng))))
    return Item([Thing(BOX, parts, (0.0, 0.0, w2, d2, 0.0))], (w2, d2), h, name="shelf")


def cabinet(rng, add, max_h: float) -> Item:
    """A cabinet, dresser or wardrobe: a body with drawer / door seams, on legs or a plinth (boxes)."""
    w2, d2 = rng.uniform(0.25, 0.8), rng.uniform(0.2, 0.3)
    h = rng.uniform(0.5, max_h)
    mat = add(panels(rng))
    lift = rng.uniform(0.08, 0.18) if rng.random() < 0.4 else 0.0
    parts = [box([0, lift + (h - lift) / 2, 0], [w2, (h - lift) / 2, d2], mat)]
    if lift:
        parts += legs(w2, d2, lift, 0.04, 0.03, mat)
    item = Item([Thing(BOX, parts, (0.0, 0.0, w2, d2, 0.0))], (w2, d2), h, name="cabinet")
    if h < 1.3:
        on_top(rng, add, item, h, w2 * 0.8, d2 * 0.7)
    return item


def counter(rng, add, ceiling: float) -> Item:
    """A kitchen counter: a cabinet run with a worktop, sometimes wall cabinets above (boxes)."""
    w2, d2, h = rng.uniform(0.7, 1.5), 0.3, rng.uniform(0.86, 0.92)
    body = add(panels(rng))
    top = add(Finish(*(2 * [srgb(rng.random(), rng.uniform(0, 0.2), rng.uniform(0.2, 0.9))]), NOISE, 0.05,
                     gloss=0.5) if rng.random() < 0.6 else wood(rng))
    parts = [box([0, (h - 0.04) / 2, -0.02], [w2, (h - 0.04) / 2, d2 - 0.02], body),
             box([0, h - 0.02, 0], [w2 + 0.01, 0.02, d2], top)]
    things = [Thing(BOX, parts, (0.0, 0.0, w2, d2, 0.0))]
    if rng.random() < 0.5 and ceiling > 2.3:
        y0, y1 = 1.45, min(2.2, ceiling - 0.05)
        things.append(Thing(BOX, [box([0, (y0 + y1) / 2, -d2 + 0.18], [w2, (y1 - y0) / 2, 0.17], body)]))
    item = Item(things, (w2, d2), h, name="counter")
    on_top(rng, add, item, h, w2 * 0.8, d2 * 0.6)
    return item


def tv_unit(rng, add) -> Item:
    """A low cabinet with a flat screen on it (boxes)."""
    w2, d2, h = rng.uniform(0.5, 1.0), rng.uniform(0.18, 0.25), rng.uniform(0.35, 0.6)
    screen = add(Finish(*(2 * [srgb(0.6, 0.2, rng.uniform(0.02, 0.08))]), gloss=0.8))
    sw = rng.uniform(0.4, min(0.75, w2))
    parts = [box([0, h / 2, 0], [w2, h / 2, d2], add(panels(rng)))]
    screen_part = box([0, h + 0.04 + sw * 0.56, -d2 * 0.3], [sw, sw * 0.56, 0.025], screen)
    return Item([Thing(BOX, parts, (0.0, 0.0, w2, d2, 0.0)), Thing(BOX, [screen_part])], (w2, d2),
                h + 0.04 + sw * 1.12, name="tv")


def radiator(rng, add) -> Item:
    """A radiator on the wall, lifted off the floor (a box with vertical fins)."""
    w2, h, lift = rng.uniform(0.3, 0.7), rng.uniform(0.4, 0.6), rng.uniform(0.1, 0.2)
    c = srgb(0, 0, rng.uniform(0.7, 0.95))
    mat = add(Finish(c, c * 0.7, STRIPES, rng.uniform(0.03, 0.06), axis=0, gloss=0.3))
    part = box([0, lift + h / 2, 0], [w2, h / 2, 0.05], mat)
    return Item([Thing(BOX, [part])], (w2, 0.05), lift + h, name="radiator")


def floor_lamp(rng, add) -> Item:
    """A floor lamp: base, pole and a glowing shade (cylinders, or a sphere shade) with a light inside."""
    pole_h = rng.uniform(1.2, 1.7)
    mat = add(metal(rng))
    shade_col = srgb(rng.uniform(0.05, 0.15), rng.uniform(0.1, 0.5), rng.uniform(0.7, 1.0))
    shade = add(glow(shade_col, rng.uniform(0.6, 2.0)))
    rb = rng.uniform(0.12, 0.18)
    parts = [Cylinder([0, 0], 0.0, 0.03, rb, mat), Cylinder([0, 0], 0.03, pole_h, rng.uniform(0.01, 0.02), mat)]
    if rng.random() < 0.5:
        rs, hs = rng.uniform(0.14, 0.25), rng.uniform(0.2, 0.35)
        parts.append(Cylinder([0, 0], pole_h - 0.05, pole_h - 0.05 + hs, rs, shade, shadow=False))
        things = [Thing(CYLINDER, parts, (0.0, 0.0, rb, rb, 0.0))]
        centre = pole_h - 0.05 + hs / 2
    else:
        rs = rng.uniform(0.15, 0.25)
        centre = pole_h + rs * 0.8
        things = [Thing(CYLINDER, parts, (0.0, 0.0, rb, rb, 0.0)),
                  Thing(SPHERE, [Ball([0, centre, 0], rs, shade, shadow=False)])]
    return Item(things, (max(rb, rs), max(rb, rs)), centre + rs, [(np.array([0.0, centre, 0.0]), 1.0)],
                name="floor lamp")


def pendant(rng, add, ceiling: float, low: float) -> Item:
    """A lamp hanging from the ceiling: a cord (cylinder) and a glowing shade (sphere) with a light inside."""
    rs = rng.uniform(0.1, 0.22)
    y = rng.uniform(max(low, 1.9) + rs, ceiling - 0.35) if ceiling - 0.35 > max(low, 1.9) + rs else ceiling - 0.35
    shade = add(glow(srgb(rng.uniform(0.05, 0.15), rng.uniform(0.0, 0.5), rng.uniform(0.7, 1.0)),
                     rng.uniform(0.8, 2.5)))
    cord = Thing(CYLINDER, [Cylinder([0, 0], y + rs * 0.9, ceiling, rng.uniform(0.006, 0.012), add(metal(rng)),
                                     shadow=False)])
    return Item([cord, Thing(SPHERE, [Ball([0, y, 0], rs, shade, shadow=False)])], (rs, rs), ceiling,
                [(np.array([0.0, y, 0.0]), 1.0)], name="pendant")


def ceiling_light(rng, add, ceiling: float) -> Item:
    """A flush ceiling light: a glowing disc (cylinder) with a light just below it."""
    r, th = rng.uniform(0.12, 0.3), rng.uniform(0.03, 0.1)
    disc = Cylinder([0, 0], ceiling - th, ceiling, r, add(glow(srgb(0.1, 0.05, 1.0), rng.uniform(1.5, 4.0))),
                    shadow=False)
    return Item([Thing(CYLINDER, [disc])], (r, r), ceiling, [(np.array([0.0, ceiling - th - 0.12, 0.0]), 1.0)],
                name="ceiling light")


def pillar(rng, add, ceiling: float) -> Item:
    r = rng.uniform(0.15, 0.35)
    mat = add(furniture_finish(rng) if rng.random() < 0.5 else Finish(*(2 * [srgb(0, 0, rng.uniform(0.5, 0.9))])))
    return Item([Thing(CYLINDER, [Cylinder([0, 0], 0.0, ceiling, r, mat)], (0.0, 0.0, r, r, 0.0))], (r, r),
                ceiling, name="pillar")


def waste_bin(rng, add) -> Item:
    r, h = rng.uniform(0.1, 0.2), rng.uniform(0.25, 0.6)
    mat = add(metal(rng) if rng.random() < 0.5 else patterned(rng))
    return Item([Thing(CYLINDER, [Cylinder([0, 0], 0.0, h, r, mat)], (0.0, 0.0, r, r, 0.0))], (r, r), h,
                name="bin")


def plant(rng, add) -> Item:
    """A pot (cylinder) with foliage (one to three spheres)."""
    r, h = rng.uniform(0.1, 0.22), rng.uniform(0.2, 0.45)
    pot = add(Finish(*(2 * [srgb(rng.uniform(0.02, 0.08), rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.8))]))
              if rng.random() < 0.5 else patterned(rng))
    green = srgb(rng.uniform(0.22, 0.38), rng.uniform(0.4, 0.8), rng.uniform(0.2, 0.6))
    leaves = add(Finish(green, green * 0.5, NOISE, rng.uniform(0.03, 0.08)))
    balls = []
    top = h
    for k in range(int(rng.integers(1, 4))):
        rb = rng.uniform(0.14, 0.32) * (0.8 ** k)
        off = rng.uniform(-0.5, 0.5, 2) * r
        balls.append(Ball([off[0], h + rb * 0.8 + k * 0.2, off[1]], rb, leaves))
        top = max(top, h + rb * 1.8 + k * 0.2)
    return Item([Thing(CYLINDER, [Cylinder([0, 0], 0.0, h, r, pot)], (0.0, 0.0, r, r, 0.0)),
                 Thing(SPHERE, balls)], (max(r, 0.3), max(r, 0.3)), top, name="plant")


def balls(rng, add) -> Item:
    """One to three balls on the floor (spheres), up to exercise-ball size."""
    things, placed = [], []
    for k in range(int(rng.integers(1, 4))):
        r = rng.uniform(0.08, 0.36) if k else rng.uniform(0.15, 0.4)
        x, z = rng.uniform(-0.35, 0.35, 2)
        if any(np.hypot(x - px, z - pz) < r + pr for px, pz, pr in placed):
            continue  # balls do not go through each other
        placed.append((x, z, r))
        things.append(Thing(SPHERE, [Ball([x, r, z], r, add(patterned(rng)))], (x, z, r * 0.4, r * 0.4, 0.0)))
    return Item(things, (0.75, 0.75), 0.8, name="balls")


def cartons(rng, add) -> Item:
    """Cardboard boxes, side by side or stacked, each turned a little (only the bottom ones have footprints)."""
    mat = add(Finish(*(2 * [srgb(rng.uniform(0.07, 0.1), rng.uniform(0.35, 0.6), rng.uniform(0.45, 0.75))]),
                     NOISE, 0.3))
    things, top, below = [], 0.0, None
    for _ in range(int(rng.integers(1, 4))):
        half = rng.uniform([0.12, 0.1, 0.12], [0.35, 0.3, 0.3])
        stacked = below is not None and rng.random() < 0.5
        if stacked:
            half = np.minimum(half, below * 0.95)
        base = top if stacked else 0.0
        x, z = rng.uniform(-0.2, 0.2, 2) if stacked else rng.uniform(-0.4, 0.4, 2)
        yaw = rng.uniform(-0.4, 0.4)
        things.append(Thing(BOX, [box([x, base + half[1], z], half, mat, yaw)],
                            None if stacked else (x, z, half[0], half[2], yaw)))
        top, below = base + 2 * half[1], half
    return Item(things, (0.8, 0.8), top, name="cartons")


def pouf(rng, add) -> Item:
    """A pouf or bean bag: a sphere sunk into the floor (the floor hides its lower part), or a drum ottoman."""
    mat = add(fabric(rng) if rng.random() < 0.7 else patterned(rng))
    if rng.random() < 0.6:
        r = rng.uniform(0.25, 0.45)
        y = r * rng.uniform(0.3, 0.8)
        foot = np.sqrt(r * r - y * y)
        return Item([Thing(SPHERE, [Ball([0, y, 0], r, mat)], (0.0, 0.0, foot * 0.7, foot * 0.7, 0.0))], (r, r),
                    y + r, name="pouf")
    r, h = rng.uniform(0.2, 0.4), rng.uniform(0.3, 0.45)
    return Item([Thing(CYLINDER, [Cylinder([0, 0], 0.0, h, r, mat)], (0.0, 0.0, r, r, 0.0))], (r, r), h,
                name="ottoman")


def side_table(rng, add) -> Item:
    """A small round table (cylinder top on a pedestal) or a drum side table, sometimes with things on it."""
    r, h = rng.uniform(0.2, 0.35), rng.uniform(0.45, 0.65)
    mat = add(furniture_finish(rng))
    if rng.random() < 0.5:
        parts = [Cylinder([0, 0], h - 0.03, h, r, mat), Cylinder([0, 0], 0.0, h - 0.03, rng.uniform(0.03, 0.06), mat)]
    else:
        parts = [Cylinder([0, 0], 0.0, h, r, mat)]
    item = Item([Thing(CYLINDER, parts, (0.0, 0.0, r * 0.6, r * 0.6, 0.0))], (r, r), h, name="side table")
    on_top(rng, add, item, h, r * 0.5, r * 0.5)
    return item


def stool(rng, add) -> Item:
    """A round stool: seat and three or four thin legs (cylinders)."""
    r, h = rng.uniform(0.15, 0.2), rng.uniform(0.45, 0.75)
    mat = add(furniture_finish(rng))
    parts = [Cylinder([0, 0], h - 0.04, h, r, mat)]
    n = int(rng.integers(3, 5))
    for k in range(n):
        a = 2 * np.pi * k / n
        parts.append(Cylinder([0.75 * r * np.cos(a), 0.75 * r * np.sin(a)], 0.0, h - 0.04, 0.015, mat))
    return Item([Thing(CYLINDER, parts, (0.0, 0.0, r, r, 0.0))], (r, r), h, name="stool")


def on_top(rng, add, item: Item, y: float, hx: float, hz: float) -> None:
    """Put up to three small things on a top at height y (half extents hx, hz): a globe or fruit (sphere), a
    vase or mug (cylinder), a pile of books (box), sometimes a table lamp (with a light)."""
    for _ in range(int(rng.integers(0, 4))):
        x, z = rng.uniform(-hx, hx), rng.uniform(-hz, hz)
        kind = rng.random()
        if kind < 0.3:
            r = rng.uniform(0.04, 0.14)
            item.things.append(Thing(SPHERE, [Ball([x, y + r, z], r, add(patterned(rng)))]))
        elif kind < 0.6:
            r, h = rng.uniform(0.03, 0.09), rng.uniform(0.07, 0.35)
            item.things.append(Thing(CYLINDER, [Cylinder([x, z], y, y + h, r, add(patterned(rng)))]))
        elif kind < 0.85:
            half = rng.uniform([0.08, 0.01, 0.1], [0.16, 0.06, 0.14])
            item.things.append(Thing(BOX, [box([x, y + half[1], z], half, add(books(rng)), rng.uniform(-0.5, 0.5))]))
        else:
            hs, rs = rng.uniform(0.15, 0.3), rng.uniform(0.08, 0.15)
            stem = Cylinder([x, z], y, y + hs, rng.uniform(0.01, 0.03), add(metal(rng)))
            shade = Cylinder([x, z], y + hs, y + hs + rs * 1.2, rs, add(glow(light_color(rng) * 0.9,
                                                                            rng.uniform(0.5, 1.5))), shadow=False)
            item.things.append(Thing(CYLINDER, [stem, shade]))
            item.lamps.append((np.array([x, y + hs + rs * 0.6, z]), 0.5))


# ------------------------------------------------------------------ placement

@dataclass
class Layout:
    """What is placed so far: floor rectangles kept free or taken ((lo, hi) in x, z), the things and lights."""

    taken: list = field(default_factory=list)
    things: list = field(default_factory=list)
    lamps: list = field(default_factory=list)  # (world position, intensity)
    lines: list = field(default_factory=list)  # (a, b, clearance): floor segments kept clear (lines of sight)

    def free(self, lo, hi, gap: float = 0.05, lines: bool = True) -> bool:
        if not all(hi[0] + gap <= a[0] or lo[0] >= b[0] + gap or hi[1] + gap <= a[1] or lo[1] >= b[1] + gap
                   for a, b in self.taken):
            return False
        for a, b, clearance in (self.lines if lines else ()):
            pts = a + np.linspace(0, 1, 12)[:, None] * (b - a)
            outside = np.maximum(np.maximum(lo - pts, 0), pts - hi)
            if (np.hypot(outside[:, 0], outside[:, 1]) < clearance).any():
                return False
        return True

    def take(self, lo, hi) -> None:
        self.taken.append((np.asarray(lo, float), np.asarray(hi, float)))


def footprint_box(x, z, hx, hz, yaw) -> tuple[np.ndarray, np.ndarray]:
    """The axis-aligned floor rectangle around a turned footprint."""
    c, s = abs(np.cos(yaw)), abs(np.sin(yaw))
    ex, ez = hx * c + hz * s, hx * s + hz * c
    return np.array([x - ex, z - ez]), np.array([x + ex, z + ez])


def put(layout: Layout, item: Item, x: float, z: float, yaw: float, floor: bool = True) -> list:
    """Place an item at (x, z) turned by `yaw`: its things and lamps join the layout and, when it stands on the
    `floor`, its footprint is taken. Returns its lamps (world position, intensity)."""
    c, s = np.cos(yaw), np.sin(yaw)
    layout.things += [t.moved(x, z, yaw) for t in item.things]
    lamps = [(np.array([x + c * p[0] + s * p[2], p[1], z - s * p[0] + c * p[2]]), k) for p, k in item.lamps]
    layout.lamps += lamps
    if floor:
        layout.take(*footprint_box(x, z, *item.half, yaw))
    return lamps


def clear_above(things: list, x: float, z: float, y: float, margin: float) -> bool:
    """Whether no thing reaches above height y within `margin` of the floor point (x, z) (room for a ceiling
    light or a pendant)."""
    for thing in things:
        c, r = thing.bound
        if c[1] + r > y and np.hypot(c[0] - x, c[2] - z) < r + margin:
            return False
    return True


def place_against_wall(rng, plan, layout: Layout, item: Item, tries: int = 12, under_window: bool = False) -> bool:
    """Put an item with its back to a random wall, clear of doors (and of windows unless it is low enough)."""
    hx, hz = item.half
    walls = [w for w in plan.walls if w.length > 2 * hx + 0.1]
    if not walls:
        return False
    for _ in range(tries):
        wall = walls[rng.integers(len(walls))]
        if under_window:
            windows = [op for op in wall.openings if op.kind == "window" and op.u1 - op.u0 > 2 * hx]
            if not windows:
                continue
            op = windows[rng.integers(len(windows))]
            u = (op.u0 + op.u1) / 2
        else:
            u = rng.uniform(wall.lo + hx + 0.02, wall.hi - hx - 0.02)
        if any(u - hx - 0.1 < op.u1 and u + hx + 0.1 > op.u0 and (op.kind != "window" or item.height > op.y0 - 0.03)
               for op in wall.openings):
            continue
        x, z = wall.point(u, hz + rng.uniform(0.005, 0.03))
        normal = np.zeros(3)
        normal[wall.axis] = wall.inward
        yaw = float(np.arctan2(normal[0], normal[2]))
        lo, hi = footprint_box(x, z, hx, hz, yaw)
        if plan.rect_free(lo, hi, -0.001) and layout.free(lo, hi):
            put(layout, item, x, z, yaw)
            return True
    return False


def place_free(rng, plan, layout: Layout, item: Item, tries: int = 12, near=None, spread: float = 1.0,
               lines: bool = True, view=None) -> bool:
    """Put an item anywhere in the room, turned at random or square to the walls: within `spread` of a point
    `near`, or in the field of view `view` = (camera floor point, heading, half angle) 1.2-5 m away, or anywhere.
    `lines=False` lets it stand in a kept line of sight (an occluder)."""
    lo_b, hi_b = plan.bounds()
    hx, hz = item.half
    for _ in range(tries):
        if near is not None:
            x, z = np.asarray(near) + rng.uniform(-spread, spread, 2)
        elif view is not None:
            heading = view[1] + rng.uniform(-0.9, 0.9) * view[2]
            x, z = view[0] + rng.uniform(1.2, 5.0) * np.array([np.sin(heading), np.cos(heading)])
        else:
            x, z = rng.uniform(lo_b, hi_b)
        yaw = rng.choice([0.0, np.pi / 2, np.pi, -np.pi / 2]) + rng.uniform(-0.15, 0.15) if rng.random() < 0.6 \
            else rng.uniform(-np.pi, np.pi)
        lo, hi = footprint_box(x, z, hx, hz, yaw)
        if plan.rect_free(lo, hi, 0.05) and layout.free(lo, hi, 0.1, lines):
            put(layout, item, x, z, yaw)
            return True
    return False


WALL_ITEMS = ("bed", "sofa", "shelf", "cabinet", "counter", "tv", "desk")
FREE_ITEMS = ("dining", "table", "coffee table", "chair", "plant", "bin", "balls", "cartons", "stool", "pillar",
              "floor lamp", "pouf", "side table")


def build(rng, add, name: str, ceiling: float) -> Item:
    """The item of a name (WALL_ITEMS, FREE_ITEMS)."""
    tall = max(0.9, min(2.1, ceiling - 0.4))
    if name == "bed":
        return bed(rng, add)
    if name == "sofa":
        return sofa(rng, add)
    if name == "shelf":
        return shelf(rng, add, tall)
    if name == "cabinet":
        return cabinet(rng, add, tall)
    if name == "counter":
        return counter(rng, add, ceiling)
    if name == "tv":
        return tv_unit(rng, add)
    if name == "desk":
        item = table(rng, add)
        w2, d2 = item.half
        item.things.append(chair(rng, add).moved(rng.uniform(-0.3, 0.3) * w2, d2 + rng.uniform(0.0, 0.3),
                                                 np.pi + rng.uniform(-0.4, 0.4)))
        return Item([t.moved(0.0, -0.275, 0.0) for t in item.things], (w2, d2 + 0.275), item.height,
                    [(pos - [0.0, 0.0, 0.275], k) for pos, k in item.lamps], "desk")
    if name == "dining":
        return dining(rng, add)
    if name == "table":
        return table(rng, add)
    if name == "coffee table":
        return table(rng, add, low=True)
    if name == "chair":
        return Item([chair(rng, add)], (0.25, 0.25), 0.95, name="chair")
    if name == "plant":
        return plant(rng, add)
    if name == "bin":
        return waste_bin(rng, add)
    if name == "balls":
        return balls(rng, add)
    if name == "cartons":
        return cartons(rng, add)
    if name == "stool":
        return stool(rng, add)
    if name == "pillar":
        return pillar(rng, add, ceiling)
    if name == "floor lamp":
        return floor_lamp(rng, add)
    if name == "pouf":
        return pouf(rng, add)
    if name == "side table":
        return side_table(rng, add)
    raise ValueError(f"unknown item {name!r}")


def furnish(rng, plan, add, layout: Layout, count: int, view=None) -> None:
    """Place about `count` items, drawn by the kind of room (corridors: fewer, smaller): wall items against
    walls, the others free, most of them in the field of view `view` (see place_free) when given."""
    corridor = plan.kind == "corridor"
    if corridor:
        names = ["bin", "plant", "cabinet", "shelf", "cartons", "balls", "stool", "pillar", "radiator", "sofa",
                 "pouf", "side table"]
        weights = [0.14, 0.14, 0.1, 0.08, 0.1, 0.1, 0.06, 0.08, 0.08, 0.04, 0.04, 0.04]
    else:
        names = list(WALL_ITEMS) + list(FREE_ITEMS) + ["radiator"]
        weights = [0.06, 0.06, 0.08, 0.08, 0.03, 0.04, 0.05,  # bed sofa shelf cabinet counter tv desk
                   0.07, 0.04, 0.04, 0.04, 0.06, 0.05, 0.09, 0.05, 0.04, 0.04, 0.04, 0.06, 0.04,  # free items
                   0.04]
    weights = np.array(weights) / np.sum(weights)
    for _ in range(count):
        name = str(rng.choice(names, p=weights))
        if name == "radiator":
            place_against_wall(rng, plan, layout, radiator(rng, add), under_window=True)
            continue
        item = build(rng, add, name, plan.height)
        if name in WALL_ITEMS or (corridor and name != "pillar" and rng.random() < 0.7):
            place_against_wall(rng, plan, layout, item)
        else:
            place_free(rng, plan, layout, item, view=view if rng.random() < 0.6 else None)
