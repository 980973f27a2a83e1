"""The gate: which expert should see this image.

It reads the pooled backbone features (``model.gate_input: pooled``) or the coarse lesion summary
(``lesions``, core/model/coarse.py), so it costs a few thousand multiply-adds next to the backbone; the routing
decision therefore comes almost for free once the encoder has run, and the expensive expert runs only where needed.
"""

from __future__ import annotations

import torch
from torch import nn

from core.vocabulary import NUM_TASKS  # 0 = segmentation, 1 = classification


class Gate(nn.Module):
    """pooled (B, C) -> task logits (B, 2) in the order (segmentation, classification).

    ``normalize=False`` for an input already on a fixed scale (the coarse lesion summary, in [0, 1]): a LayerNorm
    there would subtract each photograph's own mean and hide that every lesion is raised at once.
    """

    def __init__(self, in_channels: int, hidden: int = 64, dropout: float = 0.1, normalize: bool = True) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            # ConvNeXt stage outputs are not normalised; keeps the MLP's input scale sane
            nn.LayerNorm(in_channels) if normalize else nn.Identity(),
            nn.Linear(in_channels, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, NUM_TASKS),
        )
        # Start nearly undecided (small logits, no bias towards either task) but not exactly zero weights, which
        # would block the gate loss's gradient to the hidden layer and the backbone for the first step.
        nn.init.trunc_normal_(self.mlp[-1].weight, std=0.02)
        nn.init.zeros_(self.mlp[-1].bias)

    @property
    def last(self) -> nn.Linear:
        return self.mlp[-1]

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.mlp(pooled)
