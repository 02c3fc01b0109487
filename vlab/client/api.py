"""What the suite asks an OpenAI-compatible server before any load: its models, context length, version, tokenizer.

Plain blocking HTTP (urllib): cooperative under Locust's gevent monkey-patching, and used only outside the timed
path. Every failure a user can cause (wrong URL, dead server, a server that is not OpenAI-compatible, a missing or
wrong API key, an unknown model) becomes one `UserError` line that says what to do.

The server may be vLLM or any other OpenAI-compatible server: `/version`, `/metrics` and `/tokenize` are vLLM's
extras, and their absence is a note, not a failure (`ServerInfo.notes`; exact prompt lengths then come from a local
tokenizer or are approximate, see `vlab.client.tokenize`).
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlab.client.http import describe_body, normalize_base_url
from vlab.core.errors import UserError
from vlab.core.scenario import ApiConfig, expand_env

DEFAULT_KEY_ENV = "OPENAI_API_KEY"
"""Where the key comes from when the scenario names no source (as the openai SDK and most tools do)."""


@dataclass(frozen=True)
class Credentials:
    """How requests authenticate: the bearer key and extra headers, resolved from the environment at start.

    `key_source` says where the key came from ("env OPENAI_API_KEY", "file ...", or "none") and never holds it."""

    api_key: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    key_source: str = "none"

    def http_headers(self) -> dict[str, str]:
        out = dict(self.headers)
        if self.api_key:
            out["Authorization"] = f"Bearer {self.api_key}"
        return out


def credentials_for(api: ApiConfig) -> Credentials:
    """The scenario's key (from `api.api_key_env`, `api.api_key_file`, else OPENAI_API_KEY when set) and its headers
    with `${VAR}` expanded. Never read from the YAML itself."""
    headers = {name: expand_env(value, f"api.headers.{name}") for name, value in api.headers.items()}
    if api.api_key_env:
        key = os.environ.get(api.api_key_env)
        if not key:
            raise UserError(f"api.api_key_env: environment variable {api.api_key_env} is not set")
        return Credentials(key.strip(), headers, f"env {api.api_key_env}")
    if api.api_key_file:
        try:
            key = api.api_key_file.read_text().splitlines()[0].strip()
        except (OSError, IndexError):
            raise UserError(f"api.api_key_file: cannot read a key from {api.api_key_file}") from None
        return Credentials(key, headers, f"file {api.api_key_file}")
    key = os.environ.get(DEFAULT_KEY_ENV, "").strip()
    return Credentials(key or None, headers, f"env {DEFAULT_KEY_ENV}" if key else "none")


class EndpointMissing(UserError):
    """The server answered 404 (or 405) for an endpoint: it does not have it (e.g. /tokenize outside vLLM)."""


def _auth_hint(status: int, creds: Credentials | None) -> str:
    if creds is None or creds.key_source == "none":
        return (
            f"HTTP {status}: the server wants an API key; set {DEFAULT_KEY_ENV}, or name a variable or file in the "
            "scenario (api.api_key_env / api.api_key_file)"
        )
    return f"HTTP {status}: the server refused the API key from {creds.key_source}"


def http_json(
    base_url: str,
    path: str,
    payload: dict[str, Any] | None = None,
    *,
    creds: Credentials | None = None,
    timeout_s: float = 10.0,
) -> Any:
    """GET (or POST `payload` as JSON) and decode the JSON answer; failures raise `UserError` naming the URL."""
    url = normalize_base_url(base_url) + path
    headers = {"Accept": "application/json", **(creds.http_headers() if creds else {})}
    data = None
    if payload is not None:
        data = json.dumps(payload).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        detail = describe_body(exc.read()[:20000])
        if exc.code in (401, 403):
            raise UserError(f"{url}: {_auth_hint(exc.code, creds)} ({detail})") from None
        if exc.code in (404, 405):
            raise EndpointMissing(f"{url}: HTTP {exc.code}: {detail}") from None
        raise UserError(f"{url}: HTTP {exc.code}: {detail}") from None
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
    models_answer: dict[str, Any] = field(repr=False, default_factory=dict)
    root: str | None = None
    """The served model's `root` (vLLM: the model folder), where a local tokenizer may be found."""
    notes: list[str] = field(default_factory=list)
    """What the server lacks that a vLLM server has (one line each)."""


def probe_server(base_url: str, model: str | None = None, *, creds: Credentials | None = None) -> ServerInfo:
    """Check the server once before load: it answers `/v1/models` like OpenAI, and serves `model` (default: the
    first model it lists)."""
    answer = http_json(base_url, "/v1/models", creds=creds)
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
    version, notes = None, []
    try:
        version = str(http_json(base_url, "/version", creds=creds, timeout_s=3.0).get("version"))
    except (UserError, AttributeError):
        notes.append("no /version: not a vLLM server, or an older one")
    return ServerInfo(
        base_url=normalize_base_url(base_url),
        models=ids,
        model=chosen,
        max_model_len=int(max_len) if isinstance(max_len, int) else None,
        version=version,
        models_answer=answer,
        root=str(entry["root"]) if isinstance(entry.get("root"), str) else None,
        notes=notes,
    )


class ServerTokenizer:
    """The server's own tokenizer through vLLM's `/tokenize` endpoint (exact counts, chat template included)."""

    source = "server /tokenize"

    def __init__(self, base_url: str, model: str, creds: Credentials | None = None) -> None:
        self.base_url, self.model, self.creds = base_url, model, creds

    def token_strs(self, text: str) -> list[str]:
        payload = {"model": self.model, "prompt": text, "return_token_strs": True}
        answer = http_json(self.base_url, "/tokenize", payload, creds=self.creds)
        return [str(t) for t in answer.get("token_strs") or []]

    def count_prompt(self, text: str) -> int:
        """Tokens of `text` sent as a completions prompt (special tokens included, as the server adds them)."""
        return int(
            http_json(self.base_url, "/tokenize", {"model": self.model, "prompt": text}, creds=self.creds)["count"]
        )

    def count_chat(self, messages: list[dict[str, Any]]) -> int:
        """Tokens of `messages` after the chat template, with the generation prompt, as a chat request counts them."""
        payload = {"model": self.model, "messages": messages, "add_generation_prompt": True}
        return int(http_json(self.base_url, "/tokenize", payload, creds=self.creds)["count"])


def has_tokenize(base_url: str, model: str, creds: Credentials | None) -> bool:
    """True when the server answers `/tokenize` (vLLM); False when it has no such endpoint."""
    with contextlib.suppress(EndpointMissing):
        http_json(base_url, "/tokenize", {"model": model, "prompt": "a"}, creds=creds, timeout_s=5.0)
        return True
    return False


def local_tokenizer_folder(path: str) -> Path | None:
    """A folder holding `tokenizer.json` for `path` (a tokenizer.json file or a model folder), if it exists here."""
    candidate = Path(path).expanduser()
    if candidate.is_file() and candidate.name == "tokenizer.json":
        return candidate.parent
    if (candidate / "tokenizer.json").is_file():
        return candidate
    return None
