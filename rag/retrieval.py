"""Retrieval: the top-k chunks for a question. The API a Locust user calls; see `Retriever`."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from rag import DEFAULT_COLLECTION


@dataclass(frozen=True)
class RetrievedChunk:
    """One retrieved chunk. `distance` is the cosine distance (0 = same direction, 2 = opposite); lower is closer."""

    text: str
    source: str  # the PDF's file name, as cited
    page: int  # 1-based
    distance: float
    path: str = ""  # the PDF's resolved path at ingest time
    section: str = ""


class Retriever:
    """Query a collection built by `vlab rag ingest`.

    Construction opens the store and loads the embedding model (a few seconds, once per process: the model is
    shared between instances). `retrieve` is thread-safe; calls are serialised by a lock because the embedding
    forward pass is CPU-bound anyway. Under gevent, a call blocks the hub for its duration (~10-20 ms on this
    machine): give a load test's retrieval its own process if that matters.
    """

    def __init__(self, db_dir: Path | str | None = None, collection: str = DEFAULT_COLLECTION) -> None:
        from rag.embedding import embedding_function
        from rag.store import DEFAULT_DB_DIR, open_collection

        self.db_dir = Path(db_dir) if db_dir is not None else DEFAULT_DB_DIR
        self.collection_name = collection
        self._collection = open_collection(self.db_dir, collection, create=False)
        embedding_function().load()  # the model is shared per process: pay its load here, not in a retrieve()
        self._lock = threading.Lock()

    def count(self) -> int:
        """Number of chunks in the collection."""
        with self._lock:
            return int(self._collection.count())

    def retrieve(self, question: str, k: int = 4) -> list[RetrievedChunk]:
        """The `k` chunks closest to `question`, closest first (fewer if the collection is smaller)."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        with self._lock:
            result = self._collection.query(
                query_texts=[question], n_results=k, include=["documents", "metadatas", "distances"]
            )
        documents = (result.get("documents") or [[]])[0]
        metadatas = (result.get("metadatas") or [[]])[0]
        distances = (result.get("distances") or [[]])[0]
        return [
            RetrievedChunk(
                text=str(doc),
                source=str(meta.get("source", "?")),
                page=int(meta.get("page", 0)),
                distance=float(dist),
                path=str(meta.get("path", "")),
                section=str(meta.get("section", "")),
            )
            for doc, meta, dist in zip(documents, metadatas, distances, strict=True)
        ]
