"""The coarse lesion head: cheap lesion maps at stride 16 that the gate and the classifier read.

Why it exists: on IDRiD a gate reading pooled backbone features overfits the 300-odd graded photographs (a linear
gate on them reached ROC AUC 0.70 on unseen photographs, docs/model.md), while lesion evidence separates referable
from non-referable eyes well (0.84-0.92). The full U-Net decoder gives that evidence but costs most of the forward
pass, which is what routing is meant to save. This head draws the five lesion maps at 1/16 of the canvas from the
stride-16 and stride-32 features (two small convolutions, under 2% of the backbone's multiply-adds) and is supervised
by the masks max-pooled to its grid (a cell is positive when any of its pixels is), so the gate can read "is there a
haemorrhage or an exudate here" before deciding whether the decoder should run.

``lesion_summary`` turns the maps into a fixed-length vector per image: for each lesion the largest probability, the
mean of the top 1% of cells, the mean probability and the share of cells above 0.5. A maximum keeps one exudate
visible; the top-k mean and the share say how many there are.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from core.vocabulary import NUM_LESIONS

SUMMARY_STATS = ("max", "top1pct", "mean", "share")  # per lesion, in this order


def summary_width(num_lesions: int = NUM_LESIONS) -> int:
    return num_lesions * len(SUMMARY_STATS)


class CoarseLesionHead(nn.Module):
    """features (strides 4, 8, 16, 32) -> lesion logits (B, L, H/16, W/16)."""

    def __init__(self, channels: Sequence[int], num_lesions: int = NUM_LESIONS, hidden: int = 64) -> None:
        super().__init__()
        if len(channels) < 2:
            raise ValueError(f"the coarse lesion head needs the two deepest feature maps, got {len(channels)}")
        self.mix = nn.Sequential(
            nn.Conv2d(channels[-2] + channels[-1], hidden, kernel_size=3, padding=1),
            nn.GroupNorm(8 if hidden % 8 == 0 else 1, hidden),  # per sample, like every other part of the model
            nn.GELU(),
        )
        self.out = nn.Conv2d(hidden, num_lesions, kernel_size=1)
        # Lesions are rare: start every cell near p = 0.01 instead of 0.5 (the focal-loss prior, Lin et al. 2017),
        # so the first steps are not spent pulling 1,000 cells a photograph down.
        nn.init.constant_(self.out.bias, -4.6)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        mid, deep = features[-2], features[-1]
        deep = F.interpolate(deep, size=mid.shape[2:], mode="nearest")
        return self.out(self.mix(torch.cat([mid, deep], dim=1)))


def lesion_summary(coarse_logits: torch.Tensor) -> torch.Tensor:
    """(B, L, h, w) logits -> (B, L * 4) summary in [0, 1] (``SUMMARY_STATS`` per lesion, lesion-major)."""
    probs = coarse_logits.float().sigmoid().flatten(2)
    k = max(1, probs.shape[2] // 100)
    stats = [probs.amax(dim=2), probs.topk(k, dim=2).values.mean(dim=2), probs.mean(dim=2),
             (probs >= 0.5).float().mean(dim=2)]
    return torch.stack(stats, dim=2).flatten(1)


def coarse_targets(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Canvas masks (n, L, H, W) -> (n, L, h, w): a cell is positive when any of its pixels is."""
    return F.adaptive_max_pool2d(masks.float(), size)
