"""`vlab report`: numbers checked against values computed here independently (csv module + numpy), error cases,
escaping, summary files, comparison, and a headless-chromium rendering check."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.chromium import CHROMIUM, launch
from vlab.commands.cli import main
from vlab.core.paths import REPO_ROOT

FIXTURES = Path(__file__).parents[1] / "fixtures" / "runs"
ARTIFACTS = REPO_ROOT / "test-artifacts"


@pytest.mark.browser
def test_report_renders_in_chromium(run_copy) -> None:
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is missing (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    run = run_copy("closed")
    assert main(["report", str(run)]) == 0
    ARTIFACTS.mkdir(exist_ok=True)
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto((run / "index.html").as_uri())
            page.wait_for_load_state("load")
            widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
            assert len(widths) >= 5 and all(w > 0 for w in widths), widths
            assert page.locator("#headline").is_visible()
            page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        finally:
            browser.close()
    assert errors == []
