"""Serving the app and finding a browser, for the tests that drive Chromium (test_browser, test_load)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
INSTALL_HINT = ("install Debian's Chromium (sudo apt-get install chromium) and the requirements "
                "(.venv/bin/pip install -r requirements.txt); `playwright install` is not needed")
VIEWPORT = {"width": 1280, "height": 800}
MAIN = '[data-testid="stMain"]'


def require_browser() -> None:
    in_ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    problem = None
    if not Path(CHROMIUM).exists():
        problem = f"{CHROMIUM} not found"
    else:
        try:
            from playwright.sync_api import sync_playwright  # noqa: F401
        except ImportError:
            problem = "the playwright package is not installed"
    if problem:
        if in_ci:
            pytest.fail(f"browser test cannot run in CI: {problem}; {INSTALL_HINT}")
        pytest.skip(f"browser test skipped: {problem}; {INSTALL_HINT}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve(root: Path, log: Path, started: list | None = None):
    """``streamlit run app.py`` on a free port with runs in ``root``; yields its URL; stops it at the end.
    ``started`` receives the server process (for its memory)."""
    port = free_port()
    env = dict(os.environ, IDRID_STUDIO_RUNS=str(root))
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://localhost:{port}"
    if started is not None:
        started.append(process)
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.time() > deadline:
                raise AssertionError(f"the server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
