"""Samplers that balance tasks and grades by the metadata weights, on one process or several."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler, WeightedRandomSampler

from core.data.metadata import Sample


def sample_weights(samples: Sequence[Sample], segmentation_share: float | None = None) -> torch.Tensor:
    """Metadata weights (each task's labels drawn equally often); uniform when the split carries none (val and test
    are unweighted). ``segmentation_share`` redraws them so that samples with masks take that share of the draws
    (``data.segmentation_share``), graded ones the rest, balanced by DR grade as the metadata weights are."""
    if segmentation_share is not None:
        return task_share_weights(samples, segmentation_share)
    weights = torch.tensor([s.weight for s in samples], dtype=torch.double)
    if weights.sum() <= 0:
        weights = torch.ones(len(samples), dtype=torch.double)
    return weights


def task_share_weights(samples: Sequence[Sample], segmentation_share: float) -> torch.Tensor:
    """Weights summing to 1: ``segmentation_share`` spread evenly over the samples with masks, the rest over the
    graded ones, equally per DR grade. A sample with both carries both parts; a pool that is empty gives its share
    to the other."""
    if not 0.0 < segmentation_share < 1.0:
        raise ValueError(f"segmentation_share must lie strictly between 0 and 1, not {segmentation_share}")
    segmented = [i for i, s in enumerate(samples) if s.masks is not None]
    graded = [i for i, s in enumerate(samples) if s.dr_grade is not None]
    if not segmented or not graded:
        segmentation_share = 1.0 if segmented else 0.0
    weights = torch.zeros(len(samples), dtype=torch.double)
    for i in segmented:
        weights[i] += segmentation_share / len(segmented)
    grades = Counter(samples[i].dr_grade for i in graded)
    for i in graded:
        weights[i] += (1.0 - segmentation_share) / (len(grades) * grades[samples[i].dr_grade])
    if weights.sum() <= 0:
        weights = torch.ones(len(samples), dtype=torch.double)
    return weights


def balanced_gate_weights(samples: Sequence[Sample], gate_target: str = "task",
                          segmentation_share: float | None = None) -> tuple[float, float]:
    """(segmentation, classification) weights for the gate's loss that make both routes count equally under the
    training draws (``loss.gate_balance``): 1 / (2 x the expected share of draws whose target is that route).

    Without them a gate on a split that is 70% one route learns that route for everything (the demo's did, while a
    linear probe on its own pooled features separated the routes with ROC AUC 0.9). Where only one route is
    taken there is nothing to balance: (1, 1).
    """
    from core.data.targets import gate_vector

    weights = sample_weights(samples, segmentation_share).tolist()
    shares = [0.0, 0.0]
    for sample, weight in zip(samples, weights):
        vector = gate_vector(sample, gate_target)
        total = sum(vector)
        for k in range(2):
            if total:
                shares[k] += weight * vector[k] / total
    mass = sum(shares)
    if min(shares) <= 0:
        return 1.0, 1.0
    return 1.0 / (2.0 * shares[0] / mass), 1.0 / (2.0 * shares[1] / mass)


def weighted_sampler(samples: Sequence[Sample], num_samples: int | None = None, seed: int = 0,
                     segmentation_share: float | None = None) -> WeightedRandomSampler:
    generator = torch.Generator().manual_seed(seed)
    return WeightedRandomSampler(sample_weights(samples, segmentation_share), num_samples or len(samples),
                                 replacement=True, generator=generator)


class DistributedWeightedSampler(Sampler[int]):
    """Weighted draws split across ranks: every rank draws the same seeded sequence and takes its own stride.

    torch offers WeightedRandomSampler and DistributedSampler but not both at once; this is the small piece
    between them. ``set_epoch`` changes the draw each epoch, as DistributedSampler does.
    """

    def __init__(self, samples: Sequence[Sample], num_replicas: int, rank: int, num_samples: int | None = None,
                 seed: int = 0, segmentation_share: float | None = None) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        self.weights = sample_weights(samples, segmentation_share)
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
