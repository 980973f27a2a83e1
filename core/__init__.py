"""Gated multi-task retinal image studio: data, model, training, evaluation and inference for IDRiD.

Nothing in this package imports streamlit; the app in ``app.py`` and ``pages/`` only displays what this
package computes.

The public API is the names in ``__all__`` (documented in ``docs/api.md``): ``core.load_run("idrid")``,
``core.predict(...)``, ``core.evaluate_run(...)`` and so on. They are imported lazily, on first use, so that
``import core`` stays instant and imports no torch; every other name, here and in the submodules, is internal.
"""

from __future__ import annotations

import importlib as _importlib
import os as _os
from pathlib import Path as _Path
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> the module that defines it (imported on first access by ``__getattr__``).
_LAZY: dict[str, str] = {
    **dict.fromkeys(
        ("find_run", "load_run", "predict", "predict_folder", "save_predictions", "evaluate_run", "build_metadata",
         "train_run", "overlay_image", "overlay_figure", "grade_figures", "report_figures", "synthetic_photograph"),
        "core.api"),
    "Predictor": "core.infer.predictor",
    "Prediction": "core.infer.predictor",
    "StudioError": "core.errors",
}

__all__ = sorted([*_LAZY, "project_root"])


def project_root() -> _Path:
    """The folder holding the repository files core looks for (``checkpoints/``, ``configs/``, ``data/``).

    ``$IDRID_STUDIO_HOME`` when set; else the checkout this package was imported from (a clone, or an editable
    install of it); else, for a package installed into site-packages, the current working directory.
    """
    home = _os.environ.get("IDRID_STUDIO_HOME")
    if home:
        return _Path(home).expanduser().resolve()
    checkout = _Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "core" / "__init__.py").is_file():
        return checkout
    return _Path.cwd()


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'core' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # for type checkers and editors; at run time the names come from __getattr__
    from core.api import (
        build_metadata,
        evaluate_run,
        find_run,
        grade_figures,
        load_run,
        overlay_figure,
        overlay_image,
        predict,
        predict_folder,
        report_figures,
        save_predictions,
        synthetic_photograph,
        train_run,
    )
    from core.errors import StudioError
    from core.infer.predictor import Prediction, Predictor
