"""Data for training and evaluation: readers for the released layouts, custom folders and synthetic scenes, each
giving samples in one format per task (docs/data.md), plus `collate` and the bad-sample count.

    from mp_deploy.data import build_dataset, collate
    train = build_dataset("nyu", "train", root="/data")           # the reference's augmentation on
    val = build_dataset("synthetic", "val", task="depth", size=(128, 128))
    loader = DataLoader(train, batch_size=3, shuffle=True, collate_fn=collate, num_workers=4)

Which task reads which source is the task registry's to say (mp_deploy.tasks): `build_dataset` (data/sources.py)
asks it. This package imports nothing when it is imported; the names below load on first use.
"""
from __future__ import annotations

_NAMES = {"build_dataset": "mp_deploy.data.sources", "SYNTHETIC_SPLITS": "mp_deploy.data.sources",
          "collate": "mp_deploy.data.base", "SkipTally": "mp_deploy.data.base",
          "SampleDataset": "mp_deploy.data.base"}


def __getattr__(name):
    if name in _NAMES:
        import importlib

        return getattr(importlib.import_module(_NAMES[name]), name)
    raise AttributeError(f"module 'mp_deploy.data' has no attribute {name!r}")


__all__ = sorted(_NAMES)
