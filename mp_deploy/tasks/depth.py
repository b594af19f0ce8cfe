"""Depth: everything depth-specific, in one place.

- presets: nyu and kitti (the reference's scripts), synthetic-depth (the bundled demo);
- the model: heads/depth.py (MetaPromptsDepth: sigmoid x max_depth, metres); the reference's checkpoint layout;
- the output contract: `depth` (B, 1, H, W) metres, 16-bit PNGs at the preset's scale;
- the inference protocol (depth/test.py): shift windows of the image height across the width (NYU 2, KITTI 16;
  interval (w - h) // (shifts - 1)) with their horizontal flips in the same batch; flipped predictions are
  flipped back and averaged with the unflipped ones, overlapping windows averaged by a coverage count. Columns
  no window covers are NaN, as in the reference (KITTI's last 9; the metrics turn NaN into min_depth) unless
  `cover_all`;
- predict's files: a colour PNG (Turbo, 0..max_depth), a 16-bit PNG, the .npy;
- training: the scale-invariant log loss (SiLog, lambda 0.5, no x10 factor) over pixels with valid ground truth;
- metrics as the reference's utils_depth/metrics.py (predictions' inf -> max, nan -> min; eval mask = gt in
  (min, max) and the Eigen (NYU) or Garg (KITTI) crop), per image then averaged over images; the baseline is the
  median training depth as a constant;
- data: NYUv2, KITTI Eigen and custom folders (data/depth.py), synthetic scenes (data/synthetic.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from mp_deploy.configs import Preset
from mp_deploy.data.transforms import resize_tensor
from mp_deploy.errors import UsageError
from mp_deploy.inference import image_tensor, run_batched
from mp_deploy.tasks.base import GoldenSpec, OfficialLayout, OutputFile, Task, Work

# ------------------------------------------------------------------ the protocol


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


def predict_depth(image: torch.Tensor, run, protocol: DepthProtocol = DepthProtocol(),
                  max_batch: int = 8, min_batch: int = 1) -> torch.Tensor:
    """Depth (1, H, W) in metres for one image (3, H, W); NaN where no window reaches (see `cover_all`)."""
    image = image_tensor(image)
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


# ------------------------------------------------------------------ metrics

DEPTH_METRICS = ("d1", "d2", "d3", "abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog")
EVAL_CROPS = ("eigen", "garg", None)


def eval_mask(gt: torch.Tensor, min_depth: float, max_depth: float, crop: str | None) -> torch.Tensor:
    """The reference's mask: gt in (min_depth, max_depth), inside the Eigen crop (rows 45:471, cols 41:601 of
    a 480x640 NYU image) or the Garg crop (rows 0.4081-0.9919, cols 0.0359-0.9641 of the KITTI image)."""
    valid = (gt > min_depth) & (gt < max_depth)
    if crop is None:
        return valid
    h, w = gt.shape[-2:]
    region = torch.zeros_like(valid)
    if crop == "eigen":
        if (h, w) != (480, 640):
            raise ValueError(f"the Eigen crop is defined on 480x640 NYU images, got {w}x{h}")
        region[..., 45:471, 41:601] = True
    elif crop == "garg":
        region[..., int(0.40810811 * h):int(0.99189189 * h), int(0.03594771 * w):int(0.96405229 * w)] = True
    else:
        raise ValueError(f"unknown eval crop {crop!r}; choose one of {EVAL_CROPS}")
    return valid & region


def prepare(pred, gt, min_depth: float, max_depth: float, crop: str | None):
    """(pred, gt, mask) as every depth metric reads them: float64, squeezed, the prediction's inf -> max_depth and
    NaN -> min_depth (the reference's), and the eval mask (`eval_mask`)."""
    pred = torch.as_tensor(pred, dtype=torch.float64).squeeze()
    gt = torch.as_tensor(gt, dtype=torch.float64).squeeze()
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and ground truth {tuple(gt.shape)} differ in shape")
    pred = torch.where(torch.isinf(pred), torch.full_like(pred, max_depth), pred)
    pred = torch.where(torch.isnan(pred), torch.full_like(pred, min_depth), pred)
    return pred, gt, eval_mask(gt, min_depth, max_depth, crop)


def masked_metrics(p: torch.Tensor, g: torch.Tensor) -> dict:
    """The nine depth metrics of the valid pixels' predictions p and ground truths g (1-d, same length)."""
    thresh = torch.maximum(g / p, p / g)
    diff, diff_log = p - g, torch.log(p) - torch.log(g)
    return {
        "d1": (thresh < 1.25).double().mean().item(),
        "d2": (thresh < 1.25 ** 2).double().mean().item(),
        "d3": (thresh < 1.25 ** 3).double().mean().item(),
        "abs_rel": (diff.abs() / g).mean().item(),
        "sq_rel": (diff ** 2 / g).mean().item(),
        "rmse": diff.pow(2).mean().sqrt().item(),
        "rmse_log": diff_log.pow(2).mean().sqrt().item(),
        "log10": (torch.log10(p) - torch.log10(g)).abs().mean().item(),
        "silog": (diff_log.pow(2).mean() - 0.5 * diff_log.mean() ** 2).sqrt().item(),
    }


def depth_metrics(pred, gt, min_depth: float = 1e-3, max_depth: float = 10.0, crop: str | None = None) -> dict | None:
    """The nine depth metrics of one image (pred and gt in metres, same shape). None when no pixel is valid
    (the reference would average a NaN in; we leave the image out and the meter counts it)."""
    pred, gt, mask = prepare(pred, gt, min_depth, max_depth, crop)
    if not mask.any():
        return None
    return masked_metrics(pred[mask], gt[mask])


def median_factor(p: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """median(g) / median(p) of the valid pixels' values: the factor `median_scale` multiplies by."""
    return g.median() / p.median().clamp_min(1e-12)


def median_scale(pred, gt, min_depth: float = 1e-3, max_depth: float = 10.0, crop: str | None = None):
    """pred x median(gt) / median(pred) over the image's valid pixels (the eval mask): the scale-free protocol of
    monocular depth papers. A constant prediction becomes the image's median ground truth. None when no pixel
    is valid."""
    pred, gt, mask = prepare(pred, gt, min_depth, max_depth, crop)
    if not mask.any():
        return None
    return pred * median_factor(pred[mask], gt[mask])


class DepthMeter:
    """Per-image depth metrics averaged over images, and the same metrics of each prediction median-scaled
    (`median_scale`) as `<metric>_ms`: the scale-free view, which a constant guess cannot game by its scale."""

    def __init__(self, min_depth: float = 1e-3, max_depth: float = 10.0, crop: str | None = None):
        self.min_depth, self.max_depth, self.crop = min_depth, max_depth, crop
        self.sums = dict.fromkeys(DEPTH_METRICS + tuple(k + "_ms" for k in DEPTH_METRICS), 0.0)
        self.count = 0
        self.empty = 0  # images with no valid pixel, left out

    def update(self, pred, gt) -> dict | None:
        pred, gt, mask = prepare(pred, gt, self.min_depth, self.max_depth, self.crop)
        if not mask.any():
            self.empty += 1
            return None
        p, g = pred[mask], gt[mask]
        # the median-scaled view: no clamp to the depth range after scaling (scale-free metrics)
        m = masked_metrics(p, g) | {k + "_ms": v for k, v in masked_metrics(p * median_factor(p, g), g).items()}
        for k, v in m.items():
            self.sums[k] += v
        self.count += 1
        return m

    def merge(self, other: "DepthMeter") -> "DepthMeter":
        """Add another meter's images (another DDP rank's share)."""
        for k in self.sums:
            self.sums[k] += other.sums[k]
        self.count += other.count
        self.empty += other.empty
        return self

    @property
    def images(self) -> int:
        return self.count

    def result(self) -> dict:
        return {k: (v / self.count if self.count else math.nan) for k, v in self.sums.items()} | {
            "images": self.count, "empty": self.empty}


# ------------------------------------------------------------------ training

def silog(pred: torch.Tensor, target: torch.Tensor, variance_focus: float = 0.5) -> torch.Tensor:
    """sqrt(mean(d^2) - 0.5 mean(d)^2), d = log(target) - log(pred) over target > 0."""
    valid = target > 0
    d = torch.log(target[valid]) - torch.log(pred[valid].clamp_min(1e-6))
    return torch.sqrt((d ** 2).mean() - variance_focus * d.mean() ** 2)


def depth_baseline(train_samples) -> callable:
    """The median of the training depths (valid pixels) as a constant prediction."""
    values = np.concatenate([s["depth"][s["depth"] > 0].numpy() for s in train_samples])
    median = float(np.median(values))
    return lambda x: torch.full((len(x), 1, *x.shape[-2:]), median)


# ------------------------------------------------------------------ predict's pictures

def depth_color(depth: np.ndarray, max_depth: float) -> np.ndarray:
    """Depth in metres -> RGB, a fixed scale 0..max_depth (the same colour means the same depth in every image
    and frame); no depth (NaN) is black."""
    from mp_deploy.colors import TURBO

    index = np.rint(np.clip(np.nan_to_num(depth, nan=0.0) / max_depth, 0, 1) * 255).astype(np.uint8)
    rgb = TURBO[index]
    rgb[~np.isfinite(depth)] = 0
    return rgb


def depth_png16(depth: np.ndarray, scale: float) -> np.ndarray:
    """Depth x scale (the preset's png16_scale: NYU mm, KITTI 1/256 m) as uint16; no depth is 0."""
    return np.clip(np.rint(np.nan_to_num(depth, nan=0.0) * scale), 0, 65535).astype(np.uint16)


# ------------------------------------------------------------------ the task


class DepthTask(Task):
    name = "depth"
    help = "depth (metres)"
    presets = (
        Preset("nyu", "depth", max_depth=10.0, resize_scale=1, window=(480, 480)),
        Preset("kitti", "depth", max_depth=80.0, resize_scale=2, png16_scale=256.0, window=(352, 352)),
        # the bundled demo: depth in the NYU range and its mm PNGs, no extra resize (windows are multiples of 64)
        Preset("synthetic-depth", "depth", max_depth=10.0, resize_scale=0, window=(128, 128)),
    )
    default_preset = "nyu"
    official = OfficialLayout(prefix="encoder.", prompts_key="meta_prompts1", wrapper="model", default_preset="nyu",
                              head_renames={"decoder.": "head.decoder.", "last_layer_depth.": "head.last_layer."})
    golden = GoldenSpec(model_word="Depth", preset="nyu", input="images", output_tag="pred_d",
                        tags=("final_prompts", "prompt_map", "pred_d"),
                        preset_fields={"max_depth": float, "resize_scale": int})

    def check_preset(self, p) -> None:
        if not (p.max_depth > 0 and p.png16_scale > 0 and p.resize_scale >= 0):
            raise UsageError(f"preset {p.name!r}: max_depth and png16_scale must be positive, resize_scale >= 0")

    def model_class(self):
        from mp_deploy.heads.depth import MetaPromptsDepth

        return MetaPromptsDepth

    # ------------------------------------------------------------ contract
    output_name, output_kind, output_stride = "depth", "depth", 1
    output_fields = ("max_depth", "png16_scale")
    run_output_names = ("depth",)

    def describe_output(self, preset: dict) -> dict:
        return {"name": self.output_name, "kind": self.output_kind, "unit": "m", "max_depth": preset["max_depth"],
                "stride": self.output_stride, "png16_scale": preset["png16_scale"]}

    def output_channels(self, output: dict) -> int:
        return 1

    def run_outputs(self, raw, input_hw) -> dict:
        return {"depth": raw}

    def served_outputs(self, channels, height, width):
        return [("depth", np.float32, (channels, height, width))]

    # ------------------------------------------------------------ protocol
    protocols = DEPTH_PROTOCOLS
    preset_protocols = {"synthetic-depth": "synthetic"}

    def tta(self, level: str) -> dict:
        return {"on": {"flip": True}, "off": {"flip": False}}.get(level, {})

    def fit_protocol(self, protocol, window, fixed, tta):
        """Windows of the network's size over the whole image (cover_all)."""
        return replace(protocol, window=tuple(window), cover_all=True, **self.tta(tta))

    def work(self, protocol, height, width, boxes=None) -> Work:
        window = protocol.window or (min(height, width),) * 2
        size = window_layout(height, width, window)
        along_w = size[1] > window[1]
        starts = window_starts(size[1] if along_w else size[0], window[1] if along_w else window[0],
                               protocol.shifts, protocol.cover_all)
        return Work(len(starts) * (2 if protocol.flip else 1), size[0] * size[1])

    def predict(self, image, run, protocol, preset, boxes=None, max_batch=8, min_batch=1) -> dict:
        return {"depth": predict_depth(image, run, protocol, max_batch, min_batch)[0].cpu().numpy()}

    # ------------------------------------------------------------ predict's files
    outputs = {"color": OutputFile(".depth.png", "png"), "png16": OutputFile(".depth16.png", "png"),
               "npy": OutputFile(".depth.npy", "npy")}
    video_outputs = {"color": OutputFile(".depth.mp4", "mp4")}

    def render(self, name, image, result, preset, threshold, video=False):
        depth = result["depth"]
        if name == "color":
            return depth_color(depth, preset.max_depth)
        return depth_png16(depth, preset.png16_scale) if name == "png16" else depth

    picture = "color"
    demo_targets = (("abs_rel_ms", 0.55, "ratio"), ("d1_ms", 0.70, "min"))

    def truth(self, sample):
        return {"depth": sample["depth"][0].numpy()}

    # ------------------------------------------------------------ training and evaluation
    target, target_weight = "depth", None
    metrics = {"rmse": False, "abs_rel": False, "d1": True, "silog": False, "abs_rel_ms": False, "d1_ms": True}
    headline = ("abs_rel", "rmse", "d1", "abs_rel_ms", "d1_ms")

    def loss(self, state, target, weight=None) -> dict:
        return {"loss": silog(state["output"].float(), target)}

    def random_target(self, preset, batch, height, width, device=None):
        return torch.rand(batch, 1, height, width, device=device) * preset.max_depth, None

    def meter(self, dataset, preset, **options):
        return DepthMeter(dataset.min_depth, dataset.max_depth, dataset.eval_crop)

    def evaluate_into(self, meter, samples, run, dataset, protocol=None, device=None, max_batch=8,
                      min_batch=1) -> None:
        protocol = protocol or self.protocols[dataset.protocol]
        for s in samples:
            meter.update(predict_depth(s["image"].to(device), run, protocol, max_batch, min_batch).cpu(), s["depth"])

    def baseline(self, train_samples, preset):
        return depth_baseline(train_samples)

    # ------------------------------------------------------------ data
    data_sources = ("nyu", "kitti")
    sample_fields = ("depth",)

    def released_dataset(self, source, root, split, **options):
        from mp_deploy.data import depth

        if source not in self.data_sources:
            return super().released_dataset(source, root, split, **options)
        return getattr(depth, source)(root, split, **options)

    def folder_dataset(self, root, split, **options):
        from mp_deploy.data.depth import depth_folder

        return depth_folder(root, split, **options)

    def synthetic_dataset(self, **options):
        from mp_deploy.data.synthetic import SyntheticDepth

        return SyntheticDepth(**options)

    def data_options(self, source, crop, train):
        if source in ("synthetic", "unseen"):  # rendered at the crop size
            return {"size": crop}
        if source in self.data_sources or (source == "folder" and train):
            return {"crop": crop}
        return {}
