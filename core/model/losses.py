"""The losses of the gated model: segmentation, classification and gate, combined by task presence.

Parts (``L`` is each part's loss, averaged over the samples it applies to):

- ``seg = seg_bce + seg_dice`` over the samples routed to the decoder that carry masks (``mask_valid``), and within
  them over the channels labelled for that sample (``mask_channels``: a crop leaves out the optic disc). BCE is
  the mean over every pixel and lesion channel, with optional per-lesion ``pos_weight``; soft Dice is
  ``1 - mean_c (2 sum(p t) + s) / (sum p + sum t + s)``, the sums taken per channel over the whole sub-batch
  (``dice="batch"``, default) or per image and then averaged (``dice="image"``). Batch Dice suits rare lesions: an
  image without soft exudates gives per-image Dice 1 or ~0 for a few stray pixels, a noisy signal, while pooled
  over the batch the rare positives count. ``s = 1``. Two switches trade these for terms that weigh rare positives
  more (issue 19's small lesions): ``pixel="focal"`` multiplies each pixel's BCE by ``(1 - p_t)^gamma`` (Lin et al.
  2017; ``p_t`` the probability given to the true class), so the millions of easy background pixels stop drowning
  the few lesion pixels; ``overlap="tversky"`` replaces Dice by ``1 - (TP + s/2) / (TP + a FP + b FN + s/2)`` with
  soft counts (Salehi et al. 2017), and ``b > a`` makes a missed lesion pixel cost more than a false one (``a = b =
  0.5`` is Dice exactly). The logged names stay ``seg_bce`` and ``seg_dice`` (the pixel and the overlap term).
- ``cls = dr + dme``: cross-entropy with ``ignore_index=-100`` over the samples routed to the classification head,
  each term present only if some of its labels are valid; optional class weights.
- ``gate = gate_ce + entropy_coef * gate_entropy``. ``gate_ce`` is soft-target cross-entropy against the task
  vector normalised to sum 1 (plain CE for a one-hot task; [0.5, 0.5] for a sample with both annotations, so
  either route is equally right). ``gate_entropy`` is the mean entropy H(p) = -sum p log p of the gate
  probabilities (ln 2 at most). A positive ``entropy_coef`` (default 0.01) penalises entropy and pushes the gate
  towards confident routing; a negative one rewards entropy and keeps the gate uncertain, exploring.

- ``coarse = coarse_bce + coarse_dice``, the same two losses for the coarse lesion head (``model.gate_input:
  lesions``, core/model/coarse.py) against the masks max-pooled to its stride-16 grid, on every sample with masks.

Task presence: with weights ``w = {seg, cls, gate, coarse}`` (``coarse`` only for a model with the coarse head) and ``P`` the parts present in the batch (a part is absent when
no sample reached it with a valid label),

    total = (sum_k w_k) * (sum_{k in P} w_k L_k) / (sum_{k in P} w_k)

so with every part present ``total = sum_k w_k L_k`` exactly, and an absent part's weight is shared out among the
present ones in proportion to their own weights: the loss scale (hence the effective learning rate) does not drop
in a batch that happens to hold no segmentation images. A misrouted sample (the gate sent it to an expert it has no
labels for) contributes nothing there and teaches only the gate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from core.model.coarse import coarse_targets
from core.model.gated import ModelOutput
from core.vocabulary import IGNORE_INDEX, NUM_DME_RISKS, NUM_DR_GRADES, NUM_LESIONS

DiceMode = Literal["batch", "image"]
PixelLoss = Literal["bce", "focal"]
OverlapLoss = Literal["dice", "tversky"]


def soft_tversky_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.5, beta: float = 0.5,
                      mode: DiceMode = "batch", smooth: float = 1.0,
                      channels: torch.Tensor | None = None) -> torch.Tensor:
    """1 - mean soft Tversky index over channels (and images for ``mode="image"``); logits and target (n, C, H, W).

    ``alpha`` weighs the false positives, ``beta`` the false negatives; 0.5 and 0.5 is soft Dice. ``channels`` (n, C)
    bool marks the (image, channel) pairs that carry a label; the others are left out of the sums, and a channel (or
    pair) without any label is left out of the mean. Written here rather than taken from MONAI or
    segmentation_models_pytorch: neither pools over the batch while leaving out unlabelled (image, channel) pairs.
    """
    probs = logits.float().sigmoid()
    target = target.float()
    if channels is not None:
        weight = channels.float()[:, :, None, None]
        probs, target = probs * weight, target * weight
    dims = (0, 2, 3) if mode == "batch" else (2, 3)
    true_positive = (probs * target).sum(dims)
    false_positive = probs.sum(dims) - true_positive
    false_negative = target.sum(dims) - true_positive
    index = (true_positive + smooth / 2) / (true_positive + alpha * false_positive + beta * false_negative
                                            + smooth / 2)
    if channels is None:
        return 1 - index.mean()
    labelled = channels.any(0) if mode == "batch" else channels
    return 1 - index[labelled].mean() if bool(labelled.any()) else logits.float().sum() * 0.0


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, mode: DiceMode = "batch",
                   smooth: float = 1.0, channels: torch.Tensor | None = None) -> torch.Tensor:
    """1 - mean soft Dice, ``1 - (2 sum(p t) + s) / (sum p + sum t + s)``: the Tversky loss at 0.5 and 0.5."""
    return soft_tversky_loss(logits, target, 0.5, 0.5, mode, smooth, channels)


def bce_loss(logits: torch.Tensor, target: torch.Tensor, pos_weight: torch.Tensor | None = None,
             channels: torch.Tensor | None = None, gamma: float = 0.0) -> torch.Tensor:
    """Mean BCE over every labelled pixel and channel; ``pos_weight`` (C,) scales each lesion's positive pixels,
    ``channels`` (n, C) bool leaves out the (image, channel) pairs without a label, and ``gamma > 0`` makes it the
    focal loss (each pixel's term times ``(1 - p_t)^gamma``; torchvision's ``sigmoid_focal_loss`` computes the
    same factor, but takes one alpha for all channels instead of a positive weight per lesion)."""
    weight = None if pos_weight is None else pos_weight.to(logits.device).view(1, -1, 1, 1)
    logits, target = logits.float(), target.float()
    if channels is None and gamma == 0:
        return F.binary_cross_entropy_with_logits(logits, target, pos_weight=weight)
    per_pixel = F.binary_cross_entropy_with_logits(logits, target, pos_weight=weight, reduction="none")
    if gamma > 0:
        probs = logits.sigmoid()
        p_true = probs * target + (1 - probs) * (1 - target)
        per_pixel = per_pixel * (1 - p_true).pow(gamma)
    if channels is None:
        return per_pixel.mean()
    mask = channels.float()[:, :, None, None].expand_as(logits)
    return (per_pixel * mask).sum() / mask.sum().clamp_min(1.0)


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy against a probability target (rows summing to 1)."""
    return -(target * logits.float().log_softmax(dim=1)).sum(dim=1)


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Per-sample entropy in nats; 0 log 0 taken as 0."""
    probs = probs.float()
    return -(probs * probs.clamp_min(1e-12).log()).sum(dim=1)


def _optional_buffer(values: Sequence[float] | torch.Tensor | None, size: int, name: str) -> torch.Tensor | None:
    if values is None:
        return None
    tensor = torch.as_tensor(values, dtype=torch.float32).flatten()
    if tensor.numel() != size:
        raise ValueError(f"{name} needs {size} values, got {tensor.numel()}")
    return tensor


class MultiTaskLoss(nn.Module):
    """``(output, batch) -> (total, parts)``; see the module docstring for the formulas and the presence rule.

    ``parts`` holds plain numbers for logging: ``total``, ``gate_entropy`` and the counts ``n_seg_samples`` /
    ``n_cls_samples`` (samples that reached the expert with a valid label), ``n_gate_samples`` (whole images with a
    task: crops, ``whole=False``, give the gate no target) and ``misrouted`` (samples sent to no expert of their own
    task) always; ``gate``, ``gate_ce``, ``gate_acc`` whenever a sample has a task (any real
    batch); ``seg``, ``seg_bce``, ``seg_dice`` and ``cls``, ``dr``, ``dme`` only when present in the batch. An absent
    part is left out rather than logged as 0 or NaN, so per-epoch means average only the batches that had it.
    """

    def __init__(
        self,
        seg_weight: float = 1.0,
        cls_weight: float = 1.0,
        gate_weight: float = 1.0,
        entropy_coef: float = 0.01,
        bce_pos_weight: Sequence[float] | None = None,
        dr_class_weights: Sequence[float] | None = None,
        dme_class_weights: Sequence[float] | None = None,
        dice: DiceMode = "batch",
        coarse_weight: float = 1.0,
        gate_class_weights: Sequence[float] | None = None,
        dice_smooth: float = 1.0,
        pixel: PixelLoss = "bce",
        focal_gamma: float = 2.0,
        overlap: OverlapLoss = "dice",
        tversky_alpha: float = 0.3,
        tversky_beta: float = 0.7,
        num_lesions: int = NUM_LESIONS,
        num_dr: int = NUM_DR_GRADES,
        num_dme: int = NUM_DME_RISKS,
    ) -> None:
        super().__init__()
        if dice not in ("batch", "image"):
            raise ValueError(f"dice must be 'batch' or 'image', got {dice!r}")
        weights = {"seg": float(seg_weight), "cls": float(cls_weight), "gate": float(gate_weight),
                   "coarse": float(coarse_weight)}
        if any(w < 0 for w in weights.values()):
            raise ValueError(f"loss weights must be >= 0, got {weights}")
        if pixel not in ("bce", "focal") or overlap not in ("dice", "tversky"):
            raise ValueError(f"pixel must be 'bce' or 'focal' and overlap 'dice' or 'tversky', got {pixel!r}, "
                             f"{overlap!r}")
        if focal_gamma < 0 or min(tversky_alpha, tversky_beta) < 0:
            raise ValueError("focal_gamma, tversky_alpha and tversky_beta must be >= 0")
        self.weights = weights
        # the segmentation expert's terms (the coarse head keeps BCE + Dice: its cells are positive far more often)
        self.focal_gamma = float(focal_gamma) if pixel == "focal" else 0.0
        self.overlap_weights = (float(tversky_alpha), float(tversky_beta)) if overlap == "tversky" else (0.5, 0.5)
        self.entropy_coef = float(entropy_coef)
        self.dice = dice
        self.dice_smooth = float(dice_smooth)
        # Buffers, so that .to(device) moves them with the module and checkpoints need not store them.
        self.register_buffer("bce_pos_weight", _optional_buffer(bce_pos_weight, num_lesions, "bce_pos_weight"),
                             persistent=False)
        self.register_buffer("dr_class_weights", _optional_buffer(dr_class_weights, num_dr, "dr_class_weights"),
                             persistent=False)
        self.register_buffer("dme_class_weights", _optional_buffer(dme_class_weights, num_dme, "dme_class_weights"),
                             persistent=False)
        # (segmentation, classification): each gate sample's cross-entropy is weighted by its target route's
        # weight (loss.gate_balance), so that the majority route does not win by default
        self.register_buffer("gate_class_weights", _optional_buffer(gate_class_weights, 2, "gate_class_weights"),
                             persistent=False)

    # -- parts -------------------------------------------------------------------------------------------------

    def segmentation(self, output: ModelOutput, batch: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], int]:
        if output.seg_logits is None:
            return {}, 0
        index = output.seg_index
        valid = batch["mask_valid"].to(index.device).bool().index_select(0, index)
        if not bool(valid.any()):
            return {}, 0
        logits = output.seg_logits[valid]
        target = batch["mask"].to(logits.device).index_select(0, index)[valid]
        if target.shape != logits.shape:
            raise ValueError(f"masks {tuple(target.shape)} do not match segmentation logits {tuple(logits.shape)}")
        channels = batch.get("mask_channels")
        if channels is not None:
            channels = channels.to(index.device).bool().index_select(0, index)[valid].to(logits.device)
        bce = bce_loss(logits, target, self.bce_pos_weight, channels, self.focal_gamma)
        dice = soft_tversky_loss(logits, target, *self.overlap_weights, self.dice, self.dice_smooth, channels)
        return {"seg_bce": bce, "seg_dice": dice, "seg": bce + dice}, int(valid.sum())

    def coarse(self, output: ModelOutput, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """The coarse lesion head (``model.gate_input: lesions``) against the masks max-pooled to its grid, on every
        sample with masks whatever its route: it runs for all of them, as the gate's input."""
        logits = output.coarse_logits
        if logits is None:
            return {}
        valid = batch["mask_valid"].to(logits.device).bool()
        if not bool(valid.any()):
            return {}
        target = coarse_targets(batch["mask"].to(logits.device)[valid], tuple(logits.shape[2:]))
        channels = batch.get("mask_channels")
        if channels is not None:
            channels = channels.to(logits.device).bool()[valid]
        logits = logits[valid]
        # No positive weights here: they make up for lesions covering 0.1-2 % of pixels, but a cell of 16x16 pixels
        # is positive far more often, and weighting it again taught the head lesions everywhere (mean p(MA) 0.27 on
        # real photographs), which no gate could read.
        bce = bce_loss(logits, target, None, channels)
        dice = soft_dice_loss(logits, target, self.dice, self.dice_smooth, channels)
        return {"coarse_bce": bce, "coarse_dice": dice, "coarse": bce + dice}

    def classification(self, output: ModelOutput, batch: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], int]:
        if output.dr_logits is None or output.dme_logits is None:
            return {}, 0
        index = output.cls_index
        parts: dict[str, torch.Tensor] = {}
        reached = torch.zeros(index.numel(), dtype=torch.bool, device=index.device)
        for name, logits, weight in (("dr", output.dr_logits, self.dr_class_weights),
                                     ("dme", output.dme_logits, self.dme_class_weights)):
            labels = batch[name].to(index.device).long().index_select(0, index)
            valid = labels != IGNORE_INDEX
            if bool(valid.any()):
                # Valid rows only: cross_entropy over all-ignored rows is NaN, and this keeps the mean over the
                # samples that really have the label.
                parts[name] = F.cross_entropy(logits[valid].float(), labels[valid], weight=weight)
                reached |= valid
        if parts:
            parts["cls"] = sum(parts.values())
        return parts, int(reached.sum())

    def gate(self, output: ModelOutput, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        logits = output.gate_logits
        target = _gate_vector(batch, logits.shape[0]).to(logits.device)
        has_task = target.sum(dim=1) > 0
        if batch.get("whole") is not None:  # crops of a photograph must not teach the gate what a crop looks like
            has_task &= batch["whole"].to(has_task.device).bool()
        h = entropy(output.gate_probs).mean()
        parts = {"gate_entropy": h, "n_gate_samples": has_task.sum().float()}
        if bool(has_task.any()):
            target = target[has_task] / target[has_task].sum(dim=1, keepdim=True)
            ce = soft_cross_entropy(logits[has_task], target)
            if self.gate_class_weights is None:
                parts["gate_ce"] = ce.mean()
            else:
                weight = target @ self.gate_class_weights.to(target.dtype)
                parts["gate_ce"] = (weight * ce).sum() / weight.sum()
            parts["gate"] = parts["gate_ce"] + self.entropy_coef * h
            chosen = output.chosen_task()[has_task]
            parts["gate_acc"] = (target.gather(1, chosen[:, None]) > 0).float().mean()
        return parts

    # -- total -------------------------------------------------------------------------------------------------

    def forward(self, output: ModelOutput, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        seg, n_seg = self.segmentation(output, batch)
        cls, n_cls = self.classification(output, batch)
        gate = self.gate(output, batch)
        coarse = self.coarse(output, batch)
        terms = {name: part[name] for name, part in (("seg", seg), ("cls", cls), ("gate", gate), ("coarse", coarse))
                 if name in part}
        # a model without the coarse head has no such part at all: its weight must not join the total's scale
        weights = self.weights if output.coarse_logits is not None else {
            k: w for k, w in self.weights.items() if k != "coarse"}
        total = combine(terms, weights, anchor=output.gate_logits)

        wanted = _gate_vector(batch, output.batch_size).to(output.route.device) > 0  # routed where the gate should
        misrouted = int((~(output.route & wanted).any(dim=1) & wanted.any(dim=1)).sum())
        parts: dict[str, float] = {k: float(v.detach()) for k, v in {**seg, **cls, **gate, **coarse}.items()}
        parts.update(total=float(total.detach()), n_seg_samples=n_seg, n_cls_samples=n_cls, misrouted=misrouted)
        return total, parts


def combine(terms: Mapping[str, torch.Tensor], weights: Mapping[str, float],
            anchor: torch.Tensor | None = None) -> torch.Tensor:
    """The task-presence rule: ``sum(weights) * sum_present(w L) / sum_present(w)``.

    With nothing present (or only zero-weight parts) the total is a zero that still hangs on ``anchor``'s graph,
    so ``backward()`` works and every rank of a distributed run calls it the same way.
    """
    present = sum(weights[k] for k in terms)
    if not terms or present <= 0:
        if anchor is None:
            return torch.zeros(())
        return anchor.float().sum() * 0.0
    weighted = sum(weights[k] * terms[k] for k in terms)
    return weighted * (sum(weights.values()) / present)


def _gate_vector(batch: Mapping[str, Any], batch_size: int) -> torch.Tensor:
    """(B, 2) the gate's targets (``model.gate_target``, core.data.targets); the task vectors when absent."""
    if batch.get("gate_vector") is not None:
        return batch["gate_vector"].float()
    return _task_vector(batch, batch_size)


def _task_vector(batch: Mapping[str, Any], batch_size: int) -> torch.Tensor:
    """(B, 2) float task vectors from the batch; derived from ``task`` ids when absent."""
    if batch.get("task_vector") is not None:
        return batch["task_vector"].float()
    return F.one_hot(batch["task"].long(), 2).float()
