"""UI glue shared by app.py and the pages: the sidebar pickers, first start, cached resources, error display.

No computing here: every value comes from ``core`` (``core.catalogue`` for run folders, ``core.runs`` for launching
and stopping training, ``core.bootstrap`` for the first start, ``core.views`` for what the pages show, ``core.infer``
for predictions); this module only wraps those calls in Streamlit caches and widgets.

Caching: a Predictor is built once per process per (run folder, weights and config modification times) with
``st.cache_resource`` and shared by every session; a retrained run has new mtimes and is loaded again. Reading a
cached Predictor takes no lock (Streamlit locks only to compute a missing entry); forward passes are serialised by
the Predictor's own lock.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from core import bootstrap, catalogue
from core import runs as supervisor
from core.catalogue import RunInfo
from core.config import DataConfig, load_config
from core.data.sources import synthetic_ready
from core.errors import StudioError
from core.run.folder import RunDir
from core.run.logs import read_jsonl

PROJECT_ROOT = Path(__file__).resolve().parent
DATASET_CHOICES = ("Synthetic demo (built-in)", "IDRiD folder", "Metadata file")
OPEN_FOLDER = "Open a run folder…"


# -- the frame ----------------------------------------------------------------------------------------------------

def _legacy_mode() -> bool:
    """Whether Streamlit still serves ``pages/`` as a legacy multipage folder.

    Until some session has run app.py's ``st.navigation`` (and in every ``AppTest`` run), Streamlit treats
    ``pages/`` as a legacy folder: a link such as ``/predict`` runs ``pages/predict.py`` alone, without the frame.
    """
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # a Streamlit without it has no legacy mode
        return False
    return bool(PagesManager.uses_pages_directory)


def enter_page() -> None:
    """A page's first line: when Streamlit runs the page alone (legacy mode), run app.py's frame instead, which
    registers the navigation and runs this page inside it, then end the outer run. No rerun is involved, so the
    widgets' values of this run are kept."""
    if _legacy_mode():
        import runpy

        runpy.run_path(str(PROJECT_ROOT / "app.py"), run_name="__streamlit_frame__")
        st.stop()


# -- errors ----------------------------------------------------------------------------------------------------

HINTS = {
    "too large to decode safely": "Photographs above about 89 megapixels are refused on purpose (a small file can "
                                  "expand to gigabytes: a 'decompression bomb'). An IDRiD photograph is 12 "
                                  "megapixels; downscale larger images before uploading.",
    "no weights yet": "The run has not finished an epoch yet (or its folder is incomplete): pick another run or "
                      "wait for it.",
}


@contextmanager
def guard(what: str, name: str | None = None) -> Iterator[None]:
    """Show a user's mistake (``StudioError``) as its one line, anything else with its type; the page goes on."""
    prefix = f"**{name}**: " if name else ""
    try:
        yield
    except StudioError as error:
        st.error(f"{prefix}{error}", icon=":material/error:")
        for words, hint in HINTS.items():
            if words in str(error):
                st.caption(hint)
    except Exception as error:  # noqa: BLE001 - a bug must not take the page down; st.stop/rerun are BaseException
        st.error(f"{prefix}{what} failed: {type(error).__name__}: {error}", icon=":material/bug_report:")
        with st.expander("Details (for a bug report)"):
            st.exception(error)


# -- runs ------------------------------------------------------------------------------------------------------

def all_runs() -> list[RunInfo]:
    return catalogue.list_runs()


def run_stamp(path: Path) -> float:
    """Changes when the run's weights or config change, so cached models and figures follow a retrained run."""
    run = RunDir(Path(path))
    stamps = [0.0]
    for file in [run.config, *run.weights.glob("*.safetensors")] if run.weights.is_dir() else [run.config]:
        try:
            stamps.append(file.stat().st_mtime)
        except OSError:
            pass
    return max(stamps)


def file_stamp(path: Path) -> tuple[float, int]:
    try:
        stat = Path(path).stat()
        return stat.st_mtime, stat.st_size
    except OSError:
        return 0.0, 0


