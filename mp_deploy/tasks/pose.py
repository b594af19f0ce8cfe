"""Human pose (17 COCO keypoints, top-down): everything pose-specific, in one place. The reference has released no
pose code, so the head, the loss and the recipe are our design (mmpose / ViTPose practice).

- presets: coco (256x192 person crops), synthetic-pose (the demo, 192x128);
- the model: heads/pose.py (MetaPromptsPose: stride-4 heatmaps from the fused prompt map); no official layout;
- the output contract: `heatmaps` (B, K, H/4, W/4); Engine.run adds `keypoints` (B, K, 3) [x, y, score] in input
  pixels, decoded as everywhere else (decode_heatmaps: mmpose's keypoints_from_heatmaps, post_process 'default':
  argmax per map, a quarter pixel towards the higher neighbour, then mapped to the crop's box);
- the inference protocol (mmpose top-down): person boxes -> aspect-fixed crops padded by 1.25 -> heatmaps ->
  decode -> image coordinates; the flip test averages the heatmaps of the flipped crop (left/right swapped back,
  shifted one pixel right as mmpose's shift_heatmap). No boxes: the whole image is the box;
- predict's files: COCO-format keypoints JSON and an overlay with the skeleton;
- training: mean squared error of the heatmaps against Gaussian targets, masked per keypoint by its visibility
  weight (SimpleBaseline, ViTPose);
- metrics: OKS AP (pycocotools) and PCK (mmpose's keypoint_pck_accuracy, normalised by the box size); the
  baseline is the mean training pose;
- data: COCO keypoints and custom folders (data/pose.py), synthetic people (data/synthetic.py).
"""
from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from mp_deploy.configs import Preset
from mp_deploy.data.keypoints import COCO_FLIP_PAIRS, COCO_KEYPOINTS, flip_permutation
from mp_deploy.errors import DataError, UsageError
from mp_deploy.inference import image_tensor, run_batched
from mp_deploy.tasks.base import OutputFile, Task, Work

# ------------------------------------------------------------------ the protocol


@dataclass(frozen=True)
class PoseProtocol:
    """input_size (h, w) of the crops; padding of the boxes; flip test with the keypoint pairs and mmpose's
    one-pixel heatmap shift; vis_threshold: keypoints whose score passes it make the person's score."""

    input_size: tuple[int, int] = (256, 192)
    padding: float = 1.25
    flip: bool = True
    flip_pairs: tuple = COCO_FLIP_PAIRS
    shift_heatmap: bool = True
    vis_threshold: float = 0.2


POSE_PROTOCOLS = {"coco": PoseProtocol(), "synthetic": PoseProtocol(input_size=(128, 96))}


def flip_back(heatmaps: torch.Tensor, flip_pairs, shift: bool) -> torch.Tensor:
    """Heatmaps of flipped crops -> the unflipped frame: mirrored, left/right swapped, optionally shifted one
    pixel to the right (mmpose's shift_heatmap, which compensates the flip's half-pixel misalignment)."""
    out = heatmaps.flip(-1)[:, flip_permutation(heatmaps.shape[1], flip_pairs)]
    if shift:
        out = torch.cat([out[..., :1], out[..., :-1]], dim=-1)
    return out


def pose_heatmaps(crops: torch.Tensor, run, protocol: PoseProtocol, max_batch: int = 8,
                  min_batch: int = 1) -> torch.Tensor:
    """Heatmaps (N, K, h/4, w/4) of crops (N, 3, h, w), averaged with the flip test's in one batch."""
    batch = torch.cat([crops, crops.flip(-1)]) if protocol.flip else crops
    heat = run_batched(run, batch, max_batch, min_batch).float()
    if protocol.flip:
        n = len(crops)
        heat = (heat[:n] + flip_back(heat[n:], protocol.flip_pairs, protocol.shift_heatmap)) * 0.5
    return heat


