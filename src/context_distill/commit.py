"""Commit: check what a distiller returned, then store it in one transaction, or
record why not.

There is one failure path. Whatever went wrong (the distiller raised, timed
out, returned nothing usable, or the store refused the commit) the history stays
as it was, the failure is logged and recorded, and the policy's back-off decides
when to try again. Over budget beats amnesia.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import BaseMessage

from .dates import to_iso
from .errors import StoreError
from .ledger import TokenCache
from .memory import MemoryBlock
from .messages import marker
from .policy import Budget, Job, backoff, fit_memory, learned_ratio
from .prefetch import clean_fact_text
from .reduced import SHORTENED, Made, facts_copies, shortened_copies
from .store import (
    DISTILLED,
    REDUCED,
    Committed,
    DistillationLog,
    DistilledElsewhere,
    FactRecord,
    MemoryStore,
    MessageRecord,
)
from .thread_state import Inline, ThreadState
from .types import Fact, GroupFacts

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Outcome:
    """What a distiller call came back with."""

    results: list[GroupFacts] | None = None
    error: BaseException | None = None
    outcome: str = "ok"
    duration_s: float = 0.0
    prefetched: int = 0  # groups whose facts were made in the background

    @classmethod
    def failed(cls, error: BaseException, started: float) -> Outcome:
        outcome = "timeout" if isinstance(error, TimeoutError) else "failed"
        return cls(error=error, outcome=outcome, duration_s=time.perf_counter() - started)

    @classmethod
    def succeeded(
        cls, ready: list[GroupFacts | None], fresh: list[GroupFacts], missing: int, started: float
    ) -> Outcome:
        return cls(
            results=_merge(ready, fresh),
            duration_s=time.perf_counter() - started,
            prefetched=len(ready) - missing,
        )


def _merge(ready: list[GroupFacts | None], fresh: list[GroupFacts]) -> list[GroupFacts]:
    """Prepared results in place, fresh ones filling the gaps in order."""
    if not isinstance(fresh, list):
        return fresh  # let the output check name what came back
    supply = iter(fresh)
    merged: list[Any] = [found if found is not None else next(supply, None) for found in ready]
    # A shortfall leaves None in place and a surplus hangs off the end: the output
    # check then names the mismatch.
    return merged + list(supply)


def checked_facts(
    job: Job, results: object, *, allow_empty: bool = False
) -> tuple[list[list[Fact]], str | None]:
    """Facts per group if the distiller's output is usable, else the reason it is not.

    ``allow_empty``: a group may come back without facts (a reduction then leaves
    that result as it is), but not every group.
    """
    if not isinstance(results, list) or len(results) != len(job.groups):
        got = len(results) if isinstance(results, list) else type(results).__name__
        return [], f"returned {got} results for {len(job.groups)} groups"
    cleaned: list[list[Fact]] = []
    for index, (group, result) in enumerate(zip(job.groups, results, strict=True)):
        if not isinstance(result, GroupFacts):
            return [], f"result {index} is a {type(result).__name__}, not GroupFacts"
        allowed = set(group.message_ids)
        facts: list[Fact] = []
        for fact in result.facts:
            if not isinstance(fact, Fact) or not isinstance(fact.text, str):
                return [], f"result {index} holds a {type(fact).__name__}, not a Fact"
            text = clean_fact_text(fact.text)
            if not any(ch.isalnum() for ch in text):
                continue  # blank or punctuation only: says nothing
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                return [], f"result {index} holds text that is not valid Unicode"
            sources = tuple(i for i in fact.source_ids if i in allowed) or group.message_ids
            facts.append(Fact(text, sources))
        if not facts and not allow_empty:
            return [], f"no facts for group {index} (messages {', '.join(group.message_ids)})"
        cleaned.append(facts)
    if allow_empty and cleaned and not any(cleaned):
        return [], f"no facts for any of {len(cleaned)} groups"
    return cleaned, None


def _details(outcome: Outcome) -> dict[str, Any]:
    results = outcome.results
    details: dict[str, Any] = {}
    if results:
        dropped = sum(r.dropped for r in results)
        fallbacks = [r.fallback for r in results if r.fallback]
        notes = [note for r in results for note in r.notes]
        if dropped:
            details["grounding_dropped"] = dropped
        if fallbacks:
            details["fallbacks"] = {name: fallbacks.count(name) for name in set(fallbacks)}
        if notes:
            details["notes"] = notes[:20]
    if outcome.prefetched:
        details["prefetched_groups"] = outcome.prefetched
    return details


def _fact_records(facts: list[list[Fact]], memory: MemoryBlock) -> list[FactRecord]:
    return [
        FactRecord(fact.text, fact.source_ids, memory.fact_tokens(fact.text) + 4)
        for group_facts in facts
        for fact in group_facts
    ]


class Committer:
    """Turns a distiller's outcome into a committed distillation or a recorded failure."""

    def __init__(
        self, store: MemoryStore, budget: Budget, distiller_name: str, tokens: TokenCache
    ) -> None:
        self._store = store
        self._budget = budget
        self._name = distiller_name
        self._tokens = tokens

    def finish(self, thread: ThreadState, job: Job, outcome: Outcome) -> str:
        """Commit the job's facts, or record why not.

        Returns ``"committed"``, ``"reduced"`` (tool results shown reduced),
        ``"skipped"`` (nothing worth reducing), ``"dropped"`` (groups distilled
        before, shown again by a rewound history, left the view without new facts) or
        ``"stopped"`` (a failure, or another writer got there first: no more rounds
        this turn).
        """
        if job.kind != "distill":
            return self._reduce(thread, job, outcome)
        if not job.groups:  # only groups distilled before (a rewound history): drop them
            thread.ledger.remove(job.done)
            thread.version += 1
            fit_memory(self._budget, thread.ledger, thread.memory)
            return "dropped"
        source_tokens = sum(group.tokens for group in job.live)
        read = max(sum(group.tokens for group in job.groups), source_tokens)  # originals too
        log = DistillationLog(
            distiller=self._name,
            outcome=outcome.outcome,
            groups=len(job.live),
            messages=sum(len(group.messages) for group in job.live),
            tokens_before=job.tokens_before,
            tokens_after=job.tokens_before,
            source_tokens=source_tokens,
            duration_s=outcome.duration_s,
        )
        records: list[FactRecord] = []
        if outcome.error is not None:
            reason: str | None = f"{type(outcome.error).__name__}: {outcome.error}"
        else:
            facts, reason = checked_facts(job, outcome.results)
            if reason is not None:
                log.outcome = "empty" if reason.startswith("no facts") else "rejected"
            else:
                records = _fact_records(facts, thread.memory)
                fact_tokens = sum(record.tokens for record in records)
                if fact_tokens > 1.2 * read + 32:
                    reason = f"facts ({fact_tokens} tokens) larger than their source ({read})"
                    log.outcome = "rejected"
        if reason is not None:
            log.error = reason
            self.fail(thread, log, record=True)
            return "stopped"
        log.facts = len(records)
        log.fact_tokens = sum(record.tokens for record in records)
        log.tokens_after = max(0, job.tokens_before - source_tokens + log.fact_tokens)
        log.details = _details(outcome)
        return self._commit(thread, job, records, log)

    def _commit(
        self, thread: ThreadState, job: Job, records: list[FactRecord], log: DistillationLog
    ) -> str:
        originals = [MessageRecord.archived(mid) for group in job.live for mid in group.ids]
        committed = self._store_commit(thread, originals, records, log, to_iso(job.anchor_after))
        if committed is None:
            return "stopped"
        thread.ledger.remove(job.live + job.done)
        archive = thread.archive
        archive.distilled.add_all(r.message_id for r in originals)
        for record in originals:
            archive.inline.pop(record.message_id, None)
        archive.last_log_id = committed.log_id
        archive.anchor = job.anchor_after
        thread.memory.add(committed.facts)
        totals = thread.totals
        totals.distillations += 1
        totals.ratio = learned_ratio(totals.ratio, log.fact_tokens, log.source_tokens)
        health = thread.health
        health.failures_in_row = 0
        health.retry_turn = 0
        thread.version += 1
        fit_memory(self._budget, thread.ledger, thread.memory)
        self.save_memory(thread)
        logger.debug(
            "thread %s: distilled %d messages (%d tokens) into %d facts (%d tokens)",
            thread.thread_id,
            log.messages,
            log.source_tokens,
            len(committed.facts),
            log.fact_tokens,
        )
        return "committed"

    def _store_commit(
        self,
        thread: ThreadState,
        originals: list[MessageRecord],
        records: list[FactRecord],
        log: DistillationLog,
        anchor: str | None,
        state: str = DISTILLED,
    ) -> Committed | None:
        """One transaction in the store; None (failure recorded) when it did not commit."""
        try:
            return self._store.commit_distillation(
                thread.thread_id,
                originals=originals,
                facts=records,
                log=log,
                anchor=anchor,
                state=state,
            )
        except DistilledElsewhere as exc:
            logger.info("thread %s: %s; reloading it", thread.thread_id, exc)
            thread.archive.loaded = False  # the next call rebuilds from the store
        except StoreError as exc:
            log.outcome, log.error = "failed", f"not committed: {exc}"
            self.fail(thread, log, record=False)
        return None

    def _reduce(self, thread: ThreadState, job: Job, outcome: Outcome) -> str:
        """Commit reduced copies of tool results (facts stored with their sources, the
        originals marked reduced), or record why not; the view changes only then."""
        log = DistillationLog(
            distiller=self._name if job.kind == "reduce" else "shorten",
            outcome="reduced",
            groups=len(job.live),
            messages=len(job.live),
            tokens_before=job.tokens_before,
            tokens_after=job.tokens_before,
            duration_s=outcome.duration_s,
        )
        if job.kind == "reduce":
            made, reason = self._facts_copies(thread, job, outcome, log)
        else:
            made, reason = shortened_copies(job, self._originals(thread, job), self._tokens), None
        if reason is not None:
            log.error = reason
            self.fail(thread, log, record=True)
            return "stopped"
        if not made:
            return "skipped"
        records = [record for *_, facts in made for record in facts]
        log.groups = log.messages = len(made)
        log.facts = len(records)
        log.source_tokens = sum(group.tokens_each[pos] for group, pos, _, _, _ in made)
        log.fact_tokens = sum(record.tokens for record in records)
        log.tokens_after = job.tokens_before - sum(
            group.tokens_each[pos] - tokens for group, pos, _, tokens, _ in made
        )
        ids = [group.ids[pos] for group, pos, *_ in made]
        limit = job.limits[0] if job.kind == "shorten" else None
        if limit is not None:
            log.details = {SHORTENED: dict.fromkeys(ids, limit)}
        originals = [MessageRecord.archived(message_id) for message_id in ids]
        if self._store_commit(thread, originals, records, log, None, REDUCED) is None:
            return "stopped"
        for message_id, (*_, facts) in zip(ids, made, strict=True):
            thread.archive.inline[message_id] = Inline(tuple(f.text for f in facts), limit)
        thread.ledger.replace([(g, pos, copy, tokens) for g, pos, copy, tokens, _ in made])
        if job.kind == "reduce":
            thread.totals.ratio = learned_ratio(
                thread.totals.ratio, log.fact_tokens, log.source_tokens
            )
            health = thread.health
            health.failures_in_row = 0
            health.retry_turn = 0
        thread.version += 1
        fit_memory(self._budget, thread.ledger, thread.memory)
        return "reduced"

    def _facts_copies(
        self, thread: ThreadState, job: Job, outcome: Outcome, log: DistillationLog
    ) -> tuple[list[Made], str | None]:
        """Copies showing each result's facts; the reason when the distiller's output
        is unusable (results whose facts save nothing are not asked again)."""
        if outcome.error is not None:
            log.outcome = outcome.outcome
            return [], f"{type(outcome.error).__name__}: {outcome.error}"
        facts, reason = checked_facts(job, outcome.results, allow_empty=True)
        if reason is not None:
            log.outcome = "empty" if reason.startswith("no facts") else "rejected"
            return [], reason
        return facts_copies(job, facts, self._tokens, thread.archive.unreducible), None

    def _originals(self, thread: ThreadState, job: Job) -> dict[str, BaseMessage]:
        """Originals of results the view shows shortened already, from the archive."""
        found: dict[str, BaseMessage] = {}
        for group, position in zip(job.live, job.positions, strict=True):
            if marker(group.messages[position]) is None:
                continue
            message_id = group.ids[position]
            try:
                got = self._store.get_messages(thread.thread_id, ids=[message_id])
            except StoreError as exc:
                logger.warning("thread %s: original not read: %s", thread.thread_id, exc)
                continue
            if got:
                found[message_id] = got[0][1]
        return found

    def save_memory(self, thread: ThreadState) -> None:
        """Store the memory block's room and the facts it let go (the restart view)."""
        retired = thread.memory.take_retired()
        thread.archive.saved_cap = thread.memory.cap
        thread.archive.saved_pages = thread.memory.pages_written
        pages = thread.memory.pages
        try:
            self._store.set_memory_cap(
                thread.thread_id,
                thread.memory.cap,
                retired=retired,
                retired_at=thread.archive.last_log_id,
                pages=pages,
            )
        except StoreError as exc:  # only the restart view depends on it
            logger.warning("thread %s: memory state not saved: %s", thread.thread_id, exc)

    def fail(self, thread: ThreadState, log: DistillationLog, *, record: bool) -> None:
        """The one failure path: count it, back off, log it, record it if we can."""
        health = thread.health
        health.failures += 1
        health.failures_in_row += 1
        health.retry_turn = health.turn + backoff(health.failures_in_row)
        health.last_error = log.error
        logger.warning(
            "thread %s: distillation by %s %s (%s); history kept as it was, retry in %d turn(s)",
            thread.thread_id,
            log.distiller,
            log.outcome,
            log.error,
            health.retry_turn - health.turn,
        )
        if not record:
            return
        try:
            self._store.record_failure(thread.thread_id, log)
        except StoreError as exc:
            logger.error("thread %s: could not record the failure: %s", thread.thread_id, exc)