def current_run() -> RunInfo | None:
    """The run picked in the sidebar, re-read so its state is fresh."""
    path = st.session_state.get("run_path")
    if not path:
        return None
    try:
        return catalogue.run_info(Path(path))
    except Exception:  # noqa: BLE001
        return None


def select_run_later(name: str) -> None:
    """Make ``name`` the sidebar's run on the next rerun (a widget's value cannot change once it is drawn)."""
    st.session_state["_select_run"] = name


def run_data_summary(info: RunInfo) -> str:
    """What the run learned from, in a few words (``core.views.runs.data_summary``); "?" for an unreadable config."""
    from core.views.runs import data_summary

    try:
        return data_summary(load_config(info.run.config), info.run)
    except StudioError:
        return "?"


def run_banner(info: RunInfo) -> None:
    """Say what the run was trained on; synthetic runs are labelled as such on every page."""
    try:
        from core.views.runs import data_description

        description = data_description(load_config(info.run.config), info.run)
    except StudioError as error:
        st.warning(f"Run **{info.name}**: {error}")
        return
    if info.synthetic:
        st.info(f"Run **{info.name}** ({info.state}): **{description}**. Its numbers describe synthetic data, "
                "not real photographs.", icon=":material/science:")
    else:
        st.caption(f"Run **{info.name}** ({info.state}), trained on {description}.")


def predict_run(info: RunInfo) -> RunInfo:
    """The run the Predict page uses: the real-data model by default whenever it is there (a real photograph deserves
    the real model, whatever run the sidebar shows), with the synthetic demo and the sidebar's own run, if it is one
    of the user's, one click away; without the real model, the sidebar's run."""
    runs = {r.name: r for r in all_runs()}
    runs.setdefault(info.name, info)  # a run opened from a folder is not in the list
    real = runs.get(catalogue.REAL_NAME)
    if real is None or not real.has_weights:
        return info
    options = [catalogue.REAL_NAME] + [n for n in (catalogue.DEMO_NAME, info.name) if n in runs and
                                       n != catalogue.REAL_NAME]
    options = list(dict.fromkeys(options))
    labels = {catalogue.REAL_NAME: "Real IDRiD model", catalogue.DEMO_NAME: "Synthetic demo"}
    choice = st.segmented_control("Model", options, default=catalogue.REAL_NAME, key="predict_model",
                                  format_func=lambda name: f"{labels.get(name, 'Your run')} ({name})",
                                  help="The real model saw only IDRiD photographs; the demo saw synthetic ones; "
                                       "your run saw what you trained it on. The caption under each photograph "
                                       "says which ran.")
    return runs[choice or catalogue.REAL_NAME]


def evaluated_split(info: RunInfo, choices: tuple[str, ...] = ("test", "val", "train")) -> int:
    """Index in ``choices`` of the first split the run has an evaluation of (the real run has no test split)."""
    for index, split in enumerate(choices):
        if split in info.evaluated:
            return index
    return 0


def require_run() -> RunInfo:
    info = current_run()
    if info is None:
        st.info("No run selected. Pick one in the sidebar, or start one on the **Train** page.")
        st.stop()
    return info


# -- cached reads ----------------------------------------------------------------------------------------------

@st.cache_data(max_entries=64, show_spinner=False)
def _jsonl(path: str, stamp: tuple[float, int]) -> list[dict[str, Any]]:
    return read_jsonl(Path(path))


def history(info: RunInfo) -> list[dict[str, Any]]:
    path = info.run.history
    return _jsonl(str(path), file_stamp(path))


def step_log(info: RunInfo) -> list[dict[str, Any]]:
    path = info.run.log
    return _jsonl(str(path), file_stamp(path))


@st.cache_data(max_entries=32, show_spinner=False)
def _evaluation(path: str, split: str, stamp: tuple[float, int]):
    from core.views.evaluation import load_evaluation

    return load_evaluation(path, split)


