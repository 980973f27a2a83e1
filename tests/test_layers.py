"""The import layering of core (the [tool.importlinter] contracts in pyproject.toml) and the app's import rule.

import-linter reads the real import graph (function-level imports included), so a lower layer that starts to
import a higher one fails here, named, instead of growing an import cycle; the second test plants such an import in
a scratch copy to prove the check can fail. Pages and app_support are checked with ``ast`` where import-linter
cannot see them (app_support is a module, not a package).
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    script = Path(sys.executable).parent / "lint-imports"
    command = [str(script)] if script.exists() else [shutil.which("lint-imports") or "lint-imports"]
    # --no-cache: no .import_linter_cache folder left in the checkout
    return subprocess.run([*command, "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_core_keeps_its_layers():
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout
    for name in ("core is layered", "the app's pages sit above core", "core never imports streamlit or the app"):
        assert f"{name} KEPT" in result.stdout


@pytest.mark.parametrize(("module", "imported"), [
    ("core/data/layout.py", "core.train.trainer"),
    ("core/run/folder.py", "core.infer.predictor"),  # the run layer sits below inference
    ("core/infer/evidence.py", "core.evaluate.metrics"),  # inference sits below evaluation
])
def test_an_upward_import_breaks_the_layers(tmp_path, module, imported):
    def ignore(folder: str, names: list[str]) -> set[str]:
        return {n for n in names if n == "__pycache__"}

    shutil.copytree(ROOT / "core", tmp_path / "core", ignore=ignore)
    shutil.copytree(ROOT / "pages", tmp_path / "pages", ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    planted = tmp_path / module
    planted.write_text(f"import {imported}\n" + planted.read_text())
    result = _lint_imports(tmp_path)
    assert result.returncode != 0, result.stdout
    assert "core is layered BROKEN" in result.stdout
    source = module.removesuffix(".py").replace("/", ".")
    assert f"{source} -> {imported} (l.1)" in result.stdout


def _imported(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports, anywhere in the file."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_pages_go_through_app_support_and_core():
    """pages -> app_support -> core: a page imports streamlit, app_support, core and the standard library only, so
    what it computes lives in core (testable without a browser); app_support never imports a page or the app."""
    allowed = {"streamlit", "app_support", "core", "__future__"}
    pages = sorted((ROOT / "pages").glob("*.py"))
    assert pages
    for page in pages:
        extra = {name for name in _imported(page) - allowed if name not in sys.stdlib_module_names}
        assert not extra, f"{page.name} imports {sorted(extra)}"
    assert not _imported(ROOT / "app_support.py") & {"pages", "app"}
