"""One image through the reference's inference protocol of its task (the task's Task.predict) on a Runner, to
arrays: depth (H, W) metres; labels (H, W) and confidence; people with keypoints (K, 3) [x, y, score]."""
from __future__ import annotations

import os

import numpy as np
import torch

from mp_deploy import tasks
from mp_deploy.errors import DataError, UsageError
from mp_deploy.files import read_json
from mp_deploy.images import check_rgb, read_image, to_image_tensor
from mp_deploy.prediction.runner import Runner, Source
from mp_deploy.prediction.stages import StageClock

TTA = ("auto", "on", "off")  # test-time augmentation: auto keeps the protocol's own; on / off: each task's Task.tta


def fit_protocol(task: str, preset_name: str, window: tuple[int, int], fixed: bool, tta: str):
    """The protocol of the preset's data set, run with the network's window (the task's Task.fit_protocol)."""
    if tta not in TTA:
        raise UsageError(f"--tta takes {', '.join(TTA)}, not {tta!r}")
    spec = tasks.get(task)
    return spec.fit_protocol(spec.protocol_for(preset_name), window, fixed, tta)


MAX_BOX_COORD = float(1 << 21)  # beyond any image's side (MAX_PIXELS / MIN_SIDE is 2^20)


def read_boxes(boxes) -> dict[str, np.ndarray]:
    """Person boxes per input: a dict or a JSON file {key: [[x, y, w, h] or [x, y, w, h, score], ...]}, key an
    input's path relative to the input root (a video frame: 'clip.mp4#12'). Every number finite and within
    +-2^21, w and h positive, the score in [0, 1]; UsageError naming the entry otherwise."""
    if boxes is None:
        return {}
    where = "boxes"
    if isinstance(boxes, (str, os.PathLike)):
        where = f"--boxes {boxes}"
        try:
            boxes = read_json(boxes)
        except DataError as e:
            raise UsageError(f"--boxes: {e}") from None
    if not isinstance(boxes, dict):
        raise UsageError(f"{where}: expected an object {{input: [[x, y, w, h(, score)], ...]}}")
    out = {}
    for key, value in boxes.items():
        try:  # a box without a score scores 1
            array = np.array([[*map(float, box), 1.0][:5] for box in value if len(box) in (4, 5)],
                             np.float64).reshape(-1, 5)
            ok = (len(array) == len(value) and np.isfinite(array).all() and (np.abs(array) <= MAX_BOX_COORD).all()
                  and (array[:, 2:4] > 0).all() and ((array[:, 4] >= 0) & (array[:, 4] <= 1)).all())
        except (TypeError, ValueError, OverflowError):
            ok = False
        if not ok:
            raise UsageError(f"{where}: {key!r} needs a list of [x, y, w, h] or [x, y, w, h, score] boxes: numbers "
                             f"within +-{MAX_BOX_COORD:.0f}, w and h > 0, score in [0, 1]")
        out[str(key)] = array
    return out


class Predictor:
    """A network and its task's protocol: `predictor(image)` -> arrays, `predictor.stream(images)` for a stream.

    Options are those of `Source` (engine / checkpoint / server / the demo model, preset, backend, device,
    precision, batch_size, height / width of the window) plus `tta` (auto, on, off) and `boxes` (pose)."""

    def __init__(self, source: Source | None = None, tta: str = "auto", boxes=None, **source_options):
        self.network = Runner(source or Source(**source_options))
        n = self.network
        self.task, self.preset, self.tta = n.task, n.preset, tta
        self.spec = tasks.get(n.task)
        self.protocol = fit_protocol(n.task, n.preset.name, n.window, n.fixed, tta)
        self.boxes = read_boxes(boxes)
        self.threshold = self.spec.draw_threshold(self.protocol)  # detections drawn above it (pose keypoints)
        self.clock = StageClock()

    def describe(self) -> dict:
        """What decides the outputs (resume refuses a folder made otherwise)."""
        return {"task": self.task, "preset": self.preset.name, "model": self.network.identity,
                "window": list(self.network.window), "protocol": repr(self.protocol)}

    def __call__(self, image, boxes=None) -> dict:
        """One image (RGB uint8 (H, W, 3) array, or an image file) -> its arrays."""
        rgb = read_image(image) if isinstance(image, (str, os.PathLike)) else check_rgb(image, "image")
        return self.predict(rgb, boxes)

    def stream(self, images, depth: int = 4):
        """Arrays of each image of an iterable (arrays or files, e.g. camera frames), read `depth` ahead in a
        background thread; a bad image gives {"error": message} and the stream goes on."""
        from mp_deploy.prediction.threads import background

        def read(image):
            try:
                return read_image(image) if isinstance(image, (str, os.PathLike)) else check_rgb(image, "image")
            except DataError as e:
                return e

        for rgb in background(map(read, images), depth):
            yield {"error": str(rgb)} if isinstance(rgb, DataError) else self.predict(rgb)

    def boxes_for(self, key: str):
        return self.boxes.get(key)

    def check_work(self, key: str, height: int, width: int) -> None:
        """DataError when an input of this size (with its boxes) would take more work than tasks.check_work
        allows: run on the size a file declares, before it is decoded."""
        tasks.check_work(self.task, self.protocol, height, width, self.boxes_for(key))

    def predict(self, rgb: np.ndarray, boxes=None, stopwatch=None) -> dict:
        """Arrays of one checked RGB uint8 image; `stopwatch` (StageClock.stopwatch) splits the time into
        preprocess, engine and postprocess, and is left in postprocess."""
        tasks.check_work(self.task, self.protocol, *rgb.shape[:2], boxes)  # before anything is resized or run
        own = stopwatch is None
        sw = self.clock.stopwatch() if own else stopwatch
        sw.enter("preprocess")
        x = to_image_tensor(rgb).to(self.network.device)
        n = self.network
        run, kw = (lambda batch: n.run(batch, sw)), {"max_batch": n.max_batch, "min_batch": n.min_batch}
        with torch.no_grad():
            result = self.spec.predict(x, run, self.protocol, self.preset, boxes, **kw)
        if own:
            sw.stop()
        return result
