"""A run's records: metrics.jsonl (one JSON object per line: training records every log_every steps, evaluation
records, the summary) and TensorBoard event files under tb/ when the tensorboard package is installed.

metrics.jsonl grows by appending one flushed line at a time (rewriting a long log per record would cost more
than the step); a resume rewrites it atomically without the records past the resumed step.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from mp_deploy.errors import DataError
from mp_deploy.files import atomic_write, check_replaceable, parse_json, read_text, special_kind

log = logging.getLogger("mp_deploy.train")


MAX_LOG_BYTES = 1 << 30  # a metrics.jsonl of a very long run is ~100 MB


def read_records(path: Path) -> list[dict]:
    """The records of a metrics.jsonl: JSON objects with a kind and an integer step, each line read with
    mp_deploy.files' bounds; a line that is not one (a torn last line, from a kill mid-write, an edited one) is
    left out. Nothing but a regular file is read."""
    if special_kind(path) is not None:
        return []
    records = []
    for line in read_text(path, MAX_LOG_BYTES).splitlines():
        try:
            record = parse_json(line, str(path))
        except DataError:
            continue
        if isinstance(record, dict) and isinstance(record.get("kind"), str) and \
                isinstance(record.get("step"), int) and not isinstance(record.get("step"), bool):
            records.append(record)
    return records


def _plain(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


class RunLog:
    def __init__(self, run_dir: Path, resume_step: int | None):
        self.path = run_dir / "metrics.jsonl"
        run_dir.mkdir(parents=True, exist_ok=True)
        check_replaceable(self.path)  # appending to a FIFO would wait for a reader
        if resume_step is not None:
            kept = [r for r in read_records(self.path) if r.get("step", 0) <= resume_step and r["kind"] != "summary"]
            text = "".join(json.dumps(r) + "\n" for r in kept)
            atomic_write(self.path, lambda tmp: Path(tmp).write_text(text))
        self.file = open(self.path, "a")
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional
            log.info("tensorboard is not installed: no event files")
        else:
            self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=resume_step + 1 if resume_step else None)

    def write(self, kind: str, step: int, values: dict) -> None:
        record = {"kind": kind, "step": step, **{k: _plain(v) for k, v in values.items()}}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    self.tb.add_scalar(f"{kind}/{key}", value, step)

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()
