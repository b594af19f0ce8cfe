"""People of the room scenes (mp_deploy.data.rooms): capsule figures with human proportions, posed, dressed,
with the 17 COCO keypoints in COCO order.

Proportions follow the usual canon in units of the height H: the head (a sphere plus a hair cap) is about H/7.5
tall, the hips at 0.53 H, the shoulders 0.23 H apart, upper arm 0.17 H, forearm 0.145 H, thigh 0.245 H, shin
0.25 H; the torso is two side-by-side capsules (wider than deep). Poses: standing, walking, arms raised, reaching,
waving, sitting (on a stool or chair that comes with the person), bending and squatting, each from random joint
angles in plausible ranges. Clothes: a shirt (long or short sleeves), trousers or shorts, shoes; skin on head,
neck, hands (and forearms / shins when bare); hair on most.

"left" is the person's own left, as in COCO. Keypoints are joint centres (shoulders, elbows, ...) or points on the
head (nose, eyes, ears); each has a tolerance (the body part's radius plus a margin): how far behind the first
visible surface at its pixel a keypoint may lie and still count as seen.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mp_deploy.data.rooms_geometry import Ball, Box, Capsule, Thing
from mp_deploy.data.rooms_look import NOISE, Finish, fabric, furniture_finish, patterned, skin, srgb
from mp_deploy.data.scene import BOX, FIGURE

UP = np.array([0.0, 1.0, 0.0])
POSES = ("stand", "walk", "arms_up", "reach", "wave", "sit", "bend", "squat")
POSE_WEIGHTS = (0.2, 0.2, 0.12, 0.1, 0.08, 0.12, 0.1, 0.08)


@dataclass
class Person:
    thing: Thing  # the body's parts, label FIGURE
    keypoints: np.ndarray  # (17, 3) world, COCO order
    tolerance: np.ndarray  # (17,) metres
    pose: str
    seat: Thing | None  # what a sitting person sits on (an object of its own)
    position: np.ndarray  # (x, z)

    def moved_to(self, x: float, z: float) -> Person:
        """The same person (and seat) standing at floor point (x, z)."""
        dx, dz = x - self.position[0], z - self.position[1]
        seat = self.seat.moved(dx, dz, 0.0) if self.seat is not None else None
        return Person(self.thing.moved(dx, dz, 0.0), self.keypoints + [dx, 0.0, dz], self.tolerance, self.pose, seat,
                      np.array([x, z], float))

    @property
    def extent(self) -> tuple[np.ndarray, np.ndarray]:
        """The floor rectangle (lo, hi) in (x, z) holding the body (outstretched arms included) and the seat."""
        lo, hi = np.full(2, np.inf), np.full(2, -np.inf)
        parts = self.thing.parts + (self.seat.parts if self.seat is not None else [])
        for part in parts:
            c, r = part.bound
            lo, hi = np.minimum(lo, c[[0, 2]] - r), np.maximum(hi, c[[0, 2]] + r)
        return lo, hi


def unit(v: np.ndarray) -> np.ndarray:
    return v / math.sqrt(v @ v)


def bend(direction: np.ndarray, towards: np.ndarray, angle: float) -> np.ndarray:
    """`direction` turned by `angle` radians in the plane it spans with `towards` (figures.bend)."""
    perp = towards - (towards @ direction) * direction
    n = math.sqrt(perp @ perp)
    perp = perp / n if n > 1e-6 else UP
    return direction * math.cos(angle) + perp * math.sin(angle)


def cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The cross product of two 3-vectors (np.cross costs tens of microseconds on one pair)."""
    return np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


def rotate(v: np.ndarray, axis: np.ndarray, angle: float) -> np.ndarray:
    """`v` turned by `angle` radians about the unit `axis` (right-handed; Rodrigues)."""
    c, s = np.cos(angle), np.sin(angle)
    return v * c + cross(axis, v) * s + axis * (axis @ v) * (1 - c)


