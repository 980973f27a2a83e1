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
    """pooled (n, C) [+ lesion summary (n, E)] -> (dr_logits (n, 5), dme_logits (n, 3)).

    ``evidence > 0`` adds a linear term on the standardised coarse lesion summary (core/model/coarse.py), kept out
    of the LayerNorm of the pooled features: its 20 numbers would be drowned among 1,200 normalised features, and
    lesion load is what the grades are defined by.
    """

    def __init__(self, in_channels: int, dropout: float = 0.1, num_dr: int = NUM_DR_GRADES,
                 num_dme: int = NUM_DME_RISKS, evidence: int = 0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(in_channels)
        self.drop = nn.Dropout(dropout)
        self.dr = nn.Linear(in_channels, num_dr)
        self.dme = nn.Linear(in_channels, num_dme)
        self.evidence = evidence
        if evidence:
            self.dr_evidence = nn.Linear(evidence, num_dr)
            self.dme_evidence = nn.Linear(evidence, num_dme)

    def forward(self, pooled: torch.Tensor, summary: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.drop(self.norm(pooled))
        dr, dme = self.dr(x), self.dme(x)
        if self.evidence:
            if summary is None:
                raise ValueError("this classification head reads the coarse lesion summary: pass it")
            dr, dme = dr + self.dr_evidence(summary), dme + self.dme_evidence(summary)
        return dr, dme
