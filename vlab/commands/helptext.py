"""Module docstrings as `--help` text: the Markdown the docs keep (code spans, bold, tables) turned into plain text.

`plain(doc)` drops backticks and `**`, unescapes `\\|`, drops table separator rows and aligns the cells of each table
in columns, so `vlab sweep --help` reads like Locust's and vLLM's help, with no raw Markdown.
"""

from __future__ import annotations

import re

_CODE = re.compile(r"`([^`]*)`")
_BOLD = re.compile(r"\*\*([^*]+)\*\*")
_LINK = re.compile(r"\[([^\]]+)\]\([^)]+\)")
_SEPARATOR = re.compile(r"^\|\s*:?-{3,}")


def _inline(text: str) -> str:
    return _LINK.sub(r"\1", _BOLD.sub(r"\1", _CODE.sub(r"\1", text)))


def _cells(row: str) -> list[str]:
    parts = re.split(r"(?<!\\)\|", row.strip())[1:-1]
    return [_inline(p.strip().replace("\\|", "|")) for p in parts]


def _table(rows: list[str]) -> list[str]:
    body = [_cells(r) for r in rows if not _SEPARATOR.match(r.strip())]
    widths = [max(len(r[i]) for r in body if i < len(r)) for i in range(max(len(r) for r in body))]
    out = []
    for i, cells in enumerate(body):
        line = "  ".join(c.ljust(widths[j]) for j, c in enumerate(cells[:-1])) + "  " + cells[-1]
        out.append("  " + line.rstrip())
        if i == 0:
            out.append("  " + "  ".join("-" * w for w in widths))
    return out


def plain(doc: str | None) -> str:
    """`doc` as plain help text (see the module docstring)."""
    lines = (doc or "").strip("\n").splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        if lines[i].lstrip().startswith("|"):
            j = i
            while j < len(lines) and lines[j].lstrip().startswith("|"):
                j += 1
            out += _table(lines[i:j])
            i = j
            continue
        out.append(_inline(lines[i].replace("\\|", "|")))
        i += 1
    return "\n".join(out)
