"""The public API (``core.__all__``, docs/api.md): lazy, documented, working, and installable with pip.

The install test builds a fresh virtual environment outside the repository whose ``.pth`` file points at this
environment's site-packages (so torch and the rest resolve without a download), installs the project into it with
``pip install --no-deps --no-build-isolation --no-index`` (editable, then from a copy of the source as a regular
package) and uses it from a folder outside the checkout.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

from builders import FixtureSpec, fundus, make_idrid, write_image

ROOT = Path(__file__).resolve().parents[1]
API_DOC = ROOT / "docs" / "api.md"
COMMANDS = ("metadata", "synth", "train", "fit-grader", "evaluate", "predict", "bench")


def _fresh_python(code: str, cwd: Path = ROOT, **env: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})
    assert done.returncode == 0, done.stderr
    return done.stdout


# -- the package namespace ---------------------------------------------------------------------------------------

def test_import_core_imports_no_torch() -> None:
    out = json.loads(_fresh_python(
        "import json, sys, core; print(json.dumps({'heavy': sorted(m for m in ('torch', 'timm', 'torchvision', "
        "'streamlit', 'plotly', 'cv2') if m in sys.modules), 'dir': dir(core), 'all': core.__all__}))"))
    assert out["heavy"] == []
    assert set(out["all"]) <= set(out["dir"])


def test_every_public_name_resolves_in_a_fresh_interpreter() -> None:
    out = json.loads(_fresh_python(
        "import json, core; print(json.dumps({name: type(getattr(core, name)).__name__ for name in core.__all__}))"))
    import core

    assert sorted(out) == sorted(core.__all__)
    assert all(kind in ("function", "type") for kind in out.values()), out


def test_public_names_are_documented_and_nothing_else_leaks() -> None:
    import core
    import core.api

    doc = API_DOC.read_text(encoding="utf-8")
    headings = [line for line in doc.splitlines() if line.startswith("### ")]
    for name in core.__all__:
        value = getattr(core, name)
        assert inspect.getdoc(value), f"core.{name} has no docstring"
        assert any(f"`{name}`" in h or f"`{name}(" in h for h in headings), f"docs/api.md lacks core.{name}"
    assert sorted(core.api.__all__) == sorted(n for n in core.__all__ if getattr(core, n).__module__ == "core.api")
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        core.not_a_name  # noqa: B018
    from core import figures  # a submodule still imports as before (the lazy __getattr__ lets it through)

    assert figures.LESIONS[0] == "MA"
    assert "docs/api.md" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert "README.md" in doc


def test_project_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import core

    monkeypatch.delenv("IDRID_STUDIO_HOME", raising=False)
    assert core.project_root() == ROOT  # a checkout finds itself, whatever the working directory
    monkeypatch.setenv("IDRID_STUDIO_HOME", str(tmp_path))
    assert core.project_root() == tmp_path.resolve()


# -- the functions -----------------------------------------------------------------------------------------------

def test_find_run_by_name_or_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import core

    monkeypatch.delenv("IDRID_STUDIO_RUNS", raising=False)
    assert core.find_run("demo") == ROOT / "checkpoints" / "demo"
    assert core.find_run(ROOT / "checkpoints" / "idrid") == ROOT / "checkpoints" / "idrid"
    (tmp_path / "mine").mkdir()
    monkeypatch.setenv("IDRID_STUDIO_RUNS", str(tmp_path))
    assert core.find_run("mine") == tmp_path / "mine"
    assert core.find_run("idrid") == ROOT / "checkpoints" / "idrid"  # the shipped runs stay reachable by name
    with pytest.raises(core.StudioError, match="no run folder 'nothing-here'"):
        core.find_run("nothing-here")
    with pytest.raises(core.StudioError, match="no run folder"):
        core.load_run(tmp_path / "missing" / "run")


def test_predict_an_array_a_file_and_a_folder(tmp_path: Path) -> None:
    import core

    predictor = core.load_run("demo")
    assert core.load_run(predictor) is predictor
    photograph = core.synthetic_photograph(seed=1, width=512)
    assert photograph.dtype == np.uint8 and photograph.shape == (340, 512, 3)
    assert np.array_equal(photograph, core.synthetic_photograph(seed=1, width=512))

    prediction = core.predict(photograph, run=predictor, both=True)
    assert isinstance(prediction, core.Prediction)
    assert prediction.task in ("segmentation", "classification")
    assert prediction.seg_probs.shape[0] == 5 and prediction.dr_probs.shape == (5,)
    assert prediction.report()["dr_grade"]["predicted"] in range(5)
    shown = core.overlay_image(prediction, photograph)
    assert shown.shape == photograph.shape and shown.dtype == np.uint8
    assert core.overlay_image(prediction).shape == prediction.canvas.shape
    assert len(core.overlay_figure(prediction, photograph).data) == 6  # the image and one legend entry per lesion
    grades = core.grade_figures(prediction, truth=(1, 0))
    assert list(grades) == ["dr", "dme"] and len(grades["dr"].data[0].y) == 5

    folder = tmp_path / "photographs"
    write_image(folder / "a.png", fundus(320, 213, 1))
    write_image(folder / "nested" / "b.jpg", fundus(320, 213, 2))
    (folder / "broken.jpg").write_bytes(b"not a photograph")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        predictions = core.predict_folder(folder, run=predictor)
    assert sorted(p.name for p in predictions) == ["a.png", "b.jpg"]
    assert any("broken.jpg" in str(w.message) for w in caught)
    single = core.predict(folder / "a.png", run=predictor)
    assert np.allclose(single.gate_probs, predictions[folder / "a.png"].gate_probs, atol=1e-5)

    rows = core.save_predictions(folder, tmp_path / "out", run=predictor)
    assert len(rows) == 3 and sum(bool(r.get("error")) for r in rows) == 1
    assert (tmp_path / "out" / "predictions.csv").is_file()


def test_metadata_train_evaluate_and_report(tmp_path: Path) -> None:
    import core

    root = make_idrid(tmp_path / "idrid", FixtureSpec(seg={"train": 6, "test": 3}, grading={"train": 10, "test": 5}))
    document = core.build_metadata(root, out=tmp_path / "meta.json", val_fraction=0.2)
    assert (tmp_path / "meta.json").is_file() and document["summary"]["test"]["segmentation"] == 3

    config = {
        "name": "api", "data": {"source": "metadata", "metadata": str(tmp_path / "meta.json"), "image_size": 64,
                                "cache_dir": str(tmp_path / "cache")},
        "model": {"decoder_channels": [32, 16, 16, 8], "gate_hidden": 16},
        "train": {"epochs": 1, "batch_size": 4, "max_steps": 2, "weights_dtype": "float16"},
    }
    run = core.train_run(config, out=tmp_path / "run", overrides=["train.seed=1"], progress=False)
    assert run == tmp_path / "run" and (run / "weights" / "best.safetensors").is_file()
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["seed"] == 1
    with pytest.raises(core.StudioError, match="already holds a trained run"):
        core.train_run(config, out=run, progress=False)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    assert core.train_run(tmp_path / "config.yaml", out=run, overwrite=True, progress=False) == run

    copy = tmp_path / "copy"
    summary = core.evaluate_run(run, "test", out=copy)
    assert summary.n == 8 and (copy / "eval" / "test" / "summary.json").is_file()
    assert not (run / "eval").exists()  # evaluated in the copy only
    other = core.evaluate_run(run, "test", data=tmp_path / "meta.json")
    assert other.n == 8 and (run / "eval" / "test" / "summary.json").is_file()
    figures = core.report_figures(copy, "test")
    assert {"learning_curves", "gate_accuracy", "dice", "iou", "pr_curves", "dr_confusion", "dme_confusion",
            "gate_routing"} <= set(figures)
    with pytest.raises(core.StudioError, match="no evaluation of its val split"):
        core.report_figures(copy, "val")
    with pytest.raises(core.StudioError, match="inside the run folder"):
        core.evaluate_run(run, "test", out=run / "nested")


# -- pip install --------------------------------------------------------------------------------------------------

CHECK = r"""
import json, sys
import core
light = "torch" not in sys.modules
predictor = core.load_run("demo")
prediction = core.predict(core.synthetic_photograph(seed=2, width=512), run=predictor, both=True)
report = prediction.report()
print(json.dumps({"file": core.__file__, "root": str(core.project_root()), "light": light,
                  "route": prediction.task, "dr": report["dr_grade"]["predicted"],
                  "dme": report["dme_risk"]["predicted"], "names": [n for n in core.__all__ if not hasattr(core, n)]}))
