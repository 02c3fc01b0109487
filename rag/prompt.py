"""Grounded chat prompts: numbered context passages with (file, page) labels, and the sources list. Pure Python."""

from __future__ import annotations

from collections.abc import Sequence

from rag.retrieval import RetrievedChunk

SYSTEM_PROMPT = (
    "You answer questions about the documents in the context. Use only the context. "
    "After each fact, cite its source as (file, page N), exactly as labelled in the context. "
    "If the context does not contain the answer, say that you do not know. Be concise."
)


def cite(chunk: RetrievedChunk) -> str:
    """The citation label of a chunk: `(file, page N)`."""
    return f"({chunk.source}, page {chunk.page})"


def build_messages(question: str, chunks: Sequence[RetrievedChunk]) -> list[dict[str, str]]:
    """Chat messages (system + user) for an OpenAI-compatible chat completion, grounded in `chunks`."""
    context = "\n\n".join(f"[{i}] {cite(c)}\n{c.text.strip()}" for i, c in enumerate(chunks, start=1))
    user = f"Context:\n\n{context}\n\nQuestion: {question.strip()}\nAnswer with citations:"
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def format_sources(chunks: Sequence[RetrievedChunk]) -> list[str]:
    """One line per distinct (file, page), in retrieval order, with the best cosine distance seen for it."""
    best: dict[tuple[str, int], float] = {}
    for c in chunks:
        key = (c.source, c.page)
        best[key] = min(best.get(key, c.distance), c.distance)
    return [f"[{i}] {src}, page {page} (distance {d:.3f})" for i, ((src, page), d) in enumerate(best.items(), 1)]
