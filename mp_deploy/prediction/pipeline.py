"""Inputs through a Predictor into output files, with decoding and writing beside the engine:

    reader thread (decode, a few inputs ahead) -> main thread (preprocess, engine, postprocess, render)
    -> writer thread (PNG / npy / JSON encoding, atomic writes); a video's frames go to encoder threads.

A bad input (unreadable, corrupt, too small or large, a video that ends early, an output that cannot be
written) gives one line naming it and the cause and the run goes on; its other outputs stay whole or absent.
"""
from __future__ import annotations

import errno
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from mp_deploy import tasks
from mp_deploy.errors import DataError, MpDeployError, UsageError
from mp_deploy.images import check_rgb, image_size, read_image
from mp_deploy.prediction.inputs import Item
from mp_deploy.prediction.outputs import output_paths, write_output
from mp_deploy.prediction.predictor import Predictor
from mp_deploy.prediction.stages import StageClock
from mp_deploy.prediction.threads import background
from mp_deploy.prediction.video import VideoReader, VideoSink

READ_AHEAD = 4  # decoded inputs waiting for the engine
WRITE_BEHIND = 16  # rendered outputs waiting for the writer


@dataclass
class Prediction:
    key: str  # the input, relative to the input root
    frame: int | None = None  # a video's frame, None for an image
    result: dict | None = None  # the arrays; None when it failed
    error: str | None = None  # one line naming the input and the cause


# ------------------------------------------------------------------ the writer thread

class Writer:
    """Output files written by one background thread, in order; a failure is kept as (key, line)."""

    def __init__(self, clock: StageClock, depth: int = WRITE_BEHIND):
        self.clock, self.jobs, self.failures = clock, queue.Queue(maxsize=depth), queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="predict-writer", daemon=True)
        self.thread.start()

    def submit(self, key: str, path: Path, format: str, value) -> None:
        self.jobs.put((key, path, format, value))

    def close(self) -> None:
        self.jobs.put(None)
        self.thread.join()

    def failed(self) -> list[tuple[str, str]]:
        out = []
        while not self.failures.empty():
            out.append(self.failures.get())
        return out

    def _run(self) -> None:
        while (job := self.jobs.get()) is not None:
            key, path, format, value = job
            try:
                with self.clock.timed("write"):
                    write_output(path, format, value)
            except Exception as e:  # a full disk, a folder made read-only: this input fails, the run goes on
                self.failures.put((key, f"{path}: cannot write ({_cause(e)})"))


def _cause(e: Exception) -> str:
    if isinstance(e, OSError):
        if e.errno == errno.ENOSPC or (e.errno is None and "requested and" in str(e)):  # numpy's short write
            return "no space left on the device"
        return e.strerror or str(e)
    return str(e) if isinstance(e, MpDeployError) else f"{type(e).__name__}: {e}"


# ------------------------------------------------------------------ reading

@dataclass
class Unit:
    """What the reader hands on: an image, a video's start / frame / end, or an input that failed to open."""

    item: Item
    kind: str  # image, start, frame, end, error
    rgb: np.ndarray | None = None
    frame: int | None = None
    video: VideoReader | None = None
    error: str | None = None


def read_units(items: list[Item], clock: StageClock, check=None) -> Iterator[Unit]:
    """Each input decoded; `check(key, height, width)` (the predictor's work check) runs on the size its header
    declares, before anything is decoded, and a DataError from it fails the input."""
    for item in items:
        if not item.video:
            try:
                if check is not None:
                    _checked(check, item, image_size(item.path))
                with clock.timed("decode"):
                    rgb = read_image(item.path)
                yield Unit(item, "image", rgb=rgb)
            except DataError as e:
                yield Unit(item, "error", error=str(e))
            continue
        try:
            video = VideoReader(item.path)
            if check is not None:
                try:
                    _checked(check, item, video.size)
                except DataError:
                    video.close()
                    raise
        except DataError as e:
            yield Unit(item, "error", error=str(e))
            continue
        yield Unit(item, "start", video=video)
        frames, k = iter(video), 0
        while True:
            with clock.timed("decode"):
                rgb = next(frames, None)
            if rgb is None:
                break
            yield Unit(item, "frame", rgb=rgb, frame=k)
            k += 1
        yield Unit(item, "end", video=video, frame=k)


def _checked(check, item: Item, size: tuple[int, int]) -> None:
    try:
        check(item.key, *size)
    except DataError as e:
        raise DataError(f"{item.path}: {e}") from None


# ------------------------------------------------------------------ the run

