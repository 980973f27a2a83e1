"""Run configuration: dataclasses that round-trip through YAML, with ``section.key=value`` overrides.

The app's Train page writes the same YAML the CLI reads, and every run saves its resolved config, so a run can be
repeated from its folder alone. Unknown keys and bad values are errors that name the key, never silently ignored.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from core.errors import ConfigError
from core.vocabulary import LESIONS, NUM_DME_RISKS, NUM_DR_GRADES, NUM_LESIONS, TASKS, TrainRoute


@dataclass
class SynthConfig:
    """The built-in synthetic IDRiD: regenerated from these settings when its folder is missing."""

    out: str = "data/synthetic"
    n_seg: int = 40  # the demo's settings: runs with other settings regenerate the same folder
    n_cls: int = 120
    width: int = 1024
    seed: int = 0


@dataclass
class DataConfig:
    source: Literal["synthetic", "folder", "metadata"] = "synthetic"
    roots: list[str] = field(default_factory=list)  # source "folder": one root, or one per half
    metadata: str | None = None  # source "metadata": a balanced_idrid_metadata.json
    synthetic: SynthConfig = field(default_factory=SynthConfig)
    val_fraction: float = 0.2
    split_seed: int = 0
    # Grouped k-fold cross-validation (``train --folds K --fold I``): validation is fold I of K folds of the official
    # training halves, stratified as the split is (a photograph and its copies in one fold); 0 uses val_fraction.
    folds: int = 0
    fold: int = 0
    image_size: int = 512  # square canvas side in pixels
    clahe: Literal["none", "luminance", "green", "luminance+green"] = "luminance"
    # "green": the green channel alone (after CLAHE), repeated in all three channels, so the backbone keeps its
    # three-channel stem; it asks whether red and blue help the lesion maps at all (core.data.preprocess).
    channels: Literal["rgb", "green"] = "rgb"
    augment: Literal["none", "light", "standard"] = "standard"
    cache_dir: str | None = None  # None: the user's cache folder (see core.data.cache)
    workers: int = 0
    # Segmentation crops at high resolution (core.data.crops): crops of image_size px from a canvas crop_scale
    # times larger; 0 trains on whole images only. Prediction then slides windows over that canvas.
    crop_scale: float = 0.0
    crop_probability: float = 0.75
    crop_on_lesion: float = 0.8
    samples_per_epoch: int | None = None  # None: the size of the train split
    # The share of training draws that go to samples with masks (the rest to graded ones, balanced by DR grade);
    # None: the metadata weights, half each. Lesion maps are what the grades and the gate are read from.
    segmentation_share: float | None = None
    strict: bool = False
    drop_conflicting: bool = False  # leave out copies of one photograph whose grades disagree (core.data.twins)
    # The labels to train on: one task alone keeps the same split and drops the other task's labels (and the samples
    # left with none), to measure an expert trained alone against the shared model.
    tasks: list[str] = field(default_factory=lambda: ["segmentation", "classification"])


@dataclass
class ModelConfig:
    backbone: str = "convnext_atto"
    pretrained_weights: str | None = None  # a local timm checkpoint file of the backbone
    # "imagenet": timm's own ImageNet weights through its hub download (opt-in: the only setting that may reach the
    # network; offline, the hub cache must hold them). "none": from scratch, unless pretrained_weights names a file.
    pretrained: Literal["none", "imagenet"] = "none"
    decoder_channels: list[int] = field(default_factory=lambda: [128, 64, 32, 16])
    gate_hidden: int = 64  # 0: a linear gate (what python -m core fit-gate fits)
    dropout: float = 0.1
    drop_path_rate: float = 0.0
    pooling: Literal["avg", "multiscale"] = "avg"  # what the gate and the classifier read (see core.model.gated.pool)
    # what the gate learns to decide (core.data.targets): the annotation a photograph came with, or whether it
    # shows more than mild DR (segmentation) or not (classification)
    gate_target: Literal["task", "referable"] = "task"
    # what the gate reads (core.model.gated): the pooled backbone features, or the summary of a coarse lesion head
    # at stride 16 trained on the masks (core.model.coarse), which the classifier then reads too, or the summary of
    # the model's own lesion maps on a smaller copy of the canvas (glance; fitted by python -m core fit-gate)
    gate_input: Literal["pooled", "lesions", "glance"] = "pooled"
    # with gate_input: lesions, let the gate's and the grade heads' gradient train the coarse head too (never the
    # backbone); false: the head learns from masks alone
    gate_trains_coarse: bool = False
    # what the coarse lesion head reads (core.model.coarse): the stride-16 and stride-32 features, or every stage
    # with the shallow ones pooled to its grid (what python -m core fit-gate fits: small lesions live there)
    coarse_reads: Literal["deep", "pyramid"] = "deep"
    # what the gate and the grade heads read of the coarse maps (core.model.coarse.SUMMARY_STATS): four numbers per
    # lesion, or ten (what python -m core fit-gate fits: the counts tell a few microaneurysms from many haemorrhages)
    coarse_summary: Literal["basic", "rich"] = "basic"
    # with gate_input: glance, the longer side in px of the canvas's copy the glance reads (GatedMultiTaskModel.glance)
    glance_size: int = 384


@dataclass
class LossConfig:
    seg_weight: float = 1.0
    cls_weight: float = 1.0
    gate_weight: float = 1.0
    entropy_coef: float = 0.01
    bce_pos_weight: list[float] | None = None  # one per lesion, MA HE EX SE OD
    dice: Literal["batch", "image"] = "batch"
    # the segmentation expert's pixel and overlap terms (core.model.losses): focal and Tversky weigh rare positives
    # (microaneurysms, haemorrhages) more than BCE and Dice do
    pixel: Literal["bce", "focal"] = "bce"
    focal_gamma: float = 2.0
    overlap: Literal["dice", "tversky"] = "dice"
    tversky_alpha: float = 0.3  # the weight of false positives
    tversky_beta: float = 0.7  # the weight of false negatives: above alpha, a missed lesion pixel costs more
    dr_class_weights: list[float] | None = None
    dme_class_weights: list[float] | None = None
    coarse_weight: float = 1.0  # the coarse lesion head's BCE + Dice on max-pooled masks (model.gate_input: lesions)
    # weight the gate's loss so that both routes count equally under the training draws (core.data.sampling)
    gate_balance: bool = False


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05
    grad_clip: float = 1.0
    route: TrainRoute = "oracle"
    amp: Literal["auto", "bf16", "none"] = "auto"
    channels_last: bool = True
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = None  # torch intra-op threads; None leaves torch's default
    seed: int = 0
    best_metric: str = "val/score"
    max_minutes: float | None = None  # stop cleanly (and save) when this budget is spent
    max_steps: int | None = None  # stop cleanly (and save) after this many steps in all
    checkpoint_every: int = 0  # also save resumable state every N steps mid-epoch (0: at epoch ends only)
    weights_dtype: Literal["float32", "float16"] = "float32"  # dtype of weights/*.safetensors
    log_every: int = 1  # steps between two lines of log.jsonl
    # After training, fit grades on the lesion evidence of the best weights' segmentation expert (core.infer.evidence).
    fit_grader: bool = False
    # After training (and the grader), fit a lesion gate and the grade heads onto the frozen backbone and decoder
    # (core.train.posthoc, what python -m core fit-gate does): the recipe of a run whose lesions were trained alone.
    fit_gate: bool = False
    # views of each training photograph the coarse head learns from there (1: as taken; up to 4 with its flips):
    # 4 helped the synthetic demo (test ROC AUC 0.96 against 0.89), 1 was best on real IDRiD (0.886 against 0.852)
    fit_gate_views: int = 1
    # After training a run with model.gate_target: referable, set infer.gate_threshold to the highest threshold
    # that keeps this sensitivity for referable photographs on the validation split (None: leave it at 0.5).
    gate_sensitivity: float | None = 0.9
    # Semi-supervised lesion maps (core.train.consistency): the weight of a mean teacher's consistency loss on the
    # training photographs without masks (0: off), the share of the steps over which that weight ramps up, the
    # teacher's EMA decay, and the photographs without masks drawn per step (None: train.batch_size).
    consistency: float = 0.0
    consistency_ramp: float = 0.3
    ema_decay: float = 0.99
    unlabeled_batch: int | None = None


@dataclass
class InferConfig:
    """How a trained run predicts (the app, ``evaluate``, ``predict``); changing it needs no retraining."""

    # Test-time flips (core.infer.tta): lesion maps averaged over the image and its mirror images. "flips" (4
    # passes) raised every lesion's full-resolution AUPR on real IDRiD validation images (docs/training.md).
    tta: Literal["none", "hflip", "flips"] = "none"
    # The gate's operating point: a photograph goes to the segmentation expert where p(segmentation) >= this, to
    # classification elsewhere. None: the larger probability (0.5). Chosen on the validation split for a target
    # sensitivity after training (train.gate_sensitivity; core.train.operating_point) for a referable gate.
    gate_threshold: float | None = None
    # "gate": each photograph goes where the gate sends it (the decoder only runs where it must); "both": every
    # photograph gets both experts, for a run whose gate is not good enough to decide (checkpoints/idrid: its gate
    # learned the annotation history, not the picture). "Run both heads" and --both give both either way.
    route: Literal["gate", "both"] = "gate"


@dataclass
class Config:
    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    infer: InferConfig = field(default_factory=InferConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# --- conversion and validation -----------------------------------------------------------------------------------

def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unknown(key: str, known: list[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(known)}"
    return ConfigError(f"unknown config key {where}{key!r}{hint}")


def _coerce(value: Any, kind: Any, where: str) -> Any:
    """Check ``value`` against a type hint, converting the few things YAML and the command line blur."""
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where} must be one of {', '.join(map(repr, args))}, not {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option, where)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if errors else f"{where} has a bad value {value!r}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, not {value!r}")
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping of keys, not {value!r}")
        return _build(kind, value, f"{where}.")
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false, not {value!r}")
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ConfigError(f"{where} must be an integer, not {value!r}")
        return int(value)
    if kind is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as text
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, not {value!r}")
        return float(value)
    if kind is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where} must be text, not {value!r}")
        return str(value)
    return value


def _build(cls: type, values: dict[str, Any], where: str = "") -> Any:
    hints = _hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in hints:
            raise _unknown(key, known, where)
        kwargs[key] = _coerce(value, hints[key], f"{where}{key}")
    return cls(**kwargs)


def _parse_scalar(text: str) -> Any:
    """A command-line value as YAML reads it: numbers, booleans, null, lists like [1, 2]."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``train.lr=3e-4`` style overrides applied onto a nested dict (a copy)."""
    import copy

    result = copy.deepcopy(values)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        dotted, raw = item.split("=", 1)
        keys = dotted.strip().split(".")
        node = result
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {key!r} is not a section")
        node[keys[-1]] = _parse_scalar(raw)
    return result


