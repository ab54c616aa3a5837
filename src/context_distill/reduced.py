"""Reduced tool results: how the view shows them, and how a rebuild shows them again.

A reduced result keeps its id and tool_call_id (calls and results stay paired) and
carries ``REDUCED_MARK``. It is committed like a distillation with outcome
``reduced``: its facts stored with their source, the original marked reduced, and
for a shortened one the token limit in the log's details, so that a process that
rebuilds the thread from the store makes the very same copy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import BaseMessage, ToolMessage

from .distillers.extractive import reduce_tool_result, reduced_facts
from .ledger import LiveGroup, TokenCache
from .messages import MARKER_KEY, REDUCED_MARK
from .policy import Job
from .prefetch import clean_fact_text
from .store import FactRecord, ThreadSnapshot
from .thread_state import Inline
from .tokens import TextCounter
from .types import Fact

NOTE = "[context-distill: output reduced to its facts; original archived]"
NOTE_TOKENS = 16
FACTS_LINE = "\nFacts: "  # where distillers.extractive.reduced_facts reads them back
SHORTENED = "shortened"  # log details: {message id: token limit} of shortened results
_UNPAIRED = "tool result → "  # the extractive distiller's lead for a result asked alone


def facts_copy(shown: ToolMessage, message_id: str, facts: Sequence[str]) -> ToolMessage:
    """The tool result as the view shows it once reduced: a note and its facts."""
    body = "\n".join(text.removeprefix(_UNPAIRED) for text in facts)
    return ToolMessage(
        content=f"{NOTE}{FACTS_LINE}{body}",
        tool_call_id=shown.tool_call_id,
        id=shown.id or message_id,
        name=shown.name,
        status=shown.status,
        additional_kwargs={**shown.additional_kwargs, MARKER_KEY: REDUCED_MARK},
    )


def shortened_copy(
    original: ToolMessage, message_id: str, tokens: int, limit: int, count: TextCounter
) -> ToolMessage | None:
    """The tool result cut to its facts, head and tail within ``limit`` tokens."""
    return reduce_tool_result(original, message_id, tokens, limit, count)


def copy_of(
    inline: Inline, original: ToolMessage, message_id: str, tokens: int, count: TextCounter
) -> ToolMessage | None:
    """The copy an earlier crossing made of ``original``, made again."""
    if inline.limit is not None:
        return shortened_copy(original, message_id, tokens, inline.limit, count)
    return facts_copy(original, message_id, inline.facts)


def inline_from(
    snapshot: ThreadSnapshot, logs: Sequence[Mapping[str, Any]]
) -> tuple[dict[str, Inline], frozenset[int]]:
    """Results the store holds reduced, each as its latest reduction made it, and the
    ids of the reductions (their facts are shown inline, never in the memory block)."""
    reductions = {int(row["id"]): row for row in logs if row.get("outcome") == "reduced"}
    if not reductions:
        return {}, frozenset()
    texts: dict[int, dict[str, list[str]]] = {}
    for fact in snapshot.facts:
        if fact.distillation_id in reductions:
            by_source = texts.setdefault(fact.distillation_id, {})
            for source in fact.source_ids:
                by_source.setdefault(source, []).append(fact.text)
    inline: dict[str, Inline] = {}
    for log_id in sorted(reductions):
        details = reductions[log_id].get("details")
        limits = details.get(SHORTENED, {}) if isinstance(details, dict) else {}
        for message_id, facts in texts.get(log_id, {}).items():
            if message_id in snapshot.reduced:
                limit = limits.get(message_id)
                inline[message_id] = Inline(tuple(facts), int(limit) if limit else None)
    return inline, frozenset(reductions)


# A reduced copy made: its group, its position there, the copy, its tokens, its facts.
Made = tuple[LiveGroup, int, BaseMessage, int, list[FactRecord]]


def fact_record(text: str, message_id: str, count: TextCounter) -> FactRecord:
    return FactRecord(text, (message_id,), count(text) + 4)


def facts_copies(
    job: Job, facts: Sequence[Sequence[Fact]], tokens: TokenCache, unreducible: set[str]
) -> list[Made]:
    """For each result of a reduce job, the copy showing its facts, where that is
    smaller than what the view shows now; the others go into ``unreducible``."""
    made: list[Made] = []
    for group, position, found in zip(job.live, job.positions, facts, strict=True):
        shown = group.messages[position]
        message_id = group.ids[position]
        if not found or not isinstance(shown, ToolMessage):
            unreducible.add(message_id)
            continue
        copy = facts_copy(shown, message_id, [fact.text for fact in found])
        size = tokens.message_tokens(copy, message_id + "#reduced", None)
        if size >= group.tokens_each[position] * 0.9:
            unreducible.add(message_id)
            continue
        records = [fact_record(fact.text, message_id, tokens.count) for fact in found]
        made.append((group, position, copy, size, records))
    return made


def shortened_copies(
    job: Job, originals: Mapping[str, BaseMessage], tokens: TokenCache
) -> list[Made]:
    """For each result of a shorten job, the copy cut to its facts, head and tail
    (model-free); ``originals`` holds those the view already shows shortened."""
    made: list[Made] = []
    for group, position, limit in zip(job.live, job.positions, job.limits, strict=True):
        message_id = group.ids[position]
        shown = group.messages[position]
        original = originals.get(message_id, shown)
        if not isinstance(original, ToolMessage) or original.additional_kwargs.get(MARKER_KEY):
            continue
        size = tokens.message_tokens(original, message_id, None)
        copy = shortened_copy(original, message_id, size, limit, tokens.count)
        if copy is None:
            continue
        copy_size = tokens.message_tokens(copy, message_id + "#reduced", None)
        if copy_size >= group.tokens_each[position]:
            continue
        text = clean_fact_text(reduced_facts(copy) or "long output (archived)")
        made.append(
            (group, position, copy, copy_size, [fact_record(text, message_id, tokens.count)])
        )
    return made
