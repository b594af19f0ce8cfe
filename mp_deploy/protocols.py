"""The reference's inference protocols over any `run(batch) -> output` callable: an eager model, or an exported
engine that takes a fixed window and batches of 1..max_batch (`min_batch` pads the last chunk for engines with a
fixed batch). Images are float RGB (3, H, W) in [0, 1] on the device `run` wants. All windows of one image go
through `run` as one batch, cut into chunks of at most `max_batch`.

- Depth (depth/test.py): shift windows of the image height across the width (NYU 2, KITTI 16; interval
  (w - h) // (shifts - 1)), with their horizontal flips in the same batch; flipped predictions are flipped back
  and averaged with the unflipped ones, overlapping windows averaged by a coverage count. Columns no window
  covers are NaN, as in the reference (KITTI's last 9; the metrics turn NaN into min_depth) unless `cover_all`.
- Segmentation (mmseg 0.30 slide_inference): keep-ratio resize to the scale bound, crops of `crop` every
  `stride` (the last one flush with the edge), logits summed into a canvas and divided by the count, resized
  bilinearly to the original size, softmax; flips and ratios averaged as probabilities (MultiScaleFlipAug).
- Pose (mmpose top-down): person boxes -> aspect-fixed crops padded by 1.25 -> heatmaps -> argmax with the
  quarter-pixel shift towards the higher neighbour -> image coordinates; flip test averages the heatmaps of the
  flipped crop (left/right swapped back, shifted one pixel right as mmpose's shift_heatmap). No boxes: the
  whole image is the box.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from mp_deploy.data.keypoints import COCO_FLIP_PAIRS, flip_permutation
from mp_deploy.data.pose import box_center_scale
from mp_deploy.data.transforms import affine_matrix, rescale_size, resize_tensor, warp_affine

Run = Callable[[torch.Tensor], torch.Tensor]


def run_batched(run: Run, x: torch.Tensor, max_batch: int = 8, min_batch: int = 1) -> torch.Tensor:
    """run(x) in chunks of at most max_batch; a chunk below min_batch is padded by repeating its last item and
    the padding's outputs are dropped."""
    if max_batch < 1 or min_batch > max_batch:
        raise ValueError(f"need 1 <= min_batch <= max_batch, got {min_batch} and {max_batch}")
    outs = []
    for start in range(0, len(x), max_batch):
        chunk = x[start:start + max_batch]
        n = len(chunk)
        if n < min_batch:
            chunk = torch.cat([chunk, chunk[-1:].expand(min_batch - n, *chunk.shape[1:])])
        outs.append(run(chunk)[:n])
    return torch.cat(outs)


def check_image(image: torch.Tensor) -> torch.Tensor:
    if image.dim() == 4 and image.shape[0] == 1:
        image = image[0]
    if image.dim() != 3 or image.shape[0] != 3 or not image.is_floating_point():
        raise ValueError(f"expected one float RGB image (3, H, W), got {tuple(image.shape)} {image.dtype}")
    return image


# ------------------------------------------------------------------ depth

@dataclass(frozen=True)
class DepthProtocol:
    """shifts: windows along the long side (the reference's shift_size; more where they would leave gaps);
    flip: add the mirrored windows;
    window: (h, w) the run takes, None = a square of the image's short side (the reference: the height);
    cover_all: place the last window flush with the far edge (else the reference's integer interval)."""

    shifts: int = 2
    flip: bool = True
    window: tuple[int, int] | None = None
    cover_all: bool = False


DEPTH_PROTOCOLS = {
    "nyu": DepthProtocol(shifts=2, flip=True),
    "kitti": DepthProtocol(shifts=16, flip=True),
    "synthetic": DepthProtocol(shifts=1, flip=True),
}


def window_layout(h: int, w: int, window: tuple[int, int]) -> tuple[int, int]:
    """The size the image is brought to before windowing: unchanged when the window spans one side exactly and
    fits the other; else scaled (keeping the ratio) by the smallest factor at which the window fits inside,
    i.e. max(wh / h, ww / w) (so one side equals the window's). The prediction is resized back."""
    wh, ww = window
    if (h == wh and w >= ww) or (w == ww and h >= wh):
        return h, w
    s = max(wh / h, ww / w)
    return max(wh, round(h * s)), max(ww, round(w * s))


