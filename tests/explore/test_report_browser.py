"""A sweep's report.html opened in a headless browser: every figure loads and decodes, every table is there.

Needs a Chromium-family browser: $LLM_CODESIGN_BROWSER, else chromium / chromium-browser / google-chrome on PATH
(.ci/run installs Debian's `chromium` package), else the one `python -m playwright install chromium` fetches. With
Playwright (in the test extra) the page is driven through it and its console errors are checked too; without it
the browser's own `--headless --dump-dom` runs a script that writes each image's and table's status into the
page. Skipped, with the reason, when no browser can be started.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tiny_sweep import write_tiny_model

from explore.cli import main

try:
    from playwright import sync_api
except ImportError:  # the browser's --dump-dom is used instead
    sync_api = None

BROWSER_ENV = "LLM_CODESIGN_BROWSER"
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Objectives tpot_s and energy_per_token_J: 1 Pareto pair + 2 sensitivity figures; with the sweep's evaluator the
# roofline, latency breakdown, energy breakdown, energy per token and TTFT/TPOT against batch.
FIGURES = 1 + 2 + 5
# The tables of that report with at least one row, and the one that is empty (every point fits).
TABLES = ("Pareto-optimal designs", "Highest throughput", "Lowest energy per token")
EMPTY_TABLES = ("Infeasible design points",)
# Each <table>: the heading of its section, its rows and its rendered height.
TABLES_JS = """Array.from(document.querySelectorAll('h2'), (h) => {
    const grid = h.nextElementSibling && h.nextElementSibling.nextElementSibling;
    const table = grid && grid.querySelector('table');
    return {title: h.textContent, rows: table ? table.rows.length : -1, shown: table ? table.offsetHeight : 0};
})"""
# Each <img>: loaded, its pixel size, whether it decodes, its rendered width and where its data comes from.
IMAGE_JS = """({complete: img.complete, width: img.naturalWidth, height: img.naturalHeight, decodes: DECODES,
    shown: img.getBoundingClientRect().width, src: img.getAttribute('src').slice(0, 22), alt: img.alt})"""
STATUS = ("async () => ({images: await Promise.all(Array.from(document.images, async (img) => "
          + IMAGE_JS.replace("DECODES", "await img.decode().then(() => true, () => false)") + ")), tables: "
          + TABLES_JS + "})")
# The same, run by the page itself at its load event (every image loaded by then; one that does not decode has no
# size), written into the DOM for --dump-dom: synchronously, as the dump does not wait for promises.
DUMP_SCRIPT = ("<script>window.addEventListener('load', () => { const status = {images: Array.from(document.images, "
               "(img) => " + IMAGE_JS.replace("DECODES", "img.complete && img.naturalWidth > 0") + "), tables: "
               + TABLES_JS + "}; const pre = document.createElement('pre'); pre.id = 'status'; "
               "pre.textContent = JSON.stringify(status); document.body.appendChild(pre); });</script>")
PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="  # 1x1 PNG


def _browser_path() -> str | None:
    """A browser named by the environment or found on PATH; None: Playwright's own download, if any."""
    if os.environ.get(BROWSER_ENV):
        return os.environ[BROWSER_ENV]
    return next((path for name in BROWSER_NAMES if (path := shutil.which(name))), None)


class DumpDom:
    """The browser binary alone: --headless --dump-dom of a copy of the page with DUMP_SCRIPT added."""

    def __init__(self, path: str) -> None:
        self.path = path

    def status(self, page: Path) -> tuple[dict[str, Any], list[str]]:
        probe = page.with_name(page.stem + ".probe.html")
        probe.write_text(page.read_text(encoding="utf-8").replace("</body>", DUMP_SCRIPT + "</body>"),
                         encoding="utf-8")
        # --no-sandbox: Chromium refuses to start as root (CI containers) with its sandbox on.
        run = subprocess.run([self.path, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=20000",
                              "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=180)
        found = re.search(r'<pre id="status">(.*?)</pre>', run.stdout, re.S)
        assert found, f"the page's status was not written: rc {run.returncode}, {run.stderr[-500:]}"
        return json.loads(html.unescape(found.group(1))), []


class Driven:
    """A browser launched through Playwright: console errors and failed requests are collected too."""

    def __init__(self, browser: Any) -> None:
        self.browser = browser

    def status(self, page_path: Path) -> tuple[dict[str, Any], list[str]]:
        page = self.browser.new_page()
        errors: list[str] = []
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.on("requestfailed", lambda request: errors.append(f"{request.url[:60]}: {request.failure}"))
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.goto(page_path.as_uri(), wait_until="load")
        status = page.evaluate(STATUS)
        page.close()
        return status, errors


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    path = _browser_path()
    if sync_api is None:
        if path is None:
            pytest.skip(f"no Chromium on PATH (set {BROWSER_ENV}, or install the distribution's chromium package)")
        yield DumpDom(path)
        return
    with sync_api.sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(executable_path=path, args=["--no-sandbox"])
        except sync_api.Error as err:
            if path is not None:  # Playwright cannot drive this browser: the browser alone still can
                yield DumpDom(path)
                return
            pytest.skip(f"no headless Chromium to run (Playwright download: {str(err).splitlines()[0]}); "
                        f"set {BROWSER_ENV} or install the distribution's chromium package")
        yield Driven(launched)
        launched.close()


def _loaded(image: dict[str, Any]) -> bool:
    return image["complete"] and image["decodes"] and image["width"] > 0 and image["height"] > 0 and image[
        "shown"] > 0


def test_a_broken_figure_is_caught(browser, tmp_path: Path) -> None:
    """The check itself: of a good 1x1 PNG and a truncated one, only the first counts as loaded."""
    page = tmp_path / "page.html"
    page.write_text(f"<!DOCTYPE html><html><body><img src='data:image/png;base64,{PIXEL}' alt='good'>"
                    f"<img src='data:image/png;base64,{PIXEL[:40]}' alt='broken'></body></html>")
    status, _ = browser.status(page)
    assert [(image["alt"], _loaded(image)) for image in status["images"]] == [("good", True), ("broken", False)]
    assert (status["images"][0]["width"], status["images"][0]["height"]) == (1, 1)


def test_every_figure_and_table_of_a_sweep_report_renders(browser, tmp_path: Path) -> None:
    model = write_tiny_model(tmp_path)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"name: browser\nmodel: {model}\ndevice: [h100-sxm, a100-sxm-80gb]\n"
                     "workload: {batch: [1, 4], prompt: 16, output: 4}\n"
                     "objectives: {minimize: [tpot_s, energy_per_token_J]}\n")
    out = tmp_path / "out"
    assert main([str(sweep), "--out", str(out), "--quiet"]) == 0
    status, errors = browser.status(out / "report.html")
    images = status["images"]
    assert len(images) == FIGURES == len(list((out / "figures").glob("*.png")))
    assert all(image["src"] == "data:image/png;base64," for image in images)
    broken = [image["alt"] for image in images if not _loaded(image)]
    assert not broken, f"figures that did not load: {broken}"
    assert all(image["width"] > 300 and image["height"] > 200 for image in images)
    tables = {t["title"]: t for t in status["tables"] if t["rows"] >= 0}
    for title in TABLES:
        assert title in tables and tables[title]["rows"] >= 2 and tables[title]["shown"] > 0, title  # header + rows
    assert all(title in [t["title"] for t in status["tables"]] for title in EMPTY_TABLES)
    assert errors == []
