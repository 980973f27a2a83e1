"""docs/quickstart.ipynb runs from top to bottom in a kernel of this environment and shows what it says it shows.

The kernel is ipykernel's ``python3`` of the interpreter running pytest (jupyter_client starts the spec's
``python`` as ``sys.executable``; ``JUPYTER_PATH`` puts this environment's kernel specs first, before any of the
user's). It is started in docs/, as Jupyter starts a notebook. The notebook is stored without outputs.
"""

from __future__ import annotations

import hashlib
import re
import sys
import time
from pathlib import Path

import nbclient
import nbformat
import pytest

from conftest import REAL_IDRID

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "docs" / "quickstart.ipynb"
PLOTLY = "application/vnd.plotly.v1+json"


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_notebook_is_stored_without_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code)
    assert notebook.metadata.kernelspec.name == "python3"


@pytest.mark.slow
def test_quickstart_notebook_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTER_PATH", str(Path(sys.prefix) / "share" / "jupyter"))
    shipped = ROOT / "checkpoints" / "demo"
    before = _digests(shipped)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    started = time.perf_counter()
    client = nbclient.NotebookClient(notebook, kernel_name="python3", timeout=300,
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, when a cell fails
    print(f"quickstart notebook ran in {time.perf_counter() - started:.1f} s")

    text, plots = "", 0
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        for output in cell.outputs:
            assert output.output_type != "error", output
            if output.output_type == "stream" and output.name == "stdout":
                text += output.text
            elif output.output_type in ("display_data", "execute_result"):
                plots += PLOTLY in output.data
    assert f"python: {sys.prefix}\n" in text  # the kernel is this environment's interpreter
    assert f"project root: {ROOT}\n" in text
    assert "run idrid: " in text
    photograph = REAL_IDRID / "A. Segmentation" / "1. Original Images" / "a. Training Set" / "IDRiD_01.jpg"
    if photograph.is_file():  # the notebook finds ../shared as conftest does
        assert "input: real photograph IDRiD_01.jpg\n4288x2848 px" in text
    else:
        assert "input: synthetic photograph" in text
    assert "route: segmentation" in text or "route: classification" in text
    assert "DR grade: " in text and "DME risk: " in text  # the idrid run reads grades from its lesion maps
    assert "evaluated demo on test: 37 images (13 segmentation, 24 graded)" in text
    assert re.search(r"^gate accuracy \d\.\d{3}, DR accuracy \d\.\d{3}$", text, re.MULTILINE)
    assert "  OD: dice " in text
    assert "report figures: learning_curves, gate_accuracy, dice" in text
    assert plots == 5  # the overlay, the DR and DME bars, the Dice bars and the routing matrix
    assert _digests(shipped) == before  # the shipped demo run was only read
