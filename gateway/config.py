"""The gateway's configuration: one strict YAML file (pydantic v2, unknown keys and wrong types refused).

    upstream: http://127.0.0.1:8100          # vLLM's OpenAI-compatible server (http or https, no path)
    listen: {host: 127.0.0.1, port: 8200}
    validation: {max_tokens: 512, max_prompt_tokens: 1800, chars_per_token: 4.0}
    defaults: {requests_per_s: 5, burst_requests: 10, tokens_per_min: 60000}   # limits of keys that set none
    keys:
      - id: team-a                            # appears in logs and metrics; the key itself never does
        hash: sha256:<salt hex>:<digest hex>  # from `python -m gateway hash-key`
        limits: {requests_per_s: 2, tokens_per_min: 20000}

Key hashes are `sha256:<salt>:<digest>` with `digest = SHA-256(salt_bytes || key_utf8)`, a random 16-byte salt
per key, both hex. That is enough for API keys, which are random 256-bit tokens made by `hash-key --generate`: a
stolen config gives no dictionary to try. A slow hash (scrypt, bcrypt) protects human passwords and would cost
tens of milliseconds of CPU on every request. `load_config` turns every problem into one `ConfigError` line that
names the file, the key path and what was expected.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import re
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from vlab.core.errors import ConfigError
from vlab.core.yamlfile import read_yaml

HASH_SCHEME = "sha256"
_HASH_RE = re.compile(r"^sha256:([0-9a-f]{32}):([0-9a-f]{64})$")
KEY_PREFIX = "vgw-"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Listen(Strict):
    """Where the gateway accepts connections."""

    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=8200, ge=1, le=65535)


class UpstreamTimeouts(Strict):
    """Timeouts towards the upstream server, seconds."""

    connect_s: float = Field(default=5.0, gt=0, description="TCP connect.")
    read_s: float = Field(default=120.0, gt=0, description="Longest silence between two reads of a response.")
    write_s: float = Field(default=30.0, gt=0)
    pool_s: float = Field(default=30.0, gt=0, description="Wait for a free upstream connection.")


class Validation(Strict):
    """Request limits checked before anything is sent upstream (400 with an OpenAI-style error body)."""

    max_tokens: int = Field(
        default=1024,
        ge=1,
        description="Cap on max_tokens / max_completion_tokens (× n). A request that sets neither gets this value "
        "inserted, so the cap always holds.",
    )
    max_prompt_tokens: int = Field(default=4096, ge=1, description="Cap on the estimated prompt length, tokens.")
    chars_per_token: float = Field(
        default=4.0,
        gt=0,
        description="Prompt estimate: ceil(characters / chars_per_token) per text, plus 4 tokens per chat message; "
        "token-id prompts count exactly.",
    )
    max_n: int = Field(default=1, ge=1, description="Largest `n` (choices per request).")
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, description="Larger bodies get 413.")
    models: list[str] | None = Field(default=None, description="Models a request may name; null = any.")


class Limits(Strict):
    """A key's token buckets. Unset rates mean no limit of that kind.

    requests/s: capacity `burst_requests` (default max(1, ceil(requests_per_s))), refilled at `requests_per_s`.
    tokens/min: capacity `burst_tokens` (default `tokens_per_min`), refilled at `tokens_per_min / 60` per second.
    """

    requests_per_s: float | None = Field(default=None, gt=0)
    burst_requests: int | None = Field(default=None, ge=1)
    tokens_per_min: float | None = Field(default=None, gt=0)
    burst_tokens: int | None = Field(default=None, ge=1)

    @property
    def request_capacity(self) -> float:
        if self.burst_requests is not None:
            return float(self.burst_requests)
        return float(max(1, math.ceil(self.requests_per_s or 1)))

    @property
    def token_capacity(self) -> float:
        if self.burst_tokens is not None:
            return float(self.burst_tokens)
        return float(self.tokens_per_min or 0)


class KeyConfig(Strict):
    """One API key: its public id and its salted hash, never the key."""

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    hash: str
    limits: Limits | None = Field(default=None, description="Replaces `defaults` for this key when set.")

    @field_validator("hash")
    @classmethod
    def _hash_format(cls, value: str) -> str:
        if not _HASH_RE.match(value):
            raise ValueError(
                "expected 'sha256:<32 hex salt>:<64 hex digest>' (make one with: python -m gateway hash-key)"
            )
        return value


class LogConfig(Strict):
    """Structured logs: one JSON object per line."""

    path: Path | None = Field(default=None, strict=False, description="File to append to; null = standard error.")


class GatewayConfig(Strict):
    """The whole gateway configuration."""

    upstream: str
    upstream_api_key_env: str | None = Field(
        default=None, description="Environment variable holding the key sent upstream (vLLM --api-key), if any."
    )
    listen: Listen = Field(default_factory=Listen)
    timeouts: UpstreamTimeouts = Field(default_factory=UpstreamTimeouts)
    max_upstream_connections: int = Field(default=512, ge=1)
    validation: Validation = Field(default_factory=Validation)
    defaults: Limits = Field(default_factory=Limits)
    keys: list[KeyConfig] = Field(min_length=1)
    log: LogConfig = Field(default_factory=LogConfig)

    @field_validator("upstream")
    @classmethod
    def _upstream_url(cls, value: str) -> str:
        return check_upstream_url(value)

    @model_validator(mode="after")
    def _unique_ids(self) -> GatewayConfig:
        seen: set[str] = set()
        for key in self.keys:
            if key.id in seen:
                raise ValueError(f"key id {key.id!r} appears twice")
            seen.add(key.id)
        return self

    def limits_for(self, key: KeyConfig) -> Limits:
        return key.limits if key.limits is not None else self.defaults


def check_upstream_url(value: str) -> str:
    """`http(s)://host[:port]` with nothing after it (a trailing slash is dropped); raises ValueError otherwise."""
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected http://host:port or https://host:port, got {value!r}")
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ValueError(f"bad port in {value!r}") from None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"expected a base URL without a path (the gateway adds /v1/...), got {value!r}")
    return f"{parts.scheme}://{parts.netloc}"


# ------------------------------------------------------------------------------------------------------------ keys
def hash_key(key: str, salt: bytes | None = None) -> str:
    """`sha256:<salt hex>:<SHA-256(salt || key) hex>`, with a fresh random 16-byte salt unless one is given."""
    salt = secrets.token_bytes(16) if salt is None else salt
    return f"{HASH_SCHEME}:{salt.hex()}:{hashlib.sha256(salt + key.encode()).hexdigest()}"


def verify_key(key: str, stored: str) -> bool:
    """True when `key` hashes to `stored` (constant-time comparison of the digests)."""
    match = _HASH_RE.match(stored)
    if match is None:
        return False
    salt = bytes.fromhex(match.group(1))
    return hmac.compare_digest(hashlib.sha256(salt + key.encode()).hexdigest(), match.group(2))


def generate_key() -> str:
    """A new random API key: `vgw-` and 43 URL-safe characters (256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


# --------------------------------------------------------------------------------------------------------- loading
def _key_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        text = str(part)
        if "[" in text:  # pydantic's union member tags
            continue
        out += f"[{text}]" if isinstance(part, int) else (f".{text}" if out else text)
    return out or "(top level)"


def parse_config(data: Any, source: str) -> GatewayConfig:
    """Validate parsed YAML; one ConfigError line naming `source`, the key path and what was expected."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of gateway settings at the top level")
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown key"
        elif first["type"] == "missing":
            message = "required key missing"
        raise ConfigError(f"{source}: {_key_path(first['loc'])}: {message}{more}") from None


def load_config(path: str | Path, *, upstream: str | None = None) -> GatewayConfig:
    """Read and validate a config file; `upstream` (e.g. a server just started) replaces the file's upstream."""
    path = Path(path)
    data = read_yaml(path, "gateway config file")
    if upstream is not None and isinstance(data, dict):
        data = {**data, "upstream": upstream}
    config = parse_config(data, str(path))
    if config.upstream_api_key_env and not os.environ.get(config.upstream_api_key_env):
        raise ConfigError(
            f"{path}: upstream_api_key_env: environment variable {config.upstream_api_key_env} is not set"
        )
    return config
