"""Fixtures of the RAG tests (registered for all tests by tests/conftest.py): the sample collection, ingested once
per module, and a guard that makes chromadb's downloading default embedding function fail loudly (RAG test modules
use it for every test: `pytestmark = pytest.mark.usefixtures("no_default_embedding_function")`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rag.evaluate import SAMPLE_PDFS

SAMPLE_FILES = sorted(p.name for p in SAMPLE_PDFS.glob("*.pdf"))


@pytest.fixture(scope="module")
def no_default_embedding_function() -> Iterator[None]:
    """chromadb's default embedding function downloads a model: make any use of it fail loudly."""
    from chromadb.utils.embedding_functions import onnx_mini_lm_l6_v2

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("chromadb's default (downloading) embedding function was used")

    mp = pytest.MonkeyPatch()
    mp.setattr(onnx_mini_lm_l6_v2.ONNXMiniLM_L6_V2, "__call__", refuse)
    mp.setattr(onnx_mini_lm_l6_v2.ONNXMiniLM_L6_V2, "_download_model_if_not_exists", refuse, raising=False)
    yield
    mp.undo()


@pytest.fixture(scope="module")
def sample_db(tmp_path_factory: pytest.TempPathFactory, no_default_embedding_function: None) -> Path:
    from rag.ingest import ingest

    db = tmp_path_factory.mktemp("ragdb")
    report = ingest([SAMPLE_PDFS], db_dir=db, collection="sample")
    assert report.ok and report.count("ingested") == len(SAMPLE_FILES), report.files
    return db
