"""An `openai.OpenAI` client for a server base URL: the one place the suite builds one (RAG answers, the SDK user)."""

from __future__ import annotations

import os
from typing import Any

from vlab.client.http import normalize_base_url

DEFAULT_TIMEOUT_S = 60.0


def api_base(host: str) -> str:
    """`http://h:p` or `http://h:p/v1` → the `/v1` base URL the openai client expects (`vlab.client.http`)."""
    return normalize_base_url(host) + "/v1"


def make_client(
    host: str, timeout_s: Any = DEFAULT_TIMEOUT_S, api_key: str | None = None, headers: dict[str, str] | None = None
) -> Any:
    """An `openai.OpenAI` client for `host`, without retries (a dead server should fail at once). `timeout_s`:
    seconds, or an `openai.Timeout`; `api_key` defaults to $OPENAI_API_KEY, then "EMPTY"."""
    import openai

    return openai.OpenAI(
        base_url=api_base(host),
        api_key=api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "EMPTY"),
        timeout=timeout_s,
        max_retries=0,
        default_headers=headers or None,
    )
