"""The RAG load user: retrieve context for a question, then stream a grounded answer, timing both.

Retrieval runs in gevent's thread pool (a real OS thread), so embedding a question never stalls the hub that
stamps other users' tokens; its duration is recorded as `retrieval_ms`, separately from TTFT and ITL, and the
prompt length is the server's `usage.prompt_tokens` of the real retrieved context. The retriever (embedding model
and chromadb collection) is opened once per process at test start, ingesting `data.rag.corpus` if needed.
"""

from __future__ import annotations

import time

import gevent
from locust import task

from vlab.core.errors import UserError
from vlab.core.scenario import RagConfig
from vlab.locust.context import RunContext
from vlab.locust.user import LLMUser, Request
from vlab.locust.workload import PreparedRequest

_RETRIEVERS: dict[tuple[str, str], object] = {}


def open_retriever(rag: RagConfig):
    """The process's retriever for `rag` (ingesting the corpus first when one is given; unchanged files are
    skipped, so this is quick after the first run)."""
    from rag.ingest import ingest
    from rag.retrieval import Retriever
    from rag.store import DEFAULT_DB_DIR

    db = rag.db or DEFAULT_DB_DIR
    key = (str(db), rag.collection)
    if key not in _RETRIEVERS:
        if rag.corpus is not None:
            report = ingest([rag.corpus], db_dir=db, collection=rag.collection)
            if not any(r.status in ("ingested", "unchanged") for r in report.files):
                raise UserError(f"data.rag.corpus: nothing could be ingested from {rag.corpus}")
        retriever = Retriever(db, rag.collection)
        if retriever.count() == 0:
            raise UserError(f"data.rag: collection {rag.collection!r} in {db} is empty; set data.rag.corpus")
        _RETRIEVERS[key] = retriever
    return _RETRIEVERS[key]


class RagUser(LLMUser):
    """Closed loop: a question, its retrieval, its grounded streamed answer; then the next question."""

    @classmethod
    def prepare(cls, ctx: RunContext) -> None:
        """Open the retriever once per process, before any load clock starts (ingesting the corpus if needed)."""
        rag = ctx.scenario.data.rag
        if rag is None:
            raise UserError("locustfiles/rag_load.py needs a scenario with a data.rag section (see scenarios/rag.yaml)")
        if ctx.scenario.api.endpoint != "chat":
            raise UserError("data.rag needs api.endpoint: chat")
        open_retriever(rag)

    def on_start(self) -> None:
        super().on_start()
        rag = self.ctx.scenario.data.rag
        assert rag is not None
        self.rag = rag
        self.retriever = open_retriever(rag)

    def next_request(self, history: list[dict[str, str]] | None = None) -> PreparedRequest:
        raise NotImplementedError("RagUser builds its requests in generate()")

    @task
    def generate(self) -> None:
        from rag.prompt import build_messages

        ctx = self.ctx
        factory = ctx.factory
        if factory is None:
            self.stop()
            return
        ctx.tracker.gate.wait()
        question = factory.next_question()
        t0 = time.perf_counter()
        chunks = gevent.get_hub().threadpool.apply(self.retriever.retrieve, (question, self.rag.k))
        retrieval_ms = (time.perf_counter() - t0) * 1000.0
        prepared = factory.build_messages(build_messages(question, chunks), factory.draw_max_tokens())
        sent = self.send(Request(prepared, self.user_index, ctx.tracker.current, retrieval_ms=retrieval_ms))
        self._back_off_if_unreachable(sent.raw)