def decode_heatmaps(heatmaps, centers, scales) -> tuple[np.ndarray, np.ndarray]:
    """mmpose's keypoints_from_heatmaps (post_process 'default'): argmax per map, moved a quarter pixel towards
    the higher neighbour, then mapped to the image by the crop's centre and size (pixels, no rotation).
    Returns (N, K, 2) image coordinates and (N, K) maxima. The one keypoint decoder: predict, evaluation,
    Engine.run (the whole input as the crop) and the C++ library (cpp/src/task_pose.cpp) all decode this way."""
    hm = np.asarray(torch.as_tensor(heatmaps).float().cpu())
    n, k, h, w = hm.shape
    flat = hm.reshape(n, k, -1)
    idx = flat.argmax(-1)
    maxvals = np.take_along_axis(flat, idx[..., None], -1)[..., 0]
    px, py = (idx % w).astype(np.int64), (idx // w).astype(np.int64)
    coords = np.stack([px, py], -1).astype(np.float64)
    inner = (px > 1) & (px < w - 1) & (py > 1) & (py < h - 1)
    ni, ki = np.nonzero(inner)
    pxi, pyi = px[ni, ki], py[ni, ki]
    dx = hm[ni, ki, pyi, pxi + 1] - hm[ni, ki, pyi, pxi - 1]
    dy = hm[ni, ki, pyi + 1, pxi] - hm[ni, ki, pyi - 1, pxi]
    coords[ni, ki] += np.stack([np.sign(dx), np.sign(dy)], -1) * 0.25
    coords[maxvals <= 0] = -1.0  # mmpose marks them -1 before mapping to the image
    centers, scales = np.asarray(centers, np.float64).reshape(n, 2), np.asarray(scales, np.float64).reshape(n, 2)
    out = coords * (scales / np.array([w, h]))[:, None, :] + (centers - scales * 0.5)[:, None, :]
    return out, maxvals


def heatmap_keypoints(heatmaps: torch.Tensor, input_hw) -> torch.Tensor:
    """(B, K, h, w) heatmaps of whole inputs of size input_hw -> (B, K, 3) [x, y, score] in input pixels:
    decode_heatmaps with the input as the crop (centre (W / 2, H / 2), size (W, H))."""
    b = heatmaps.shape[0]
    h_in, w_in = (float(v) for v in input_hw)
    coords, maxvals = decode_heatmaps(heatmaps, np.tile([w_in / 2, h_in / 2], (b, 1)), np.tile([w_in, h_in], (b, 1)))
    out = np.concatenate([coords, maxvals[..., None]], -1).astype(np.float32)
    return torch.from_numpy(out).to(heatmaps.device)


def person_score(maxvals: np.ndarray, box_score: float, threshold: float) -> float:
    """mmpose's rescoring: box score x the mean of the keypoint scores above the threshold."""
    good = maxvals[maxvals > threshold]
    return float(box_score * good.mean()) if len(good) else 0.0


def predict_pose(image: torch.Tensor, run, boxes=None, box_scores=None,
                 protocol: PoseProtocol = PoseProtocol(), max_batch: int = 8, min_batch: int = 1) -> list[dict]:
    """People in one image (3, H, W): boxes (N, 4) [x, y, w, h] pixels (None or empty: the whole image).
    Each person: `keypoints` (K, 3) [x, y, score] in image pixels, `score`, `box`, `center`, `scale`."""
    from mp_deploy.data.pose import box_center_scale
    from mp_deploy.data.transforms import affine_matrix, warp_affine

    image = image_tensor(image)
    h_img, w_img = image.shape[-2:]
    boxes = np.asarray([[0, 0, w_img, h_img]] if boxes is None or len(boxes) == 0 else boxes, np.float64)
    scores = np.ones(len(boxes)) if box_scores is None else np.asarray(box_scores, np.float64)
    h_in, w_in = protocol.input_size
    centers, scales = zip(*(box_center_scale(b, w_in / h_in, protocol.padding) for b in boxes))
    mats = [affine_matrix(c, s, 0.0, (w_in, h_in)) for c, s in zip(centers, scales)]
    crops = warp_affine(image, mats, (w_in, h_in))
    heat = pose_heatmaps(crops, run, protocol, max_batch, min_batch)
    coords, maxvals = decode_heatmaps(heat, centers, scales)
    return [{"keypoints": np.concatenate([coords[i], maxvals[i][:, None]], 1),
             "score": person_score(maxvals[i], scores[i], protocol.vis_threshold),
             "box": boxes[i], "center": centers[i], "scale": scales[i]} for i in range(len(boxes))]


def coco_results(people: list[dict], image_id: int, category_id: int = 1) -> list[dict]:
    """predict_pose's people as COCO keypoint results (for coco_keypoint_ap)."""
    return [{"image_id": int(image_id), "category_id": category_id, "score": float(p["score"]),
             "keypoints": [float(v) for v in np.asarray(p["keypoints"]).ravel()]} for p in people]


# ------------------------------------------------------------------ metrics

COCO_STATS = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


def coco_keypoint_ap(coco_gt, results: list[dict], sigmas=None) -> dict:
    """OKS AP of keypoint results in COCO's result format ({image_id, category_id, keypoints: [x, y, score] x K
    flat, score}) against a pycocotools COCO ground truth, through COCOeval. `sigmas` (K,) for non-COCO
    keypoints. Returns COCO_STATS (nan where COCOeval has nothing to average)."""
    from pycocotools.cocoeval import COCOeval  # the `train` extra

    if not results:
        return dict.fromkeys(COCO_STATS, 0.0)
    with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints its progress and table
        dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, dt, "keypoints")
        if sigmas is not None:
            ev.params.kpt_oks_sigmas = np.asarray(sigmas, np.float64)
        ev.params.useSegm = None
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {name: (float(v) if v >= 0 else math.nan) for name, v in zip(COCO_STATS, ev.stats)}


