"""The invariants of DESIGN.md as one reusable checker, plus deterministic workloads.

Used by the reliability tests (crash safety, concurrency, fuzz, isolation, faults,
resource bounds) and by ``bench/soak.py``. Every check returns a list of problems
(empty when all holds) so the soak can count violations; tests assert it is empty.

The invariants checked on every view (numbers as in DESIGN.md):

1. nothing lost: every message that left the view is archived verbatim and
   ``store.search`` finds it word for word;
2. tool calls whole: no result without its call, no call without all its results
   (except the one in flight at the end);
3. pinned: leading system messages and the first human message are in the view, the
   latest human message is in it verbatim;
4. fail safe: with a distiller that never succeeded, the view is the history;
5. within budget after a distillation whenever pinned + latest allow it, and stats
   that tell the truth (``tokens_view`` is the view's real size; a reason when over);
6. incremental: the same history twice distills nothing new;
7. provenance: every fact names its thread and source messages that exist in the
   archive; a distillation's facts, its originals' state change and its log row
   are all there or none is.
"""

from __future__ import annotations

import json
import os
import random
import re
import sqlite3
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    message_to_dict,
)
from pg_kit import CheckConnection, PgTarget, schema_version, target_of

from context_distill import ContextDistiller, ContextUpdate, SQLiteMemoryStore
from context_distill.messages import (
    MARKER_KEY,
    MEMORY_MARK,
    REDUCED_MARK,
    derived_id,
    digest,
    text_of,
)
from context_distill.tokens import count_message

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent

Counter = Callable[[str], int]


def cheap_count(text: str) -> int:
    """A fast deterministic token counter for tests that need many turns."""
    return (len(text) + 3) // 4


# -- helpers ----------------------------------------------------------------------


def mark_of(message: BaseMessage) -> str | None:
    kwargs = getattr(message, "additional_kwargs", None) or {}
    mark = kwargs.get(MARKER_KEY)
    return mark if isinstance(mark, str) else None


def ids_of(history: Sequence[BaseMessage]) -> list[str]:
    """The ids the engine gives the messages of a view-style history."""
    return [m.id or derived_id(m, i) for i, m in enumerate(history)]


def same_message(a: BaseMessage, b: BaseMessage) -> bool:
    return bool(message_to_dict(a) == message_to_dict(b))


_ASCII_SEPARATORS = re.compile(r"[\x00-\x2f\x3a-\x40\x5b-\x60\x7b-\x7f]+")
_ASCII_WORD = re.compile(r"[A-Za-z0-9]{3,}")


def search_word(text: str) -> str | None:
    """A whole word of ``text`` (as the FTS tokenizer splits it) that search can look for.

    Only plain ASCII words between ASCII separators qualify, so the tokenizer's
    Unicode tables cannot make the word differ from the token in the index; the
    longest one is taken.
    """
    words = [w for w in _ASCII_SEPARATORS.split(text) if _ASCII_WORD.fullmatch(w)]
    if not words:
        return None
    return max(words, key=len)


# An archive: an SQLite file's path, or a PostgreSQL database and schema.
Archive = str | Path | PgTarget


def open_archive(target: Archive) -> Any:
    """A store on ``target`` (each call opens its own connections)."""
    if isinstance(target, PgTarget):
        return target.open()
    return SQLiteMemoryStore(target)


