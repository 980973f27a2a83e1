"""Dashboard: learning curves, gate accuracy, confusion matrices, lesion Dice/IoU, AUPR, misrouted samples."""

import streamlit as st

import app_support as ui
from core import figures
from core.views import evaluation as evaluation_views

# Fixed column widths, so that the tables fit the page beside the sidebar: sized to their contents, a long "about"
# text pushed the runs' own columns (the numbers compared) out of view on the right. A cut cell shows in full when
# clicked. With a few runs the challenge table is 400 px plus 90 px a run.
TEXT = st.column_config.TextColumn
MEASURE_COLUMNS = {"measure": TEXT("measure", width=160), "about": TEXT("about", width=240)}
GATE_COLUMNS = {"samples": TEXT("samples", width=180), "gate accuracy": TEXT("gate accuracy", width=90),
                "about": TEXT("about", width=150)}
MISROUTED_COLUMNS = {"sample": TEXT("sample", width=200), "true task": TEXT("true task", width=120),
                     "sent to": TEXT("sent to", width=120),
                     "gate confidence": st.column_config.NumberColumn("gate confidence", width=110, format="%.3f")}

ui.enter_page()
st.title("Dashboard")
runs = {r.name: r for r in ui.all_runs()}
current = ui.current_run()
if not runs and current is None:
    st.info("No runs yet. Start one on the **Train** page.")
    st.stop()
if current is not None:
    runs.setdefault(current.name, current)

runs_column, split_column, metric_column = st.columns([2, 1, 2])
chosen = runs_column.multiselect("Runs to compare", list(runs),  # per sidebar run: picking a run there shows it
                                 default=[current.name] if current else list(runs)[:1],
                                 key=f"dash_runs_{current.name if current else ''}")
# One choice per run: a run evaluated on val only (the real-data run) opens on val, the demo on test.
split = split_column.selectbox("Evaluation split", ["test", "val", "train"],
                               key=f"dash_split_{current.name if current else ''}",
                               index=ui.evaluated_split(current) if current else 0)
if not chosen:
    st.info("Pick one or several runs above.")
    st.stop()
selected = [runs[name] for name in chosen]
histories = {info.name: ui.history(info) for info in selected}
metric_options = sorted({k for h in histories.values() for r in h for k in r if k.startswith(("train/", "val/"))})
defaults = [m for m in ("train/total", "val/total") if m in metric_options] or metric_options[:2]
metrics = metric_column.multiselect("Learning-curve metrics", metric_options, default=defaults, key="dash_metrics")
for info in selected:
    ui.run_banner(info)

# -- training -----------------------------------------------------------------------------------------------------
st.header("Training")
st.caption("Per epoch; validation at each run's input resolution (see its config), on its own validation split.")
left, right = st.columns(2)
with left, ui.guard("drawing the learning curves"):
    st.plotly_chart(figures.learning_curves(histories, metrics or defaults or ["train/total"]), key="curves")
for index, info in enumerate(selected):
    column = right if index == 0 else (left, right)[(index + 1) % 2]
    with column, ui.guard(f"gate accuracy of {info.name}"):
        fig = figures.gate_accuracy(ui.step_log(info), histories[info.name])
        fig.update_layout(title=f"Gate routing accuracy: {info.name}")
        st.plotly_chart(fig, key=f"gate_{info.name}")

# -- evaluation ---------------------------------------------------------------------------------------------------
st.header(f"Evaluation on the {split} split")
evaluations = {}
for info in selected:
    with ui.guard(f"reading the evaluation of {info.name}"):
        result = ui.evaluation(info, split)
        if result is None:
            st.warning(f"Run **{info.name}** has no evaluation of its {split} split yet.")
            ui.evaluate_button(info, split, key=f"evaluate_{info.name}_{split}")
        else:
            evaluations[info.name] = result
            st.caption(f"**{info.name}**: {result.caption}.")
if not evaluations:
    st.stop()

st.subheader("Challenge metrics")
table = {}
for name, result in evaluations.items():
    for row in evaluation_views.challenge_rows(result):
        table.setdefault(row["measure"], {"measure": row["measure"], "about": row["what"]})[name] = row["value"]
st.dataframe(list(table.values()), hide_index=True, width="stretch", key="challenge",
             column_config={**MEASURE_COLUMNS, **{name: TEXT(name, width=90) for name in evaluations}})

st.subheader("Segmentation per lesion")
lesions = {name: evaluation_views.lesion_results(result) for name, result in evaluations.items()
           if evaluation_views.lesion_results(result)}
if lesions:
    left, right = st.columns(2)
    with left, ui.guard("Dice bars"):
        st.plotly_chart(figures.lesion_bars(lesions, "dice"), key="dice")
    with right, ui.guard("IoU bars"):
        st.plotly_chart(figures.lesion_bars(lesions, "iou"), key="iou")
    resolutions = sorted({result.resolution for result in evaluations.values()})
    st.caption(f"Pooled over the {split} split's segmentation images, at {' / '.join(resolutions)}.")
    columns = st.columns(min(len(evaluations), 2))
    for index, (name, result) in enumerate(evaluations.items()):
        with columns[index % len(columns)], ui.guard(f"precision-recall of {name}"):
            fig = figures.pr_curves(result.curves)
            fig.update_layout(title=f"Pixel precision-recall: {name} ({split})")
            st.plotly_chart(fig, key=f"pr_{name}")
else:
    st.caption(f"No segmentation images in the {split} split.")

st.subheader("Grading")
for name, result in evaluations.items():
    dr, dme = evaluation_views.confusion(result, "dr"), evaluation_views.confusion(result, "dme")
    if dr is None:
        st.caption(f"{name}: no graded images in the {split} split.")
        continue
    left, right = st.columns(2)
    with left, ui.guard("DR confusion matrix"):
        st.plotly_chart(figures.confusion_heatmap(*dr, title=f"DR grade: {name} ({split})"), key=f"dr_{name}")
    with right, ui.guard("DME confusion matrix"):
        st.plotly_chart(figures.confusion_heatmap(*dme, title=f"DME risk: {name} ({split})"), key=f"dme_{name}")

st.subheader("Gate")
for name, result in evaluations.items():
    matrix = evaluation_views.routing(result)
    if matrix is None:
        continue
    left, right = st.columns(2)
    with left, ui.guard("routing matrix"):
        counts, rows, columns = matrix
        st.plotly_chart(figures.confusion_heatmap(counts, rows, title=f"Gate routing: {name} ({split})",
                                                  x_labels=columns), key=f"routing_{name}")
    with right:
        st.dataframe(evaluation_views.gate_rows(result), hide_index=True, width="stretch", key=f"gate_rows_{name}",
                     column_config=GATE_COLUMNS)
    roc = evaluation_views.gate_roc(result)
    if roc is not None:
        with ui.guard("gate ROC"):
            st.plotly_chart(figures.gate_roc(roc.fpr, roc.tpr, roc.auc, roc.point, roc.threshold,
                                             f"Gate ROC: {name} ({split})", roc.positive), key=f"gate_roc_{name}")

st.subheader("Misrouted samples")
for name, result in evaluations.items():
    rows = evaluation_views.misrouted_rows(result)
    gate = result.summary.gate
    st.markdown(f"**{name}**: {len(rows)} of {gate.n} {split} images sent to the wrong expert"
                + (f" ({gate.note})" if gate.note else ""))
    if rows:
        st.dataframe(rows, hide_index=True, width="stretch", key=f"misrouted_{name}", column_config=MISROUTED_COLUMNS)
