"""Pose data: mmpose's top-down pipeline (box -> aspect-fixed padded crop, augmentation, target heatmaps) and the
COCO keypoints and custom-folder readers.

A person instance is a dict: `file`, `image_id`, `box` [x, y, w, h] (pixels), `keypoints` (K, 3) as COCO stores
them (x, y, v; v = 0 unlabelled, 1 labelled but occluded, 2 visible; integer coordinates are pixel centres) and
`area`. Samples add the crop: `image` (3, h, w), `heatmaps` (K, h/4, w/4), `keypoint_weight` (K,),
`keypoints` (K, 3) in crop pixels with the flags, `center` (2,) and `scale` (2,) (the crop's box in image pixels:
mmpose's scale x 200), `rotation`, and for COCO evaluation `image_id`, `box`, `area` and `image_keypoints`.
"""
from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mp_deploy.data.base import (Manifest, SampleDataset, check_folder, image_files, is_finite_number,
                                 read_manifest)
from mp_deploy.files import read_json, special_kind
from mp_deploy.images import MAX_PIXELS, MIN_SIDE, read_rgb, to_image_tensor
from mp_deploy.data.keypoints import COCO_FLIP_PAIRS, COCO_KEYPOINTS, COCO_UPPER_BODY, flip_permutation
from mp_deploy.data.transforms import affine_matrix, apply_affine, warp_affine
from mp_deploy.errors import DataError

log = logging.getLogger("mp_deploy.data")

# no image is wider or taller than this (MAX_PIXELS with the shortest side MIN_SIDE): a coordinate past it, in
# either direction, is not of any image we read
MAX_COORD = float(MAX_PIXELS // MIN_SIDE)
MAX_COCO_BYTES = 1 << 30  # person_keypoints_train2017.json is ~240 MB
VISIBILITY = (0, 1, 2)  # COCO's flags


@dataclass(frozen=True)
class TopDown:
    """The crop and its target: input (h, w), heatmaps at stride 4 with mmpose's MSRA Gaussian (sigma 2 at
    64x48, integer centre, 3-sigma window), boxes padded by 1.25 after fixing their aspect to the input's."""

    input_size: tuple[int, int] = (256, 192)
    sigma: float = 2.0
    padding: float = 1.25
    stride: int = 4
    flip_pairs: tuple = COCO_FLIP_PAIRS
    upper_body: tuple = COCO_UPPER_BODY

    @property
    def heatmap_size(self) -> tuple[int, int]:
        return self.input_size[0] // self.stride, self.input_size[1] // self.stride


@dataclass(frozen=True)
class PoseAugment:
    """mmpose 0.x's COCO top-down defaults (HRNet/ViTPose configs): a box-centre shift (0.16 of the box, prob
    0.3), horizontal flip with left/right swap (0.5), half-body (0.3, when more than 8 keypoints are labelled),
    scale x clip(N(1, 0.5), 0.5, 1.5) and rotation clip(N(0, 40), -80, 80) degrees with prob 0.6."""

    shift_factor: float = 0.16
    shift_prob: float = 0.3
    flip_prob: float = 0.5
    half_body_prob: float = 0.3
    half_body_min_joints: int = 8
    scale_factor: float = 0.5
    rot_factor: float = 40.0
    rot_prob: float = 0.6


def box_center_scale(box, aspect: float, padding: float) -> tuple[np.ndarray, np.ndarray]:
    """mmpose's _xywh2cs: the box centre, and its size grown to the input's aspect (w / h) then x padding."""
    x, y, w, h = (float(v) for v in box)
    center = np.array([x + w * 0.5, y + h * 0.5])
    if w > aspect * h:
        h = w / aspect
    elif w < aspect * h:
        w = h * aspect
    return center, np.array([w, h]) * padding


def half_body(joints: np.ndarray, visible: np.ndarray, upper: tuple, aspect: float,
              rng: np.random.Generator):
    """mmpose's half_body_transform: a box around the upper or the lower body's labelled joints, x 1.5."""
    upper_mask = np.zeros(len(joints), bool)
    upper_mask[list(upper)] = True
    ups, lows = joints[visible & upper_mask], joints[visible & ~upper_mask]
    # mmpose draws randn (not rand) here, so the upper body is picked ~69% of the time
    chosen = ups if rng.standard_normal() < 0.5 and len(ups) > 2 else (lows if len(lows) > 2 else ups)
    if len(chosen) < 2:
        return None
    lo, hi = chosen.min(axis=0), chosen.max(axis=0)
    if not (hi > lo).any():  # every chosen joint at one point: no box to grow (the full box is kept)
        return None
    center, size = box_center_scale((lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]), aspect, 1.5)
    return chosen.mean(axis=0), size


