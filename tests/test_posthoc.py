"""fit-gate: a lesion gate and grade heads fitted onto a run trained on masks alone, which then routes for real."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from builders import FixtureSpec, make_idrid
from core.config import config_from_dict, load_config
from core.errors import DataError
from core.infer.predictor import Predictor
from core.train.posthoc import GATE_C, fit_gate
from core.train.trainer import Trainer


@pytest.fixture(scope="module")
def lesion_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("posthoc")
    root = make_idrid(base / "data", FixtureSpec(seg={"train": 6}, grading={"train": 30}))
    config = config_from_dict({
        "name": "lesions", "data": {"source": "folder", "roots": [str(root)], "image_size": 64,
                                    "cache_dir": str(base / "cache"), "tasks": ["segmentation"]},
        "model": {"decoder_channels": [32, 16, 16, 8], "gate_hidden": 16},
        "train": {"epochs": 1, "batch_size": 4, "max_steps": 2, "fit_grader": True, "weights_dtype": "float16"},
    })
    Trainer(config, base / "run", progress_bar=False).fit()
    return base / "run", root


@pytest.mark.slow
def test_fit_gate_routes_a_lesion_only_run_without_touching_its_lesions(lesion_run, tmp_path: Path) -> None:
    source, root = lesion_run
    before = (source / "config.yaml").read_text()
    assert Predictor.from_run(source).only_task == "segmentation"  # untrained gate: every photograph segmented

    report = fit_gate(source, tmp_path / "gated", epochs_coarse=3, progress=False)
    gated = tmp_path / "gated"
    assert (source / "config.yaml").read_text() == before  # --out leaves the source run alone
    config = load_config(gated / "config.yaml")
    assert (config.model.gate_input, config.model.gate_target, config.infer.route) == ("lesions", "referable", "gate")
    point = report["operating_point"]
    assert config.infer.gate_threshold == point["threshold"] and 0 < point["threshold"] < 1
    assert config.model.gate_hidden == 0 and report["gate_samples"] == report["n_train"]
    assert config.model.coarse_reads == report["coarse_reads"] == "pyramid"  # every stage, pooled to its grid
    assert report["views"] == 1  # as taken: the default
    # the summary is the run's own (basic: a config that never set it), with the gate's L2 strength for it
    assert config.model.coarse_summary == report["coarse_summary"] == "basic" and report["c"] == GATE_C["basic"]
    assert report["c_grades"] == 0.1

    old, new = (load_file(str(run / "weights" / "best.safetensors")) for run in (source, gated))
    frozen = [k for k in old if k.startswith(("backbone.", "decoder."))]
    assert frozen and all(np.array_equal(old[k].numpy(), new[k].numpy()) for k in frozen)
    assert any(k.startswith("coarse.") for k in new) and not any(k.startswith("coarse.") for k in old)

    predictor = Predictor.from_run(gated)
    assert predictor.only_task is None and predictor.default_route() == "gate"
    images = sorted((root / "B. Disease Grading").rglob("*.jpg"))[:6]
    for image in images:
        prediction = predictor.predict(image)
        p_segmentation = float(prediction.gate_probs[0])
        if p_segmentation >= point["threshold"]:
            assert prediction.ran == ("segmentation",) and prediction.grades_from == "lesion evidence"
        else:  # routed to classification: the decoder never ran, the fitted heads grade it
            assert prediction.ran == ("classification",) and prediction.seg_probs is None
            assert prediction.grades_from == "classification heads"
    assert (gated / "weights" / "fit-gate.json").exists()
    assert predictor.gradcam(images[0], "dr").max() == pytest.approx(1.0)  # explained through the coarse head
    with pytest.raises(DataError, match="exists"):
        fit_gate(source, gated, progress=False)


def test_fit_gate_on_the_rich_summary_writes_a_run_that_loads_and_routes(lesion_run, tmp_path: Path) -> None:
    """--summary rich: 50 numbers in the weights, the setting in the config, the gate's C for it, and the Predictor
    rebuilds the same model from the run folder alone."""
    source, root = lesion_run
    report = fit_gate(source, tmp_path / "rich", epochs_coarse=2, coarse_summary="rich", progress=False)
    config = load_config(tmp_path / "rich" / "config.yaml")
    assert config.model.coarse_summary == report["coarse_summary"] == "rich" and report["c"] == GATE_C["rich"]
    weights = load_file(str(tmp_path / "rich" / "weights" / "best.safetensors"))
    assert weights["evidence_norm.mean"].shape == (50,) and weights["gate.mlp.2.weight"].shape == (2, 50)
    assert weights["classifier.dr_evidence.weight"].shape == (5, 50)
    predictor = Predictor.from_run(tmp_path / "rich")
    image = sorted((root / "B. Disease Grading").rglob("*.jpg"))[0]
    assert predictor.predict(image).ran in (("segmentation",), ("classification",))
    # --keep-coarse: the same coarse head, the regressions refitted (here unchanged: the same photographs and C)
    kept = fit_gate(tmp_path / "rich", tmp_path / "kept", keep_coarse=True, progress=False)
    again = load_file(str(tmp_path / "kept" / "weights" / "best.safetensors"))
    assert kept["kept_coarse"] and "coarse_bce" not in kept and kept["coarse_summary"] == "rich"
    coarse = [k for k in weights if k.startswith("coarse.")]
    assert coarse and all(np.array_equal(weights[k].numpy(), again[k].numpy()) for k in coarse)
    assert np.allclose(weights["gate.mlp.2.weight"].float().numpy(), again["gate.mlp.2.weight"].float().numpy(),
                       atol=0.02)
    with pytest.raises(DataError, match="no coarse lesion head to keep"):
        fit_gate(source, tmp_path / "nohead", keep_coarse=True, progress=False)
    with pytest.raises(DataError, match="basic or rich, not 'fancy'"):
        fit_gate(source, tmp_path / "fancy", coarse_summary="fancy", progress=False)
    assert not (tmp_path / "fancy").exists()  # refused before anything is written


def test_the_linear_gate_is_the_logistic_regression_it_was_fitted_as() -> None:
    """fit_heads writes scikit-learn's regression into the gate: its softmax must give the regression's p."""
    import torch
    from sklearn.linear_model import LogisticRegression

    from core.infer.evidence import multinomial_logit
    from core.model.gate import Gate
    from core.train.posthoc import _linear_into

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 20))
    y = (x[:, 0] + 0.5 * rng.normal(size=60) > 0).astype(int)
    gate = Gate(20, hidden=0, normalize=False).eval()
    _linear_into(gate.last, *multinomial_logit(x, y, 2, 0.1))
    expected = LogisticRegression(C=0.1, max_iter=5000, class_weight="balanced").fit(x, y).predict_proba(x)[:, 1]
    got = gate(torch.from_numpy(x).float()).softmax(1)[:, 1].detach().numpy()
    assert np.allclose(got, expected, atol=1e-5)


def test_fit_gate_refuses_a_run_without_graded_photographs(tiny_run: Path, tmp_path: Path) -> None:
    from core.data.metadata import load_metadata, write_metadata

    metadata = load_metadata(tiny_run / "metadata.json")
    document = dict(metadata.raw, samples=[e for e in metadata.raw["samples"] if e["dr_grade"] is None])
    write_metadata(document, tiny_run / "metadata.json")
    with pytest.raises(DataError, match="at least 10 graded"):
        fit_gate(tiny_run, tmp_path / "out", progress=False)


def test_a_standardised_regression_folds_into_a_layer_on_raw_inputs() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from core.train.posthoc import _standardised_logit

    rng = np.random.default_rng(1)
    x = rng.normal(loc=5.0, scale=[0.1, 3.0, 1.0], size=(80, 3))
    y = rng.integers(0, 3, size=80)
    weight, bias = _standardised_logit(x, y, 3, 0.5)
    scaler = StandardScaler().fit(x)
    expected = LogisticRegression(C=0.5, max_iter=5000, class_weight="balanced").fit(scaler.transform(x), y)
    logits = x @ weight.T + bias
    got = np.exp(logits - logits.max(1, keepdims=True))
    assert np.allclose(got / got.sum(1, keepdims=True), expected.predict_proba(scaler.transform(x)), atol=1e-6)


def test_the_views_are_the_photograph_and_its_three_flips() -> None:
    import torch

    from core.train.posthoc import VIEWS, _view, read_frozen

    image = torch.arange(6.0).view(1, 1, 2, 3)
    seen = [_view(image, v)[0, 0].tolist() for v in range(len(VIEWS))]
    assert seen == [[[0, 1, 2], [3, 4, 5]], [[2, 1, 0], [5, 4, 3]], [[3, 4, 5], [0, 1, 2]], [[5, 4, 3], [2, 1, 0]]]
    with pytest.raises(DataError, match="1 to 4 views"):
        read_frozen(None, None, [], progress=False, views=5)


@pytest.mark.slow
def test_train_fit_gate_gives_a_run_trained_on_masks_alone_its_gate_in_one_command(tmp_path: Path) -> None:
    """train.fit_gate: the demo's recipe (lesions trained alone, then the grader and the gate) is one command."""
    root = make_idrid(tmp_path / "data", FixtureSpec(seg={"train": 6, "test": 2}, grading={"train": 30, "test": 4}))
    config = config_from_dict({
        "name": "routed", "data": {"source": "folder", "roots": [str(root)], "image_size": 64,
                                   "cache_dir": str(tmp_path / "cache"), "tasks": ["segmentation"]},
        "model": {"decoder_channels": [32, 16, 16, 8]},
        "train": {"epochs": 1, "batch_size": 4, "max_steps": 2, "fit_grader": True, "fit_gate": True,
                  "fit_gate_views": 2},
    })
    Trainer(config, tmp_path / "run", progress_bar=False).fit()
    fitted = load_config(tmp_path / "run" / "config.yaml")
    assert (fitted.model.gate_input, fitted.model.coarse_reads, fitted.infer.route) == ("lesions", "pyramid", "gate")
    assert 0 < fitted.infer.gate_threshold < 1
    assert json.loads((tmp_path / "run" / "weights" / "fit-gate.json").read_text())["views"] == 2
    assert "gate fitted on" in (tmp_path / "run" / "train.log").read_text()
    predictor = Predictor.from_run(tmp_path / "run")
    assert predictor.default_route() == "gate" and predictor.only_task is None


