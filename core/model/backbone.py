"""The shared encoder: a timm ConvNeXt in ``features_only`` mode.

Everything downstream (gate, decoder, heads) is sized from ``feature_info`` rather than from a table of known
backbones, so any ConvNeXt size plugs in. ConvNeXt has no stride-2 feature map: its 4x4 patchify stem goes
straight to stride 4, and the four stages sit at strides 4, 8, 16 and 32.

Weights are never downloaded: ``pretrained_weights`` names a local timm checkpoint (``.safetensors``, ``.pth``,
``.bin``) of the same architecture, loaded through timm so that its key remapping and head stripping apply.
"""

from __future__ import annotations

import logging
from pathlib import Path

import timm
import torch
from timm.models import get_pretrained_cfg, split_model_name_tag
from torch import nn

from core.errors import ConfigError

# The sizes the studio is tested with, smallest first; other timm ConvNeXt variants (convnextv2_*, *_ols, ...)
# are accepted too since they expose the same four-stage feature pyramid.
CONVNEXT_SIZES = (
    "convnext_atto", "convnext_femto", "convnext_pico", "convnext_nano",
    "convnext_tiny", "convnext_small", "convnext_base",
)


def valid_backbones() -> list[str]:
    """Every timm ConvNeXt architecture name this model accepts."""
    return sorted(timm.list_models(["convnext_*", "convnextv2_*"]))


def check_backbone_name(name: str) -> str:
    """Return the architecture part of ``name`` (a ``.tag`` suffix is allowed) or raise ConfigError."""
    architecture, _ = split_model_name_tag(str(name))
    if architecture not in valid_backbones():
        raise ConfigError(
            f"unknown backbone {name!r}: expected a timm ConvNeXt, one of {', '.join(CONVNEXT_SIZES)} "
            f"(or another timm ConvNeXt variant: {', '.join(n for n in valid_backbones() if n not in CONVNEXT_SIZES)})"
        )
    return architecture


def backbone_normalization(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) the backbone was trained with, read from timm's registry without building the model.

    The data pipeline needs these before the model exists (and in worker processes that never build it).
    """
    check_backbone_name(name)
    cfg = get_pretrained_cfg(name)
    if cfg is None:  # a registered architecture without a default pretrained config: fall back to ImageNet
        return (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    return tuple(float(v) for v in cfg.mean), tuple(float(v) for v in cfg.std)


class _TimmLoadLog(logging.Handler):
    """Collects timm's load messages: with ``features_only`` timm loads non-strictly and only *logs* keys that
    did not fit, so a wrong checkpoint would otherwise leave a silently random backbone."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.missing: list[str] = []
        self.unexpected: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        for prefix, keys in (("Missing keys (", self.missing), ("Unexpected keys (", self.unexpected)):
            if message.startswith(prefix):
                keys.extend(k.strip() for k in message[len(prefix):].split(")", 1)[0].split(","))


def _create_pretrained(name: str, path: Path, drop_path_rate: float) -> nn.Module:
    if not path.is_file():
        raise ConfigError(f"pretrained_weights file not found: {path} (a local timm checkpoint for {name})")
    log = _TimmLoadLog()
    logger = logging.getLogger("timm.models._builder")
    old_level = logger.level
    logger.addHandler(log)
    logger.setLevel(logging.DEBUG)
    try:
        body = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                                 features_only=True, drop_path_rate=drop_path_rate)
    except (RuntimeError, KeyError, ValueError, OSError) as error:
        detail = " ".join(str(error).split())
        detail = detail if len(detail) <= 300 else detail[:297] + "..."
        raise ConfigError(f"pretrained_weights {path} does not fit backbone {name}: {detail}") from error
    finally:
        logger.removeHandler(log)
        logger.setLevel(old_level)
    # The classifier head is dropped on purpose in features_only mode; anything else missing is a wrong file.
    missing = [k for k in log.missing if k and not k.startswith("head.")]
    if missing:
        raise ConfigError(
            f"pretrained_weights {path} does not fit backbone {name}: {len(missing)} backbone weights missing "
            f"(e.g. {', '.join(missing[:3])}); expected a timm {name} checkpoint"
        )
    return body


class Backbone(nn.Module):
    """A timm ConvNeXt returning its four stage outputs (strides 4, 8, 16, 32), finest first."""

    def __init__(self, name: str = "convnext_atto", pretrained_weights: str | Path | None = None,
                 drop_path_rate: float = 0.0) -> None:
        super().__init__()
        check_backbone_name(name)
        self.name = name
        if pretrained_weights is None:
            self.body = timm.create_model(name, pretrained=False, features_only=True, drop_path_rate=drop_path_rate)
        else:
            self.body = _create_pretrained(name, Path(pretrained_weights), drop_path_rate)
        self.channels: tuple[int, ...] = tuple(self.body.feature_info.channels())
        self.reductions: tuple[int, ...] = tuple(self.body.feature_info.reduction())

    @property
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        cfg = self.body.pretrained_cfg
        return tuple(float(v) for v in cfg["mean"]), tuple(float(v) for v in cfg["std"])

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return list(self.body(images))
