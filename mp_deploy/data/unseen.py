"""Evaluation-only scenes: an independently written scene family that training never draws ("unseen scenes").

`unseen_scene(seed, index, size, people=False)` is a pure function of its arguments. It shares no code with the
training generator (mp_deploy.data.synthetic / render / figures); only the output record (Rendering) and the
constants (CLASSES, MIN_DEPTH, MAX_DEPTH, COCO_KEYPOINTS) are common. Attempt a of a draw uses
numpy.random.default_rng([seed, index, a]); an attempt whose result breaks a guarantee is redrawn (up to
MAX_ATTEMPTS), and a DataError is raised if none is valid.

The family (mp_deploy.data.unseen_layouts): convex rooms that are not plain boxes -- pillared halls with stages
and steps, gabled attics, warehouses with shelving and ceiling pipes, glazed offices, single-pitch lofts with a
raised platform -- with procedural marble, tiles, chevron parquet, brick, carpet, concrete, planks, wallpaper,
corrugated metal, coffered and suspended ceilings (mp_deploy.data.unseen_textures); daylight from windows on one
side (a directional sun whose light enters through the window openings, with soft edges, mullion shadows and
shadows cast by objects and people; sky light from each window as an area source; sky ambient), coloured point
lights and emissive lamps, Blinn-Phong highlights, corner and contact occlusion, auto exposure, filmic tone
mapping, white balance, vignetting and sensor noise; cameras 0.45-2.4 m high, pitched -45..+25 degrees, rolled a
little, with a 40-95 degree horizontal field of view. People (mp_deploy.data.unseen_people): anthropometric
ellipsoid / capsule figures in ten poses, with clothing, skin and hair.

Rendering fields: image (H, W, 3) uint8 RGB; depth (H, W) float32, metres along the optical axis (z-depth), all in
[MIN_DEPTH, MAX_DEPTH]; labels (H, W) uint8 in CLASSES (windows, doors, skirting, panels, picture frames are
"wall"; raised platforms and steps are "floor" and belong to the room, instance 0); instances (H, W) int32: 0 the
room, 1.. the objects, then the people; people: one dict per person with visible pixels, in placement order:
"keypoints" (17, 3) [x, y, flag] in pixels (integer = pixel centre; COCO order, the person's own left; flag 2 seen,
1 inside the image but hidden, 0 outside the image or behind the camera -- x, y are the projection where the point
is in front of the camera, else 0), "box" [x, y, w, h] with x, y the top-left visible pixel and w, h the columns
and rows spanned, "area" the visible pixel count (float), "instance". With people=True there are 1-3 people and
people[0] is large and central: area >= 0.8 % of the image, >= 6 keypoints with flag > 0, its pixels' centroid in
the middle 60 % of the image both ways.

`unseen_layout(seed, index, size, people)` returns (UnseenScene, Rendering): the scene description (camera with
position / yaw / pitch / roll / focal, room planes and platforms, objects, people, lights) for checks.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mp_deploy.data.scene import CLASSES, MAX_DEPTH, MIN_DEPTH, Rendering
from mp_deploy.data.unseen_geometry import UnseenCamera, intersect, normals, rot_y, unit
from mp_deploy.data.unseen_layouts import FLOOR, LAYOUTS, ROOMS, Builder, Room, furnish
from mp_deploy.data.unseen_people import build_person, sample_outfit, sample_pose
from mp_deploy.data.unseen_textures import _lines, _smooth, albedo, cell_rand, fbm, jitter, pick, vnoise
from mp_deploy.errors import DataError

assert CLASSES == ("floor", "wall", "ceiling", "box", "sphere", "cylinder", "figure")
MAX_ATTEMPTS = 24
MIN_PERSON_AREA = 0.008  # people[0], fraction of the image
MIN_PERSON_KEYPOINTS = 6


@dataclass
class UnseenScene:
    layout: str
    camera: UnseenCamera
    room: Room
    prims: list  # object primitives, then people's body parts
    groups: list  # one per object instance (dicts: label, prims, lo, hi, foot, instance)
    people: list  # Person, instances after the objects
    sun: dict | None
    windows: list  # dicts: centre, n_in (into the room), area, decal, plane
    sky: dict
    ambient: np.ndarray
    points: list  # (position, rgb power)
    grade: dict
    dmin: float = 0.5
    info: dict = field(default_factory=dict)


# ------------------------------------------------------------------ sampling

def _sample_camera(rng, room: Room, size, people: bool):
    Hh, Ww = size
    r = rng.random()
    hfov = rng.uniform(40, 55) if r < 0.25 else (rng.uniform(55, 75) if r < 0.75 else rng.uniform(75, 95))
    cam = UnseenCamera(np.zeros(3), 0.0, 0.0, 0.0, float(hfov), Hh, Ww)
    dmin = MIN_DEPTH / cam.max_off_axis_cos() + 0.04
    poly = room.polygon
    lo, hi = poly.min(axis=0), poly.max(axis=0)
    for _ in range(60):
        x, z = rng.uniform(lo[0], hi[0]), rng.uniform(lo[1], hi[1])
        if room.edge_distance(x, z) < dmin + 0.15:
            continue
        if any(x0 - dmin < x < x1 + dmin and z0 - dmin < z < z1 + dmin for x0, z0, x1, z1 in room.rects):
            continue
        top = float(room.ceiling_at(x, z)) - dmin - 0.05
        q = rng.random()
        h = rng.uniform(1.2, 1.8) if q < 0.65 else (rng.uniform(0.45, 1.1) if q < 0.82 else rng.uniform(1.9, 2.4))
        h = min(max(h, dmin + 0.02), top)
        if h < dmin + 0.02:
            continue
        # every visible point lies within the room: its z-depth is at most the distance to the farthest corner
        far = max(np.hypot(np.hypot(px - x, pz - z), max(h, room.max_height - h)) for px, pz in poly)
        if far > MAX_DEPTH - 0.1:
            continue
        # look towards a far part of the room
        cands = [(rng.uniform(lo[0], hi[0]), rng.uniform(lo[1], hi[1])) for _ in range(6)]
        cands = [(tx, tz) for tx, tz in cands if room.edge_distance(tx, tz) > 0.3] or [tuple(poly.mean(axis=0))]
        tx, tz = max(cands, key=lambda q: np.hypot(q[0] - x, q[1] - z))
        yaw = float(np.arctan2(tx - x, tz - z) + rng.normal(0, 0.15))
        pitch = float(np.clip(np.radians(-(h - 1.3) * 14.0 + rng.normal(0, 7.0)), np.radians(-40), np.radians(18)))
        roll = float(np.clip(rng.normal(0, np.radians(2.5)), -np.radians(6), np.radians(6)))
        cam = UnseenCamera(np.array([x, h, z]), yaw, pitch, roll, float(hfov), Hh, Ww)
        return cam, dmin
    return None, dmin


def _person_radius(person):
    kp = person.keypoints
    d = np.hypot(kp[:, 0] - person.base[0], kp[:, 2] - person.base[2])
    return float(d.max() + 0.16 * person.height)


def _aabb_gap(lo, hi, c):
    return float(np.linalg.norm(np.maximum(0.0, np.maximum(lo - c, c - hi))))


def _exit_distance(room: Room, c, az) -> float:
    """Horizontal distance from c to the room's walls in direction az."""
    d = np.array([np.sin(az), 0.0, np.cos(az)])
    out = np.inf
    for k in room.walls:
        pl = room.planes[k]
        nd = float(pl.n @ d)
        if nd > 1e-9:
            out = min(out, (pl.c - float(pl.n @ c)) / nd)
    return out


