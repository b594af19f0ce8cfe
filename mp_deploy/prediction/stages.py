"""Where predict's time goes: seconds per stage, summed over every image by the threads that run them (decode
in the reader, write in the writer, the rest in the main thread), and the closing summary line."""
from __future__ import annotations

import threading
import time

STAGES = ("decode", "preprocess", "engine", "postprocess", "write")


class StageClock:
    def __init__(self):
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self.lock = threading.Lock()
        self.start = time.perf_counter()

    def start_now(self) -> None:
        """Wall time counts from here (after loading the model)."""
        self.start = time.perf_counter()

    def add(self, stage: str, seconds: float) -> None:
        with self.lock:
            self.seconds[stage] += seconds

    def timed(self, stage: str):
        return _Timed(self, stage)

    def stopwatch(self) -> "Stopwatch":
        return Stopwatch(self)

    def wall(self) -> float:
        return time.perf_counter() - self.start

    def summary(self, images: int, failed: int) -> dict:
        wall = self.wall()
        per = {f"{s}_ms": 1e3 * v / max(images, 1) for s, v in self.seconds.items()}
        return {"images": images, "failed": failed, "wall_s": wall, "images_per_s": images / wall if wall else 0.0,
                "engine_share": self.seconds["engine"] / wall if wall else 0.0, **per}

    def line(self, images: int, failed: int) -> str:
        s = self.summary(images, failed)
        stages = ", ".join(f"{name} {s[f'{name}_ms']:.1f}" for name in STAGES)
        return (f"{images} images in {s['wall_s']:.1f} s ({s['images_per_s']:.2f} images/s), {failed} failed; "
                f"ms per image: {stages}; the engine's share of the wall time {100 * s['engine_share']:.0f}% "
                "(decode and write run beside it in background threads)")


class _Timed:
    def __init__(self, clock: StageClock, stage: str):
        self.clock, self.stage = clock, stage

    def __enter__(self):
        self.t0 = time.perf_counter()

    def __exit__(self, *exc):
        self.clock.add(self.stage, time.perf_counter() - self.t0)


class Stopwatch:
    """Consecutive stages of one thread: `enter(stage)` ends the current one; `stop()` ends the last."""

    def __init__(self, clock: StageClock):
        self.clock, self.stage, self.t0 = clock, None, time.perf_counter()

    def enter(self, stage: str | None) -> None:
        now = time.perf_counter()
        if self.stage is not None:
            self.clock.add(self.stage, now - self.t0)
        self.stage, self.t0 = stage, now

    def stop(self) -> None:
        self.enter(None)