def evaluation(info: RunInfo, split: str):
    return _evaluation(str(info.path), split, file_stamp(info.run.summary(split)))


def evaluate_button(info: RunInfo, split: str, key: str, label: str | None = None) -> None:
    """Offer to evaluate a run that has no evaluation of ``split`` (10-20 s for the demo on 2 CPU cores)."""
    if not info.has_weights:
        st.warning(f"Run **{info.name}** has no weights yet, so it cannot be evaluated.")
        return
    if st.button(label or f"Evaluate {info.name} on its {split} split", key=key, type="primary",
                 icon=":material/analytics:"):
        with guard(f"evaluating {info.name}"), st.spinner(f"Evaluating {info.name} on the {split} split..."):
            from core.evaluate.runner import evaluate_run

            started = time.time()
            evaluate_run(info.path, split, progress=False)
            st.toast(f"{info.name} evaluated on {split} in {time.time() - started:.0f} s")
            st.rerun()


# -- models and predictions ------------------------------------------------------------------------------------

@st.cache_resource(max_entries=4, show_spinner=False)
def _predictor(path: str, stamp: float):
    from core.infer.predictor import Predictor

    return Predictor.from_run(path)


def predictor(info: RunInfo):
    return _predictor(str(info.path), run_stamp(info.path))


# 32, not 8: each rerun of the Predict page reads every upload in order, and a cache smaller than the batch would
# evict each photograph just before it is read again (every slider move predicting all of them anew)
@st.cache_data(max_entries=32, show_spinner=False)
def _prediction(path: str, stamp: float, data: bytes, both: bool):
    return _predictor(path, stamp).predict(data, both=both)


def prediction(info: RunInfo, data: bytes, both: bool):
    return _prediction(str(info.path), run_stamp(info.path), data, both)


@contextmanager
def upload_guard(outcome) -> Iterator[None]:
    """``guard`` for one upload of the Predict page (a ``core.views.upload.UploadResult``) that also notes what
    stopped its prediction, for that upload's row of the table across uploads."""
    with guard("prediction", name=outcome.name):
        try:
            yield
        except Exception as error:  # noqa: BLE001 - guard shows it; st.stop/rerun are BaseException and pass
            outcome.fail(error)
            raise


@st.cache_data(max_entries=8, show_spinner=False)
def _gradcam(path: str, stamp: float, data: bytes, head: str):
    return _predictor(path, stamp).gradcam(data, head)


def gradcam(info: RunInfo, data: bytes, head: str):
    return _gradcam(str(info.path), run_stamp(info.path), data, head)


@st.cache_data(max_entries=8, show_spinner=False)
def display_image(data: bytes):
    from core.views.upload import display_image as decode

    return decode(data)


@st.cache_data(max_entries=8, show_spinner=False)
def _gallery(path: str, split: str, seed: int, misrouted_only: bool, roots: tuple[str, ...],
             stamp: tuple[float, int], kind: str | None = None):
    from core.views.gallery import gallery_views

    return gallery_views(path, split, n=20, seed=seed, misrouted_only=misrouted_only, roots=list(roots) or None,
                         kind=kind)


def gallery(info: RunInfo, split: str, seed: int, misrouted_only: bool, roots: list[str] | None = None,
            kind: str | None = None):
    predictions = info.run.predictions(split)
    return _gallery(str(info.path), split, seed, misrouted_only, tuple(roots or ()), file_stamp(predictions), kind)


@st.cache_data(ttl=30, max_entries=16, show_spinner=False)
def missing_images(path: str, roots: tuple[str, ...]) -> str | None:
    from core.views.gallery import missing_images as missing

    return missing(path, list(roots) or None)


