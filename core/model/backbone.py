"""The shared encoder: a timm ConvNeXt in ``features_only`` mode.

Everything downstream (gate, decoder, heads) is sized from ``feature_info`` rather than from a table of known
backbones, so any ConvNeXt size plugs in. ConvNeXt has no stride-2 feature map: its 4x4 patchify stem goes
straight to stride 4, and the four stages sit at strides 4, 8, 16 and 32.

Weights are never downloaded unless the user asks: ``pretrained_weights`` names a local timm checkpoint
(``.safetensors``, ``.pth``, ``.bin``) of the same architecture, loaded through timm so that its key remapping and
head stripping apply; ``pretrained="imagenet"`` (``model.pretrained``) lets timm fetch its own ImageNet weights
through the Hugging Face hub and its cache (``HF_HUB_CACHE``), and fails with one line naming the local-file
setting where the machine is offline and the cache lacks them.
"""

from __future__ import annotations

import logging
import socket
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


PRETRAINED = ("none", "imagenet")


def _short(error: BaseException, limit: int = 300) -> str:
    detail = " ".join(str(error).split()) or type(error).__name__
    return detail if len(detail) <= limit else detail[: limit - 3] + "..."


def _create_logged(name: str, drop_path_rate: float, **kwargs) -> tuple[nn.Module, list[str]]:
    """timm.create_model with pretrained weights, and the backbone keys the weights did not fill (the classifier
    head is dropped on purpose in features_only mode, so it is not counted)."""
    log = _TimmLoadLog()
    logger = logging.getLogger("timm.models._builder")
    old_level = logger.level
    logger.addHandler(log)
    logger.setLevel(logging.DEBUG)
    try:
        body = timm.create_model(name, pretrained=True, features_only=True, drop_path_rate=drop_path_rate, **kwargs)
    finally:
        logger.removeHandler(log)
        logger.setLevel(old_level)
    return body, [k for k in log.missing if k and not k.startswith("head.")]


def _create_pretrained(name: str, path: Path, drop_path_rate: float) -> nn.Module:
    if not path.is_file():
        raise ConfigError(f"pretrained_weights file not found: {path} (a local timm checkpoint for {name})")
    try:
        body, missing = _create_logged(name, drop_path_rate, pretrained_cfg_overlay=dict(file=str(path)))
    except (RuntimeError, KeyError, ValueError, OSError) as error:
        raise ConfigError(f"pretrained_weights {path} does not fit backbone {name}: {_short(error)}") from error
    if missing:
        raise ConfigError(
            f"pretrained_weights {path} does not fit backbone {name}: {len(missing)} backbone weights missing "
            f"(e.g. {', '.join(missing[:3])}); expected a timm {name} checkpoint"
        )
    return body


def hub_source(name: str) -> str:
    """Where timm fetches ``name``'s default weights from, for messages."""
    cfg = get_pretrained_cfg(name)
    if cfg is None:
        return "nowhere (timm lists no pretrained weights for it)"
    return f"the Hugging Face hub ({cfg.hf_hub_id})" if cfg.hf_hub_id else (cfg.url or "timm's default source")


HUB_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm publishes per model, preferred first


def cached_hub_weights(name: str) -> Path | None:
    """The hub cache's copy of timm's default weights for ``name`` (``HF_HUB_CACHE``), or None: no network."""
    from huggingface_hub import constants, try_to_load_from_cache

    cfg = get_pretrained_cfg(name)
    if cfg is None or not cfg.hf_hub_id:
        return None
    names = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else HUB_FILES
    for filename in names:
        found = try_to_load_from_cache(cfg.hf_hub_id, filename, cache_dir=constants.HF_HUB_CACHE)
        if isinstance(found, str):
            return Path(found)
    return None


def hub_reachable(timeout_s: float = 5.0) -> bool:
    """A quick look for the hub before timm's download, which retries for about a minute when offline."""
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                                 timeout=timeout_s).close()
    except OSError:
        return False
    return True


def _offline_error(name: str, detail: str) -> ConfigError:
    return ConfigError(
        f"model.pretrained: imagenet needs timm's {name} weights from {hub_source(name)}, and {detail}. Fetch them "
        f"once on a machine with a network (they land in the hub cache, HF_HUB_CACHE), or set "
        f"model.pretrained_weights to a local timm checkpoint file and model.pretrained: none")


def _create_from_hub(name: str, drop_path_rate: float) -> nn.Module:
    """timm's own ImageNet weights for ``name``: the hub cache first, the network only when the cache lacks them."""
    if get_pretrained_cfg(name) is None:
        raise ConfigError(f"model.pretrained: imagenet: timm has no pretrained weights for backbone {name}; "
                          f"set model.pretrained_weights to a local checkpoint file or model.pretrained: none")
    cached = cached_hub_weights(name)
    if cached is not None:
        return _create_pretrained(name, cached, drop_path_rate)
    if not hub_reachable():
        raise _offline_error(name, "the hub cache does not hold them while this machine is offline")
    try:
        body, missing = _create_logged(name, drop_path_rate)
    except Exception as error:  # noqa: BLE001 - timm and huggingface_hub raise many types here; one remedy for all
        raise _offline_error(name, f"the download failed ({_short(error, 160)})") from error
    if missing:
        raise ConfigError(f"model.pretrained: imagenet: timm's weights for {name} left {len(missing)} backbone "
                          f"weights unset (e.g. {', '.join(missing[:3])})")
    return body


class Backbone(nn.Module):
    """A timm ConvNeXt returning its four stage outputs (strides 4, 8, 16, 32), finest first."""

    def __init__(self, name: str = "convnext_atto", pretrained_weights: str | Path | None = None,
                 drop_path_rate: float = 0.0, pretrained: str = "none") -> None:
        super().__init__()
        check_backbone_name(name)
        if pretrained not in PRETRAINED:
            raise ConfigError(f"model.pretrained must be one of {', '.join(PRETRAINED)}, not {pretrained!r}")
        if pretrained != "none" and pretrained_weights is not None:
            raise ConfigError("model.pretrained and model.pretrained_weights both name weights: set one of them")
        self.name = name
        if pretrained_weights is not None:
            self.body = _create_pretrained(name, Path(pretrained_weights), drop_path_rate)
        elif pretrained == "imagenet":
            self.body = _create_from_hub(name, drop_path_rate)
        else:
            self.body = timm.create_model(name, pretrained=False, features_only=True, drop_path_rate=drop_path_rate)
        self.channels: tuple[int, ...] = tuple(self.body.feature_info.channels())
        self.reductions: tuple[int, ...] = tuple(self.body.feature_info.reduction())

    @property
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        cfg = self.body.pretrained_cfg
        return tuple(float(v) for v in cfg["mean"]), tuple(float(v) for v in cfg["std"])

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return list(self.body(images))
