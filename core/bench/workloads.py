"""The workloads the benchmark times: the training step of the gated model, and its single-task rivals.

The batch is synthetic noise of the right shapes: what is timed is compute, and compute does not depend on pixel
values. Half the batch is segmentation (with masks), half classification (with grades), as the balanced sampler
draws it in expectation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from core.config import LossConfig, ModelConfig
from core.model.factory import build_loss, build_model
from core.model.gated import GatedMultiTaskModel, pool
from core.vocabulary import IGNORE_INDEX


@dataclass
class Setting:
    """What one benchmark configuration runs: backbone, square input size, batch, device and precision."""

    backbone: str
    size: int
    batch: int
    device: torch.device
    bf16: bool = False
    channels_last: bool = True

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.bf16:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def describe(self) -> str:
        precision = "bf16" if self.bf16 else "fp32"
        memory = "channels_last" if self.channels_last else "contiguous"
        return f"{self.backbone}, {self.size} px, batch {self.batch}, {precision}, {memory}"


def mixed_batch(setting: Setting, seed: int = 0) -> dict[str, torch.Tensor]:
    """A 50/50 batch: the first half segmentation images, the second half grading images."""
    gen = torch.Generator().manual_seed(seed)
    n, size = setting.batch, setting.size
    task = torch.tensor([0] * (n // 2) + [1] * (n - n // 2))
    is_seg = task == 0
    image = torch.randn(n, 3, size, size, generator=gen)
    if setting.channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    mask = (torch.rand(n, 5, size, size, generator=gen) > 0.99).to(torch.uint8) * is_seg.view(-1, 1, 1, 1)
    batch = {
        "image": image,
        "task": task,
        "task_vector": nn.functional.one_hot(task, 2).float(),
        "mask": mask,
        "mask_valid": is_seg,
        "dr": torch.where(is_seg, IGNORE_INDEX, torch.randint(0, 5, (n,), generator=gen)),
        "dme": torch.where(is_seg, IGNORE_INDEX, torch.randint(0, 3, (n,), generator=gen)),
    }
    return {k: v.to(setting.device) for k, v in batch.items()}


def gated_model(setting: Setting) -> GatedMultiTaskModel:
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone=setting.backbone)).to(setting.device)
    return model.to(memory_format=torch.channels_last) if setting.channels_last else model


def steer_gate(model: GatedMultiTaskModel, task: torch.Tensor) -> torch.utils.hooks.RemovableHandle:
    """Make ``route="gate"`` send every sample to its own task's expert, as a trained gate does.

    A gate at random initialisation sends a batch wherever its bias points, often all of it one way, which would
    time a different workload on every run. The hook adds +-20 to the logits (the gate's own output still flows
    through, so its gradient and its cost are unchanged); the routing code path is the real one.
    """
    offset = nn.functional.one_hot(task, 2).float() * 40.0 - 20.0

    def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        return output + offset.to(output.device, output.dtype)

    return model.gate.register_forward_hook(hook)


def train_step(model: nn.Module, setting: Setting, batch: dict[str, torch.Tensor], route: str) -> Callable[[], None]:
    """One optimisation step as the trainer runs it: forward, multi-task loss, backward, clipping, AdamW."""
    criterion = build_loss(LossConfig()).to(setting.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def step() -> None:
        with setting.autocast():
            output = model(batch["image"], route=route, task=batch["task_vector"])
            loss, _ = criterion(output, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    return step


class UnetOnly(nn.Module):
    """The single-task segmentation rival: the same backbone and decoder, no gate, no classifier."""

    def __init__(self, backbone: str) -> None:
        super().__init__()
        full = build_model(ModelConfig(backbone=backbone))
        self.backbone, self.decoder = full.backbone, full.decoder

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decoder(images, self.backbone(images))


class ClassifierOnly(nn.Module):
    """The single-task grading rival: the same backbone and the two linear heads."""

    def __init__(self, backbone: str) -> None:
        super().__init__()
        full = build_model(ModelConfig(backbone=backbone))
        self.backbone, self.classifier, self.pooling = full.backbone, full.classifier, full.pooling

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.classifier(pool(self.backbone(images), self.pooling))


def single_task_models(setting: Setting) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    models = UnetOnly(setting.backbone), ClassifierOnly(setting.backbone)
    out = []
    for model in models:
        model = model.to(setting.device).eval()
        out.append(model.to(memory_format=torch.channels_last) if setting.channels_last else model)
    return out[0], out[1]