def image_folders(info: RunInfo) -> list[str] | None:
    """Where the gallery finds the run's photographs: where they were, else the folders the user gives here."""
    first = missing_images(str(info.path), ())
    if first is None:
        return None
    text = st.text_input("Dataset folder(s), comma separated, in the order of the run's config",
                         key=f"image_roots_{info.name}", placeholder="/data/idrid-segmentation, /data/idrid-grading")
    given = [part.strip() for part in text.split(",") if part.strip()]
    problem = missing_images(str(info.path), tuple(given)) if given else first
    if problem is not None:
        st.warning(problem, icon=":material/folder_off:")
        return None
    st.caption(f"Photographs read from {', '.join(given)}.")
    return given


# -- the sidebar -----------------------------------------------------------------------------------------------

@dataclass
class Dataset:
    config: DataConfig | None  # None when the choice is incomplete or wrong (error says why)
    label: str
    error: str | None = None


@st.cache_data(ttl=60, max_entries=8, show_spinner=False)
def _describe(data: DataConfig) -> dict[str, Any]:
    from core.views.runs import describe_dataset

    return describe_dataset(data)


def demo_data() -> DataConfig:
    demo = catalogue.demo_dir()
    try:
        return load_config(RunDir(demo).config).data
    except StudioError:
        return load_config(PROJECT_ROOT / "configs" / "demo.yaml").data


def dataset_picker() -> Dataset:
    st.sidebar.subheader("Dataset")
    choice = st.sidebar.radio("Dataset", DATASET_CHOICES, key="data_choice", label_visibility="collapsed",
                              help="Used by the Train page. The Dashboard, Gallery and Predict pages use each run's "
                                   "own data.")
    if choice == DATASET_CHOICES[0]:
        data = demo_data()
        if synthetic_ready(data.synthetic):
            st.sidebar.caption(f"Synthetic IDRiD: {data.synthetic.n_seg} segmentation + {data.synthetic.n_cls} "
                               "grading images, generated locally. Not real photographs.")
        else:
            st.sidebar.caption("Synthetic IDRiD, generated on first use (about 15 s).")
        return Dataset(data, "synthetic demo")
    if choice == DATASET_CHOICES[1]:
        text = st.sidebar.text_area("IDRiD folder (one root per line for one root per half)", key="data_roots",
                                    placeholder="~/data/IDRiD", height=68)
        data = DataConfig(source="folder", roots=[line.strip() for line in text.splitlines() if line.strip()])
    else:
        text = st.sidebar.text_input("balanced_idrid_metadata.json", key="data_metadata",
                                     placeholder="~/data/IDRiD/balanced_idrid_metadata.json")
        data = DataConfig(source="metadata", metadata=text.strip() or None)
    try:
        data = supervisor.check_data(data)
    except StudioError as error:
        if (data.roots if data.source == "folder" else data.metadata):
            st.sidebar.error(str(error))
        else:
            st.sidebar.caption("Enter a path to use this dataset.")
        return Dataset(None, choice, str(error))
    try:
        summary = _describe(data)
        st.sidebar.caption(f"{summary['n']} samples: {summary['line']}")
    except StudioError as error:
        st.sidebar.error(str(error))
        return Dataset(None, choice, str(error))
    except Exception as error:  # noqa: BLE001
        st.sidebar.error(f"reading the dataset failed: {type(error).__name__}: {error}")
        return Dataset(None, choice, str(error))
    return Dataset(data, ", ".join(data.roots) if data.source == "folder" else str(data.metadata))


def _default_run(runs: list[RunInfo]) -> str | None:
    """The newest run of the user's own with weights, else the demo, else the newest folder."""
    own = [r for r in runs if not r.is_shipped and r.has_weights]
    if own:
        return own[0].name
    if any(r.is_demo for r in runs):
        return catalogue.DEMO_NAME
    return runs[0].name if runs else None


