"""Articulated figures for the synthetic scenes: capsule people with the 17 COCO keypoints in COCO order.

A figure stands on the floor (y = 0) facing `yaw`; its joints come from random but plausible angles (torso lean,
shoulder abduction/flexion, elbow and knee bends, hip flexion/abduction, head turn). "left" is the figure's own
left, as in COCO. Keypoints are joint centres (shoulders, elbows, ...) or points on the head sphere (nose, eyes,
ears); each has a tolerance (the body part's radius) used to decide whether it is seen or occluded.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

UP = np.array([0.0, 1.0, 0.0])


@dataclass
class Figure:
    keypoints: np.ndarray  # (17, 3) world, COCO order
    tolerance: np.ndarray  # (17,) metres: how far behind the visible surface a seen keypoint may lie
    capsules: list  # (a, b, radius)
    head: tuple  # (centre, radius)
    bound: tuple  # (centre, radius) of a sphere holding the whole figure


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def limb_direction(side: np.ndarray, forward: np.ndarray, out: float, ahead: float) -> np.ndarray:
    """Down (-up) turned `out` radians towards `side` and `ahead` radians towards `forward` (unit length)."""
    return (side * np.sin(out) + forward * np.sin(ahead) * np.cos(out)
            - UP * np.cos(out) * np.cos(ahead))


def bend(direction: np.ndarray, towards: np.ndarray, angle: float) -> np.ndarray:
    """`direction` turned by `angle` radians in the plane it spans with `towards`."""
    perp = towards - (towards @ direction) * direction
    n = np.linalg.norm(perp)
    perp = perp / n if n > 1e-6 else UP
    return direction * np.cos(angle) + perp * np.sin(angle)


def sample_figure(rng: np.random.Generator, position_xz, yaw: float, height: float | None = None) -> Figure:
    """A figure standing at (x, z) on the floor, facing `yaw` radians about +y (0 = +z)."""
    H = height if height is not None else rng.uniform(1.5, 1.9)
    f = np.array([np.sin(yaw), 0.0, np.cos(yaw)])
    left = np.cross(UP, f)  # the figure's own left in a right-handed, y-up world
    lean = rng.uniform(-0.15, 0.5)  # forward bend, radians
    side_lean = rng.uniform(-0.15, 0.15)
    torso_up = unit(UP * np.cos(lean) + f * np.sin(lean) + left * np.sin(side_lean))
    pelvis = np.array([0.0, 0.53 * H, 0.0])
    neck = pelvis + 0.30 * H * torso_up
    twist = rng.uniform(-0.35, 0.35)
    lat = unit(left * np.cos(twist) + f * np.sin(twist))  # shoulder line, turned by the twist
    fwd_torso = unit(np.cross(lat, torso_up))
    shoulders = [neck - 0.02 * H * torso_up + s * 0.13 * H * lat for s in (1, -1)]
    hips = [pelvis + s * 0.06 * H * left for s in (1, -1)]
    head_dir = unit(torso_up + fwd_torso * rng.uniform(-0.2, 0.3))
    head_c = neck + 0.10 * H * head_dir
    head_r = 0.06 * H
    turn = rng.uniform(-0.8, 0.8)
    face = unit(fwd_torso * np.cos(turn) + lat * np.sin(turn) + head_dir * rng.uniform(-0.3, 0.3))
    face_left = unit(np.cross(head_dir, face))

    elbows, wrists, knees, ankles = [], [], [], []
    for k, s in enumerate((1, -1)):
        side = left * s
        d = limb_direction(side * 1.0, fwd_torso, rng.uniform(0.05, 2.6), rng.uniform(-0.7, 2.0))
        elbows.append(shoulders[k] + 0.17 * H * d)
        fore = bend(d, fwd_torso + UP * 0.5, rng.uniform(0.0, 2.4))
        wrists.append(elbows[k] + 0.15 * H * fore)
        d = limb_direction(side, f, rng.uniform(0.0, 0.45), rng.uniform(-0.45, 1.4))
        knees.append(hips[k] + 0.245 * H * d)
        shin = bend(d, -f, rng.uniform(0.0, 1.9))
        ankles.append(knees[k] + 0.245 * H * shin)

    face_pts = [head_c + head_r * face,
                head_c + head_r * unit(face * 0.8 + face_left * 0.45 + head_dir * 0.3),
                head_c + head_r * unit(face * 0.8 - face_left * 0.45 + head_dir * 0.3),
                head_c + head_r * unit(face_left + face * -0.1),
                head_c + head_r * unit(-face_left + face * -0.1)]
    # COCO order: face, then (left, right) pairs of shoulders, elbows, wrists, hips, knees, ankles
    kp = np.array(face_pts + shoulders + elbows + wrists + hips + knees + ankles)
    r = {"torso": 0.08 * H, "shoulder": 0.04 * H, "hip": 0.055 * H, "upper_arm": 0.028 * H, "forearm": 0.024 * H,
         "thigh": 0.045 * H, "shin": 0.035 * H, "neck": 0.03 * H}
    capsules = [(pelvis, neck, r["torso"]), (shoulders[0], shoulders[1], r["shoulder"]), (hips[0], hips[1], r["hip"]),
                (neck, head_c, r["neck"])]
    for k in range(2):
        capsules += [(shoulders[k], elbows[k], r["upper_arm"]), (elbows[k], wrists[k], r["forearm"]),
                     (hips[k], knees[k], r["thigh"]), (knees[k], ankles[k], r["shin"])]
    # stand on the floor: the lowest point of the body touches y = 0
    lowest = min(min(a[1], b[1]) - rad for a, b, rad in capsules)
    offset = np.array([position_xz[0], -lowest, position_xz[1]])
    capsules = [(a + offset, b + offset, rad) for a, b, rad in capsules]
    kp = kp + offset
    head = (head_c + offset, head_r)
    margin = 0.03
    tolerance = np.array([margin] * 5 + [r["shoulder"] + margin] * 2 + [r["upper_arm"] + margin] * 2
                         + [r["forearm"] + margin] * 2 + [r["torso"] + margin] * 2 + [r["thigh"] + margin] * 2
                         + [r["shin"] + margin] * 2)
    pts = np.concatenate([np.array([c for a, b, _ in capsules for c in (a, b)]), head[0][None]])
    centre = (pts.min(axis=0) + pts.max(axis=0)) / 2
    radius = np.linalg.norm(pts - centre, axis=1).max() + r["torso"] + head_r
    return Figure(kp, tolerance, capsules, head, (centre, radius))
