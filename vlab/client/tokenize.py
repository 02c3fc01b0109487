"""Where exact prompt lengths come from: the server's `/tokenize` (vLLM), a local tokenizer, or nothing.

`choose_tokenizer` picks, in order: a tokenizer the scenario names (`api.tokenizer`: a tokenizer.json or a model
folder), the server's `/tokenize`, the served model's folder when the server says where it is and it exists here,
and else `None` — the workload then approximates lengths and every surface says so ("approximate").

A local tokenizer counts like vLLM's `/tokenize`: a completions prompt with the tokenizer's special tokens added,
a chat request through the model's chat template with the generation prompt. It is loaded with `transformers`
(offline: local files only); the chat template comes from the folder's `tokenizer_config.json` or
`chat_template.jinja`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from vlab.client.api import Credentials, ServerInfo, ServerTokenizer, has_tokenize, local_tokenizer_folder
from vlab.core.errors import ConfigError, UserError


class TokenCounter(Protocol):
    """What exact-length synthetic prompts need from a tokenizer."""

    source: str

    def token_strs(self, text: str) -> list[str]: ...

    def count_prompt(self, text: str) -> int: ...

    def count_chat(self, messages: list[dict[str, Any]]) -> int: ...


class LocalTokenizer:
    """A Hugging Face tokenizer from a local folder (tokenizer.json + tokenizer_config.json), no network."""

    def __init__(self, folder: Path) -> None:
        try:
            from transformers import AutoTokenizer
        except ImportError:
            raise UserError("a local tokenizer needs the `transformers` package in the client environment") from None
        try:
            self._tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"api.tokenizer: cannot load a tokenizer from {folder}: {str(exc).splitlines()[0]}"
            ) from None
        self.source = f"local tokenizer {folder}"

    def token_strs(self, text: str) -> list[str]:
        return [str(t) for t in self._tok.convert_ids_to_tokens(self._tok(text)["input_ids"])]

    def count_prompt(self, text: str) -> int:
        return len(self._tok(text)["input_ids"])

    def count_chat(self, messages: list[dict[str, Any]]) -> int:
        if not getattr(self._tok, "chat_template", None):
            raise ConfigError(f"{self.source} has no chat template: use api.endpoint: completions, or another folder")
        ids: Any = self._tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if not isinstance(ids, list):  # transformers 5 returns a BatchEncoding (a UserDict, not a dict): its ids
            ids = ids["input_ids"]
        if ids and isinstance(ids[0], list):  # a batch of one conversation
            ids = ids[0]
        return len(ids)


def choose_tokenizer(server: ServerInfo, tokenizer_path: str | None, creds: Credentials | None) -> TokenCounter | None:
    """The tokenizer for exact prompt lengths (see the module docstring), or None to approximate."""
    if tokenizer_path:
        folder = local_tokenizer_folder(tokenizer_path)
        if folder is None:
            raise ConfigError(f"api.tokenizer: {tokenizer_path} is neither a tokenizer.json nor a folder holding one")
        return LocalTokenizer(folder)
    if has_tokenize(server.base_url, server.model, creds):
        return ServerTokenizer(server.base_url, server.model, creds)
    if server.root:
        folder = local_tokenizer_folder(server.root)
        if folder is not None:
            return LocalTokenizer(folder)
    return None
