"""What each request sends: prompts of an exact token length, output lengths, shared prefixes, datasets.

Exact synthetic prompts: at start the tokenizer (`vlab.client.tokenize`: the server's `/tokenize`, or a local one) is
asked once which common words are one token both at the start of a text and after a space. A prompt of N tokens is then
N such words, and a chat prompt of N tokens is N − (chat template overhead) words, the overhead measured the same way.
The first words are random, so prompts are unique and no request hits the prefix cache by accident; with
`shared_prefix`, the first words come from one of `count` fixed prefixes instead. Every request records the length it
asked for; the server's `usage.prompt_tokens` is recorded beside it, so any mismatch shows. Without any tokenizer the
lengths are approximate (one word ≈ one token, no template overhead counted) and every surface says so.

Endpoints: `chat` and `responses` prompts go through the chat template (the Responses API's string `input` is one
user message), `completions` and `embeddings` prompts get the tokenizer's special tokens only; `embeddings` sends
`data.batch` texts per request and asks for no output.

Trace replay (`data.trace`): row i's prompt has exactly its `input_length` tokens and asks for `output_length`. Its
words are the concatenation of one fixed block of `block_tokens` words per `hash_ids` entry, each block drawn from a
generator seeded by the block id, so rows that share leading ids send the same leading text and the server's prefix
cache sees the trace's reuse (the template's own tokens shift the blocks by its overhead, the same for every row).
Rows without `hash_ids` (BurstGPT) get random words, unique like synthetic prompts.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

from vlab.client.tokenize import TokenCounter
from vlab.core.datasets import Conversation, LoadSummary, load_dataset, load_questions
from vlab.core.errors import ConfigError, UserError
from vlab.core.scenario import ChoiceLength, DataConfig, FixedLength, Length, NormalLength, Scenario, UniformLength
from vlab.core.traces import Trace, TraceRow, load_trace

# Common English words; the ones the server's tokenizer keeps as one token are used.
_WORDS = """
the of and to in is was for that on as with by he at from his an were are which this be or had not but first one
their its new after who they have her she two been other when there all during into school time may years more most
only over city some world would where later up such used many can state about national out known university united
then made year people part under well while high since both between city game name three four five six seven eight
nine ten team day around against world life film group called because season however including these through early
work long city history house music number each government series north south east west last did what own several
river light sound water story place point line end back good great small large right left old young big long little
same different next local public real best free full able late open main early short clear white black red green
blue round plain simple quiet warm cold dry fast slow deep near far strong soft hard bright dark rich poor happy
road book paper table chair door window wall floor field garden tree flower stone hill lake sea island forest rain
snow wind sun moon star sky cloud fire earth air food bread milk fruit apple horse bird fish dog cat cow animal
hand head face eye ear mouth foot heart mind body voice word page letter song art game play plan idea fact case
form kind way thing side step turn move walk run talk read write hear see look find keep hold give take bring
""".split()


def draw_length(spec: Length, rng: random.Random) -> int:
    """One draw from a length distribution, in tokens."""
    if isinstance(spec, FixedLength):
        return spec.value
    if isinstance(spec, UniformLength):
        return rng.randint(spec.min, spec.max)
    if isinstance(spec, ChoiceLength):
        return rng.choice(spec.values)
    assert isinstance(spec, NormalLength)
    lo, hi = spec.bounds()
    return min(hi, max(lo, round(rng.gauss(spec.mean, spec.std))))


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """One request ready to send: the JSON body and what it asked for."""

    body: bytes
    prompt_tokens_requested: int
    """−1 when the prompt came from a dataset and was not counted; embeddings: the sum over the batch."""
    max_tokens: int
    """0 for embeddings (no output)."""
    prefix_id: int = -1
    messages: tuple[dict, ...] = ()
    """The chat messages sent (kept for multi-turn conversations)."""
    trace_line: int = -1
    """Trace replay: the line of the trace row it replays."""


class WordVocabulary:
    """Words the server's tokenizer encodes as exactly one token, at the start of a text and after a space."""

    def __init__(self, words: list[str], completions_overhead: int, chat_overhead: int, *, exact: bool = True) -> None:
        if len(words) < 20:
            raise UserError(f"the server's tokenizer keeps only {len(words)} common words as single tokens")
        self.words = words
        self.completions_overhead = completions_overhead
        """Tokens the server adds to a completions prompt (e.g. BOS)."""
        self.chat_overhead = chat_overhead
        """Tokens the chat template adds around one user message, generation prompt included."""
        self.exact = exact
        """False when no tokenizer was available: lengths are words, approximately tokens."""

    @classmethod
    def approximate(cls) -> WordVocabulary:
        """The word list as it is, one word counted as one token, no overhead: for servers without /tokenize when no
        local tokenizer is available."""
        return cls(list(dict.fromkeys(_WORDS)), 0, 0, exact=False)

    @classmethod
    def calibrate(cls, tokenizer: TokenCounter, *, chat: bool = True) -> WordVocabulary:
        """Ask the tokenizer (a handful of calls, before any load). `chat=False` (completions, embeddings: a model
        may have no chat template) leaves the chat overhead at 0 unmeasured."""
        candidates = list(dict.fromkeys(_WORDS))
        spaced = tokenizer.token_strs(" " + " ".join(candidates))
        lined = tokenizer.token_strs("\n".join(candidates))
        single_spaced = _single_token_words(candidates, spaced, spaced_words=True)
        single_start = _single_token_words(candidates, lined, spaced_words=False)
        words = [w for w in candidates if w in single_spaced and w in single_start]
        # Overheads, measured on a real sentence of these words, and checked at two lengths.
        sample_short, sample_long = " ".join(words[:5]), " ".join(words[:40])
        completions_overhead = tokenizer.count_prompt(sample_short) - 5
        chat_overhead = tokenizer.count_chat([{"role": "user", "content": sample_short}]) - 5 if chat else 0
        if tokenizer.count_prompt(sample_long) - 40 != completions_overhead:
            raise UserError("the server's tokenizer merges words across spaces: exact-length prompts are not possible")
        return cls(words, completions_overhead, chat_overhead)


