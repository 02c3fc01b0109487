"""Prompt datasets (JSONL prompts, ShareGPT conversations) and RAG question files, loaded so that they say what
they did.

Every entry of a file is either loaded or skipped for one named reason; nothing is dropped or changed silently,
and no input makes the loader fail with a traceback. The result is a `DatasetLoad` (or `QuestionLoad`): the usable
entries, and a `LoadSummary` whose `line()` is the one line a user reads at test start, e.g.

    data/chats.json: loaded 27 of 30 conversations; skipped 1 missing 'value' (entry 19), 1 non-string value
    (entry 4), 1 empty value (entry 12); 6 with a system prompt, 2 leading assistant turns dropped (entries 2, 9)

Positions are 1-based, as a user finds them in the file: `entry N` is the N-th element of a JSON list, `line N`
the N-th line of a JSONL file (blank lines are ignored but counted). A file with nothing usable is one
`ConfigError` line (exit code 2) naming the file and the reasons.

The rules (docs/datasets.md has them with examples):

- An entry is skipped for the first problem found in it: not a JSON object, invalid JSON (a JSONL line), no
  conversation list, no human turn, a duplicate `id` (kept once: copies would give free prefix-cache hits).
- A human turn that cannot be sent (missing, null, non-string, empty or whitespace-only value; a turn that is not
  an object or has no role; a system turn after the first human turn) cuts the conversation there: the turns
  before it are kept, exactly as recorded, because dropping a turn from the middle would replay a conversation
  that never happened. When no human turn is left, the entry is skipped for that reason.
- Dropped without cutting, and counted: turns with an unknown role, assistant turns before the first human turn,
  unusable assistant values (replies are recorded but never sent: multi-turn replay sends the model's own
  answers). System turns before the first human turn (and a top-level `system` string) become the
  conversation's system prompt.
"""

from __future__ import annotations

import codecs
import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from vlab.core.errors import ConfigError
from vlab.core.filecache import cached_by_file
from vlab.core.traces import TraceSummary, load_trace

if TYPE_CHECKING:
    from vlab.core.scenario import DataConfig

DatasetFormat = Literal["jsonl", "sharegpt"]

MAX_KEPT_POSITIONS = 100
"""Positions stored per reason in a summary (run.json stays small for a large, messy file); the count is exact."""
MAX_LISTED_POSITIONS = 3
"""Positions shown per reason in the summary line."""


# ---------------------------------------------------------------------------------------------------- the result
@dataclass(frozen=True, slots=True)
class Turn:
    """One human turn and the assistant reply recorded after it (None when the file has none)."""

    human: str
    reply: str | None = None


@dataclass(frozen=True, slots=True)
class Conversation:
    """One usable dataset entry: a JSONL prompt is a conversation of one turn."""

    turns: tuple[Turn, ...]
    system: str | None = None
    position: int = 0
    """1-based entry (JSON list) or line (JSONL) number in the file."""
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Question:
    """One RAG question; `file` and `page` (1-based) label where its answer is, for retrieval evaluation."""

    question: str
    file: str | None = None
    page: int | None = None
    position: int = 0


class Reason(StrEnum):
    """Why an entry was skipped, or where a conversation was cut. The value is the text a user reads (singular)."""

    INVALID_JSON = "invalid JSON"
    NOT_OBJECT = "not a JSON object"
    DUPLICATE_ID = "duplicate id"
    NO_CONVERSATION = "without 'conversations'"
    NOT_LIST = "'conversations' not a list"
    EMPTY_CONVERSATION = "empty conversation"
    NO_HUMAN_TURN = "without a human turn"
    TURN_NOT_OBJECT = "turn not a JSON object"
    MISSING_ROLE = "turn without 'from'"
    SYSTEM_AFTER_HUMAN = "system turn after a human turn"
    MISSING_VALUE = "missing 'value'"
    NULL_VALUE = "null value"
    NON_STRING_VALUE = "non-string value"
    EMPTY_VALUE = "empty value"
    BAD_UNICODE = "text with a lone surrogate"
    NON_STRING_SYSTEM = "non-string 'system'"
    MISSING_PROMPT = "without 'prompt' or 'text'"
    CONVERSATION_IN_JSONL = "conversation for format: sharegpt"
    MISSING_QUESTION = "without 'question'"
    MISSING_LABEL = "without a valid 'file' and 'page'"