def window_starts(length: int, size: int, shifts: int, cover_all: bool) -> list[int]:
    """Window starts along one side: `shifts` windows at the reference's integer interval (length - size) //
    (shifts - 1), raised to the fewest windows that leave no gap between neighbours (ceil((length - size) /
    size) + 1) for long images; `cover_all` rounds the interval so the last window ends at the edge."""
    if length <= size:
        return [0]
    shifts = max(shifts, -(-(length - size) // size) + 1)
    if cover_all:
        return [round(i * (length - size) / (shifts - 1)) for i in range(shifts)]
    interval = (length - size) // (shifts - 1)
    return [i * interval for i in range(shifts)]


def predict_depth(image: torch.Tensor, run: Run, protocol: DepthProtocol = DepthProtocol(),
                  max_batch: int = 8, min_batch: int = 1) -> torch.Tensor:
    """Depth (1, H, W) in metres for one image (3, H, W); NaN where no window reaches (see `cover_all`)."""
    image = check_image(image)
    h, w = image.shape[-2:]
    window = protocol.window or (min(h, w), min(h, w))
    size = window_layout(h, w, window)
    x = resize_tensor(image[None], size)[0]
    wh, ww = window
    # windows slide along the side longer than the window (the width for landscape images)
    along_w = size[1] > ww
    starts = window_starts(size[1] if along_w else size[0], ww if along_w else wh, protocol.shifts,
                           protocol.cover_all)
    crops = [x[:, :, s:s + ww] if along_w else x[:, s:s + wh, :] for s in starts]
    batch = torch.stack(crops)
    if protocol.flip:
        batch = torch.cat([batch, batch.flip(-1)])
    pred = run_batched(run, batch, max_batch, min_batch).float()
    pred = resize_tensor(pred, window)  # a run may answer at another size (e.g. a multiple of 8)
    n = len(crops)
    if protocol.flip:
        pred = (pred[:n] + pred[n:].flip(-1)) / 2.0
    canvas = torch.zeros((1, *size), dtype=pred.dtype, device=pred.device)
    count = torch.zeros_like(canvas)
    for s, p in zip(starts, pred):
        region = (slice(None), slice(None), slice(s, s + ww)) if along_w else (slice(None), slice(s, s + wh))
        canvas[region] += p
        count[region] += 1
    out = canvas / count  # 0 / 0 = NaN where uncovered, as the reference
    return resize_tensor(out[None], (h, w))[0]


# ------------------------------------------------------------------ segmentation

@dataclass(frozen=True)
class SegProtocol:
    """scale: mmseg's img_scale (long, short) bound of the keep-ratio resize; mode slide or whole; crop (h, w)
    and stride (h, w) of the slide; ratios and flip: multi-scale/flip test (probabilities averaged);
    pad_to_crop: for runs that take exactly `crop`, pad smaller images with zeros (mmseg feeds them as they are)
    and cut the logits back."""

    scale: tuple[int, int] = (2048, 512)
    mode: str = "slide"
    crop: tuple[int, int] = (512, 512)
    stride: tuple[int, int] = (341, 341)
    ratios: tuple[float, ...] = (1.0,)
    flip: bool = False
    pad_to_crop: bool = False


SEG_PROTOCOLS = {
    "ade20k": SegProtocol(scale=(2048, 512), crop=(512, 512), stride=(341, 341)),
    "cityscapes": SegProtocol(scale=(2048, 1024), crop=(1024, 1024), stride=(512, 512)),
    "cityscapes-mapillary": SegProtocol(scale=(2048, 1024), crop=(1024, 1024), stride=(512, 512)),
    "synthetic": SegProtocol(scale=(512, 128), crop=(128, 128), stride=(85, 85)),
}


def slide_boxes(h: int, w: int, crop: tuple[int, int], stride: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """mmseg's slide grid: (y1, y2, x1, x2) per crop; the last row/column is moved back to end at the edge."""
    h_grids = max(h - crop[0] + stride[0] - 1, 0) // stride[0] + 1
    w_grids = max(w - crop[1] + stride[1] - 1, 0) // stride[1] + 1
    boxes = []
    for i in range(h_grids):
        for j in range(w_grids):
            y2, x2 = min(i * stride[0] + crop[0], h), min(j * stride[1] + crop[1], w)
            boxes.append((max(y2 - crop[0], 0), y2, max(x2 - crop[1], 0), x2))
    return boxes


def seg_logits(views: torch.Tensor, run: Run, protocol: SegProtocol, max_batch: int, min_batch: int) -> torch.Tensor:
    """Logits (V, K, h, w) of V same-size views: whole, or the slide grid's crops of all views in one batch."""
    h, w = views.shape[-2:]
    if protocol.mode == "whole":
        return run_batched(run, views, max_batch, min_batch).float()
    if protocol.mode != "slide":
        raise ValueError(f"unknown segmentation mode {protocol.mode!r}; choose slide or whole")
    boxes = slide_boxes(h, w, protocol.crop, protocol.stride)
    crops = torch.stack([v[:, y1:y2, x1:x2] for v in views for y1, y2, x1, x2 in boxes])
    ch, cw = crops.shape[-2:]
    if protocol.pad_to_crop and (ch, cw) != tuple(protocol.crop):
        crops = F.pad(crops, (0, protocol.crop[1] - cw, 0, protocol.crop[0] - ch))
    logits = run_batched(run, crops, max_batch, min_batch).float()
    logits = resize_tensor(logits, crops.shape[-2:])[..., :ch, :cw]
    out = torch.zeros((len(views), logits.shape[1], h, w), dtype=logits.dtype, device=logits.device)
    count = torch.zeros((1, 1, h, w), dtype=logits.dtype, device=logits.device)
    for k, (y1, y2, x1, x2) in enumerate(boxes):
        count[..., y1:y2, x1:x2] += 1
        for v in range(len(views)):
            out[v, :, y1:y2, x1:x2] += logits[v * len(boxes) + k]
    return out / count


def _seg_views(image: torch.Tensor, run: Run, protocol: SegProtocol, max_batch: int, min_batch: int):
    """Per view (ratio x flip): its logits at the resized scale (K, h', w') and whether it is flipped."""
    h, w = image.shape[-2:]
    for ratio in protocol.ratios:
        scale = (int(protocol.scale[0] * ratio), int(protocol.scale[1] * ratio))
        x = resize_tensor(image[None], rescale_size(h, w, scale))
        views = torch.cat([x, x.flip(-1)]) if protocol.flip else x
        for i, logits in enumerate(seg_logits(views, run, protocol, max_batch, min_batch)):
            yield logits, i == 1


def predict_seg(image: torch.Tensor, run: Run, protocol: SegProtocol = SegProtocol(), max_batch: int = 8,
                min_batch: int = 1) -> torch.Tensor:
    """Class probabilities (K, H, W) for one image (3, H, W); argmax(0) gives the label map (seg_labels gives it
    without holding K full-size maps)."""
    image = check_image(image)
    h, w = image.shape[-2:]
    total, n = None, 0
    for logits, flipped in _seg_views(image, run, protocol, max_batch, min_batch):
        probs = resize_tensor(logits[None], (h, w))[0].softmax(dim=0)
        probs = probs.flip(-1) if flipped else probs
        total, n = (probs if total is None else total + probs), n + 1
    return total / n


def seg_labels(image: torch.Tensor, run: Run, protocol: SegProtocol = SegProtocol(), max_batch: int = 8,
               min_batch: int = 1, budget_bytes: int = 256 << 20) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels (H, W) int64, their probability (H, W)) = predict_seg(...).max(0), a few classes at a time: a
    150-class map of a 12-megapixel photo would otherwise need 7 GB. Each view's softmax normaliser
    (log-sum-exp over the classes, (H, W)) is found first, then the classes' averaged probabilities in chunks."""
    image = check_image(image)
    h, w = image.shape[-2:]
    views = list(_seg_views(image, run, protocol, max_batch, min_batch))
    classes = views[0][0].shape[0]
    chunk = max(1, min(classes, budget_bytes // (4 * h * w)))

    def full(logits, flipped, lo):  # classes lo.. of one view at the image's size
        out = resize_tensor(logits[None, lo:lo + chunk], (h, w))[0]
        return out.flip(-1) if flipped else out

    norms = []
    for logits, flipped in views:
        lse = None
        for lo in range(0, classes, chunk):
            part = torch.logsumexp(full(logits, flipped, lo), dim=0)
            lse = part if lse is None else torch.logaddexp(lse, part)
        norms.append(lse)
    best = torch.full((h, w), -1.0, dtype=torch.float32, device=image.device)
    labels = torch.zeros((h, w), dtype=torch.int64, device=image.device)
    for lo in range(0, classes, chunk):
        probs = sum((full(logits, flipped, lo) - lse).exp() for (logits, flipped), lse in zip(views, norms))
        value, index = (probs / len(views)).max(0)
        better = value > best  # strictly: the first class wins ties, as argmax
        best, labels = torch.where(better, value, best), torch.where(better, index + lo, labels)
    return labels, best


# ------------------------------------------------------------------ pose

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


def pose_heatmaps(crops: torch.Tensor, run: Run, protocol: PoseProtocol, max_batch: int = 8,
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
    Returns (N, K, 2) image coordinates and (N, K) maxima."""
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


def person_score(maxvals: np.ndarray, box_score: float, threshold: float) -> float:
    """mmpose's rescoring: box score x the mean of the keypoint scores above the threshold."""
    good = maxvals[maxvals > threshold]
    return float(box_score * good.mean()) if len(good) else 0.0


def predict_pose(image: torch.Tensor, run: Run, boxes=None, box_scores=None,
                 protocol: PoseProtocol = PoseProtocol(), max_batch: int = 8, min_batch: int = 1) -> list[dict]:
    """People in one image (3, H, W): boxes (N, 4) [x, y, w, h] pixels (None or empty: the whole image).
    Each person: `keypoints` (K, 3) [x, y, score] in image pixels, `score`, `box`, `center`, `scale`."""
    image = check_image(image)
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
    """predict_pose's people as COCO keypoint results (for metrics.coco_keypoint_ap)."""
    return [{"image_id": int(image_id), "category_id": category_id, "score": float(p["score"]),
             "keypoints": [float(v) for v in np.asarray(p["keypoints"]).ravel()]} for p in people]
