"""High-resolution training crops: where they fall, what a crop sample carries, and how a crop-trained run predicts."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from builders import FixtureSpec, make_idrid
from core.config import config_from_dict
from core.errors import ConfigError
from core.data.cache import PreprocessCache
from core.data.crops import PREDICTION_SOURCES, CropPolicy, crop_origin, lesion_names
from core.data.dataset import IGNORE_INDEX, IdridDataset, collate
from core.data.idrid import read_idrid
from core.data.layout import LESIONS
from core.data.metadata import build_metadata, parse_metadata
from core.data.preprocess import PreprocessConfig
from core.model.losses import MultiTaskLoss

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _canvas_masks() -> np.ndarray:
    """A 400x400 canvas: a large disc, a few exudates and one microaneurysm of 2x2 pixels."""
    masks = np.zeros((5, 400, 400), bool)
    masks[4, 150:250, 40:140] = True  # OD
    masks[2, 300:310, 300:320] = True  # EX
    masks[0, 60:62, 330:332] = True  # MA
    return masks


def test_lesion_crops_find_every_present_lesion_as_often() -> None:
    masks, side = _canvas_masks(), 64
    policy = CropPolicy(scale=4, on_lesion=1.0, jitter=0.35)
    rng = np.random.default_rng(0)
    hits = {code: 0 for code in LESIONS}
    for _ in range(600):
        y, x = crop_origin(rng, masks, (0, 0, 400, 400), side, policy)
        assert 0 <= y <= 400 - side and 0 <= x <= 400 - side
        for code in lesion_names(masks[:, y : y + side, x : x + side]):
            hits[code] += 1
    # two lesion types present, drawn uniformly: the 4-pixel microaneurysm is in about half of the crops, as often as
    # the exudate 50 times its area; the optic disc, which crops do not teach, and absent types are never targeted
    assert hits["MA"] >= 240 and hits["EX"] >= 240, hits
    assert hits["HE"] == 0 and hits["SE"] == 0 and hits["OD"] == 0


def test_random_crops_stay_within_the_field_of_view() -> None:
    masks = np.zeros((5, 400, 400), bool)
    policy = CropPolicy(scale=4, on_lesion=0.0)
    rng = np.random.default_rng(1)
    fov = (100, 50, 300, 350)
    for _ in range(200):
        y, x = crop_origin(rng, masks, fov, 64, policy)
        cy, cx = y + 32, x + 32
        assert 100 - 32 <= cx <= 300 + 32 and 50 - 32 <= cy <= 350 + 32


@pytest.mark.parametrize("field, value", [("crop_scale", 0.5), ("crop_probability", 1.5), ("crop_on_lesion", -0.1)])
def test_bad_crop_settings_are_refused(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=field):
        config_from_dict({"data": {field: value}})


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    root = make_idrid(tmp_path_factory.mktemp("idrid"), FixtureSpec(seg={"train": 6, "test": 1},
                                                                     grading={"train": 6, "test": 1}))
    return parse_metadata(build_metadata(read_idrid(root), val_fraction=0.0)).split("train")


def test_a_crop_sample_is_a_window_of_the_large_canvas(samples, tmp_path: Path) -> None:
    preprocess = PreprocessConfig(32, 32)
    cache = PreprocessCache(tmp_path / "cache")
    dataset = IdridDataset(samples, preprocess, MEAN, STD, cache, None, seed=3,
                           crops=CropPolicy(scale=3, probability=1.0))
    big = cache.get(samples[0].image, samples[0].masks, PreprocessConfig(96, 96))
    kinds = set()
    for index, sample in enumerate(samples):
        item = dataset[index]
        assert item["image"].shape == (3, 32, 32) and item["mask"].shape == (5, 32, 32)
        kinds.add((sample.task, bool(item["whole"])))
        if sample.task == "classification":
            assert bool(item["whole"]) and int(item["dr"]) == sample.dr_grade  # grading photographs stay whole
        else:
            assert not bool(item["whole"])
            assert int(item["dr"]) == IGNORE_INDEX and int(item["dme"]) == IGNORE_INDEX
    assert kinds == {("classification", True), ("segmentation", False)}
    # without augmentation, the first crop's pixels are a 32x32 window of the 96-px canvas, masks alike
    item = dataset[0]
    image = item["image"].numpy()
    pixels = np.rint((image * np.array(STD)[:, None, None] + np.array(MEAN)[:, None, None]) * 255).astype(np.uint8)
    windows = [(y, x) for y in range(65) for x in range(65)
               if np.array_equal(big.image[y : y + 32, x : x + 32].transpose(2, 0, 1), pixels)]
    assert windows, "the crop is not a window of the high-resolution canvas"
    y, x = windows[0]
    assert np.array_equal(big.masks[:, y : y + 32, x : x + 32], item["mask"].numpy() > 0)
    assert torch.equal(dataset[0]["image"], item["image"])  # seeded by (seed, epoch, index)


def test_crop_probability_mixes_whole_images_and_crops(samples) -> None:
    seg = [s for s in samples if s.task == "segmentation"]
    dataset = IdridDataset(seg, PreprocessConfig(32, 32), MEAN, STD, None, None, crops=CropPolicy(3, 0.5))
    whole = []
    for epoch in range(6):
        dataset.set_epoch(epoch)
        whole += [bool(dataset[i]["whole"]) for i in range(len(seg))]
    assert 0.25 < np.mean(whole) < 0.75


def test_the_gate_learns_from_whole_images_only(samples) -> None:
    dataset = IdridDataset(samples, PreprocessConfig(32, 32), MEAN, STD, None, None, crops=CropPolicy(3, 1.0))
    batch = collate([dataset[i] for i in range(len(samples))])
    n_whole = int(batch["whole"].sum())
    assert 0 < n_whole < len(samples)
    from core.model.gated import ModelOutput

    size = len(samples)
    logits = torch.zeros(size, 2, requires_grad=True)
    output = ModelOutput(gate_logits=logits, gate_probs=logits.softmax(1), route=torch.ones(size, 2, dtype=torch.bool),
                         seg_index=torch.arange(size), seg_logits=None, cls_index=torch.arange(size),
                         dr_logits=None, dme_logits=None)
    _, parts = MultiTaskLoss()(output, batch)
    assert parts["n_gate_samples"] == n_whole  # crops give no gate target
    only_crops = {**batch, "whole": torch.zeros(size, dtype=torch.bool)}
    _, parts = MultiTaskLoss()(output, only_crops)
    assert "gate_ce" not in parts and parts["n_gate_samples"] == 0


@pytest.fixture(scope="module")
def crop_run_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two steps of a run on 64-px crops of a 128-px canvas: enough to exercise the paths, not to be accurate.
    Trained once for the module; each test gets its own copy (``crop_run``)."""
    from core.train.trainer import Trainer

    tmp_path = tmp_path_factory.mktemp("crop-run")
    root = make_idrid(tmp_path / "data", FixtureSpec(seg={"train": 4, "test": 2}, grading={"train": 0, "test": 0}))
    config = config_from_dict({
        "name": "crops", "data": {"source": "folder", "roots": [str(root)], "image_size": 64, "crop_scale": 2,
                                  "cache_dir": str(tmp_path / "cache"), "val_fraction": 0.0},
        "model": {"decoder_channels": [32, 16, 16, 8], "gate_hidden": 16},
        "train": {"epochs": 1, "batch_size": 2, "max_steps": 2},
    })
    Trainer(config, tmp_path / "runs" / "crops", progress_bar=False).fit()
    return tmp_path / "runs" / "crops"