class Note(StrEnum):
    """What was normalised or dropped inside loaded entries."""

    WITH_SYSTEM = "with a system prompt"
    SYSTEMS_JOINED = "with several system texts joined"
    EMPTY_SYSTEM = "empty system prompt ignored"
    LEADING_ASSISTANT = "leading assistant turn dropped"
    UNKNOWN_ROLE = "turn with an unknown role dropped"
    ASSISTANT_JOINED = "assistant turn joined to the previous reply"
    UNUSABLE_REPLY = "unusable assistant reply ignored"
    CONVERSATION_KEY = "'conversation' read as 'conversations'"
    MESSAGES_KEY = "'messages' read as 'conversations'"
    ROLE_CONTENT = "'role'/'content' read as 'from'/'value'"
    TEXT_KEY = "'text' read as 'prompt'"
    BARE_STRING = "bare string read as a prompt"
    BARE_QUESTION = "bare string read as a question"
    BOM = "byte order mark ignored"


_PLURAL: dict[str, str] = {
    Reason.EMPTY_CONVERSATION: "empty conversations",
    Reason.TURN_NOT_OBJECT: "turns not JSON objects",
    Reason.MISSING_ROLE: "turns without 'from'",
    Reason.SYSTEM_AFTER_HUMAN: "system turns after a human turn",
    Reason.NULL_VALUE: "null values",
    Reason.NON_STRING_VALUE: "non-string values",
    Reason.EMPTY_VALUE: "empty values",
    Reason.BAD_UNICODE: "texts with a lone surrogate",
    Reason.DUPLICATE_ID: "duplicate ids",
    Reason.CONVERSATION_IN_JSONL: "conversations for format: sharegpt",
    Reason.NOT_OBJECT: "not JSON objects",
    Note.LEADING_ASSISTANT: "leading assistant turns dropped",
    Note.UNKNOWN_ROLE: "turns with an unknown role dropped",
    Note.ASSISTANT_JOINED: "assistant turns joined to the previous reply",
    Note.UNUSABLE_REPLY: "unusable assistant replies ignored",
    Note.EMPTY_SYSTEM: "empty system prompts ignored",
    Note.BARE_STRING: "bare strings read as prompts",
    Note.BARE_QUESTION: "bare strings read as questions",
}
# Notes about the whole file or its conventions: their positions would only repeat "all of them".
_UNLISTED = {
    Note.WITH_SYSTEM,
    Note.CONVERSATION_KEY,
    Note.MESSAGES_KEY,
    Note.ROLE_CONTENT,
    Note.TEXT_KEY,
    Note.BARE_STRING,
    Note.BARE_QUESTION,
    Note.BOM,
}


class Occurrences(BaseModel):
    """How often a reason or note occurred, and where (the first MAX_KEPT_POSITIONS positions, ascending)."""

    model_config = ConfigDict(frozen=True)

    count: int
    positions: list[int]