def raw_connect(path: Archive) -> Any:
    """A read connection of the checks' own (SQLite, or PostgreSQL taking the same SQL)."""
    if isinstance(path, PgTarget):
        return CheckConnection(path)
    conn = sqlite3.connect(str(path), timeout=60.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 60000")
    return conn


# -- database-level checks ----------------------------------------------------------


def check_db(path: Archive, *, thread_id: str | None = None) -> list[str]:
    """Integrity, search index, atomicity of distillations and provenance, from disk.

    Reads the file through its own connection (one read transaction), so it sees
    only what was committed.
    """
    if isinstance(path, PgTarget):
        return _check_pg(path, thread_id)
    problems: list[str] = []
    conn = raw_connect(path)
    try:
        rows = conn.execute("PRAGMA integrity_check").fetchall()
        if rows != [("ok",)]:
            problems.append(f"integrity_check: {rows[:5]}")
            return problems
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if version == 0:
            if tables:
                problems.append(f"schema version 0 but tables exist: {sorted(tables)}")
            return problems
        for fts in ("messages_fts", "facts_fts"):
            try:
                conn.execute(f"INSERT INTO {fts}({fts}, rank) VALUES ('integrity-check', 1)")
            except sqlite3.DatabaseError as exc:
                problems.append(f"{fts} does not match its table: {exc}")
        conn.execute("BEGIN")
        try:
            problems.extend(_check_threads(conn, thread_id))
        finally:
            conn.execute("COMMIT")
    finally:
        conn.close()
    return problems


def _check_pg(target: PgTarget, thread_id: str | None) -> list[str]:
    """PostgreSQL's own structures need no check of ours; the rows' consistency does."""
    if schema_version(target) == 0:
        return []
    conn = CheckConnection(target)
    try:
        return check_thread(conn, thread_id)
    finally:
        conn.close()


def _check_threads(conn: Any, only: str | None) -> list[str]:
    problems: list[str] = []
    scope = "WHERE thread_id = ?" if only is not None else ""
    params: tuple[Any, ...] = (only,) if only is not None else ()
    messages: dict[tuple[str, str], tuple[int, str, int | None]] = {}
    next_seq = dict(conn.execute(f"SELECT thread_id, next_seq FROM threads {scope}", params))
    by_log: dict[int, int] = {}
    for tid, mid, seq, state, dist in conn.execute(
        f"SELECT thread_id, message_id, seq, state, distillation_id FROM messages {scope}", params
    ):
        messages[(tid, mid)] = (seq, state, dist)
        if tid not in next_seq:
            problems.append(f"message {mid!r} of thread {tid!r} has no threads row")
        elif seq >= next_seq[tid]:
            problems.append(f"message {mid!r} of {tid!r}: seq {seq} >= next_seq {next_seq[tid]}")
        if state not in ("archived", "reduced", "distilled"):
            problems.append(f"message {mid!r} of {tid!r} has unknown state {state!r}")
        if dist is not None:
            by_log[dist] = by_log.get(dist, 0) + 1
    logs = {
        row[0]: row[1:]
        for row in conn.execute(
            f"SELECT id, thread_id, outcome, facts, messages FROM distillations {scope}", params
        )
    }
    # A distilled message names the distillation ("ok") that took it out of the view; a
    # tool result a crossing reduced (shown as its facts) names that reduction; one
    # shortened on arrival, or still shown, names none.
    allowed = {"distilled": ("ok",), "reduced": (None, "reduced"), "archived": (None,)}
    for (tid, mid), (_, state, dist) in messages.items():
        outcome = None if dist is None else logs.get(dist, (None, "missing"))[1]
        if state in allowed and outcome not in allowed[state]:
            problems.append(
                f"message {mid!r} of {tid!r}: state {state!r} with distillation {dist!r} "
                f"({outcome})"
            )
    facts_by_log: dict[int, int] = {}
    redone: set[int] = set()
    for fid, tid, dist, source_json, refs_json in conn.execute(
        f"SELECT id, thread_id, distillation_id, source_ids, refs FROM facts {scope}", params
    ):
        facts_by_log[dist] = facts_by_log.get(dist, 0) + 1
        log = logs.get(dist)
        if log is None or log[0] != tid or log[1] not in ("ok", "reduced"):
            problems.append(f"fact {fid} of {tid!r} belongs to distillation {dist} = {log}")
        # A reduction's facts stay when a later distillation (or reduction) takes their
        # source: the source then names the later one.
        later_ok = log is not None and log[1] == "reduced"
        sources = json.loads(source_json)
        refs = json.loads(refs_json)
        if not sources:
            problems.append(f"fact {fid} of {tid!r} names no source message")
        seqs = []
        for source in sources:
            found = messages.get((tid, source))
            if found is None:
                problems.append(f"fact {fid} of {tid!r} names {source!r}, not in its archive")
                continue
            seqs.append(found[0])
            if later_ok and found[2] is not None and found[2] > dist:
                continue
            if found[2] != dist:
                redone.add(dist)
                problems.append(
                    f"message {source!r} of {tid!r} has facts from distillation {dist} but "
                    f"is marked distilled by {found[2]}: distilled twice"
                )
        if sorted(seqs) != refs:
            problems.append(f"fact {fid} of {tid!r}: refs {refs} but sources at {sorted(seqs)}")
    for lid, (tid, outcome, n_facts, n_messages) in logs.items():
        got_facts = facts_by_log.get(lid, 0)
        got_messages = by_log.get(lid, 0)
        if outcome == "ok" and lid not in redone:
            if got_facts != n_facts or got_messages != n_messages or n_facts == 0:
                problems.append(
                    f"distillation {lid} of {tid!r} logs {n_facts} facts/{n_messages} messages; "
                    f"archive holds {got_facts} facts/{got_messages} messages: half done"
                )
        elif outcome == "reduced" and lid not in redone:
            if got_facts != n_facts or got_messages > n_messages or n_facts == 0:
                problems.append(
                    f"reduction {lid} of {tid!r} logs {n_facts} facts/{n_messages} messages; "
                    f"archive holds {got_facts} facts/{got_messages} messages: half done"
                )
        elif got_facts or got_messages:
            problems.append(
                f"failed distillation {lid} ({outcome}) of {tid!r} left "
                f"{got_facts} facts and {got_messages} distilled messages"
            )
    for lid in set(by_log) | set(facts_by_log):
        if lid not in logs:
            problems.append(f"facts or messages point to distillation {lid}, which is not logged")
    return problems


def check_thread(conn: Any, thread_id: str | None) -> list[str]:
    """Atomicity and provenance of one thread's rows, in one read transaction."""
    conn.execute("BEGIN")
    try:
        return _check_threads(conn, thread_id)
    finally:
        conn.execute("COMMIT")


def archived_ids(path: Archive, thread_id: str, conn: Any | None = None) -> dict[str, str]:
    """message id -> state, for one thread, as committed on disk."""
    own = conn is None
    conn = conn or raw_connect(path)
    try:
        return dict(
            conn.execute(
                "SELECT message_id, state FROM messages WHERE thread_id = ?", (thread_id,)
            ).fetchall()
        )
    finally:
        if own:
            conn.close()


# -- view-level checks --------------------------------------------------------------


@dataclass
class ThreadChecker:
    """Checks every view of one thread against its logical history.

    ``history`` is everything the caller ever sent for the thread, in order (for a
    rewrite-style caller, who only keeps the compact view, the caller's own record).
    """

    engine: ContextDistiller
    thread_id: str
    count: Counter
    failing: bool = False  # the distiller has never succeeded for this thread
    db_every: int = 1  # run the database checks every n-th view (0: never)
    verified: set[str] = field(default_factory=set)  # archived copies already compared
    checks: int = 0
    _conn: Any | None = field(default=None, repr=False)

    @property
    def store(self) -> Any:
        return self.engine.store

    @property
    def conn(self) -> Any:
        """A read connection of the checker's own (what is committed, not cached)."""
        if self._conn is None:
            self._conn = raw_connect(target_of(self.store))
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __del__(self) -> None:
        self.close()

    def check(
        self,
        history: Sequence[BaseMessage],
        update: ContextUpdate,
        *,
        ids: Sequence[str] | None = None,
    ) -> list[str]:
        self.checks += 1
        problems: list[str] = []
        tag = f"thread {self.thread_id!r} turn {self.checks}"
        history = [m for m in history if mark_of(m) != MEMORY_MARK]
        hist_ids = list(ids) if ids is not None else ids_of(history)
        position = {id(m): i for i, m in enumerate(history)}
        by_id: dict[str, int] = {}
        for i, mid in enumerate(hist_ids):
            by_id.setdefault(mid, i)
        view = update.view
        anonymous: dict[str, list[int]] = {}
        for i, m in enumerate(history):
            if m.id is None:
                anonymous.setdefault(digest(m), []).append(i)
        shown: dict[int, BaseMessage] = {}
        reduced_at: set[int] = set()
        order: list[int] = []
        memory = 0
        for message in view:
            mark = mark_of(message)
            if mark == MEMORY_MARK:
                memory += 1
                continue
            index = position.get(id(message))
            if index is None and message.id is not None:
                index = by_id.get(message.id)
            if index is None and message.id is None:
                index = next(
                    (i for i in anonymous.get(digest(message), []) if i not in shown), None
                )
            if index is None:
                problems.append(f"{tag}: view holds a message not in the history: {message.id!r}")
                continue
            original = history[index]
            if mark == REDUCED_MARK and mark_of(original) != REDUCED_MARK:
                reduced_at.add(index)
                if not isinstance(original, ToolMessage) or original.type != message.type:
                    problems.append(f"{tag}: reduced copy {message.id!r} of a non-tool message")
            elif message is not original and not same_message(message, original):
                problems.append(f"{tag}: view shows {hist_ids[index]!r} altered")
            if index in shown:
                problems.append(f"{tag}: message {hist_ids[index]!r} is twice in the view")
            shown[index] = message
            order.append(index)
        if memory > 1:
            problems.append(f"{tag}: {memory} memory blocks in the view")
        if order != sorted(order):
            problems.append(f"{tag}: view reorders the history")

        # (2) tool calls whole
        problems.extend(f"{tag}: {p}" for p in tool_pairing(view))

        # (3) pinned
        for i, message in enumerate(history):
            if message.type != "system":
                break
            if i not in shown:
                problems.append(f"{tag}: leading system message {hist_ids[i]!r} not in view")
        humans = [i for i, m in enumerate(history) if m.type == "human"]
        if humans:
            if humans[0] not in shown:
                problems.append(f"{tag}: first human message {hist_ids[humans[0]]!r} not in view")
            last = humans[-1]
            if last not in shown or last in reduced_at:
                problems.append(
                    f"{tag}: latest human message {hist_ids[last]!r} not verbatim in view"
                )

        # (1) nothing lost
        gone = [i for i in range(len(history)) if i not in shown]
        reduced = sorted(reduced_at)
        states = archived_ids("", self.thread_id, self.conn) if gone or reduced else {}
        for i in gone + reduced:
            mid = hist_ids[i]
            state = states.get(mid)
            if state is None:
                problems.append(f"{tag}: message {mid!r} left the view but is not archived")
                continue
            if i in gone and state != "distilled":
                problems.append(f"{tag}: message {mid!r} left the view, archived as {state!r}")
            elif i not in gone and state != "reduced":
                problems.append(f"{tag}: reduced message {mid!r} archived as {state!r}")
            if mid in self.verified:
                continue
            self.verified.add(mid)
            got = self.store.get_messages(self.thread_id, ids=[mid])
            if len(got) != 1 or not same_message(got[0][1], history[i]):
                problems.append(f"{tag}: archived copy of {mid!r} differs from the original")
            problems.extend(self._search(tag, mid, history[i]))
        # A rewound history (an earlier checkpoint of a longer, distilled one) may show
        # its latest human message and newest group although they were distilled: the
        # pinned rule wins over "distilled once". Nothing else may show twice.
        tail = set()
        for i in range(len(history) - 1, -1, -1):
            tail.add(i)
            if not isinstance(history[i], ToolMessage):
                break
        if humans:
            tail.add(humans[-1])
        for i in shown:
            if i in tail:
                continue
            if i not in reduced_at and states.get(hist_ids[i]) == "distilled":
                problems.append(f"{tag}: message {hist_ids[i]!r} is distilled and still shown")
        if self.db_every and self.checks % self.db_every == 0:
            problems.extend(f"{tag}: {p}" for p in check_thread(self.conn, self.thread_id))

        # (4) fail safe
        stats = update.stats
        if self.failing:
            if memory or gone:
                problems.append(f"{tag}: a failing distiller changed the history")
            if stats.distillations:
                problems.append(f"{tag}: failing distiller but {stats.distillations} distillations")

        # (5) stats tell the truth; within budget when pinned and latest allow it
        real = sum(count_message(m, self.count) for m in view)
        if stats.tokens_view != real:
            problems.append(f"{tag}: stats.tokens_view {stats.tokens_view}, view has {real}")
        budget = self.engine.budget_tokens
        if stats.over_budget != (real > budget):
            problems.append(f"{tag}: over_budget {stats.over_budget} with {real}/{budget} tokens")
        if stats.over_budget and not stats.reason:
            problems.append(f"{tag}: over budget without a reason")
        if stats.over_budget and update.distilled and not self.failing:
            floor = self._floor(view)
            if floor + self.engine.keep_recent_tokens <= budget // 2:
                problems.append(
                    f"{tag}: {real} tokens after a distillation, budget {budget}, though pinned "
                    f"+ latest need only {floor} (reason: {stats.reason})"
                )
        return problems

    def _search(self, tag: str, mid: str, original: BaseMessage) -> list[str]:
        text = text_of(original)
        word = search_word(text)
        if word is None:
            return []
        hits = self.store.search(word, thread_id=self.thread_id, limit=100_000)
        for hit in hits:
            if hit.kind == "message" and hit.message_id == mid:
                if hit.text != text:
                    return [f"{tag}: search finds {mid!r} but not word for word"]
                return []
        return [f"{tag}: search for {word!r} does not find archived message {mid!r}"]

    def _floor(self, view: Sequence[BaseMessage]) -> int:
        """Tokens of what may never leave: pinned messages, latest human, newest group."""
        count = self.count
        pinned = 0
        for message in view:
            if message.type == "system" or (message.type == "human" and mark_of(message) is None):
                pinned += count_message(message, count)
                if message.type == "human":
                    break
            else:
                break
        latest = [m for m in view if m.type == "human" and mark_of(m) is None]
        tail = 0
        for message in reversed(view):
            tail += count_message(message, count)
            if not isinstance(message, ToolMessage):
                break
        return pinned + (count_message(latest[-1], count) if latest else 0) + tail


def tool_pairing(view: Sequence[BaseMessage]) -> list[str]:
    """Problems with tool calls and results in a view (invariant 2)."""
    problems: list[str] = []
    pending: dict[str, str] = {}
    owner = None
    for message in view:
        if isinstance(message, ToolMessage):
            if message.tool_call_id not in pending:
                problems.append(
                    f"tool result {message.id!r} for {message.tool_call_id!r} without its call"
                )
            pending.pop(message.tool_call_id, None)
            continue
        if pending:
            problems.append(f"tool call(s) {sorted(pending)} of {owner!r} without all results")
            pending = {}
        if isinstance(message, AIMessage) and message.tool_calls:
            owner = message.id
            pending = {call["id"]: owner for call in message.tool_calls if call.get("id")}
    return problems  # calls still pending at the end are the one in flight


def check_idempotent(
    engine: ContextDistiller, thread_id: str, sent: Sequence[BaseMessage], update: ContextUpdate
) -> list[str]:
    """(6) Processing the same input again distills nothing and returns the same view."""
    if update.stats.over_budget:
        return []
    before = engine.store.stats(thread_id)
    again = engine.update(thread_id, sent)
    problems = []
    if again.distilled:
        problems.append(f"thread {thread_id!r}: the same history twice distilled again")
    if [m.id for m in again.view] != [m.id for m in update.view]:
        problems.append(f"thread {thread_id!r}: the same history twice gave another view")
    after = engine.store.stats(thread_id)
    for key in ("messages_archived", "facts", "distillations"):
        if after[key] != before[key]:
            problems.append(f"thread {thread_id!r}: {key} {before[key]} -> {after[key]}")
    return problems


# -- workloads ---------------------------------------------------------------------

_VOCAB = (
    "alpha beta gamma delta build deploy error warning config parser cache index "
    "server client request response timeout retry login token user order invoice "
    "refund ticket module function class method test passed failed commit branch"
).split()


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_VOCAB) for _ in range(n))