def run_picker() -> RunInfo | None:
    st.sidebar.subheader("Run")
    runs = all_runs()
    names = [r.name for r in runs]
    by_name = {r.name: r for r in runs}
    pending = st.session_state.pop("_select_run", None)
    if pending in names:
        st.session_state["run_choice"] = pending
    elif st.session_state.get("run_choice") not in [*names, OPEN_FOLDER]:
        wanted = st.query_params.get("run")
        st.session_state["run_choice"] = wanted if wanted in names else (_default_run(runs) or OPEN_FOLDER)
    choice = st.sidebar.selectbox(
        "Run", [*names, OPEN_FOLDER], key="run_choice", label_visibility="collapsed",
        format_func=lambda n: n if n == OPEN_FOLDER else f"{n} · {_state_label(by_name[n])}",
        help=f"Run folders under {catalogue.runs_root()}",
    )
    info = None
    if choice == OPEN_FOLDER:
        text = st.sidebar.text_input("Run folder", key="run_folder", placeholder="/path/to/checkpoints/NAME")
        if text.strip():
            try:
                info = catalogue.open_run(text)
            except StudioError as error:
                st.sidebar.error(str(error))
        elif not runs:
            st.sidebar.caption(f"No runs in {catalogue.runs_root()} yet.")
    else:
        info = by_name[choice]
        if st.query_params.get("run") != choice:
            st.query_params["run"] = choice
    st.session_state["run_path"] = str(info.path) if info else None
    if info is not None and info.active:
        with st.sidebar:  # the list above is drawn once; this line follows the trainer
            st.fragment(live_state, run_every=3)(str(info.path))
    if info is not None:
        if info.synthetic:
            st.sidebar.caption(f":material/science: {info.name} is {synthetic_note()}.")
        if info.error and info.state in ("failed", "interrupted", "no status"):
            st.sidebar.warning(f"{info.name}: {info.error}")
    return info


def _state_label(info: RunInfo) -> str:
    """A training run is "training" in the list: its own pending/running would go stale until the next rerun."""
    return "training" if info.active else info.state


def live_state(path: str) -> None:
    """The selected run's state and progress, re-read every few seconds while its trainer runs."""
    info = catalogue.run_info(path)
    st.caption(f":material/model_training: **{info.name}** {info.state} · {info.progress()['text']}")


def synthetic_note() -> str:
    from core.views.runs import SYNTHETIC_NOTE

    return SYNTHETIC_NOTE


@st.cache_resource(show_spinner=False)
def warm_up() -> threading.Thread:
    """Import the model stack in the background once per server process, as soon as the first page is drawn.

    torch, timm and torchvision take 4-5 s to import on 2 cores (``python -X importtime``: torch 2.1 s, then 2.3 s
    of ``torch._dynamo`` that torchvision.ops pulls in for timm), which the first prediction would otherwise pay
    after the upload; the Dashboard and the Gallery never need them and are drawn meanwhile."""
    thread = threading.Thread(target=importlib.import_module, args=("core.infer.predictor",), name="warm-up",
                              daemon=True)
    thread.start()
    return thread


def first_start(info: RunInfo | None) -> None:
    """Generate the synthetic data a synthetic run needs and evaluate the demo, with a spinner per step."""
    if info is None or not info.has_config:
        return
    try:
        steps = bootstrap.first_start_steps(info.path)
    except Exception:  # noqa: BLE001 - a damaged folder is reported by the pages
        return
    if not info.is_demo:
        steps = [s for s in steps if s == "data"]  # the user's own runs are evaluated on request
    if not steps:
        return
    with guard("first start"):
        if "data" in steps:
            with st.spinner("Generating the synthetic demo dataset (about 15 s, first start only)..."):
                bootstrap.ensure_run_data(info.path)
        if "evaluate" in steps:
            with st.spinner("Evaluating the demo run on its synthetic test split (about 15 s, first start only)..."):
                bootstrap.ensure_evaluated(info.path, "test")


def sidebar() -> tuple[Dataset, RunInfo | None]:
    st.sidebar.title("IDRiD studio")
    info = run_picker()
    dataset = dataset_picker()
    st.session_state["dataset"] = dataset
    return dataset, info


def dataset() -> Dataset:
    return st.session_state.get("dataset") or Dataset(demo_data(), "synthetic demo")

