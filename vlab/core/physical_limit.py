"""The physical limits of serving a model on a card, and the KV-cache budget a card leaves.

Floors (seconds; a floor is the time the card could not beat even with perfect kernels, so measured / floor ≥ 1):

- decode step, for a batch of B sequences whose mean context is c tokens:
  memory = (W + B · c · k) / BW, with W = bytes of the weights every step must read (`ModelShape.matmul_weight_bytes`:
  all projections and the lm_head; the input embedding lookup reads only B rows), k = KV-cache bytes per token,
  BW = memory bandwidth (B/s); compute = B · F / P with F = FLOPs per token (2 × matmul parameters) and P = peak dense
  FLOP/s; floor = max(memory, compute) (perfect overlap). One step emits one token per sequence, so a request's
  inter-token latency (ITL) cannot be below the step floor.
- prefill of a prompt of p tokens: compute = 2 × matmul parameters × p / P (the issue's 2 × parameters × prompt
  tokens / peak, without the embedding lookup); memory = (W + p · k) / BW (read the weights once, write the prompt's
  KV); floor = max(compute, memory). Attention scores are left out of both (see `vlab.core.model_shape`), which keeps
  the floors floors. The first token comes out of the prefill's forward pass, so TTFT ≥ prefill floor (unless the
  prefix cache skipped part of the prompt).

Ratio = measured / floor. ≤ 1.5: the hardware is the limit; ≥ 5: the engine or the scheduler is the limit; in
between, both (`verdict`).

KV-cache budget (bytes) of vLLM on a card, as vLLM 0.26.0 computes it (vllm/v1/worker/gpu_worker.py,
determine_available_memory; vllm/v1/worker/utils.py, request_memory):
budget = ⌈utilization × card memory⌉ − weights − peak activation − non-torch memory − CUDA graphs.
`kv_budget` returns each term with its source and raises ConfigError when the budget is ≤ 0 (the card cannot hold the
weights and the working memory). vLLM allocates it in blocks of 16 tokens: tokens = ⌊budget / (16 · k)⌋ · 16.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from vlab.core.errors import ConfigError
from vlab.core.hardware import GIB, Card
from vlab.core.model_shape import ModelShape

BLOCK_SIZE = 16
"""vLLM's default KV block size on CUDA (CacheConfig.DEFAULT_BLOCK_SIZE in 0.26.0), tokens."""
HARDWARE_LIMIT_RATIO = 1.5
ENGINE_LIMIT_RATIO = 5.0


def gib(value: float) -> int:
    """`value` GiB in bytes (rounded down)."""
    return int(value * GIB)


# --------------------------------------------------------------------------------------------- what vLLM measured
@dataclass(frozen=True)
class MeasuredOverheads:
    """The non-weight, non-KV memory vLLM reserved on one start, in bytes, and where it was read."""

    peak_activation: int
    non_torch: int
    cudagraph: int
    cuda_context: int
    """Memory in use before vLLM's own accounting starts (total − free at start), per server process."""
    weights_loaded: int
    """vLLM's 'Model loading took ...' figure (its weight term), for comparison with ModelShape's weight bytes."""
    params_bytes: int
    """The measured model's parameters x bytes per element (ModelShape.weight_bytes), to compare with weights_loaded."""
    max_num_batched_tokens: int
    label: str
    """Short attribution for each derived term."""
    source: str


H200_QWEN2_1P5B_FP16 = MeasuredOverheads(
    peak_activation=gib(0.57),
    non_torch=gib(0.22),
    cudagraph=gib(0.50),
    cuda_context=gib(139.80 - 139.29),
    weights_loaded=gib(2.98),
    params_bytes=3_087_428_608,
    max_num_batched_tokens=8192,
    label="measured by vLLM 0.26.0 on the H200 for Qwen2-1.5B fp16, max_num_batched_tokens 8192",
    source="vLLM 0.26.0 on the H200, Qwen2-1.5B fp16 (dummy weights), max_num_batched_tokens 8192, max_num_seqs "
    "1024; docs/gpu-runs/2026-12-01-bringup/server-startup.log, lines 'Model loading took 2.98 GiB' and 'Free memory "
    "on device (139.29/139.8 GiB) ... 0.57 GiB for peak activation, 0.22 GiB for non-torch memory, and 0.5 GiB for "
    "CUDAGraph memory'",
)
"""The only start measured so far. vLLM prints these rounded to 0.01 GiB."""


