"""The COCO person keypoints: names in COCO order, left/right pairs, OKS sigmas, half-body groups. Data only."""
from __future__ import annotations

COCO_KEYPOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)
# indices of (left, right) keypoints: swapped when an image is flipped horizontally
COCO_FLIP_PAIRS = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))
# per-keypoint OKS sigmas of the COCO keypoint challenge (pycocotools' defaults for 17 keypoints)
COCO_SIGMAS = (0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062,
               0.107, 0.107, 0.087, 0.087, 0.089, 0.089)
# mmpose's half-body augmentation picks one of these groups
COCO_UPPER_BODY = tuple(range(11))
COCO_LOWER_BODY = tuple(range(11, 17))
# limbs for drawing (pairs of keypoint indices)
COCO_SKELETON = ((15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
                 (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6))


def flip_permutation(num_keypoints: int, flip_pairs) -> list[int]:
    """perm[k] = the keypoint that k becomes under a horizontal flip (k itself when it has no pair)."""
    perm = list(range(num_keypoints))
    for a, b in flip_pairs:
        perm[a], perm[b] = b, a
    return perm
