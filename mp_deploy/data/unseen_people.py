"""Articulated people of the evaluation-only scene family (mp_deploy.data.unseen).

A person is built in a body frame (x = the person's own left, y up, z = the way they face; the floor at y = 0)
from anthropometric proportions of the standing height H (segment lengths after Drillis & Contini), posed by
forward kinematics (limb elevation / azimuth, elbow and knee bends, torso lean and twist, head turn), then placed
in the world. Body parts: ellipsoids (chest, pelvis, head, hair), capsules (shoulder girdle, neck, arms, hands,
legs), a sphere nose and boxes for feet; clothing, skin and hair materials. The 17 COCO keypoints come from the
skeleton's joints (shoulders, elbows, wrists, hips, knees, ankles) and from points on the head (nose, eyes, ears);
each carries a depth tolerance (how far inside the body surface the point lies) for the visibility test.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mp_deploy.data.keypoints import COCO_KEYPOINTS
from mp_deploy.data.unseen_geometry import box, capsule, ellipsoid, rot_x, rot_y, sphere, unit
from mp_deploy.data.unseen_textures import hsv, jitter, pick

FIGURE_LABEL = 6
# keypoint depth tolerances, fractions of H (COCO order), plus 1 cm
_TOL = np.array([0.02, 0.02, 0.02, 0.025, 0.025, 0.06, 0.06, 0.035, 0.035, 0.03, 0.03,
                 0.08, 0.08, 0.055, 0.055, 0.045, 0.045])
POSES = ("stand", "walk", "wave", "arms_up", "tpose", "reach", "hips", "crouch", "lunge", "phone")


@dataclass
class Person:
    prims: list
    keypoints: np.ndarray  # (17, 3) world, COCO order (the person's own left)
    tolerance: np.ndarray  # (17,) metres
    base: np.ndarray  # (3,) the point on the floor under the body
    yaw: float
    height: float
    pose: str
    instance: int
    lo: np.ndarray = field(default=None)
    hi: np.ndarray = field(default=None)

    @property
    def radius(self) -> float:
        """Horizontal radius around `base` that holds the whole body."""
        dx = np.maximum(np.abs(self.lo[[0, 2]] - self.base[[0, 2]]), np.abs(self.hi[[0, 2]] - self.base[[0, 2]]))
        return float(np.hypot(*dx))


def _rad(rng, lo, hi):
    return np.radians(rng.uniform(lo, hi))


def _limb(side, elev, azim):
    return np.array([side * np.sin(elev) * np.cos(azim), -np.cos(elev), np.sin(elev) * np.sin(azim)])


def _bend(u, hint, angle):
    hint = np.asarray(hint, float)
    perp = hint - (hint @ u) * u
    n = np.linalg.norm(perp)
    if n < 1e-6:
        perp = np.cross(u, [1.0, 0.0, 0.0])
        n = np.linalg.norm(perp)
    return np.cos(angle) * u + np.sin(angle) * perp / n


def sample_pose(rng, kind: str | None = None) -> dict:
    """Joint angles (radians) of one of POSES."""
    kind = kind or pick(rng, POSES)
    FWD = (0.0, 0.0, 1.0)

    def arm_rest():
        return [_rad(rng, 5, 18), _rad(rng, -10, 25), _rad(rng, 5, 25), FWD]

    def leg_rest():
        return [_rad(rng, -4, 4), _rad(rng, 2, 6), _rad(rng, 0, 6)]

    arms = {1: arm_rest(), -1: arm_rest()}
    legs = {1: leg_rest(), -1: leg_rest()}
    lean, twist = _rad(rng, -4, 8), _rad(rng, -12, 12)
    one = 1 if rng.random() < 0.5 else -1
    if kind == "walk":
        p = _rad(rng, 14, 30) * (1 if rng.random() < 0.5 else -1)
        legs[1] = [p, _rad(rng, 1, 4), _rad(rng, 5, 15) if p > 0 else _rad(rng, 12, 28)]
        legs[-1] = [-p, _rad(rng, 1, 4), _rad(rng, 5, 15) if p < 0 else _rad(rng, 12, 28)]
        for side in (1, -1):
            swing = -p * side * rng.uniform(0.6, 1.0)
            arms[side] = [abs(swing) + _rad(rng, 3, 8), np.pi / 2 if swing > 0 else -np.pi / 2, _rad(rng, 10, 35), FWD]
    elif kind == "wave":
        arms[one] = [_rad(rng, 100, 150), _rad(rng, -10, 30), _rad(rng, 30, 80), (-one * 0.3, 1.0, 0.2)]
    elif kind == "arms_up":
        for side in (1, -1):
            arms[side] = [_rad(rng, 140, 172), _rad(rng, 0, 40), _rad(rng, 0, 30), (0.0, 1.0, 0.3)]
    elif kind == "tpose":
        for side in (1, -1):
            arms[side] = [_rad(rng, 75, 100), _rad(rng, -5, 30), _rad(rng, 0, 25), FWD]
    elif kind == "reach":
        arms[one] = [_rad(rng, 65, 100), _rad(rng, 60, 95), _rad(rng, 0, 15), (0.0, 1.0, 0.0)]
        if rng.random() < 0.4:
            arms[-one] = [_rad(rng, 65, 100), _rad(rng, 60, 95), _rad(rng, 0, 15), (0.0, 1.0, 0.0)]
    elif kind == "hips":
        for side in (1, -1):
            arms[side] = [_rad(rng, 28, 45), _rad(rng, -40, -10), _rad(rng, 80, 110), (-side * 1.0, -0.2, 0.6)]
    elif kind == "crouch":
        for side in (1, -1):
            legs[side] = [_rad(rng, 55, 85), _rad(rng, 8, 18), _rad(rng, 80, 115)]
            arms[side] = [_rad(rng, 40, 80), _rad(rng, 60, 90), _rad(rng, 10, 40), (0.0, 1.0, 0.0)]
        lean = _rad(rng, 15, 35)
    elif kind == "lunge":
        legs[one] = [_rad(rng, 35, 55), _rad(rng, 3, 8), _rad(rng, 40, 70)]
        legs[-one] = [_rad(rng, -25, -10), _rad(rng, 3, 8), _rad(rng, 5, 20)]
    elif kind == "phone":
        arms[one] = [_rad(rng, 20, 35), _rad(rng, 60, 90), _rad(rng, 115, 135), (0.0, 1.0, 0.0)]
    head_yaw, head_pitch = _rad(rng, -35, 35), _rad(rng, -15, 12)
    if kind == "phone":
        head_pitch = _rad(rng, -20, -5)
    return dict(kind=kind, arms=arms, legs=legs, lean=lean, twist=twist, head_yaw=head_yaw, head_pitch=head_pitch,
                toe_out=_rad(rng, 4, 14))


SKIN = [(0.96, 0.80, 0.69), (0.92, 0.73, 0.60), (0.84, 0.64, 0.50), (0.72, 0.52, 0.38), (0.55, 0.38, 0.26),
        (0.40, 0.27, 0.18), (0.30, 0.20, 0.14)]
HAIR = [(0.06, 0.05, 0.05), (0.25, 0.16, 0.09), (0.45, 0.30, 0.16), (0.80, 0.66, 0.40), (0.62, 0.60, 0.58),
        (0.55, 0.22, 0.10)]
CLOTH = [(0.12, 0.16, 0.32), (0.08, 0.08, 0.09), (0.92, 0.92, 0.90), (0.50, 0.50, 0.52), (0.70, 0.12, 0.12),
         (0.35, 0.40, 0.20), (0.78, 0.70, 0.55), (0.25, 0.40, 0.62), (0.85, 0.55, 0.15), (0.45, 0.20, 0.45),
         (0.10, 0.45, 0.40), (0.95, 0.80, 0.20)]


def sample_outfit(rng) -> dict:
    skin = jitter(rng, pick(rng, SKIN), 0.025)
    hair_c = jitter(rng, pick(rng, HAIR), 0.03)
    shirt_c = jitter(rng, pick(rng, CLOTH) if rng.random() < 0.8 else hsv(rng.random(), rng.uniform(0.3, 0.9),
                                                                             rng.uniform(0.3, 0.9)), 0.04)
    pants_c = jitter(rng, pick(rng, CLOTH[:8]), 0.04)
    seed = int(rng.integers(1 << 30))
    stripes = rng.uniform(0.03, 0.08) if rng.random() < 0.25 else 0.0
    return dict(
        skin={"tex": "skin", "c1": skin, "seed": seed, "spec": 0.15, "shine": 20.0},
        face={"tex": "face", "c1": skin, "c2": hair_c * 0.7, "seed": seed, "spec": 0.15, "shine": 20.0},
        hair={"tex": "hair", "c1": hair_c, "seed": seed + 1, "spec": 0.25, "shine": 30.0},
        shirt={"tex": "fabric", "c1": shirt_c, "c2": jitter(rng, pick(rng, CLOTH), 0.03), "stripes": stripes,
               "seed": seed + 2, "spec": 0.05, "shine": 8.0},
        pants={"tex": "fabric", "c1": pants_c, "seed": seed + 3, "spec": 0.05, "shine": 8.0},
        shoes={"tex": "plain", "c1": jitter(rng, pick(rng, [(0.08, 0.07, 0.07), (0.9, 0.9, 0.9), (0.35, 0.22, 0.12)]),
                                            0.02), "seed": seed + 4, "spec": 0.3, "shine": 30.0},
        long_sleeves=rng.random() < 0.55, shorts=rng.random() < 0.2,
        hair_style=pick(rng, ["short", "short", "long", "bald"]),
    )


def build_person(rng, base_xz, yaw: float, instance: int, height: float | None = None, pose: dict | None = None,
                 outfit: dict | None = None) -> Person:
    """A posed person standing at floor point (x, z), facing direction yaw (0 faces +z; pi faces -z)."""
    H = float(height if height is not None else np.clip(rng.normal(1.72, 0.09), 1.5, 1.98))
    pose = pose or sample_pose(rng)
    out = outfit or sample_outfit(rng)
    face = dict(out["face"], H=H)
    parts = []  # (kind, body-frame params, material)

    pc = np.array([0.0, 0.53 * H, 0.0])
    R_ub = rot_y(pose["twist"]) @ rot_x(-pose["lean"])
    R_half = rot_y(pose["twist"] * 0.5) @ rot_x(-pose["lean"] * 0.4)
    ub = lambda p: pc + R_ub @ np.asarray(p, float)

    # legs
    joints = {}
    for side, name in ((1, "left"), (-1, "right")):
        flex, abd, knee = pose["legs"][side]
        hip = pc + np.array([side * 0.062 * H, 0.0, 0.0])
        thigh = unit([side * np.sin(abd), -np.cos(flex) * np.cos(abd), np.sin(flex) * np.cos(abd)])
        kn = hip + 0.245 * H * thigh
        shin = _bend(thigh, (0.0, 0.0, -1.0), knee)
        an = kn + 0.246 * H * shin
        joints[f"{name}_hip"], joints[f"{name}_knee"], joints[f"{name}_ankle"] = hip, kn, an
        parts.append(("capsule", (hip, kn, 0.048 * H), "pants"))
        parts.append(("capsule", (kn, an, 0.034 * H), "skin" if out["shorts"] else "pants"))
        Rf = rot_y(side * pose["toe_out"])
        foot_c = an + np.array([0.0, -0.017 * H, 0.0]) + 0.042 * H * Rf[:, 2]
        parts.append(("box", (foot_c, np.array([0.026, 0.022, 0.068]) * H, Rf), "shoes"))
    # torso and head
    parts.append(("ellipsoid", (pc + R_half @ np.array([0.0, 0.03 * H, 0.0]), R_half,
                                np.array([0.092, 0.085, 0.062]) * H), "pants"))
    parts.append(("ellipsoid", (ub([0.0, 0.185 * H, 0.0]), R_ub, np.array([0.105, 0.125, 0.066]) * H), "shirt"))
    sh = {side: ub([side * 0.118 * H, 0.288 * H, -0.005 * H]) for side in (1, -1)}
    parts.append(("capsule", (sh[1], sh[-1], 0.042 * H), "shirt"))
    neck_a, neck_b = ub([0.0, 0.27 * H, 0.0]), ub([0.0, 0.355 * H, 0.006 * H])
    parts.append(("capsule", (neck_a, neck_b, 0.028 * H), "skin"))
    R_head = R_ub @ rot_y(pose["head_yaw"]) @ rot_x(pose["head_pitch"])
    head_c = neck_b + R_head @ np.array([0.0, 0.05 * H, 0.012 * H])
    parts.append(("ellipsoid", (head_c, R_head, np.array([0.046, 0.066, 0.056]) * H), "face"))
    parts.append(("sphere", (head_c + R_head @ np.array([0.0, -0.012, 0.052]) * H, 0.011 * H), "skin"))
    if out["hair_style"] != "bald":
        parts.append(("ellipsoid", (head_c + R_head @ np.array([0.0, 0.012, -0.012]) * H, R_head,
                                    np.array([0.049, 0.062, 0.056]) * H), "hair"))
    if out["hair_style"] == "long":
        parts.append(("ellipsoid", (head_c + R_head @ np.array([0.0, -0.045, -0.032]) * H, R_head,
                                    np.array([0.05, 0.075, 0.032]) * H), "hair"))
    head_pts = {"nose": [0.0, -0.012, 0.063], "left_eye": [0.0175, 0.010, 0.051], "right_eye": [-0.0175, 0.010, 0.051],
                "left_ear": [0.046, 0.0, -0.004], "right_ear": [-0.046, 0.0, -0.004]}
    for k, p in head_pts.items():
        joints[k] = head_c + R_head @ (np.array(p) * H)
    # arms
    for side, name in ((1, "left"), (-1, "right")):
        elev, azim, bend, hint = pose["arms"][side]
        up = _limb(side, elev, azim)
        fore = _bend(up, hint, bend)
        up, fore = R_ub @ up, R_ub @ fore
        el = sh[side] + 0.186 * H * up
        wr = el + 0.146 * H * fore
        joints[f"{name}_shoulder"], joints[f"{name}_elbow"], joints[f"{name}_wrist"] = sh[side], el, wr
        parts.append(("capsule", (sh[side], el, 0.027 * H), "shirt"))
        parts.append(("capsule", (el, wr, 0.021 * H), "shirt" if out["long_sleeves"] else "skin"))
        parts.append(("capsule", (wr, wr + 0.065 * H * fore, 0.019 * H), "skin"))

    # stand on the floor: the lowest sole touches y = 0
    soles = [p[1][0][1] - p[1][1][1] for p in parts if p[0] == "box"]
    lift = -min(soles)

    # body frame -> world: columns = the person's left, up, facing direction (a reflection: the world frame is
    # x right / y up / z forward as the camera sees it)
    F = np.array([np.sin(yaw), 0.0, np.cos(yaw)])
    L = np.array([-np.cos(yaw), 0.0, np.sin(yaw)])
    M = np.stack([L, np.array([0.0, 1.0, 0.0]), F], axis=1)
    base = np.array([base_xz[0], 0.0, base_xz[1]])
    w = lambda p: base + M @ (np.asarray(p) + np.array([0.0, lift, 0.0]))
    mats = {k: (face if k == "face" else out[k]) for k in ("skin", "face", "hair", "shirt", "pants", "shoes")}
    prims = []
    for kind, prm, mk in parts:
        kw = dict(label=FIGURE_LABEL, instance=instance, material=mats[mk])
        if kind == "capsule":
            prims.append(capsule(w(prm[0]), w(prm[1]), prm[2], **kw))
        elif kind == "ellipsoid":
            prims.append(ellipsoid(w(prm[0]), M @ prm[1], prm[2], **kw))
        elif kind == "sphere":
            prims.append(sphere(w(prm[0]), prm[1], **kw))
        else:
            prims.append(box(w(prm[0]), prm[1], R=M @ prm[2], **kw))
    kps = np.stack([w(joints[k]) for k in COCO_KEYPOINTS])
    lo = np.min([p.lo for p in prims], axis=0)
    hi = np.max([p.hi for p in prims], axis=0)
    return Person(prims, kps, _TOL * H + 0.01, base, float(yaw), H, pose["kind"], instance, lo, hi)
