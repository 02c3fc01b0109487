"""Request validation for /v1/chat/completions and /v1/completions, before anything goes upstream.

Known OpenAI fields are type-checked (pydantic, strict); unknown fields (vLLM's extensions such as `ignore_eos`)
pass through untouched. Then the gateway's limits: `max_tokens` (or `max_completion_tokens`) × `n` ≤ the cap;
a request that sets neither gets `max_tokens = cap` inserted; the estimated prompt length ≤ `max_prompt_tokens`.

Prompt estimate, tokens: each text counts `ceil(len(text) / chars_per_token)`; a chat message adds 4 (role and
template markers); a prompt given as token ids counts exactly. It decides the prompt-length limit and the
tokens/min reservation (reconciled with the server's `usage` afterwards, see `gateway.limits`).

A problem is an `ApiError`: HTTP status plus an OpenAI-style body
`{"error": {"message", "type": "invalid_request_error", "param", "code"}}`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.config import Validation

CHAT_MESSAGE_OVERHEAD = 4
"""Tokens added per chat message to the prompt estimate (role, template markers)."""


class ApiError(Exception):
    """An error answered to the client in OpenAI's format."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        reason: str = "validation",
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}
        self.reason = reason
        """Short label for logs and the rejected-requests metric."""

    def body(self) -> bytes:
        error = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return json.dumps({"error": error}).encode()


class _Lax(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class StreamOptions(_Lax):
    include_usage: bool | None = None


class ContentPart(_Lax):
    type: str
    text: str | None = None


class Message(_Lax):
    role: Literal["system", "user", "assistant", "tool", "developer", "function"]
    content: str | list[ContentPart] | None = None


class _Common(_Lax):
    model: str = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)


class ChatRequest(_Common):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)


class CompletionRequest(_Common):
    prompt: str | list[str] | list[int] | list[list[int]]


@dataclass(slots=True)
class Checked:
    """A valid request: what to forward and what it may cost."""

    body: bytes
    """The bytes to send upstream: the client's own, unless `max_tokens` had to be inserted."""
    model: str
    stream: bool
    max_tokens: int
    """Output tokens per choice the upstream may generate."""
    n: int
    prompt_tokens_estimate: int

    @property
    def cost(self) -> int:
        """Tokens reserved at admission: prompt estimate + max_tokens × n."""
        return self.prompt_tokens_estimate + self.max_tokens * self.n


def estimate_text(text: str, chars_per_token: float) -> int:
    return math.ceil(len(text) / chars_per_token)


def _content_text(content: str | list[ContentPart] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.text or "" for part in content)


def estimate_prompt(request: ChatRequest | CompletionRequest, chars_per_token: float) -> int:
    """The prompt estimate of the module docstring, tokens."""
    if isinstance(request, ChatRequest):
        return sum(
            CHAT_MESSAGE_OVERHEAD + estimate_text(_content_text(m.content), chars_per_token) for m in request.messages
        )
    prompt = request.prompt
    if isinstance(prompt, str):
        return estimate_text(prompt, chars_per_token)
    if not prompt:
        return 0
    if isinstance(prompt[0], str):
        return sum(estimate_text(p, chars_per_token) for p in prompt)
    if isinstance(prompt[0], int):
        return len(prompt)
    return sum(len(p) for p in prompt)


def _param(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        text = str(part)
        if "[" in text or text in ("str", "list[int]", "list[str]", "list[list[int]]", "list[ContentPart]"):
            continue
        out += f"[{text}]" if isinstance(part, int) else (f".{text}" if out else text)
    return out


def check_request(raw: bytes, chat: bool, rules: Validation) -> Checked:
    """Parse and validate one completion request body; raise ApiError (400/413) on the first problem."""
    if len(raw) > rules.max_body_bytes:
        raise ApiError(413, f"request body is {len(raw)} bytes, above the limit of {rules.max_body_bytes}",
                       code="body_too_large")  # fmt: skip
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "request body is not valid JSON", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, "request body must be a JSON object", code="invalid_json")
    model_cls: type[ChatRequest | CompletionRequest] = ChatRequest if chat else CompletionRequest
    try:
        req = model_cls.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = _param(first["loc"])
        message = first["msg"] if first["type"] != "missing" else "field required"
        raise ApiError(400, f"{param or 'body'}: {message}", param=param or None, code="invalid_value") from None
    if rules.models is not None and req.model not in rules.models:
        raise ApiError(404, f"the model '{req.model}' does not exist or is not available through this gateway",
                       param="model", code="model_not_found")  # fmt: skip
    if req.n > rules.max_n:
        raise ApiError(400, f"n = {req.n} is above this gateway's limit of {rules.max_n}", param="n",
                       code="invalid_value")  # fmt: skip
    field = "max_tokens"
    asked = req.max_tokens
    if isinstance(req, ChatRequest) and req.max_completion_tokens is not None:
        field, asked = "max_completion_tokens", req.max_completion_tokens
    if asked is not None and asked * req.n > rules.max_tokens:
        raise ApiError(
            400,
            f"{field} = {asked}{f' × n = {req.n}' if req.n > 1 else ''} is above this gateway's limit of "
            f"{rules.max_tokens} output tokens",
            param=field,
            code="max_tokens_exceeded",
        )
    body = raw
    if asked is None:
        asked = rules.max_tokens // req.n
        data["max_tokens"] = asked
        body = json.dumps(data).encode()
    estimate = estimate_prompt(req, rules.chars_per_token)
    if estimate > rules.max_prompt_tokens:
        raise ApiError(
            400,
            f"the prompt is about {estimate} tokens (estimated at {rules.chars_per_token:g} characters per token), "
            f"above this gateway's limit of {rules.max_prompt_tokens}",
            param="messages" if chat else "prompt",
            code="context_length_exceeded",
        )
    return Checked(body, req.model, req.stream, asked, req.n, estimate)
