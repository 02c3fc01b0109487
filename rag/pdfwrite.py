"""A minimal, dependency-free PDF writer: text pages in the standard Helvetica fonts, and image-only pages.

Enough for the sample corpus and for test fixtures (pages with no extractable text). Text must be Latin-1; lines are
wrapped by a character budget, not by glyph widths, which is fine for Helvetica at the sizes used here.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path

PAGE_WIDTH_PT = 612  # US Letter, in PDF points (1/72 inch)
PAGE_HEIGHT_PT = 792
MARGIN_PT = 72
BODY_SIZE_PT = 11
HEADING_SIZE_PT = 15
WRAP_CHARS = 88  # characters per body line at 11 pt Helvetica within the margins


@dataclass
class Page:
    """One page: an optional heading and paragraphs of body text. `drawing_only` makes a page with no text at all."""

    heading: str = ""
    paragraphs: list[str] = field(default_factory=list)
    drawing_only: bool = False


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def _content_stream(page: Page) -> bytes:
    if page.drawing_only:
        # A filled grey rectangle and a stroked frame: something visible, nothing extractable.
        return b"0.6 g 100 300 400 300 re f 0 G 2 w 90 290 420 320 re S"
    ops: list[str] = ["BT"]
    y: float = PAGE_HEIGHT_PT - MARGIN_PT
    if page.heading:
        ops.append(f"/F2 {HEADING_SIZE_PT} Tf 1 0 0 1 {MARGIN_PT} {y} Tm ({_escape(page.heading)}) Tj")
        y -= HEADING_SIZE_PT * 2
    leading = BODY_SIZE_PT * 1.4
    for paragraph in page.paragraphs:
        for line in textwrap.wrap(paragraph, WRAP_CHARS):
            ops.append(f"/F1 {BODY_SIZE_PT} Tf 1 0 0 1 {MARGIN_PT} {y:.1f} Tm ({_escape(line)}) Tj")
            y -= leading
        y -= leading  # a blank line between paragraphs
    ops.append("ET")
    return "\n".join(ops).encode("latin-1")


def write_pdf(path: Path, pages: list[Page], *, title: str = "") -> Path:
    """Write `pages` as a PDF file at `path` and return the path."""
    objects: list[bytes] = []  # object n is objects[n - 1]

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    catalog = add(b"")  # filled in once the page tree exists
    pages_obj = add(b"")
    font_regular = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    font_bold = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>")
    kids: list[int] = []
    for page in pages:
        stream = _content_stream(page)
        content = add(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
        kids.append(
            add(
                (
                    f"<< /Type /Page /Parent {pages_obj} 0 R /MediaBox [0 0 {PAGE_WIDTH_PT} {PAGE_HEIGHT_PT}] "
                    f"/Resources << /Font << /F1 {font_regular} 0 R /F2 {font_bold} 0 R >> >> "
                    f"/Contents {content} 0 R >>"
                ).encode()
            )
        )
    objects[catalog - 1] = f"<< /Type /Catalog /Pages {pages_obj} 0 R >>".encode()
    kid_refs = " ".join(f"{k} 0 R" for k in kids)
    objects[pages_obj - 1] = f"<< /Type /Pages /Kids [{kid_refs}] /Count {len(kids)} >>".encode()
    info = add(f"<< /Title ({_escape(title)}) /Producer (vllm-inference-lab rag.pdfwrite) >>".encode("latin-1"))

    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets: list[int] = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref_at = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root %d 0 R /Info %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        catalog,
        info,
        xref_at,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(out))
    return path