def test_fit_gate_glance_reads_the_decoders_own_maps_of_a_smaller_copy(lesion_run, tmp_path: Path) -> None:
    """--gate-input glance: no coarse head; the gate and the grade heads read the summary of the run's own lesion
    maps of a glance_size-px copy of the canvas; a photograph routed to classification never meets the decoder at
    the canvas's size, and its route is the one the gate alone gives."""
    import torch
    import torch.nn.functional as F

    from core.model.coarse import glance_grid, lesion_summary

    source, root = lesion_run
    report = fit_gate(source, tmp_path / "glance", gate_input="glance", glance_size=32, progress=False)
    config = load_config(tmp_path / "glance" / "config.yaml")
    assert (config.model.gate_input, config.model.glance_size, config.infer.route) == ("glance", 32, "gate")
    assert report["glance_size"] == 32 and "coarse_bce" not in report and report["coarse_reads"] is None
    old, new = (load_file(str(run / "weights" / "best.safetensors")) for run in (source, tmp_path / "glance"))
    assert not any(k.startswith("coarse.") for k in new) and new["evidence_norm.mean"].shape == (20,)  # basic
    assert all(np.array_equal(old[k].numpy(), new[k].numpy()) for k in old if k.startswith(("backbone.", "decoder.")))

    predictor = Predictor.from_run(tmp_path / "glance")
    model = predictor.model
    images = sorted((root / "B. Disease Grading").rglob("*.jpg"))[:8]
    tensors = torch.cat([predictor.prepare(image).tensor for image in images])
    with torch.no_grad():  # the glance is the model's own segmentation of the 32-px copy, max-pooled to the grid
        small = F.interpolate(tensors, scale_factor=0.5, mode="bilinear", align_corners=False, antialias=True)
        expected = glance_grid(model.segment(small), tensors.shape[-2:])
        assert expected.shape == (8, 5, 4, 4)
        assert torch.allclose(model.glance(tensors)[1], expected, atol=1e-5)
        summary = model.evidence_norm(lesion_summary(expected, "basic"))
        assert torch.allclose(model.gate_logits_of(tensors), model.gate(summary), atol=1e-5)
    sizes: list[int] = []
    handle = model.decoder.register_forward_hook(lambda m, args, out: sizes.append(int(args[0].shape[-1])))
    try:
        for image in images:
            sizes.clear()
            prediction = predictor.predict(image)
            segmented = float(prediction.gate_probs[0]) >= config.infer.gate_threshold
            assert prediction.ran == (("segmentation",) if segmented else ("classification",))
            if segmented:
                assert 64 in sizes and prediction.grades_from == "lesion evidence"
            else:  # the glance alone met the decoder, at 32 px
                assert sizes == [32] and prediction.seg_probs is None
                assert prediction.grades_from == "classification heads"
            assert prediction.report()["gate"]["reads"] == "lesion maps of a 32-px copy"
    finally:
        handle.remove()
    assert predictor.gradcam(images[0], "dr").max() == pytest.approx(1.0)  # explained through the glance
    with pytest.raises(DataError, match="multiple of 32 px from 32 to the run's canvas"):
        fit_gate(source, tmp_path / "odd", gate_input="glance", glance_size=48, progress=False)
    assert not (tmp_path / "odd").exists()


def test_a_glance_gate_is_not_trained_and_its_size_is_checked(tmp_path: Path) -> None:
    from core.errors import ConfigError
    from core.model.gated import GatedMultiTaskModel

    config = config_from_dict({"name": "g", "data": {"image_size": 64}, "model": {"gate_input": "glance",
                                                                                    "glance_size": 32}})
    with pytest.raises(ConfigError, match="fitted after training"):
        Trainer(config, tmp_path / "run", progress_bar=False).fit()
    assert not (tmp_path / "run").exists()  # refused before anything is written
    for size in (48, 128, 0):
        with pytest.raises(ConfigError, match="model.glance_size must be a multiple of 32"):
            config_from_dict({"data": {"image_size": 64}, "model": {"gate_input": "glance", "glance_size": size}})
    config_from_dict({"data": {"image_size": 64}, "model": {"glance_size": 384}})  # unused without a glance gate
    with pytest.raises(ValueError, match="glance is at least 32 px"):
        GatedMultiTaskModel(gate_input="glance", glance_size=16)
