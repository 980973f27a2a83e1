"""Gallery: 20 evaluated samples drawn by a shareable seed, with the gate's choice and prediction against truth."""

import random

import streamlit as st

import app_support as ui

ui.enter_page()
st.title("Gallery")
info = ui.require_run()
ui.run_banner(info)

if "gallery_seed" not in st.session_state:
    try:
        st.session_state["gallery_seed"] = int(st.query_params.get("seed", 0))
    except ValueError:
        st.session_state["gallery_seed"] = 0


def draw_again() -> None:
    st.session_state["gallery_seed"] = random.randrange(100_000)


split_column, seed_column, draw_column, filter_column = st.columns([1, 1, 1, 1.4], vertical_alignment="bottom")
split = split_column.selectbox("Split", ["test", "val", "train"], key=f"gallery_split_{info.name}",
                               index=ui.evaluated_split(info))  # one choice per run, opening on an evaluated split
seed = seed_column.number_input("Seed", min_value=0, max_value=10**9, step=1, key="gallery_seed",
                                help="The same seed draws the same 20 samples: share it (it is in the page's URL).")
draw_column.button("Draw another 20", on_click=draw_again, icon=":material/casino:", key="gallery_draw")
misrouted_only = filter_column.toggle("Misrouted only", key="gallery_misrouted")
kind = None
if misrouted_only:
    shown = st.radio("Which errors", ["all", "missed", "wasted"], horizontal=True, key="gallery_kind",
                     format_func={"all": "every misrouted", "missed": "missed: needed the lesion map",
                                  "wasted": "wasted: segmented for nothing"}.get)
    kind = None if shown == "all" else shown
st.query_params["seed"] = str(seed)

result = None
with ui.guard("reading the evaluation"):
    result = ui.evaluation(info, split)
if result is None:
    st.warning(f"Run **{info.name}** has no evaluation of its {split} split yet; the gallery shows evaluated samples.")
    ui.evaluate_button(info, split, key=f"gallery_evaluate_{split}")
    st.stop()

roots = None
with ui.guard("finding the photographs"):
    roots = ui.image_folders(info)
tiles = []
with ui.guard("drawing the gallery"), st.spinner("Drawing samples..."):
    tiles = ui.gallery(info, split, int(seed), misrouted_only, roots, kind)
misrouted = sum(t.misrouted for t in tiles)
graded_wrong = sum(t.grades_wrong for t in tiles)
st.caption(f"{len(tiles)} samples of the {split} split (seed {seed}), {result.resolution}. Each tile: the raw "
           "photograph | what the model saw, predicted lesions filled and ground truth outlined (segmentation) or "
           f"the grade against the truth (grading). {misrouted} misrouted, framed in red; {graded_wrong} with a "
           "wrong grade. The route and the grades are judged apart: a photograph sent to the right expert can "
           "still get the wrong grade.")
if not tiles:
    st.info("No misrouted samples in this split." if misrouted_only else "The evaluation has no samples.")

columns_per_row = 4
for start in range(0, len(tiles), columns_per_row):
    columns = st.columns(columns_per_row)
    for column, tile in zip(columns, tiles[start:start + columns_per_row], strict=False):
        with column.container(border=True):
            st.image(tile.image, width="stretch")
            st.markdown(f"{tile.routing} {tile.caption}")
            if tile.grading:
                st.markdown(tile.grading)
            st.caption(tile.label)
