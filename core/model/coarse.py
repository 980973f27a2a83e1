"""The coarse lesion head: cheap lesion maps at stride 16 that the gate and the classifier read.

Why it exists: on IDRiD a gate reading pooled backbone features overfits the 300-odd graded photographs (a linear
gate on them reached ROC AUC 0.70 on unseen photographs, docs/model.md), while lesion evidence separates referable
from non-referable eyes well (0.84-0.92). The full U-Net decoder gives that evidence but costs most of the forward
pass, which is what routing is meant to save. This head draws the five lesion maps at 1/16 of the canvas from the
stride-16 and stride-32 features (two small convolutions, under 2% of the backbone's multiply-adds) and is supervised
by the masks max-pooled to its grid (a cell is positive when any of its pixels is), so the gate can read "is there a
haemorrhage or an exudate here" before deciding whether the decoder should run.

``reads="pyramid"`` (``model.coarse_reads``) adds the stride-4 and stride-8 features, max- and mean-pooled to the
stride-16 grid: the decoder finds small lesions from those shallow maps, which the deep ones have blurred, and a
maximum over a cell keeps one bright or dark spot in it visible. On checkpoints/idrid's frozen features the head
copying the decoder's maps then gave the referable gate ROC AUC 0.879 on validation instead of 0.836 (0.897 from the
decoder's own maps on that grid, docs/training.md); the pooling costs a pass over maps the backbone has already made.

``lesion_summary`` turns the maps into a fixed-length vector per image. ``basic`` (``model.coarse_summary``), for
each lesion: the largest probability, the mean of the top 1% of cells, the mean probability and the share of cells
above 0.5. A maximum keeps one exudate visible; the top-k mean and the share say how many there are. ``rich`` adds
what separates a few microaneurysms (mild, not referable) from many haemorrhages (moderate and worse): the means of
the top 0.1% and of the top 10 cells, the shares above 0.2 and 0.1, and the log-counts of cells above 0.5 and 0.2.
On checkpoints/idrid's frozen features, over six coarse heads fitted with different seeds, the referable gate
(basic at C 0.1 against rich at C 1) reached a mean ROC AUC of 0.908 -> 0.914 in 5-fold cross-validation (x3) on
its 339 training photographs and 0.873 -> 0.893 on validation, with specificity at sensitivity 0.9 0.57 -> 0.71;
rich was ahead for every seed (docs/training.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from core.vocabulary import NUM_LESIONS

SUMMARY_STATS = {  # per lesion, in this order
    "basic": ("max", "top1pct", "mean", "share50"),
    "rich": ("max", "top1pct", "mean", "share50", "top01pct", "top10", "share20", "share10", "logcount50",
             "logcount20"),
}


def summary_width(num_lesions: int = NUM_LESIONS, kind: str = "basic") -> int:
    return num_lesions * len(summary_stats(kind))


def summary_stats(kind: str) -> tuple[str, ...]:
    if kind not in SUMMARY_STATS:
        raise ValueError(f"the lesion summary is one of {', '.join(SUMMARY_STATS)}, not {kind!r}")
    return SUMMARY_STATS[kind]


COARSE_READS = ("deep", "pyramid")  # the stride-16 and -32 features, or every stage


class CoarseLesionHead(nn.Module):
    """features (strides 4, 8, 16, 32) -> lesion logits (B, L, H/16, W/16)."""

    def __init__(self, channels: Sequence[int], num_lesions: int = NUM_LESIONS, hidden: int = 64,
                 reads: str = "deep") -> None:
        super().__init__()
        if reads not in COARSE_READS:
            raise ValueError(f"the coarse lesion head reads one of {', '.join(COARSE_READS)}, not {reads!r}")
        needed = 2 if reads == "deep" else 4
        if len(channels) < needed:
            raise ValueError(f"the coarse lesion head ({reads}) needs {needed} feature maps, got {len(channels)}")
        self.reads = reads
        # pyramid: each shallow stage twice (its maximum and its mean over a cell)
        width = channels[-2] + channels[-1] + (2 * sum(channels[:-2]) if reads == "pyramid" else 0)
        self.mix = nn.Sequential(
            nn.Conv2d(width, hidden, kernel_size=3, padding=1),
            nn.GroupNorm(8 if hidden % 8 == 0 else 1, hidden),  # per sample, like every other part of the model
            nn.GELU(),
        )
        self.out = nn.Conv2d(hidden, num_lesions, kernel_size=1)
        # Lesions are rare: start every cell near p = 0.01 instead of 0.5 (the focal-loss prior, Lin et al. 2017),
        # so the first steps are not spent pulling 1,000 cells a photograph down.
        nn.init.constant_(self.out.bias, -4.6)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.read(self.grid(features))

    def read(self, grid: torch.Tensor) -> torch.Tensor:
        """Lesion logits from a ``grid`` made already (fit-gate keeps the grids of frozen features, not the maps)."""
        return self.out(self.mix(grid))

    def grid(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """What the convolutions read: every stage it uses, on the stride-16 grid, stacked along channels."""
        mid, deep = features[-2], features[-1]
        size = tuple(mid.shape[2:])
        stages = [mid, F.interpolate(deep, size=size, mode="nearest")]
        if self.reads == "pyramid":
            for shallow in features[:-2]:
                stages += [F.adaptive_max_pool2d(shallow, size), F.adaptive_avg_pool2d(shallow, size)]
        return torch.cat(stages, dim=1)


def _top_mean(probs: torch.Tensor, k: int) -> torch.Tensor:
    return probs.topk(max(1, min(k, probs.shape[2])), dim=2).values.mean(dim=2)


def lesion_summary(coarse_logits: torch.Tensor, kind: str = "basic") -> torch.Tensor:
    """(B, L, h, w) logits -> (B, L * len(summary_stats(kind))) summary, ``SUMMARY_STATS[kind]`` per lesion,
    lesion-major. Every statistic is in [0, 1] but the log-counts (log1p of a count of cells)."""
    names = summary_stats(kind)
    probs = coarse_logits.float().sigmoid().flatten(2)
    cells = probs.shape[2]
    above = {t: (probs >= t / 100).float() for t in (50, 20, 10)}
    every = {
        "max": lambda: probs.amax(dim=2),
        "top1pct": lambda: _top_mean(probs, cells // 100),
        "mean": lambda: probs.mean(dim=2),
        "share50": lambda: above[50].mean(dim=2),
        "top01pct": lambda: _top_mean(probs, cells // 1000),
        "top10": lambda: _top_mean(probs, 10),
        "share20": lambda: above[20].mean(dim=2),
        "share10": lambda: above[10].mean(dim=2),
        "logcount50": lambda: above[50].sum(dim=2).log1p(),
        "logcount20": lambda: above[20].sum(dim=2).log1p(),
    }
    return torch.stack([every[name]() for name in names], dim=2).flatten(1)


def glance_grid(lesion_logits: torch.Tensor, canvas: Sequence[int]) -> torch.Tensor:
    """(B, L, h, w) lesion logits of a glance -> (B, L, H/16, W/16) logits of their probabilities max-pooled to the
    stride-16 grid of the (H, W) canvas, so that a glance's summary counts the cells a coarse head would draw."""
    grid = (max(1, canvas[0] // 16), max(1, canvas[1] // 16))
    probs = F.adaptive_max_pool2d(lesion_logits.float().sigmoid(), grid)
    return torch.logit(probs.clamp(1e-6, 1 - 1e-6))


def coarse_targets(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Canvas masks (n, L, H, W) -> (n, L, h, w): a cell is positive when any of its pixels is."""
    return F.adaptive_max_pool2d(masks.float(), size)
