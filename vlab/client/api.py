"""What the suite asks an OpenAI-compatible server before any load: its models, context length, version, tokenizer.

Plain blocking HTTP (urllib): cooperative under Locust's gevent monkey-patching, and used only outside the timed
path. Every failure a user can cause (wrong URL, dead server, a server that is not OpenAI-compatible, an unknown
model) becomes one `UserError` line.
"""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from vlab.core.errors import UserError


def normalize_base_url(url: str) -> str:
    """`http://h:p`, `http://h:p/` and `http://h:p/v1` all mean the server root `http://h:p`."""
    url = url.strip().rstrip("/")
    return url[:-3] if url.endswith("/v1") else url


def http_json(
    base_url: str, path: str, payload: dict | None = None, *, api_key: str | None = None, timeout_s: float = 10.0
) -> Any:
    """GET (or POST `payload` as JSON) and decode the JSON answer; failures raise `UserError` naming the URL."""
    url = normalize_base_url(base_url) + path
    headers = {"Accept": "application/json"}
    data = None
    if payload is not None:
        data = json.dumps(payload).encode()
        headers["Content-Type"] = "application/json"
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:200].decode("utf-8", "replace").strip()
        raise UserError(f"{url}: HTTP {exc.code} {exc.reason}{': ' + detail if detail else ''}") from None
    except urllib.error.URLError as exc:
        reason = getattr(exc.reason, "strerror", None) or str(exc.reason)
        raise UserError(f"cannot reach the server at {url}: {reason}") from None
    except (TimeoutError, OSError) as exc:
        raise UserError(f"cannot reach the server at {url}: {exc}") from None
    try:
        return json.loads(body)
    except ValueError:
        raise UserError(f"{url}: the answer is not JSON: is this an OpenAI-compatible server?") from None


@dataclass(frozen=True)
class ServerInfo:
    """The facts about the server the run depends on."""

    base_url: str
    models: list[str]
    model: str
    max_model_len: int | None
    version: str | None
    models_answer: dict = field(repr=False, default_factory=dict)


def probe_server(base_url: str, model: str | None = None, *, api_key: str | None = None) -> ServerInfo:
    """Check the server once before load: it answers `/v1/models` like OpenAI, and serves `model` (default: the
    first model it lists)."""
    answer = http_json(base_url, "/v1/models", api_key=api_key)
    if not isinstance(answer, dict) or not isinstance(answer.get("data"), list):
        raise UserError(f"{base_url}/v1/models: unexpected answer: is this an OpenAI-compatible server?")
    entries = [m for m in answer["data"] if isinstance(m, dict) and "id" in m]
    ids = [str(m["id"]) for m in entries]
    if not ids:
        raise UserError(f"{base_url}/v1/models lists no model")
    chosen = model or ids[0]
    if chosen not in ids:
        raise UserError(f"model {chosen!r} is not served at {base_url} (it serves: {', '.join(ids)})")
    entry = entries[ids.index(chosen)]
    max_len = entry.get("max_model_len")
    version = None
    with contextlib.suppress(UserError, AttributeError):
        version = str(http_json(base_url, "/version", api_key=api_key, timeout_s=3.0).get("version"))
    return ServerInfo(
        base_url=normalize_base_url(base_url),
        models=ids,
        model=chosen,
        max_model_len=int(max_len) if isinstance(max_len, int) else None,
        version=version,
        models_answer=answer,
    )


class Tokenizer:
    """The server's own tokenizer through vLLM's `/tokenize` endpoint (exact counts, chat template included)."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None) -> None:
        self.base_url, self.model, self.api_key = base_url, model, api_key

    def tokenize(self, text: str, *, token_strs: bool = False) -> dict:
        payload = {"model": self.model, "prompt": text, "return_token_strs": token_strs}
        return http_json(self.base_url, "/tokenize", payload, api_key=self.api_key)

    def count_prompt(self, text: str) -> int:
        """Tokens of `text` sent as a completions prompt (special tokens included, as the server adds them)."""
        return int(self.tokenize(text)["count"])

    def count_chat(self, messages: list[dict]) -> int:
        """Tokens of `messages` after the chat template, with the generation prompt, as a chat request counts them."""
        payload = {"model": self.model, "messages": messages, "add_generation_prompt": True}
        return int(http_json(self.base_url, "/tokenize", payload, api_key=self.api_key)["count"])