def carried(frm: np.ndarray, to: np.ndarray, v: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """`v` turned by the smallest rotation that takes unit `frm` to unit `to` (a limb's front follows it)."""
    axis = cross(frm, to)
    n = math.sqrt(axis @ axis)
    if n < 1e-6:
        return v if frm @ to > 0 else rotate(v, fallback, np.pi)
    return rotate(v, axis / n, np.arctan2(n, frm @ to))


def limb(side: np.ndarray, forward: np.ndarray, up: np.ndarray, out: float, ahead: float) -> np.ndarray:
    """Down (-up) turned `out` radians towards `side` and `ahead` radians towards `forward` (ahead = pi: up)."""
    return side * np.sin(out) + (forward * np.sin(ahead) - up * np.cos(ahead)) * np.cos(out)


def pose_angles(rng: np.random.Generator, pose: str) -> dict:
    """Joint angles (radians) for a pose. Arms: (out to the side, ahead / up, elbow bend, outward rotation) in the
    torso's frame; legs: (out, ahead, knee bend, toe-out) in the pelvis's."""
    u = rng.uniform
    a = {"lean": u(-0.05, 0.12), "side": u(-0.06, 0.06), "twist": u(-0.25, 0.25), "nod": u(-0.15, 0.3),
         "turn": u(-0.7, 0.7)}
    arms = [[u(0.05, 0.3), u(-0.2, 0.35), u(0.0, 0.5), u(-0.3, 0.4)] for _ in range(2)]
    legs = [[u(0.0, 0.1), u(-0.08, 0.1), u(0.0, 0.12), u(-0.1, 0.35)] for _ in range(2)]
    one = int(rng.integers(2))
    if pose == "walk":
        swing = u(0.2, 0.45) * rng.choice([-1, 1])
        for k, s in enumerate((1, -1)):
            legs[k][1] = s * swing
            legs[k][2] = u(0.25, 0.7) if s * swing < 0 else u(0.0, 0.2)
            arms[k][1] = -s * swing * u(0.8, 1.4)
            arms[k][2] = u(0.1, 0.7)
    elif pose == "arms_up":
        for k in ((0, 1) if rng.random() < 0.5 else (one,)):
            if rng.random() < 0.6:
                arms[k][:3] = [u(0.0, 0.5), u(2.3, 3.0), u(0.0, 0.6)]  # overhead
            else:
                arms[k][:3] = [u(1.2, 1.7), u(-0.2, 0.3), u(0.0, 0.5)]  # out to the side
    elif pose == "reach":
        arms[one][:3] = [u(-0.1, 0.4), u(1.1, 1.7), u(0.0, 0.4)]
        a["lean"] = u(0.0, 0.35)
    elif pose == "wave":
        arms[one] = [u(1.1, 1.6), u(0.0, 0.5), u(1.4, 2.2), u(1.2, 1.7)]
    elif pose == "sit":
        a["lean"] = u(-0.05, 0.25)
        for k in range(2):
            legs[k] = [u(0.05, 0.3), u(1.35, 1.65), u(1.3, 1.75), u(-0.1, 0.3)]
            arms[k][1:3] = [u(0.2, 0.9), u(0.6, 1.5)]
    elif pose == "bend":
        a["lean"] = u(0.6, 1.3)
        for k in range(2):
            legs[k][1:3] = [u(-0.15, 0.05), u(0.0, 0.35)]
            arms[k][:3] = [u(0.0, 0.3), a["lean"] + u(-0.3, 0.6), u(0.0, 0.6)]
    elif pose == "squat":
        a["lean"] = u(0.3, 0.8)
        for k in range(2):
            legs[k] = [u(0.2, 0.5), u(1.5, 2.0), u(1.9, 2.35), u(0.0, 0.4)]
            arms[k][1:3] = [u(0.5, 1.5), u(0.3, 1.2)]
    a["arms"], a["legs"] = arms, legs
    return a


def clothing(rng: np.random.Generator, add) -> dict:
    """Material ids of one person's skin, shirt, trousers, shoes and hair, and which limbs are bare."""
    shirt = patterned(rng) if rng.random() < 0.3 else fabric(rng)
    trousers = fabric(rng)
    if rng.random() < 0.4:  # jeans
        trousers.color = srgb(rng.uniform(0.58, 0.64), rng.uniform(0.3, 0.6), rng.uniform(0.2, 0.6))
        trousers.color2 = trousers.color * 0.8
    hair = srgb(rng.uniform(0.02, 0.1), rng.uniform(0.2, 0.7), rng.choice([0.08, 0.2, 0.35, 0.6, 0.8]))
    shoes = srgb(rng.random(), rng.uniform(0, 0.4), rng.uniform(0.05, 0.5))
    return {"skin": add(skin(rng)), "shirt": add(shirt), "trousers": add(trousers),
            "shoes": add(Finish(shoes, shoes, gloss=0.3)), "hair": add(Finish(hair, hair * 0.7, NOISE, 0.02)),
            "short_sleeves": rng.random() < 0.4, "shorts": rng.random() < 0.2, "bald": rng.random() < 0.1}


def sample_person(rng: np.random.Generator, add, position_xz, yaw: float, pose: str | None = None,
                  height: float | None = None) -> Person:
    """A person at floor point (x, z) facing `yaw` radians about +y (0 = +z). `add(finish)` -> material id."""
    pose = pose or str(rng.choice(POSES, p=POSE_WEIGHTS))
    H = height if height is not None else rng.uniform(1.5, 1.92)
    ang = pose_angles(rng, pose)
    dress = clothing(rng, add)
    f = np.array([np.sin(yaw), 0.0, np.cos(yaw)])
    left = cross(UP, f)

    # torso frame: lean forward (about the left axis), lean sideways, twist
    tu, tf = rotate(UP, left, ang["lean"]), rotate(f, left, ang["lean"])
    tu = rotate(tu, tf, ang["side"])
    tf = rotate(tf, tu, ang["twist"])
    tl = cross(tu, tf)
    pelvis = np.array([0.0, 0.53 * H, 0.0])
    neck = pelvis + 0.29 * H * tu
    shoulders = [neck - 0.03 * H * tu + s * 0.1 * H * tl for s in (1, -1)]
    hips = [pelvis + s * 0.05 * H * left for s in (1, -1)]
    head_up = unit(rotate(tu, tl, ang["nod"] * 0.5))
    face = unit(rotate(rotate(tf, tl, ang["nod"]), head_up, ang["turn"]))
    face = unit(face - (face @ head_up) * head_up)
    head_left = cross(head_up, face)
    head_r = 0.06 * H
    head_c = neck + 0.095 * H * head_up

    elbows, wrists, hands, knees, ankles, toes = [], [], [], [], [], []
    for k, s in enumerate((1, -1)):
        out, ahead, elbow, outward = ang["arms"][k]
        upper = limb(s * tl, tf, tu, out, ahead)
        front = carried(-tu, upper, tf, tl)
        front = rotate(front, upper, -s * outward)
        fore = bend(upper, front, elbow)
        elbows.append(shoulders[k] + 0.17 * H * upper)
        wrists.append(elbows[k] + 0.145 * H * fore)
        hands.append(wrists[k] + 0.07 * H * fore)
        out, ahead, knee, toe_out = ang["legs"][k]
        thigh = limb(s * left, f, UP, out, ahead)
        front = carried(-UP, thigh, f, left)
        shin = bend(thigh, -front, knee)
        knees.append(hips[k] + 0.245 * H * thigh)
        ankles.append(knees[k] + 0.25 * H * shin)
        foot_f = rotate(f, UP, s * toe_out * 0.5)
        foot = foot_f - (foot_f @ shin) * shin
        foot = unit(foot) if foot @ foot > 1e-6 else f
        toes.append((ankles[k] - 0.03 * H * foot - 0.012 * H * shin, ankles[k] + 0.11 * H * foot - 0.015 * H * shin))

    m = dress
    arm_fore = m["skin"] if m["short_sleeves"] else m["shirt"]
    shin_mat = m["skin"] if m["shorts"] else m["trousers"]
    body = []  # (a, b, radius, material): capsules; b None: a ball at a
    for s in (1, -1):  # torso: two capsules side by side
        body.append((pelvis + 0.05 * H * tu + s * 0.04 * H * tl, neck - 0.07 * H * tu + s * 0.055 * H * tl, 0.062 * H,
                     m["shirt"]))
    body += [(shoulders[0], shoulders[1], 0.036 * H, m["shirt"]),
             (pelvis + 0.02 * H * tu + 0.045 * H * left, pelvis + 0.02 * H * tu - 0.045 * H * left, 0.058 * H,
              m["trousers"]),
             (neck - 0.02 * H * tu, head_c - 0.035 * H * head_up, 0.03 * H, m["skin"]),
             (head_c, None, head_r, m["skin"])]
    if not m["bald"]:
        body.append((head_c + 0.013 * H * head_up - 0.015 * H * face, None, 0.0595 * H, m["hair"]))
    for k in range(2):
        body += [(shoulders[k], elbows[k], 0.03 * H, m["shirt"]),
                 (elbows[k], wrists[k], 0.025 * H, arm_fore),
                 (wrists[k] + 0.01 * H * unit(hands[k] - wrists[k]), hands[k], 0.021 * H, m["skin"]),
                 (hips[k], knees[k], 0.052 * H, m["trousers"]),
                 (knees[k], ankles[k], 0.037 * H, shin_mat),
                 (*toes[k], 0.026 * H, m["shoes"])]

    # COCO order: nose, eyes, ears, then (left, right) shoulders, elbows, wrists, hips, knees, ankles
    face_pts = [head_c + head_r * face,
                head_c + head_r * unit(face * 0.85 + head_left * 0.38 + head_up * 0.25),
                head_c + head_r * unit(face * 0.85 - head_left * 0.38 + head_up * 0.25),
                head_c + head_r * unit(head_left - face * 0.15),
                head_c + head_r * unit(-head_left - face * 0.15)]
    kp = np.array(face_pts + shoulders + elbows + wrists + hips + knees + ankles)
    margin = 0.02
    tol = np.array([0.03] * 5 + [0.045 * H + margin] * 2 + [0.03 * H + margin] * 2 + [0.025 * H + margin] * 2
                   + [0.062 * H + margin] * 2 + [0.052 * H + margin] * 2 + [0.045 * H + margin] * 2)

    # stand (or sit) with the lowest point on the floor
    lift = -min((a[1] if b is None else min(a[1], b[1])) - r for a, b, r, _ in body)
    x, z = position_xz
    offset = np.array([x, lift, z])
    parts = [Ball(a + offset, r, mat) if b is None else Capsule(a + offset, b + offset, r, mat)
             for a, b, r, mat in body]
    seat = sample_seat(rng, add, pelvis + offset, f, 0.058 * H) if pose == "sit" else None
    return Person(Thing(FIGURE, parts), kp + offset, tol, pose, seat, np.array([x, z], float))


def sample_seat(rng: np.random.Generator, add, pelvis: np.ndarray, forward: np.ndarray, pelvis_r: float) -> Thing:
    """A stool or chair under a sitting person: its top just below the pelvis, a backrest (chairs) behind."""
    top = pelvis[1] - pelvis_r
    half = rng.uniform(0.19, 0.25)
    mat = add(furniture_finish(rng))
    yaw = float(np.arctan2(forward[0], forward[2]))
    centre = pelvis + forward * 0.06
    th = 0.04
    parts = [Box([0.0, top - th / 2, 0.0], [half, th / 2, half], 0.0, mat)]
    leg = 0.03
    for sx in (1, -1):
        for sz in (1, -1):
            parts.append(Box([sx * (half - leg), (top - th) / 2, sz * (half - leg)], [leg / 2, (top - th) / 2, leg / 2],
                             0.0, mat))
    if rng.random() < 0.5:
        back_h = rng.uniform(0.35, 0.5)
        parts.append(Box([0.0, top + back_h / 2, -half - 0.03], [half, back_h / 2, 0.02], 0.0, mat))
    return Thing(BOX, parts, (0.0, 0.0, half, half, 0.0)).moved(centre[0], centre[2], yaw)
