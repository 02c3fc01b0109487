"""Headless Debian chromium for the browser tests (driven by Playwright; no browser download)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from vlab.core.paths import REPO_ROOT

ARTIFACTS = REPO_ROOT / "test-artifacts"

CHROMIUM = Path("/usr/bin/chromium")
CHROME_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    # This machine's network is closed: without these, chromium keeps trying to reach its services.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def launch(playwright):
    """A chromium browser from the system package, with the flags above."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROME_ARGS)


@contextmanager
def browser() -> Iterator[Any]:
    """A headless chromium for one test (skipped when chromium or Playwright is missing); test-artifacts/ exists."""
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is missing (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        instance = launch(p)
        try:
            yield instance
        finally:
            instance.close()