def validate(config: Config) -> Config:
    """Range checks the types cannot express."""
    checks = [
        (config.train.epochs >= 1, "train.epochs must be at least 1"),
        (config.train.batch_size >= 1, "train.batch_size must be at least 1"),
        (config.train.lr > 0, "train.lr must be positive"),
        (0 <= config.train.warmup_fraction < 1, "train.warmup_fraction must be in [0, 1)"),
        (config.train.grad_clip >= 0, "train.grad_clip must be >= 0 (0 disables clipping)"),
        (config.data.image_size >= 32 and config.data.image_size % 32 == 0,
         f"data.image_size must be a multiple of 32 and at least 32 (ConvNeXt downsamples 32x), "
         f"not {config.data.image_size}"),
        (0 <= config.data.val_fraction < 1, "data.val_fraction must be in [0, 1)"),
        (config.data.folds == 0 or config.data.folds >= 2, f"data.folds must be 0 or at least 2, not {config.data.folds}"),
        (config.data.folds == 0 or 0 <= config.data.fold < config.data.folds,
         f"data.fold must lie in 0..{config.data.folds - 1} for {config.data.folds} folds, not {config.data.fold}"),
        (config.data.workers >= 0, "data.workers must be >= 0"),
        (config.model.pretrained == "none" or config.model.pretrained_weights is None,
         "model.pretrained and model.pretrained_weights both name starting weights: set one of them"),
        (config.data.segmentation_share is None or 0 < config.data.segmentation_share < 1,
         f"data.segmentation_share must lie strictly between 0 and 1, not {config.data.segmentation_share}"),
        (config.data.crop_scale == 0 or config.data.crop_scale >= 1,
         f"data.crop_scale must be 0 (whole images only) or at least 1, not {config.data.crop_scale}"),
        (0 <= config.data.crop_probability <= 1 and 0 <= config.data.crop_on_lesion <= 1,
         "data.crop_probability and data.crop_on_lesion must lie in [0, 1]"),
        (len(config.model.decoder_channels) == 4, "model.decoder_channels must list 4 widths, one per block"),
        (all(c > 0 for c in config.model.decoder_channels), "model.decoder_channels must be positive"),
        (config.model.gate_hidden >= 0, f"model.gate_hidden must be >= 0 (0: linear), not {config.model.gate_hidden}"),
        (config.loss.bce_pos_weight is None or len(config.loss.bce_pos_weight) == NUM_LESIONS,
         f"loss.bce_pos_weight must list {NUM_LESIONS} values ({', '.join(LESIONS)})"),
        (config.loss.dr_class_weights is None or len(config.loss.dr_class_weights) == NUM_DR_GRADES,
         f"loss.dr_class_weights must list {NUM_DR_GRADES} values"),
        (config.loss.dme_class_weights is None or len(config.loss.dme_class_weights) == NUM_DME_RISKS,
         f"loss.dme_class_weights must list {NUM_DME_RISKS} values"),
        (min(config.loss.seg_weight, config.loss.cls_weight, config.loss.gate_weight) >= 0,
         "loss weights must be >= 0"),
        (bool(config.data.tasks) and set(config.data.tasks) <= set(TASKS),
         f"data.tasks must list segmentation and/or classification, not {config.data.tasks}"),
        (config.data.source != "folder" or bool(config.data.roots), "data.source 'folder' needs data.roots"),
        (config.data.source != "metadata" or bool(config.data.metadata), "data.source 'metadata' needs data.metadata"),
        (config.train.max_minutes is None or config.train.max_minutes > 0, "train.max_minutes must be positive"),
        (config.train.max_steps is None or config.train.max_steps >= 1, "train.max_steps must be at least 1"),
        (config.train.checkpoint_every >= 0, "train.checkpoint_every must be >= 0"),
        (config.infer.gate_threshold is None or 0 < config.infer.gate_threshold < 1,
         f"infer.gate_threshold must lie strictly between 0 and 1, not {config.infer.gate_threshold}"),
        (config.train.gate_sensitivity is None or 0 < config.train.gate_sensitivity <= 1,
         f"train.gate_sensitivity must lie in (0, 1], not {config.train.gate_sensitivity}"),
        (config.loss.coarse_weight >= 0, "loss.coarse_weight must be >= 0"),
        (config.model.gate_input != "glance"
         or 32 <= config.model.glance_size <= config.data.image_size and config.model.glance_size % 32 == 0,
         f"model.glance_size must be a multiple of 32 from 32 to data.image_size ({config.data.image_size}), "
         f"not {config.model.glance_size}"),
        (config.loss.focal_gamma >= 0, f"loss.focal_gamma must be >= 0, not {config.loss.focal_gamma}"),
        (min(config.loss.tversky_alpha, config.loss.tversky_beta) >= 0,
         "loss.tversky_alpha and loss.tversky_beta must be >= 0"),
        (1 <= config.train.fit_gate_views <= 4,
         f"train.fit_gate_views must be 1 to 4 (the photograph and its flips), not {config.train.fit_gate_views}"),
        (config.train.consistency >= 0, f"train.consistency must be >= 0 (0: off), not {config.train.consistency}"),
        (0 <= config.train.consistency_ramp <= 1,
         f"train.consistency_ramp must lie in [0, 1] (a share of the steps), not {config.train.consistency_ramp}"),
        (0 < config.train.ema_decay < 1, f"train.ema_decay must lie strictly between 0 and 1, not {config.train.ema_decay}"),
        (config.train.unlabeled_batch is None or config.train.unlabeled_batch >= 1,
         f"train.unlabeled_batch must be at least 1, not {config.train.unlabeled_batch}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    return config


def config_from_dict(values: dict[str, Any] | None) -> Config:
    return validate(_build(Config, values or {}))


def load_config(path: Path | str | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file, then the overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except (OSError, yaml.YAMLError) as error:
            raise ConfigError(f"config file {path} is not readable YAML ({error})") from None
        if not isinstance(values, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections, not {type(values).__name__}")
    return config_from_dict(apply_overrides(values, overrides or []))