class LoadSummary(BaseModel):
    """What a load did, for the terminal (`line()`), run.json (`model_dump(mode="json")`) and the report."""

    model_config = ConfigDict(frozen=True)

    path: str
    format: Literal["jsonl", "sharegpt", "questions"]
    unit: Literal["prompts", "conversations", "questions"]
    position: Literal["entry", "line"] = Field(description="`entry`: JSON list elements; `line`: JSONL lines.")
    total: int = Field(description="Entries in the file (blank JSONL lines not counted).")
    loaded: int
    skipped: dict[Reason, Occurrences] = Field(description="Entries not loaded, by the first problem found.")
    cut: dict[Reason, Occurrences] = Field(description="Conversations loaded up to their first unusable turn.")
    notes: dict[Note, Occurrences] = Field(description="What was normalised or dropped inside loaded entries.")
    unknown_roles: list[str] = Field(default_factory=list, description="Roles dropped as unknown (up to 10).")

    @property
    def skipped_count(self) -> int:
        return sum(o.count for o in self.skipped.values())

    def line(self) -> str:
        """The one summary line: counts, the reasons with a few positions each, and the notes."""
        return "; ".join([f"{self.path}: loaded {self.loaded} of {self.total} {self.unit}", *self._segments()])

    def error_line(self) -> str:
        """The line of a file where nothing is usable."""
        noun = self.position if self.total == 1 else {"entry": "entries", "line": "lines"}[self.position]
        where = f"{self.total} {noun}"
        return "; ".join([f"{self.path}: no usable {self.unit} in {where}", *self._segments()])

    def _segments(self) -> list[str]:
        segments = []
        if self.skipped:
            segments.append("skipped " + self._groups(self.skipped))
        if self.cut:
            segments.append("cut at the first unusable turn: " + self._groups(self.cut))
        if self.notes:
            segments.append(self._groups(self.notes))
        return segments

    def _groups(self, groups: dict[Any, Occurrences]) -> str:
        order = list(Reason) + list(Note)
        parts = []
        for key, occ in sorted(groups.items(), key=lambda kv: (-kv[1].count, order.index(kv[0]))):
            text = _PLURAL.get(key, key.value) if occ.count != 1 else key.value
            where = [] if key in _UNLISTED else [self._positions(occ)]
            if key is Note.UNKNOWN_ROLE and self.unknown_roles:
                where.append("roles " + ", ".join(repr(r) for r in self.unknown_roles))
            parts.append(f"{occ.count} {text}" + (f" ({'; '.join(where)})" if where else ""))
        return ", ".join(parts)

    def _positions(self, occ: Occurrences) -> str:
        shown = occ.positions[:MAX_LISTED_POSITIONS]
        more = ", …" if len(occ.positions) > len(shown) else ""
        noun = self.position if len(occ.positions) == 1 else ("entries" if self.position == "entry" else "lines")
        return f"{noun} {', '.join(map(str, shown))}{more}"


@dataclass(frozen=True, slots=True)
class DatasetLoad:
    """A loaded dataset: its usable entries, in file order, and what the load did."""

    entries: tuple[Conversation, ...]
    summary: LoadSummary


@dataclass(frozen=True, slots=True)
class QuestionLoad:
    entries: tuple[Question, ...]
    summary: LoadSummary


# -------------------------------------------------------------------------------------------------------- loading
def load_dataset(path: str | Path, fmt: DatasetFormat) -> DatasetLoad:
    """Load a `jsonl` prompt file or a `sharegpt` conversation file (a JSON list or JSONL, either format).

    Raises ConfigError (one line, exit code 2) when the file cannot be read or nothing in it is usable. Results are
    cached per file version, so checking a scenario's dataset at start-up and building the prompt factory later
    parse the file once.
    """
    path = Path(path)
    if fmt not in ("jsonl", "sharegpt"):
        raise ConfigError(f"{path}: unknown dataset format {fmt!r} (expected jsonl or sharegpt)")
    loaded: DatasetLoad = cached_by_file(_load_dataset, path, fmt)
    return loaded


def load_questions(path: str | Path, *, labelled: bool = False) -> QuestionLoad:
    """Load a RAG questions file: JSONL (or a JSON list) of `{"question": ...}` objects; extra fields are ignored.

    `labelled`: the retrieval evaluation also needs `file` (the PDF answering it) and `page` (1-based); questions
    without them are skipped and counted.
    """
    loaded: QuestionLoad = cached_by_file(_load_questions, Path(path), labelled)
    return loaded


def load_scenario_data(data: DataConfig) -> LoadSummary | TraceSummary | None:
    """Load a scenario's dataset, RAG questions or trace, if it has one, and return the summary (or raise
    ConfigError).

    Meant for start-up, before any load: the prompt factory built later in the same process reuses the parse.
    """
    if data.dataset is not None:
        return load_dataset(data.dataset.path, data.dataset.format).summary
    if data.rag is not None:
        return load_questions(data.rag.questions).summary
    if data.trace is not None:
        return load_trace(data.trace.path, data.trace.format, data.trace.block_tokens).summary
    return None