@dataclass
class Pipeline:
    """Inputs through `predictor`; with `output` each input's files are written there (`outputs`: the names
    to write, default all). Iterate `pipeline(items)` for the Predictions; counts are kept on the object."""

    predictor: Predictor
    output: Path | None = None
    outputs: tuple[str, ...] | None = None
    keep_arrays: bool = True  # False: Predictions without their arrays (a long CLI run)
    failed: dict = field(default_factory=dict)  # key -> first line
    images: int = 0  # images and frames predicted

    def __post_init__(self):
        known = tasks.get(self.predictor.task).outputs
        if self.outputs is not None and not set(self.outputs) <= set(known):
            raise UsageError(f"outputs: {self.predictor.task} writes {', '.join(known)}, not "
                             f"{', '.join(sorted(set(self.outputs) - set(known)))}")

    def paths(self, item: Item) -> dict[str, Path]:
        spec = tasks.get(self.predictor.task)
        chosen = self.outputs or spec.outputs
        return output_paths(self.output, spec, item.stem, item.video, chosen) if self.output else {}

    def complete(self, item: Item) -> bool:
        """Every output of `item` is there (each is written whole or not at all)."""
        paths = self.paths(item)
        return bool(paths) and all(p.is_file() for p in paths.values())

    def __call__(self, items: list[Item]) -> Iterator[Prediction]:
        clock = self.predictor.clock
        writer = Writer(clock) if self.output else None
        video: _Video | None = None
        try:
            for unit in background(read_units(items, clock, self.predictor.check_work), READ_AHEAD):
                if unit.kind == "image":
                    yield self._image(unit, writer)
                elif unit.kind == "error":
                    yield self._fail(unit.item.key, unit.error)
                elif unit.kind == "start":
                    video = _Video(unit.item, unit.video, self.paths(unit.item), clock, self.predictor.spec)
                elif unit.kind == "frame":
                    if not video.error:  # after a failed frame the rest of the video is skipped
                        yield self._frame(unit, video)
                else:
                    line = video.finish(writer, unit.frame)
                    video = None
                    if line:
                        yield self._fail(unit.item.key, line)
                for key, line in writer.failed() if writer else ():
                    yield self._fail(key, line)
        finally:
            if video is not None:
                video.abort()
            if writer is not None:
                writer.close()  # what was handed to it is written whole
        for key, line in writer.failed() if writer else ():
            yield self._fail(key, line)

    def _fail(self, key: str, line: str) -> Prediction:
        self.failed.setdefault(key, line)
        return Prediction(key, error=line)

    def _image(self, unit: Unit, writer: Writer | None) -> Prediction:
        item, p = unit.item, self.predictor
        sw = p.clock.stopwatch()
        try:
            result = p.predict(unit.rgb, p.boxes_for(item.key), sw)
            paths = self.paths(item)
            files = {name: p.spec.output_records(name, p.spec.render(name, unit.rgb, result, p.preset, p.threshold),
                                                 item.index, item.key)
                     for name in paths}  # all rendered before any is written
            for name, path in paths.items():
                writer.submit(item.key, path, p.spec.outputs[name].format, files[name])
        except Exception as e:  # this input fails, the run goes on
            return self._fail(item.key, f"{item.path}: {_cause(e)}")
        finally:
            sw.stop()
        self.images += 1
        return Prediction(item.key, None, result if self.keep_arrays else None)

    def _frame(self, unit: Unit, video: "_Video") -> Prediction:
        item, p = unit.item, self.predictor
        sw = p.clock.stopwatch()
        try:
            check_rgb(unit.rgb, f"{item.path} frame {unit.frame}")
            result = p.predict(unit.rgb, p.boxes_for(f"{item.key}#{unit.frame}"), sw)
            video.add(p, unit, result)
        except Exception as e:
            video.error = f"{item.path} frame {unit.frame}: {_cause(e)}"
            video.abort()
            return self._fail(item.key, video.error)
        finally:
            sw.stop()
        self.images += 1
        return Prediction(item.key, unit.frame, result if self.keep_arrays else None)


class _Video:
    """One video's outputs while its frames come: a VideoSink per visual output, the pose records."""

    def __init__(self, item: Item, reader: VideoReader, paths: dict[str, Path], clock: StageClock, spec):
        self.item, self.reader, self.clock = item, reader, clock
        self.paths = paths
        self.formats = {name: spec.video_outputs[name].format for name in paths}
        self.sinks = {name: VideoSink(path, reader.rate, clock) for name, path in paths.items()
                      if self.formats[name] == "mp4"}
        self.records: dict[str, list] = {}
        self.error: str | None = None

    def add(self, p: Predictor, unit: Unit, result: dict) -> None:
        for name, sink in self.sinks.items():
            sink.put(p.spec.render(name, unit.rgb, result, p.preset, p.threshold, video=True))
        for name in self.paths:
            if self.formats[name] == "json":  # one file for the whole video: each frame's records
                value = p.spec.render(name, unit.rgb, result, p.preset, p.threshold, video=True)
                self.records.setdefault(name, []).extend(
                    p.spec.output_records(name, value, unit.frame, self.item.key, unit.frame))

    def abort(self) -> None:
        for sink in self.sinks.values():
            sink.abort()
        self.sinks = {}

    def finish(self, writer: Writer | None, frames: int) -> str | None:
        """Publish the outputs (none when no frame came or a frame failed) -> a failure line, or None."""
        key, name = self.item.key, self.item.path
        if self.error:
            return None  # already reported
        if frames == 0:
            self.abort()
            return f"{name}: no frame could be decoded" + (f" ({self.reader.ended_early})"
                                                          if self.reader.ended_early else "")
        try:
            for sink in self.sinks.values():
                sink.close()
        except Exception as e:
            self.abort()
            return f"{name}: cannot write its video ({_cause(e)})"
        if writer is not None:
            for name, records in self.records.items():
                writer.submit(key, self.paths[name], "json", records)
        if self.reader.ended_early:
            return f"{name}: the video ended early: {self.reader.ended_early}; its outputs hold the {frames} frames read"
        return None