def make_turn(rng: random.Random, tag: str, turn: int, *, big_every: int = 7) -> list[BaseMessage]:
    """One agent turn: maybe a user message, one to three tool rounds, an answer.

    Every message carries a unique word (``zq<tag>x<turn>x<k>``) so search can find it.
    """
    out: list[BaseMessage] = []
    k = 0

    def uniq() -> str:
        nonlocal k
        k += 1
        return f"zq{tag}x{turn}x{k}"

    if turn % 3 == 0 or rng.random() < 0.2:
        out.append(HumanMessage(f"{uniq()} please {_words(rng, 6)} {turn}", id=f"{tag}-h{turn}"))
    for r in range(rng.randint(1, 3)):
        calls = [
            {
                "name": rng.choice(["search", "read_file", "run_tests"]),
                "args": {"q": f"{_words(rng, 2)} {turn}.{r}.{c}"},
                "id": f"{tag}-c{turn}-{r}-{c}",
            }
            for c in range(rng.randint(1, 3))
        ]
        out.append(AIMessage(uniq(), id=f"{tag}-a{turn}-{r}", tool_calls=calls))
        for c, call in enumerate(calls):
            if big_every and (turn * 7 + r + c) % big_every == 0:
                payload = json.dumps(
                    {
                        "marker": uniq(),
                        "rows": [
                            {"id": j, "name": _words(rng, 2), "value": rng.randint(1, 10**6)}
                            for j in range(rng.randint(20, 60))
                        ],
                    }
                )
            else:
                payload = f"{uniq()} {_words(rng, rng.randint(5, 30))} code={rng.randint(1, 999)}"
            out.append(ToolMessage(payload, tool_call_id=call["id"], id=f"{tag}-t{turn}-{r}-{c}"))
    out.append(AIMessage(f"{uniq()} {_words(rng, rng.randint(3, 15))}", id=f"{tag}-r{turn}"))
    return out


