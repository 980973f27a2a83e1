"""Predict: upload photographs; the gate's decision, the routed expert's output, Grad-CAM and downloads per
photograph, and a table, CSV and masks zip across all of them."""

import time
from pathlib import Path

import streamlit as st

import app_support as ui
from core import figures
from core.views import upload as upload_views
from core.vocabulary import DME_NAMES, DR_NAMES, LESION_NAMES, LESIONS

ui.enter_page()
st.title("Predict")
info = ui.predict_run(ui.require_run())
ui.run_banner(info)

uploads = st.file_uploader("Fundus photographs (JPEG, PNG, TIFF, BMP or GIF)", type=upload_views.UPLOAD_TYPES,
                           accept_multiple_files=True, key="uploads",
                           help="Any size and mode (grey, RGBA, 16-bit); each is cropped to its field of view and "
                                "resized to the run's input size, as in training.")

with st.container(border=True):
    c1, c2, c3, c4 = st.columns([1.2, 1, 1, 2])
    both = c1.toggle("Run both heads", key="both", help="Run the segmentation and the grading expert whatever the "
                                                        "gate decides (to compare, e.g. the implied DME).")
    opacity = c2.slider("Overlay opacity", 0.0, 1.0, 0.5, 0.05, key="opacity")
    threshold = c3.slider("Mask threshold", 0.05, 0.95, 0.5, 0.05, key="threshold")
    lesions = c4.pills("Lesions shown", LESIONS, selection_mode="multi", default=list(LESIONS), key="lesions")
    c5, c6 = st.columns([1.2, 3])
    show_cam = c5.toggle("Grad-CAM", key="gradcam", help="Where a grading head of the classification expert found "
                                                        "its evidence (deepest feature map). With a lesion grader "
                                                        "the grades shown are not that head's.")
    cam_head = c6.radio("Grad-CAM of", ["dr", "dme"], horizontal=True, key="cam_head",
                        format_func=lambda h: "DR grade head" if h == "dr" else "DME risk head",
                        disabled=not show_cam)

st.markdown(" ".join(f"<span style='color:{figures.LESION_COLOURS[c]}'>■</span> {c} {LESION_NAMES[c]}"
                     for c in LESIONS), unsafe_allow_html=True)

# The uploader and its controls are drawn first, so the page is usable at once; the model loads behind them while
# a file is chosen (the first load in a server process imports torch and timm: 4-5 s on 2 cores).
loaded = None
with ui.guard(f"loading run {info.name}"):
    started = time.perf_counter()
    with st.spinner(f"Loading the model of {info.name}..."):
        loaded = ui.predictor(info)
    load_seconds = time.perf_counter() - started
if loaded is None:
    st.stop()

if not uploads:
    st.info("Upload one or several photographs to see the gate's decision and the prediction.")
    st.stop()