@pytest.fixture
def crop_run(crop_run_master: Path, tmp_path: Path) -> Path:
    """A private copy of the crop-trained run (its data stays beside the master: ``crop_data``)."""
    return shutil.copytree(crop_run_master, tmp_path / "runs" / "crops")


@pytest.fixture
def crop_data(crop_run_master: Path) -> Path:
    return crop_run_master.parents[1] / "data"


def test_a_crop_trained_run_predicts_lesions_by_windows_and_the_disc_whole(crop_run: Path, crop_data: Path) -> None:
    from core.evaluate.runner import evaluate_run
    from core.infer.predictor import Predictor

    root = crop_data
    predictor = Predictor.from_run(crop_run)
    assert predictor.tiles_lesions
    image = sorted((root / "A. Segmentation" / "1. Original Images" / "b. Testing Set").glob("*.jpg"))[0]
    prepared = predictor.prepare(image)
    tensor, geometry = prepared.tensor, prepared.geometry
    with torch.no_grad():
        whole = torch.sigmoid(predictor.model.segment(tensor)[0]).numpy()
    probs = predictor.segment_original(image, whole, geometry)
    width, height = geometry.original
    assert probs.shape == (5, height, width)
    tiled, big = predictor.segment_tiled(image, scale=2)
    for c, code in enumerate(LESIONS):
        whole_c, windows_c = geometry.canvas_to_original(whole[c]), big.canvas_to_original(tiled[c])
        expected = {"whole": whole_c, "windows": windows_c, "both": (whole_c + windows_c) / 2}[PREDICTION_SOURCES[code]]
        assert np.allclose(probs[c], expected, atol=1e-6), code
        if PREDICTION_SOURCES[code] != "whole":
            assert not np.allclose(probs[c], whole_c, atol=1e-3), code  # the windows did contribute
    assert PREDICTION_SOURCES["OD"] == "whole"
    summary = evaluate_run(crop_run, split="test", full_res=True, progress=False)
    assert "windows over a 128-px canvas" in summary.resolution
    assert set(summary.segmentation.lesions) == set(LESIONS)


