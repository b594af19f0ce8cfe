"""Background threads for a stream of work: `background(iterable, depth)` runs the iterable in a daemon thread at
most `depth` items ahead (predict's reader, Predictor.stream)."""
from __future__ import annotations

import queue
import threading
from typing import Iterable, Iterator


def background(iterable: Iterable, depth: int) -> Iterator:
    """The items of `iterable`, produced by a daemon thread at most `depth` ahead; its errors are raised here.
    Closing the returned generator stops the thread at its next item."""
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                items.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for item in iterable:
                if not put(("item", item)):
                    return
            put(("end", None))
        except BaseException as e:  # noqa: B036 (handed to the consumer)
            put(("error", e))

    threading.Thread(target=produce, name="predict-reader", daemon=True).start()
    try:
        while True:
            kind, item = items.get()
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()