def session_start(tag: str) -> list[BaseMessage]:
    return [
        SystemMessage(f"You are agent {tag}. Be brief.", id=f"{tag}-sys"),
        HumanMessage(f"zq{tag}task Task for {tag}: fix the failing build.", id=f"{tag}-task"),
    ]


@dataclass
class Session:
    """A caller driving one thread turn by turn, view style or rewrite style."""

    engine: ContextDistiller
    thread_id: str
    seed: int
    style: str = "view"  # "view": send the whole history; "rewrite": keep only the view
    check: bool = True
    history: list[BaseMessage] = field(default_factory=list)
    held: list[BaseMessage] = field(default_factory=list)  # what a rewrite caller keeps
    count: Counter = cheap_count  # must be the token counter the engine was built with
    turn: int = 0
    checker: ThreadChecker | None = None
    last: ContextUpdate | None = None

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.tag = re.sub(r"[^A-Za-z0-9]", "", self.thread_id)[-12:] or "t"
        self.history = session_start(self.tag)
        self.held = list(self.history)
        if self.check:
            self.checker = ThreadChecker(self.engine, self.thread_id, self.count)

    def next_messages(self) -> list[BaseMessage]:
        self.turn += 1
        return make_turn(self.rng, self.tag, self.turn)

    def sent(self, new: Sequence[BaseMessage]) -> list[BaseMessage]:
        self.history.extend(new)
        if self.style == "view":
            return self.history
        self.held = self.held + list(new)
        return self.held

    def step(self) -> tuple[ContextUpdate, list[str]]:
        sent = self.sent(self.next_messages())
        update = self.engine.update(self.thread_id, sent)
        return update, self.after(update)

    async def astep(self) -> tuple[ContextUpdate, list[str]]:
        sent = self.sent(self.next_messages())
        update = await self.engine.aupdate(self.thread_id, sent)
        return update, self.after(update)

    def after(self, update: ContextUpdate) -> list[str]:
        self.last = update
        if self.style == "rewrite":
            self.held = list(update.view)
        if self.checker is None:
            return []
        return self.checker.check(self.history, update)


