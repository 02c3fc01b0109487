"""The load generator's health thresholds and their wording."""

from __future__ import annotations

from vlab.core.client_health import classify
from vlab.locust.monitor import describe


def test_thresholds_and_wording() -> None:
    assert classify(0.95, 1.0) == "saturated" and classify(0.1, 50.0) == "starved" and classify(0.2, 2.0) == ""
    assert "saturated" in describe("n", 2, 0.9, 5.0) and "--processes" in describe("n", 2, 0.9, 5.0)
    assert "starved" in describe("n", 2, 0.05, 40.0)
