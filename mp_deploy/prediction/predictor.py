"""One image through the reference's inference protocol of its task (mp_deploy.protocols) on a Network, to
arrays: depth (H, W) metres; labels (H, W) and confidence; people with keypoints (K, 3) [x, y, score]."""
from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from mp_deploy.artifacts import MAX_PIXELS
from mp_deploy.configs import DEFAULT_PRESET
from mp_deploy.data.base import read_rgb, to_image_tensor
from mp_deploy.errors import DataError, UsageError
from mp_deploy.prediction.network import Network, Source
from mp_deploy.prediction.stages import StageClock
from mp_deploy.protocols import (DEPTH_PROTOCOLS, POSE_PROTOCOLS, SEG_PROTOCOLS, predict_depth, predict_pose,
                                 seg_labels)

MIN_SIDE = 32  # smaller images hold too little to predict from: refused as bad input
PROTOCOLS = {"depth": DEPTH_PROTOCOLS, "seg": SEG_PROTOCOLS, "pose": POSE_PROTOCOLS}
# presets named otherwise than their data set's protocol; any other preset without a protocol of its name
# takes its task's default preset's
PROTOCOL_OF = {"synthetic-depth": "synthetic", "synthetic-seg": "synthetic", "synthetic-pose": "synthetic"}
# --tta on / off; auto keeps the protocol's own (depth and pose flip, segmentation single-scale)
TTA = {
    "auto": {"depth": {}, "seg": {}, "pose": {}},
    "on": {"depth": {"flip": True}, "seg": {"flip": True, "ratios": (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)},
           "pose": {"flip": True}},
    "off": {"depth": {"flip": False}, "seg": {"flip": False, "ratios": (1.0,)}, "pose": {"flip": False}},
}


def fit_protocol(task: str, preset_name: str, window: tuple[int, int], fixed: bool, tta: str):
    """The protocol of the preset's data set, run with the network's window: depth windows of that size over
    the whole image (cover_all); segmentation crops of that size at the reference's stride ratio (padded to
    it for artifacts); pose crops of that size."""
    if tta not in TTA:
        raise UsageError(f"--tta takes {', '.join(TTA)}, not {tta!r}")
    table = PROTOCOLS[task]
    key = PROTOCOL_OF.get(preset_name, preset_name if preset_name in table else DEFAULT_PRESET[task])
    protocol, extra = table[key], TTA[tta][task]
    if task == "depth":
        return replace(protocol, window=window, cover_all=True, **extra)
    if task == "seg":
        stride = tuple(max(1, round(s * w / c)) for s, w, c in zip(protocol.stride, window, protocol.crop))
        return replace(protocol, crop=window, stride=stride, pad_to_crop=fixed, **extra)
    return replace(protocol, input_size=window, **extra)


def check_image(rgb, where: str) -> np.ndarray:
    """An RGB uint8 (H, W, 3) array of a size predict takes, else DataError naming `where`."""
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        what = f"{rgb.dtype} {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise DataError(f"{where}: expected an RGB uint8 (H, W, 3) array, got {what}")
    h, w = rgb.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise DataError(f"{where}: {w}x{h} is too small (sides of at least {MIN_SIDE} pixels)")
    if h * w > MAX_PIXELS:
        raise DataError(f"{where}: {w}x{h} is more than the {MAX_PIXELS} pixels an image may have")
    return rgb


def read_image(path) -> np.ndarray:
    """An image file as RGB uint8, refused with DataError when unreadable, too small or too large."""
    return check_image(read_rgb(path), str(path))


def read_boxes(boxes) -> dict[str, np.ndarray]:
    """Person boxes per input: a dict or a JSON file {key: [[x, y, w, h] or [x, y, w, h, score], ...]}, key an
    input's path relative to the input root (a video frame: 'clip.mp4#12')."""
    if boxes is None:
        return {}
    where = "boxes"
    if isinstance(boxes, (str, os.PathLike)):
        where = str(boxes)
        try:
            boxes = json.loads(Path(boxes).read_text())
        except (OSError, ValueError) as e:
            raise UsageError(f"--boxes {where}: cannot read ({e})") from None
    if not isinstance(boxes, dict):
        raise UsageError(f"{where}: expected an object {{input: [[x, y, w, h(, score)], ...]}}")
    out = {}
    for key, value in boxes.items():
        try:  # a box without a score scores 1
            array = np.array([[*map(float, box), 1.0][:5] for box in value if len(box) in (4, 5)],
                             np.float64).reshape(-1, 5)
            ok = len(array) == len(value) and np.isfinite(array).all() and (array[:, 2:4] > 0).all()
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise UsageError(f"{where}: {key!r} needs a list of [x, y, w, h] or [x, y, w, h, score] boxes "
                             "with w, h > 0")
        out[str(key)] = array
    return out


