"""Reading PDFs page by page with pypdf, and telling apart the ways a file can be unusable."""

from __future__ import annotations

import hashlib
import io
import logging
import re
from dataclasses import dataclass
from pathlib import Path


class PdfSkipped(Exception):
    """A PDF that cannot be ingested; the message is one line saying why (corrupt, encrypted, no text...)."""


@dataclass(frozen=True)
class PageText:
    """The text of one page; `number` is 1-based, as a reader would cite it."""

    number: int
    text: str


@dataclass(frozen=True)
class PdfDocument:
    path: Path
    sha256: str
    num_pages: int
    pages: list[PageText]  # only pages with text


_SPACES = re.compile(r"[ \t\u00a0]+")
_BLANK_RUN = re.compile(r"\n{3,}")


def normalise_page_text(raw: str) -> str:
    """Collapse layout padding: single spaces inside lines, at most one blank line between paragraphs."""
    lines = [_SPACES.sub(" ", line).strip() for line in raw.splitlines()]
    return _BLANK_RUN.sub("\n\n", "\n".join(lines)).strip()


def _extract(page: object) -> str:
    # Layout mode keeps blank lines between paragraphs (needed by the paragraph chunker); plain mode is the fallback.
    try:
        return page.extract_text(extraction_mode="layout")  # type: ignore[attr-defined]
    except Exception:
        return page.extract_text() or ""  # type: ignore[attr-defined]


def read_pdf(path: Path) -> PdfDocument:
    """Read every page's text. Raises `PdfSkipped` for an empty, corrupt, encrypted or text-less file."""
    import pypdf
    from pypdf.errors import PdfReadError

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # pypdf warns on recoverable damage; we report per file
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PdfSkipped(f"cannot read file: {exc.strerror or exc}") from exc
    if not data:
        raise PdfSkipped("empty file (0 bytes)")
    if not data.lstrip()[:5].startswith(b"%PDF-"):
        raise PdfSkipped("not a PDF (no %PDF- header)")
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            try:
                unlocked = reader.decrypt("")  # an owner-password-only file opens with the empty user password
            except Exception as exc:
                raise PdfSkipped(f"encrypted and cannot be opened ({exc})") from exc
            if not unlocked:
                raise PdfSkipped("encrypted (password-protected)")
        num_pages = len(reader.pages)
        pages = []
        for index, page in enumerate(reader.pages):
            text = normalise_page_text(_extract(page))
            if text:
                pages.append(PageText(index + 1, text))
    except PdfSkipped:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, IndexError, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PdfSkipped(f"corrupt PDF ({reason})") from exc
    if num_pages == 0:
        raise PdfSkipped("PDF has no pages")
    if not pages:
        raise PdfSkipped(f"no extractable text on {num_pages} page(s) (image-only or scanned? OCR it first)")
    return PdfDocument(path=path, sha256=hashlib.sha256(data).hexdigest(), num_pages=num_pages, pages=pages)
