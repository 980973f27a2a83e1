"""Samplers that balance tasks and grades by the metadata weights, on one process or several."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler, WeightedRandomSampler

from core.data.metadata import Sample


def sample_weights(samples: Sequence[Sample]) -> torch.Tensor:
    """Metadata weights; uniform when the split carries none (val and test are unweighted)."""
    weights = torch.tensor([s.weight for s in samples], dtype=torch.double)
    if weights.sum() <= 0:
        weights = torch.ones(len(samples), dtype=torch.double)
    return weights


def weighted_sampler(samples: Sequence[Sample], num_samples: int | None = None, seed: int = 0) -> WeightedRandomSampler:
    generator = torch.Generator().manual_seed(seed)
    return WeightedRandomSampler(sample_weights(samples), num_samples or len(samples), replacement=True,
                                 generator=generator)


class DistributedWeightedSampler(Sampler[int]):
    """Weighted draws split across ranks: every rank draws the same seeded sequence and takes its own stride.

    torch offers WeightedRandomSampler and DistributedSampler but not both at once; this is the small piece
    between them. ``set_epoch`` changes the draw each epoch, as DistributedSampler does.
    """

    def __init__(self, samples: Sequence[Sample], num_replicas: int, rank: int, num_samples: int | None = None,
                 seed: int = 0) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        self.weights = sample_weights(samples)
        self.num_replicas = num_replicas
        self.rank = rank
        total = num_samples or len(samples)
        self.per_rank = -(-total // num_replicas)  # ceil: every rank runs the same number of steps
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.per_rank

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + 1_000_003 * self.epoch)
        draws = torch.multinomial(self.weights, self.per_rank * self.num_replicas, replacement=True,
                                  generator=generator)
        return iter(draws[self.rank :: self.num_replicas].tolist())
