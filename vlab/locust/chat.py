"""The chat page of the LLM console: try the model by hand, and feel its latency while a load test runs.

`install(bp, auth, target)` adds to the console's blueprint (`vlab.locust.webui`):

  ===============================  ===================================================================================
  `GET  /llm/chat`                 the page (`webui_static/chat.html`)
  `GET  /llm/chat/models`          the host's `/v1/models` answer, as received
  `GET  /llm/chat/server`          the host's running and waiting requests (vLLM's /metrics gauges), or why not
  `POST /llm/chat/completions`     `{model, messages, max_tokens?}` → the host's streamed chat completion, relayed
  ===============================  ===================================================================================

The browser talks to the Locust web UI only (same origin: no CORS), which relays to the host with the run's
credentials (the key never reaches the page). The relay does not buffer: each read from the host's socket
(`HTTPResponse.read1`, the bytes one chunk brought) is yielded at once to the web UI's gevent WSGI server, which sends
it as one chunk, with `X-Accel-Buffering: no` for proxies in front. The page measures the timing itself from the
events it receives (see chat.html): TTFT = send → first content event, ITL = mean gap between content events, tok/s =
(events − 1) ÷ (last − first event) seconds.
"""

from __future__ import annotations

import http.client
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, request, send_file

from vlab.client.api import Credentials
from vlab.client.http import parse_base_url
from vlab.telemetry.server_metrics import parse_metrics

log = logging.getLogger("vlab")

STATIC = Path(__file__).parent / "webui_static"
MAX_TOKENS_CAP = 1024
TIMEOUT_S = 120.0
READ_SIZE = 65536


@dataclass(frozen=True)
class Target:
    """Where the chat goes: the host's base URL and the run's credentials (None base: no host given)."""

    base_url: str | None
    creds: Credentials


def _connection(base_url: str, timeout_s: float) -> tuple[http.client.HTTPConnection, str]:
    url = parse_base_url(base_url)
    cls = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
    return cls(url.host, url.port, timeout=timeout_s), url.prefix


def _get(target: Target, path: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
    """GET `path` on the host; (status, body), status 0 with the reason as body when the host does not answer."""
    if target.base_url is None:
        return 0, b"no host: start locust with --host"
    conn, prefix = _connection(target.base_url, timeout_s)
    try:
        conn.request("GET", prefix + path, headers=target.creds.http_headers())
        resp = conn.getresponse()
        return resp.status, resp.read()
    except OSError as exc:
        return 0, f"{target.base_url}: {exc}".encode()
    finally:
        conn.close()


def server_counts(status: int, body: bytes) -> dict[str, Any]:
    """`{"available", "running", "waiting", "reason"}` from a /metrics answer (vLLM's gauges, summed over label
    sets); unavailable with the reason when the host has no /metrics or exports neither gauge."""
    if status != 200:
        why = body.decode("utf-8", "replace")[:200] if status == 0 else f"/metrics answered HTTP {status}"
        return {"available": False, "running": None, "waiting": None, "reason": why}
    values = parse_metrics(body.decode("utf-8", "replace")).values
    if "running" not in values and "waiting" not in values:
        return {"available": False, "running": None, "waiting": None, "reason": "/metrics has no vLLM request gauges"}
    running, waiting = values.get("running"), values.get("waiting")
    return {
        "available": True,
        "running": int(running) if running is not None else None,
        "waiting": int(waiting) if waiting is not None else None,
        "reason": None,
    }


def chat_body(payload: Any) -> dict[str, Any]:
    """The upstream request from the page's JSON: model, messages (role user/assistant/system, text content),
    max_tokens (1..MAX_TOKENS_CAP, default 256), streaming with usage. Raises ValueError with what is wrong."""
    if not isinstance(payload, dict):
        raise ValueError("expected a JSON object")
    model, messages = payload.get("model"), payload.get("messages")
    if not isinstance(model, str) or not model:
        raise ValueError("model: expected a model id")
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages: expected a non-empty list")
    clean = []
    for m in messages:
        if not (isinstance(m, dict) and m.get("role") in ("user", "assistant", "system")):
            raise ValueError("messages: each needs a role user, assistant or system")
        if not isinstance(m.get("content"), str):
            raise ValueError("messages: each needs a text content")
        clean.append({"role": m["role"], "content": m["content"]})
    max_tokens = payload.get("max_tokens", 256)
    if not isinstance(max_tokens, int) or not 1 <= max_tokens <= MAX_TOKENS_CAP:
        raise ValueError(f"max_tokens: expected 1..{MAX_TOKENS_CAP}")
    return {"model": model, "messages": clean, "max_tokens": max_tokens, "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip


def relay(target: Target, body: dict[str, Any]) -> tuple[int, dict[str, str], Iterator[bytes]]:
    """Send the chat completion and return (status, headers, the body's bytes as they arrive). A host that does not
    answer gives status 502 and a JSON error body."""
    if target.base_url is None:
        return 502, {"Content-Type": "application/json"}, iter([_error("no host: start locust with --host")])
    conn, prefix = _connection(target.base_url, TIMEOUT_S)
    headers = {"Content-Type": "application/json", **target.creds.http_headers()}
    try:
        conn.request("POST", prefix + "/v1/chat/completions", body=json.dumps(body).encode(), headers=headers)
        resp = conn.getresponse()
    except OSError as exc:
        conn.close()
        return 502, {"Content-Type": "application/json"}, iter([_error(f"{target.base_url}: {exc}")])

    def chunks() -> Iterator[bytes]:
        try:
            while True:
                data = resp.read1(READ_SIZE)
                if not data:
                    return
                yield data
        except OSError as exc:  # the host cut the stream: tell the page in-band, as an SSE error event
            yield b"data: " + _error(f"stream cut: {exc}") + b"\n\n"
        finally:
            conn.close()

    kind = resp.getheader("Content-Type") or "text/event-stream"
    return resp.status, {"Content-Type": kind}, chunks()


def _error(message: str) -> bytes:
    return json.dumps({"error": {"message": message}}).encode()


Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def install(bp: Blueprint, auth: Decorator, target: Callable[[], Target]) -> None:
    """Add the chat routes (module doc) to the console's blueprint; `target()` is read at each request."""

    @bp.route("/llm/chat")
    @auth
    def chat_page() -> Response:
        return send_file(STATIC / "chat.html", mimetype="text/html", max_age=0)

    @bp.route("/llm/chat/models")
    @auth
    def chat_models() -> Response:
        status, body = _get(target(), "/v1/models")
        if status == 0:
            return _plain_json({"error": {"message": body.decode("utf-8", "replace")}}, 502)
        return Response(body, status=status, headers={"Content-Type": "application/json", "Cache-Control": "no-store"})

    @bp.route("/llm/chat/server")
    @auth
    def chat_server() -> Response:
        return _plain_json(server_counts(*_get(target(), "/metrics", timeout_s=2.0)))

    @bp.route("/llm/chat/completions", methods=["POST"])
    @auth
    def chat_completions() -> Response:
        try:
            body = chat_body(request.get_json(silent=True))
        except ValueError as exc:
            return _plain_json({"error": {"message": str(exc)}}, 400)
        status, headers, chunks = relay(target(), body)
        headers.update({"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
        return Response(chunks, status=status, headers=headers, direct_passthrough=True)


def _plain_json(data: dict[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(data), status=status,
                    headers={"Content-Type": "application/json", "Cache-Control": "no-store"})  # fmt: skip
