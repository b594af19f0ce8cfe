"""Predict depth, segmentation or pose on your own images, folders and videos, with any backend.

    import mp_deploy
    depth = mp_deploy.predict(rgb, task="depth")["depth"]              # one RGB uint8 (H, W, 3) array
    results = mp_deploy.predict("photos/", task="seg", output="out/")  # {input key: arrays}, files written
    for p in mp_deploy.predict_iter("clip.mp4", engine="depth.onnx"):  # a stream: one Prediction per frame
        ...
    predictor = mp_deploy.Predictor(checkpoint="nyu.safetensors")      # load once, call many times
    for arrays in predictor.stream(camera_frames): ...

Options (the CLI's flags): task, engine, checkpoint, server, server_model, preset, backend, device, precision,
batch_size, height, width (runner.Source), tta, boxes (Predictor); and for paths output, outputs, resume,
shard. See docs/predict.md.
"""
from __future__ import annotations

import logging
import os
from typing import Iterator

import numpy as np

from mp_deploy.prediction.inputs import parse_shard
from mp_deploy.prediction.job import output_folder, plan, write_manifest
from mp_deploy.prediction.runner import Source
from mp_deploy.prediction.pipeline import Pipeline, Prediction
from mp_deploy.prediction.predictor import Predictor

log = logging.getLogger("mp_deploy.predict")


def predict_iter(inputs, output=None, *, outputs=None, resume: bool = False, shard: str = "0/1",
                 predictor: Predictor | None = None, tta: str = "auto", boxes=None, **source) -> Iterator[Prediction]:
    """One Prediction per image or video frame of `inputs` (an image, a video or a folder), in order; a bad
    input gives a Prediction with `error` and the rest goes on. With `output`, each input's files are written
    there as by the CLI (`outputs`: which, default all; `resume`: skip inputs whose files are all there)."""
    predictor = predictor or Predictor(Source(**source), tta=tta, boxes=boxes)
    folder = output_folder(output) if output is not None else None
    pipeline = Pipeline(predictor, folder, tuple(outputs) if outputs else None)
    job = plan(inputs, pipeline, parse_shard(shard), resume)
    if folder is not None:
        write_manifest(folder, predictor.describe() | {"outputs": list(pipeline.outputs or [])}, resume)
    yield from pipeline(job.items)


def predict(inputs, output=None, *, predictor: Predictor | None = None, tta: str = "auto", boxes=None,
            **options):
    """Arrays: for one RGB uint8 (H, W, 3) array, its dict (depth: `depth`; seg: `labels`, `confidence`; pose:
    `people`, `keypoints`, `scores`, `boxes`); for a path, {input key: dict} ({key: [dict per frame]} for a
    video), bad inputs logged and left out. Options as predict_iter."""
    if isinstance(inputs, np.ndarray):
        if output is not None:
            raise TypeError("predict writes files for paths only; for an array, write its arrays yourself")
        return (predictor or Predictor(Source(**options), tta=tta, boxes=boxes))(inputs)
    if not isinstance(inputs, (str, os.PathLike)):
        raise TypeError(f"predict takes an image array or a path, got {type(inputs).__name__} "
                        "(for a stream of images use Predictor(...).stream)")
    results: dict = {}
    for p in predict_iter(inputs, output, predictor=predictor, tta=tta, boxes=boxes, **options):
        if p.error:
            log.warning(p.error)
        elif p.frame is None:
            results[p.key] = p.result
        else:
            results.setdefault(p.key, []).append(p.result)
    return results


__all__ = ["predict", "predict_iter", "Predictor", "Prediction", "Source"]
