"""Several browser sessions predicting at once share one model: no error, every answer the same as a lone
prediction of the same file, and the server's memory bounded.

Four Chromium pages upload ten photographs each at the same time to one ``streamlit run app.py``. The expected
answer of each file is computed in this process by the same Predictor and the same words the page uses
(``core.views.upload.gate_sentence``). Memory: the server's resident set after the 40 predictions, against after one
warm-up prediction; predictions are kept by ``st.cache_data`` (``app_support._prediction``, at most 32 entries of a few MB each for the
demo's 256-px canvas: lesion maps, canvas), so the growth is a cache with a ceiling, not a leak: 40 more photographs
after the first 40 add much less than the first 40 did.
"""

from __future__ import annotations

import asyncio
import io
import re
import time
from pathlib import Path

import pytest
from PIL import Image

from browser_helpers import CHROMIUM, MAIN, VIEWPORT, require_browser, serve
from core.infer.predictor import Predictor
from core.views.upload import gate_sentence
from studio_helpers import copy_demo, photograph

SESSIONS, UPLOADS = 4, 10
MEMORY_BOUND_MB = 600  # growth of the server's resident set over the 40 predictions (measured +135 on 2 cores)


def _resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _photographs(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True)
    paths = []
    for index in range(count):
        buffer = io.BytesIO()
        Image.fromarray(photograph(640, 426, seed=100 + index)).save(buffer, format="JPEG", quality=90)
        path = folder / f"eye-{index:02d}.jpg"
        path.write_bytes(buffer.getvalue())
        paths.append(path)
    return paths


def _plain(markdown: str) -> str:
    return markdown.replace("**", "")


async def _session(browser, url: str, files: list[Path]) -> list[str]:
    """One session uploading its files (one upload of ten); the gate sentences it shows, in upload order."""
    page = await browser.new_page(viewport=VIEWPORT)
    await page.goto(f"{url}/predict")
    upload = page.locator(f"{MAIN} input[type=file]")
    await upload.wait_for(state="attached", timeout=180_000)
    await upload.set_input_files([str(f) for f in files])
    await page.wait_for_function(
        f"(document.querySelector('{MAIN}').innerText.match(/Gate: /g) || []).length >= {len(files)}",
        timeout=600_000)
    text = await page.locator(MAIN).inner_text()
    await page.close()
    return re.findall(r"Gate: [^\n]*experts run: [a-z, ]+\.(?: [^\n]*)?", text)  # and what did not run


@pytest.mark.slow
def test_four_sessions_predicting_at_once_agree_with_a_lone_prediction_within_bounded_memory(tmp_path: Path) -> None:
    require_browser()
    from playwright.async_api import async_playwright

    from core import bootstrap

    root = tmp_path / "checkpoints"
    demo = copy_demo(root, tmp_path / "synthetic")
    bootstrap.first_start(demo)
    files = _photographs(tmp_path / "in", 2 * SESSIONS * UPLOADS + 1)
    warm, files, more = files[0], files[1:SESSIONS * UPLOADS + 1], files[SESSIONS * UPLOADS + 1:]
    predictor = Predictor.from_run(demo)
    expected = {f.name: _plain(gate_sentence(predictor.predict(f.read_bytes()))) for f in files}
    server: list = []

    async def drive(url: str) -> tuple[list[list[str]], float, float, float, float]:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM,
                                                       args=["--no-sandbox", "--disable-background-networking"])
            try:
                await _session(browser, url, [warm])  # the cold start: imports and the model, once
                before = _resident_mb(server[0].pid)
                started = time.time()
                shown = await asyncio.gather(*(_session(browser, url, files[i * UPLOADS:(i + 1) * UPLOADS])
                                               for i in range(SESSIONS)))
                seconds = time.time() - started
                after = _resident_mb(server[0].pid)
                await asyncio.gather(*(_session(browser, url, more[i * UPLOADS:(i + 1) * UPLOADS])
                                       for i in range(SESSIONS)))  # 40 new photographs: the cache turns over
                return list(shown), before, after, _resident_mb(server[0].pid), seconds
            finally:
                await browser.close()

    with serve(root, tmp_path / "server.log", server) as url:
        shown, before, after, again, seconds = asyncio.run(drive(url))
    log = (tmp_path / "server.log").read_text()
    assert "Traceback" not in log and "failed" not in log, log[-3000:]
    for index, sentences in enumerate(shown):
        names = [f.name for f in files[index * UPLOADS:(index + 1) * UPLOADS]]
        assert sentences == [expected[name] for name in names], (index, sentences)
    growth = after - before
    print(f"\nload: {SESSIONS} sessions x {UPLOADS} uploads in {seconds:.1f} s; server resident memory "
          f"{before:.0f} -> {after:.0f} MB (+{growth:.0f}), after 40 more photographs {again:.0f} MB")
    assert growth < MEMORY_BOUND_MB, (before, after)
    assert again - after < max(50.0, growth / 2), (before, after, again)  # a cache at its ceiling, not a leak
