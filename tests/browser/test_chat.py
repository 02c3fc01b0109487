"""The chat page of the LLM console (`vlab.locust.chat`, `webui_static/chat.html`) in headless chromium against the
local vLLM: a question's answer streams in token by token with its TTFT, ITL and tok/s; HTML in a message is shown as
text, never run; and with a load ramp running (started through Locust's own form) TTFT grows against an idle
message, while the server's running count shows the load.

Every timed question starts a new chat, so idle and loaded messages have the same prompt. Screenshots:
test-artifacts/chat-idle.png (the streamed answers and the HTML shown as text) and test-artifacts/chat-under-load.png.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pytest

from tests.support.chromium import ARTIFACTS, browser
from tests.support.locust_ui import locust_ui, start_ramp_through_form

QUESTION = "Name three primary colors."
HOSTILE = 'Hi <img src=x onerror="window.__pwned=1"> <script>window.__pwned=2</script> **bold** and `code`'


def ask(page: Any, text: str, timeout_s: float = 90, fresh: bool = False) -> dict[str, str]:
    """Type `text`, send it with Enter, wait for the answer to end; return the answer's data attributes. `fresh`:
    "New chat" first, so the question goes alone (a growing history would lengthen the prompt, and so TTFT)."""
    if fresh:
        page.click("#new-chat")
    n = page.locator(".msg.assistant").count()
    page.fill("#input", text)
    page.press("#input", "Enter")
    answer = page.locator(".msg.assistant").nth(n)
    answer.wait_for(timeout=10_000)
    page.wait_for_function(
        "n => { const e = document.querySelectorAll('.msg.assistant')[n];"
        " return e && e.dataset.state !== 'streaming'; }",
        arg=n,
        timeout=timeout_s * 1000,
    )
    data = answer.evaluate("e => Object.assign({}, e.dataset)")
    assert data["state"] == "done", answer.text_content()
    return data


@pytest.mark.e2e
@pytest.mark.browser
def test_chat_streams_with_timing_and_ttft_grows_under_load(vllm_base_url: str, tmp_path: Path) -> None:
    errors: list[str] = []
    with locust_ui(tmp_path, vllm_base_url) as (base, _run, log), browser() as chromium:
        page = chromium.new_page(viewport={"width": 1200, "height": 900})
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{base}/llm/chat")
        page.wait_for_selector('#model option[value="smollm2"]', state="attached")
        page.fill("#max-tokens", "48")  # short answers: the test stays short on a busy machine

        # The answer streams: the page shows token events while the message is still streaming.
        page.fill("#input", "Write a short paragraph about the sea.")
        page.press("#input", "Enter")
        page.wait_for_function(
            "() => { const e = document.querySelector('.msg.assistant');"
            " return e && e.dataset.state === 'streaming' && Number(e.dataset.events) >= 3; }",
            timeout=90_000,
        )
        partial = page.locator(".msg.assistant .body").text_content() or ""
        page.wait_for_function(
            "() => document.querySelector('.msg.assistant').dataset.state !== 'streaming'", timeout=120_000
        )
        first = page.locator(".msg.assistant").first.evaluate("e => Object.assign({}, e.dataset)")
        final = page.locator(".msg.assistant .body").first.text_content() or ""
        assert first["state"] == "done" and int(first["events"]) > 3 and len(final) > len(partial) > 0
        assert float(first["ttftMs"]) > 0 and float(first["itlMs"]) > 0 and float(first["tps"]) > 0
        timing = page.locator(".msg.assistant .timing").first.text_content() or ""
        assert "TTFT" in timing and "ITL" in timing and "tok/s" in timing

        # HTML typed into a message is shown as text; only the markdown subset becomes markup.
        ask(page, HOSTILE)
        assert page.evaluate("window.__pwned") is None
        assert page.locator("#log img").count() == 0 and page.locator("#log script").count() == 0
        mine = page.locator(".msg.user").last
        assert '<img src=x onerror="window.__pwned=1">' in (mine.text_content() or "")
        assert mine.locator("strong").text_content() == "bold" and mine.locator("code").text_content() == "code"

        page.screenshot(path=str(ARTIFACTS / "chat-idle.png"), full_page=True)
        idle = [float(ask(page, QUESTION, fresh=True)["ttftMs"]) for _ in range(3)]
        assert page.locator(".msg.user").count() == 1  # "New chat" cleared the conversation

        # A load ramp from Locust's own form, in another tab; the chat's server panel shows it.
        ui = chromium.new_page(viewport={"width": 1400, "height": 900})
        start_ramp_through_form(ui, base, users=16, spawn_rate=16)
        page.wait_for_function("() => Number(document.querySelector('#srv-running').textContent) >= 4", timeout=60_000)
        page.wait_for_timeout(3000)
        loaded = [float(ask(page, QUESTION, fresh=True)["ttftMs"]) for _ in range(3)]
        page.screenshot(path=str(ARTIFACTS / "chat-under-load.png"), full_page=True)
        ui.click('button:has-text("Stop")')
        (ARTIFACTS / "chat-ttft.json").write_text(json.dumps({"idle_ttft_ms": idle, "loaded_ttft_ms": loaded}) + "\n")
        # Visibly: the median loaded TTFT exceeds the median idle one by half again (medians of three messages, so
        # one message that lands in a gap between the load's batches, or one slow idle message, decides nothing).
        assert statistics.median(loaded) > 1.5 * statistics.median(idle), (idle, loaded)
    assert errors == [], log.read_text()[-2000:]
