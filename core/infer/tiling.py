"""Sliding-window segmentation with overlap blending, in batches of bounded size.

Used when the canvas is larger than the window the model was trained on (full-resolution prediction): each window
is segmented on its own and the overlapping predictions are averaged with weights that fall towards the window's
edges, where a convolution sees padding instead of context.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from core.vocabulary import NUM_LESIONS


def positions(length: int, window: int, stride: int) -> list[int]:
    """Window starts covering ``[0, length)``; the last window is flush with the end."""
    if length <= window:
        return [0]
    starts = list(range(0, length - window, stride))
    starts.append(length - window)
    return starts


def blend_weights(height: int, width: int, floor: float = 0.05) -> torch.Tensor:
    """A separable raised-cosine window, never zero so that image borders (covered once) keep their value."""
    def ramp(n: int) -> torch.Tensor:
        return torch.from_numpy(np.maximum(np.hanning(n + 2)[1:-1], floor)).float()

    return ramp(height)[:, None] * ramp(width)[None, :]


@torch.no_grad()
def sliding_window(segment: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, window: int,
                   overlap: float = 0.25, batch_size: int = 4, channels: int = NUM_LESIONS) -> torch.Tensor:
    """Blend ``segment`` (crops (n, 3, w, w) -> logits (n, C, w, w)) over a (3, H, W) image; returns (C, H, W)
    probabilities. At most ``batch_size`` windows are in memory at once."""
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), not {overlap}")
    _, height, width = image.shape
    win_h, win_w = min(window, height), min(window, width)
    stride_h, stride_w = max(1, int(win_h * (1 - overlap))), max(1, int(win_w * (1 - overlap)))
    boxes = [(y, x) for y in positions(height, win_h, stride_h) for x in positions(width, win_w, stride_w)]
    weights = blend_weights(win_h, win_w).to(image.device)
    total = torch.zeros(channels, height, width, device=image.device)
    norm = torch.zeros(1, height, width, device=image.device)
    for start in range(0, len(boxes), batch_size):
        chunk = boxes[start : start + batch_size]
        crops = torch.stack([image[:, y : y + win_h, x : x + win_w] for y, x in chunk])
        probs = torch.sigmoid(segment(crops).float())
        for (y, x), prob in zip(chunk, probs, strict=True):
            total[:, y : y + win_h, x : x + win_w] += prob * weights
            norm[:, y : y + win_h, x : x + win_w] += weights
    return total / norm
