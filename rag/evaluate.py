"""Retrieval evaluation: hit rate@k and mean retrieval latency for each chunking strategy and chunk size.

Each configuration is ingested into its own collection in a temporary store; a question is a hit at k when one of
its top-k chunks comes from the labelled file and page.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rag.chunking import validate
from rag.embedding import embedding_function
from rag.ingest import ingest
from rag.retrieval import Retriever
from vlab.core.datasets import Question, load_questions
from vlab.core.errors import UserError

SAMPLE_DIR = Path(__file__).resolve().parent / "sample"
SAMPLE_PDFS = SAMPLE_DIR / "pdfs"
SAMPLE_QUESTIONS = SAMPLE_DIR / "questions.jsonl"
DEFAULT_CONFIGS = ("fixed:64", "fixed:128", "fixed:254", "paragraph:64", "paragraph:128", "paragraph:254")


@dataclass(frozen=True)
class EvalConfig:
    strategy: str
    chunk_tokens: int
    overlap: int

    @property
    def label(self) -> str:
        suffix = f"/{self.overlap}" if self.strategy == "fixed" else ""
        return f"{self.strategy} {self.chunk_tokens}{suffix}"

    @classmethod
    def parse(cls, spec: str) -> EvalConfig:
        """`strategy:chunk_tokens[:overlap]`; the overlap defaults to a fifth of the chunk (fixed only)."""
        parts = spec.split(":")
        try:
            strategy, tokens = parts[0], int(parts[1])
            overlap = int(parts[2]) if len(parts) > 2 else (tokens // 5 if strategy == "fixed" else 0)
            if len(parts) > 3:
                raise ValueError
            validate(strategy, tokens, overlap)
        except (IndexError, ValueError) as exc:
            detail = f": {exc}" if str(exc) else ""
            message = f"bad config {spec!r}, expected strategy:chunk_tokens[:overlap]{detail}"
            raise UserError(message, exit_code=2) from exc
        return cls(strategy, tokens, overlap)


@dataclass(frozen=True)
class EvalResult:
    config: EvalConfig
    chunks: int
    hit_rate: dict[int, float]  # k -> fraction of questions with the labelled page in the top k
    mean_latency_ms: float  # mean wall time of one retrieve() call, milliseconds
    p95_latency_ms: float
    ingest_s: float  # seconds to ingest the corpus with this configuration (model already loaded)


def hit_rates(retriever: Retriever, questions: list[Question], ks: list[int]) -> tuple[dict[int, float], list[float]]:
    """Hit rate per k, and each question's retrieval latency in milliseconds (one retrieve at max(ks))."""
    hits = dict.fromkeys(ks, 0)
    latencies_ms = []
    retriever.retrieve(questions[0].question, 1)  # warm-up
    for q in questions:
        started = time.perf_counter()
        chunks = retriever.retrieve(q.question, max(ks))
        latencies_ms.append((time.perf_counter() - started) * 1000)
        for k in ks:
            if any(c.source == q.file and c.page == q.page for c in chunks[:k]):
                hits[k] += 1
    return {k: hits[k] / len(questions) for k in ks}, latencies_ms


def evaluate(
    configs: list[EvalConfig], ks: list[int], *, pdfs: Path = SAMPLE_PDFS, questions_file: Path = SAMPLE_QUESTIONS
) -> list[EvalResult]:
    """Ingest `pdfs` once per configuration into a temporary store and measure retrieval on the questions."""
    questions = list(load_questions(questions_file, labelled=True).entries)
    embedding_function().load()  # keep the one-off model load out of the first configuration's ingest time
    results = []
    with tempfile.TemporaryDirectory(prefix="vlab-rag-eval-") as tmp:
        for index, config in enumerate(configs):
            name = f"eval{index}"
            report = ingest(
                [pdfs],
                db_dir=Path(tmp),
                collection=name,
                strategy=config.strategy,
                chunk_tokens=config.chunk_tokens,
                overlap=config.overlap,
            )
            if not report.ok:
                raise UserError(f"no PDF could be ingested from {pdfs}")
            retriever = Retriever(Path(tmp), name)
            rates, latencies = hit_rates(retriever, questions, ks)
            p95 = statistics.quantiles(latencies, n=20)[-1] if len(latencies) > 1 else latencies[0]
            results.append(
                EvalResult(config, retriever.count(), rates, statistics.fmean(latencies), p95, report.seconds)
            )
    return results


def format_table(results: list[EvalResult], ks: list[int]) -> str:
    """A plain-text table: one row per configuration."""
    header = ["config", "chunks", *[f"hit@{k}" for k in ks], "mean ms", "p95 ms", "ingest s"]
    rows = [
        [
            r.config.label,
            str(r.chunks),
            *[f"{r.hit_rate[k]:.2f}" for k in ks],
            f"{r.mean_latency_ms:.1f}",
            f"{r.p95_latency_ms:.1f}",
            f"{r.ingest_s:.2f}",
        ]
        for r in results
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