# -- the crash-test writer (runs in a child process) --------------------------------

CRASH_BUDGET = 600


def crash_sessions(engine: ContextDistiller, seed: int, threads: int) -> list[Session]:
    rng = random.Random(seed)
    return [
        Session(
            engine,
            f"crash-{seed}-{t}",
            seed * 1000 + t,
            style=rng.choice(["view", "rewrite"]),
            check=False,
        )
        for t in range(threads)
    ]


def direct_records(seed: int, turn: int) -> list[Any]:
    """A batch for a direct ``store.archive`` call (the archive door, no engine)."""
    from context_distill.store import MessageRecord

    rng = random.Random(seed * 7919 + turn)
    records = []
    for j in range(rng.randint(1, 20)):
        message = HumanMessage(f"zqdirect{turn}x{j} {_words(rng, 5)}", id=f"d{turn}-{j}")
        records.append(
            MessageRecord(
                f"d{turn}-{j}",
                "human",
                "digest",
                3,
                text_of(message),
                json.dumps(message_to_dict(message)),
            )
        )
    return records


def crash_writer(
    db: Archive, ack_path: str, seed: int, threads: int, turns: int, phase: str, crash_at: int
) -> int:
    """Drive sessions and direct archive calls; acknowledge each write that returned.

    After every call that returned, one JSON line goes to ``ack_path``, written with
    one ``write`` and fsynced, naming what that call committed. With ``crash_at`` > 0
    the process SIGKILLs itself when SQLite starts its ``crash_at``-th statement,
    counted from the start of ``phase`` ("migrate": opening a new archive; "work":
    the session). Returns the number of statements the phase ran. On PostgreSQL a
    statement is a call of a cursor's ``execute`` (the kill comes before it is sent).
    """
    import signal

    statements = 0

    def tracer(_sql: str) -> None:
        nonlocal statements
        statements += 1
        if statements == crash_at:
            os.kill(os.getpid(), signal.SIGKILL)

    if isinstance(db, PgTarget):
        _pg_traced(db, phase, tracer, ack_path, seed, threads, turns)
        return statements
    original = SQLiteMemoryStore._migrate
    if phase == "migrate":

        def migrate(self: SQLiteMemoryStore) -> None:
            self._conn.set_trace_callback(tracer)
            try:
                original(self)
            finally:
                self._conn.set_trace_callback(None)

        SQLiteMemoryStore._migrate = migrate  # type: ignore[method-assign]
    try:
        store = SQLiteMemoryStore(db)
    finally:
        SQLiteMemoryStore._migrate = original  # type: ignore[method-assign]
    if phase == "migrate":
        store.close()
        return statements
    if phase == "work":
        store._conn.set_trace_callback(tracer)
    _crash_work(store, ack_path, seed, threads, turns)
    return statements


