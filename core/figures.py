"""Plotly figures and overlay images as pure functions of saved results.

Everything here takes plain dicts, lists and numpy arrays (what ``history.jsonl``, ``log.jsonl`` and
``eval/<split>/*.json`` hold once read) and returns a ``plotly.graph_objects.Figure`` or an RGB ``uint8`` image,
so the app pages only read files through ``core`` and display, and the figures can be tested without a browser.
Nothing here reads files, imports streamlit or imports torch.

Conventions: lesion colours and order from the lesion table in ``core.vocabulary`` (``LESION_COLOURS``),
``template="plotly_white"``, a title and axis titles on every figure; missing data gives a figure that says so
instead of raising.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.vocabulary import LESION_COLOURS, LESIONS
from core.vocabulary import TASKS as TASK_NAMES  # noqa: F401  (task ids 0 and 1, for callers)

TEMPLATE = "plotly_white"

# Runs and metrics need colours that do not read as lesions; Plotly's own qualitative palette minus its reds.
SERIES_COLOURS: tuple[str, ...] = ("#636efa", "#00a08b", "#ab63fa", "#ffa15a", "#19d3f3", "#b6e880", "#ff97ff",
                                   "#fecb52", "#1f77b4", "#8c564b")
DASHES: tuple[str, ...] = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
HIGHLIGHT = "#0a84ff"
MUTED = "#c7c7cc"
INK = "#1c1c1e"

# Gallery frames (RGB): misrouted is a loud red distinct from the lesion colours, "both" a calm blue.
FRAME_MISROUTED: tuple[int, int, int] = (214, 0, 0)
FRAME_NEUTRAL: tuple[int, int, int] = (200, 200, 205)
FRAME_BOTH: tuple[int, int, int] = (10, 132, 255)


# --------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------

def _figure(title: str, x_title: str, y_title: str) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(template=TEMPLATE, title=title, xaxis_title=x_title, yaxis_title=y_title,
                      margin=dict(l=60, r=20, t=60, b=50))
    return fig


def _no_data(fig: go.Figure, message: str) -> go.Figure:
    """Say why a figure is empty rather than show blank axes."""
    fig.add_annotation(text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font=dict(size=14, color="#8e8e93"))
    return fig


def _number(value: Any) -> float | None:
    """A finite float, or None for missing, None, NaN or non-numeric values."""
    if value is None or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _hex_to_rgb(colour: str) -> tuple[int, int, int]:
    colour = colour.lstrip("#")
    return int(colour[0:2], 16), int(colour[2:4], 16), int(colour[4:6], 16)


def _points(records: Sequence[Mapping[str, Any]], x_key: str, y_key: str) -> tuple[list[float], list[float]]:
    """(x, y) of the records that have both keys as numbers, sorted by x (stable)."""
    pairs = [(x, y) for r in records
             if (x := _number(r.get(x_key))) is not None and (y := _number(r.get(y_key))) is not None]
    pairs.sort(key=lambda p: p[0])
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 from grey, RGBA or float [0, 1] / [0, 255] input."""
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(f"expected an (H, W, 3) image, got shape {array.shape}")
    array = array[..., :3]
    if array.dtype != np.uint8:
        array = array.astype(np.float32)
        if array.size and np.nanmax(array) <= 1.0:
            array = array * 255.0
        array = np.clip(np.nan_to_num(array), 0, 255).round().astype(np.uint8)
    return np.ascontiguousarray(array)


def _binary(masks: np.ndarray, threshold: float) -> np.ndarray:
    masks = np.asarray(masks)
    return masks.astype(bool) if masks.dtype == bool else np.nan_to_num(masks.astype(np.float32)) >= threshold


def _selected(lesions: Sequence[str] | None) -> tuple[str, ...]:
    chosen = LESIONS if lesions is None else tuple(lesions)
    unknown = [name for name in chosen if name not in LESION_COLOURS]
    if unknown:
        raise ValueError(f"unknown lesions {unknown}; expected some of {LESIONS}")
    return chosen


def _lesion_tick(lesion: str) -> str:
    """A tick label in the lesion's colour, so bars read against the overlay images."""
    return f"<span style='color:{LESION_COLOURS.get(lesion, INK)}'><b>{lesion}</b></span>"


# --------------------------------------------------------------------------------------------------------------
# Training curves
# --------------------------------------------------------------------------------------------------------------

