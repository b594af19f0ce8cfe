"""What predict writes for each input, as data (task -> output name -> file suffix), and the renderers.

Images: OUT/<stem><suffix>, stem = the input's path relative to the input root without its suffix.
Videos: the visual outputs as .mp4 (frame rate kept) and, for pose, one keypoints JSON for all frames.
Every file is written atomically (a temporary name, then a rename): a file that exists is complete.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from mp_deploy.data.base import write_png
from mp_deploy.data.keypoints import COCO_SKELETON
from mp_deploy.protocols import coco_results
from mp_deploy.util import atomic_write, inside

OUTPUTS = {
    "depth": {"color": ".depth.png", "png16": ".depth16.png", "npy": ".depth.npy"},
    "seg": {"palette": ".seg.png", "overlay": ".overlay.png", "labels": ".labels.png"},
    "pose": {"json": ".keypoints.json", "overlay": ".pose.png"},
}
# a video gets its visual outputs as videos; per-pixel data (npy, 16-bit, labels) is written for images only
VIDEO_OUTPUTS = {
    "depth": {"color": ".depth.mp4"},
    "seg": {"palette": ".seg.mp4", "overlay": ".overlay.mp4"},
    "pose": {"json": ".keypoints.json", "overlay": ".pose.mp4"},
}
OVERLAY_ALPHA = 0.5  # weight of the class colours over the image


def output_paths(folder: Path, task: str, stem: str, video: bool, chosen) -> dict[str, Path]:
    """name -> path of an input's outputs (only the `chosen` names), each inside `folder`."""
    table = (VIDEO_OUTPUTS if video else OUTPUTS)[task]
    return {name: inside(folder, folder / f"{stem}{suffix}") for name, suffix in table.items() if name in chosen}


# ------------------------------------------------------------------ colours

def _turbo() -> np.ndarray:
    """Google's Turbo colour map (polynomial approximation by its author), 256 x 3 uint8: blue near, red far."""
    x = np.linspace(0.0, 1.0, 256)
    powers = np.stack([x ** k for k in range(6)], 1)
    coeffs = np.array([[0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943],
                       [0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604],
                       [0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973]])
    return np.clip(np.rint(powers @ coeffs.T * 255), 0, 255).astype(np.uint8)


def _voc_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour of each class index (bits of the index spread over R, G, B): n x 3 uint8."""
    index = np.arange(n)
    palette = np.zeros((n, 3), np.int64)
    for bit in range(8):
        for channel in range(3):
            palette[:, channel] |= ((index >> (3 * bit + channel)) & 1) << (7 - bit)
    return palette.astype(np.uint8)


TURBO, PALETTE = _turbo(), _voc_palette()


def depth_color(depth: np.ndarray, max_depth: float) -> np.ndarray:
    """Depth in metres -> RGB, a fixed scale 0..max_depth (the same colour means the same depth in every image
    and frame); no depth (NaN) is black."""
    index = np.rint(np.clip(np.nan_to_num(depth, nan=0.0) / max_depth, 0, 1) * 255).astype(np.uint8)
    rgb = TURBO[index]
    rgb[~np.isfinite(depth)] = 0
    return rgb


def depth_png16(depth: np.ndarray, scale: float) -> np.ndarray:
    """Depth x scale (the preset's png16_scale: NYU mm, KITTI 1/256 m) as uint16; no depth is 0."""
    return np.clip(np.rint(np.nan_to_num(depth, nan=0.0) * scale), 0, 65535).astype(np.uint16)


def label_colors(labels: np.ndarray) -> np.ndarray:
    return PALETTE[labels.astype(np.int64) % len(PALETTE)]


def overlay(image: np.ndarray, colors: np.ndarray) -> np.ndarray:
    return np.rint(image * (1 - OVERLAY_ALPHA) + colors * OVERLAY_ALPHA).astype(np.uint8)


def draw_people(image: np.ndarray, people: list[dict], threshold: float) -> np.ndarray:
    """The image with each person's box, limbs and keypoints (those scoring above `threshold`)."""
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    width = max(1, round(min(image.shape[:2]) / 150))
    for person in people:
        kp = np.asarray(person["keypoints"])
        x, y, w, h = (float(v) for v in person["box"])
        draw.rectangle([x, y, x + w, y + h], outline=(255, 255, 255), width=width)
        for a, b in COCO_SKELETON:
            if max(a, b) < len(kp) and kp[a, 2] > threshold and kp[b, 2] > threshold:
                side = (255, 128, 0) if a % 2 and b % 2 else (0, 160, 255)  # odd COCO indices are left
                draw.line([tuple(kp[a, :2]), tuple(kp[b, :2])], fill=side, width=width)
        for px, py, score in kp:
            if score > threshold:
                draw.ellipse([px - 2 * width, py - 2 * width, px + 2 * width, py + 2 * width], fill=(255, 0, 0))
    return np.asarray(canvas)


def pose_records(people: list[dict], image_id: int, key: str, frame: int | None = None) -> list[dict]:
    """COCO keypoint results (image_id, category_id, keypoints, score) plus the person box and the input."""
    records = coco_results(people, image_id)
    for record, person in zip(records, people):
        record["bbox"] = [float(v) for v in person["box"]]
        record["file_name"] = key
        if frame is not None:
            record["frame"] = frame
    return records


# ------------------------------------------------------------------ one image's files

def render(task: str, name: str, image: np.ndarray, result: dict, preset, threshold: float = 0.2,
           video: bool = False):
    """Output `name` of one image or frame: an array (an image, the .npy data, the labels) or, for pose json,
    the people. `video`: every visual output as an RGB frame (a palette PNG is an RGB frame in a video)."""
    if task == "depth":
        depth = result["depth"]
        if name == "color":
            return depth_color(depth, preset.max_depth)
        return depth_png16(depth, preset.png16_scale) if name == "png16" else depth
    if task == "seg":
        labels = result["labels"]
        if name == "overlay":
            return overlay(image, label_colors(labels))
        return label_colors(labels) if video and name == "palette" else labels
    return draw_people(image, result["people"], threshold) if name == "overlay" else result["people"]


def write_output(path: Path, name: str, value) -> None:
    """One output file, atomically: PNG (palette PNG for seg `palette`), .npy, or JSON."""
    if path.suffix == ".npy":
        atomic_write(path, lambda tmp: np.save(tmp, value))
    elif path.suffix == ".json":
        text = json.dumps(value, separators=(",", ":"))
        atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    elif name == "palette":
        image = Image.fromarray(value.astype(np.uint8))
        image.putpalette(PALETTE.ravel().tolist())  # L -> P: class indices with their colours
        atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
    else:
        atomic_write(path, lambda tmp: write_png(tmp, value))
