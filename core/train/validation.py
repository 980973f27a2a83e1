"""Running sums for the per-epoch history: losses, gate accuracy, grade accuracy and per-lesion Dice.

Everything is accumulated as sums and counts (never as means of means) so that values from several batches, or
several distributed ranks, combine exactly.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import torch

from core.model.gated import ModelOutput
from core.vocabulary import LESIONS

# Loss parts averaged per batch in the history; counts are summed.
LOSS_KEYS = ("total", "seg", "seg_bce", "seg_dice", "cls", "dr", "dme", "gate", "gate_ce", "gate_entropy",
             "consistency")


class LossMeter:
    """Batch-weighted means of loss parts; a part absent from a batch does not dilute its mean."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)

    def add(self, parts: Mapping[str, float], batch_size: int) -> None:
        for key in LOSS_KEYS:
            if key in parts:
                self.sums[f"{key}:sum"] += parts[key] * batch_size
                self.sums[f"{key}:n"] += batch_size
        for key in ("misrouted", "n_seg_samples", "n_cls_samples"):
            self.sums[f"{key}:count"] += parts.get(key, 0)
        self.sums["images"] += batch_size

    def state(self) -> dict[str, float]:
        return dict(self.sums)

    @staticmethod
    def summarise(sums: Mapping[str, float], prefix: str) -> dict[str, float]:
        out = {f"{prefix}/{key}": sums[f"{key}:sum"] / sums[f"{key}:n"]
               for key in LOSS_KEYS if sums.get(f"{key}:n", 0) > 0}
        if sums.get("images", 0) > 0:
            out[f"{prefix}/misrouted_rate"] = sums.get("misrouted:count", 0.0) / sums["images"]
        return out


class OutcomeMeter:
    """Correct counts from a ``route="both"`` pass: each head is judged on the samples of its own task."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)

    @torch.no_grad()
    def add(self, output: ModelOutput, batch: Mapping[str, Any]) -> None:
        wanted = batch.get("gate_vector", batch["task_vector"]).to(output.gate_logits.device) > 0  # the gate's target
        chosen = output.chosen_task()
        self.sums["gate_correct"] += float(wanted.gather(1, chosen[:, None]).sum())
        self.sums["gate_n"] += float(wanted.any(dim=1).sum())
        if output.dr_logits is not None:
            index = output.cls_index
            for name, logits in (("dr", output.dr_logits), ("dme", output.dme_logits)):
                labels = batch[name].to(logits.device)[index]
                valid = labels >= 0
                self.sums[f"{name}_correct"] += float((logits.argmax(dim=1)[valid] == labels[valid]).sum())
                self.sums[f"{name}_n"] += float(valid.sum())
        if output.seg_logits is not None:
            index = output.seg_index
            valid = batch["mask_valid"].to(index.device)[index]
            if valid.any():
                predicted = output.seg_logits[valid].float() > 0  # sigmoid > 0.5
                truth = batch["mask"].to(predicted.device)[index][valid] > 0
                for channel, code in enumerate(LESIONS):
                    p, t = predicted[:, channel], truth[:, channel]
                    self.sums[f"dice_{code}_inter"] += float((p & t).sum())
                    self.sums[f"dice_{code}_pred"] += float(p.sum())
                    self.sums[f"dice_{code}_true"] += float(t.sum())

    def state(self) -> dict[str, float]:
        return dict(self.sums)

    @staticmethod
    def summarise(sums: Mapping[str, float], prefix: str) -> dict[str, float]:
        """Accuracies and pooled Dice; a lesion absent from the split's truth has no Dice (neither 1 nor 0).

        This is deliberately not the rule of ``core.evaluate.metrics.dice_iou`` (no value only where a lesion is
        absent from both truth and prediction, so a lesion predicted but absent from the truth scores 0): these
        figures pick the best epoch (``dice_mean`` enters ``score``), and a validation split without, say, soft
        exudates cannot measure them, so a 0 for the few such pixels an epoch predicts would say nothing about its
        segmentation yet outweigh the lesions the split does have. The rule is applied here only, once, on the
        split's totals (the sums add up over batches and distributed ranks); the Dice formula is the same.
        """
        out: dict[str, float] = {}
        for name in ("gate", "dr", "dme"):
            if sums.get(f"{name}_n", 0) > 0:
                out[f"{prefix}/{name}_acc"] = sums[f"{name}_correct"] / sums[f"{name}_n"]
        dice = []
        for code in LESIONS:
            denominator = sums.get(f"dice_{code}_pred", 0.0) + sums.get(f"dice_{code}_true", 0.0)
            if sums.get(f"dice_{code}_true", 0.0) > 0:
                value = 2 * sums[f"dice_{code}_inter"] / denominator
                out[f"{prefix}/dice_{code}"] = value
                dice.append(value)
        if dice:
            out[f"{prefix}/dice_mean"] = sum(dice) / len(dice)
        return out


def score(metrics: Mapping[str, float], prefix: str = "val") -> float | None:
    """One number to pick the best epoch: the mean of gate accuracy, mean Dice, DR and DME accuracy, over
    those the split can measure (a segmentation-only dataset is scored on gate and Dice alone)."""
    keys = [f"{prefix}/gate_acc", f"{prefix}/dice_mean", f"{prefix}/dr_acc", f"{prefix}/dme_acc"]
    values = [metrics[k] for k in keys if k in metrics]
    return sum(values) / len(values) if values else None
