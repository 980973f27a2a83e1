"""The app in a real browser: ``streamlit run app.py`` on a free port, driven by Debian's Chromium via playwright.

Visits every page from a fresh start (first start included), uploads a real IDRiD photograph on Predict, counts the
Gallery's 20 tiles and the Dashboard's charts, times a cold and a warm prediction, and saves the screenshots the
README shows (docs/screenshots/<page>.png, 1280x800).

Needs ``/usr/bin/chromium`` (``sudo apt-get install chromium``; ``$CHROMIUM`` names another binary) and the
``playwright`` package from requirements.txt (its own browser download is not used). Without them the test is
skipped with that hint on a developer's machine and fails in CI (``CI=true``), where it must run.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import pytest
from PIL import Image

from browser_helpers import CHROMIUM, MAIN, VIEWPORT, require_browser, serve
from conftest import REAL_GRADING, REAL_IDRID
from studio_helpers import REAL, copy_demo, copy_real

ROOT = Path(__file__).resolve().parents[1]
# The README's screenshots are refreshed only on request (UPDATE_SCREENSHOTS=1), so a test run leaves the tree clean.
SCREENSHOTS = (ROOT / "docs" / "screenshots" if os.environ.get("UPDATE_SCREENSHOTS")
               else Path(tempfile.gettempdir()) / "studio-screenshots")


def _wait_count(page, selector: str, count: int, timeout: float) -> int:
    page.wait_for_function(f"document.querySelectorAll('{selector}').length >= {count}", timeout=timeout * 1000)
    return page.locator(selector).count()


def _idle(page, timeout: float = 60) -> None:
    """Wait until the script run is over (no 'running' status widget) and no spinner is left."""
    page.wait_for_function(
        "!document.querySelector('[data-testid=stStatusWidget]') && !document.querySelector('[data-testid=stSpinner]')",
        timeout=timeout * 1000)
    time.sleep(0.5)


def _fundus_photographs() -> list[Path]:
    folder = REAL_IDRID / "A. Segmentation" / "1. Original Images" / "a. Training Set"
    if (folder / "IDRiD_01.jpg").exists():
        return [folder / "IDRiD_01.jpg", folder / "IDRiD_02.jpg"]
    synthetic = sorted((ROOT / "data" / "synthetic").rglob("*.jpg"))[:2]  # without ../shared: the demo's own data
    return synthetic


def _routes(run: Path, photographs: list[Path]) -> dict[str, Path]:
    """One photograph per route the run's own gate gives, among ``photographs`` (first found of each), so the
    browser can be asked to show a route the model really takes, for each route it takes."""
    from core.infer.predictor import Predictor

    predictor = Predictor.from_run(run)
    routes: dict[str, Path] = {}
    for photograph in photographs:
        p_segmentation = float(predictor.gate_probs(photograph)[0])
        routes.setdefault("segmentation" if p_segmentation >= predictor.gate_threshold else "classification",
                          photograph)
        if len(routes) == 2:
            break
    return routes


def _scroll_to_top(locator) -> None:
    """Bring an element to the top of the view, so a screenshot shows what follows it."""
    locator.first.evaluate("element => element.scrollIntoView({block: 'start'})")
    time.sleep(1)


def _screenshot(page, name: str) -> None:
    """docs/screenshots/<name>.png at the viewport's size, re-encoded with PNG optimisation (README-sized)."""
    page.mouse.move(1275, 795)  # no hover effects (sidebar toggle, image buttons) in the picture
    time.sleep(0.3)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path))
    Image.open(path).convert("RGB").save(path, optimize=True)


def _upload_and_time(page, photograph: Path, timeout: float = 120) -> float:
    """Seconds from choosing the file to the gate's decision on the page."""
    upload = page.locator(f"{MAIN} input[type=file]")
    upload.wait_for(state="attached", timeout=60_000)
    started = time.time()
    upload.set_input_files(str(photograph))
    page.get_by_text("Gate:").first.wait_for(timeout=timeout * 1000)
    return round(time.time() - started, 2)


