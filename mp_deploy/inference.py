"""What every task's inference protocol shares: a `run(batch) -> output` callable (an eager model, an exported
engine that takes a fixed window and batches of 1..max_batch, a served model) and one image's windows or crops
through it in chunks. The protocols themselves belong to their tasks (mp_deploy/tasks/<task>.py).

Images are float RGB (3, H, W) in [0, 1] on the device `run` wants. All windows of one image go through `run` as
one batch, cut into chunks of at most `max_batch`; `min_batch` pads the last chunk for engines with a fixed batch.
"""
from __future__ import annotations

from typing import Callable

import torch

Run = Callable[[torch.Tensor], torch.Tensor]


def run_batched(run: Run, x: torch.Tensor, max_batch: int = 8, min_batch: int = 1) -> torch.Tensor:
    """run(x) in chunks of at most max_batch; a chunk below min_batch is padded by repeating its last item and
    the padding's outputs are dropped."""
    if max_batch < 1 or min_batch > max_batch:
        raise ValueError(f"need 1 <= min_batch <= max_batch, got {min_batch} and {max_batch}")
    outs = []
    for start in range(0, len(x), max_batch):
        chunk = x[start:start + max_batch]
        n = len(chunk)
        if n < min_batch:
            chunk = torch.cat([chunk, chunk[-1:].expand(min_batch - n, *chunk.shape[1:])])
        outs.append(run(chunk)[:n])
    return torch.cat(outs)


def image_tensor(image: torch.Tensor) -> torch.Tensor:
    """One float RGB image (3, H, W) (a batch of one is unwrapped), else ValueError."""
    if image.dim() == 4 and image.shape[0] == 1:
        image = image[0]
    if image.dim() != 3 or image.shape[0] != 3 or not image.is_floating_point():
        raise ValueError(f"expected one float RGB image (3, H, W), got {tuple(image.shape)} {image.dtype}")
    return image
