"""`vlab rag ingest|ask|eval`: the RAG pipeline's command line. Heavy imports happen inside the commands.

Exit codes: 0 success; 1 nothing could be done (every PDF skipped, server unreachable, no store yet);
2 invalid arguments. `ingest` exits 0 when at least one file is in the store afterwards (ingested now or
unchanged), even if others were skipped: each skipped file gets one line on stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rag import DEFAULT_COLLECTION
from vlab.core.errors import UserError

DEFAULT_K = 4


def _db_args(parser: argparse.ArgumentParser) -> None:
    from rag.store import DEFAULT_DB_DIR

    parser.add_argument("--db", type=Path, default=DEFAULT_DB_DIR, help="chromadb folder (default: %(default)s)")
    parser.add_argument("--collection", default=DEFAULT_COLLECTION, help="collection name (default: %(default)s)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _k_list(text: str) -> list[int]:
    try:
        ks = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 1,3,5, got {text!r}") from None
    if not ks or ks[0] < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers such as 1,3,5, got {text!r}")
    return ks


def add_subcommand(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `rag` with its `ingest`, `ask` and `eval` subcommands to the `vlab` parser."""
    from rag.answer import DEFAULT_MAX_TOKENS
    from rag.chunking import DEFAULT_CHUNK_TOKENS, DEFAULT_OVERLAP, STRATEGIES
    from rag.evaluate import DEFAULT_CONFIGS, SAMPLE_PDFS, SAMPLE_QUESTIONS
    from vlab.client.http import DEFAULT_HOST

    rag = subparsers.add_parser("rag", help="PDF retrieval-augmented generation against the server")
    commands = rag.add_subparsers(dest="rag_command", required=True, metavar="{ingest,ask,eval}")

    ingest = commands.add_parser("ingest", help="read, chunk, embed and store PDFs (files or folders)")
    ingest.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    _db_args(ingest)
    ingest.add_argument("--strategy", choices=STRATEGIES, default="fixed", help="chunking (default: %(default)s)")
    ingest.add_argument("--chunk-tokens", type=int, default=DEFAULT_CHUNK_TOKENS, help="max tokens per chunk, 16-254")
    ingest.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP, help="tokens shared by fixed windows")
    ingest.set_defaults(func=run_ingest)

    ask = commands.add_parser("ask", help="answer a question from the ingested PDFs, streaming, with sources")
    ask.add_argument("question")
    _db_args(ask)
    ask.add_argument("-H", "--host", default=DEFAULT_HOST, help="server URL (default: %(default)s, env VLAB_HOST)")
    ask.add_argument("--model", help="model name (default: the first id at /v1/models)")
    ask.add_argument(
        "-k",
        "--top-k",
        dest="k",
        type=_positive_int,
        default=DEFAULT_K,
        help="chunks to retrieve (default: %(default)s)",
    )
    ask.add_argument("--max-tokens", type=_positive_int, default=DEFAULT_MAX_TOKENS, help="answer length cap")
    ask.set_defaults(func=run_ask)

    evaluate = commands.add_parser("eval", help="retrieval hit rate@k and latency per chunking configuration")
    evaluate.add_argument(
        "-k",
        "--top-k",
        "--k",
        dest="k",
        type=_k_list,
        default=[1, 3, 5],
        help="comma-separated k values (default: 1,3,5)",
    )
    evaluate.add_argument(
        "-o", "--output", "--out", dest="out", type=Path, help="HTML report path (default: reports/rag-eval.html)"
    )
    evaluate.add_argument(
        "--configs",
        default=",".join(DEFAULT_CONFIGS),
        help="comma-separated strategy:chunk_tokens[:overlap] (default: %(default)s)",
    )
    evaluate.add_argument("--pdfs", type=Path, default=SAMPLE_PDFS, help="corpus folder (default: the sample)")
    evaluate.add_argument("--questions", type=Path, default=SAMPLE_QUESTIONS, help="labelled questions, JSON lines")
    evaluate.set_defaults(func=run_eval)


def run_ingest(args: argparse.Namespace) -> int:
    from rag.chunking import validate
    from rag.ingest import FileResult, find_pdfs, ingest

    try:
        validate(args.strategy, args.chunk_tokens, args.overlap)
    except ValueError as exc:
        raise UserError(str(exc), exit_code=2) from exc
    missing_dirs = [p for p in args.paths if p.is_dir() and not find_pdfs([p])]
    if missing_dirs and len(missing_dirs) == len(args.paths):
        raise UserError(f"no .pdf files under {', '.join(map(str, missing_dirs))}", exit_code=2)

    def show(result: FileResult) -> None:
        if result.status == "skipped":
            print(f"vlab rag ingest: skipped {result.path}: {result.detail}", file=sys.stderr, flush=True)
        else:
            print(f"{result.status:9} {result.path}: {result.detail}", flush=True)

    report = ingest(
        args.paths,
        db_dir=args.db,
        collection=args.collection,
        strategy=args.strategy,
        chunk_tokens=args.chunk_tokens,
        overlap=args.overlap,
        on_file=show,
    )
    print(
        f"{report.count('ingested')} ingested, {report.count('unchanged')} unchanged, "
        f"{report.count('skipped')} skipped in {report.seconds:.1f} s -> {args.db} [{args.collection}]"
    )
    if not report.ok:
        raise UserError("no PDF could be ingested")
    return 0


def run_ask(args: argparse.Namespace) -> int:
    from rag.answer import first_model, stream_answer
    from rag.prompt import build_messages, format_sources
    from rag.retrieval import Retriever
    from vlab.client.openai_sdk import make_client

    question = args.question.strip()
    if not question:
        raise UserError("the question is empty", exit_code=2)
    client = make_client(args.host)
    model = args.model or first_model(client)  # fails fast on a dead server, before loading the embedding model
    retriever = Retriever(args.db, args.collection)
    chunks = retriever.retrieve(question, args.k)
    if not chunks:
        raise UserError(f"collection {args.collection!r} in {args.db} is empty: ingest some PDFs first")
    wrote = False
    for piece in stream_answer(client, model, build_messages(question, chunks), max_tokens=args.max_tokens):
        sys.stdout.write(piece)
        sys.stdout.flush()
        wrote = True
    if not wrote:
        print("(the model returned an empty answer)", end="")
    print("\n\nSources:")
    for line in format_sources(chunks):
        print(f"  {line}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from rag.evaluate import EvalConfig, evaluate, format_table
    from rag.report import write_report
    from vlab.core.datasets import load_questions
    from vlab.core.paths import REPORTS_DIR

    configs = [EvalConfig.parse(spec.strip()) for spec in args.configs.split(",") if spec.strip()]
    if not configs:
        raise UserError("--configs is empty", exit_code=2)
    if not args.pdfs.is_dir():
        raise UserError(f"--pdfs must be a folder of PDFs: {args.pdfs}", exit_code=2)
    questions = load_questions(args.questions, labelled=True)
    print(questions.summary.line(), file=sys.stderr)
    results = evaluate(configs, args.k, pdfs=args.pdfs, questions_file=args.questions)
    print(format_table(results, args.k))
    out = write_report(
        args.out or REPORTS_DIR / "rag-eval.html",
        results,
        args.k,
        questions=len(questions.entries),
        corpus=str(args.pdfs),
    )
    print(f"report: {out}")
    return 0
