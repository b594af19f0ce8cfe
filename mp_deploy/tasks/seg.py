"""Semantic segmentation: everything segmentation-specific, in one place.

- presets: ade20k, cityscapes, cityscapes-mapillary (R = 1) (the reference's configs), synthetic-seg (the demo);
- the model: heads/seg.py (MetaPromptsSeg: per-level prompt maps, UPerHead, FCN auxiliary head); the
  reference's (mmcv) checkpoint layout;
- the output contract: `logits` (B, K, H, W); Engine.run adds their argmax `labels`;
- the inference protocol (mmseg 0.30 slide_inference): keep-ratio resize to the scale bound, crops of `crop`
  every `stride` (the last one flush with the edge), logits summed into a canvas and divided by the count,
  resized bilinearly to the original size, softmax; flips and ratios averaged as probabilities
  (MultiScaleFlipAug);
- predict's files: a palette PNG, an overlay, a label PNG;
- training: cross-entropy + Lovasz-softmax (mmseg LovaszLoss: multi-class, present classes, over the whole batch),
  both weight 1.0, on the decode head's logits; cross-entropy x 0.4 on the auxiliary FCN head's;
- metrics: mmseg's mIoU, mAcc, aAcc (areas summed over the data set); the baseline is the most frequent training
  class everywhere;
- data: ADE20K, Cityscapes and custom folders (data/seg.py), synthetic scenes (data/synthetic.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from mp_deploy.configs import Preset
from mp_deploy.data.transforms import rescale_size, resize_tensor
from mp_deploy.errors import UsageError
from mp_deploy.inference import image_tensor, run_batched
from mp_deploy.tasks.base import GoldenSpec, OfficialLayout, OutputFile, Task, Work

IGNORE_INDEX = 255
AUX_WEIGHT = 0.4  # the auxiliary FCN head's cross-entropy weight (the reference's configs)

# ------------------------------------------------------------------ the protocol


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


def seg_logits(views: torch.Tensor, run, protocol: SegProtocol, max_batch: int, min_batch: int) -> torch.Tensor:
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


def _seg_views(image: torch.Tensor, run, protocol: SegProtocol, max_batch: int, min_batch: int):
    """Per view (ratio x flip): its logits at the resized scale (K, h', w') and whether it is flipped."""
    h, w = image.shape[-2:]
    for ratio in protocol.ratios:
        scale = (int(protocol.scale[0] * ratio), int(protocol.scale[1] * ratio))
        x = resize_tensor(image[None], rescale_size(h, w, scale))
        views = torch.cat([x, x.flip(-1)]) if protocol.flip else x
        for i, logits in enumerate(seg_logits(views, run, protocol, max_batch, min_batch)):
            yield logits, i == 1


def predict_seg(image: torch.Tensor, run, protocol: SegProtocol = SegProtocol(), max_batch: int = 8,
                min_batch: int = 1) -> torch.Tensor:
    """Class probabilities (K, H, W) for one image (3, H, W); argmax(0) gives the label map (seg_labels gives it
    without holding K full-size maps)."""
    image = image_tensor(image)
    h, w = image.shape[-2:]
    total, n = None, 0
    for logits, flipped in _seg_views(image, run, protocol, max_batch, min_batch):
        probs = resize_tensor(logits[None], (h, w))[0].softmax(dim=0)
        probs = probs.flip(-1) if flipped else probs
        total, n = (probs if total is None else total + probs), n + 1
    return total / n


def seg_labels(image: torch.Tensor, run, protocol: SegProtocol = SegProtocol(), max_batch: int = 8,
               min_batch: int = 1, budget_bytes: int = 256 << 20) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels (H, W) int64, their probability (H, W)) = predict_seg(...).max(0), a few classes at a time: a
    150-class map of a 12-megapixel photo would otherwise need 7 GB. Each view's softmax normaliser
    (log-sum-exp over the classes, (H, W)) is found first, then the classes' averaged probabilities in chunks."""
    image = image_tensor(image)
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


