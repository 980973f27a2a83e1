"""Figures: trace and annotation counts for given inputs, empty inputs, exact overlay pixels, serialisation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest

from core import figures
from core.figures import (
    LESION_COLOURS,
    TASK_NAMES,
    confusion_heatmap,
    gallery_tile,
    gate_accuracy,
    grade_bars,
    learning_curves,
    lesion_bars,
    overlay,
    overlay_figure,
    pr_curves,
)

HISTORY = [
    {"epoch": 1, "step": 16, "train/total": 5.6, "val/total": 6.5, "train/gate_acc": 0.6, "val/gate_acc": 0.79},
    {"epoch": 2, "step": 32, "train/total": 4.1, "val/total": 5.0, "train/gate_acc": 0.8, "val/gate_acc": 0.85},
    {"epoch": 3, "step": 48, "train/total": 3.0},  # no val this epoch
]


def _check(fig: go.Figure) -> go.Figure:
    """Every figure: a Figure, the shared template, a title, and JSON that plotly can write."""
    assert isinstance(fig, go.Figure)
    assert fig.layout.title.text
    assert fig.layout.template.layout.paper_bgcolor is not None  # a template was applied (plotly_white)
    json.loads(fig.to_json())
    return fig


def _texts(fig: go.Figure) -> list[str]:
    return [a.text for a in fig.layout.annotations]


def test_constants() -> None:
    assert list(LESION_COLOURS) == ["MA", "HE", "EX", "SE", "OD"]
    assert LESION_COLOURS["SE"] == "#00e5ff" and TASK_NAMES == ("segmentation", "classification")


def test_figures_do_not_import_torch_or_streamlit() -> None:
    code = "import sys, core.figures; print(any(m in sys.modules for m in ('torch', 'streamlit')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.stdout.strip() == "False"


def test_learning_curves() -> None:
    fig = _check(learning_curves({"a": HISTORY, "b": HISTORY[:1]}))
    assert len(fig.data) == 4  # 2 runs x 2 metrics
    assert list(fig.data[1].y) == [6.5, 5.0]  # the epoch without val is skipped
    assert _texts(fig) == ["a", "b"]  # one panel per run
    overlaid = _check(learning_curves({"a": HISTORY, "b": HISTORY}, metrics=("val/total",), side_by_side=False))
    assert len(overlaid.data) == 2 and overlaid.data[0].name == "a · val/total"
    assert overlaid.layout.xaxis.title.text == "epoch"
    empty = _check(learning_curves({}))
    assert len(empty.data) == 0 and len(empty.layout.annotations) == 1
    missing = _check(learning_curves({"a": HISTORY}, metrics=("val/dice_MA",)))
    assert len(missing.data) == 0 and "No values" in _texts(missing)[-1]


def test_gate_accuracy() -> None:
    log = [{"step": s, "gate_acc": (s % 4) / 4} for s in range(1, 60)] + [{"step": 60}]
    fig = _check(gate_accuracy(log, HISTORY, window=10))
    assert [t.name for t in fig.data] == ["batch", "batch, mean of 10", "train (epoch)", "val (epoch)"]
    assert len(fig.data[0].x) == 59 and list(fig.data[3].x) == [16, 32]
    last_ten = np.mean([(s % 4) / 4 for s in range(50, 60)])
    assert fig.data[1].y[0] == pytest.approx(0.25) and fig.data[1].y[-1] == pytest.approx(last_ten)
    assert fig.data[0].opacity < 1
    assert len(_check(gate_accuracy(log, [])).data) == 2
    empty = _check(gate_accuracy([], []))
    assert len(empty.data) == 0 and len(empty.layout.annotations) == 1


def test_confusion_heatmap() -> None:
    fig = _check(confusion_heatmap([[3, 1], [0, 4]], ["no DME", "DME"], "DME risk"))
    assert len(fig.data) == 1 and len(fig.layout.annotations) == 4
    assert "3<br>75%" in _texts(fig) and "0<br>0%" in _texts(fig)
    assert fig.data[0].z[0][0] == pytest.approx(0.75)
    assert fig.layout.xaxis.title.text == "predicted" and fig.layout.yaxis.title.text == "truth"
    counts = _check(confusion_heatmap([[3, 1], [0, 0]], ["0", "1"], "counts", normalize=False))
    assert counts.data[0].z[0][0] == 3 and "0<br>–" in _texts(counts)
    routing = _check(confusion_heatmap([[5, 1], [2, 7], [3, 3]], ["segmentation", "classification", "both"],
                                       "Routing", x_labels=["segmentation", "classification"]))
    assert len(routing.layout.annotations) == 6
    empty = _check(confusion_heatmap([], [], "empty"))
    assert len(empty.data) == 0
    with pytest.raises(ValueError):
        confusion_heatmap([[1, 2], [3, 4]], ["a", "b", "c"], "bad")


def test_lesion_bars() -> None:
    results = {"run1": {"MA": 0.2, "HE": 0.5, "EX": 0.7, "SE": None, "OD": 0.9},
               "run2": {"MA": 0.25, "HE": {"dice": 0.4}, "EX": float("nan"), "OD": 0.95}}  # SE missing
    fig = _check(lesion_bars(results))
    assert len(fig.data) == 2
    assert list(fig.data[0].text) == ["0.200", "0.500", "0.700", "", "0.900"]
    assert fig.data[1].y[1] == 0.4
    assert _texts(fig).count("n/a") == 3  # run1 SE, run2 EX (NaN) and SE (missing)
    assert LESION_COLOURS["EX"] in fig.layout.xaxis.ticktext[2]
    summary_like = {"r": {lesion: {"dice_mean": 0.5} for lesion in LESION_COLOURS}}
    assert _texts(_check(lesion_bars(summary_like, metric="dice_mean"))) == []
    assert len(_check(lesion_bars({})).layout.annotations) == 1


def test_pr_curves() -> None:
    curves = {"OD": {"precision": [1.0, 0.9, 0.5], "recall": [0.1, 0.6, 1.0], "aupr": 0.8},
              "MA": {"aupr": None, "pr_curve": {"precision": [], "recall": [], "threshold": []}}}
    fig = _check(pr_curves(curves))
    assert [t.name for t in fig.data] == ["MA (AUPR n/a)", "OD (AUPR 0.800)"]
    assert fig.data[1].line.color == LESION_COLOURS["OD"]
    assert fig.layout.xaxis.title.text == "recall"
    assert len(_check(pr_curves({})).data) == 0


def test_pr_curves_from_accumulator_summary() -> None:
    from core.evaluate.metrics import SegmentationAccumulator

    rng = np.random.default_rng(0)
    acc = SegmentationAccumulator(bins=100)
    acc.add(rng.random((5, 20, 20)), rng.random((5, 20, 20)) < 0.1)
    fig = _check(pr_curves(acc.summary()))
    assert len(fig.data) == 5 and all(len(t.x) > 1 for t in fig.data)


def test_grade_bars() -> None:
    fig = _check(grade_bars([0.1, 0.6, 0.2, 0.05, 0.05], ["0", "1", "2", "3", "4"], truth=2, title="DR grade"))
    assert len(fig.data) == 1 and len(fig.layout.annotations) == 1
    colours = list(fig.data[0].marker.color)
    assert colours[1] == figures.HIGHLIGHT and colours.count(figures.HIGHLIGHT) == 1
    assert list(fig.data[0].marker.line.width) == [0, 0, 3, 0, 0]
    assert len(_check(grade_bars([0.2, 0.3, 0.5], ["0", "1", "2"], truth=None, title="DME")).layout.annotations) == 0
    assert len(_check(grade_bars([0.2, 0.8], ["a", "b"], truth=-100, title="DME")).layout.annotations) == 0
    assert _texts(grade_bars([0.2, 0.8], ["a", "b"], truth=1, title="t")) == ["truth ✓"]
    assert len(_check(grade_bars([], [], truth=None, title="none")).data) == 0
    with pytest.raises(ValueError):
        grade_bars([0.5, 0.5], ["a"], truth=None, title="bad")


def test_grade_bars_axis_ends_at_100_percent() -> None:
    """A probability axis that ran to 125% read as if a grade could be more than certain (issue 20)."""
    for probs in ([1.0, 0.0, 0.0], [0.34, 0.33, 0.33]):
        fig = grade_bars(probs, ["0", "1", "2"], truth=0, title="DME risk")
        assert tuple(fig.layout.yaxis.range) == (0, 1)
        assert fig.data[0].cliponaxis is False  # a 100% bar's label is still drawn


def _scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    image = np.full((40, 60, 3), 100, dtype=np.uint8)
    masks = np.zeros((5, 40, 60), dtype=np.float32)
    masks[4, 5:15, 5:15] = 0.9  # OD predicted
    masks[0, 30:35, 40:45] = 0.3  # MA below threshold: not drawn
    truth = np.zeros((5, 40, 60), dtype=bool)
    truth[4, 20:36, 20:36] = True  # OD truth elsewhere: a miss, only a contour
    return image, masks, truth


def test_overlay_colours_exactly_the_masked_pixels() -> None:
    image, masks, _ = _scene()
    out = overlay(image, masks, opacity=0.5)
    assert out.dtype == np.uint8 and out.shape == image.shape
    od = np.array([0x32, 0xD7, 0x4B], dtype=np.float32)
    assert out[10, 10].tolist() == np.round(0.5 * 100 + 0.5 * od).astype(int).tolist()
    changed = np.any(out != image, axis=2)
    assert changed.sum() == 100 and changed[5:15, 5:15].all()  # exactly the OD square, not the weak MA
    assert out[32, 42].tolist() == [100, 100, 100]
    full = overlay(image, masks.astype(bool), opacity=1.0, lesions=["OD"])
    assert full[10, 10].tolist() == [0x32, 0xD7, 0x4B]
    assert np.array_equal(overlay(image, masks, lesions=["MA", "HE"]), image)  # OD not selected
    with pytest.raises(ValueError):
        overlay(image, masks, lesions=["XX"])
    with pytest.raises(ValueError):
        overlay(image, masks[:, :20])


def test_overlay_draws_truth_contours() -> None:
    image, masks, truth = _scene()
    out = overlay(image, masks, truth=truth)
    od = [0x32, 0xD7, 0x4B]
    assert out[20, 28].tolist() == od and out[35, 28].tolist() == od  # top and bottom edges of the true square
    assert out[28, 20].tolist() == od and out[28, 35].tolist() == od  # left and right edges
    assert out[28, 28].tolist() == [100, 100, 100]  # inside the contour: not filled (nothing was predicted)
    assert out[19, 28].tolist() == [100, 100, 100]  # outside it: untouched
    assert np.array_equal(out[:18], overlay(image, masks)[:18])  # the prediction's fill is unchanged


def test_overlay_accepts_grey_and_float_images() -> None:
    _, masks, _ = _scene()
    grey = overlay(np.full((40, 60), 0.5, dtype=np.float32), masks, opacity=0.0)
    assert grey.shape == (40, 60, 3) and grey[0, 0].tolist() == [128, 128, 128]


def test_overlay_figure() -> None:
    image, masks, truth = _scene()
    fig = _check(overlay_figure(image, masks, truth=truth, lesions=["EX", "OD"]))
    assert isinstance(fig.data[0], go.Image) and fig.data[0].source.startswith("data:image/png;base64,")
    assert [t.name for t in fig.data[1:]] == ["EX", "OD"]
    assert fig.data[2].marker.color == LESION_COLOURS["OD"]
    assert "ground truth" in fig.layout.title.text
    big = _check(overlay_figure(np.zeros((400, 600, 3), np.uint8), np.zeros((5, 400, 600), bool), max_side=300))
    assert big.data[0].dx == pytest.approx(2.0) and tuple(big.layout.xaxis.range) == (-0.5, 599.5)
    assert len(big.data) == 6


def test_gallery_tile_frames() -> None:
    image = np.full((100, 150, 3), 90, dtype=np.uint8)
    plain = gallery_tile(image, "seg/test/IDRiD_55", "routed: segmentation", misrouted=False)
    wrong = gallery_tile(image, "cls/test/IDRiD_001", "routed: segmentation — DR 3", misrouted=True)
    both = gallery_tile(image, "seg/train/IDRiD_05", "routed: classification", misrouted=True, both=True)
    for tile in (plain, wrong, both):
        assert tile.dtype == np.uint8 and tile.ndim == 3 and tile.shape[1] == 256
    assert plain.shape == wrong.shape == both.shape  # tiles line up in a grid
    assert wrong[0, 0].tolist() == list(figures.FRAME_MISROUTED)
    assert plain[0, 0].tolist() == list(figures.FRAME_NEUTRAL)
    assert both[0, 0].tolist() == list(figures.FRAME_BOTH)  # never red, even when flagged misrouted
    # the red frame is thick: 6+ px in, the plain tile already shows the image there
    assert wrong[6, 128].tolist() == list(figures.FRAME_MISROUTED) and plain[6, 128].tolist() == [90, 90, 90]
    # the badge (a filled box in the frame colour) sits in the top-left corner of the image
    assert (np.all(wrong[12:26, 14:60] == figures.FRAME_MISROUTED, axis=2).mean() > 0.5)
    assert not np.array_equal(wrong, plain)