def gaussian_heatmaps(joints: np.ndarray, weight: np.ndarray, heatmap_size, sigma: float,
                      stride: float) -> tuple[np.ndarray, np.ndarray]:
    """mmpose's MSRA target: per keypoint a Gaussian (peak 1) at the integer heatmap cell nearest to
    joint / stride, cut to a (6 sigma + 1) window; a keypoint whose window misses the map gets weight 0."""
    hh, hw = heatmap_size
    target = np.zeros((len(joints), hh, hw), np.float32)
    weight = weight.astype(np.float32).copy()
    radius = int(sigma * 3)
    g_range = np.arange(2 * radius + 1, dtype=np.float32) - radius
    gauss = np.exp(-(g_range[None, :] ** 2 + g_range[:, None] ** 2) / (2 * sigma ** 2))
    for k, (x, y) in enumerate(joints):
        mu_x, mu_y = int(x / stride + 0.5), int(y / stride + 0.5)
        x0, y0, x1, y1 = mu_x - radius, mu_y - radius, mu_x + radius + 1, mu_y + radius + 1
        if x0 >= hw or y0 >= hh or x1 < 0 or y1 < 0:
            weight[k] = 0
        if weight[k] > 0.5:
            target[k, max(y0, 0):min(y1, hh), max(x0, 0):min(x1, hw)] = \
                gauss[max(0, -y0):min(y1, hh) - y0, max(0, -x0):min(x1, hw) - x0]
    return target, weight


def topdown_sample(image: np.ndarray, instance: dict, cfg: TopDown, aug: PoseAugment | None,
                   rng: np.random.Generator) -> dict:
    """One person instance of an RGB uint8 image -> a training/eval sample (see the module docstring)."""
    h_in, w_in = cfg.input_size
    aspect = w_in / h_in
    kps = np.asarray(instance["keypoints"], np.float64).reshape(-1, 3)
    joints, flags = kps[:, :2].copy(), kps[:, 2].copy()
    visible = flags > 0
    center, size = box_center_scale(instance["box"], aspect, cfg.padding)
    rotation = 0.0
    if aug is not None:
        if rng.random() < aug.shift_prob:
            center = center + rng.uniform(-1, 1, 2) * aug.shift_factor * size
        if rng.random() < aug.flip_prob:
            image = image[:, ::-1]
            perm = flip_permutation(len(joints), cfg.flip_pairs)
            joints[:, 0] = image.shape[1] - 1 - joints[:, 0]
            joints, visible, flags = joints[perm] * visible[perm, None], visible[perm], flags[perm]
            center = np.array([image.shape[1] - 1 - center[0], center[1]])
        if visible.sum() > aug.half_body_min_joints and rng.random() < aug.half_body_prob:
            picked = half_body(joints, visible, cfg.upper_body, aspect, rng)
            if picked is not None:
                center, size = picked
        size = size * np.clip(rng.standard_normal() * aug.scale_factor + 1, 1 - aug.scale_factor,
                              1 + aug.scale_factor)
        r = np.clip(rng.standard_normal() * aug.rot_factor, -2 * aug.rot_factor, 2 * aug.rot_factor)
        rotation = float(r) if rng.random() <= aug.rot_prob else 0.0
    if not (np.isfinite(center).all() and np.isfinite(size).all() and (size > 0).all()):
        raise DataError(f"{instance['file']}: person box {list(instance['box'])} gives no crop (centre "
                        f"{center.tolist()}, size {size.tolist()})")
    matrix = affine_matrix(center, size, rotation, (w_in, h_in))
    crop = warp_affine(to_image_tensor(np.ascontiguousarray(image)), matrix, (w_in, h_in))[0]
    # a joint far outside the crop (a tiny box, a distant keypoint) stays far outside it, and finite in float32
    crop_joints = np.clip(np.where(visible[:, None], apply_affine(joints, matrix), 0.0), -MAX_COORD, MAX_COORD)
    heatmaps, weight = gaussian_heatmaps(crop_joints, visible, cfg.heatmap_size, cfg.sigma, cfg.stride)
    return {
        "image": crop.float().clamp_(0, 1),
        "heatmaps": torch.from_numpy(heatmaps),
        "keypoint_weight": torch.from_numpy(weight),
        "keypoints": torch.from_numpy(np.concatenate([crop_joints, flags[:, None]], 1).astype(np.float32)),
        "center": torch.tensor(center, dtype=torch.float64),
        "scale": torch.tensor(size, dtype=torch.float64),
        "rotation": rotation,
        "image_id": int(instance["image_id"]),
        "box": torch.tensor(np.asarray(instance["box"], np.float64)),
        "area": float(instance["area"]),
        "image_keypoints": torch.from_numpy(kps.astype(np.float32)),
        "file": str(instance["file"]),
    }


