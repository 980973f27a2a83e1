"""Building the model and its loss from the run config, so the trainer, evaluator and Predictor agree."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core.config import LossConfig, ModelConfig
from core.model.gated import GatedMultiTaskModel
from core.model.losses import MultiTaskLoss


def model_signature(config: ModelConfig) -> dict[str, Any]:
    """The settings that decide tensor shapes: a weights file must match them to load."""
    return {"backbone": config.backbone, "decoder_channels": list(config.decoder_channels),
            "gate_hidden": config.gate_hidden, "pooling": config.pooling,
            "gate_input": config.gate_input, "coarse_reads": config.coarse_reads,
            "coarse_summary": config.coarse_summary}


def build_model(config: ModelConfig, load_pretrained: bool = True) -> GatedMultiTaskModel:
    """``load_pretrained=False`` skips the backbone's starting weights, local or from timm's hub (a trained run's
    weights are about to be loaded anyway, and loading one must never reach for the network)."""
    return GatedMultiTaskModel(
        backbone=config.backbone,
        pretrained_weights=config.pretrained_weights if load_pretrained else None,
        pretrained=config.pretrained if load_pretrained else "none",
        decoder_channels=tuple(config.decoder_channels),
        gate_hidden=config.gate_hidden,
        dropout=config.dropout,
        drop_path_rate=config.drop_path_rate,
        pooling=config.pooling,
        gate_input=config.gate_input,
        gate_trains_coarse=config.gate_trains_coarse,
        coarse_reads=config.coarse_reads,
        coarse_summary=config.coarse_summary,
        glance_size=config.glance_size,
    )


def build_loss(config: LossConfig, gate_class_weights: Sequence[float] | None = None) -> MultiTaskLoss:
    """``gate_class_weights`` come from the training split (``loss.gate_balance``), which the config cannot know."""
    return MultiTaskLoss(
        seg_weight=config.seg_weight,
        cls_weight=config.cls_weight,
        gate_weight=config.gate_weight,
        entropy_coef=config.entropy_coef,
        bce_pos_weight=config.bce_pos_weight,
        dice=config.dice,
        pixel=config.pixel,
        focal_gamma=config.focal_gamma,
        overlap=config.overlap,
        tversky_alpha=config.tversky_alpha,
        tversky_beta=config.tversky_beta,
        dr_class_weights=config.dr_class_weights,
        dme_class_weights=config.dme_class_weights,
        coarse_weight=config.coarse_weight,
        gate_class_weights=gate_class_weights,
    )