def _pg_traced(
    db: PgTarget,
    phase: str,
    tracer: Callable[[str], None],
    ack_path: str,
    seed: int,
    threads: int,
    turns: int,
) -> None:
    """The crash writer on PostgreSQL: the statements of ``phase`` go through ``tracer``."""
    import psycopg

    original = psycopg.Cursor.execute

    def execute(self: Any, *args: Any, **kwargs: Any) -> Any:
        tracer("")
        return original(self, *args, **kwargs)

    try:
        if phase == "migrate":
            psycopg.Cursor.execute = execute  # type: ignore[method-assign]
        store = db.open()
        if phase == "migrate":
            store.close()
            return
        if phase == "work":
            psycopg.Cursor.execute = execute  # type: ignore[method-assign]
        _crash_work(store, ack_path, seed, threads, turns)
    finally:
        psycopg.Cursor.execute = original  # type: ignore[method-assign]


def _crash_work(store: Any, ack_path: str, seed: int, threads: int, turns: int) -> int:
    """The crash writer's session: turns and direct archive calls, each acknowledged."""
    engine = ContextDistiller(store, budget_tokens=CRASH_BUDGET, token_counter=cheap_count)
    fd = os.open(ack_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def ack(entry: dict[str, Any]) -> None:
        os.write(fd, (json.dumps(entry) + "\n").encode())
        os.fsync(fd)

    sessions = crash_sessions(engine, seed, threads)
    acked: dict[str, int] = {s.thread_id: 0 for s in sessions}  # messages acknowledged as seen
    gone: dict[str, set[str]] = {s.thread_id: set() for s in sessions}
    shortened: dict[str, set[str]] = {s.thread_id: set() for s in sessions}
    for turn in range(turns):
        for s in sessions:
            update, _ = s.step()
            shown = {m.id for m in update.view}
            done, short = gone[s.thread_id], shortened[s.thread_id]
            left = [m.id for m in s.history if m.id not in shown and m.id not in done]
            reduced = [
                m.id for m in update.view if mark_of(m) == REDUCED_MARK and m.id not in short
            ]
            done.update(left)
            short.update(reduced)
            # Every message this call saw is archived by the time it returned.
            seen = [m.id for m in s.history[acked[s.thread_id] :] if mark_of(m) is None]
            acked[s.thread_id] = len(s.history)
            ack(
                {
                    "thread": s.thread_id,
                    "turn": s.turn,
                    "left": left,
                    "reduced": reduced,
                    "seen": seen,
                }
            )
        if turn % 2 == 0:
            records = direct_records(seed, turn)
            store.archive(f"crash-{seed}-direct", records)
            ack({"thread": f"crash-{seed}-direct", "archived": [r.message_id for r in records]})
    os.close(fd)
    store.close()
    return 0


def read_acks(ack_path: str | Path) -> tuple[list[dict[str, Any]], int]:
    """Acknowledged writes; a torn last line (killed mid-write) is not an ack."""
    path = Path(ack_path)
    if not path.exists():
        return [], 0
    lines = path.read_bytes().split(b"\n")
    entries = []
    torn = 0
    for number, line in enumerate(lines):
        if not line:
            continue
        try:
            entries.append(json.loads(line))
        except ValueError:
            if number != len(lines) - 1:
                raise
            torn += 1
    return entries, torn


@dataclass
class CrashReport:
    writes_checked: int = 0
    problems: list[str] = field(default_factory=list)


def check_after_crash(
    db: Archive, ack_path: str | Path, seed: int, threads: int, *, resume_turns: int = 2
) -> CrashReport:
    """Everything that must hold after a writer died at any moment."""
    report = CrashReport()
    try:
        store = open_archive(db)
    except Exception as exc:  # the archive must always open again
        report.problems.append(f"archive does not open after the crash: {exc!r}")
        return report
    try:
        if isinstance(store, SQLiteMemoryStore) and not store.integrity_ok():
            report.problems.append("integrity_check failed after the crash")
        report.problems.extend(check_db(db))
        entries, _torn = read_acks(ack_path)
        turns: dict[str, int] = {}
        for entry in entries:
            tid = entry["thread"]
            states = archived_ids(db, tid)
            for mid in entry.get("left", []):
                report.writes_checked += 1
                if states.get(mid) != "distilled":
                    report.problems.append(
                        f"acknowledged distillation of {mid!r} ({tid}) lost: {states.get(mid)}"
                    )
            for mid in entry.get("seen", []):
                report.writes_checked += 1
                if mid not in states:
                    report.problems.append(f"message {mid!r} ({tid}) seen by a call, not archived")
            for mid in entry.get("reduced", []) + entry.get("archived", []):
                report.writes_checked += 1
                if mid not in states:
                    report.problems.append(f"acknowledged archive of {mid!r} ({tid}) lost")
            if "turn" in entry and "left" in entry:
                turns[tid] = max(turns.get(tid, 0), int(entry["turn"]))
        # A restarted process picks every thread up where the store says it stands.
        engine = ContextDistiller(store, budget_tokens=CRASH_BUDGET, token_counter=cheap_count)
        for s in crash_sessions(engine, seed, threads):
            s.style = "view"
            for _ in range(turns.get(s.thread_id, 0) + 1):
                s.history.extend(s.next_messages())
            s.checker = ThreadChecker(engine, s.thread_id, s.count)
            update = engine.update(s.thread_id, s.history)
            report.problems.extend(s.after(update))
            for _ in range(resume_turns):
                _, found = s.step()
                report.problems.extend(found)
        report.problems.extend(check_db(db))
    finally:
        store.close()
    return report


# -- concurrency workers ------------------------------------------------------------


@dataclass
class WorkerResult:
    problems: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # exceptions that reached the caller
    turns: int = 0
    archived: int = 0  # messages archived (distilled, reduced or archived directly)
    direct_ids: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text: str) -> WorkerResult:
        return cls(**json.loads(text))