@pytest.mark.slow
def test_every_page_in_chromium(tmp_path: Path) -> None:
    require_browser()
    from playwright.sync_api import sync_playwright

    root = tmp_path / "checkpoints"
    copy_demo(root)  # the real demo config: its data is the project's data/synthetic, generated if missing
    real_model = (REAL / "weights" / "best.safetensors").exists()
    if real_model:
        copy_real(root)  # the shipped real-data run: Predict uses it by default
    log = tmp_path / "server.log"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    timings: dict[str, object] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM,
                                             args=["--no-sandbox", "--disable-background-networking"])
        try:
            with serve(root, log) as url:
                page = browser.new_page(viewport=VIEWPORT)
                # Dashboard, the landing page: first start (data if missing, the demo's evaluation), then charts
                started = time.time()
                page.goto(url)
                charts = _wait_count(page, f"{MAIN} .js-plotly-plot", 7, timeout=150)
                assert charts >= 7  # curves, gate accuracy, Dice, IoU, precision-recall, DR and DME confusion
                timings["first_start_s"] = round(time.time() - started, 1)
                _idle(page)
                body = page.locator(MAIN).inner_text()
                assert "trained on synthetic images only" in body and "Evaluation on the test split" in body
                assert "Page not found" not in page.content()
                _screenshot(page, "dashboard")

                # Gallery by its link in the navigation: 20 tiles
                page.get_by_role("link", name="Gallery").click()
                tiles = _wait_count(page, f"{MAIN} [data-testid=stImage]", 20, timeout=60)
                _idle(page)
                assert tiles == 20 and "MISROUTED" in page.locator(MAIN).inner_text()
                _screenshot(page, "gallery")

                # A shared link to a run's dashboard opens it: its own address, its run chosen, no "Page not found"
                page.goto(f"{url}/dashboard?run=demo")
                _wait_count(page, f"{MAIN} .js-plotly-plot", 7, timeout=60)
                assert "Page not found" not in page.content()
                assert page.url.rstrip("/").endswith("/dashboard?run=demo"), page.url
                page.goto(url)  # the root address lands on the dashboard's own address
                page.wait_for_url("**/dashboard**", timeout=60_000)

                # Train by its URL: the demo's finished progress, charts, log and the runs table
                page.goto(f"{url}/train")
                page.get_by_text("epoch 40/40 · step 640/640").first.wait_for(timeout=60_000)
                _wait_count(page, f"{MAIN} .js-plotly-plot", 3, timeout=60)
                _idle(page)
                _scroll_to_top(page.get_by_role("heading", name="Progress"))
                _screenshot(page, "train")

                # Predict: a real 4288x2848 photograph, then both heads for the overlay and the DME comparison
                photographs = _fundus_photographs()  # after first start: without ../shared, the demo's own images
                assert photographs, "no fundus photograph to upload"
                timings["photograph"] = photographs[0].name
                page.get_by_role("link", name="Predict").click()
                timings["predict_after_first_start_s"] = _upload_and_time(page, photographs[0])
                _idle(page)
                body = page.locator(MAIN).inner_text()
                assert "predicted in" in body and "DR grade" in body
                with Image.open(photographs[0]) as image:
                    assert f"{image.width}x{image.height} px" in body  # 4288x2848 for a real IDRiD photograph
                if real_model:  # a real photograph, predicted by the model trained on real ones
                    assert "run idrid (real IDRiD photographs: 54 with lesion masks" in body, body[-2000:]
                    timings["predict_model"] = "idrid"
                # The route shown is the run's own gate's, for this real photograph: both shipped runs route
                model_run = root / ("idrid" if real_model else "demo")
                expected = next(iter(_routes(model_run, [photographs[0]])))
                assert f"Gate: {expected} with confidence" in body, body[:1500]
                assert "serves both experts to every photograph" not in body
                # the first 60 by name are all referable enough for the glance gate (its first not-referable call is
                # IDRiD_061): _routes stops at the first photograph of each route
                graded = sorted((REAL_GRADING / "B. Disease Grading").rglob("*.jpg"))[:120]
                if real_model and graded:
                    # A real photograph the real model's own gate sends to classification: the decoder never ran
                    real_routes = _routes(root / "idrid", graded)
                    timings["idrid_routes_found"] = sorted(real_routes)
                    assert "classification" in real_routes, "the real model's gate segmented every candidate"
                    timings["idrid_classification_photograph"] = real_routes["classification"].name
                    real_page = browser.new_page(viewport=VIEWPORT)
                    real_page.goto(f"{url}/predict")
                    _upload_and_time(real_page, real_routes["classification"])
                    _idle(real_page)
                    text = real_page.locator(MAIN).inner_text()
                    assert "run idrid (real IDRiD photographs" in text, text[-2000:]
                    assert "Gate: classification with confidence" in text and "experts run: classification." in text
                    # its gate glances at a 384-px copy (model.gate_input: glance): the decoder never met the canvas
                    assert "The lesion decoder did not run on the canvas: the gate read the lesion maps of a " \
                           "384-px copy." in text, text[:1500]
                    assert "Predicted lesions at threshold" not in text and "Lesions found" not in text
                    real_page.close()
                # A photograph the demo's gate sends to classification never enters the lesion decoder: no
                # overlay, no lesion table, and the page says so
                routes = _routes(root / "demo", sorted((ROOT / "data" / "synthetic").rglob("*.jpg"))[:40])
                timings["demo_routes_found"] = sorted(routes)
                assert "classification" in routes, "the demo's gate sent every candidate to segmentation"
                second = browser.new_page(viewport=VIEWPORT)
                second.goto(f"{url}/predict")
                if real_model:
                    second.get_by_text("Synthetic demo (demo)", exact=True).first.click()
                    _idle(second)
                _upload_and_time(second, routes["classification"])
                _idle(second)
                text = second.locator(MAIN).inner_text()
                assert "Gate: classification with confidence" in text and "experts run: classification." in text
                assert "The lesion decoder did not run." in text, text[:1500]
                assert "Predicted lesions at threshold" not in text and "Lesions found" not in text
                second.close()
                page.get_by_text("Run both heads").click()
                page.get_by_text("DME from the masks", exact=True).wait_for(timeout=60_000)
                _idle(page)
                _scroll_to_top(page.get_by_role("heading", name=photographs[0].name))
                _screenshot(page, "predict")
                page.close()

            # A fresh server on the now evaluated demo, opened straight at /predict (a deep link): the first
            # prediction pays for importing torch and loading the model (cold), a second session's does not (warm).
            with serve(root, log) as url:
                page = browser.new_page(viewport=VIEWPORT)
                started = time.time()
                page.goto(f"{url}/predict")
                upload = page.locator(f"{MAIN} input[type=file]")
                upload.wait_for(state="attached", timeout=120_000)
                timings["predict_page_open_cold_s"] = round(time.time() - started, 2)
                timings["predict_cold_s"] = _upload_and_time(page, photographs[0])
                timings["predict_cold_total_s"] = round(time.time() - started, 2)
                assert "Page not found" not in page.content()
                second = browser.new_page(viewport=VIEWPORT)
                second.goto(f"{url}/predict")
                timings["predict_warm_s"] = _upload_and_time(second, photographs[-1], timeout=60)
                assert "failed" not in second.locator(MAIN).inner_text()
        finally:
            browser.close()
    (tmp_path / "timings.json").write_text(json.dumps(timings))
    print(f"\nbrowser timings: {json.dumps(timings)}")
    for name in ("dashboard", "gallery", "predict", "train"):
        shot = SCREENSHOTS / f"{name}.png"
        assert shot.exists() and shot.stat().st_size > 10_000, name