def _place_person(rng, b: Builder, cam: UnseenCamera, main: bool):
    H = float(np.clip(rng.normal(1.72, 0.09), 1.5, 1.98))
    pose = sample_pose(rng)
    outfit = sample_outfit(rng)
    trial = build_person(rng, (0.0, 0.0), 0.0, -1, H, pose, outfit)
    radius = _person_radius(trial)
    half = np.radians(cam.hfov) / 2
    c = cam.position
    for attempt in range(12):
        az = cam.yaw + rng.uniform(-0.25, 0.25) * half if main else cam.yaw + rng.uniform(-0.9, 0.9) * half
        room_left = _exit_distance(b.room, c, az) - radius - 0.05  # how far the floor reaches that way
        if main:
            frac = rng.uniform(0.45, 0.9)
            D = float(np.clip(cam.focal * H / (frac * cam.height), 1.3, 6.0)) * (0.85 ** (attempt // 3))
            D = min(D, room_left)
        else:
            D = rng.uniform(1.5, max(1.5, room_left))
        if D < 1.0:
            continue
        x, z = c[0] + D * np.sin(az), c[2] + D * np.cos(az)
        if not b.free(x, z, radius, margin=0.05, sight=not main):
            continue
        toward = float(np.arctan2(c[0] - x, c[2] - z))
        yaw = toward + rng.normal(0, 0.8) if rng.random() < 0.75 else rng.uniform(-np.pi, np.pi)
        person = build_person(rng, (x, z), yaw, -1, H, pose, outfit)
        if _aabb_gap(person.lo, person.hi, c) < b.dmin:
            continue
        if person.hi[1] > b.room.ceiling_at(x, z) - 0.02:
            continue
        b.foot.append((x, z, radius))
        return person, D
    return None, None


def _sky(rng):
    kind = pick(rng, ["clear", "clear", "overcast", "evening"])
    if kind == "clear":
        hor, zen = jitter(rng, (0.85, 0.9, 0.97), 0.03), jitter(rng, (0.35, 0.55, 0.9), 0.05)
    elif kind == "overcast":
        hor, zen = jitter(rng, (0.85, 0.86, 0.88), 0.03), jitter(rng, (0.7, 0.72, 0.76), 0.03)
    else:
        hor, zen = jitter(rng, (1.0, 0.7, 0.45), 0.04), jitter(rng, (0.4, 0.45, 0.7), 0.05)
    return dict(kind=kind, horizon=hor, zenith=zen, power=rng.uniform(2.0, 4.0) if kind != "overcast" else
                rng.uniform(3.0, 5.0), view=pick(rng, ["sky", "city", "trees"]), seed=int(rng.integers(1 << 30)),
                clouds=rng.uniform(0.0, 0.6))


def sample_scene(rng, size, people: bool):
    """One attempt: an UnseenScene, or None when the draw cannot be completed (the caller redraws)."""
    layout = pick(rng, LAYOUTS)
    room, info = ROOMS[layout](rng)
    cam, dmin = _sample_camera(rng, room, size, people)
    if cam is None:
        return None
    b = Builder(rng, room, cam, dmin)
    b.rects = list(room.rects)
    persons = []
    if people:
        main, _ = _place_person(rng, b, cam, main=True)
        if main is None:
            return None
        # aim at the person's middle, off centre by a little
        mid = main.base + np.array([0.0, 0.5 * main.height, 0.0])
        d = mid - cam.position
        pitch = float(np.arctan2(d[1], np.hypot(d[0], d[2])) + rng.normal(0, 0.05))
        cam.pitch = float(np.clip(pitch, np.radians(-45), np.radians(25)))
        b.sight = ((cam.position[0], cam.position[2]), (main.base[0], main.base[2]), 0.35)
        persons.append(main)
        n_more = int(rng.choice([0, 1, 2], p=[0.3, 0.4, 0.3]))
    else:
        n_more = int(rng.choice([0, 1, 2], p=[0.5, 0.3, 0.2]))
    for _ in range(n_more):
        p, _ = _place_person(rng, b, cam, main=False)
        if p is not None:
            persons.append(p)
    for pl in room.platforms:
        if _aabb_gap(pl.lo, pl.hi, cam.position) < dmin:
            return None
    furnish(layout, rng, b, info)
    # instances: objects in order, then people
    prims = []
    for i, g in enumerate(b.groups):
        g["instance"] = i + 1
        for p in g["prims"]:
            p.instance = i + 1
            prims.append(p)
    for j, person in enumerate(persons):
        person.instance = len(b.groups) + 1 + j
        for p in person.prims:
            p.instance = person.instance
            prims.append(p)
    # light
    sky = _sky(rng)
    windows = []
    for k, pl in enumerate(room.planes):
        for d in pl.decals:
            if d["kind"] == "window":
                cu, cv = (d["u0"] + d["u1"]) / 2, (d["v0"] + d["v1"]) / 2
                centre = pl.origin + pl.R[:, 0] * cu + pl.R[:, 1] * cv
                windows.append(dict(centre=centre, n_in=-pl.n, area=(d["u1"] - d["u0"]) * (d["v1"] - d["v0"]),
                                    decal=d, plane=k))
    sun = None
    if sky["kind"] != "overcast" and rng.random() < 0.85 and info.get("windows"):
        pl = room.planes[info["sun_wall"]]
        el = np.radians(rng.uniform(15, 50) if sky["kind"] == "clear" else rng.uniform(8, 20))
        h = rot_y(np.radians(rng.uniform(-55, 55))) @ (-pl.n)
        s = unit(h * np.cos(el) - np.array([0.0, np.sin(el), 0.0]))
        color = jitter(rng, (1.0, 0.93, 0.82), 0.02) if sky["kind"] == "clear" else jitter(rng, (1.0, 0.7, 0.45), 0.03)
        sun = dict(dir=s, color=color * rng.uniform(5.0, 10.0), plane=info["sun_wall"], windows=info["windows"],
                   soft=rng.uniform(0.01, 0.04))
    tint = np.asarray(sky["zenith"]) * 0.5 + 0.5
    ambient = tint * rng.uniform(0.12, 0.3)
    grade = dict(target=rng.uniform(0.16, 0.3), vignette=rng.uniform(0.0, 0.5) if rng.random() < 0.7 else 0.0,
                 wb=np.clip(1.0 + rng.normal(0, 0.04, 3), 0.85, 1.15), noise=rng.uniform(0.002, 0.012),
                 contrast=rng.uniform(0.9, 1.15), white=rng.uniform(2.0, 6.0), seed=int(rng.integers(1 << 31)))
    return UnseenScene(layout, cam, room, prims, b.groups, persons, sun, windows, sky, ambient, b.points, grade,
                       dmin, info)


# ------------------------------------------------------------------ rendering

def _screen_rect(cam: UnseenCamera, lo, hi):
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    pr = cam.project(corners)
    if (pr[:, 2] < 0.05).any():
        return 0, cam.height, 0, cam.width
    x0 = max(0, int(np.floor(pr[:, 0].min())) - 1)
    x1 = min(cam.width, int(np.ceil(pr[:, 0].max())) + 2)
    y0 = max(0, int(np.floor(pr[:, 1].min())) - 1)
    y1 = min(cam.height, int(np.ceil(pr[:, 1].max())) + 2)
    if x0 >= x1 or y0 >= y1:
        return None
    return y0, y1, x0, x1


def _prim_uv(prim, lp, ln):
    k = prim.kind
    if k == "box":
        ax = np.abs(ln).argmax(axis=1)
        u = np.where(ax == 0, lp[:, 2], lp[:, 0])
        v = np.where(ax == 1, lp[:, 2], lp[:, 1])
        return np.stack([u, v], axis=1)
    if k in ("sphere", "ellipsoid"):
        r = prim.p["r"] if k == "sphere" else float(prim.p["semi"].mean())
        return np.stack([np.arctan2(lp[:, 2], lp[:, 0]) * r, lp[:, 1]], axis=1)
    r = prim.p["r"]
    cap = np.abs(ln[:, 1]) > 0.9
    u = np.where(cap, lp[:, 0], np.arctan2(lp[:, 2], lp[:, 0]) * r)
    v = np.where(cap, lp[:, 2], lp[:, 1])
    return np.stack([u, v], axis=1)


def _sky_emit(sky, u, v, v0):
    t = np.clip((v - 0.3) / 3.5, 0.0, 1.0)
    hor, zen = np.asarray(sky["horizon"]), np.asarray(sky["zenith"])
    col = hor[None] + (zen - hor)[None] * t[:, None] ** 0.7
    cl = fbm(u * 0.6, v * 1.4, sky["seed"], 3)
    col = col + (np.array([1.0, 1.0, 1.0]) - col) * (_smooth(0.55, 0.75, cl) * sky["clouds"])[:, None]
    col = col * sky["power"]
    if sky["view"] == "city":
        hb = 0.25 + 1.1 * cell_rand(np.floor(u / 0.6), 0 * u + 1, sky["seed"])
        bld = v < v0 + hb
        lit = (((u / 0.12) % 1.0) < 0.5) & (((v / 0.15) % 1.0) < 0.5) & (cell_rand(np.floor(u / 0.12),
                                                                                      np.floor(v / 0.15), 3) < 0.3)
        bcol = np.where(lit[:, None], np.array([1.0, 0.9, 0.6]) * 0.9, np.array([0.45, 0.5, 0.58]) * 0.5)
        col = np.where(bld[:, None], bcol * sky["power"], col)
    elif sky["view"] == "trees":
        ht = 0.2 + 0.7 * fbm(u * 1.2, 0 * u, sky["seed"] + 5, 2) + 0.15 * vnoise(u * 9.0, v * 9.0, sky["seed"])
        tree = v < v0 + ht
        tcol = np.array([0.15, 0.3, 0.1]) * (0.6 + 0.6 * vnoise(u * 14.0, v * 14.0, sky["seed"] + 2))[:, None]
        col = np.where(tree[:, None], tcol * sky["power"], col)
    return col


def _window_mask(d, u, v, w):
    """Soft coverage of a window's glass (opening minus frame, mullions and transoms) at wall coordinates (u, v)."""
    bar = d["bar"]
    inside = (_smooth(-w, w, u - d["u0"] - bar) * _smooth(-w, w, d["u1"] - bar - u) *
              _smooth(-w, w, v - d["v0"] - bar) * _smooth(-w, w, d["v1"] - bar - v))
    for m in d["mull"]:
        inside = inside * _smooth(-w, w, np.abs(u - m) - bar * 0.7)
    for m in d["trans"]:
        inside = inside * _smooth(-w, w, np.abs(v - m) - bar * 0.7)
    return inside


def _decals(pl, sky, uv, lp, alb, emit, spec):
    u, v = uv[:, 0], uv[:, 1]
    for d in pl.decals:
        m = (v >= d["v0"]) & (v <= d["v1"])
        if d["kind"] != "band":
            m &= (u >= d["u0"]) & (u <= d["u1"])
        if not m.any():
            continue
        idx = np.nonzero(m)[0]
        uu, vv = u[idx], v[idx]
        if d["kind"] == "band":
            a, _ = albedo(d["material"], uv[idx], lp[idx])
            if d["panels"]:
                edge = np.maximum(_lines(uu, 0.7, 0.03), (np.abs(vv - d["v1"]) < 0.04).astype(float))
                a = a * (1.0 - 0.35 * edge)[:, None]
            alb[idx] = a
        elif d["kind"] == "door":
            col = np.asarray(d["color"])
            a = col[None] * (0.9 + 0.15 * vnoise(uu * 8.0, vv * 2.0, d["seed"]))[:, None]
            fw = 0.07
            border = (uu - d["u0"] < fw) | (d["u1"] - uu < fw) | (d["v1"] - vv < fw)
            if d.get("slats"):
                a = a * (0.8 + 0.2 * (((vv / 0.12) % 1.0) > 0.15))[:, None]
            else:
                w_in = (d["u1"] - d["u0"]) - 0.3
                inset = (np.abs(uu - (d["u0"] + d["u1"]) / 2) < w_in / 2) & \
                    ((np.abs(vv - 0.6) < 0.4) | (np.abs(vv - 1.55) < 0.45))
                a = a * np.where(inset, 0.85, 1.0)[:, None]
                knob = ((uu - (d["u1"] - 0.12)) ** 2 + (vv - 1.0) ** 2) < 0.03 ** 2
                a = np.where(knob[:, None], np.array([0.8, 0.7, 0.35]), a)
            a = np.where(border[:, None], np.asarray(d["frame"])[None], a)
            alb[idx] = np.clip(a, 0, 1) ** 2.2
            spec[idx] = 0.2
        elif d["kind"] == "frame":
            bw = 0.05
            border = (uu - d["u0"] < bw) | (d["u1"] - uu < bw) | (vv - d["v0"] < bw) | (d["v1"] - vv < bw)
            if d["white"]:
                inner = np.ones((len(idx), 3)) * 0.92
                spec[idx] = 0.5
            else:
                c = np.asarray(d["colors"])
                t1 = fbm(uu * 3.0, vv * 3.0, d["seed"], 2)
                t2 = vnoise(uu * 7.0, vv * 7.0, d["seed"] + 1)
                inner = c[0][None] + (c[1] - c[0])[None] * _smooth(0.35, 0.65, t1)[:, None]
                inner = inner + (c[2][None] - inner) * _smooth(0.6, 0.8, t2)[:, None]
            a = np.where(border[:, None], np.asarray(d["border"])[None], inner)
            alb[idx] = np.clip(a, 0, 1) ** 2.2
        elif d["kind"] == "window":
            glass = _window_mask(d, uu, vv, 0.004)
            fr = np.clip(np.asarray(d["frame"]), 0, 1) ** 2.2
            alb[idx] = fr[None] * (1.0 - glass)[:, None] + 0.02 * glass[:, None]
            e = _sky_emit(sky, uu, vv, d["v0"])
            emit[idx] = e * glass[:, None]
            spec[idx] = 0.3


def render_scene(sc: UnseenScene):
    """(Rendering, aux): aux holds the per-pixel primitive ids and the linear radiance (for checks)."""
    cam, room = sc.camera, sc.room
    Hh, Ww = cam.height, cam.width
    D, cosz = cam.rays()
    o = cam.position
    Df = D.reshape(-1, 3)
    N = len(Df)
    planes = room.planes
    K = len(planes)
    best = np.full(N, np.inf)
    pid = np.full(N, -1, dtype=np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        for k, pl in enumerate(planes):
            nd = Df @ pl.n
            t = np.where(nd > 1e-9, (pl.c - pl.n @ o) / nd, np.inf)
            m = t < best
            best[m] = t[m]
            pid[m] = k
    solids = list(room.platforms) + list(sc.prims)
    best2, pid2 = best.reshape(Hh, Ww), pid.reshape(Hh, Ww)
    # people: cull the whole body first
    skip = set()
    for person in sc.people:
        if _screen_rect(cam, person.lo, person.hi) is None:
            skip.update(id(p) for p in person.prims)
    for j, prim in enumerate(solids):
        if id(prim) in skip:
            continue
        rect = _screen_rect(cam, prim.lo, prim.hi)
        if rect is None:
            continue
        y0, y1, x0, x1 = rect
        t = intersect(prim, o, D[y0:y1, x0:x1].reshape(-1, 3)).reshape(y1 - y0, x1 - x0)
        bs, ps = best2[y0:y1, x0:x1], pid2[y0:y1, x0:x1]
        m = t < bs
        bs[m] = t[m]
        ps[m] = K + j
    label_of = np.array([pl.label for pl in planes] + [p.label for p in solids], dtype=np.uint8)
    inst_of = np.array([0] * K + [max(p.instance, 0) for p in solids], dtype=np.int32)
    labels = label_of[pid].reshape(Hh, Ww)
    instances = inst_of[pid].reshape(Hh, Ww)
    depth = (best.reshape(Hh, Ww) * cosz).astype(np.float32)

    # ---- surface attributes
    P = o + Df * best[:, None]
    Nrm = np.empty((N, 3))
    alb = np.empty((N, 3))
    emit = np.zeros((N, 3))
    spec = np.zeros(N)
    shine = np.ones(N)
    order = np.argsort(pid, kind="stable")
    ids, starts, counts = np.unique(pid[order], return_index=True, return_counts=True)
    for i, s, c in zip(ids, starts, counts):
        idx = order[s:s + c]
        Pi = P[idx]
        if i < K:
            pl = planes[i]
            Nrm[idx] = -pl.n
            lp = (Pi - pl.origin) @ pl.R
            uv = lp[:, :2]
            a, e = albedo(pl.material, uv, lp)
            alb[idx] = a
            if e is not None:
                emit[idx] = e
            spec[idx] = pl.material.get("spec", 0.08)
            shine[idx] = pl.material.get("shine", 16.0)
            if pl.decals:
                sub_a, sub_e, sub_s = alb[idx], emit[idx], spec[idx]
                _decals(pl, sc.sky, uv, lp, sub_a, sub_e, sub_s)
                alb[idx], emit[idx], spec[idx] = sub_a, sub_e, sub_s
        else:
            prim = solids[i - K]
            n = normals(prim, Pi)
            Nrm[idx] = n
            lp = (Pi - prim.origin) @ prim.R
            ln = n @ prim.R
            uv = _prim_uv(prim, lp, ln)
            a, e = albedo(prim.material, uv, lp)
            alb[idx] = a
            if e is not None:
                emit[idx] = e
            spec[idx] = prim.material.get("spec", 0.08)
            shine[idx] = prim.material.get("shine", 16.0)
    radiance = _light(sc, P, Nrm, -Df, alb, emit, spec, shine, pid, K, solids, labels.reshape(-1))
    image = _tone(sc, radiance, emit, Hh, Ww)
    people = _annotate(sc, depth, instances)
    return Rendering(image, depth, labels, instances, people), dict(pid=pid.reshape(Hh, Ww), radiance=radiance)


def _light(sc, P, Nrm, V, alb, emit, spec, shine, pid, K, solids, labels):
    room = sc.room
    N = len(P)
    # ambient: sky-tinted hemisphere, bounce from below, occluded near room corners and by nearby objects
    ny = Nrm[:, 1]
    irr = sc.ambient[None] * (0.65 + 0.35 * ny)[:, None] + sc.ambient[None] * 0.35 * (0.5 - 0.5 * ny)[:, None]
    near = np.full(N, np.inf)
    for k, pl in enumerate(room.planes):
        dk = pl.c - P @ pl.n
        dk[pid == k] = np.inf  # a plane does not occlude itself
        np.minimum(near, dk, out=near)
    ao = 1.0 - 0.45 * np.exp(-near / 0.3)
    # contact shadows on the floor around whatever stands on it, within each footprint's screen rectangle
    cam = sc.camera
    floor2 = (labels == FLOOR).reshape(cam.height, cam.width)
    P2, ao2 = P.reshape(cam.height, cam.width, 3), ao.reshape(cam.height, cam.width)
    feet = [g["foot"] for g in sc.groups if g["foot"] is not None]
    feet += [(p.base[0], p.base[2], 0.22 * p.height / 1.7) for p in sc.people]
    for x, z, r in feet:
        reach = r + 0.8
        rect = _screen_rect(cam, np.array([x - reach, 0.0, z - reach]), np.array([x + reach, 0.9, z + reach]))
        if rect is None:
            continue
        y0, y1, x0, x1 = rect
        m = floor2[y0:y1, x0:x1]
        if not m.any():
            continue
        sub = P2[y0:y1, x0:x1]
        dd = np.hypot(sub[..., 0] - x, sub[..., 2] - z) - r * 0.8
        ao2[y0:y1, x0:x1] *= np.where(m, 1.0 - 0.5 * np.exp(-np.maximum(dd, 0.0) / 0.18), 1.0)
    irr = irr * ao[:, None]
    spec_out = np.zeros((N, 3))
    # Phong highlights: the mirror direction of the view ray, once; each light then costs mat-vec products only
    ndv = np.einsum("ij,ij->i", Nrm, V)
    Rf = 2.0 * ndv[:, None] * Nrm - V
    shiny = spec > 0.0
    NP = np.einsum("ij,ij->i", Nrm, P)
    RP = np.einsum("ij,ij->i", Rf, P)
    PP = np.einsum("ij,ij->i", P, P)

    def point_terms(pos):
        """d2, cos(normal, light) and cos(mirror, light) for a point light at pos."""
        d2 = np.maximum(PP - 2.0 * (P @ pos) + pos @ pos, 1e-9)
        inv = 1.0 / np.sqrt(d2)
        return d2, (Nrm @ pos - NP) * inv, (Rf @ pos - RP) * inv, inv

    def highlight(rdl, ndl, lcol):
        ph = np.where(shiny & (ndl > 0) & (rdl > 0), np.clip(rdl, 0.0, 1.0), 0.0) ** (shine * 0.25)
        return (spec * ph * (shine + 8.0) / 60.0)[:, None] * lcol

    # sky light from each window (an area source approximated at its centre)
    sky_col = (np.asarray(sc.sky["horizon"]) * 0.6 + np.asarray(sc.sky["zenith"]) * 0.4)[None]
    for w in sc.windows:
        C = w["centre"]
        d2, cos_p, _, inv = point_terms(C)
        cos_w = ((P @ w["n_in"]) - C @ w["n_in"]) * inv  # at the window, towards the point
        e = sc.sky["power"] * 0.5 * w["area"] * np.clip(cos_p, 0.0, None) * np.clip(cos_w, 0.0, None) / \
            (np.pi * (d2 + 0.5 * w["area"]))
        irr = irr + e[:, None] * sky_col
    # the sun, through the openings of the windows on one wall, shadowed by objects and people
    if sc.sun is not None:
        s = sc.sun["dir"]
        pl = room.planes[sc.sun["plane"]]
        ndl = np.clip(-(Nrm @ s), 0.0, None)
        denom = float(-(pl.n @ s))
        lam = (pl.c - P @ pl.n) / max(denom, 1e-6)
        cand = (ndl > 0) & (lam > 0.05) & (pid != sc.sun["plane"])
        ci = np.nonzero(cand)[0]
        mask = np.zeros(N)
        if len(ci):
            Q = P[ci] - lam[ci, None] * s[None]
            lq = (Q - pl.origin) @ pl.R
            w = 0.005 + lam[ci] * sc.sun["soft"]
            cov = np.zeros(len(ci))
            for d in sc.sun["windows"]:
                inside = (lq[:, 0] > d["u0"] - 0.2) & (lq[:, 0] < d["u1"] + 0.2) & \
                    (lq[:, 1] > d["v0"] - 0.2) & (lq[:, 1] < d["v1"] + 0.2)
                ii = np.nonzero(inside)[0]
                if len(ii):
                    cov[ii] = np.maximum(cov[ii], _window_mask(d, lq[ii, 0], lq[ii, 1], w[ii]))
            mask[ci] = cov
            lit = np.nonzero(mask > 0.01)[0]
            if len(lit):
                O = P[lit] + Nrm[lit] * 2e-3
                dirs = np.broadcast_to(-s, (len(lit), 3)).copy()
                tmax = lam[lit]
                blocked = np.zeros(len(lit), dtype=bool)
                # the shadow rays are parallel: cull groups on a plane across the sun direction
                e1 = unit(np.cross(s, [0.0, 1.0, 0.0]) if abs(s[1]) < 0.99 else np.cross(s, [1.0, 0.0, 0.0]))
                e2 = np.cross(s, e1)
                oa, ob, os_ = O @ e1, O @ e2, O @ -s
                groups = [list(room.platforms)] + [g["prims"] for g in sc.groups] + [p.prims for p in sc.people]
                for prims in groups:
                    if not prims:
                        continue
                    lo = np.min([p.lo for p in prims], axis=0)
                    hi = np.max([p.hi for p in prims], axis=0)
                    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1])
                                        for z in (lo[2], hi[2])])
                    ca, cb, cs = corners @ e1, corners @ e2, corners @ -s
                    near = np.nonzero(~blocked & (oa >= ca.min()) & (oa <= ca.max()) & (ob >= cb.min()) &
                                      (ob <= cb.max()) & (os_ < cs.max()) & (os_ + tmax > cs.min()))[0]
                    for prim in prims:
                        if not len(near):
                            break
                        t = intersect(prim, O[near], dirs[near])
                        hit = t < tmax[near]
                        blocked[near[hit]] = True
                        near = near[~hit]
                mask[lit[blocked]] = 0.0
        irr = irr + (ndl * mask)[:, None] * sc.sun["color"][None]
        spec_out += highlight(-(Rf @ s), ndl * mask, sc.sun["color"][None] * mask[:, None])
    # point lights (lamps), no shadows
    for pos, col in sc.points:
        d2, ndl, rdl, _ = point_terms(pos)
        ndl = np.clip(ndl, 0.0, None)
        fall = 1.0 / (d2 + 0.3)
        irr = irr + (ndl * fall)[:, None] * col[None]
        spec_out += highlight(rdl, ndl, col[None] * fall[:, None])
    return alb * irr + spec_out + emit


