"""Train: a config form that launches a detached training run, live progress of a run, Stop, and the past runs."""

import dataclasses
import datetime as dt

import streamlit as st

import app_support as ui
from core import catalogue, figures
from core import runs as supervisor
from core.views import runs as run_views
from core.config import config_from_dict, load_config

BACKBONES = ["convnext_atto", "convnext_femto", "convnext_pico", "convnext_nano", "convnext_tiny", "convnext_small",
             "convnext_base"]
SOURCES = {"synthetic": "Synthetic demo (built-in)", "folder": "IDRiD folder", "metadata": "Metadata file"}
# Fixed widths (780 px in all) so that the list fits the page beside the sidebar: sized to their contents, a long
# error note or data path pushed the columns on its right out of view. A cut cell shows in full when clicked.
RUN_COLUMNS = {
    "run": st.column_config.TextColumn("run", width=120),
    "state": st.column_config.TextColumn("state", width=80),
    "progress": st.column_config.TextColumn("progress", width=160),
    "data": st.column_config.TextColumn("data", width=90, help="synthetic, or the run's dataset folder or file"),
    "best score": st.column_config.NumberColumn("best", width=60, format="%.3f",
                                                help="the best validation score the run reached"),
    "evaluated": st.column_config.TextColumn("evaluated", width=70, help="the splits it was evaluated on"),
    "started": st.column_config.TextColumn("started", width=120),
    "note": st.column_config.TextColumn("note", width=80, help="why the run failed or stopped, if it did"),
}

ui.enter_page()
st.title("Train")
dataset = ui.dataset()
base = load_config(ui.PROJECT_ROOT / "configs" / ("demo.yaml" if dataset.config is None
                                                  or dataset.config.source == "synthetic" else "idrid-cpu.yaml"))
if dataset.config is not None:  # the sidebar's dataset; the rest of the data settings come from the base config
    base.data.source, base.data.roots, base.data.metadata = (dataset.config.source, list(dataset.config.roots),
                                                             dataset.config.metadata)
    if dataset.config.source == "synthetic":
        base.data.synthetic = dataset.config.synthetic

# -- the form -----------------------------------------------------------------------------------------------------
with st.expander("New run", expanded=not any(r.active for r in ui.all_runs()), icon=":material/add_circle:"):
    with st.form("train_form"):
        st.caption("Writes the run's config.yaml and starts `python -m core train` as a separate process: it keeps "
                   "running if you reload the page or close the tab. Defaults come from "
                   + ("configs/demo.yaml." if base.data.source == "synthetic" else "configs/idrid-cpu.yaml."))
        a, b = st.columns([1, 2])
        name = a.text_input("Run name", value=f"run-{dt.datetime.now():%Y%m%d-%H%M}", key="train_name")
        source = b.selectbox("Data", list(SOURCES), index=list(SOURCES).index(base.data.source),
                             format_func=SOURCES.get, key="train_source",
                             help="The sidebar's dataset is the default.")
        default_path = "\n".join(base.data.roots) if base.data.source == "folder" else (base.data.metadata or "")
        data_path = st.text_area("Data root(s), one per line, or metadata file (not used for the synthetic demo)",
                                 value=default_path, height=68, key="train_data_path")
        c1, c2, c3, c4 = st.columns(4)
        backbone = c1.selectbox("Backbone", BACKBONES, index=BACKBONES.index(base.model.backbone)
                                if base.model.backbone in BACKBONES else 0, key="train_backbone")
        image_size = c2.number_input("Image size (px)", 32, 2048, base.data.image_size, 32, key="train_image_size",
                                     help="Square canvas side; a multiple of 32.")
        epochs = c3.number_input("Epochs", 1, 10_000, base.train.epochs, key="train_epochs")
        batch_size = c4.number_input("Batch size", 1, 512, base.train.batch_size, key="train_batch_size")
        c1, c2, c3, c4 = st.columns(4)
        lr = c1.number_input("Learning rate", 1e-6, 1.0, base.train.lr, format="%.1e", step=1e-4, key="train_lr")
        route = c2.selectbox("Routing during training", ["oracle", "gate"],
                             index=["oracle", "gate"].index(base.train.route), key="train_route",
                             help="oracle: each expert learns from every sample of its task (recommended); gate: "
                                  "only from the samples the gate sends it.")
        workers = c3.number_input("Data workers", 0, 64, base.data.workers, key="train_workers")
        device = c4.selectbox("Device", ["auto", "cpu", "cuda"], index=["auto", "cpu", "cuda"].index(
            base.train.device), key="train_device")
        c1, c2, c3, c4 = st.columns(4)
        seg_weight = c1.number_input("Segmentation loss weight", 0.0, 100.0, base.loss.seg_weight, 0.1,
                                     key="train_seg_weight")
        cls_weight = c2.number_input("Classification loss weight", 0.0, 100.0, base.loss.cls_weight, 0.1,
                                     key="train_cls_weight")
        gate_weight = c3.number_input("Gate loss weight", 0.0, 100.0, base.loss.gate_weight, 0.1,
                                      key="train_gate_weight")
        entropy = c4.number_input("Gate entropy coefficient", -1.0, 1.0, base.loss.entropy_coef, 0.005,
                                  format="%.3f", key="train_entropy",
                                  help="> 0 pushes the gate to confident routing, < 0 keeps it exploring, 0 off.")
        c1, c2, _ = st.columns([1, 1, 2])
        max_minutes = c1.number_input("Time budget (minutes, 0: none)", 0.0, 10_000.0,
                                      float(base.train.max_minutes or 0), 1.0, key="train_max_minutes")
        max_steps = c2.number_input("Step budget (0: none)", 0, 10_000_000, int(base.train.max_steps or 0),
                                    key="train_max_steps")
        start = st.form_submit_button("Start", type="primary", icon=":material/play_arrow:", key="train_start")