class PoseInstances(SampleDataset):
    """Person instances (see the module docstring) cropped top-down. An instance may instead hold `error`
    (an annotation that could not be read): loading it is a bad sample."""

    def __init__(self, instances: list[dict], cfg: TopDown = TopDown(), augment: PoseAugment | None = None,
                 seed: int = 0, substitute_bad: bool | None = None, keypoint_names=COCO_KEYPOINTS,
                 sigmas=None, coco=None, bad_records: int = 0):
        if not instances:
            raise DataError("no person instances with labelled keypoints found")
        self.instances, self.cfg, self.augment, self.seed = instances, cfg, augment, seed
        self.substitute_bad = augment is not None if substitute_bad is None else substitute_bad
        self.keypoint_names, self.sigmas = tuple(keypoint_names), sigmas
        self.coco = coco  # the ground truth for OKS AP where the source has one (COCO); else built from samples
        self.protocol = "coco"
        self.bad_records = bad_records  # person annotations left out when the data set was built
        self.sample_size = tuple(cfg.input_size)

    def __len__(self) -> int:
        return len(self.instances)

    def load(self, index: int, rng: np.random.Generator) -> dict:
        instance = self.instances[index]
        if "error" in instance:
            raise DataError(instance["error"])
        image = read_rgb(instance["file"])
        h, w = image.shape[:2]
        x, y, bw, bh = instance["box"]
        if x >= w or y >= h or x + bw <= 0 or y + bh <= 0:
            raise DataError(f"{instance['file']}: person box {list(instance['box'])} lies outside the {w}x{h} "
                            "image")
        sample = topdown_sample(image, instance, self.cfg, self.augment, rng)
        if not (sample["keypoint_weight"] > 0).any():
            raise DataError(f"{instance['file']}: person {instance['box']} has no keypoint inside its crop")
        return sample


# ------------------------------------------------------------------ annotation records, each checked

