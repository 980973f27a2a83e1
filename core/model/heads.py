"""The classification expert: DR grade and DME risk from the pooled deepest features.

Two parallel linear classifiers share one normalisation: both grades are read from the same global evidence
(lesion load and location), and a linear head keeps the expert cheap, so almost all capacity sits in the shared
backbone that segmentation also trains.
"""

from __future__ import annotations

import torch
from torch import nn

from core.vocabulary import NUM_DME_RISKS, NUM_DR_GRADES  # ICDR 0-4, IDRiD 0-2


class ClassificationHead(nn.Module):
    """pooled (n, C) -> (dr_logits (n, 5), dme_logits (n, 3))."""

    def __init__(self, in_channels: int, dropout: float = 0.1, num_dr: int = NUM_DR_GRADES,
                 num_dme: int = NUM_DME_RISKS) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(in_channels)
        self.drop = nn.Dropout(dropout)
        self.dr = nn.Linear(in_channels, num_dr)
        self.dme = nn.Linear(in_channels, num_dme)

    def forward(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.drop(self.norm(pooled))
        return self.dr(x), self.dme(x)
