"""Splitting page text into chunks. Two strategies, both per page (a chunk never spans pages, so it cites one page):

- `fixed`: windows of `chunk_tokens` model tokens that overlap by `overlap` tokens, cut at token boundaries and
  sliced from the original text via the tokenizer's character offsets.
- `paragraph`: section- and paragraph-aware. Blank lines separate paragraphs; a short line without final
  punctuation is a section heading, carried across pages and prefixed to each chunk of its section. Paragraphs of
  a section are packed up to `chunk_tokens`; a longer paragraph is split at sentence ends, a longer sentence into
  fixed windows.

Token counts use the embedding model's own tokenizer, so a chunk never exceeds what the model embeds (254 tokens).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from rag.embedding import MAX_CHUNK_TOKENS, count_tokens, tokenizer
from rag.pdf import PageText

Strategy = Literal["fixed", "paragraph"]
STRATEGIES: tuple[Strategy, ...] = ("fixed", "paragraph")
DEFAULT_CHUNK_TOKENS = 128
DEFAULT_OVERLAP = 24
MIN_CHUNK_TOKENS = 16


@dataclass(frozen=True)
class Chunk:
    text: str
    page: int  # 1-based page number
    section: str = ""


def validate(strategy: str, chunk_tokens: int, overlap: int) -> None:
    """Raise ValueError with a one-line message for settings that cannot work."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r} (choose from {', '.join(STRATEGIES)})")
    if not MIN_CHUNK_TOKENS <= chunk_tokens <= MAX_CHUNK_TOKENS:
        limits = f"{MIN_CHUNK_TOKENS} and {MAX_CHUNK_TOKENS}"
        raise ValueError(f"--chunk-tokens must be between {limits}, got {chunk_tokens}")
    if not 0 <= overlap < chunk_tokens:
        raise ValueError(f"--overlap must be >= 0 and smaller than --chunk-tokens ({chunk_tokens}), got {overlap}")


def token_windows(text: str, chunk_tokens: int, overlap: int) -> list[str]:
    """Cut `text` into windows of at most `chunk_tokens` tokens, consecutive windows sharing `overlap` tokens."""
    encoding = tokenizer().encode(text, add_special_tokens=False)
    offsets = encoding.offsets
    if not offsets:
        return []
    step = chunk_tokens - overlap
    windows = []
    for start in range(0, len(offsets), step):
        end = min(start + chunk_tokens, len(offsets))
        windows.append(text[offsets[start][0] : offsets[end - 1][1]].strip())
        if end == len(offsets):
            break
    return [w for w in windows if w]


def chunk_fixed(pages: Iterable[PageText], chunk_tokens: int, overlap: int) -> list[Chunk]:
    return [
        Chunk(window, page.number)
        for page in pages
        for window in token_windows(_join_lines(page.text), chunk_tokens, overlap)
    ]


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def _join_lines(text: str) -> str:
    """Unwrap lines inside paragraphs (re-joining words hyphenated at a line end); keep blank lines."""
    paragraphs = []
    for block in text.split("\n\n"):
        out = ""
        for line in block.splitlines():
            if not out:
                out = line
            elif out.endswith("-") and line[:1].islower():
                out += line
            else:
                out += " " + line
        paragraphs.append(out)
    return "\n\n".join(paragraphs)


def _is_heading(paragraph: str) -> bool:
    return "\n" not in paragraph and len(paragraph) <= 80 and not paragraph.rstrip().endswith((".", ":", ";", ",", "?"))


def _split_long(paragraph: str, budget: int) -> list[str]:
    """Split a paragraph over `budget` tokens at sentence ends, and a sentence over budget into token windows."""
    pieces: list[str] = []
    current = ""
    for sentence in _SENTENCE_END.split(paragraph):
        if count_tokens(sentence) > budget:
            if current:
                pieces.append(current)
                current = ""
            pieces.extend(token_windows(sentence, budget, 0))
            continue
        candidate = f"{current} {sentence}".strip()
        if current and count_tokens(candidate) > budget:
            pieces.append(current)
            current = sentence
        else:
            current = candidate
    if current:
        pieces.append(current)
    return pieces


def _section_chunk(section: str, buffer: list[str], page: int) -> Chunk:
    body = "\n\n".join(buffer)
    return Chunk(f"{section}\n\n{body}" if section else body, page, section)


def chunk_paragraphs(pages: Iterable[PageText], chunk_tokens: int) -> list[Chunk]:
    chunks: list[Chunk] = []
    section = ""
    for page in pages:
        buffer: list[str] = []
        for raw in _join_lines(page.text).split("\n\n"):
            paragraph = raw.strip()
            if not paragraph:
                continue
            if _is_heading(paragraph):
                if buffer:
                    chunks.append(_section_chunk(section, buffer, page.number))
                    buffer = []
                section = paragraph
                continue
            budget = max(MIN_CHUNK_TOKENS, chunk_tokens - (count_tokens(section) + 1 if section else 0))
            for piece in _split_long(paragraph, budget) if count_tokens(paragraph) > budget else [paragraph]:
                if buffer and count_tokens("\n\n".join([*buffer, piece])) > budget:
                    chunks.append(_section_chunk(section, buffer, page.number))
                    buffer = []
                buffer.append(piece)
        if buffer:
            chunks.append(_section_chunk(section, buffer, page.number))
    return chunks


def chunk_pages(pages: list[PageText], strategy: str, chunk_tokens: int, overlap: int) -> list[Chunk]:
    """Chunk a document's pages with the named strategy (`overlap` applies to `fixed` only)."""
    validate(strategy, chunk_tokens, overlap)
    if strategy == "fixed":
        return chunk_fixed(pages, chunk_tokens, overlap)
    return chunk_paragraphs(pages, chunk_tokens)