def pck(pred, gt, visible, normalize, threshold: float = 0.05) -> float:
    """mmpose's keypoint_pck_accuracy: distance / normalize (per sample, (N, 2) for x and y), a keypoint is
    correct under `threshold`; accuracy per keypoint type over the samples where it is visible, then the mean
    over the keypoint types that are visible anywhere. pred, gt (N, K, 2), visible (N, K)."""
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    visible = np.asarray(visible, bool) & (np.asarray(normalize) > 0).all(axis=1)[:, None]
    dist = np.linalg.norm((pred - gt) / np.asarray(normalize, np.float64)[:, None, :], axis=-1)  # (N, K)
    per_joint = [(dist[visible[:, k], k] < threshold).mean() for k in range(dist.shape[1]) if visible[:, k].any()]
    return float(np.mean(per_joint)) if per_joint else 0.0


def coco_from_records(records: list[dict], keypoint_names=COCO_KEYPOINTS):
    """A pycocotools COCO ground truth made of top-down persons (image_id, image_keypoints, box, area)."""
    from pycocotools.coco import COCO  # the `train` extra

    anns, images = [], {}
    for i, r in enumerate(records):
        kps = np.asarray(r["image_keypoints"], np.float64)
        images[int(r["image_id"])] = {"id": int(r["image_id"])}
        anns.append({"id": i + 1, "image_id": int(r["image_id"]), "category_id": 1, "iscrowd": 0,
                     "keypoints": kps.ravel().tolist(), "num_keypoints": int((kps[:, 2] > 0).sum()),
                     "bbox": [float(v) for v in r["box"]], "area": float(r["area"])})
    coco = COCO()
    coco.dataset = {"images": list(images.values()), "annotations": anns,
                    "categories": [{"id": 1, "name": "person", "keypoints": list(keypoint_names)}]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


class PoseMeter:
    """COCO keypoint results and what PCK needs, gathered per person; `result()` computes OKS AP (against the
    data set's COCO ground truth when it has one, else one built from the persons seen) and PCK at
    `pck_threshold` of the box size. Mergeable across DDP ranks (the data set's COCO is not sent along)."""

    def __init__(self, coco=None, sigmas=None, keypoint_names=COCO_KEYPOINTS, pck_threshold: float = 0.05):
        self.coco, self.sigmas, self.keypoint_names = coco, sigmas, tuple(keypoint_names)
        self.pck_threshold = pck_threshold
        self.results: list[dict] = []
        self.records: list[dict] = []  # per person: image_id, image_keypoints, box, area, pred (K, 2)

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "coco"}

    def __setstate__(self, state):
        self.__dict__.update(state, coco=None)

    @property
    def images(self) -> int:
        return len(self.results)

    def update(self, sample: dict, coords: np.ndarray, maxvals: np.ndarray, vis_threshold: float) -> None:
        self.results.append({"image_id": int(sample["image_id"]), "category_id": 1,
                             "keypoints": np.concatenate([coords, maxvals[:, None]], 1).ravel().tolist(),
                             "score": person_score(maxvals, 1.0, vis_threshold)})
        self.records.append({"image_id": int(sample["image_id"]), "box": np.asarray(sample["box"], np.float64),
                             "area": float(sample["area"]), "pred": np.asarray(coords, np.float64),
                             "image_keypoints": np.asarray(sample["image_keypoints"], np.float64)})

    def merge(self, other: "PoseMeter") -> "PoseMeter":
        self.results += other.results
        self.records += other.records
        return self

    def result(self) -> dict:
        coco = self.coco if self.coco is not None else coco_from_records(self.records, self.keypoint_names)
        result = coco_keypoint_ap(coco, self.results, self.sigmas)
        if self.records:
            gt = np.array([r["image_keypoints"] for r in self.records])
            result["PCK"] = pck(np.array([r["pred"] for r in self.records]), gt[..., :2], gt[..., 2] > 0,
                                np.array([r["box"][2:4] for r in self.records]), self.pck_threshold)
        else:
            result["PCK"] = 0.0
        return result | {"instances": len(self.results), "images": len(self.results)}


