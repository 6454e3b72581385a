"""A sweep's report.html opened in a headless browser: every figure loads and decodes.

Needs Playwright (`pip install -e ".[test]"` installs it; no browser is downloaded at install time) and a
Chromium-family browser: $LLM_CODESIGN_BROWSER, else chromium / chromium-browser / google-chrome on PATH,
else the one `python -m playwright install chromium` fetches. Skipped, with the reason, when either is missing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tiny_sweep import write_tiny_model

from explore.cli import main

sync_api = pytest.importorskip("playwright.sync_api",
                               reason="Playwright is not installed (pip install playwright, or the test extra)")

BROWSER_ENV = "LLM_CODESIGN_BROWSER"
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Objectives tpot_s and energy_per_token_J: 1 Pareto pair + 2 sensitivity figures; with the sweep's evaluator the
# roofline, latency breakdown, energy per token and TTFT/TPOT against batch.
FIGURES = 1 + 2 + 4
# Each <img>: loaded, its pixel size, whether it decodes, its rendered width, and where its data comes from.
FIGURE_STATUS = """async () => Promise.all(Array.from(document.images, async (img) => ({
    complete: img.complete, width: img.naturalWidth, height: img.naturalHeight,
    decodes: await img.decode().then(() => true, () => false),
    shown: img.getBoundingClientRect().width, src: img.getAttribute('src').slice(0, 22), alt: img.alt,
})))"""
PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="  # 1x1 PNG


def _browser_path() -> str | None:
    """A browser named by the environment or found on PATH; None: Playwright's own download, if any."""
    if os.environ.get(BROWSER_ENV):
        return os.environ[BROWSER_ENV]
    return next((path for name in BROWSER_NAMES if (path := shutil.which(name))), None)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    path = _browser_path()
    with sync_api.sync_playwright() as playwright:
        try:
            # --no-sandbox: Chromium refuses to start as root (CI containers) with its sandbox on.
            launched = playwright.chromium.launch(executable_path=path, args=["--no-sandbox"])
        except sync_api.Error as err:
            pytest.skip(f"no headless Chromium to run ({path or 'Playwright download'}: {str(err).splitlines()[0]}); "
                        f"set {BROWSER_ENV} or run 'python -m playwright install chromium'")
        yield launched
        launched.close()


def _figure_status(browser: Any, url: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Each image of the page once loaded, and the page's errors (console errors, failed requests)."""
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("requestfailed", lambda request: errors.append(f"{request.url[:60]}: {request.failure}"))
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(url, wait_until="load")
    status = page.evaluate(FIGURE_STATUS)
    page.close()
    return status, errors


def _loaded(image: dict[str, Any]) -> bool:
    return image["complete"] and image["decodes"] and image["width"] > 0 and image["height"] > 0 and image[
        "shown"] > 0


def test_a_broken_figure_is_caught(browser, tmp_path: Path) -> None:
    """The check itself: of a good 1x1 PNG and a truncated one, only the first counts as loaded."""
    page = tmp_path / "page.html"
    page.write_text(f"<!DOCTYPE html><html><body><img src='data:image/png;base64,{PIXEL}' alt='good'>"
                    f"<img src='data:image/png;base64,{PIXEL[:40]}' alt='broken'></body></html>")
    status, _ = _figure_status(browser, page.as_uri())
    assert [(image["alt"], _loaded(image)) for image in status] == [("good", True), ("broken", False)]
    assert (status[0]["width"], status[0]["height"]) == (1, 1)


def test_every_figure_of_a_sweep_report_loads(browser, tmp_path: Path) -> None:
    model = write_tiny_model(tmp_path)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"name: browser\nmodel: {model}\ndevice: [h100-sxm, a100-sxm-80gb]\n"
                     "workload: {batch: [1, 4], prompt: 16, output: 4}\n"
                     "objectives: {minimize: [tpot_s, energy_per_token_J]}\n")
    out = tmp_path / "out"
    assert main([str(sweep), "--out", str(out), "--quiet"]) == 0
    status, errors = _figure_status(browser, (out / "report.html").as_uri())
    assert len(status) == FIGURES == len(list((out / "figures").glob("*.png")))
    assert all(image["src"] == "data:image/png;base64," for image in status)
    broken = [image["alt"] for image in status if not _loaded(image)]
    assert not broken, f"figures that did not load: {broken}"
    assert all(image["width"] > 300 and image["height"] > 200 for image in status)
    assert errors == []