"""


def _venv(path: Path) -> Path:
    """A virtual environment without pip of its own whose .pth file reaches this environment's packages."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
    python = path / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    ours = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (Path(site) / "idrid-test-base.pth").write_text("\n".join(ours) + "\n")
    return python


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.skipif(not (importlib.util.find_spec("pip") and importlib.util.find_spec("setuptools")),
                    reason="needs pip and setuptools in the environment running the tests")
def test_pip_install_editable_and_regular(tmp_path: Path) -> None:
    started = time.perf_counter()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    script = tmp_path / "check.py"
    script.write_text(CHECK)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "IDRID_STUDIO_HOME", "IDRID_STUDIO_RUNS", "PIP_REQUIRE_VIRTUALENV")}
    install = ["-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "--quiet"]

    # editable: core stays the checkout's, found from anywhere
    python = _venv(tmp_path / "editable")
    done = _run([python, *install, "-e", ROOT], outside, env)
    assert done.returncode == 0, done.stdout + done.stderr
    done = _run([python, script], outside, env)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["file"] == str(ROOT / "core" / "__init__.py") and out["root"] == str(ROOT)
    assert out["light"] and out["names"] == []
    assert out["route"] in ("segmentation", "classification") and out["dr"] in range(5) and out["dme"] in range(3)
    script_path = tmp_path / "editable" / "bin" / "idrid-studio"
    done = _run([script_path, "--help"], outside, env)
    assert done.returncode == 0 and done.stdout.startswith("usage: idrid-studio"), done.stdout + done.stderr
    assert all(command in done.stdout for command in COMMANDS)
    done = _run([script_path, "evaluate", "--run", tmp_path / "no-such-run"], outside, env)
    assert done.returncode == 2 and "does not exist" in done.stderr  # main()'s exit status comes through
    done = _run([python, "-c", "import app_support"], outside, env)
    assert done.returncode != 0  # only core is the package

    # regular: core is copied into site-packages; the project is $IDRID_STUDIO_HOME, else the working directory
    source = tmp_path / "source"
    shutil.copytree(ROOT / "core", source / "core", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    python = _venv(tmp_path / "regular")
    done = _run([python, *install, source], outside, env)
    assert done.returncode == 0, done.stdout + done.stderr
    site = Path(json.loads(_run([python, "-c", "import json, sysconfig; print(json.dumps(sysconfig.get_paths()))"],
                                outside, env).stdout)["purelib"])
    installed = {p.relative_to(site).parent for p in (site / "core").rglob("__init__.py")}
    assert installed == {p.relative_to(ROOT).parent for p in (ROOT / "core").rglob("__init__.py")}
    assert not any((site / name).exists() for name in ("app.py", "app_support.py", "pages", "tests", "configs"))
    done = _run([python, script], outside, {**env, "IDRID_STUDIO_HOME": str(ROOT)})
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["file"] == str(site / "core" / "__init__.py") and out["root"] == str(ROOT) and out["light"]
    done = _run([python, script], ROOT, env)  # from the checkout's folder, without the variable
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["root"] == str(ROOT)
    done = _run([python, "-c", "import core; print(core.project_root())"], outside, env)
    assert done.stdout.strip() == str(outside.resolve())
    done = _run([tmp_path / "regular" / "bin" / "idrid-studio", "--help"], outside, env)
    assert done.returncode == 0 and all(command in done.stdout for command in COMMANDS)
    print(f"pip install test took {time.perf_counter() - started:.1f} s")