# ------------------------------------------------------------------ training

def heatmap_mse(heatmaps: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared heatmap error; `weight` (B, K) masks invisible keypoints."""
    err = ((heatmaps - target) ** 2).mean(dim=(2, 3))
    if weight is not None:
        err = err * weight
    return err.mean()


def pose_baseline(train_samples, num_keypoints: int):
    """The mean training pose: each keypoint's mean crop position (over the samples that label it), as
    one-hot heatmaps at stride 4."""
    total, count = np.zeros((num_keypoints, 2)), np.zeros(num_keypoints)
    for s in train_samples:
        kps = s["keypoints"].numpy()
        seen = kps[:, 2] > 0
        total[seen] += kps[seen, :2]
        count += seen
    mean = total / np.maximum(count, 1)[:, None]

    def run(x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2] // 4, x.shape[-1] // 4
        heat = torch.zeros(len(x), num_keypoints, h, w)
        for k, (px, py) in enumerate(mean / 4):
            heat[:, k, min(max(round(py), 0), h - 1), min(max(round(px), 0), w - 1)] = 1.0
        return heat
    return run


# ------------------------------------------------------------------ predict's pictures

def draw_people(image: np.ndarray, people: list[dict], threshold: float) -> np.ndarray:
    """The image with each person's box, limbs and keypoints (those scoring above `threshold`)."""
    from PIL import Image, ImageDraw

    from mp_deploy.data.keypoints import COCO_SKELETON

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


# ------------------------------------------------------------------ the task


class PoseTask(Task):
    name = "pose"
    help = "pose (17 COCO keypoints, top-down)"
    presets = (
        # our design (no official pose model): top-down 256x192 person crops, heatmaps at stride 4
        Preset("coco", "pose", num_prompts=64, num_keypoints=17, resize_scale=0, window=(256, 192)),
        # the bundled demo: the 17 COCO keypoints on 192x128 person crops
        Preset("synthetic-pose", "pose", num_prompts=64, num_keypoints=17, resize_scale=0, window=(192, 128)),
    )
    default_preset = "coco"

    def check_preset(self, p) -> None:
        if p.num_keypoints < 1:
            raise UsageError(f"preset {p.name!r}: num_keypoints must be at least 1, got {p.num_keypoints}")

    def model_class(self):
        from mp_deploy.heads.pose import MetaPromptsPose

        return MetaPromptsPose

    # ------------------------------------------------------------ contract
    output_name, output_kind, output_stride = "heatmaps", "pose", 4
    output_fields = ("num_keypoints",)
    run_output_names = ("heatmaps", "keypoints")

    def describe_output(self, preset: dict) -> dict:
        return {"name": self.output_name, "kind": self.output_kind, "num_keypoints": preset["num_keypoints"],
                "stride": self.output_stride,
                "postprocess": "argmax per heatmap, a quarter pixel towards the higher neighbour (mmpose) -> "
                               "(x, y, score) in input pixels"}

    def output_channels(self, output: dict) -> int:
        return output["num_keypoints"]

    def run_outputs(self, raw, input_hw) -> dict:
        return {"heatmaps": raw, "keypoints": heatmap_keypoints(raw, input_hw)}

    def served_outputs(self, channels, height, width):
        return [("heatmaps", np.float32, (channels, height, width)), ("keypoints", np.float32, (channels, 3))]

    # ------------------------------------------------------------ protocol
    protocols = POSE_PROTOCOLS
    preset_protocols = {"synthetic-pose": "synthetic"}

    def tta(self, level: str) -> dict:
        return {"on": {"flip": True}, "off": {"flip": False}}.get(level, {})

    def fit_protocol(self, protocol, window, fixed, tta):
        """Crops of the network's size."""
        return replace(protocol, input_size=tuple(window), **self.tta(tta))

    def work(self, protocol, height, width, boxes=None) -> Work:
        crops = 1 if boxes is None or len(boxes) == 0 else len(boxes)  # none: the whole image is the box
        return Work(crops * (2 if protocol.flip else 1), max(height * width, math.prod(protocol.input_size)))

    def predict(self, image, run, protocol, preset, boxes=None, max_batch=8, min_batch=1) -> dict:
        boxes = None if boxes is None or len(boxes) == 0 else np.asarray(boxes, np.float64)
        boxes = None if boxes is None else boxes.reshape(len(boxes), -1)  # none: the whole image is the box
        scores = boxes[:, 4] if boxes is not None and boxes.shape[1] == 5 else None
        h, w = image.shape[-2:]
        for i, (x, y, bw, bh) in enumerate([] if boxes is None else boxes[:, :4]):
            if not (x < w and y < h and x + bw > 0 and y + bh > 0):
                raise DataError(f"box {i} [{x:g}, {y:g}, {bw:g}, {bh:g}] lies outside the {w}x{h} image")
        people = predict_pose(image, run, None if boxes is None else boxes[:, :4], scores, protocol, max_batch,
                              min_batch)
        k = preset.num_keypoints
        return {"people": people,
                "keypoints": np.array([p["keypoints"] for p in people], np.float32).reshape(-1, k, 3),
                "scores": np.array([p["score"] for p in people], np.float32),
                "boxes": np.array([p["box"] for p in people], np.float32).reshape(-1, 4)}

    def draw_threshold(self, protocol) -> float:
        return protocol.vis_threshold

    # ------------------------------------------------------------ predict's files
    outputs = {"json": OutputFile(".keypoints.json", "json"), "overlay": OutputFile(".pose.png", "png")}
    video_outputs = {"json": OutputFile(".keypoints.json", "json"), "overlay": OutputFile(".pose.mp4", "mp4")}

    def render(self, name, image, result, preset, threshold, video=False):
        return draw_people(image, result["people"], threshold) if name == "overlay" else result["people"]

    picture = "overlay"
    demo_targets = (("AP", 0.50, "min"), ("PCK", 0.60, "min"))

    def truth(self, sample):
        h, w = sample["image"].shape[-2:]  # a held-out sample is one person's crop; visible keypoints score 1
        keypoints = np.asarray(sample["keypoints"], np.float32).copy()
        keypoints[:, 2] = keypoints[:, 2] > 0
        return {"people": [{"keypoints": keypoints, "score": 1.0, "box": np.array([0, 0, w, h], np.float32)}]}

    def output_records(self, name, value, image_id, key, frame=None):
        return pose_records(value, image_id, key, frame) if name == "json" else value

    # ------------------------------------------------------------ training and evaluation
    target, target_weight = "heatmaps", "keypoint_weight"
    metrics = {"AP": True, "PCK": True}
    headline = ("AP", "PCK")

    def loss(self, state, target, weight=None) -> dict:
        return {"loss": heatmap_mse(state["output"].float(), target, weight)}

    def random_target(self, preset, batch, height, width, device=None):
        k, s = preset.num_keypoints, self.output_stride
        return torch.rand(batch, k, height // s, width // s, device=device), torch.ones(batch, k, device=device)

    def meter(self, dataset, preset, pck_threshold: float = 0.05, **options):
        return PoseMeter(getattr(dataset, "coco", None), dataset.sigmas, dataset.keypoint_names, pck_threshold)

    def evaluate_into(self, meter, samples, run, dataset, protocol=None, device=None, max_batch=8,
                      min_batch=1) -> None:
        """Top-down samples (crops of their ground-truth boxes, as mmpose's COCO evaluation with use_gt_bbox),
        batched across persons."""
        protocol = protocol or self.protocols[dataset.protocol]
        pending: list[dict] = []

        def flush():
            crops = torch.stack([s["image"] for s in pending]).to(device)
            heat = pose_heatmaps(crops, run, protocol, max_batch, min_batch)
            coords, maxvals = decode_heatmaps(heat, [s["center"].numpy() for s in pending],
                                              [s["scale"].numpy() for s in pending])
            for s, c, m in zip(pending, coords, maxvals):
                meter.update(s, c, m, protocol.vis_threshold)
            pending.clear()

        for s in samples:
            pending.append(s)
            if len(pending) * (2 if protocol.flip else 1) >= max_batch:
                flush()
        if pending:
            flush()

    def baseline(self, train_samples, preset):
        return pose_baseline(train_samples, preset.num_keypoints)

    # ------------------------------------------------------------ data
    data_sources = ("coco",)
    sample_fields = ("heatmaps", "keypoint_weight", "keypoints", "center", "scale")

    def released_dataset(self, source, root, split, **options):
        from mp_deploy.data.pose import coco_keypoints

        if source not in self.data_sources:
            return super().released_dataset(source, root, split, **options)
        return coco_keypoints(root, split, **options)

    def folder_dataset(self, root, split, **options):
        from mp_deploy.data.pose import pose_folder

        return pose_folder(root, split, **options)

    def synthetic_dataset(self, **options):
        from mp_deploy.data.synthetic import SyntheticPose

        return SyntheticPose(**options)

    def data_options(self, source, crop, train):
        if source in ("synthetic", "unseen"):  # rendered at the crop size
            return {"input_size": crop}
        if source == "coco":
            from mp_deploy.data.pose import TopDown

            return {"cfg": TopDown(input_size=crop)}
        return {}