def _tone(sc, radiance, emit, Hh, Ww):
    g = sc.grade
    lum = radiance @ np.array([0.2126, 0.7152, 0.0722])
    surf = (emit @ np.ones(3)) <= 0.0
    ref = np.median(lum[surf]) if surf.any() else np.median(lum)
    x = radiance * (g["target"] / max(ref, 1e-5)) * g["wb"][None]
    x = x.reshape(Hh, Ww, 3)
    if g["vignette"] > 0:
        cam = sc.camera
        yy, xx = np.mgrid[0:Hh, 0:Ww]
        r2 = ((xx - cam.cx) ** 2 + (yy - cam.cy) ** 2) / (cam.cx ** 2 + cam.cy ** 2 + 1e-9)
        x = x * (1.0 - g["vignette"] * r2 ** 1.5)[..., None]
    wp = g["white"]
    m = x * (1.0 + x / (wp * wp)) / (1.0 + x)
    y = np.clip(m, 0.0, 1.0) ** (1 / 2.2)
    y = 0.5 + (y - 0.5) * g["contrast"]
    rng = np.random.default_rng(g["seed"])
    y = y + rng.normal(0.0, g["noise"], y.shape)
    return np.clip(np.rint(y * 255.0), 0, 255).astype(np.uint8)


def _annotate(sc, depth, instances):
    cam = sc.camera
    Hh, Ww = depth.shape
    out = []
    for person in sc.people:
        mask = instances == person.instance
        area = int(mask.sum())
        if area == 0:
            continue
        ys, xs = np.nonzero(mask)
        pr = cam.project(person.keypoints)
        u, v, z = pr[:, 0], pr[:, 1], pr[:, 2]
        front = z > 1e-3
        inside = front & (u >= -0.5) & (u < Ww - 0.5) & (v >= -0.5) & (v < Hh - 0.5)
        flags = np.where(inside, 1.0, 0.0)
        px = np.clip(np.floor(np.where(inside, u, 0.0) + 0.5).astype(int), 0, Ww - 1)
        py = np.clip(np.floor(np.where(inside, v, 0.0) + 0.5).astype(int), 0, Hh - 1)
        seen = inside & (instances[py, px] == person.instance) & (depth[py, px] >= z - person.tolerance)
        flags[seen] = 2.0
        kp = np.stack([np.where(front, u, 0.0), np.where(front, v, 0.0), flags], axis=1)
        out.append({"keypoints": kp, "box": [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1),
                                             float(ys.max() - ys.min() + 1)],
                    "area": float(area), "instance": int(person.instance)})
    return out