def keypoint_array(value, num_keypoints: int) -> np.ndarray:
    """A record's keypoints as (K, 3) float64, else DataError saying what is wrong with them: not numbers, the
    wrong count, NaN or infinite, beyond any image, or a visibility flag that is not COCO's 0, 1 or 2."""
    if value is None:
        raise DataError("no \"keypoints\"")
    try:
        kps = np.asarray(value, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):
        raise DataError("the keypoints are not a list of [x, y, v] numbers") from None
    if kps.size != 3 * num_keypoints:
        raise DataError(f"{kps.size} keypoint values where {num_keypoints} keypoints need {3 * num_keypoints}")
    kps = kps.reshape(num_keypoints, 3)
    bad = ~np.isfinite(kps).all(axis=1)
    if bad.any():
        raise DataError(f"keypoint {int(bad.argmax())} is not finite ({kps[bad.argmax()].tolist()})")
    far = (np.abs(kps[:, :2]) > MAX_COORD).any(axis=1)
    if far.any():
        raise DataError(f"keypoint {int(far.argmax())} lies beyond any image ({kps[far.argmax(), :2].tolist()})")
    flags = ~np.isin(kps[:, 2], VISIBILITY)
    if flags.any():
        k = int(flags.argmax())
        raise DataError(f"keypoint {k} has visibility {kps[k, 2]:g}; COCO's flags are 0, 1 and 2")
    return kps


def box_array(value) -> list[float]:
    """A record's box [x, y, w, h] as floats, else DataError: four finite numbers within any image's range, the
    width and height positive."""
    if not isinstance(value, (list, tuple)) or len(value) != 4 or any(
            isinstance(v, bool) or not isinstance(v, (int, float)) for v in value):
        raise DataError(f"box {str(value)[:80]} is not [x, y, w, h] (four numbers)")
    if not all(is_finite_number(v) and abs(v) <= MAX_COORD for v in value):
        raise DataError(f"box {str(value)[:80]} holds a value that is not finite or lies beyond any image")
    box = [float(v) for v in value]
    if not all(np.isfinite(box)) or max(abs(v) for v in box) > MAX_COORD:
        raise DataError(f"box {box} holds a value that is not finite or lies beyond any image")
    if not (box[2] > 0 and box[3] > 0):
        raise DataError(f"box {box} has a width or height that is not positive")
    return box


def report_bad_records(where, bad: list[str]) -> None:
    """One line for the person annotations left out while building a data set."""
    if bad:
        log.warning("%s: %d bad person annotation(s) left out (first: %s)", where, len(bad), bad[0])


def coco_instances(coco, image_dir: Path, bad: list[str] | None = None) -> list[dict]:
    """mmpose's COCO top-down selection: non-crowd person annotations with a box that is valid after clipping
    to the image and at least one labelled keypoint. An annotation whose values cannot be used (not numbers,
    NaN, a visibility flag other than 0, 1, 2, an image without a usable size) is left out and its reason
    appended to `bad`."""
    bad = [] if bad is None else bad
    instances = []
    num_keypoints = len(COCO_KEYPOINTS)
    for image_id in sorted(coco.getImgIds()):
        info = coco.loadImgs(image_id)[0]
        width, height = info.get("width"), info.get("height")
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id, iscrowd=False))
        if any(isinstance(v, bool) or not isinstance(v, int) or not 0 < v <= MAX_COORD for v in (width, height)):
            bad.extend(f"image {image_id}: size {width!r}x{height!r} is not two positive integers" for _ in anns)
            continue
        for ann in anns:
            if "bbox" not in ann or "keypoints" not in ann:
                continue
            try:
                x, y, w, h = _raw_box(ann["bbox"])  # an empty box is left out by the selection below
                kps = keypoint_array(ann["keypoints"], num_keypoints)
                area = ann.get("area", 1)
                if not is_finite_number(area):
                    raise DataError(f"area {area!r} is not a finite number")
            except DataError as e:
                bad.append(f"annotation {ann.get('id')} of image {image_id}: {e}")
                continue
            x1, y1 = max(0, x), max(0, y)
            x2, y2 = min(width - 1, x1 + max(0, w - 1)), min(height - 1, y1 + max(0, h - 1))
            if area <= 0 or x2 <= x1 or y2 <= y1:
                continue
            if kps.max() == 0 or ann.get("num_keypoints", 1) == 0:
                continue
            instances.append({"file": image_dir / str(info.get("file_name")), "image_id": image_id,
                              "box": [x1, y1, x2 - x1, y2 - y1], "area": float(ann.get("area", w * h)),
                              "keypoints": kps})
    return instances


