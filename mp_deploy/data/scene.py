"""What every synthetic scene family shares (the classic boxes of data/synthetic.py, the rooms of data/rooms.py, the
unseen family of data/unseen.py): the seven classes, the depth range and the rendering record. A leaf of the data
package, so that the families and the data set that chooses among them import it rather than each other."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLASSES = ("floor", "wall", "ceiling", "box", "sphere", "cylinder", "figure")
FLOOR, WALL, CEILING, BOX, SPHERE, CYLINDER, FIGURE = range(len(CLASSES))
MIN_DEPTH, MAX_DEPTH = 0.5, 10.0


@dataclass
class Rendering:
    image: np.ndarray  # (H, W, 3) uint8
    depth: np.ndarray  # (H, W) float32 metres
    labels: np.ndarray  # (H, W) uint8, CLASSES
    instances: np.ndarray  # (H, W) int32: 0 room, 1.. objects then figures
    people: list  # dicts: keypoints (17, 3) x, y, flag; box [x, y, w, h]; area (pixels); instance
