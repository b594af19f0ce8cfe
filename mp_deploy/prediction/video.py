"""Video in and out through PyAV (its wheels carry FFmpeg: no system ffmpeg needed). The first video stream is
read; audio and every other stream are dropped; the output keeps the input's frame rate (H.264 in MP4)."""
from __future__ import annotations

import contextlib
import queue
import threading
from fractions import Fraction
from pathlib import Path

import numpy as np

from mp_deploy.errors import DataError, UsageError
from mp_deploy.files import atomic_write, open_regular
from mp_deploy.images import MAX_PIXELS

CODEC, PIXEL_FORMAT = "libx264", "yuv420p"
DEFAULT_RATE = Fraction(25)  # a stream that states no rate


def _av():
    try:
        import av
    except ImportError:
        raise UsageError("videos need PyAV: pip install 'mp-deploy[predict]'") from None
    return av


class VideoReader:
    """Frames of one video as RGB uint8 (H, W, 3). `rate` and `expected` (frames the container states, 0 when
    it does not) are known once opened; after iterating, `ended_early` says why fewer frames came, or None."""

    def __init__(self, path: Path):
        av = _av()
        self.path = path
        self.file = open_regular(path)  # a FIFO named .mp4 is refused here instead of blocking FFmpeg's open
        try:
            self.container = av.open(self.file)
        except (av.FFmpegError, OSError, ValueError) as e:
            self.file.close()
            raise DataError(f"{path}: cannot read video ({e})") from None
        if not self.container.streams.video:
            self.close()
            raise DataError(f"{path}: no video stream in it")
        self.stream = self.container.streams.video[0]
        w, h = self.stream.codec_context.width, self.stream.codec_context.height
        self.size = (h, w)  # as the stream declares it
        if w * h > MAX_PIXELS:  # the frame size the stream declares, before any frame is decoded
            self.close()
            raise DataError(f"{path}: its frames are {w}x{h}, more than the {MAX_PIXELS} pixels an image may have")
        self.rate = self.stream.average_rate or self.stream.guessed_rate or DEFAULT_RATE
        duration = self.stream.duration * self.stream.time_base if self.stream.duration else 0
        self.expected = self.stream.frames or int(round(duration * self.rate))
        self.ended_early: str | None = None

    def close(self) -> None:
        self.container.close()
        self.file.close()

    def __iter__(self):
        av = _av()
        count = 0
        try:
            for frame in self.container.decode(self.stream):
                count += 1
                yield frame.to_ndarray(format="rgb24")
        except (av.FFmpegError, OSError, ValueError) as e:  # a corrupt packet: the frames before it stand
            stated = f" of the {self.expected} it states" if self.expected else ""
            self.ended_early = f"decoding stopped after {count} frames{stated} ({e})"
        finally:
            self.close()
        # one frame of slack: containers round their stated duration
        if self.ended_early is None and self.expected and count < self.expected - 1:
            self.ended_early = f"it holds {count} of the {self.expected} frames it states"


def count_frames(path: Path) -> int:
    """The frames a video states (1 when it states none or cannot be opened: a progress bar's estimate)."""
    try:
        reader = VideoReader(path)
    except DataError:
        return 1
    reader.close()
    return max(reader.expected, 1)


class VideoSink:
    """Frames in, one video file out, encoded in a background thread inside atomic_write: `close()` publishes
    the file, `abort()` (or an encoder error) leaves nothing behind."""

    _END, _ABORT = object(), object()

    def __init__(self, path: Path, rate: Fraction, clock=None, depth: int = 8):
        _av()
        self.path, self.rate, self.clock = path, Fraction(rate), clock
        self.frames: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"video-writer {path.name}", daemon=True)
        self.thread.start()

    def put(self, frame: np.ndarray) -> None:
        if self.error is not None:
            raise self.error
        self.frames.put(frame)

    def close(self) -> None:
        self.frames.put(self._END)
        self.thread.join()
        if self.error is not None:
            raise self.error

    def abort(self) -> None:
        self.frames.put(self._ABORT)
        self.thread.join()

    def _run(self) -> None:
        try:
            atomic_write(self.path, self._encode)
        except _Aborted:
            pass
        except BaseException as e:  # handed to the producer at its next put / close
            self.error = e
            while True:  # drain, so that a producer blocked on a full queue goes on
                item = self.frames.get()
                if item is self._END or item is self._ABORT:
                    break

    def _encode(self, tmp: str) -> None:
        av = _av()
        with av.open(tmp, "w", format="mp4") as out:
            stream, index = None, 0
            while True:
                frame = self.frames.get()
                if frame is self._ABORT:
                    raise _Aborted()
                if frame is self._END:
                    break
                if stream is None:
                    stream = out.add_stream(CODEC, rate=self.rate)
                    stream.pix_fmt = PIXEL_FORMAT
                    # 4:2:0 needs even sides: odd ones are padded by one edge row / column
                    stream.height, stream.width = (s + s % 2 for s in frame.shape[:2])
                with self.clock.timed("write") if self.clock else contextlib.nullcontext():
                    video_frame = av.VideoFrame.from_ndarray(_even(frame), format="rgb24")
                    video_frame.pts, video_frame.time_base, index = index, 1 / self.rate, index + 1
                    for packet in stream.encode(video_frame):
                        out.mux(packet)
            if stream is not None:
                for packet in stream.encode():
                    out.mux(packet)


class _Aborted(Exception):
    pass


def _even(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    if h % 2 or w % 2:
        frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    return np.ascontiguousarray(frame)
