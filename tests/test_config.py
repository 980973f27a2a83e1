"""Config: YAML round trip, overrides, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import Config, apply_overrides, config_from_dict, load_config
from core.errors import ConfigError


def test_yaml_round_trip(tmp_path: Path) -> None:
    config = config_from_dict({"name": "x", "train": {"lr": 3e-4, "route": "gate"}, "data": {"image_size": 256}})
    path = tmp_path / "c.yaml"
    path.write_text(config.to_yaml())
    again = load_config(path)
    assert again == config and isinstance(again, Config)
    assert again.data.synthetic.n_seg == 40  # nested defaults survive


def test_overrides_parse_like_yaml(tmp_path: Path) -> None:
    config = load_config(None, ["train.lr=1e-3", "train.epochs=3", "train.channels_last=false",
                                "model.decoder_channels=[64, 32, 16, 8]", "train.max_minutes=null",
                                "data.synthetic.seed=5"])
    assert config.train.lr == 1e-3 and config.train.epochs == 3 and config.train.channels_last is False
    assert config.model.decoder_channels == [64, 32, 16, 8] and config.data.synthetic.seed == 5


def test_overrides_do_not_touch_the_input() -> None:
    values = {"train": {"lr": 1.0}}
    apply_overrides(values, ["train.lr=2"])
    assert values == {"train": {"lr": 1.0}}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"trian": {}}, "unknown config key 'trian'; did you mean 'train'?"),
        ({"train": {"batchsize": 4}}, "unknown config key train.'batchsize'; did you mean 'batch_size'?"),
        ({"train": {"epochs": 2.5}}, "train.epochs must be an integer"),
        ({"train": {"channels_last": "yes"}}, "train.channels_last must be true or false"),
        ({"data": {"clahe": "red"}}, "data.clahe must be one of"),
        ({"train": {"lr": -1}}, "train.lr must be positive"),
        ({"data": {"source": "folder"}}, "data.source 'folder' needs data.roots"),
        ({"loss": {"bce_pos_weight": [1, 2]}}, "loss.bce_pos_weight must list 5 values"),
        ({"model": {"decoder_channels": [8, 8]}}, "model.decoder_channels must list 4 widths"),
        ({"train": "fast"}, "train must be a mapping"),
        ({"data": {"segmentation_share": 1.5}}, "data.segmentation_share must lie strictly between 0 and 1"),
    ],
)
def test_bad_values_name_the_key(values: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_dict(values)
    assert message in str(caught.value)


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    broken = tmp_path / "b.yaml"
    broken.write_text("train: [unclosed")
    with pytest.raises(ConfigError, match="not readable YAML"):
        load_config(broken)
    with pytest.raises(ConfigError, match="not of the form"):
        load_config(None, ["train.lr"])


@pytest.mark.parametrize("path", sorted(Path(__file__).resolve().parents[1].joinpath("configs").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_shipped_config_loads_and_builds_its_model(path: Path) -> None:
    """A config users are told to run must at least parse and build (its starting weights aside: the GPU one
    asks for timm's hub, which a test must not reach)."""
    from core.model.factory import build_model

    config = load_config(path)
    assert config.name == path.stem
    model = build_model(config.model, load_pretrained=False)
    assert model.backbone.name == config.model.backbone
