"""Routing for real: the coarse lesion head the gate reads, the operating point chosen for sensitivity, and a
photograph sent to classification never entering the decoder (model, Predictor, evaluation, dashboard view)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from core.evaluate.metrics import threshold_for_sensitivity
from core.model.coarse import SUMMARY_STATS, CoarseLesionHead, coarse_targets, lesion_summary, summary_width
from core.model.gated import GatedMultiTaskModel
from core.model.losses import MultiTaskLoss
from core.vocabulary import LESIONS


def _small(gate_input: str = "lesions") -> GatedMultiTaskModel:
    torch.manual_seed(0)
    return GatedMultiTaskModel("convnext_atto", decoder_channels=(16, 16, 8, 8), gate_hidden=8,
                               pooling="multiscale", gate_input=gate_input).eval()


def test_the_summary_reads_each_lesion_map() -> None:
    logits = torch.full((1, len(LESIONS), 10, 10), -20.0)
    logits[0, 1, 2, 3] = 20.0  # one haemorrhage cell: p = 1 there, 0 elsewhere
    logits[0, 2] = 0.0  # exudate map undecided everywhere: p = 0.5
    summary = lesion_summary(logits).view(len(LESIONS), len(SUMMARY_STATS["basic"]))
    assert summary.shape[0] * summary.shape[1] == summary_width()
    he, ex, ma = summary[1], summary[2], summary[0]
    assert he.tolist() == pytest.approx([1.0, 1.0, 0.01, 0.01], abs=1e-6)  # max, top 1% (1 cell), mean, share
    assert ex.tolist() == pytest.approx([0.5, 0.5, 0.5, 1.0], abs=1e-6)
    assert ma.tolist() == pytest.approx([0.0, 0.0, 0.0, 0.0], abs=1e-6)


def test_the_rich_summary_counts_cells_so_few_spots_and_many_differ() -> None:
    """Three faint microaneurysm cells against thirty haemorrhage cells: the maximum cannot tell them apart, the
    shares and log-counts above 0.2 and 0.1 can; the top-10 and top-0.1% means read the few brightest."""
    logits = torch.full((2, len(LESIONS), 40, 50), -20.0)  # 2,000 cells: the top 0.1% is 2 cells, the top 1% 20
    p = torch.tensor([0.3, 0.6, 0.15])
    logits[0, 0, 0, :3] = torch.log(p / (1 - p))  # MA: three cells at 0.3, 0.6, 0.15
    logits[1, 1, :3, :10] = 20.0  # HE: thirty cells at 1
    rich = lesion_summary(logits, "rich").view(2, len(LESIONS), len(SUMMARY_STATS["rich"]))
    assert rich.shape[1] * rich.shape[2] == summary_width(kind="rich") == 50
    stats = dict(zip(SUMMARY_STATS["rich"], rich[0, 0].tolist()))
    assert stats["max"] == pytest.approx(0.6, abs=1e-5)
    assert stats["top01pct"] == pytest.approx(0.45, abs=1e-5)  # (0.6 + 0.3) / 2
    assert stats["top10"] == pytest.approx(1.05 / 10, abs=1e-5)
    assert stats["top1pct"] == pytest.approx(1.05 / 20, abs=1e-5)
    assert stats["share50"] == pytest.approx(1 / 2000) and stats["share20"] == pytest.approx(2 / 2000)
    assert stats["share10"] == pytest.approx(3 / 2000)
    assert stats["logcount50"] == pytest.approx(np.log1p(1)) and stats["logcount20"] == pytest.approx(np.log1p(2))
    he = dict(zip(SUMMARY_STATS["rich"], rich[1, 1].tolist()))
    assert he["max"] == pytest.approx(1.0) and he["top10"] == pytest.approx(1.0) and he["top1pct"] == pytest.approx(1.0)
    assert he["logcount50"] == pytest.approx(np.log1p(30)) and he["share10"] == pytest.approx(30 / 2000)
    assert rich[1, 0].abs().max() < 1e-6 and rich[0, 1].abs().max() < 1e-6  # each photograph, each lesion its own
    # the basic summary is the first four of the rich one
    assert torch.allclose(lesion_summary(logits).view(2, len(LESIONS), 4), rich[..., :4])
    with pytest.raises(ValueError, match="basic, rich, not 'fancy'"):
        lesion_summary(logits, "fancy")


def test_a_rich_summary_model_refuses_basic_summary_weights(tmp_path: Path) -> None:
    from core.run.weights import load_weights, save_weights
    from core.errors import ConfigError

    basic = _small()
    torch.manual_seed(0)
    rich = GatedMultiTaskModel("convnext_atto", decoder_channels=(16, 16, 8, 8), gate_hidden=8,
                               pooling="multiscale", gate_input="lesions", coarse_summary="rich").eval()
    assert rich.evidence_norm.mean.shape[0] == 50 and basic.evidence_norm.mean.shape[0] == 20
    path = tmp_path / "basic.safetensors"
    save_weights(basic, path, {"gate_input": "lesions", "coarse_summary": "basic"}, torch.float32)
    with pytest.raises(ConfigError, match="coarse_summary: file 'basic' vs config 'rich'"):
        load_weights(rich, path, {"gate_input": "lesions", "coarse_summary": "rich"})
    with pytest.raises(ConfigError, match="do not fit this model"):  # a file that predates the key: shapes catch it
        load_weights(rich, path, {"gate_input": "lesions"})


def test_a_coarse_cell_is_positive_when_any_of_its_pixels_is() -> None:
    masks = torch.zeros(1, len(LESIONS), 64, 64)
    masks[0, 0, 17, 33] = 1  # a one-pixel microaneurysm
    target = coarse_targets(masks, (4, 4))
    assert target[0, 0].nonzero().tolist() == [[1, 2]] and float(target.sum()) == 1.0


def test_the_coarse_head_draws_at_stride_16_and_starts_near_no_lesion() -> None:
    model = _small()
    images = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        output = model(images, route="both")
    assert isinstance(model.coarse, CoarseLesionHead)
    assert tuple(output.coarse_logits.shape) == (2, len(LESIONS), 8, 8)
    assert float(output.coarse_logits.sigmoid().mean()) < 0.05  # the rare-lesion prior
    assert _small("pooled")(images, route="both").coarse_logits is None


def test_the_pyramid_head_keeps_one_shallow_spot_visible_on_its_stride_16_grid() -> None:
    """A single hot stride-4 pixel (a microaneurysm the deep maps have blurred) reaches the grid cell that holds it
    through the maximum, at its full value, and through the mean at 1/16 of it; the deep head never sees it."""
    channels = (4, 6, 8, 10)
    features = [torch.zeros(1, c, 64 // s, 64 // s) for c, s in zip(channels, (4, 8, 16, 32))]
    features[0][0, 2, 9, 5] = 3.0  # stride-4 map, cell (2, 1) of the 4x4 stride-16 grid
    pyramid = CoarseLesionHead(channels, hidden=8, reads="pyramid")
    grid = pyramid.grid(features)
    assert tuple(grid.shape) == (1, 8 + 10 + 2 * (4 + 6), 4, 4)
    f4_max, f4_mean = grid[0, 18 + 2], grid[0, 18 + 4 + 2]  # after f16 and f32: f4's maxima, then its means
    assert f4_max.nonzero().tolist() == [[2, 1]] and float(f4_max[2, 1]) == 3.0
    assert float(f4_mean[2, 1]) == pytest.approx(3.0 / 16)
    assert tuple(pyramid(features).shape) == (1, len(LESIONS), 4, 4)
    deep = CoarseLesionHead(channels, hidden=8)
    assert tuple(deep.grid(features).shape) == (1, 18, 4, 4) and float(deep.grid(features).abs().sum()) == 0.0
    with pytest.raises(ValueError, match="pyramid"):
        CoarseLesionHead(channels, reads="everything")


def test_a_pyramid_gated_model_round_trips_through_its_weights(tmp_path: Path) -> None:
    from core.config import ModelConfig
    from core.errors import ConfigError
    from core.model.factory import build_model, model_signature
    from core.run.weights import load_weights, save_weights

    config = ModelConfig(decoder_channels=[16, 16, 8, 8], gate_hidden=0, gate_input="lesions", coarse_reads="pyramid")
    model = build_model(config).eval()
    assert model.coarse.mix[0].in_channels == 160 + 320 + 2 * (40 + 80)  # convnext_atto's four stages
    save_weights(model, tmp_path / "w.safetensors", model_signature(config), torch.float32)
    again = build_model(config, load_pretrained=False).eval()
    load_weights(again, tmp_path / "w.safetensors", model_signature(config))
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(images, route="both").gate_logits, again(images, route="both").gate_logits)
    deep = ModelConfig(decoder_channels=[16, 16, 8, 8], gate_hidden=0, gate_input="lesions")
    with pytest.raises(ConfigError, match="coarse_reads"):
        load_weights(build_model(deep, load_pretrained=False), tmp_path / "w.safetensors", model_signature(deep))


def test_a_photograph_below_the_threshold_never_enters_the_decoder() -> None:
    model = _small()
    calls: list[int] = []
    handle = model.decoder.register_forward_hook(lambda m, args, out: calls.append(out.shape[0]))
    images = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        p_seg = model(images, route="both").gate_probs[:, 0]
        calls.clear()
        middle = float(p_seg.median())
        output = model(images, route="gate", gate_threshold=middle)
        sent = (p_seg >= middle).nonzero().flatten().tolist()
        assert output.seg_index.tolist() == sent and calls == [len(sent)]
        assert sorted(output.cls_index.tolist()) == sorted(set(range(3)) - set(sent))
        calls.clear()
        nobody = model(images, route="gate", gate_threshold=float(p_seg.max()) + 1e-4)
        assert nobody.seg_logits is None and calls == []  # the decoder did not run at all
    handle.remove()


def test_the_coarse_loss_joins_the_total_only_for_a_model_with_the_head() -> None:
    images = torch.randn(2, 3, 64, 64)
    masks = torch.zeros(2, len(LESIONS), 64, 64)
    masks[0, 2, 10:14, 10:14] = 1
    batch = {"mask": masks, "mask_valid": torch.tensor([True, False]), "task": torch.tensor([0, 1]),
             "dr": torch.tensor([-100, 2]), "dme": torch.tensor([-100, 1])}
    loss = MultiTaskLoss(coarse_weight=2.0)
    with_head = _small()(images, route="oracle", task=batch["task"])
    total, parts = loss(with_head, batch)
    assert {"coarse", "coarse_bce", "coarse_dice"} <= set(parts) and torch.isfinite(total)
    without = _small("pooled")(images, route="oracle", task=batch["task"])
    total, parts = loss(without, batch)
    present = {k: parts[k] for k in ("seg", "cls", "gate")}
    # the task-presence rule over seg, cls and gate alone: the absent head's weight does not scale the total
    assert parts["total"] == pytest.approx(sum(present.values()), rel=1e-5)


def test_the_threshold_keeps_the_wanted_sensitivity_on_literal_scores() -> None:
    truth = [True, True, True, True, False, False]
    scores = [0.9, 0.8, 0.3, 0.2, 0.5, 0.1]
    # three of four positives kept down to 0.3; halfway to the next lower score (0.2), so the same samples pass
    assert threshold_for_sensitivity(truth, scores, 0.75) == pytest.approx(0.25)
    assert threshold_for_sensitivity(truth, scores, 1.0) == pytest.approx(0.15)
    assert threshold_for_sensitivity(truth, scores, 0.5) == pytest.approx(0.65)  # the negative at 0.5 stays below
    assert threshold_for_sensitivity([True, False], [0.1, 0.4], 1.0) == pytest.approx(0.1)  # nothing lower: its own
    for wanted in (0.5, 0.75, 1.0):
        threshold = threshold_for_sensitivity(truth, scores, wanted)
        kept = [v for v, t in zip(scores, truth) if t and v >= threshold]
        assert len(kept) / 4 >= wanted and not any(v >= threshold for v, t in zip(scores, truth) if not t and v < 0.5)
    with pytest.raises(ValueError, match="no positive"):
        threshold_for_sensitivity([False], [0.3], 0.9)


def test_a_photograph_judged_not_referable_is_graded_among_the_grades_that_say_so() -> None:
    from core.infer.clinical import graded_not_referable, referable_from_grades

    dr, dme = graded_not_referable(np.array([0.1, 0.3, 0.4, 0.1, 0.1]), np.array([0.2, 0.5, 0.3]))
    assert dr == pytest.approx([0.25, 0.75, 0, 0, 0]) and dme == pytest.approx([1, 0, 0])
    assert referable_from_grades(dr, dme) == pytest.approx(0.0)
    nothing, _ = graded_not_referable(np.array([0.0, 0.0, 1.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0]))
    assert nothing == pytest.approx([1, 0, 0, 0, 0])  # no mass left among 0-1: grade 0
    rows, risks = graded_not_referable(np.full((3, 5), 0.2), np.full((3, 3), 1 / 3))
    assert rows[:, :2] == pytest.approx(np.full((3, 2), 0.5)) and risks[:, 0] == pytest.approx(np.ones(3))


def _referable(run: Path) -> Path:
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["model"]["gate_target"] = "referable"
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    return run


def test_the_operating_point_is_chosen_on_a_split_and_written_into_the_run(tiny_run: Path) -> None:
    from core.infer.predictor import Predictor
    from core.train.operating_point import choose_gate_threshold, gate_scores
    from core.data.metadata import load_metadata
    from core.data.targets import is_referable

    run = _referable(tiny_run)
    report = choose_gate_threshold(run, "test", sensitivity=0.75, progress=False)
    samples = [s for s in load_metadata(run / "metadata.json").split("test") if is_referable(s) is not None]
    truth = np.array([is_referable(s) for s in samples])
    scores = gate_scores(Predictor.from_run(run, use_grader=False), samples, progress=False)
    found = float(np.mean(scores[truth] >= report["threshold"]))
    assert found >= 0.75 and report["sensitivity"] == pytest.approx(found)
    assert report["spared_decoder"] == pytest.approx(float(np.mean(scores < report["threshold"])))
    assert yaml.safe_load((run / "config.yaml").read_text())["infer"]["gate_threshold"] == report["threshold"]
    assert json.loads((run / "weights" / "operating_point.json").read_text())["threshold"] == report["threshold"]
    predictor = Predictor.from_run(run)
    assert predictor.gate_threshold == report["threshold"]
    prediction = predictor.predict(samples[0].image)
    assert prediction.task == ("segmentation" if prediction.gate_probs[0] >= report["threshold"] else "classification")
    assert ("segmentation" in prediction.ran) == (prediction.task == "segmentation")
    assert prediction.report()["referable_dr"]["source"] == "gate"
    assert prediction.report()["referable_dr"]["operating_point"] == report["threshold"]
    routed = predictor.predict_many([s.image for s in samples])
    spared = [p for p in routed if p.task == "classification"]
    assert len(spared) == round(report["spared_decoder"] * len(samples)) > 0
    for prediction in spared:  # judged not referable: never graded referable
        assert prediction.dr_probs[2:].sum() == 0 and prediction.dme_probs[0] == 1


def test_a_task_gate_has_no_threshold_for_sensitivity(tiny_run: Path) -> None:
    from core.errors import DataError
    from core.train.operating_point import choose_gate_threshold

    with pytest.raises(DataError, match="gate_target: referable"):
        choose_gate_threshold(tiny_run, "test", progress=False)


def test_evaluation_routes_at_the_operating_point_and_the_dashboard_draws_its_roc(tiny_run: Path) -> None:
    from core.evaluate.runner import evaluate_run
    from core.views.evaluation import gate_roc, load_evaluation

    run = _referable(tiny_run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    first = evaluate_run(run, "test", progress=False)
    p = sorted(float(r["gate_p_segmentation"]) for r in load_evaluation(run, "test").predictions)
    config.setdefault("infer", {})["gate_threshold"] = (p[len(p) // 2] + p[len(p) // 2 - 1]) / 2
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    summary = evaluate_run(run, "test", progress=False)
    evaluation = load_evaluation(run, "test")
    routed = [r["route"] for r in evaluation.predictions]
    assert summary.routing["to_decoder"] == routed.count("segmentation") == len(p) - len(p) // 2
    assert first.routing["threshold"] == 0.5 and summary.routing["threshold"] == config["infer"]["gate_threshold"]
    graded_only = [r for r in evaluation.predictions if r["task"] == "classification"]
    assert summary.routing["graded_only_spared"] == sum(r["route"] == "classification" for r in graded_only)
    spared = [r for r in evaluation.predictions if r["route"] == "classification" and r["dr_pred"] != ""]
    assert spared and all(int(r["dr_pred"]) <= 1 and int(r["dme_pred"]) == 0 for r in spared)
    roc = gate_roc(evaluation)
    if roc is not None:  # both kinds among the targeted photographs
        assert roc.positive == "referable" and roc.threshold == config["infer"]["gate_threshold"]
        assert 0 <= roc.point[0] <= 1 and 0 <= roc.point[1] <= 1 and roc.fpr[0] == 0 and roc.tpr[-1] == 1


def test_training_a_lesion_gate_saves_its_head_and_says_why_it_kept_the_threshold(tmp_path: Path) -> None:
    """This fixture's validation split holds referable photographs only: training keeps 0.5 and says so (the
    choice itself is tested above on a split with both kinds)."""
    from builders import FixtureSpec, make_idrid
    from core.config import config_from_dict
    from core.infer.predictor import Predictor
    from core.run.weights import read_weights
    from core.train.trainer import Trainer

    root = make_idrid(tmp_path / "data", FixtureSpec(seg={"train": 6, "test": 2}, grading={"train": 12, "test": 4}))
    config = config_from_dict({
        "name": "lesion-gate", "data": {"source": "folder", "roots": [str(root)], "image_size": 64,
                                        "cache_dir": str(tmp_path / "cache")},
        "model": {"decoder_channels": [16, 16, 8, 8], "gate_hidden": 8, "pooling": "multiscale",
                  "gate_input": "lesions", "gate_target": "referable"},
        "train": {"epochs": 1, "batch_size": 4, "max_steps": 2, "gate_sensitivity": 0.9},
    })
    Trainer(config, tmp_path / "run", progress_bar=False).fit()
    tensors, _ = read_weights(tmp_path / "run" / "weights" / "best.safetensors")
    assert any(name.startswith("coarse.") for name in tensors)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["infer"]["gate_threshold"] is None
    assert not (tmp_path / "run" / "weights" / "operating_point.json").exists()
    console = (tmp_path / "run" / "train.log").read_text()
    assert "gate threshold left at 0.5: the val split of run run needs referable and non-referable" in console
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert any("coarse" in line for line in log)  # the head learned from the masks
    Predictor.from_run(tmp_path / "run").predict(next(root.rglob("*.jpg")))


@pytest.mark.parametrize("trains", [False, True])
def test_the_gate_never_bends_the_backbone_and_trains_the_coarse_head_only_when_asked(trains: bool) -> None:
    torch.manual_seed(0)
    model = GatedMultiTaskModel("convnext_atto", decoder_channels=(16, 16, 8, 8), gate_hidden=8, pooling="multiscale",
                                gate_input="lesions", gate_trains_coarse=trains)
    output = model(torch.randn(2, 3, 64, 64), route="both")
    output.gate_logits.sum().backward()  # the gate's loss alone
    reached = lambda module: any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in module.parameters())
    assert not reached(model.backbone)
    assert reached(model.coarse) == trains
    assert reached(model.gate)


def test_a_run_that_serves_both_experts_says_so_everywhere(tiny_run: Path) -> None:
    """infer.route: both (checkpoints/idrid, whose gate cannot decide): both experts on every photograph in the
    Predictor, evaluation's routing figures and the page's gate sentence, whatever the gate says."""
    from core.evaluate.runner import evaluate_run
    from core.infer.predictor import Predictor
    from core.views.upload import gate_sentence

    config = yaml.safe_load((tiny_run / "config.yaml").read_text())
    config.setdefault("infer", {}).update(route="both", gate_threshold=0.999999)  # the gate alone: classification
    (tiny_run / "config.yaml").write_text(yaml.safe_dump(config))
    predictor = Predictor.from_run(tiny_run)
    image = next((tiny_run.parent).rglob("*.jpg"), None) or next(Path(config["data"]["roots"][0]).rglob("*.jpg"))
    prediction = predictor.predict(image)
    assert prediction.ran == ("segmentation", "classification") and prediction.served_both
    assert prediction.task == "classification"  # what the gate said, shown beside what ran
    assert "serves both experts to every photograph" in gate_sentence(prediction)
    summary = evaluate_run(tiny_run, "test", progress=False)
    assert summary.routing["route"] == "both" and summary.routing["to_decoder"] == summary.n
    assert summary.routing["graded_only_spared"] == 0


def test_a_lesion_gated_grade_reaches_the_features_for_grad_cam_only_when_asked() -> None:
    """The grade heads read the coarse summary detached (training): Grad-CAM asks for it attached, so that the
    grade's gradient reaches the stride-16 map through the coarse head (on both shipped runs the map was empty)."""
    model = GatedMultiTaskModel("convnext_atto", decoder_channels=(16, 16, 8, 8), gate_hidden=0, pooling="avg",
                                gate_input="lesions", coarse_reads="pyramid").eval()
    torch.nn.init.normal_(model.classifier.dr_evidence.weight)  # a head that reads the summary
    torch.nn.init.zeros_(model.classifier.dr.weight)  # and not the pooled features, as fit-gate leaves it
    with torch.enable_grad():
        features = model.backbone(torch.randn(1, 3, 64, 64))
        for detach, reaches in ((True, False), (False, True)):
            dr, _ = model.classify(features, detach=detach)
            gradient = torch.autograd.grad(dr[0, 0], features[-2], allow_unused=True, retain_graph=True)[0]
            assert (gradient is not None and bool(gradient.abs().sum() > 0)) == reaches
