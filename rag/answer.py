"""Streaming an answer from the OpenAI-compatible endpoint (the local vLLM) with the `openai` client.

Server failures (nothing listening, wrong URL, HTTP errors) become `UserError`s with one line naming the URL.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from vlab.core.errors import UserError

DEFAULT_MAX_TOKENS = 256


def _server_error(client: Any, exc: Exception) -> UserError:
    import openai

    url = str(client.base_url).rstrip("/")
    if isinstance(exc, openai.APITimeoutError):
        return UserError(f"the server at {url} did not answer in time")
    if isinstance(exc, openai.APIConnectionError):
        return UserError(f"cannot reach an OpenAI-compatible server at {url} (is it running? check --host)")
    if isinstance(exc, openai.NotFoundError):
        return UserError(f"{url} answered 404: wrong --host URL or unknown --model ({_short(exc)})")
    if isinstance(exc, openai.APIStatusError):
        return UserError(f"the server at {url} answered HTTP {exc.status_code}: {_short(exc)}")
    return UserError(f"request to {url} failed: {_short(exc)}")


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def first_model(client: Any) -> str:
    """The first model id the server lists at /v1/models."""
    import openai

    try:
        models = list(client.models.list())
    except openai.OpenAIError as exc:
        raise _server_error(client, exc) from exc
    if not models:
        raise UserError(f"the server at {client.base_url} lists no models")
    return str(models[0].id)


def stream_answer(
    client: Any,
    model: str,
    messages: list[dict[str, str]],
    *,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    temperature: float = 0.0,
    frequency_penalty: float = 0.3,
) -> Iterator[str]:
    """Yield the answer's text pieces as the server streams them (chat completions, stream=True).

    Greedy by default; the frequency penalty keeps a small model from repeating one line until `max_tokens`.
    """
    import openai

    try:
        stream = client.chat.completions.create(
            model=model,
            messages=messages,
            stream=True,
            max_tokens=max_tokens,
            temperature=temperature,
            frequency_penalty=frequency_penalty,
        )
        for event in stream:
            if event.choices and event.choices[0].delta and event.choices[0].delta.content:
                yield event.choices[0].delta.content
    except openai.OpenAIError as exc:
        raise _server_error(client, exc) from exc