def _raw_box(value) -> tuple[float, float, float, float]:
    """A COCO bbox that mmpose's clipping may yet turn into a valid box (an empty or negative width): four finite
    numbers within any image's range, else DataError."""
    if not isinstance(value, (list, tuple)) or len(value) != 4 or any(
            isinstance(v, bool) or not isinstance(v, (int, float)) for v in value):
        raise DataError(f"bbox {str(value)[:80]} is not [x, y, w, h] (four numbers)")
    if not all(is_finite_number(v) and abs(v) <= MAX_COORD for v in value):
        raise DataError(f"bbox {str(value)[:80]} holds a value that is not finite or lies beyond any image")
    box = tuple(float(v) for v in value)
    if not all(np.isfinite(box)) or max(abs(v) for v in box) > MAX_COORD:
        raise DataError(f"bbox {list(box)} holds a value that is not finite or lies beyond any image")
    return box


def load_coco(ann_file: str | Path):
    """A COCO annotation file as pycocotools' COCO, read with mp_deploy.files' bounds (a regular file of at most
    MAX_COCO_BYTES, nesting and numbers checked); DataError names the file."""
    from pycocotools.coco import COCO  # the `train` extra

    if special_kind(ann_file) == "missing":
        raise DataError(f"{ann_file}: no such annotation file")
    data = read_json(ann_file, limit=MAX_COCO_BYTES)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or \
            not isinstance(data.get("annotations"), list):
        raise DataError(f"{ann_file}: not a COCO annotation file (needs \"images\" and \"annotations\" lists)")
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its timings
        try:
            coco = COCO()
            coco.dataset = data
            coco.createIndex()
        except (KeyError, TypeError, AttributeError) as e:
            raise DataError(f"{ann_file}: not a COCO annotation file ({type(e).__name__}: {e})") from None
    return coco


def coco_keypoints(root: str | Path, split: str, ann_file: str | Path | None = None, cfg: TopDown = TopDown(),
                   augment: PoseAugment | None | bool = None, seed: int = 0) -> PoseInstances:
    """COCO keypoints (2017 layout): `root/annotations/person_keypoints_{split}.json` and images in
    `root/{split}/`; split e.g. train2017, val2017. Ground-truth boxes are used for evaluation too."""
    root = Path(root)
    ann_file = Path(ann_file) if ann_file else root / "annotations" / f"person_keypoints_{split}.json"
    coco = load_coco(ann_file)
    augment = pick_pose_augment(augment, split.startswith("train"))
    bad: list[str] = []
    instances = coco_instances(coco, root / split, bad)
    report_bad_records(ann_file, bad)
    if not instances:
        raise DataError(f"{ann_file}: no person with a labelled keypoint and a usable box" + (
            f" ({len(bad)} bad annotation(s) left out; first: {bad[0]})" if bad else ""))
    return PoseInstances(instances, cfg, augment, seed=seed, coco=coco, bad_records=len(bad))


def pick_pose_augment(augment, default: bool) -> PoseAugment | None:
    if augment is None:
        augment = default
    if augment is True:
        return PoseAugment()
    return augment or None


