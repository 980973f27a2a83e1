"""Semi-supervised lesion maps from the photographs without masks: a mean teacher and a consistency loss.

About 370 graded IDRiD photographs have no masks. Each training step also draws a batch of them: an exponential
moving average of the model (the teacher, Tarvainen & Valpola 2017) draws its lesion maps on the augmented photograph,
the model (the student) draws them on the same photograph with its colours and noise perturbed, and the student
is pulled towards the teacher (mean squared error of the probabilities). The perturbation is photometric only, so
both maps stay pixel-aligned without warping one into the other. The weight ramps up (Laine & Aila 2017) so that
the teacher is not copied while it still draws noise.

The average itself is torch's ``AveragedModel`` with its EMA rule; what is written here is the loss, the ramp and
the perturbation, which no library in the stack offers for segmentation maps.
"""

from __future__ import annotations

import math

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def consistency_ramp(step: int, total_steps: int, fraction: float) -> float:
    """The loss weight's factor at ``step``: exp(-5 (1 - t)^2) over the first ``fraction`` of the steps, then 1."""
    if fraction <= 0:
        return 1.0
    t = min(1.0, step / max(1.0, fraction * total_steps))
    return math.exp(-5.0 * (1.0 - t) ** 2)


def photometric_perturbation(images: torch.Tensor, generator: torch.Generator, strength: float = 0.2,
                             noise: float = 0.1) -> torch.Tensor:
    """Per-image contrast and brightness jitter and Gaussian noise on normalised images (same pixels, other colours).

    ``strength``: the contrast factor lies in [1 - strength, 1 + strength] and the brightness shift in
    [-strength, strength] (in units of the channel's standard deviation); ``noise``: the noise's standard deviation.
    """
    n = images.shape[0]
    shape = (n, 1, 1, 1)
    contrast = 1.0 + strength * (2.0 * torch.rand(shape, generator=generator) - 1.0)
    brightness = strength * (2.0 * torch.rand(shape, generator=generator) - 1.0)
    jitter = noise * torch.randn(images.shape, generator=generator)
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    out = (images - mean) * contrast.to(images) + mean + brightness.to(images) + jitter.to(images)
    return out.to(images.dtype)


def consistency_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the student's and the teacher's lesion probabilities, over pixels and lesions.

    MSE rather than cross-entropy: it is bounded, so a teacher confidently wrong on one photograph cannot dominate
    the step (the choice of the mean-teacher paper)."""
    if student_logits.shape != teacher_probs.shape:
        raise ValueError(f"student maps {tuple(student_logits.shape)} and teacher maps {tuple(teacher_probs.shape)} "
                         "differ in shape")
    return (student_logits.float().sigmoid() - teacher_probs.float()).pow(2).mean()


class MeanTeacher:
    """The exponential moving average of a model, kept on its device, updated after each optimizer step."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the teacher's EMA decay must lie strictly between 0 and 1, not {decay}")
        self.decay = decay
        self.average = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
        self.average.eval()

    def update(self, model: torch.nn.Module) -> None:
        self.average.update_parameters(model)

    @torch.no_grad()
    def lesion_probs(self, images: torch.Tensor) -> torch.Tensor:
        """The teacher's lesion probabilities (N x lesions x H x W), from its segmentation expert alone."""
        task = torch.tensor([[1.0, 0.0]], device=images.device).expand(images.shape[0], 2)
        output = self.average.module(images, route="oracle", task=task)
        return output.seg_logits.float().sigmoid()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.average.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.average.load_state_dict(state)