def _single_token_words(candidates: list[str], token_strs: list[str], *, spaced_words: bool) -> set[str]:
    """Words that appear as one token in the tokenization of the joined candidates (GPT-2 `Ġ`/`Ċ` or SentencePiece
    `▁` token strings; WordPiece (BERT), which marks no spaces: a token not followed by a `##` continuation)."""
    if not any(t.startswith(("Ġ", "▁", "Ċ")) for t in token_strs):
        return {
            tok
            for i, tok in enumerate(token_strs)
            if tok in candidates and not (i + 1 < len(token_strs) and token_strs[i + 1].startswith("##"))
        }
    singles: set[str] = set()
    for tok in token_strs:
        text = tok.replace("Ġ", " ").replace("▁", " ").replace("Ċ", "\n")
        word = text.strip()
        if spaced_words and not text.startswith(" "):
            continue
        if not spaced_words and (text.startswith(" ") or text == "\n"):
            continue
        if word in candidates:
            singles.add(word)
    return singles


class PromptFactory:
    """Builds every request of a run from the scenario's `data` section (one factory per process)."""

    def __init__(
        self, scenario: Scenario, model: str, vocabulary: WordVocabulary | None, *, node: str = "", seed_extra: int = 0
    ) -> None:
        self.scenario = scenario
        self.data: DataConfig = scenario.data
        self.model = model
        self.vocab = vocabulary
        self.rng = random.Random(f"{self.data.seed}:{node}:{seed_extra}")
        self.endpoint = scenario.api.endpoint
        self.chat = self.endpoint == "chat"
        self.templated = self.endpoint in ("chat", "responses")
        """The prompt goes through the chat template (chat messages, or the Responses API's input)."""
        self._prefixes: list[list[str]] = []
        self.trace: Trace | None = None
        """The trace replayed (`data.trace`), whose rows `trace_request` builds."""
        self._blocks: dict[int, list[str]] = {}
        self.dataset_summary: LoadSummary | None = None
        """What loading the dataset or RAG questions did (`line()` for the terminal, `model_dump()` for run.json)."""
        if self.data.dataset is not None:
            loaded = load_dataset(self.data.dataset.path, self.data.dataset.format)
            self._dataset, self.dataset_summary = loaded.entries, loaded.summary
            self._dataset_pos = self.rng.randrange(len(self._dataset))
        elif self.data.rag is not None:
            questions = load_questions(self.data.rag.questions)
            self._questions, self.dataset_summary = [q.question for q in questions.entries], questions.summary
            self._question_pos = self.rng.randrange(len(self._questions))
        elif self.data.trace is not None:
            self.vocab = vocabulary or WordVocabulary.approximate()
            self.trace = load_trace(self.data.trace.path, self.data.trace.format, self.data.trace.block_tokens)
        else:
            vocabulary = vocabulary or WordVocabulary.approximate()
            self.vocab = vocabulary
            overhead = self.overhead
            shortest = self.data.prompt_tokens.bounds()[0]
            if shortest <= overhead:
                raise ConfigError(
                    f"data.prompt_tokens: {shortest} tokens is not more than the {overhead} tokens the "
                    f"{'chat template' if self.templated else 'server'} adds"
                )
            if self.data.shared_prefix:
                prefix_rng = random.Random(f"prefix:{self.data.seed}")
                self._prefixes = [
                    prefix_rng.choices(vocabulary.words, k=self.data.shared_prefix.tokens)
                    for _ in range(self.data.shared_prefix.count)
                ]

    @property
    def overhead(self) -> int:
        """Tokens the server adds around a prompt of this endpoint: the chat template's, or the special tokens."""
        assert self.vocab is not None
        return self.vocab.chat_overhead if self.templated else self.vocab.completions_overhead

    def check_context(self, max_model_len: int | None) -> None:
        """Refuse a workload whose longest prompt plus output cannot fit the server's context."""
        if max_model_len is None or self.data.dataset is not None:
            return
        if self.trace is not None:
            row = max(self.trace.rows, key=lambda r: r.input_tokens + r.output_tokens)
            if row.input_tokens + row.output_tokens > max_model_len:
                raise ConfigError(
                    f"{self.trace.summary.path}: line {row.line}: input {row.input_tokens} + output "
                    f"{row.output_tokens} tokens is above the server's context of {max_model_len}"
                )
            return
        output = 0 if self.endpoint == "embeddings" else self.data.output_tokens.bounds()[1]
        longest = self.data.prompt_tokens.bounds()[1] + output
        if longest > max_model_len:
            raise ConfigError(
                f"data: the longest prompt ({self.data.prompt_tokens.bounds()[1]}) plus max_tokens "
                f"({output}) is {longest} tokens, above the server's context of {max_model_len}"
            )

    def draw_max_tokens(self) -> int:
        return draw_length(self.data.output_tokens, self.rng)

    def next_request(self, history: list[dict] | None = None) -> PreparedRequest:
        """The next request. `history` (multi-turn) is the conversation so far, to which the next turn is added."""
        if self.endpoint == "embeddings":
            return self._embeddings_request()
        max_tokens = self.draw_max_tokens()
        prefix_id = -1
        system = None
        if self.data.dataset is not None:
            conversation = self.next_conversation()
            prompt, system, requested = conversation.turns[0].human, conversation.system, -1
        else:
            prompt, requested, prefix_id = self._synthetic_prompt()
        return self.build(prompt, max_tokens, requested, prefix_id, history, system=system)

    def _synthetic_prompt(self) -> tuple[str, int, int]:
        """(prompt, tokens asked for, shared prefix used or −1): random words, after a shared prefix if drawn."""
        assert self.vocab is not None
        requested = draw_length(self.data.prompt_tokens, self.rng)
        n_words = requested - self.overhead
        words: list[str] = []
        prefix_id = -1
        prefix = self.data.shared_prefix
        if prefix and self.rng.random() < prefix.fraction:
            prefix_id = self.rng.randrange(prefix.count)
            words = list(self._prefixes[prefix_id])
        words += self.rng.choices(self.vocab.words, k=n_words - len(words))
        return " ".join(words), requested, prefix_id

    def _embeddings_request(self) -> PreparedRequest:
        """`data.batch` texts (dataset prompts or synthetic ones of `data.prompt_tokens` each) in one request."""
        texts: list[str] = []
        requested = 0
        for _ in range(self.data.batch):
            if self.data.dataset is not None:
                texts.append(self.next_conversation().turns[0].human)
                requested = -1
            else:
                prompt, tokens, _prefix = self._synthetic_prompt()
                texts.append(prompt)
                requested += tokens
        body = {"model": self.model, "input": texts if len(texts) > 1 else texts[0], **self.scenario.api.extra_body}
        return PreparedRequest(json.dumps(body).encode(), requested, 0)

    def trace_request(self, index: int) -> PreparedRequest:
        """The request of trace row `index`: its exact input length (at least one word after the template), its
        output length as max_tokens, its prefix blocks (module docstring)."""
        assert self.trace is not None and self.vocab is not None
        row = self.trace.rows[index]
        n_words = max(1, row.input_tokens - self.overhead)
        words = self._trace_words(row, n_words)
        if self.endpoint == "embeddings":
            body = {"model": self.model, "input": " ".join(words), **self.scenario.api.extra_body}
            return PreparedRequest(json.dumps(body).encode(), n_words + self.overhead, 0, trace_line=row.line)
        prepared = self.build(" ".join(words), row.output_tokens, n_words + self.overhead)
        return PreparedRequest(prepared.body, prepared.prompt_tokens_requested, prepared.max_tokens,
                               messages=prepared.messages, trace_line=row.line)  # fmt: skip

    def _trace_words(self, row: TraceRow, n_words: int) -> list[str]:
        assert self.vocab is not None and self.data.trace is not None
        if not row.hash_ids:
            return self.rng.choices(self.vocab.words, k=n_words)
        words: list[str] = []
        for block in row.hash_ids:
            if len(words) >= n_words:
                break
            words += self._block(block)
        return words[:n_words]

    def _block(self, block_id: int) -> list[str]:
        """The words of one prefix block: the same for every row and every process of the run (seeded by id)."""
        assert self.vocab is not None and self.data.trace is not None
        words = self._blocks.get(block_id)
        if words is None:
            rng = random.Random(f"block:{self.data.seed}:{block_id}")
            words = self._blocks[block_id] = rng.choices(self.vocab.words, k=self.data.trace.block_tokens)
        return words

    def next_question(self) -> str:
        """The next RAG question (the questions file, in order from a random start)."""
        question = self._questions[self._question_pos % len(self._questions)]
        self._question_pos += 1
        return question

    def build_messages(self, messages: list[dict], max_tokens: int) -> PreparedRequest:
        """A chat request with ready-made messages (e.g. a RAG prompt: system + grounded user message)."""
        body = {**self._common(max_tokens), "messages": messages}
        return PreparedRequest(json.dumps(body).encode(), -1, max_tokens, -1, tuple(messages))

    def _common(self, max_tokens: int) -> dict:
        """The body fields of a generating request: model, output limit, streaming with usage, `api.extra_body`."""
        body: dict = {"model": self.model}
        if self.endpoint == "responses":  # streams usage in its last event, unasked
            body |= {"max_output_tokens": max_tokens, "stream": True}
        else:
            body |= {"max_tokens": max_tokens, "stream": True, "stream_options": {"include_usage": True}}
        body["temperature"] = self.scenario.api.temperature
        if self.data.ignore_eos:
            body["ignore_eos"] = True
        return body | self.scenario.api.extra_body

    def build(
        self,
        prompt: str,
        max_tokens: int,
        requested: int = -1,
        prefix_id: int = -1,
        history: list[dict] | None = None,
        *,
        system: str | None = None,
    ) -> PreparedRequest:
        """Wrap a prompt into the endpoint's JSON body (streaming, usage chunk on, `ignore_eos` as configured).

        `system` (a dataset's system prompt) opens a conversation: a system message before the user's in chat and
        the Responses API, a prefix (`system + "\\n\\n" + prompt`) in completions. Pass it with the first turn only:
        later turns carry it in their history. The Responses API's `input` is the prompt itself when it is the only
        message, else the list of messages.
        """
        body = self._common(max_tokens)
        messages: tuple[dict, ...] = ()
        if self.templated:
            opening = ({"role": "system", "content": system},) if system is not None else ()
            messages = (*opening, *(history or ()), {"role": "user", "content": prompt})
            if self.chat:
                body["messages"] = list(messages)
            else:
                body["input"] = prompt if len(messages) == 1 else list(messages)
        else:
            body["prompt"] = prompt if system is None else f"{system}\n\n{prompt}"
        return PreparedRequest(json.dumps(body).encode(), requested, max_tokens, prefix_id, messages)

    def next_conversation(self) -> Conversation:
        """The next dataset entry (its system prompt, human turns and recorded replies), in order."""
        item = self._dataset[self._dataset_pos % len(self._dataset)]
        self._dataset_pos += 1
        return item

    def conversation(self) -> list[str]:
        """The human turns of one dataset conversation (multi-turn mode), taken in order. (Without its system
        prompt: `next_conversation()` has it.)"""
        return [turn.human for turn in self.next_conversation().turns]