# ------------------------------------------------------------------ metrics

class SegMeter:
    """mmseg's mIoU: per-class intersection and union areas summed over all images, IoU = I / U per class,
    mIoU = the mean over classes whose IoU is not nan (classes never labelled nor predicted); also per-class
    accuracy (I / label area), mAcc and aAcc (all intersections / all labelled pixels). Labels equal to
    `ignore_index` are left out, and so are values outside [0, num_classes) (as torch.histc does)."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.intersect = np.zeros(num_classes, np.float64)
        self.union = np.zeros(num_classes, np.float64)
        self.pred_area = np.zeros(num_classes, np.float64)
        self.label_area = np.zeros(num_classes, np.float64)
        self.images = 0

    def area(self, values: np.ndarray) -> np.ndarray:
        values = values[(values >= 0) & (values < self.num_classes)]
        return np.bincount(values, minlength=self.num_classes)[: self.num_classes].astype(np.float64)

    def update(self, pred, labels) -> None:
        pred = np.asarray(torch.as_tensor(pred).cpu()).astype(np.int64).ravel()
        labels = np.asarray(torch.as_tensor(labels).cpu()).astype(np.int64).ravel()
        if pred.shape != labels.shape:
            raise ValueError(f"prediction of {pred.size} pixels against labels of {labels.size}")
        keep = labels != self.ignore_index
        pred, labels = pred[keep], labels[keep]
        inter = self.area(pred[pred == labels])
        p_area, l_area = self.area(pred), self.area(labels)
        self.intersect += inter
        self.pred_area += p_area
        self.label_area += l_area
        self.union += p_area + l_area - inter
        self.images += 1

    def merge(self, other: "SegMeter") -> "SegMeter":
        """Add another meter's areas (another DDP rank's share)."""
        for name in ("intersect", "union", "pred_area", "label_area", "images"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self

    def result(self) -> dict:
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = self.intersect / self.union
            acc = self.intersect / self.label_area
            a_acc = self.intersect.sum() / self.label_area.sum()
        return {"mIoU": float(np.nanmean(iou)) if np.isfinite(iou).any() else math.nan,
                "mAcc": float(np.nanmean(acc)) if np.isfinite(acc).any() else math.nan,
                "aAcc": float(a_acc), "IoU": iou.tolist(), "Acc": acc.tolist(), "images": self.images}


# ------------------------------------------------------------------ training

def lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovasz extension of the Jaccard loss w.r.t. sorted errors (Berman et al. 2018, Alg. 1)."""
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1 - gt_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    if len(gt_sorted) > 1:
        jaccard[1:] = jaccard[1:] - jaccard[:-1]
    return jaccard


