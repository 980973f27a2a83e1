"""The gated multi-task model and its losses: ConvNeXt backbone, gate, segmentation decoder, classification head.

Imports nothing from ``core.data``: the data pipeline asks this package for ``backbone_normalization`` instead.
"""

from core.model.backbone import CONVNEXT_SIZES, Backbone, backbone_normalization, valid_backbones
from core.model.decoder import NUM_LESIONS, UnetDecoder
from core.model.gate import NUM_TASKS, Gate
from core.model.gated import (CLASSIFICATION, ROUTES, SEGMENTATION, GatedMultiTaskModel, ModelOutput, Route,
                              task_routes)
from core.model.heads import NUM_DME_RISKS, NUM_DR_GRADES, ClassificationHead
from core.model.losses import (IGNORE_INDEX, MultiTaskLoss, bce_loss, combine, entropy, soft_cross_entropy,
                               soft_dice_loss, soft_tversky_loss)

__all__ = [
    "CONVNEXT_SIZES", "Backbone", "backbone_normalization", "valid_backbones",
    "NUM_LESIONS", "UnetDecoder", "NUM_TASKS", "Gate",
    "CLASSIFICATION", "ROUTES", "SEGMENTATION", "GatedMultiTaskModel", "ModelOutput", "Route", "task_routes",
    "NUM_DME_RISKS", "NUM_DR_GRADES", "ClassificationHead",
    "IGNORE_INDEX", "MultiTaskLoss", "bce_loss", "combine", "entropy", "soft_cross_entropy", "soft_dice_loss", "soft_tversky_loss",
]