class _Tally:
    """Collects the reasons and notes of a load; per-entry notes count only once the entry is loaded."""

    def __init__(self) -> None:
        self.skipped: dict[Reason, list[int]] = {}
        self.cut: dict[Reason, list[int]] = {}
        self.notes: dict[Note, list[int]] = {}
        self.unknown_roles: dict[str, None] = {}
        self.entry_notes: list[Note] = []
        self.entry_roles: list[str] = []

    def start_entry(self) -> None:
        self.entry_notes, self.entry_roles = [], []

    def keep_entry(self, position: int) -> None:
        for note in self.entry_notes:
            self.notes.setdefault(note, []).append(position)
        for role in self.entry_roles:
            self.unknown_roles.setdefault(role)

    def summary(self, path: Path, fmt: str, unit: str, position: str, total: int, loaded: int) -> LoadSummary:
        return LoadSummary(
            path=str(path),
            format=fmt,  # type: ignore[arg-type]  # checked by the model
            unit=unit,  # type: ignore[arg-type]
            position=position,  # type: ignore[arg-type]
            total=total,
            loaded=loaded,
            skipped=_occurrences(self.skipped),
            cut=_occurrences(self.cut),
            notes=_occurrences(self.notes),
            unknown_roles=list(self.unknown_roles)[:10],
        )


def _occurrences(groups: dict[Any, list[int]]) -> dict[Any, Occurrences]:
    return {
        key: Occurrences(count=len(where), positions=sorted(set(where))[:MAX_KEPT_POSITIONS])
        for key, where in groups.items()
    }


class _Skip(Exception):
    """This entry cannot be loaded, for `reason`."""

    def __init__(self, reason: Reason) -> None:
        self.reason = reason


_INVALID = object()


