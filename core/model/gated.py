"""The gated multi-task model: one ConvNeXt backbone, a gate, and two experts that run only where routed.

Routing is hard (argmax): an image the gate sends to classification never enters the segmentation decoder, which
is where almost all of the per-image cost beyond the backbone sits. Argmax is not differentiable, so the gate does
not learn through the experts' losses; it learns from its own cross-entropy against the true task (see
``losses.py``), which is well defined because every training image knows its task.

Routes:
- ``"gate"``: each sample goes to the expert its gate logits prefer (inference, and training once the gate is good);
- ``"oracle"``: each sample goes to the expert(s) of its true task; a multi-hot task vector sends a sample that
  carries both annotations to both experts (training: every label is used whatever the gate thinks);
- ``"both"``: every sample goes to both experts (evaluation of both heads on everything, Grad-CAM, ablations).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from core.model.backbone import Backbone
from core.model.coarse import CoarseLesionHead, glance_grid, lesion_summary, summary_width
from core.model.decoder import UnetDecoder
from core.model.gate import Gate, RunningStandardize
from core.model.heads import ClassificationHead
from core.vocabulary import (CLASSIFICATION, FORWARD_ROUTES, NUM_DME_RISKS, NUM_DR_GRADES, NUM_LESIONS, NUM_TASKS,
                             SEGMENTATION, ForwardRoute)

Route = ForwardRoute  # the forward pass's routes (core.vocabulary keeps them apart from training's train.route)
ROUTES = FORWARD_ROUTES
POOLINGS = ("avg", "multiscale")
# what the gate reads: pooled backbone features, the coarse lesion head's summary, or the summary of the model's own
# lesion maps on a smaller copy of the canvas (a glance, ``GatedMultiTaskModel.glance``)
GATE_INPUTS = ("pooled", "lesions", "glance")


@dataclass
class ModelOutput:
    """What one forward pass produced; the expert outputs hold only the rows of the samples routed to them.

    ``seg_logits[i]`` belongs to sample ``seg_index[i]`` of the batch, ``dr_logits[j]`` to ``cls_index[j]``.
    """

    gate_logits: torch.Tensor  # (B, 2): segmentation, classification
    gate_probs: torch.Tensor  # (B, 2) float32 softmax of gate_logits
    route: torch.Tensor  # (B, 2) bool: which expert(s) each sample was sent to
    seg_index: torch.Tensor  # (n_seg,) long
    seg_logits: torch.Tensor | None  # (n_seg, 5, H, W), None when no sample went to segmentation
    cls_index: torch.Tensor  # (n_cls,) long
    dr_logits: torch.Tensor | None  # (n_cls, 5)
    dme_logits: torch.Tensor | None  # (n_cls, 3)
    coarse_logits: torch.Tensor | None = None  # (B, 5, H/16, W/16) for every sample, with gate_input="lesions"
    glance_logits: torch.Tensor | None = None  # (B, 5, H/16, W/16) for every sample, with gate_input="glance"

    @property
    def batch_size(self) -> int:
        return int(self.gate_logits.shape[0])

    def chosen_task(self) -> torch.Tensor:
        """The gate's choice per sample (0 segmentation, 1 classification), whatever route was used."""
        return self.gate_logits.argmax(dim=1)

    def detach(self) -> ModelOutput:
        return replace(self, **{f.name: None if getattr(self, f.name) is None else getattr(self, f.name).detach()
                                for f in fields(self)})


