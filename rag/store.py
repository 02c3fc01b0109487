"""The on-disk chromadb store: where it lives and how collections are opened (always with our embedding function)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from rag.embedding import embedding_function
from vlab.core.errors import UserError
from vlab.core.paths import CACHE_DIR

DEFAULT_DB_DIR = CACHE_DIR / "rag"
_SQLITE_FILE = "chroma.sqlite3"
_COLLECTION_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9._-]{1,510}[a-zA-Z0-9]")


def client(db_dir: Path) -> Any:
    """A persistent chromadb client rooted at `db_dir`, telemetry off."""
    import chromadb
    from chromadb.config import Settings

    db_dir.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=str(db_dir), settings=Settings(anonymized_telemetry=False))


def open_collection(db_dir: Path, name: str, *, create: bool) -> Any:
    """Open collection `name` in `db_dir` with the bundled embedding function (cosine distance).

    With `create=False` a missing store or collection is a `UserError` telling the user to ingest first.
    """
    if not _COLLECTION_NAME.fullmatch(name):
        raise UserError(
            f"bad collection name {name!r}: 3-512 characters from a-z A-Z 0-9 . _ -, starting and ending with a "
            "letter or digit",
            exit_code=2,
        )
    if not create and not (db_dir / _SQLITE_FILE).exists():
        raise UserError(f"no RAG store at {db_dir}: run `vlab rag ingest PDF...` first")
    ef = embedding_function()
    chroma = client(db_dir)
    if create:
        return chroma.get_or_create_collection(
            name=name, embedding_function=ef, configuration={"hnsw": {"space": "cosine"}}
        )
    from chromadb.errors import NotFoundError

    try:
        return chroma.get_collection(name=name, embedding_function=ef)
    except (NotFoundError, ValueError) as exc:
        raise UserError(
            f"no collection {name!r} in {db_dir}: run `vlab rag ingest PDF... --collection {name}` first"
        ) from exc