def folder_instances(root: Path, split: str, num_keypoints: int, bad: list[str] | None = None) -> list[dict]:
    """Each `<split>/images/NAME` with `<split>/keypoints/NAME.json`: {"people": [{"keypoints": [[x, y, v], ...],
    "box": [x, y, w, h] (optional)}]}. Image ids are the images' positions in name order. A person record whose
    values cannot be used (keypoint_array, box_array) is left out and its reason appended to `bad`; a file that
    cannot be read at all makes its image a bad sample (named when loaded)."""
    bad = [] if bad is None else bad
    images = image_files(root / split / "images", f"the {split} split's images")
    folder = check_folder(root / split / "keypoints", f"the {split} split's keypoint files") if images else None
    instances = []
    for image_id, image in enumerate(images):
        ann_path = folder / (image.stem + ".json")
        try:
            people = read_json(ann_path)
            people = people.get("people") if isinstance(people, dict) else None
            if not isinstance(people, list):
                raise DataError(f"{ann_path}: needs \"people\": a list of person records")
        except DataError as e:
            instances.append({"file": image, "error": f"cannot use the keypoints ({e})"})
            continue
        for n, person in enumerate(people):
            try:
                if not isinstance(person, dict):
                    raise DataError("not an object with \"keypoints\"")
                kps = keypoint_array(person.get("keypoints"), num_keypoints)
                box = person.get("box")
                box = box_array(box) if box is not None else None
            except DataError as e:
                bad.append(f"{ann_path} person {n}: {e}")
                continue
            if not (kps[:, 2] > 0).any():
                continue
            box = box or keypoint_box(kps)
            instances.append({"file": image, "image_id": image_id, "box": [float(v) for v in box],
                              "keypoints": kps, "area": float(box[2] * box[3])})
    return instances


def keypoint_box(kps: np.ndarray, margin: float = 0.1) -> list[float]:
    """A box for a person given only keypoints: their extent grown by `margin` of its size on every side."""
    pts = kps[kps[:, 2] > 0, :2]
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    pad = (hi - lo) * margin
    lo, hi = lo - pad, hi + pad
    return [lo[0], lo[1], max(hi[0] - lo[0], 1.0), max(hi[1] - lo[1], 1.0)]


def pose_folder(root: str | Path, split: str, cfg: TopDown | None = None, augment: PoseAugment | None | bool = None,
                seed: int = 0) -> PoseInstances:
    """A custom pose folder (docs/data.md); dataset.json names the keypoints (COCO's 17 by default) and may give
    flip_pairs, sigmas (for OKS) and input_size."""
    root = Path(root)
    manifest = Manifest(read_manifest(root, "pose"), root / "dataset.json")
    names = manifest.names("keypoints", COCO_KEYPOINTS)
    k = len(names)
    pairs = manifest.data.get("flip_pairs", COCO_FLIP_PAIRS if names == COCO_KEYPOINTS else ())
    if not isinstance(pairs, (list, tuple)) or any(
            not isinstance(p, (list, tuple)) or len(p) != 2 or p[0] == p[1] or any(
                isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < k for i in p) for p in pairs):
        manifest.bad("flip_pairs", f"must be a list of [left, right] pairs of keypoint indices in [0, {k})")
    pairs = tuple(tuple(p) for p in pairs)
    sigmas = manifest.data.get("sigmas")
    if sigmas is not None and (not isinstance(sigmas, (list, tuple)) or len(sigmas) != k or any(
            not is_finite_number(v) or not v > 0 for v in sigmas)):
        manifest.bad("sigmas", f"must be a list of {k} positive numbers (one per keypoint)")
    upper = manifest.indices("upper_body", COCO_UPPER_BODY if names == COCO_KEYPOINTS else tuple(range(k)), k)
    input_size = manifest.size("input_size", (256, 192), multiple=TopDown.stride, lo=2 * TopDown.stride)
    if cfg is None:
        cfg = TopDown(input_size=input_size, flip_pairs=pairs, upper_body=upper)
    augment = pick_pose_augment(augment, split == "train")
    bad: list[str] = []
    instances = folder_instances(root, split, k, bad)
    report_bad_records(root / split, bad)
    if not instances:
        raise DataError(f"{root / split}: no person with a labelled keypoint" + (
            f" ({len(bad)} bad annotation(s) left out; first: {bad[0]})" if bad else ""))
    return PoseInstances(instances, cfg, augment, seed=seed, keypoint_names=names, sigmas=sigmas,
                         bad_records=len(bad))
