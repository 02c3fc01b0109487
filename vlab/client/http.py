"""The few HTTP facts every client of the server shares: what a base URL means, and what an error body says.

`parse_base_url` is the one reading of `--host`: `http://h:p`, `http://h:p/` and `http://h:p/v1` all mean the server
root `http://h:p`; a URL without a scheme (`127.0.0.1:8000`) is one clear error, not `unknown url type`.
`find_free_port`, `port_in_use` and `http_get` are the small local-network helpers the launcher, the gateway and
the tests share. `describe_body` turns an error body into a short message: the `message` of an OpenAI/vLLM JSON
error, the title of an HTML page (a proxy's or another web server's 404), or the first line of plain text.
"""

from __future__ import annotations

import html
import json
import os
import re
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlsplit

from vlab.core.errors import UserError

DEFAULT_HOST = os.environ.get("VLAB_HOST", "http://127.0.0.1:8000")
"""The server a run targets when neither `--host` nor the scenario's `api.host` says."""


@dataclass(frozen=True, slots=True)
class BaseURL:
    """A server root: scheme, host, port and an optional path prefix (never ending in `/` or `/v1`)."""

    scheme: str
    host: str
    port: int
    prefix: str
    explicit_port: bool

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    @property
    def root(self) -> str:
        """`scheme://host[:port]prefix`, as the user would write it."""
        netloc = f"{self.host}:{self.port}" if self.explicit_port else self.host
        return f"{self.scheme}://{netloc}{self.prefix}"

    @property
    def host_header(self) -> str:
        return f"{self.host}:{self.port}" if self.explicit_port else self.host


def parse_base_url(url: str) -> BaseURL:
    """Read a server base URL; raise `UserError` (one line) when it is not `http(s)://host[:port][/prefix]`."""
    text = url.strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        hint = f" (did you mean http://{text}?)" if "://" not in text and text else ""
        raise UserError(
            f"invalid server URL {url!r}: expected http://host:port or https://host:port{hint}", exit_code=2
        )
    try:
        port = parts.port
    except ValueError:
        raise UserError(f"invalid server URL {url!r}: the port is not a number from 1 to 65535", exit_code=2) from None
    prefix = parts.path.rstrip("/")
    if prefix.endswith("/v1"):
        prefix = prefix[:-3]
    default = 443 if parts.scheme == "https" else 80
    return BaseURL(parts.scheme, parts.hostname, port or default, prefix, port is not None)


def normalize_base_url(url: str) -> str:
    """The server root of `url` as a string (see `parse_base_url`)."""
    return parse_base_url(url).root


_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)


def describe_body(body: bytes, limit: int = 300) -> str:
    """The human part of an error body: an OpenAI/vLLM `{"error": {"message": ...}}` (or `{"message"}`,
    `{"detail"}`), an HTML page's title, or the first line of the text; "(empty body)" when there is none."""
    text = body.decode("utf-8", "replace").strip()
    if text.startswith("data:"):
        text = text[5:].strip()
    if not text:
        return "(empty body)"
    try:
        obj = json.loads(text)
    except ValueError:
        obj = None
    if isinstance(obj, dict):
        err = obj.get("error", obj)
        if isinstance(err, dict):
            for key in ("message", "detail"):
                if err.get(key):
                    return str(err[key])[:limit]
        if isinstance(err, str):
            return err[:limit]
        if obj.get("detail"):
            return str(obj["detail"])[:limit]
        return text[:limit]
    if text[:200].lower().lstrip().startswith(("<!doctype html", "<html")) or b"<title" in body[:2000].lower():
        match = _TITLE.search(body[:20000])
        title = " ".join(html.unescape(match.group(1).decode("utf-8", "replace")).split()) if match else ""
        return f"an HTML page{': ' + title if title else ''} (not an OpenAI-compatible error)"[:limit]
    return text.splitlines()[0][:limit]


def find_free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that is free right now (the OS picks it; a small race with other processes remains)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    """True if something already accepts connections on host:port (or the port cannot be bound)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def http_get(url: str, timeout_s: float = 2.0) -> tuple[int, bytes]:
    """GET `url`; returns (status, body). Status 0 means no HTTP answer (refused, reset, timed out)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), b""
    except (urllib.error.URLError, OSError, TimeoutError):
        return 0, b""
