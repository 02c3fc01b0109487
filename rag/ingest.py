"""Ingesting PDFs into a chromadb collection: read, chunk, embed, store; skip unchanged files; report bad ones.

A file is identified by its resolved path. Its chunks carry a fingerprint (content SHA-256 plus chunking
settings): re-ingesting a file whose fingerprint is stored is a no-op, and a changed file (or new settings)
replaces all of that file's chunks. A file that cannot be read is reported with a one-line reason and skipped.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rag import DEFAULT_COLLECTION
from rag.chunking import DEFAULT_CHUNK_TOKENS, DEFAULT_OVERLAP, chunk_pages, validate
from rag.pdf import PdfSkipped, read_pdf
from rag.store import DEFAULT_DB_DIR, open_collection

Status = Literal["ingested", "unchanged", "skipped"]


@dataclass(frozen=True)
class FileResult:
    path: Path
    status: Status
    detail: str  # one line: counts for ingested files, the reason for skipped ones
    pages: int = 0
    chunks: int = 0


@dataclass
class IngestReport:
    files: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the whole batch, model load included

    def count(self, status: Status) -> int:
        return sum(1 for f in self.files if f.status == status)

    @property
    def pages_ingested(self) -> int:
        return sum(f.pages for f in self.files if f.status == "ingested")

    @property
    def ok(self) -> bool:
        """True if at least one file is now in the store (ingested now or already up to date)."""
        return any(f.status != "skipped" for f in self.files)


def find_pdfs(paths: Iterable[Path]) -> list[Path]:
    """Expand folders to the `*.pdf` files below them (sorted); files are kept whatever their suffix."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() == ".pdf" and p.is_file()))
        else:
            found.append(path)
    return list(dict.fromkeys(found))


def _fingerprint(sha256: str, strategy: str, chunk_tokens: int, overlap: int) -> str:
    return f"{sha256}:{strategy}:{chunk_tokens}:{overlap if strategy == 'fixed' else 0}"


def _stored_fingerprint(collection: Any, key: str) -> str | None:
    got = collection.get(where={"path": key}, limit=1, include=["metadatas"])
    metadatas = got.get("metadatas") or []
    return str(metadatas[0].get("fingerprint")) if metadatas else None


def ingest_file(collection: Any, path: Path, *, strategy: str, chunk_tokens: int, overlap: int) -> FileResult:
    """Ingest one PDF into `collection`; never raises for a bad PDF (returns a `skipped` result instead)."""
    key = str(path.resolve())
    if not path.exists():
        return FileResult(path, "skipped", "no such file")
    try:
        doc = read_pdf(path)
    except PdfSkipped as exc:
        return FileResult(path, "skipped", str(exc))
    fingerprint = _fingerprint(doc.sha256, strategy, chunk_tokens, overlap)
    if _stored_fingerprint(collection, key) == fingerprint:
        return FileResult(path, "unchanged", "already ingested with the same content and settings")
    chunks = chunk_pages(doc.pages, strategy, chunk_tokens, overlap)
    collection.delete(where={"path": key})
    if chunks:
        prefix = hashlib.sha1(key.encode()).hexdigest()[:16]
        collection.add(
            ids=[f"{prefix}:{i}" for i in range(len(chunks))],
            documents=[c.text for c in chunks],
            metadatas=[
                {
                    "source": path.name,
                    "path": key,
                    "page": c.page,
                    "chunk": i,
                    "section": c.section,
                    "sha256": doc.sha256,
                    "fingerprint": fingerprint,
                    "strategy": strategy,
                }
                for i, c in enumerate(chunks)
            ],
        )
    detail = f"{doc.num_pages} page(s), {len(doc.pages)} with text, {len(chunks)} chunk(s)"
    return FileResult(path, "ingested", detail, pages=doc.num_pages, chunks=len(chunks))


def ingest(
    paths: Iterable[Path],
    *,
    db_dir: Path = DEFAULT_DB_DIR,
    collection: str = DEFAULT_COLLECTION,
    strategy: str = "fixed",
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    overlap: int = DEFAULT_OVERLAP,
    on_file: Callable[[FileResult], None] | None = None,
) -> IngestReport:
    """Ingest PDFs (files or folders) into `collection` under `db_dir`. `on_file` is called after each file.

    Raises ValueError for invalid chunking settings; bad files are reported in the result, not raised.
    """
    validate(strategy, chunk_tokens, overlap)
    started = time.perf_counter()
    files = find_pdfs(paths)
    report = IngestReport()
    store = open_collection(db_dir, collection, create=True)
    for path in files:
        result = ingest_file(store, path, strategy=strategy, chunk_tokens=chunk_tokens, overlap=overlap)
        report.files.append(result)
        if on_file:
            on_file(result)
    report.seconds = time.perf_counter() - started
    return report
