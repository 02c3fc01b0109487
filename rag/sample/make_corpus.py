"""Generate the sample corpus: four short PDFs about LLM serving, several pages each, distinct facts per page.

The texts are original and written for this project; numbers are illustrative but self-consistent. Run
`python -m rag.sample.make_corpus` to (re)write `rag/sample/pdfs/`. `questions.jsonl` beside this file labels
which file and page answers each question, so keep the two in step when editing a text.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rag.pdfwrite import Page, write_pdf

PDF_DIR = Path(__file__).resolve().parent / "pdfs"

CORPUS: dict[str, tuple[str, list[Page]]] = {
    "kv_cache.pdf": (
        "The KV Cache in Transformer Serving",
        [
            Page(
                "1. What the KV cache stores",
                [
                    "During autoregressive generation a transformer attends from the newest token to every earlier "
                    "token. Recomputing the key and value projections of the whole history at every step would make "
                    "each step cost grow with the sequence length. The key-value cache, or KV cache, keeps the key and "
                    "value tensors of every past token in every attention layer, so that a decode step only computes "
                    "the projections of the single new token and appends them.",
                    "The cache is per request: two requests never share entries unless the server implements prefix "
                    "sharing. Its size grows linearly with the number of tokens held, which is why long contexts and "
                    "many concurrent requests are limited by accelerator memory rather than by arithmetic.",
                ],
            ),
            Page(
                "2. Sizing the cache",
                [
                    "The bytes needed per token are 2 x layers x kv_heads x head_dim x bytes_per_element, where the "
                    "factor two counts keys and values. For a model with 32 layers, 32 KV heads of dimension 128 in "
                    "16-bit precision this is 524,288 bytes, exactly half a mebibyte per token.",
                    "Grouped-query attention shrinks the cache by sharing each KV head among several query heads. "
                    "SmolLM2-135M has 30 layers and only 3 KV heads of dimension 64, so one token costs 23,040 bytes "
                    "in bfloat16, about 22.5 KiB. A 1 GiB cache budget therefore holds roughly 46,600 tokens for that "
                    "model.",
                ],
            ),
            Page(
                "3. Paged memory for the cache",
                [
                    "Allocating one contiguous region per request at its maximum length wastes memory on reservations "
                    "that are never filled. PagedAttention instead splits the cache into fixed-size blocks, by default "
                    "16 tokens each in vLLM, and keeps a block table per sequence that maps logical blocks to physical "
                    "ones, much like virtual memory pages in an operating system.",
                    "Because blocks are allocated on demand, internal fragmentation is limited to the last partly "
                    "filled block of each sequence. The original PagedAttention paper reported under 4 percent of "
                    "memory wasted this way, against 60 to 80 percent for naive contiguous allocation.",
                ],
            ),
            Page(
                "4. Running out of blocks: preemption",
                [
                    "When the scheduler needs a new block and none is free, it preempts a running sequence. There are "
                    "two ways to bring it back later. Swapping copies the victim's blocks to host memory and back; "
                    "recomputation drops the blocks and recomputes them with a fresh prefill when the sequence is "
                    "resumed.",
                    "vLLM's V1 engine uses recomputation by default, since a prefill of an existing prompt is cheap "
                    "compared with moving gigabytes over the host bus. Frequent preemption is a warning sign in a load "
                    "test: the server is admitting more concurrent sequences than its cache can hold.",
                ],
            ),
        ],
    ),
    "prefill_decode.pdf": (
        "Prefill and Decode: the Two Phases of Inference",
        [
            Page(
                "1. The prefill phase",
                [
                    "Prefill processes the entire prompt in one forward pass. All prompt tokens are known in advance, "
                    "so their attention and feed-forward computations run in parallel as large matrix multiplications. "
                    "This makes prefill compute-bound: its duration scales with the number of prompt tokens and with "
                    "the floating point throughput of the hardware.",
                    "Prefill ends by producing the first output token, so its duration dominates the time to first "
                    "token (TTFT) that a user perceives. Doubling a 2,000 token prompt roughly doubles the prefill "
                    "work, plus a quadratic attention term that matters only for long contexts.",
                ],
            ),
            Page(
                "2. The decode phase",
                [
                    "Decode generates one token per step for each sequence. Each step reads all model weights and the "
                    "sequence's KV cache from memory to perform a small amount of arithmetic, so decode is memory-"
                    "bandwidth-bound. A single sequence leaves most compute units idle.",
                    "The time between consecutive output tokens is the inter-token latency (ITL). Batching many "
                    "sequences into the same decode step amortises the weight reads, which is why decode throughput "
                    "in tokens per second rises almost linearly with batch size until memory bandwidth or compute "
                    "saturates.",
                ],
            ),
            Page(
                "3. Chunked prefill",
                [
                    "A long prompt arriving while other sequences are decoding can stall them: the whole prefill must "
                    "finish before the next decode step runs, and every running stream sees a latency spike. Chunked "
                    "prefill splits a long prompt into pieces that fit a per-step token budget and schedules them "
                    "alongside decode tokens in the same batch.",
                    "In vLLM the budget is max_num_batched_tokens. Decode requests are scheduled first and prefill "
                    "chunks fill the remaining budget. A smaller budget gives smoother inter-token latency; a larger "
                    "one finishes prefills sooner and improves time to first token.",
                ],
            ),
            Page(
                "4. Latency metrics for streaming",
                [
                    "Time to first token (TTFT) is measured from sending the request to receiving the first content "
                    "token. Time per output token (TPOT) is the mean gap after the first token: the end-to-end latency "
                    "minus TTFT, divided by the number of output tokens minus one.",
                    "Inter-token latency (ITL) is the distribution of individual gaps between tokens, and its high "
                    "percentiles reveal stalls that the TPOT mean hides. A load test should report p50 and p99 of "
                    "each metric, never only averages, and should count tokens from the stream rather than from "
                    "characters.",
                ],
            ),
        ],
    ),
    "batching.pdf": (
        "Batching Strategies for LLM Servers",
        [
            Page(
                "1. Static batching",
                [
                    "The simplest server collects a fixed number of requests, pads them to a common length and runs "
                    "them together until the longest one finishes. This is static batching. Short requests wait for "
                    "the longest sequence in their batch, and padded positions waste compute.",
                    "If output lengths vary from 10 to 500 tokens, a batch of eight requests keeps all eight slots "
                    "occupied for 500 steps even though most slots finished long before. Static batching is still "
                    "used in offline jobs where all prompts are known ahead of time.",
                ],
            ),
            Page(
                "2. Continuous batching",
                [
                    "Continuous batching, also called iteration-level scheduling, makes the scheduling decision at "
                    "every decode step. A finished sequence leaves the batch at once and a waiting request can join at "
                    "the next step. The idea was introduced by the Orca system presented at OSDI in 2022.",
                    "With continuous batching the batch size follows the load, and throughput improvements of an "
                    "order of magnitude over static batching have been reported for workloads with varied output "
                    "lengths. vLLM, TGI and SGLang all schedule this way.",
                ],
            ),
            Page(
                "3. Scheduler limits",
                [
                    "Two settings bound a vLLM batch. max_num_seqs caps the number of sequences running concurrently, "
                    "and max_num_batched_tokens caps the tokens processed in one step, counting prefill and decode "
                    "tokens together. Requests beyond these limits wait in the queue and show up as queueing time.",
                    "A third limit is the KV cache itself: the scheduler admits a sequence only when enough free "
                    "blocks exist. The server's metrics expose the number of running and waiting requests and the "
                    "cache usage fraction, which together tell which limit is binding.",
                ],
            ),
            Page(
                "4. Throughput versus latency",
                [
                    "Larger batches raise total tokens per second but each sequence advances more slowly, because a "
                    "step takes longer when it carries more tokens. The right operating point depends on the service "
                    "level objective, for example a p99 TTFT under 2 seconds.",
                    "Little's law links the quantities in steady state: the mean number of requests in the system "
                    "equals the arrival rate times the mean time a request spends in it. At 4 requests per second and "
                    "a mean latency of 5 seconds, about 20 requests are in flight at any moment.",
                ],
            ),
        ],
    ),
    "prefix_caching.pdf": (
        "Prefix Caching, Speculative Decoding and Quantization",
        [
            Page(
                "1. Automatic prefix caching",
                [
                    "Many requests start with the same tokens: a shared system prompt, few-shot examples, or the "
                    "earlier turns of a chat. Automatic prefix caching lets a new request reuse the KV blocks that an "
                    "earlier request already computed for the same prefix, skipping that part of the prefill.",
                    "vLLM identifies a full block by a hash of its tokens together with the hash of all preceding "
                    "blocks, so a block is reused only when the entire prefix up to it matches. Only full blocks are "
                    "cached; the partly filled last block of a prompt is always recomputed.",
                ],
            ),
            Page(
                "2. Measuring and evicting cached prefixes",
                [
                    "The prefix cache hit rate is the fraction of prompt tokens served from cached blocks. A chatbot "
                    "whose requests share a 1,000 token system prompt can reach hit rates above 80 percent, cutting "
                    "TTFT roughly in proportion.",
                    "Cached blocks whose reference count drops to zero are not freed at once. They stay in a free "
                    "queue and are evicted in least recently used order only when the allocator needs space, so a "
                    "popular prefix survives between bursts of traffic.",
                ],
            ),
            Page(
                "3. Speculative decoding",
                [
                    "Speculative decoding uses a cheap drafter, such as a small draft model or n-gram matching against "
                    "the prompt, to propose several tokens. The large target model then verifies all proposals in one "
                    "forward pass and keeps the longest accepted run plus one token of its own.",
                    "The output distribution is unchanged, so quality is preserved. The speedup depends on the "
                    "acceptance rate: with 5 proposed tokens and a 70 percent per-token acceptance rate, a step yields "
                    "about 2.9 tokens on average instead of one.",
                ],
            ),
            Page(
                "4. Quantization",
                [
                    "Quantization stores weights in fewer bits. Weight-only 4-bit formats such as AWQ and GPTQ cut the "
                    "weight memory of a 7 billion parameter model from about 14 GB in 16-bit to under 4 GB, which "
                    "speeds up memory-bound decode.",
                    "The KV cache can be quantized separately: an FP8 cache halves the bytes per token compared with "
                    "16-bit and so doubles the number of tokens that fit in the same memory, at a small cost in "
                    "accuracy that should be checked on the target task.",
                ],
            ),
        ],
    ),
}


def generate(out_dir: Path = PDF_DIR) -> list[Path]:
    """Write every corpus PDF into `out_dir`; return their paths."""
    return [write_pdf(out_dir / name, pages, title=title) for name, (title, pages) in CORPUS.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PDF_DIR, help="output folder (default: %(default)s)")
    for path in generate(parser.parse_args().out):
        print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