# ------------------------------------------------------------------ API

def _valid(r: Rendering, people: bool) -> bool:
    if not (np.isfinite(r.depth).all() and r.depth.min() >= MIN_DEPTH and r.depth.max() <= MAX_DEPTH):
        return False
    if people:
        if not r.people or not 1 <= len(r.people) <= 3:
            return False
        p0 = r.people[0]
        Hh, Ww = r.depth.shape
        if p0["area"] < MIN_PERSON_AREA * Hh * Ww or (p0["keypoints"][:, 2] > 0).sum() < MIN_PERSON_KEYPOINTS:
            return False
        ys, xs = np.nonzero(r.instances == p0["instance"])
        if not (0.2 * Ww <= xs.mean() <= 0.8 * Ww and 0.2 * Hh <= ys.mean() <= 0.8 * Hh):
            return False
    return True


def unseen_layout(seed: int, index: int, size: tuple[int, int], people: bool = False):
    """(UnseenScene, Rendering) of draw (seed, index) at size (H, W)."""
    Hh, Ww = int(size[0]), int(size[1])
    if Hh < 16 or Ww < 16:
        raise DataError(f"unseen scenes: size {size} is too small (at least 16 x 16)")
    for attempt in range(MAX_ATTEMPTS):
        rng = np.random.default_rng([seed, index, attempt])
        sc = sample_scene(rng, (Hh, Ww), people)
        if sc is None:
            continue
        r, _ = render_scene(sc)
        if _valid(r, people):
            if people and r.people[0]["instance"] != sc.people[0].instance:
                continue
            return sc, r
    raise DataError(f"unseen scenes: no valid draw for seed {seed}, index {index}, size {size} "
                    f"in {MAX_ATTEMPTS} attempts")


def unseen_scene(seed: int, index: int, size: tuple[int, int], people: bool = False) -> Rendering:
    """The Rendering of evaluation scene (seed, index) at size (H, W); see the module docstring."""
    return unseen_layout(seed, index, size, people)[1]
