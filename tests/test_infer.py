"""The Predictor, sliding windows and clinical read-outs, on a small trained run and on edge-case inputs."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from builders import fundus
from core.errors import ConfigError, DataError
from core.infer.clinical import implied_dme, lesion_stats, place_fovea
from core.infer.predictor import Predictor
from core.infer.tiling import blend_weights, positions, sliding_window


def _jpeg(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["path", "bytes", "pil", "array", "grey", "rgba", "uint16", "tiny"])
def test_predict_accepts_every_input_form(tiny_run: Path, tmp_path: Path, kind: str) -> None:
    predictor = Predictor.from_run(tiny_run)
    rgb = fundus(400, 300, seed=4)
    inputs = {
        "path": tmp_path / "x.png", "bytes": _jpeg(rgb), "pil": Image.fromarray(rgb), "array": rgb,
        "grey": rgb[..., 0], "rgba": np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]),
        "uint16": rgb.astype(np.uint16) * 257, "tiny": fundus(40, 40, seed=4),  # predicted with a warning; 10x10 is refused (test_admission)
    }
    Image.fromarray(rgb).save(tmp_path / "x.png")
    prediction = predictor.predict(inputs[kind], both=True)
    assert prediction.original_size == ((40, 40) if kind == "tiny" else (400, 300))
    assert prediction.gate_probs.shape == (2,) and prediction.gate_probs.sum() == pytest.approx(1, abs=1e-5)
    assert prediction.seg_probs.shape == (5, 64, 64) and prediction.dr_probs.shape == (5,)
    assert prediction.mask_original(4).shape == prediction.original_size[::-1]
    assert ("too small" in " ".join(prediction.warnings)) == (kind == "tiny")
    report = prediction.report()
    assert report["gate"]["task"] in ("segmentation", "classification") and "lesions" in report


def test_gate_route_runs_only_the_chosen_expert(tiny_run: Path) -> None:
    prediction = Predictor.from_run(tiny_run).predict(fundus(128, 96))
    assert prediction.ran == (prediction.task,)
    assert (prediction.seg_probs is None) == (prediction.task == "classification")
    assert (prediction.dr_probs is None) == (prediction.task == "segmentation")


def test_predictions_match_training_preprocessing(tiny_run: Path) -> None:
    """Same image through the dataset path and through the Predictor: identical model input."""
    from core.data.dataset import normalize
    from core.data.preprocess import decode_for_canvas, preprocess_image

    predictor = Predictor.from_run(tiny_run)
    image = fundus(300, 200, seed=9)
    prepared = predictor.prepare(image)
    tensor, canvas, geometry = prepared.tensor, prepared.canvas, prepared.geometry
    rgb, original = decode_for_canvas(image, predictor.preprocess.size)
    expected, _ = preprocess_image(rgb, original, predictor.preprocess)
    torch.testing.assert_close(tensor[0], normalize(expected, predictor.mean, predictor.std))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("no_folder", "does not exist"),
        ("no_config", "has no config.yaml"),
        ("no_weights", "has no weights yet"),
        ("pickle_weights", "no .safetensors weights"),
        ("truncated_weights", "not valid safetensors"),
        ("other_backbone", "do not match this model"),
    ],
)
def test_bad_runs_are_refused_clearly(tiny_run: Path, tmp_path: Path, damage: str, message: str) -> None:
    run = tmp_path / "run"
    if damage != "no_folder":
        shutil.copytree(tiny_run, run)
    if damage == "no_config":
        (run / "config.yaml").unlink()
    if damage in ("no_weights", "pickle_weights"):
        shutil.rmtree(run / "weights")
        (run / "weights").mkdir()
        if damage == "pickle_weights":
            torch.save({}, run / "weights" / "best.pt")
    if damage == "truncated_weights":
        for path in (run / "weights").glob("*.safetensors"):
            path.write_bytes(path.read_bytes()[:1000])
    if damage == "other_backbone":
        config = yaml.safe_load((run / "config.yaml").read_text())
        config["model"]["backbone"] = "convnext_femto"
        (run / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=message):
        Predictor.from_run(run)


@pytest.mark.parametrize(
    ("payload", "message"),
    [(b"", r"uploaded image is empty \(0 bytes\)"), (b"not an image at all", "not an image file"),
     ("truncated", "does not decode")],
)
def test_bad_images_get_one_clear_error(tiny_run: Path, payload: bytes | str, message: str) -> None:
    if payload == "truncated":
        payload = _jpeg(fundus(300, 200))[:-400]
    with pytest.raises(DataError, match=message):
        Predictor.from_run(tiny_run).predict(payload)


def test_decompression_bomb_is_refused(tiny_run: Path) -> None:
    bomb = io.BytesIO()
    Image.new("1", (15000, 15000)).save(bomb, format="PNG")  # 225 megapixels, a few kB on disk
    with pytest.raises(DataError, match="too large to decode safely"):
        Predictor.from_run(tiny_run).predict(bomb.getvalue())


def test_gradcam_is_a_normalised_map(tiny_run: Path) -> None:
    cam = Predictor.from_run(tiny_run).gradcam(fundus(128, 96), head="dme")
    assert cam.shape == (64, 64) and 0 <= cam.min() and cam.max() <= 1.0


@pytest.mark.parametrize(("head", "target"), [("dr", None), ("dme", None), ("dr", 3)])
def test_gradcam_weighs_the_deepest_map_by_the_grades_own_gradient(tiny_run: Path, head: str, target) -> None:
    """Grad-CAM by its definition (Selvaraju et al. 2017), computed here with torch.autograd.grad: ReLU of the
    deepest feature maps weighted by the mean gradient of the chosen grade's logit, upsampled, peak 1."""
    predictor = Predictor.from_run(tiny_run)
    image = fundus(128, 96, seed=7)
    tensor = predictor.prepare(image).tensor
    with torch.enable_grad():
        features = predictor.model.backbone(tensor)
        dr, dme = predictor.model.classifier(predictor.model.pooled_features(features))
        logits = dr if head == "dr" else dme
        index = int(logits[0].argmax()) if target is None else target
        gradient = torch.autograd.grad(logits[0, index], features[-1])[0]
    cam = torch.relu((gradient.mean(dim=(2, 3), keepdim=True) * features[-1]).sum(dim=1, keepdim=True))
    cam = torch.nn.functional.interpolate(cam, size=tensor.shape[2:], mode="bilinear", align_corners=False)[0, 0]
    expected = (cam / cam.max()).detach().numpy() if cam.max() > 0 else cam.detach().numpy()
    np.testing.assert_allclose(predictor.gradcam(image, head=head, target=target), expected, atol=1e-5)