def concurrency_worker(
    db: Archive,
    name: str,
    threads: int,
    turns: int,
    *,
    engine: ContextDistiller | None = None,
    budget: int = 500,
    check: bool = True,
    direct_every: int = 3,
) -> WorkerResult:
    """Drive ``threads`` conversation threads of its own for ``turns`` turns each.

    Opens its own store (one connection) unless an engine is given; interleaves
    direct ``store.archive`` calls under a thread of its own. Every exception is
    recorded, never raised: the caller counts them.
    """
    result = WorkerResult()
    own = engine is None
    try:
        if engine is None:
            engine = ContextDistiller(
                open_archive(db), budget_tokens=budget, token_counter=cheap_count
            )
        sessions = [
            Session(
                engine,
                f"{name}-{t}",
                zlib.crc32(f"{name}-{t}".encode()),
                style="view" if t % 2 == 0 else "rewrite",
                check=check,
                count=cheap_count,
            )
            for t in range(threads)
        ]
        for turn in range(turns):
            for s in sessions:
                try:
                    _, problems = s.step()
                except Exception as exc:
                    result.errors.append(f"{s.thread_id} turn {s.turn}: {exc!r}")
                    continue
                result.turns += 1
                result.problems.extend(problems)
            if direct_every and turn % direct_every == 0:
                records = direct_records(zlib.crc32(name.encode()), turn)
                records = [
                    type(r)(f"{name}-{r.message_id}", r.role, r.digest, r.tokens, r.text, r.data)
                    for r in records
                ]
                try:
                    engine.store.archive(f"{name}-direct", records)
                    result.direct_ids.extend(r.message_id for r in records)
                except Exception as exc:
                    result.errors.append(f"{name}-direct archive: {exc!r}")
        for s in sessions:
            stats = engine.store.stats(s.thread_id)
            result.archived += stats["messages_archived"]
    except Exception as exc:
        result.errors.append(f"{name}: {exc!r}")
    finally:
        if own and engine is not None:
            engine.store.close()
    result.archived += len(result.direct_ids)
    return result


def fork_worker(target: Callable[[], WorkerResult]) -> tuple[int, Any]:
    """Run ``target`` in a forked child; return (pid, read end of its result pipe)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        code = 0
        try:
            payload = target().to_json().encode()
        except BaseException as exc:
            payload = WorkerResult(errors=[f"worker crashed: {exc!r}"]).to_json().encode()
            code = 3
        with os.fdopen(write, "wb") as pipe:
            pipe.write(payload)
        os._exit(code)
    os.close(write)
    return pid, os.fdopen(read, "rb")


def join_worker(pid: int, pipe: Any) -> WorkerResult:
    with pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    if not data:
        return WorkerResult(errors=[f"worker {pid} died with status {status}"])
    return WorkerResult.from_json(data.decode())
