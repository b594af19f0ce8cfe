"""`build_dataset(source, split, ...)`: a data set by source name. Released layouts belong to their task
(mp_deploy.tasks: each task lists its `data_sources`); `folder` is a custom folder whose dataset.json names the
task; `synthetic` renders the training scene family (rooms) for any task, `unseen` the independently written
evaluation family (held out only: never trained on).
"""
from __future__ import annotations

from mp_deploy.data.base import SampleDataset, read_manifest_task
from mp_deploy.errors import DataError

# synthetic splits: disjoint seeds; the held-out split is fixed and small
SYNTHETIC_SPLITS = {"train": dict(seed=0, augment=True), "val": dict(seed=1, augment=False, length=200)}
# the unseen family has a held-out split only
UNSEEN_SPLITS = {"val": dict(seed=2, augment=False, length=200, scenes="unseen")}


def source_names() -> list[str]:
    from mp_deploy import tasks

    return sorted(s for t in tasks.all_tasks() for s in t.data_sources) + ["folder", "synthetic", "unseen"]


def build_dataset(source: str, split: str, task: str | None = None, root=None, **options) -> SampleDataset:
    """A dataset by source: a task's released layout (root = the layout's root), "folder" (root = a custom folder,
    task from its dataset.json) or "synthetic" (task required; options such as size / input_size, length)."""
    from mp_deploy import tasks

    owner = next((t for t in tasks.all_tasks() if source in t.data_sources), None)
    if owner is not None:
        if task not in (None, owner.name):
            raise DataError(f"{source} is {owner.name} data, not {task}")
        if root is None:
            raise DataError(f"{source}: give the data root")
        return owner.released_dataset(source, root, split, **options)
    if source == "folder":
        if root is None:
            raise DataError("a custom folder needs its root")
        folder_task = read_manifest_task(root)
        if folder_task not in tasks.names():
            raise DataError(f"{root}/dataset.json: task {folder_task!r} is not one of {', '.join(tasks.names())}")
        if task not in (None, folder_task):
            raise DataError(f"{root}: dataset.json says task {folder_task}, not {task}")
        return tasks.get(folder_task).folder_dataset(root, split, **options)
    if source in ("synthetic", "unseen"):
        if task not in tasks.names():
            raise DataError(f"{source} data needs a task: one of {', '.join(tasks.names())}")
        splits = SYNTHETIC_SPLITS if source == "synthetic" else UNSEEN_SPLITS
        if split not in splits:
            raise DataError(f"{source} splits are {sorted(splits)}, not {split!r}")
        return tasks.get(task).synthetic_dataset(**(splits[split] | options))
    raise DataError(f"unknown data source {source!r}; choose one of {source_names()}")