def test_tiled_segmentation_covers_the_big_canvas(tiny_run: Path) -> None:
    probs, geometry = Predictor.from_run(tiny_run).segment_tiled(fundus(300, 200), scale=2.0)
    assert probs.shape == (5, 128, 128) and geometry.canvas == (128, 128)
    assert np.isfinite(probs).all() and (probs >= 0).all() and (probs <= 1).all()


# --- sliding windows --------------------------------------------------------------------------------------------

def test_window_positions_cover_the_length() -> None:
    assert positions(100, 40, 30) == [0, 30, 60]
    assert positions(30, 40, 30) == [0]
    for start in positions(517, 128, 96):
        assert 0 <= start <= 517 - 128


def test_blending_reproduces_a_translation_invariant_model() -> None:
    """A pointwise model gives the same answer tiled or whole: blending must not leave seams."""
    image = torch.randn(3, 70, 90)
    pointwise = lambda crops: crops[:, :1].repeat(1, 5, 1, 1) * 2.0  # noqa: E731
    tiled = sliding_window(pointwise, image, window=32, overlap=0.5, batch_size=3)
    torch.testing.assert_close(tiled, torch.sigmoid(image[:1].repeat(5, 1, 1) * 2.0))
    assert blend_weights(8, 8).min() > 0