def test_predict_shows_windowed_lesions_on_the_canvas(crop_run: Path, crop_data: Path) -> None:
    """The app's path: windows pooled by maximum onto the canvas, each channel combined as PREDICTION_SOURCES says."""
    from core.infer.predictor import Predictor

    predictor = Predictor.from_run(crop_run)
    image = sorted(crop_data.rglob("*Testing Set/*.jpg"))[0]
    prediction = predictor.predict(image, both=True)
    tiled, _ = predictor.segment_tiled(image, scale=2)
    assert prediction.seg_probs.shape == (5, 64, 64)
    tensor = predictor.prepare(image).tensor
    with torch.no_grad():
        canvas = torch.sigmoid(predictor.model.segment(tensor)[0]).numpy()
    for c, code in enumerate(LESIONS):
        pooled = tiled[c].reshape(64, 2, 64, 2).max(axis=(1, 3))
        expected = {"whole": canvas[c], "windows": pooled, "both": (canvas[c] + pooled) / 2}[PREDICTION_SOURCES[code]]
        assert np.allclose(prediction.seg_probs[c], expected, atol=1e-5), code


def test_crop_items_label_lesions_but_not_the_disc(samples) -> None:
    dataset = IdridDataset(samples, PreprocessConfig(32, 32), MEAN, STD, None, None, crops=CropPolicy(3, 1.0))
    for index, sample in enumerate(samples):
        channels = dataset[index]["mask_channels"].tolist()
        if sample.task == "segmentation":
            assert channels == [True, True, True, True, False]
        else:
            assert channels == [False] * 5


def test_the_app_predicts_with_a_crop_trained_run(crop_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.testing.v1 import AppTest

    from studio_helpers import encode, photograph

    run = crop_run
    monkeypatch.setenv("IDRID_STUDIO_RUNS", str(run.parent))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=90)
    at.run()
    at.switch_page("pages/predict.py").run()
    at.file_uploader(key="uploads").set_value([("eye.jpg", encode(photograph(1024, 680), "JPEG"), "image/jpeg")]).run()
    at.toggle(key="both").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not [e.value for e in at.error]
    body = "\n".join(str(m.value) for m in at.markdown)
    assert "learned **segmentation** only" in body and "experts run: segmentation, classification" in body