class Predictor:
    """A network and its task's protocol: `predictor(image)` -> arrays, `predictor.stream(images)` for a stream.

    Options are those of `Source` (engine / checkpoint / server / the demo model, preset, backend, device,
    precision, batch_size, height / width of the window) plus `tta` (auto, on, off) and `boxes` (pose)."""

    def __init__(self, source: Source | None = None, tta: str = "auto", boxes=None, **source_options):
        self.network = Network(source or Source(**source_options))
        n = self.network
        self.task, self.preset, self.tta = n.task, n.preset, tta
        self.protocol = fit_protocol(n.task, n.preset.name, n.window, n.fixed, tta)
        self.boxes = read_boxes(boxes)
        self.threshold = getattr(self.protocol, "vis_threshold", 0.2)  # keypoints drawn above it
        self.clock = StageClock()

    def describe(self) -> dict:
        """What decides the outputs (resume refuses a folder made otherwise)."""
        return {"task": self.task, "preset": self.preset.name, "model": self.network.identity,
                "window": list(self.network.window), "protocol": repr(self.protocol)}

    def __call__(self, image, boxes=None) -> dict:
        """One image (RGB uint8 (H, W, 3) array, or an image file) -> its arrays."""
        rgb = read_image(image) if isinstance(image, (str, os.PathLike)) else check_image(image, "image")
        return self.predict(rgb, boxes)

    def stream(self, images, depth: int = 4):
        """Arrays of each image of an iterable (arrays or files, e.g. camera frames), read `depth` ahead in a
        background thread; a bad image gives {"error": message} and the stream goes on."""
        from mp_deploy.prediction.pipeline import background

        def read(image):
            try:
                return read_image(image) if isinstance(image, (str, os.PathLike)) else check_image(image, "image")
            except DataError as e:
                return e

        for rgb in background(map(read, images), depth):
            yield {"error": str(rgb)} if isinstance(rgb, DataError) else self.predict(rgb)

    def boxes_for(self, key: str):
        return self.boxes.get(key)

    def predict(self, rgb: np.ndarray, boxes=None, stopwatch=None) -> dict:
        """Arrays of one checked RGB uint8 image; `stopwatch` (StageClock.stopwatch) splits the time into
        preprocess, engine and postprocess, and is left in postprocess."""
        own = stopwatch is None
        sw = self.clock.stopwatch() if own else stopwatch
        sw.enter("preprocess")
        x = to_image_tensor(rgb).to(self.network.device)
        n = self.network
        run, kw = (lambda batch: n.run(batch, sw)), {"max_batch": n.max_batch, "min_batch": n.min_batch}
        with torch.no_grad():
            if self.task == "depth":
                result = {"depth": predict_depth(x, run, self.protocol, **kw)[0].cpu().numpy()}
            elif self.task == "seg":
                labels, confidence = seg_labels(x, run, self.protocol, **kw)
                dtype = np.uint8 if self.preset.num_classes <= 256 else np.uint16
                result = {"labels": labels.cpu().numpy().astype(dtype), "confidence": confidence.cpu().numpy()}
            else:
                result = self._pose(x, run, boxes, kw)
        if own:
            sw.stop()
        return result

    def _pose(self, x, run, boxes, kw) -> dict:
        boxes = None if boxes is None or len(boxes) == 0 else np.asarray(boxes, np.float64)
        boxes = None if boxes is None else boxes.reshape(len(boxes), -1)  # none: the whole image is the box
        scores = boxes[:, 4] if boxes is not None and boxes.shape[1] == 5 else None
        people = predict_pose(x, run, None if boxes is None else boxes[:, :4], scores, self.protocol, **kw)
        k = self.preset.num_keypoints
        return {"people": people,
                "keypoints": np.array([p["keypoints"] for p in people], np.float32).reshape(-1, k, 3),
                "scores": np.array([p["score"] for p in people], np.float32),
                "boxes": np.array([p["box"] for p in people], np.float32).reshape(-1, 4)}