# ------------------------------------------------------------------------------------------------- the KV budget
@dataclass(frozen=True)
class Term:
    """One line of a derivation: a named amount of bytes and where it came from."""

    name: str
    bytes: int
    source: str

    def line(self, sign: str = "−") -> str:
        return f"{sign} {self.name}: {self.bytes / GIB:.3f} GiB ({self.bytes:,} B) — {self.source}"


@dataclass(frozen=True)
class KvBudget:
    """utilization × card memory − the terms = `kv_bytes`; `lines()` writes the derivation out."""

    card_memory: Term
    utilization: float
    terms: tuple[Term, ...]
    notes: tuple[str, ...] = ()

    @property
    def requested_bytes(self) -> int:
        """⌈utilization × card memory⌉, as vLLM's request_memory rounds it."""
        return math.ceil(self.card_memory.bytes * self.utilization)

    @property
    def kv_bytes(self) -> int:
        return self.requested_bytes - sum(t.bytes for t in self.terms)

    def tokens(self, kv_bytes_per_token: int, block_size: int = BLOCK_SIZE) -> int:
        """Tokens of KV cache the budget holds: whole blocks of `block_size` tokens."""
        return self.blocks(kv_bytes_per_token, block_size) * block_size

    def blocks(self, kv_bytes_per_token: int, block_size: int = BLOCK_SIZE) -> int:
        return max(self.kv_bytes, 0) // (block_size * kv_bytes_per_token)

    def requests(self, kv_bytes_per_token: int, tokens_per_request: int, block_size: int = BLOCK_SIZE) -> int:
        """Concurrent requests of `tokens_per_request` tokens (prompt + output) whose KV fits at once: each takes
        ⌈tokens / block_size⌉ blocks."""
        per_request = -(-tokens_per_request // block_size)
        return self.blocks(kv_bytes_per_token, block_size) // per_request

    def lines(self, kv_bytes_per_token: int | None = None, tokens_per_request: int | None = None) -> list[str]:
        """The derivation as text: each term in GiB with its source, the result, and (given the model's KV bytes per
        token) the tokens and concurrent requests it holds."""
        m = self.card_memory
        out = [
            f"  {m.name}: {m.bytes / GIB:.3f} GiB ({m.bytes:,} B) — {m.source}",
            f"× gpu_memory_utilization {self.utilization:g} = {self.requested_bytes / GIB:.3f} GiB "
            f"({self.requested_bytes:,} B), rounded up as vLLM does",
        ]
        out += [t.line() for t in self.terms]
        out.append(f"= KV-cache budget: {self.kv_bytes / GIB:.3f} GiB ({self.kv_bytes:,} B)")
        if kv_bytes_per_token:
            out.append(
                f"  = {self.tokens(kv_bytes_per_token):,} tokens at {kv_bytes_per_token / 1024:g} KiB/token "
                f"({self.blocks(kv_bytes_per_token):,} blocks of {BLOCK_SIZE})"
            )
            if tokens_per_request:
                out.append(
                    f"  = {self.requests(kv_bytes_per_token, tokens_per_request):,} concurrent requests of "
                    f"{tokens_per_request:,} tokens"
                )
        out += [f"  note: {n}" for n in self.notes]
        return out


def kv_budget(
    card_memory: int | Term,
    gpu_memory_utilization: float,
    weights: int | Term,
    peak_activation: int | Term,
    non_torch: int | Term,
    cudagraph: int | Term,
    *,
    notes: tuple[str, ...] = (),
) -> KvBudget:
    """⌈gpu_memory_utilization × card_memory⌉ − weights − peak_activation − non_torch − cudagraph, bytes.

    Each argument is bytes, or a `Term` carrying its source. Raises ConfigError (one line) when the budget is ≤ 0: the
    card, at that utilization, cannot hold the weights and vLLM's working memory.
    """

    def term(value: int | Term, name: str) -> Term:
        return value if isinstance(value, Term) else Term(name, int(value), "given")

    if not 0 < gpu_memory_utilization <= 1:
        raise ConfigError(f"gpu_memory_utilization {gpu_memory_utilization}: expected a fraction in (0, 1]")
    budget = KvBudget(
        card_memory=term(card_memory, "card memory"),
        utilization=gpu_memory_utilization,
        terms=(
            term(weights, "weights"),
            term(peak_activation, "peak activation"),
            term(non_torch, "non-torch memory"),
            term(cudagraph, "CUDA graphs"),
        ),
        notes=notes,
    )
    if budget.kv_bytes <= 0:
        need = sum(t.bytes for t in budget.terms)
        raise ConfigError(
            f"KV-cache budget {budget.kv_bytes / GIB:.2f} GiB: {gpu_memory_utilization:g} x "
            f"{budget.card_memory.bytes / GIB:.2f} GiB of {budget.card_memory.name} = "
            f"{budget.requested_bytes / GIB:.2f} GiB cannot hold the weights and working memory "
            f"({need / GIB:.2f} GiB)"
        )
    return budget


def kv_budget_bytes(
    card_memory: int,
    gpu_memory_utilization: float,
    weights: int,
    peak_activation: int,
    non_torch: int,
    cudagraph: int,
) -> int:
    """The budget of `kv_budget` as a number of bytes."""
    return kv_budget(card_memory, gpu_memory_utilization, weights, peak_activation, non_torch, cudagraph).kv_bytes


def derive_kv_budget(
    shape: ModelShape,
    card: Card,
    utilization: float,
    dtype: str | None = "auto",
    measured: MeasuredOverheads = H200_QWEN2_1P5B_FP16,
    *,
    peak_activation: int | None = None,
    non_torch: int | None = None,
    cudagraph: int | None = None,
) -> KvBudget:
    """The KV budget vLLM would leave on `card` for `shape`: weights from the model's config (ModelShape), the other
    terms from `measured` unless given. Raises ConfigError when nothing is left."""
    d = shape.resolve_dtype(dtype)
    src = measured.label

    def term(name: str, given: int | None, default: int) -> Term:
        return Term(name, given, "given in the profile") if given is not None else Term(name, default, src)

    notes = (
        f"measured terms from {measured.source}",
        f"the activation, non-torch and CUDA-graph terms were measured with max_num_batched_tokens "
        f"{measured.max_num_batched_tokens} on an H200; vLLM on a card under 70 GiB defaults to 2048 batched tokens "
        f"and 256 sequences, so its activation and graphs are smaller and this budget is conservative",
        f"vLLM reported {measured.weights_loaded / GIB:.2f} GiB for loading the measured model, "
        f"{(measured.weights_loaded - measured.params_bytes) / GIB:.2f} GiB above its parameters' bytes; the weights "
        "term is the parameters' bytes, so a real card's budget may be that much smaller",
        f"card memory is the table's nominal figure; CUDA sees a little less (on the H200 {139.8:.1f} of "
        f"{150_754_820_096 / GIB:.1f} GiB, 0.43 % held by the driver)",
    )
    return kv_budget(
        Term(f"{card.key} memory", card.memory_bytes, card.memory_source),
        utilization,
        Term(f"weights ({shape.params:,} parameters x {d})", shape.weight_bytes(d), "the model's config.json"),
        term("peak activation", peak_activation, measured.peak_activation),
        term("non-torch memory", non_torch, measured.non_torch),
        term("CUDA graphs", cudagraph, measured.cudagraph),
        notes=notes,
    )


# ------------------------------------------------------------------------------------------------------- floors
@dataclass(frozen=True)
class Floor:
    """A floor in seconds: the memory-bound and compute-bound times and the larger of the two."""

    memory_s: float
    compute_s: float
    bytes_moved: float
    flops: float

    @property
    def floor_s(self) -> float:
        return max(self.memory_s, self.compute_s)

    @property
    def bound(self) -> str:
        """'memory' or 'compute': which of the two sets the floor."""
        return "memory" if self.memory_s >= self.compute_s else "compute"


def decode_floor(shape: ModelShape, card: Card, batch: float, mean_context: float, dtype: str | None = "auto") -> Floor:
    """One decode step of `batch` sequences with `mean_context` tokens each in the KV cache (see the module doc)."""
    if batch <= 0 or mean_context < 0:
        raise ValueError(f"batch {batch} must be > 0 and mean_context {mean_context} ≥ 0")
    kv = shape.kv_bytes_per_token(dtype)
    moved = shape.matmul_weight_bytes(dtype) + batch * mean_context * kv
    flops = batch * shape.flops_per_token
    return Floor(moved / card.bandwidth_bytes_per_s, flops / card.peak_flops, moved, flops)


def prefill_floor(shape: ModelShape, card: Card, prompt_tokens: float, dtype: str | None = "auto") -> Floor:
    """The forward pass over a prompt of `prompt_tokens` tokens (see the module doc)."""
    if prompt_tokens <= 0:
        raise ValueError(f"prompt_tokens {prompt_tokens} must be > 0")
    moved = shape.matmul_weight_bytes(dtype) + prompt_tokens * shape.kv_bytes_per_token(dtype)
    flops = prompt_tokens * shape.flops_per_token
    return Floor(moved / card.bandwidth_bytes_per_s, flops / card.peak_flops, moved, flops)


def ratio(measured_s: float, floor_s: float) -> float:
    """measured / floor; NaN when either is missing or the floor is not positive."""
    if not (math.isfinite(measured_s) and math.isfinite(floor_s)) or floor_s <= 0:
        return math.nan
    return measured_s / floor_s


def verdict(r: float, *, prefill: bool = False) -> str:
    """One sentence on what a measured/floor ratio `r` means (the ratio itself is shown beside it)."""
    if not math.isfinite(r):
        return "no floor to compare with (card or model unknown, or nothing measured)"
    if r < 1.0:
        if prefill:
            return (
                "below the floor: part of the prompt was not computed (prefix-cache hits), or the card or the model "
                "is not what the run says"
            )
        return "below the floor: the card or the model is not what the run says, or the measurement is wrong"
    if r <= HARDWARE_LIMIT_RATIO:
        return f"the hardware is the limit (within {HARDWARE_LIMIT_RATIO:g}x of the floor)"
    if r >= ENGINE_LIMIT_RATIO:
        return (
            f"the engine or the scheduler is the limit, not the card ({ENGINE_LIMIT_RATIO:g}x the floor or more): "
            "per-step overheads, batching, prefills interleaved with decodes"
        )
    return (
        "both: the card sets the order of magnitude, the engine's overheads (kernel launches, scheduling, attention "
        "over the context) take the rest"
    )


# -------------------------------------------------------------------------------------------- co-hosting on a card
@dataclass(frozen=True)
class ServerFootprint:
    """What one vLLM server holds on the card: its terms (weights, working memory, context, KV) in bytes."""

    name: str
    terms: tuple[Term, ...]

    @property
    def bytes(self) -> int:
        return sum(t.bytes for t in self.terms)


def server_footprint(
    name: str,
    shape: ModelShape,
    kv_cache_bytes: int,
    dtype: str | None = "auto",
    measured: MeasuredOverheads = H200_QWEN2_1P5B_FP16,
    activation_scale: float = 1.0,
) -> ServerFootprint:
    """weights (ModelShape, scaled by vLLM's measured load size over the parameters' bytes) + activation (measured,
    × `activation_scale` for a wider model) + non-torch + CUDA graphs + CUDA context + the KV cache."""
    load_factor = measured.weights_loaded / measured.params_bytes
    src = "measured for Qwen2-1.5B fp16 on the H200"
    return ServerFootprint(
        name,
        (
            Term("weights", math.ceil(shape.weight_bytes(dtype) * load_factor), f"config.json x {load_factor:.3f}"),
            Term("peak activation", math.ceil(measured.peak_activation * activation_scale), src),
            Term("non-torch", measured.non_torch, src),
            Term("CUDA graphs", measured.cudagraph, src),
            Term("CUDA context", measured.cuda_context, src),
            Term("KV cache", kv_cache_bytes, "kv_cache_memory_bytes"),
        ),
    )


@dataclass(frozen=True)
class CohostPlan:
    """Several servers on one card: do they fit in `total_bytes` with `headroom_bytes` to spare?"""

    total_bytes: int
    headroom_bytes: int
    servers: tuple[ServerFootprint, ...] = field(default_factory=tuple)

    @property
    def used_bytes(self) -> int:
        return sum(s.bytes for s in self.servers)

    @property
    def spare_bytes(self) -> int:
        """What is left after the servers and the headroom (negative: they do not fit)."""
        return self.total_bytes - self.headroom_bytes - self.used_bytes

    @property
    def fits(self) -> bool:
        return self.spare_bytes >= 0

    def lines(self) -> list[str]:
        out = []
        for s in self.servers:
            parts = ", ".join(f"{t.name} {t.bytes / GIB:.2f}" for t in s.terms)
            out.append(f"{s.name}: {s.bytes / GIB:.2f} GiB ({parts})")
        out.append(
            f"total {self.used_bytes / GIB:.2f} GiB + headroom {self.headroom_bytes / GIB:.2f} GiB of "
            f"{self.total_bytes / GIB:.2f} GiB: {self.spare_bytes / GIB:.2f} GiB spare"
        )
        return out
