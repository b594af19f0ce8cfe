"""Data for training and evaluation: readers for the released layouts, custom folders and synthetic scenes, each
giving samples in one format per task (docs/data.md), plus `collate` and the bad-sample count.

    from mp_deploy.data import build_dataset, collate
    train = build_dataset("nyu", "train", root="/data")           # the reference's augmentation on
    val = build_dataset("synthetic", "val", task="depth", size=(128, 128))
    loader = DataLoader(train, batch_size=3, shuffle=True, collate_fn=collate, num_workers=4)
"""
from __future__ import annotations

from mp_deploy.data.base import SampleDataset, SkipTally, collate, read_manifest_task
from mp_deploy.data.depth import DepthAugment, DepthFiles, depth_folder, kitti, nyu
from mp_deploy.data.pose import PoseAugment, PoseInstances, TopDown, coco_keypoints, pose_folder
from mp_deploy.data.seg import SegAugment, SegFiles, ade20k, cityscapes, seg_folder
from mp_deploy.data.synthetic import CLASSES as SYNTHETIC_CLASSES
from mp_deploy.data.synthetic import SyntheticDepth, SyntheticPose, SyntheticSeg, synthetic_scene
from mp_deploy.errors import DataError

# released layouts: source -> (task, builder(root, split, **options))
RELEASED = {"nyu": ("depth", nyu), "kitti": ("depth", kitti), "ade20k": ("seg", ade20k),
            "cityscapes": ("seg", cityscapes), "coco": ("pose", coco_keypoints)}
FOLDERS = {"depth": depth_folder, "seg": seg_folder, "pose": pose_folder}
SYNTHETIC = {"depth": SyntheticDepth, "seg": SyntheticSeg, "pose": SyntheticPose}
# synthetic splits: disjoint seeds; the held-out split is fixed and small
SYNTHETIC_SPLITS = {"train": dict(seed=0, augment=True), "val": dict(seed=1, augment=False, length=200)}


def build_dataset(source: str, split: str, task: str | None = None, root=None, **options) -> SampleDataset:
    """A dataset by source: one of RELEASED (root = the layout's root), "folder" (root = a custom folder, task
    from its dataset.json) or "synthetic" (task required; options such as size / input_size, length)."""
    if source in RELEASED:
        src_task, builder = RELEASED[source]
        if task not in (None, src_task):
            raise DataError(f"{source} is {src_task} data, not {task}")
        if root is None:
            raise DataError(f"{source}: give the data root")
        return builder(root, split, **options)
    if source == "folder":
        if root is None:
            raise DataError("a custom folder needs its root")
        folder_task = read_manifest_task(root)
        if task not in (None, folder_task):
            raise DataError(f"{root}: dataset.json says task {folder_task}, not {task}")
        return FOLDERS[folder_task](root, split, **options)
    if source == "synthetic":
        if task not in SYNTHETIC:
            raise DataError(f"synthetic data needs a task: one of {sorted(SYNTHETIC)}")
        if split not in SYNTHETIC_SPLITS:
            raise DataError(f"synthetic splits are {sorted(SYNTHETIC_SPLITS)}, not {split!r}")
        return SYNTHETIC[task](**(SYNTHETIC_SPLITS[split] | options))
    raise DataError(f"unknown data source {source!r}; choose one of {sorted(RELEASED) + ['folder', 'synthetic']}")


__all__ = ["build_dataset", "collate", "SkipTally", "SampleDataset", "DataError", "RELEASED", "FOLDERS",
           "SYNTHETIC", "SYNTHETIC_SPLITS", "SYNTHETIC_CLASSES", "DepthAugment", "DepthFiles", "SegAugment",
           "SegFiles", "PoseAugment", "PoseInstances", "TopDown", "SyntheticDepth", "SyntheticSeg",
           "SyntheticPose", "synthetic_scene", "nyu", "kitti", "ade20k", "cityscapes", "coco_keypoints",
           "depth_folder", "seg_folder", "pose_folder"]
