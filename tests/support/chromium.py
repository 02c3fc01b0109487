"""Headless Debian chromium for the browser tests (driven by Playwright; no browser download)."""

from __future__ import annotations

from pathlib import Path

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
