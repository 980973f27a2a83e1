"""Predict: upload photographs; the gate's decision, the routed expert's output, Grad-CAM and downloads."""

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

loaded = None
with ui.guard(f"loading run {info.name}"):
    started = time.perf_counter()
    with st.spinner(f"Loading the model of {info.name}..."):
        loaded = ui.predictor(info)
    load_seconds = time.perf_counter() - started
if loaded is None:
    st.stop()

uploads = st.file_uploader("Fundus photographs (JPEG, PNG or TIFF)", type=["jpg", "jpeg", "png", "tif", "tiff"],
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
    show_cam = c5.toggle("Grad-CAM", key="gradcam", help="Where the grading head found its evidence "
                                                        "(deepest feature map).")
    cam_head = c6.radio("Grad-CAM of", ["dr", "dme"], horizontal=True, key="cam_head",
                        format_func=lambda h: "DR grade" if h == "dr" else "DME risk", disabled=not show_cam)

st.markdown(" ".join(f"<span style='color:{figures.LESION_COLOURS[c]}'>■</span> {c} {LESION_NAMES[c]}"
                     for c in LESIONS), unsafe_allow_html=True)

if not uploads:
    st.info("Upload one or several photographs to see the gate's decision and the prediction.")
    st.stop()

run_data = "synthetic images only" if info.synthetic else (info.data_source or "?")
for index, upload in enumerate(uploads):
    with st.container(border=True):
        st.subheader(upload.name)
        with ui.guard("prediction", name=upload.name):
            data = upload.getvalue()
            upload_views.check_upload(upload.name, data)
            with st.spinner(f"Predicting {upload.name}..."):
                result = ui.prediction(info, data, both)
            for warning in result.warnings:
                st.warning(warning)
            width, height = result.original_size
            st.markdown(upload_views.gate_sentence(result))
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
                    implied = result.implied_dme(threshold)
                    classifier = (DME_NAMES[int(result.dme_probs.argmax())]
                                  if result.dme_probs is not None else None)
                    a, b = st.columns(2)
                    a.metric("DME from the masks",
                             "unknown" if implied is None or implied.risk is None else DME_NAMES[implied.risk])
                    b.metric("DME classifier", classifier or "not run",
                             help=None if classifier else "Turn on 'Run both heads' to compare.")
                    if implied is not None:
                        st.caption(implied.reason)
            else:
                with left:
                    st.image(ui.display_image(data), caption="Uploaded photograph", width="stretch")
            if result.dr_probs is not None:
                with right if result.seg_probs is None else st.container():
                    g1, g2 = st.columns(2)
                    g1.plotly_chart(figures.grade_bars(result.dr_probs.tolist(), list(DR_NAMES), None,
                                                       "DR grade"), key=f"dr_{index}")
                    g2.plotly_chart(figures.grade_bars(result.dme_probs.tolist(), list(DME_NAMES), None,
                                                       "DME risk"), key=f"dme_{index}")
                    if loaded.grader is not None:
                        st.caption("Grades read from the lesions the segmentation expert found (the run's lesion "
                                   "grader), so both experts run on every photograph.")
            if show_cam:
                with st.spinner("Grad-CAM..."):
                    cam = ui.gradcam(info, data, cam_head)
                st.image(upload_views.gradcam_image(result.canvas, cam), width=360,
                         caption=f"Grad-CAM of the {'DR grade' if cam_head == 'dr' else 'DME risk'} head on the "
                                 "image the model saw")

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