run_data = ui.run_data_summary(info)
grades_from = loaded.grades_source
batch = st.container()  # the table across every upload, filled once they are all predicted
outcomes: list[upload_views.UploadResult] = []
for index, upload in enumerate(uploads):
    outcome = upload_views.UploadResult(upload.name)
    outcomes.append(outcome)
    with st.container(border=True):
        st.subheader(upload.name)
        with ui.upload_guard(outcome):
            data = upload.getvalue()
            upload_views.check_upload(upload.name, data)
            with st.spinner(f"Predicting {upload.name}..."):
                result = ui.prediction(info, data, both)
            outcome.prediction = result
            for warning in result.warnings:
                st.warning(warning)
            width, height = result.original_size
            grades_from = result.grades_from or loaded.grades_source
            st.markdown(upload_views.gate_sentence(result))
            if (referable := upload_views.referable_sentence(result)) is not None:
                st.markdown(referable)
            loading = f" · model loaded in {load_seconds:.1f} s for this page" if load_seconds > 0.05 else ""
            st.caption(f"{width}x{height} px · predicted in {result.seconds:.2f} s (decode, preprocessing, forward)"
                       f"{loading} · run {info.name} ({run_data})")

            left, right = st.columns([3, 2])
            if result.seg_probs is not None:
                with left:
                    display = ui.display_image(data)
                    overlay = upload_views.prediction_overlay(result, display, list(lesions or []), opacity, threshold)
                    st.image(overlay, width="stretch",
                             caption=f"Predicted lesions at threshold {threshold:.2f} on the original photograph")
                with right:
                    st.markdown("**Lesions found**")
                    st.dataframe(upload_views.lesion_rows(result, threshold), hide_index=True, width="stretch",
                                 key=f"lesions_{index}")
                    for column, readout in zip(st.columns(2), upload_views.dme_readouts(result, grades_from,
                                                                                        threshold), strict=True):
                        column.metric(readout.label, readout.value, help=readout.help)
                        if readout.note:
                            column.markdown(f":orange[{readout.note}]")
                    implied = result.implied_dme(threshold)
                    if implied is not None:
                        st.caption(implied.reason)
            else:
                with left:
                    st.image(ui.display_image(data), caption="Uploaded photograph", width="stretch")
            if result.dr_probs is not None:
                with right if result.seg_probs is None else st.container():
                    g1, g2 = st.columns(2)
                    g1.plotly_chart(figures.grade_bars(result.dr_probs.tolist(), list(DR_NAMES), None,
                                                       upload_views.grade_title("dr", grades_from)),
                                    key=f"dr_{index}")
                    g2.plotly_chart(figures.grade_bars(result.dme_probs.tolist(), list(DME_NAMES), None,
                                                       upload_views.grade_title("dme", grades_from)),
                                    key=f"dme_{index}")
                    if grades_from == upload_views.LESION_GRADER:
                        st.caption("Grades read from the lesions the segmentation expert found (the run's lesion "
                                   "grader), not by the classification heads.")
            if show_cam:
                with st.spinner("Grad-CAM..."):
                    cam = ui.gradcam(info, data, cam_head)
                st.image(upload_views.gradcam_picture(result, cam), width=360,
                         caption=upload_views.gradcam_caption(cam_head, grades_from))

            stem = Path(upload.name).stem
            d1, d2 = st.columns(2)
            if result.seg_probs is not None:
                d1.download_button("Masks (PNG, original size, zip)", key=f"masks_{index}",
                                   data=lambda r=result, s=stem, t=threshold: upload_views.masks_zip(r, s, t),
                                   file_name=f"{stem}_masks.zip", mime="application/zip", on_click="ignore",
                                   icon=":material/download:")
            d2.download_button("Report (JSON)", key=f"report_{index}",
                               data=upload_views.report_json(result, upload.name, info.name, run_data, threshold),
                               file_name=f"{stem}_report.json", mime="application/json", on_click="ignore",
                               icon=":material/description:")

with batch:
    predicted = sum(o.prediction is not None for o in outcomes)
    st.subheader(f"All uploads ({predicted} of {len(outcomes)} predicted)")
    st.caption(f"One row per upload at mask threshold {threshold:.2f}; each row says which part of the model gave "
               "its grades. Areas are shares of the photograph's field of view. The CSV has the columns of "
               "`python -m core predict`.")
    st.dataframe(upload_views.results_table(outcomes, threshold, loaded.grades_source), hide_index=True, width="stretch",
                 key="batch_table")
    b1, b2, _ = st.columns([1, 1, 2])
    b1.download_button("Results (CSV)", key="batch_csv", file_name="predictions.csv", mime="text/csv",
                       data=upload_views.results_csv(outcomes, threshold, loaded.grades_source), on_click="ignore",
                       icon=":material/table:")
    if any(o.prediction is not None and o.prediction.seg_probs is not None for o in outcomes):
        b2.download_button("All masks (PNG, original size, zip)", key="batch_masks", file_name="masks.zip",
                           mime="application/zip", on_click="ignore", icon=":material/folder_zip:",
                           data=lambda o=tuple(outcomes), t=threshold: upload_views.all_masks_zip(list(o), t))