def learning_curves(histories: Mapping[str, Sequence[Mapping[str, Any]]],
                    metrics: Sequence[str] = ("train/total", "val/total"),
                    side_by_side: bool = True) -> go.Figure:
    """One line per (run, metric) over ``epoch``; records missing a metric are skipped.

    ``side_by_side`` puts each run in its own panel with a shared y axis (colour = metric), which stays readable
    with several runs; ``False`` draws all runs in one panel (colour = run, dash = metric) for a direct overlay.
    """
    runs = list(histories)
    y_title = metrics[0] if len(metrics) == 1 else "value"
    if not runs:
        return _no_data(_figure("Learning curves", "epoch", y_title), "No training history yet")
    if side_by_side:
        cols = min(len(runs), 3)
        rows = math.ceil(len(runs) / cols)
        fig = make_subplots(rows=rows, cols=cols, shared_yaxes="all", subplot_titles=runs,
                            horizontal_spacing=0.05, vertical_spacing=0.12)
        fig.update_layout(template=TEMPLATE, title="Learning curves", margin=dict(l=60, r=20, t=80, b=50))
        fig.update_xaxes(title_text="epoch")
        fig.update_yaxes(title_text=y_title, col=1)
    else:
        fig = _figure("Learning curves", "epoch", y_title)
    for r, run in enumerate(runs):
        for m, metric in enumerate(metrics):
            x, y = _points(histories[run], "epoch", metric)
            if not x:
                continue
            colour = SERIES_COLOURS[(m if side_by_side else r) % len(SERIES_COLOURS)]
            dash = "solid" if side_by_side else DASHES[m % len(DASHES)]
            trace = go.Scatter(x=x, y=y, mode="lines+markers", name=metric if side_by_side else f"{run} · {metric}",
                               legendgroup=metric if side_by_side else run, showlegend=not side_by_side or r == 0,
                               line=dict(color=colour, dash=dash), marker=dict(size=5),
                               hovertemplate=f"{run}<br>{metric}<br>epoch %{{x}}: %{{y:.4g}}<extra></extra>")
            if side_by_side:
                fig.add_trace(trace, row=r // 3 + 1, col=r % 3 + 1)
            else:
                fig.add_trace(trace)
    if not fig.data:
        _no_data(fig, f"No values for {', '.join(metrics)} yet")
    return fig


def _rolling_mean(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing mean over up to ``window`` values (shorter at the start, so the line starts with the data)."""
    values = np.asarray(values, dtype=np.float64)
    sums = np.cumsum(np.insert(values, 0, 0.0))
    index = np.arange(1, len(values) + 1)
    start = np.maximum(index - max(int(window), 1), 0)
    return (sums[index] - sums[start]) / (index - start)


def gate_accuracy(log: Sequence[Mapping[str, Any]], history: Sequence[Mapping[str, Any]],
                  window: int = 25) -> go.Figure:
    """Per-batch gate accuracy (faint, plus a rolling mean) and per-epoch train / val accuracy, over steps.

    Batches are noisy (a batch of 8 moves accuracy in steps of 1/8), hence the faint raw line and a mean over
    ``window`` batches; epochs are placed at their ``step`` so both share the step axis.
    """
    fig = _figure("Gate routing accuracy", "step", "gate accuracy")
    steps, values = _points(log, "step", "gate_acc")
    if steps:
        fig.add_trace(go.Scatter(x=steps, y=values, mode="lines", name="batch", opacity=0.3,
                                 line=dict(color=SERIES_COLOURS[0], width=1)))
        fig.add_trace(go.Scatter(x=steps, y=_rolling_mean(values, window).tolist(), mode="lines",
                                 name=f"batch, mean of {window}", line=dict(color=SERIES_COLOURS[0], width=2)))
    for key, name, colour in (("train/gate_acc", "train (epoch)", SERIES_COLOURS[1]),
                              ("val/gate_acc", "val (epoch)", SERIES_COLOURS[2])):
        x, y = _points(history, "step", key)
        if x:
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=name,
                                     line=dict(color=colour, width=2), marker=dict(size=8)))
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%")
    if not fig.data:
        _no_data(fig, "No gate accuracy logged yet")
    return fig


def step_curves(log: list[dict[str, Any]], keys: tuple[str, ...] = ("total", "seg", "cls", "gate"),
                window: int = 10) -> go.Figure:
    """Training losses per batch: faint raw values and a rolling mean over ``window`` batches."""
    fig = go.Figure()
    fig.update_layout(template=TEMPLATE, title="Training loss per step", xaxis_title="step",
                      yaxis_title="loss", margin=dict(l=60, r=20, t=60, b=50))
    for index, key in enumerate(keys):
        pairs = [(r["step"], r[key]) for r in log if isinstance(r.get(key), (int, float)) and "step" in r]
        if not pairs:
            continue
        steps, values = zip(*pairs, strict=True)
        colour = SERIES_COLOURS[index % len(SERIES_COLOURS)]
        values_array = np.asarray(values, dtype=np.float64)
        sums = np.cumsum(np.insert(values_array, 0, 0.0))
        ends = np.arange(1, len(values_array) + 1)
        starts = np.maximum(ends - window, 0)
        mean = (sums[ends] - sums[starts]) / (ends - starts)
        fig.add_trace(go.Scatter(x=steps, y=values, mode="lines", name=f"{key} (batch)", opacity=0.25,
                                 line=dict(color=colour, width=1), legendgroup=key, showlegend=False))
        fig.add_trace(go.Scatter(x=steps, y=mean.tolist(), mode="lines", name=key, legendgroup=key,
                                 line=dict(color=colour, width=2)))
    if not fig.data:
        fig.add_annotation(text="No step logged yet", x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False)
    return fig


# --------------------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------------------

def confusion_heatmap(matrix: Sequence[Sequence[int]], labels: Sequence[str], title: str, normalize: bool = True,
                      x_labels: Sequence[str] | None = None) -> go.Figure:
    """Heatmap of a confusion matrix, truth on y and prediction on x, each cell annotated with count and row %.

    Colour follows the row percentage when ``normalize`` (so a rare grade's row is as readable as a common one),
    else the count. ``x_labels`` covers non-square matrices such as the gate's 3 x 2 routing matrix.
    """
    fig = _figure(title, "predicted", "truth")
    counts = np.asarray(matrix, dtype=np.float64)
    if counts.size == 0:
        return _no_data(fig, "No predictions to compare")
    if counts.ndim != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {counts.shape}")
    y_names = [str(v) for v in labels]
    x_names = [str(v) for v in (labels if x_labels is None else x_labels)]
    if counts.shape != (len(y_names), len(x_names)):
        raise ValueError(f"matrix shape {counts.shape} does not match {len(y_names)} x {len(x_names)} labels")
    row_sums = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, row_sums, out=np.zeros_like(counts), where=row_sums > 0)
    z = share if normalize else counts
    z_max = 1.0 if normalize else max(float(counts.max()), 1.0)
    fig.add_trace(go.Heatmap(z=z.tolist(), x=x_names, y=y_names, colorscale="Blues", zmin=0, zmax=z_max,
                             customdata=counts.astype(int).tolist(),
                             colorbar=dict(title="row share" if normalize else "count",
                                           tickformat=".0%" if normalize else None),
                             hovertemplate="truth %{y}<br>predicted %{x}<br>%{customdata} (%{z:.3g})<extra></extra>"))
    for i, y_name in enumerate(y_names):
        for j, x_name in enumerate(x_names):
            percent = f"{share[i, j]:.0%}" if row_sums[i, 0] > 0 else "–"
            fig.add_annotation(x=x_name, y=y_name, text=f"{int(counts[i, j])}<br>{percent}", showarrow=False,
                               font=dict(color="white" if z[i, j] > 0.55 * z_max else INK, size=12))
    fig.update_xaxes(type="category", side="bottom")
    fig.update_yaxes(type="category", autorange="reversed")
    return fig


def _lesion_value(entry: Any, metric: str) -> float | None:
    """``results[run][lesion]`` as a number: a plain value, or ``metric`` of a per-lesion summary dict."""
    if isinstance(entry, Mapping):
        entry = entry.get(metric)
    return _number(entry)


def lesion_bars(results: Mapping[str, Mapping[str, Any]], metric: str = "dice") -> go.Figure:
    """Grouped bars per lesion (MA..OD), one bar per run, values on the bars, "n/a" where a value is missing.

    ``results[run][lesion]`` is a number, or a per-lesion summary dict (``SegmentationAccumulator.summary()``)
    from which ``metric`` is taken. Bars are outlined and ticks coloured in the lesion's colour.
    """
    fig = _figure(f"{metric} per lesion", "lesion", metric)
    runs = list(results)
    if not runs:
        return _no_data(fig, "No segmentation results yet")
    width = 0.8 / len(runs)  # bargap 0.2, no group gap: each group spans 0.8 of a category
    outline = [LESION_COLOURS[lesion] for lesion in LESIONS]
    top = 0.0
    for r, run in enumerate(runs):
        values = [_lesion_value(results[run].get(lesion), metric) for lesion in LESIONS]
        top = max([top, *(v for v in values if v is not None)])
        fig.add_trace(go.Bar(x=list(range(len(LESIONS))), y=values, name=run,
                             text=[f"{v:.3f}" if v is not None else "" for v in values], textposition="outside",
                             marker=dict(color=SERIES_COLOURS[r % len(SERIES_COLOURS)],
                                         line=dict(color=outline, width=2)),
                             hovertemplate=f"{run}<br>%{{y:.4f}}<extra></extra>"))
        offset = -0.4 + (r + 0.5) * width
        for i, value in enumerate(values):
            if value is None:
                fig.add_annotation(x=i + offset, y=0, text="n/a", showarrow=False, yanchor="bottom",
                                   font=dict(color="#8e8e93", size=11))
    fig.update_layout(barmode="group", bargap=0.2, bargroupgap=0.0)
    fig.update_xaxes(tickvals=list(range(len(LESIONS))), ticktext=[_lesion_tick(lesion) for lesion in LESIONS],
                     range=[-0.5, len(LESIONS) - 0.5])
    fig.update_yaxes(range=[0, 1.12 if top <= 1.0 else top * 1.12])
    return fig


def pr_curves(curves: Mapping[str, Mapping[str, Any]]) -> go.Figure:
    """Pixel precision-recall curve per lesion in its colour, AUPR in the legend ("n/a" without positives).

    Accepts ``curves[lesion] = {"precision", "recall", "aupr"}`` or a per-lesion summary with a ``pr_curve``.
    """
    fig = _figure("Pixel precision-recall per lesion", "recall", "precision")
    names = [lesion for lesion in LESIONS if lesion in curves] + [k for k in curves if k not in LESION_COLOURS]
    if not names:
        return _no_data(fig, "No precision-recall curves yet")
    for name in names:
        entry = curves[name] or {}
        points = entry.get("pr_curve", entry) if "precision" not in entry else entry
        precision, recall = list(points.get("precision") or []), list(points.get("recall") or [])
        aupr = _number(entry.get("aupr"))
        label = f"{name} (AUPR {aupr:.3f})" if aupr is not None else f"{name} (AUPR n/a)"
        fig.add_trace(go.Scatter(x=recall, y=precision, mode="lines", name=label, showlegend=True,
                                 line=dict(color=LESION_COLOURS.get(name, INK), width=2),
                                 hovertemplate=f"{name}<br>recall %{{x:.3f}}<br>precision %{{y:.3f}}<extra></extra>"))
    fig.update_xaxes(range=[0, 1.01])
    fig.update_yaxes(range=[0, 1.02])
    return fig


def gate_roc(fpr: Sequence[float], tpr: Sequence[float], auc: float | None, point: tuple[float, float] | None,
             threshold: float, title: str, positive: str = "referable") -> go.Figure:
    """The gate's ROC curve (p(segmentation) against its target) with the run's operating point marked: where a
    user sees what the threshold trades, missed photographs (1 - sensitivity) against wasted decoder runs."""
    fig = _figure(title, "1 - specificity (false positive rate)", f"sensitivity ({positive} found)")
    if not len(fpr):
        return _no_data(fig, "No photographs of both kinds to draw a ROC curve")
    label = f"gate (ROC AUC {auc:.3f})" if auc is not None else "gate"
    fig.add_trace(go.Scatter(x=list(fpr), y=list(tpr), mode="lines", name=label, line=dict(color=INK, width=2),
                             hovertemplate="FPR %{x:.3f}<br>sensitivity %{y:.3f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance", line=dict(color="#999", dash="dot")))
    if point is not None:
        fig.add_trace(go.Scatter(x=[point[0]], y=[point[1]], mode="markers", name=f"operating point {threshold:g}",
                                 marker=dict(size=12, color="#d62728", symbol="x"),
                                 hovertemplate=f"threshold {threshold:g}<br>FPR %{{x:.3f}}<br>sensitivity "
                                               f"%{{y:.3f}}<extra></extra>"))
    fig.update_xaxes(range=[0, 1.01])
    fig.update_yaxes(range=[0, 1.02])
    return fig


def grade_bars(probs: Sequence[float], labels: Sequence[str], truth: int | None, title: str) -> go.Figure:
    """Probabilities of each DR / DME grade; the predicted grade is highlighted, the true one outlined and marked.

    The axis runs from 0 to 100%, not beyond: a probability axis to 125% reads as if the bars could reach it; the
    labels of tall bars sit inside them or above the axis (``cliponaxis=False``)."""
    fig = _figure(title, "grade", "probability")
    values = [_number(p) or 0.0 for p in probs]
    if len(values) != len(labels):
        raise ValueError(f"{len(values)} probabilities for {len(labels)} labels")
    if not values:
        return _no_data(fig, "No prediction")
    names = [str(label) for label in labels]
    best = int(np.argmax(values))
    has_truth = truth is not None and 0 <= int(truth) < len(values)
    outline = [3 if has_truth and i == int(truth) else 0 for i in range(len(values))]
    fig.add_trace(go.Bar(
        x=names, y=values, text=[f"{v:.0%}" for v in values], textposition="auto", cliponaxis=False,
        marker=dict(color=[HIGHLIGHT if i == best else MUTED for i in range(len(values))],
                    line=dict(color=INK, width=outline)),
        hovertemplate="%{x}: %{y:.1%}<extra></extra>", showlegend=False))
    if has_truth:
        verdict = "truth ✓" if int(truth) == best else "truth"
        fig.add_annotation(x=names[int(truth)], y=values[int(truth)], text=verdict, showarrow=True, arrowhead=2,
                           ay=-40, yshift=18, font=dict(color=INK))
    fig.update_xaxes(type="category")
    fig.update_yaxes(range=[0, 1], tickformat=".0%")
    fig.update_layout(margin=dict(l=60, r=20, t=80, b=50))  # room above the axis for a label or the truth mark
    return fig


# --------------------------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------------------------

def overlay(image: np.ndarray, masks: np.ndarray, truth: np.ndarray | None = None, opacity: float = 0.5,
            lesions: Sequence[str] | None = None, threshold: float = 0.5) -> np.ndarray:
    """RGB uint8 image with each selected lesion's predicted mask blended in its colour.

    ``masks`` are (5, H, W) bools or probabilities (thresholded at ``threshold``). Pixels outside every selected
    mask keep their exact values. With ``truth``, the ground truth is drawn on top as thin contours in the same
    colour, so a filled region without a contour is a false positive and a contour without fill a miss.
    Lesions are drawn in MA..OD order, so a later lesion sits on top where two overlap.
    """
    rgb = _as_rgb_uint8(image)
    height, width = rgb.shape[:2]
    chosen = _selected(lesions)
    predicted = _binary(masks, threshold)
    if predicted.shape != (len(LESIONS), height, width):
        raise ValueError(f"masks have shape {predicted.shape}, expected {(len(LESIONS), height, width)}")
    alpha = float(np.clip(opacity, 0.0, 1.0))
    out = rgb.astype(np.float32)
    for name in chosen:
        region = predicted[LESIONS.index(name)]
        out[region] = (1.0 - alpha) * out[region] + alpha * np.asarray(_hex_to_rgb(LESION_COLOURS[name]), np.float32)
    out = np.clip(out.round(), 0, 255).astype(np.uint8)
    if truth is not None:
        true = _binary(truth, 0.5)
        if true.shape != predicted.shape:
            raise ValueError(f"truth has shape {true.shape}, expected {predicted.shape}")
        thickness = max(1, round(max(height, width) / 800))  # 1 px up to 1200 px, ~5 px at full IDRiD size
        for name in chosen:
            contours, _ = cv2.findContours(true[LESIONS.index(name)].astype(np.uint8), cv2.RETR_LIST,
                                           cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(out, contours, -1, _hex_to_rgb(LESION_COLOURS[name]), thickness)
    return out


def _png_data_uri(rgb: np.ndarray) -> str:
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise ValueError("could not encode the overlay as PNG")
    return "data:image/png;base64," + base64.b64encode(encoded.tobytes()).decode("ascii")


def overlay_figure(image: np.ndarray, masks: np.ndarray, truth: np.ndarray | None = None, opacity: float = 0.5,
                   lesions: Sequence[str] | None = None, threshold: float = 0.5,
                   title: str = "Predicted lesions", max_side: int = 1600) -> go.Figure:
    """``overlay`` as a zoomable figure with a legend of lesion colours; axes in original pixels.

    The overlay is computed at full resolution, then shrunk to ``max_side`` and embedded as PNG, because a
    full-size IDRiD image as a plotly array is tens of megabytes of JSON in the browser.
    """
    rgb = overlay(image, masks, truth=truth, opacity=opacity, lesions=lesions, threshold=threshold)
    height, width = rgb.shape[:2]
    scale = max(height, width) / max_side if max(height, width) > max_side else 1.0
    shown = rgb if scale == 1.0 else cv2.resize(rgb, (round(width / scale), round(height / scale)),
                                                interpolation=cv2.INTER_AREA)
    subtitle = "fill: prediction, outline: ground truth" if truth is not None else "fill: prediction"
    fig = _figure(f"{title}<br><sup>{subtitle}</sup>", "x (px)", "y (px)")
    step_x, step_y = width / shown.shape[1], height / shown.shape[0]
    fig.add_trace(go.Image(source=_png_data_uri(shown), x0=step_x / 2 - 0.5, y0=step_y / 2 - 0.5,
                           dx=step_x, dy=step_y, hoverinfo="skip"))
    for name in _selected(lesions):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=name, showlegend=True,
                                 marker=dict(symbol="square", size=12, color=LESION_COLOURS[name])))
    fig.update_xaxes(range=[-0.5, width - 0.5], showgrid=False, zeroline=False)
    fig.update_yaxes(range=[height - 0.5, -0.5], showgrid=False, zeroline=False, scaleanchor="x")
    return fig


def _ascii(text: str) -> str:
    """OpenCV's Hershey fonts draw ASCII only."""
    return text.encode("ascii", "replace").decode("ascii")


def _fit_text(text: str, width: int, scale: float, thickness: int) -> str:
    """Trim ``text`` with "..." until it fits ``width`` pixels."""
    text = _ascii(text)
    font = cv2.FONT_HERSHEY_SIMPLEX
    if cv2.getTextSize(text, font, scale, thickness)[0][0] <= width:
        return text
    while text and cv2.getTextSize(text + "...", font, scale, thickness)[0][0] > width:
        text = text[:-1]
    return text + "..."


def _badge(tile: np.ndarray, text: str, colour: tuple[int, int, int], inset: int) -> None:
    font, scale, thickness = cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1
    (text_w, text_h), baseline = cv2.getTextSize(text, font, scale, thickness)
    x0, y0 = inset + 4, inset + 4
    cv2.rectangle(tile, (x0, y0), (x0 + text_w + 8, y0 + text_h + baseline + 6), colour, thickness=-1)
    cv2.putText(tile, text, (x0 + 4, y0 + text_h + 3), font, scale, (255, 255, 255), thickness, cv2.LINE_AA)


def gallery_tile(image: np.ndarray, title: str, subtitle: str, misrouted: bool, both: bool = False,
                 width: int = 256) -> np.ndarray:
    """A gallery tile: the image at ``width`` px, a caption band, and a frame that says how it was routed.

    Misrouted: thick red frame and a "MISROUTED" badge. A [1, 1] sample ("both") cannot be misrouted, so it gets
    a blue frame and a "BOTH" badge whatever ``misrouted`` says. Otherwise a thin neutral frame.
    """
    rgb = _as_rgb_uint8(image)
    height = max(1, round(rgb.shape[0] * width / max(rgb.shape[1], 1)))
    resized = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
    if both:
        colour, frame, badge = FRAME_BOTH, max(3, width // 64), "BOTH"
    elif misrouted:
        colour, frame, badge = FRAME_MISROUTED, max(6, width // 24), "MISROUTED"
    else:
        colour, frame, badge = FRAME_NEUTRAL, 2, None
    caption = 40 + max(6, width // 24)  # clear of the thickest frame; same size for every tile of a grid
    tile = np.full((height + caption, width, 3), 255, dtype=np.uint8)
    tile[:height] = resized
    font = cv2.FONT_HERSHEY_SIMPLEX
    room = width - 2 * frame - 8
    cv2.putText(tile, _fit_text(title, room, 0.45, 1), (frame + 4, height + 17), font, 0.45, (28, 28, 30), 1,
                cv2.LINE_AA)
    cv2.putText(tile, _fit_text(subtitle, room, 0.38, 1), (frame + 4, height + 34), font, 0.38, (110, 110, 115), 1,
                cv2.LINE_AA)
    cv2.rectangle(tile, (0, 0), (width - 1, tile.shape[0] - 1), colour, thickness=frame * 2)  # drawn centred
    if badge:
        _badge(tile, badge, colour, frame)
    return tile
