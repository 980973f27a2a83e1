"""model.pretrained: imagenet: timm's own weights through the hub cache, and one clear line when they cannot come.

The hub cache here is one the test builds (the layout huggingface_hub writes: models--ORG--NAME/refs/main and
snapshots/COMMIT/FILE), so nothing reaches the network; a socket opened by mistake fails the test.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from core.config import load_config
from core.errors import ConfigError
from core.model.backbone import Backbone, cached_hub_weights
from core.model.factory import build_model

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _fake_hub_cache(root: Path, repo_id: str, state: dict[str, torch.Tensor]) -> Path:
    folder = root / ("models--" + repo_id.replace("/", "--"))
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(COMMIT)
    snapshot = folder / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    save_file(state, str(snapshot / "model.safetensors"))
    return snapshot / "model.safetensors"


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))

    def no_network(*args, **kwargs):
        raise AssertionError(f"the test tried to reach the network: {args[:1]}")

    monkeypatch.setattr(socket, "create_connection", no_network)
    return cache


def test_imagenet_weights_come_from_the_hub_cache(hub_cache: Path) -> None:
    torch.manual_seed(3)
    state = {k: v.contiguous() for k, v in timm.create_model("convnext_atto", pretrained=False).state_dict().items()}
    written = _fake_hub_cache(hub_cache, "timm/convnext_atto.d2_in1k", state)
    assert cached_hub_weights("convnext_atto") == written

    loaded = Backbone("convnext_atto", pretrained="imagenet").body.state_dict()
    assert len(loaded) == len([k for k in state if not k.startswith("head.")])
    for key, value in loaded.items():
        assert torch.equal(value, state[key.replace("stem_", "stem.").replace("stages_", "stages.")]), key


def test_offline_without_the_weights_is_one_clear_line(hub_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert cached_hub_weights("convnext_atto") is None
    with pytest.raises(ConfigError) as caught:
        Backbone("convnext_atto", pretrained="imagenet")
    message = str(caught.value)
    assert "\n" not in message
    assert "offline" in message and "timm/convnext_atto.d2_in1k" in message and "model.pretrained_weights" in message


def test_unreachable_hub_fails_before_timm_retries(hub_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(*args, **kwargs):
        raise OSError("connection refused")

    monkeypatch.setattr(socket, "create_connection", refused)
    monkeypatch.setattr(timm, "create_model", lambda *a, **k: pytest.fail("timm was asked to download"))
    with pytest.raises(ConfigError, match="offline"):
        Backbone("convnext_atto", pretrained="imagenet")


def test_loading_a_trained_run_never_fetches_imagenet_weights(hub_cache: Path) -> None:
    config = load_config("configs/demo.yaml", ["model.pretrained=imagenet"])
    model = build_model(config.model, load_pretrained=False)  # the empty cache and no network: it must not ask
    assert model.backbone.channels[0] > 0


def test_pretrained_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="must be one of"):
        load_config("configs/demo.yaml", ["model.pretrained=imagenet21k"])
    with pytest.raises(ConfigError, match="set one of them"):
        load_config("configs/demo.yaml", ["model.pretrained=imagenet", "model.pretrained_weights=atto.pth"])
