"""Benchmark the RAG pipeline on this machine: ingest throughput (pages/s) and retrieval latency p50/p99 (ms).

Usage: `python -m rag.bench_rag [--pdfs DIR] [--queries N] [--strategy fixed|paragraph] [--chunk-tokens N]`.
The model load is timed separately and excluded from the throughput; ingest goes to a temporary store. Query
latency is one `Retriever.retrieve` call (embedding the question + HNSW search), after a warm-up query.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

from rag.chunking import DEFAULT_CHUNK_TOKENS, DEFAULT_OVERLAP, STRATEGIES
from rag.embedding import embedding_function
from rag.evaluate import SAMPLE_PDFS, SAMPLE_QUESTIONS
from rag.ingest import ingest
from rag.retrieval import Retriever
from vlab.core.datasets import load_questions


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100]."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pdfs", type=Path, default=SAMPLE_PDFS)
    parser.add_argument("--questions", type=Path, default=SAMPLE_QUESTIONS)
    parser.add_argument("--queries", type=int, default=200, help="retrieve calls to time (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="ingest repetitions, best-of (default: %(default)s)")
    parser.add_argument("--strategy", choices=STRATEGIES, default="fixed")
    parser.add_argument("--chunk-tokens", type=int, default=DEFAULT_CHUNK_TOKENS)
    parser.add_argument("-k", type=int, default=4)
    args = parser.parse_args()

    started = time.perf_counter()
    embedding_function().load()
    model_load_s = time.perf_counter() - started

    ingest_runs = []
    with tempfile.TemporaryDirectory(prefix="vlab-rag-bench-") as tmp:
        for round_ in range(args.rounds):
            report = ingest(
                [args.pdfs],
                db_dir=Path(tmp),
                collection=f"bench{round_}",
                strategy=args.strategy,
                chunk_tokens=args.chunk_tokens,
                overlap=DEFAULT_OVERLAP if args.strategy == "fixed" else 0,
            )
            ingest_runs.append((report.seconds, report.pages_ingested))
        seconds, pages = min(ingest_runs)
        retriever = Retriever(Path(tmp), "bench0")
        questions = [q.question for q in load_questions(args.questions).entries]
        retriever.retrieve(questions[0], args.k)  # warm-up
        latencies_ms = []
        for i in range(args.queries):
            t0 = time.perf_counter()
            retriever.retrieve(questions[i % len(questions)], args.k)
            latencies_ms.append((time.perf_counter() - t0) * 1000)
    result = {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "model_load_s": round(model_load_s, 2),
        "ingest_pages": pages,
        "ingest_s": round(seconds, 3),
        "ingest_pages_per_s": round(pages / seconds, 1),
        "strategy": f"{args.strategy}:{args.chunk_tokens}",
        "queries": args.queries,
        "k": args.k,
        "query_p50_ms": round(percentile(latencies_ms, 50), 1),
        "query_p99_ms": round(percentile(latencies_ms, 99), 1),
        "query_mean_ms": round(statistics.fmean(latencies_ms), 1),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