def lovasz_softmax(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Multi-class Lovasz-softmax over every valid pixel of the batch, averaged over the classes present."""
    probs = logits.softmax(1).permute(0, 2, 3, 1).reshape(-1, logits.shape[1])
    labels = labels.reshape(-1)
    valid = labels != ignore_index
    probs, labels = probs[valid], labels[valid]
    if labels.numel() == 0:
        return logits.sum() * 0.0
    losses = []
    for c in labels.unique():
        fg = (labels == c).float()
        errors = (fg - probs[:, c]).abs()
        errors_sorted, perm = torch.sort(errors, descending=True)
        losses.append(torch.dot(errors_sorted, lovasz_grad(fg[perm])))
    return torch.stack(losses).mean()


def seg_loss(logits: torch.Tensor, aux_logits: torch.Tensor | None, labels: torch.Tensor,
             ignore_index: int = IGNORE_INDEX) -> dict[str, torch.Tensor]:
    """-> {"ce", "lovasz", "aux_ce", "loss"}; logits are resized to the labels (bilinear), as mmseg does."""
    logits = resize_tensor(logits, labels.shape[-2:])
    parts = {"ce": F.cross_entropy(logits, labels, ignore_index=ignore_index),
             "lovasz": lovasz_softmax(logits, labels, ignore_index)}
    if aux_logits is not None:
        parts["aux_ce"] = AUX_WEIGHT * F.cross_entropy(resize_tensor(aux_logits, labels.shape[-2:]), labels,
                                                       ignore_index=ignore_index)
    parts["loss"] = sum(parts.values())
    return parts


def seg_baseline(train_samples, num_classes: int):
    """The most frequent training class at every pixel."""
    counts = np.zeros(num_classes)
    for s in train_samples:
        labels = s["labels"].numpy().ravel()
        counts += np.bincount(labels[labels < num_classes], minlength=num_classes)[:num_classes]
    majority = int(counts.argmax())
    return lambda x: F.one_hot(torch.full((len(x), *x.shape[-2:]), majority), num_classes).permute(0, 3, 1, 2).float()


# ------------------------------------------------------------------ the task


class SegTask(Task):
    name = "seg"
    help = "seg (semantic segmentation)"
    presets = (
        Preset("ade20k", "seg", num_prompts=150, num_classes=150, window=(512, 512)),
        Preset("cityscapes", "seg", num_prompts=150, num_classes=19, dropout=0.1, window=(1024, 1024)),
        # Cityscapes model pretrained on Mapillary: one refinement step (reference configs/cityscapes_extra*.py)
        Preset("cityscapes-mapillary", "seg", refine_steps=1, num_prompts=150, num_classes=19, dropout=0.1,
               window=(1024, 1024)),
        # the bundled demo: the 7 classes of the synthetic scenes
        Preset("synthetic-seg", "seg", num_prompts=150, num_classes=7, window=(128, 128)),
    )
    default_preset = "ade20k"
    official = OfficialLayout(prefix="", prompts_key="meta_prompts", wrapper="state_dict", default_preset="ade20k",
                              preset_from_shapes={"decode_head.conv_seg.weight": ("num_classes", 0)})
    # the segmentation golden file stores the backbone and the prompt maps (its checkpoint has no heads); its
    # input is already in [-1, 1] (the reference's extract_feat input)
    golden = GoldenSpec(model_word="Seg", preset="ade20k", input="encoder_input",
                        tags=tuple(f"prompt_map{i}" for i in range(4)), heads_stored=False)

    def check_preset(self, p) -> None:
        if p.num_classes < 1:
            raise UsageError(f"preset {p.name!r}: num_classes must be at least 1, got {p.num_classes}")

    def model_class(self):
        from mp_deploy.heads.seg import MetaPromptsSeg

        return MetaPromptsSeg

    # ------------------------------------------------------------ contract
    output_name, output_kind, output_stride = "logits", "segmentation", 1
    output_fields = ("num_classes",)
    run_output_names = ("logits", "labels")

    def describe_output(self, preset: dict) -> dict:
        return {"name": self.output_name, "kind": self.output_kind, "num_classes": preset["num_classes"],
                "stride": self.output_stride, "postprocess": "argmax over classes"}

    def output_channels(self, output: dict) -> int:
        return output["num_classes"]

    def run_outputs(self, raw, input_hw) -> dict:
        return {"logits": raw, "labels": raw.argmax(1)}

    def served_outputs(self, channels, height, width):
        return [("logits", np.float32, (channels, height, width)), ("labels", np.int64, (height, width))]

    # ------------------------------------------------------------ protocol
    protocols = SEG_PROTOCOLS
    preset_protocols = {"synthetic-seg": "synthetic"}

    def tta(self, level: str) -> dict:
        return {"on": {"flip": True, "ratios": (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)},
                "off": {"flip": False, "ratios": (1.0,)}}.get(level, {})

    def fit_protocol(self, protocol, window, fixed, tta):
        """Crops of the network's size at the reference's stride ratio (padded to it for artifacts)."""
        stride = tuple(max(1, round(s * w / c)) for s, w, c in zip(protocol.stride, window, protocol.crop))
        return replace(protocol, crop=tuple(window), stride=stride, pad_to_crop=fixed, **self.tta(tta))

    def work(self, protocol, height, width, boxes=None) -> Work:
        windows = pixels = 0
        for ratio in protocol.ratios:
            h, w = rescale_size(height, width, (int(protocol.scale[0] * ratio), int(protocol.scale[1] * ratio)))
            per_view = 1 if protocol.mode == "whole" else len(slide_boxes(h, w, protocol.crop, protocol.stride))
            windows += per_view * (2 if protocol.flip else 1)
            pixels = max(pixels, h * w)
        return Work(windows, pixels)

    def predict(self, image, run, protocol, preset, boxes=None, max_batch=8, min_batch=1) -> dict:
        labels, confidence = seg_labels(image, run, protocol, max_batch, min_batch)
        dtype = np.uint8 if preset.num_classes <= 256 else np.uint16
        return {"labels": labels.cpu().numpy().astype(dtype), "confidence": confidence.cpu().numpy()}

    # ------------------------------------------------------------ predict's files
    outputs = {"palette": OutputFile(".seg.png", "palette-png"), "overlay": OutputFile(".overlay.png", "png"),
               "labels": OutputFile(".labels.png", "png")}
    video_outputs = {"palette": OutputFile(".seg.mp4", "mp4"), "overlay": OutputFile(".overlay.mp4", "mp4")}

    def render(self, name, image, result, preset, threshold, video=False):
        from mp_deploy.colors import label_colors, overlay

        labels = result["labels"]
        if name == "overlay":
            return overlay(image, label_colors(labels))
        return label_colors(labels) if video and name == "palette" else labels

    picture = "overlay"
    demo_targets = (("mIoU", 0.60, "min"),)

    def truth(self, sample):
        return {"labels": sample["labels"].numpy()}

    # ------------------------------------------------------------ training and evaluation
    target, target_weight = "labels", None
    metrics = {"mIoU": True, "aAcc": True, "mAcc": True}
    headline = ("mIoU", "mAcc", "aAcc")

    def loss(self, state, target, weight=None) -> dict:
        aux = state.get("aux_output")
        return seg_loss(state["output"].float(), aux.float() if aux is not None else None, target)

    def random_target(self, preset, batch, height, width, device=None):
        return torch.randint(0, preset.num_classes, (batch, height, width), device=device), None

    def meter(self, dataset, preset, **options):
        return SegMeter(preset.num_classes)

    def evaluate_into(self, meter, samples, run, dataset, protocol=None, device=None, max_batch=8,
                      min_batch=1) -> None:
        protocol = protocol or self.protocols[dataset.protocol]
        for s in samples:
            labels, _ = seg_labels(s["image"].to(device), run, protocol, max_batch, min_batch)
            meter.update(labels.cpu(), s["labels"])

    def baseline(self, train_samples, preset):
        return seg_baseline(train_samples, preset.num_classes)

    # ------------------------------------------------------------ data
    data_sources = ("ade20k", "cityscapes")
    sample_fields = ("labels",)

    def released_dataset(self, source, root, split, **options):
        from mp_deploy.data import seg

        if source not in self.data_sources:
            return super().released_dataset(source, root, split, **options)
        return getattr(seg, source)(root, split, **options)

    def folder_dataset(self, root, split, **options):
        from mp_deploy.data.seg import seg_folder

        return seg_folder(root, split, **options)

    def synthetic_dataset(self, **options):
        from mp_deploy.data.synthetic import SyntheticSeg

        return SyntheticSeg(**options)

    def data_options(self, source, crop, train):
        return {"size": crop} if source in ("synthetic", "unseen") else {}  # rendered at the crop size
