"""The LLM console in Locust's web UI (`vlab.locust.webui`): the tail of requests.csv (unit), then headless Debian
chromium driving the real UI against the local vLLM: a ramp started through Locust's form, the live charts, the numbers
shown checked against the records on disk, the report link, and the same with `--processes 2`.

Screenshots land in test-artifacts/webui-*.png; with VLAB_WEBUI_DOCS_SCREENSHOT=1 the LLM page's screenshot is also
written to docs/img/webui-llm-tab.png (the README's picture).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.support.chromium import browser as chromium
from tests.support.locust_ui import get_json, locust_ui, start_ramp_through_form
from vlab.core.paths import REPO_ROOT
from vlab.core.runfolder import REQUESTS_CSV

ARTIFACTS = REPO_ROOT / "test-artifacts"
DOCS_IMG = REPO_ROOT / "docs" / "img" / "webui-llm-tab.png"


def wait_for_points(page: Any, selector: str, n: int, timeout_s: float) -> None:
    page.wait_for_function(
        "([sel, n]) => { const e = document.querySelector(sel); return e && Number(e.dataset.points || 0) >= n; }",
        arg=[selector, n],
        timeout=timeout_s * 1000,
    )


def stable_count(page: Any, timeout_s: float = 20.0) -> int:
    """Wait until the page's request count stops changing (the test is stopped and the tail caught up)."""
    deadline = time.monotonic() + timeout_s
    last = -1
    while time.monotonic() < deadline:
        page.wait_for_timeout(2500)
        state = page.text_content("#stat-state")
        count = int(page.text_content("#stat-requests") or "0")
        if state == "stopped" and count == last:
            return count
        last = count
    raise AssertionError(f"the request count did not settle: {last}")


def records(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / REQUESTS_CSV, keep_default_na=False, na_values=[""])


def shown_ttft_p50(page: Any) -> float:
    return float(page.get_attribute('#table-run td[data-metric="ttft"][data-stat="p50"]', "data-value") or "nan")


@pytest.mark.e2e
@pytest.mark.browser
def test_ramp_from_the_form_charts_match_the_records(vllm_base_url: str, tmp_path: Path) -> None:
    errors: list[str] = []
    with locust_ui(tmp_path, vllm_base_url) as (base, run_dir, log), chromium() as browser:
        llm = browser.new_page(viewport={"width": 1400, "height": 1250})
        llm.on("pageerror", lambda exc: errors.append(str(exc)))
        llm.goto(f"{base}/llm")
        # Another scenario from scenarios/, picked before the start; a file outside the folder is refused.
        llm.wait_for_selector('#scenario-select option[value="smoke.yaml"]', state="attached")
        llm.select_option("#scenario-select", "smoke.yaml")
        llm.click("#scenario-apply")
        llm.wait_for_function("document.querySelector('#scenario-msg').textContent.includes('smoke')")
        assert "name: smoke" in (llm.text_content("#scenario-yaml") or "")
        req = urllib.request.Request(f"{base}/llm/scenario", data=b"path=../pyproject.toml", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=5)
        assert refused.value.code == 409

        ui = browser.new_page(viewport={"width": 1400, "height": 900})
        ui.on("pageerror", lambda exc: errors.append(str(exc)))
        start_ramp_through_form(ui, base, users=3, spawn_rate=3)
        ui.get_by_role("tab", name="LLM").click()
        ui.get_by_text("TTFT ms").first.wait_for(timeout=20_000)  # the exact-percentile table in Locust's own UI
        ui.screenshot(path=str(ARTIFACTS / "webui-locust-llm-tab.png"))

        wait_for_points(llm, "#chart-ttft", 8, 40)
        wait_for_points(llm, "#chart-tokens", 4, 10)
        wait_for_points(llm, "#chart-inflight", 4, 10)
        assert "3 users" in (llm.text_content("#stat-level") or "")
        llm.wait_for_timeout(2200)  # one more poll, so every chart shows the same points
        llm.screenshot(path=str(ARTIFACTS / "webui-llm-tab.png"), full_page=True)
        if os.environ.get("VLAB_WEBUI_DOCS_SCREENSHOT") == "1":
            DOCS_IMG.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ARTIFACTS / "webui-llm-tab.png", DOCS_IMG)

        ui.click('button:has-text("Stop")')  # through Locust's own UI
        count = stable_count(llm)
        disk = records(run_dir)
        assert count == len(disk) > 0
        assert int(llm.text_content("#stat-ok") or "0") == int(disk.ok.sum())
        ok = disk[disk.ok == 1]
        assert shown_ttft_p50(llm) == pytest.approx(float(np.percentile(ok.ttft_ms, 50)), rel=1e-6)
        n_shown = llm.get_attribute('#table-run td[data-metric="ttft"][data-stat="n"]', "data-value")
        assert int(float(n_shown or 0)) == len(ok)
        assert set(disk.level_target) == {3.0}  # the form's ramp was recorded as a load level
        meta = json.loads((run_dir / "run.json").read_text())
        assert meta["scenario"]["name"] == "smoke"

        with llm.expect_popup() as popup:
            llm.click("#report-link")
        report = popup.value
        report.wait_for_load_state("load", timeout=90_000)
        assert report.url.endswith("/llm/report/index.html")
        assert report.locator("#headline").is_visible()
        report.screenshot(path=str(ARTIFACTS / "webui-report.png"))
        assert (run_dir / "index.html").is_file()
    assert errors == [], log.read_text()[-2000:]


@pytest.mark.e2e
@pytest.mark.browser
def test_processes_2_charts_cover_every_worker(vllm_base_url: str, tmp_path: Path) -> None:
    with locust_ui(tmp_path, vllm_base_url, "--processes", "2") as (base, run_dir, _log), chromium() as browser:
        deadline = time.monotonic() + 30
        while get_json(f"{base}/llm/data")["workers"] != 2:
            assert time.monotonic() < deadline, "workers did not connect"
            time.sleep(0.5)
        scenario = get_json(f"{base}/llm/scenario")
        assert not scenario["can_change"] and "distributed" in scenario["reason"]
        ui = browser.new_page(viewport={"width": 1400, "height": 900})
        start_ramp_through_form(ui, base, users=4, spawn_rate=4)
        llm = browser.new_page(viewport={"width": 1400, "height": 1250})
        llm.goto(f"{base}/llm")
        wait_for_points(llm, "#chart-ttft", 5, 40)
        urllib.request.urlopen(urllib.request.Request(f"{base}/stop", method="POST"), timeout=10)
        count = stable_count(llm)
        llm.screenshot(path=str(ARTIFACTS / "webui-llm-processes2.png"), full_page=True)
        nodes = json.loads(llm.get_attribute("#stat-nodes", "data-nodes") or "{}")
        disk = records(run_dir)
        assert len(nodes) == 2 and sum(nodes.values()) == count == len(disk)
        assert nodes == disk.groupby("node").size().to_dict()
        ok = disk[disk.ok == 1]
        assert shown_ttft_p50(llm) == pytest.approx(float(np.percentile(ok.ttft_ms, 50)), rel=1e-6)