if start:
    with ui.guard("starting the run"):
        values = base.to_dict()
        values["name"] = name.strip() or "run"
        paths = [line.strip() for line in data_path.splitlines() if line.strip()]
        if source == "synthetic":  # the demo's synthetic dataset, so that data/synthetic is not regenerated
            values["data"]["synthetic"] = dataclasses.asdict(ui.demo_data().synthetic)
        values["data"].update(source=source, image_size=int(image_size), workers=int(workers),
                              roots=paths if source == "folder" else [],
                              metadata=(paths[0] if paths else None) if source == "metadata" else None)
        values["model"]["backbone"] = backbone
        values["loss"].update(seg_weight=seg_weight, cls_weight=cls_weight, gate_weight=gate_weight,
                              entropy_coef=entropy)
        values["train"].update(epochs=int(epochs), batch_size=int(batch_size), lr=float(lr), route=route,
                               device=device, max_minutes=float(max_minutes) or None,
                               max_steps=int(max_steps) or None)
        launched = supervisor.launch(config_from_dict(values), name=values["name"])
        st.session_state["train_watch"] = launched.name
        ui.select_run_later(launched.name)
        st.toast(f"Started {launched.name}")
        st.rerun()

# -- progress -----------------------------------------------------------------------------------------------------
all_runs = ui.all_runs()
by_name = {r.name: r for r in all_runs}
if not all_runs:
    st.info("No runs yet: fill in the form above and press Start.")
    st.stop()

active = [r.name for r in all_runs if r.active]
sidebar_run = ui.current_run()
if st.session_state.get("train_watch") not in by_name:
    st.session_state["train_watch"] = active[0] if active else (
        sidebar_run.name if sidebar_run and sidebar_run.name in by_name else all_runs[0].name)
st.header("Progress")
watched = st.selectbox("Run", list(by_name), key="train_watch",
                       format_func=lambda n: f"{n} · {by_name[n].state}")


def show_progress(path) -> None:
    info = catalogue.run_info(path)
    progress = info.progress()
    state_line = {"running": ":green[running]", "pending": ":orange[starting]", "finished": ":blue[finished]",
                  "failed": ":red[failed]", "stopped": ":gray[stopped]", "interrupted": ":red[interrupted]"}
    st.markdown(f"**{info.name}**: {state_line.get(info.state, info.state)} · {progress['text']}")
    st.progress(progress["fraction"])
    if info.error and info.state in ("failed", "interrupted", "no status"):
        st.error(info.error)
    if info.status.get("budget_warning") and info.state in ("pending", "running"):
        st.warning(info.status["budget_warning"], icon=":material/timer:")
    if info.active:
        if st.button("Stop", key=f"stop_{info.name}", icon=":material/stop_circle:",
                     help="SIGTERM: the trainer finishes its step, saves and marks the run stopped."):
            with ui.guard(f"stopping {info.name}"):
                supervisor.stop(info.path, wait=1.0)
                st.toast(f"Asked {info.name} to stop; it saves after the current step.")
    elif info.state in ("stopped", "interrupted") and info.run.state.exists():
        if st.button("Resume", key=f"resume_{info.name}", icon=":material/play_arrow:"):
            with ui.guard(f"resuming {info.name}"):
                supervisor.resume(info.path)
                st.rerun()
    log = ui.step_log(info)
    history = ui.history(info)
    left, right = st.columns(2)
    with left, ui.guard("the loss chart"):
        st.plotly_chart(figures.step_curves(log), key=f"loss_{info.name}")
    with right, ui.guard("the gate chart"):
        st.plotly_chart(figures.gate_accuracy(log, history), key=f"gate_{info.name}")
    if history:
        with ui.guard("the learning curves"):
            st.plotly_chart(figures.learning_curves({info.name: history}, ("train/total", "val/total")),
                            key=f"curves_{info.name}")
    st.markdown("**Log** (last lines of train.log)")
    st.code(catalogue.log_tail(info.path, 30) or "(nothing logged yet)", language=None)
    seen = st.session_state.get(f"_seen_state_{info.name}")
    st.session_state[f"_seen_state_{info.name}"] = info.state
    if seen is not None and seen != info.state:
        st.rerun()  # started, ended or failed: refresh the whole page (run lists, polling on or off)


watched_info = by_name[watched]
st.fragment(show_progress, run_every=2 if watched_info.active else None)(watched_info.path)

# -- past runs ----------------------------------------------------------------------------------------------------
st.header("Runs")
st.dataframe(run_views.runs_table(all_runs), hide_index=True, width="stretch", key="runs_table",
             column_config=RUN_COLUMNS)
st.caption(f"Run folders in {catalogue.runs_root()}. 'interrupted': its process ended without finishing "
           "(killed, or the machine restarted); a run with saved state can be resumed.")