def task_routes(task: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(B,) task ids or (B, 2) multi-hot task vectors -> (B, 2) bool routes."""
    if task.ndim == 1 and task.shape[0] == batch_size:
        if task.is_floating_point() or task.dtype == torch.bool:
            raise ValueError(f"a (B,) task must hold integer task ids 0/1, got dtype {task.dtype}")
        if bool(((task < 0) | (task >= NUM_TASKS)).any()):
            raise ValueError(f"task ids must be 0 (segmentation) or 1 (classification), got {task.tolist()}")
        return nn.functional.one_hot(task.long(), NUM_TASKS).bool()
    if task.ndim == 2 and tuple(task.shape) == (batch_size, NUM_TASKS):
        return task > 0
    raise ValueError(f"task must have shape ({batch_size},) or ({batch_size}, {NUM_TASKS}), got {tuple(task.shape)}")


class GatedMultiTaskModel(nn.Module):
    """Backbone -> gate -> segmentation decoder and/or classification head, per sample.

    Every part normalises per sample (LayerNorm in ConvNeXt and the heads, GroupNorm in the decoder), so a sample's
    outputs do not depend on which other samples share its batch or its route; in eval mode ``route="gate"`` gives
    exactly the rows ``route="both"`` gives for the same samples.
    """

    def __init__(
        self,
        backbone: str = "convnext_atto",
        pretrained_weights: str | Path | None = None,
        decoder_channels: Sequence[int] = (128, 64, 32, 16),
        stem_channels: int = 16,
        full_channels: int = 8,
        gate_hidden: int = 64,
        dropout: float = 0.1,
        drop_path_rate: float = 0.0,
        pooling: str = "avg",
        gate_input: str = "pooled",
        gate_trains_coarse: bool = False,
        coarse_reads: str = "deep",
        coarse_summary: str = "basic",
        glance_size: int = 384,
        pretrained: str = "none",
        num_lesions: int = NUM_LESIONS,
        num_dr: int = NUM_DR_GRADES,
        num_dme: int = NUM_DME_RISKS,
    ) -> None:
        super().__init__()
        # Everything needed to rebuild the architecture (not the weights) from a checkpoint's config.
        self.hparams = dict(backbone=backbone, decoder_channels=tuple(decoder_channels), stem_channels=stem_channels,
                            full_channels=full_channels, gate_hidden=gate_hidden, dropout=dropout,
                            drop_path_rate=drop_path_rate, pooling=pooling, gate_input=gate_input,
                            gate_trains_coarse=gate_trains_coarse, coarse_reads=coarse_reads,
                            coarse_summary=coarse_summary, glance_size=glance_size, num_lesions=num_lesions,
                            num_dr=num_dr, num_dme=num_dme)
        self.backbone = Backbone(backbone, pretrained_weights, drop_path_rate, pretrained)
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        self.pooling = pooling
        if gate_input not in GATE_INPUTS:
            raise ValueError(f"gate_input must be one of {', '.join(GATE_INPUTS)}, got {gate_input!r}")
        self.gate_input = gate_input
        self.gate_trains_coarse = gate_trains_coarse
        self.coarse_summary = coarse_summary
        if glance_size < 32:
            raise ValueError(f"the glance is at least 32 px on its longer side, not {glance_size}")
        self.glance_size = glance_size
        pooled_width = self.backbone.channels[-1] if pooling == "avg" else 2 * sum(self.backbone.channels)
        self.coarse: CoarseLesionHead | None = None
        evidence = 0
        if gate_input in ("lesions", "glance"):
            if gate_input == "lesions":
                self.coarse = CoarseLesionHead(self.backbone.channels, num_lesions, reads=coarse_reads)
            evidence = summary_width(num_lesions, coarse_summary)
            self.evidence_norm = RunningStandardize(evidence)  # read by the gate and the classifier alike
            self.gate = Gate(evidence, gate_hidden, dropout, normalize=False)
        else:
            self.gate = Gate(pooled_width, gate_hidden, dropout)
        self.decoder = UnetDecoder(self.backbone.channels, decoder_channels, stem_channels, full_channels, num_lesions)
        self.classifier = ClassificationHead(pooled_width, dropout, num_dr, num_dme, evidence=evidence)

    @property
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) the input images must be normalised with."""
        return self.backbone.normalization

    def num_parameters(self) -> dict[str, int]:
        parts = {"backbone": self.backbone, "gate": self.gate, "decoder": self.decoder, "classifier": self.classifier}
        if self.coarse is not None:
            parts["coarse"] = nn.ModuleList([self.coarse, self.evidence_norm])
        counts = {name: sum(p.numel() for p in part.parameters()) for name, part in parts.items()}
        counts["total"] = sum(counts.values())
        return counts

    def summary(self) -> str:
        counts = self.num_parameters()
        strides = ", ".join(f"/{r}:{c}" for r, c in zip(self.backbone.reductions, self.backbone.channels))
        return (f"{self.backbone.name} (features {strides}); parameters: "
                + ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in counts.items()))

    def segment(self, images: torch.Tensor) -> torch.Tensor:
        """Lesion logits for every image, skipping gate and classifier: what sliding windows need."""
        return self.decoder(images, self.backbone(images))

    def pooled_features(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        return pool(features, self.pooling)

    def heads_input(self, features: Sequence[torch.Tensor], detach: bool = True) -> tuple[
            torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(pooled features, coarse lesion summary or None, coarse lesion logits or None): what the gate and the
        classifier read. The summary is standardised by its running statistics (``RunningStandardize``) and detached: the gate and the grade heads learn to read the lesion maps, and
        the maps learn only from masks, so 300 grades cannot bend them into a shortcut (the pooled gate's failure).
        ``detach=False`` lets a grade's gradient reach the features through the coarse head: what Grad-CAM needs."""
        if self.gate_input == "glance":
            raise ValueError("a glance gate reads the images, not the canvas's features: use glance_input(images)")
        pooled = pool(features, self.pooling)
        if self.coarse is None:
            return pooled, None, None
        coarse = self.coarse(features)
        if self.gate_trains_coarse and torch.is_grad_enabled():
            # the gate's and the grade heads' gradient reaches the coarse head, never the backbone: the head's maps
            # then also learn from every graded photograph which lesions make an eye referable (multiple-instance
            # learning through the maximum and top-1% statistics), on features the graded photographs cannot bend
            read = self.coarse([f.detach() for f in features])
        else:
            read = coarse.detach() if detach else coarse
        return pooled, self.evidence_norm(lesion_summary(read, self.coarse_summary)), coarse

    def glance(self, images: torch.Tensor, grad: bool = False) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(features of the small copy, lesion logits on the canvas's stride-16 grid): the model's own backbone and
        decoder on the canvas shrunk to ``glance_size`` px on its longer side, its lesion probabilities max-pooled to
        the grid a coarse head would draw (``coarse.glance_grid``), as logits.

        Why: a coarse head taught to copy the decoder is a second, weaker draw of the same evidence, and its seed
        moved the gate's validation ROC AUC by 0.03 (docs/training.md). The decoder's own maps on a 384-px copy of
        the 512-px canvas cost about a third of one full pass at 512 px, and on real IDRiD gave the referable gate a
        cross-validated ROC AUC of 0.94-0.95 against 0.91 for the coarse head. Without gradient (``grad=True``
        keeps it, for Grad-CAM): the gate and the grade heads learn to read the maps, never to bend them."""
        scale = self.glance_size / max(images.shape[-2:])
        small = images if scale >= 1 else F.interpolate(images, scale_factor=scale, mode="bilinear",
                                                       align_corners=False, antialias=True)
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            small = small.contiguous(memory_format=torch.channels_last)
            features = self.backbone(small)
            logits = glance_grid(self.decoder(small, features), images.shape[-2:])
        return features, logits

    def glance_input(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(pooled features of the glance, its standardised lesion summary, its logits): the glance gate's and the
        classification expert's input."""
        features, logits = self.glance(images)
        return pool(features, self.pooling), self.evidence_norm(lesion_summary(logits, self.coarse_summary)), logits

    def gate_logits(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """The gate alone on the backbone's features: no expert runs."""
        pooled, summary, _ = self.heads_input(features)
        return self.gate(pooled if summary is None else summary)

    def gate_logits_of(self, images: torch.Tensor) -> torch.Tensor:
        """The gate alone on normalised canvases, whatever it reads: no expert runs on the full canvas."""
        if self.gate_input == "glance":
            return self.gate(self.glance_input(images)[1])
        return self.gate_logits(self.backbone(images))

    def classify(self, features: Sequence[torch.Tensor], detach: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """The classification expert alone on the backbone's features (Grad-CAM, with ``detach=False``)."""
        pooled, summary, _ = self.heads_input(features, detach)
        return self.classifier(pooled, summary)

    def _routes(self, route: str, gate_logits: torch.Tensor, task: torch.Tensor | None,
                threshold: float | None = None) -> torch.Tensor:
        batch_size = gate_logits.shape[0]
        if route == "gate":
            if threshold is not None:  # the run's operating point on p(segmentation), chosen for sensitivity
                segment = gate_logits.float().softmax(dim=1)[:, SEGMENTATION] >= threshold
                return torch.stack([segment, ~segment], dim=1)  # columns (segmentation, classification)
            return nn.functional.one_hot(gate_logits.argmax(dim=1), NUM_TASKS).bool()
        if route == "both":
            return torch.ones(batch_size, NUM_TASKS, dtype=torch.bool, device=gate_logits.device)
        if route == "oracle":
            if task is None:
                raise ValueError('route="oracle" needs the true task: pass task=(B,) ids or (B, 2) task vectors')
            return task_routes(task.to(gate_logits.device), batch_size)
        raise ValueError(f"unknown route {route!r}; expected one of {', '.join(ROUTES)}")

    def forward(self, images: torch.Tensor, route: Route = "gate", task: torch.Tensor | None = None,
                gate_threshold: float | None = None) -> ModelOutput:
        """``gate_threshold``: with ``route="gate"``, send to segmentation where p(segmentation) >= it instead of
        where it is the larger probability."""
        if route not in ROUTES:
            raise ValueError(f"unknown route {route!r}; expected one of {', '.join(ROUTES)}")
        glance = features = None
        if self.gate_input == "glance":  # the canvas's own backbone pass only for what is routed to segmentation
            pooled, summary, glance = self.glance_input(images)
            coarse = None
        else:
            features = self.backbone(images)
            pooled, summary, coarse = self.heads_input(features)
        gate_logits = self.gate(pooled if summary is None else summary)
        routes = self._routes(route, gate_logits, task, gate_threshold)
        seg_index = routes[:, SEGMENTATION].nonzero().flatten()
        cls_index = routes[:, CLASSIFICATION].nonzero().flatten()

        seg_logits = None
        if seg_index.numel():
            seg_images = _rows(images, seg_index)
            seg_features = self.backbone(seg_images) if features is None else [_rows(f, seg_index) for f in features]
            seg_logits = self.decoder(seg_images, seg_features)
        dr_logits = dme_logits = None
        if cls_index.numel():
            dr_logits, dme_logits = self.classifier(_rows(pooled, cls_index),
                                                    None if summary is None else _rows(summary, cls_index))
        return ModelOutput(gate_logits=gate_logits, gate_probs=gate_logits.float().softmax(dim=1), route=routes,
                           seg_index=seg_index, seg_logits=seg_logits, cls_index=cls_index,
                           dr_logits=dr_logits, dme_logits=dme_logits, coarse_logits=coarse, glance_logits=glance)


def pool(features: Sequence[torch.Tensor], mode: str) -> torch.Tensor:
    """The vector the gate and the classifier read.

    ``"avg"``: the mean of the deepest map. ``"multiscale"``: mean and max of every stage, concatenated; the max
    keeps a single bright exudate or dark haemorrhage visible to the grade heads instead of averaging it away,
    and the shallow stages carry small lesions the stride-32 map has blurred.
    """
    if mode == "avg":
        return features[-1].mean(dim=(2, 3))
    return torch.cat([torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1) for f in features], dim=1)


def _rows(tensor: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The sub-batch ``index``; the tensor itself when every row is selected (no copy)."""
    if index.numel() == tensor.shape[0]:
        return tensor
    return tensor.index_select(0, index)