def _read_rows(path: Path, what: str, tally: _Tally) -> tuple[list[tuple[int, Any]], Literal["entry", "line"]]:
    """The file's entries with their 1-based positions: a JSON list's elements, or a JSONL file's non-blank lines
    (`_INVALID` for a line that is not JSON)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a {what} file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what} file ({exc.strerror or exc})") from None
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ConfigError(f"{path}: UTF-16 text; save the {what} file as UTF-8")
    if data.startswith(codecs.BOM_UTF8):
        tally.notes[Note.BOM] = [1]
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); save the {what} file as UTF-8"
        ) from None
    if not text.strip():
        raise ConfigError(f"{path}: the {what} file is empty")
    if text.lstrip().startswith("["):
        parsed = _parse_json(path, text)
        if not isinstance(parsed, list):  # pragma: no cover - a text starting with '[' parses to a list or fails
            raise ConfigError(f"{path}: expected a JSON list")
        return list(enumerate(parsed, start=1)), "entry"
    rows: list[tuple[int, Any]] = []
    # Split on newlines only: str.splitlines() also splits on U+2028, U+0085 and others, which JSON strings may hold.
    for number, text_line in enumerate(text.split("\n"), start=1):
        if not text_line.strip():
            continue
        try:
            rows.append((number, json.loads(text_line)))
        except (ValueError, RecursionError):
            rows.append((number, _INVALID))
    if len(rows) > 1 and any(row is _INVALID for _, row in rows):
        # Several lines that parse as one JSON document are not JSONL: a pretty-printed object, or an object
        # wrapping the list. Say so, instead of "N invalid JSON lines".
        try:
            whole = json.loads(text)
        except (ValueError, RecursionError):
            pass
        else:
            keys = f" (keys {', '.join(repr(k) for k in list(whole)[:5])})" if isinstance(whole, dict) and whole else ""
            kind = "object" if isinstance(whole, dict) else "value"
            raise ConfigError(
                f"{path}: one JSON {kind}{keys} over {len(rows)} lines; expected a JSON list, or one JSON object "
                "per line"
            )
    return rows, "line"


def _parse_json(path: Path, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid JSON: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer with more digits than Python converts (its advice dropped)
        raise ConfigError(f"{path}: invalid JSON: {str(exc).split(';')[0]}") from None


def _text(value: Any) -> str:
    """The value as sendable text, or _Skip with the reason it is not."""
    if value is None:
        raise _Skip(Reason.NULL_VALUE)
    if not isinstance(value, str):
        raise _Skip(Reason.NON_STRING_VALUE)
    if not value.strip():
        raise _Skip(Reason.EMPTY_VALUE)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate escape (\ud800): the server cannot tokenize it
        raise _Skip(Reason.BAD_UNICODE) from None
    return value


def _top_system(row: dict[str, Any], tally: _Tally) -> str | None:
    """A top-level `system` string (null and empty mean none)."""
    value = row.get("system")
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Skip(Reason.NON_STRING_SYSTEM)
    if not value.strip():
        tally.entry_notes.append(Note.EMPTY_SYSTEM)
        return None
    return _text(value)


class _Ids:
    """Duplicate `id` detection: an id counts as taken once an entry with it is loaded."""

    def __init__(self) -> None:
        self.taken: set[str] = set()

    def check(self, row: dict[str, Any]) -> str | None:
        raw = row.get("id")
        if raw is None or isinstance(raw, (dict, list)):
            return None
        key = str(raw)
        if key in self.taken:
            raise _Skip(Reason.DUPLICATE_ID)
        return key


def _load_dataset(path: Path, fmt: DatasetFormat) -> DatasetLoad:
    tally = _Tally()
    rows, position = _read_rows(path, "dataset", tally)
    parse = _conversation if fmt == "sharegpt" else _prompt
    ids = _Ids()
    entries: list[Conversation] = []
    for pos, row in rows:
        tally.start_entry()
        try:
            if row is _INVALID:
                raise _Skip(Reason.INVALID_JSON)
            conversation, cut = parse(row, pos, tally, ids)
        except _Skip as skip:
            tally.skipped.setdefault(skip.reason, []).append(pos)
            continue
        if conversation.id is not None:
            ids.taken.add(conversation.id)
        if cut is not None:
            tally.cut.setdefault(cut, []).append(pos)
        if conversation.system is not None:
            tally.entry_notes.append(Note.WITH_SYSTEM)
        tally.keep_entry(pos)
        entries.append(conversation)
    unit = "conversations" if fmt == "sharegpt" else "prompts"
    summary = tally.summary(path, fmt, unit, position, len(rows), len(entries))
    if not entries:
        raise ConfigError(summary.error_line())
    return DatasetLoad(tuple(entries), summary)


def _prompt(row: Any, pos: int, tally: _Tally, ids: _Ids) -> tuple[Conversation, None]:
    """A JSONL prompt: `{"prompt": ...}` (or `text`), an optional `system` string, or a bare JSON string."""
    if isinstance(row, str):
        tally.entry_notes.append(Note.BARE_STRING)
        return Conversation((Turn(_text(row)),), position=pos), None
    if not isinstance(row, dict):
        raise _Skip(Reason.NOT_OBJECT)
    entry_id = ids.check(row)
    if "prompt" in row:
        value = row["prompt"]
    elif "text" in row:
        value = row["text"]
        tally.entry_notes.append(Note.TEXT_KEY)
    elif any(key in row for key in _CONVERSATION_KEYS):
        raise _Skip(Reason.CONVERSATION_IN_JSONL)
    else:
        raise _Skip(Reason.MISSING_PROMPT)
    prompt = _text(value)
    return Conversation((Turn(prompt),), _top_system(row, tally), pos, entry_id), None


_CONVERSATION_KEYS = {"conversations": None, "conversation": Note.CONVERSATION_KEY, "messages": Note.MESSAGES_KEY}
_ROLES = {
    "human": "human",
    "user": "human",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "system": "system",
}


def _conversation(row: Any, pos: int, tally: _Tally, ids: _Ids) -> tuple[Conversation, Reason | None]:
    """A ShareGPT entry: `conversations` (or `conversation`, `messages`) of `{from, value}` (or `{role, content}`)
    turns. Returns the conversation and the reason it was cut short, if it was."""
    if not isinstance(row, dict):
        raise _Skip(Reason.NOT_OBJECT)
    key = next((k for k in _CONVERSATION_KEYS if k in row), None)
    if key is None:
        raise _Skip(Reason.NO_CONVERSATION)
    entry_id = ids.check(row)
    if (note := _CONVERSATION_KEYS[key]) is not None:
        tally.entry_notes.append(note)
    raw_turns = row[key]
    if not isinstance(raw_turns, list):
        raise _Skip(Reason.NOT_LIST)
    if not raw_turns:
        raise _Skip(Reason.EMPTY_CONVERSATION)
    systems = [s] if (s := _top_system(row, tally)) is not None else []
    humans: list[str] = []
    replies: list[str | None] = []
    cut: Reason | None = None
    role_content = False
    for turn in raw_turns:
        try:
            role, text, alt_keys = _turn(turn, tally)
            role_content = role_content or alt_keys
            if role is None:  # unknown role: dropped, counted
                continue
            if role == "system":
                if humans:
                    raise _Skip(Reason.SYSTEM_AFTER_HUMAN)
                if text is None or (isinstance(text, str) and not text.strip()):  # null or empty: none
                    tally.entry_notes.append(Note.EMPTY_SYSTEM)
                else:
                    systems.append(_text(text))
            elif role == "human":
                humans.append(_text(text))
                replies.append(None)
            elif not humans:
                tally.entry_notes.append(Note.LEADING_ASSISTANT)
            else:
                try:
                    reply = _text(text)
                except _Skip:
                    tally.entry_notes.append(Note.UNUSABLE_REPLY)
                    continue
                if replies[-1] is None:
                    replies[-1] = reply
                else:
                    replies[-1] = f"{replies[-1]}\n\n{reply}"
                    tally.entry_notes.append(Note.ASSISTANT_JOINED)
        except _Skip as problem:
            if not humans:  # nothing usable before the problem: the entry goes, for that reason
                raise
            cut = problem.reason
            break
    if not humans:
        raise _Skip(Reason.NO_HUMAN_TURN)
    if role_content:
        tally.entry_notes.append(Note.ROLE_CONTENT)
    if len(systems) > 1:
        tally.entry_notes.append(Note.SYSTEMS_JOINED)
    system = "\n\n".join(systems) if systems else None
    turns = tuple(Turn(h, r) for h, r in zip(humans, replies, strict=True))
    return Conversation(turns, system, pos, entry_id), cut


_MISSING = object()


def _turn(turn: Any, tally: _Tally) -> tuple[str | None, Any, bool]:
    """(normalised role or None when unknown, the raw text value, whether role/content keys were used).
    A missing value comes back as _Skip(MISSING_VALUE) for human and system turns only (assistant ones are not
    sent)."""
    if not isinstance(turn, dict):
        raise _Skip(Reason.TURN_NOT_OBJECT)
    alt_keys = False
    if "from" in turn:
        raw_role = turn["from"]
    elif "role" in turn:
        raw_role, alt_keys = turn["role"], True
    else:
        raise _Skip(Reason.MISSING_ROLE)
    if "value" in turn:
        text = turn["value"]
    elif "content" in turn:
        text, alt_keys = turn["content"], True
    else:
        text = _MISSING
    role = _ROLES.get(raw_role.strip().lower()) if isinstance(raw_role, str) else None
    if role is None:
        tally.entry_notes.append(Note.UNKNOWN_ROLE)
        tally.entry_roles.append(raw_role if isinstance(raw_role, str) else json.dumps(raw_role))
        return None, None, alt_keys
    if text is _MISSING:
        if role != "assistant":
            raise _Skip(Reason.MISSING_VALUE)
        text = None
    return role, text, alt_keys


def _load_questions(path: Path, labelled: bool) -> QuestionLoad:
    tally = _Tally()
    rows, position = _read_rows(path, "questions", tally)
    entries: list[Question] = []
    for pos, row in rows:
        tally.start_entry()
        try:
            entries.append(_question(row, pos, labelled, tally))
        except _Skip as skip:
            tally.skipped.setdefault(skip.reason, []).append(pos)
            continue
        tally.keep_entry(pos)
    summary = tally.summary(path, "questions", "questions", position, len(rows), len(entries))
    if not entries:
        raise ConfigError(summary.error_line())
    return QuestionLoad(tuple(entries), summary)


def _question(row: Any, pos: int, labelled: bool, tally: _Tally) -> Question:
    if row is _INVALID:
        raise _Skip(Reason.INVALID_JSON)
    if isinstance(row, str):
        if labelled:
            raise _Skip(Reason.MISSING_LABEL)
        tally.entry_notes.append(Note.BARE_QUESTION)
        return Question(_text(row), position=pos)
    if not isinstance(row, dict):
        raise _Skip(Reason.NOT_OBJECT)
    if "question" not in row:
        raise _Skip(Reason.MISSING_QUESTION)
    question = _text(row["question"])
    file, page = row.get("file"), row.get("page")
    if isinstance(page, str) and page.strip().isdigit():
        page = int(page)
    valid_page = isinstance(page, int) and not isinstance(page, bool) and page >= 1
    if not (isinstance(file, str) and file.strip() and valid_page):
        file = page = None
    if labelled and file is None:
        raise _Skip(Reason.MISSING_LABEL)
    return Question(question, file, page, pos)