def test_window_edges_leave_no_seam_where_another_window_sees_the_pixel_inside() -> None:
    """A model that is wrong near its crop's border (it sees padding there), as convolutions are: every seam between
    windows lies inside a neighbouring window, whose weight must win; only the image's own border keeps the edge."""
    def edge_artefact(crops: torch.Tensor) -> torch.Tensor:
        logits = torch.full((crops.shape[0], 5, *crops.shape[2:]), -10.0)
        logits[:, :, :2], logits[:, :, -2:], logits[:, :, :, :2], logits[:, :, :, -2:] = 10.0, 10.0, 10.0, 10.0
        return logits

    tiled = sliding_window(edge_artefact, torch.zeros(3, 96, 128), window=32, overlap=0.5)
    inside = tiled[:, 2:-2, 2:-2]
    assert inside.max() < 0.1  # an unweighted mean would be 0.5 along every seam
    assert tiled[:, 0, 50].min() > 0.99  # the image border, seen by window edges only, keeps what they said
    uniform = sliding_window(edge_artefact, torch.zeros(3, 96, 128), window=32, overlap=0.0)
    assert uniform[:, 2:-2, 2:-2].max() > 0.99  # no overlap, no cure: the test can tell the difference


def test_sliding_window_bounds_the_batch() -> None:
    seen = []

    def model(crops: torch.Tensor) -> torch.Tensor:
        seen.append(crops.shape[0])
        return torch.zeros(crops.shape[0], 5, *crops.shape[2:])

    sliding_window(model, torch.zeros(3, 100, 100), window=32, overlap=0.25, batch_size=2)
    assert max(seen) <= 2 and sum(seen) == len(positions(100, 32, 24)) ** 2


# --- clinical read-outs -----------------------------------------------------------------------------------------

def _masks(width: int = 400, height: int = 300) -> np.ndarray:
    return np.zeros((5, height, width), bool)


def test_fovea_sits_temporal_to_the_disc() -> None:
    assert place_fovea((100, 150), 40, 400)[0] == pytest.approx(200)  # disc on the left: fovea to its right
    assert place_fovea((300, 150), 40, 400)[0] == pytest.approx(200)
    assert place_fovea((100, 150), 40, 400)[1] > 150  # slightly below


@pytest.mark.parametrize(("exudate_at", "risk"), [(None, 0), ((205, 160), 2), ((330, 60), 1)])
def test_implied_dme_follows_the_idrid_definition(exudate_at: tuple[int, int] | None, risk: int) -> None:
    masks = _masks()
    yy, xx = np.mgrid[:300, :400]
    masks[4] = (xx - 100) ** 2 + (yy - 150) ** 2 <= 20 ** 2  # disc of diameter ~40 at (100, 150): fovea ~(200, 160)
    if exudate_at is not None:
        masks[2, exudate_at[1] : exudate_at[1] + 3, exudate_at[0] : exudate_at[0] + 3] = True
    result = implied_dme(masks)
    assert result.risk == risk
    assert result.fovea is None or result.fovea[0] == pytest.approx(200, abs=3)


def test_exudates_without_a_disc_cannot_be_placed() -> None:
    masks = _masks()
    masks[2, 10:12, 10:12] = True
    assert implied_dme(masks).risk is None


def test_lesion_counts_and_areas() -> None:
    masks = _masks(100, 100)
    masks[0, 10:12, 10:12] = True
    masks[0, 50:52, 50:53] = True
    stats = lesion_stats(masks, pixel_area=4.0, image_area=40000.0)
    assert stats["MA"].count == 2 and stats["MA"].area_px == 40.0 and stats["MA"].area_fraction == 0.001
    assert stats["HE"].count == 0
