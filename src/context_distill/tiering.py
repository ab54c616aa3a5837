"""Tiered reduction, planned: what a crossing of the budget changes, in which order.

Before whole groups go into the memory block, the results of older tool calls are
replaced by their facts while the assistant's own words and calls stay verbatim:
they are short, dense in names, and what an agent re-reads most. The newest results
stay whole unless they would starve the memory block; then they are cut to their
facts, head and tail. How a reduced result looks and is rebuilt: reduced.py.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from langchain_core.messages import BaseMessage

from .dates import advance
from .ledger import Ledger, LiveGroup
from .messages import REDUCED_MARK, marker
from .policy import (
    TARGET_RATIO,
    Budget,
    Job,
    beside_need,
    distill_need,
    fit_memory,
    only_ready,
    select,
)
from .reduced import NOTE_TOKENS
from .thread_state import Archive, ThreadState
from .types import Group, GroupFacts

KEEP_RESULTS = 3  # newest groups with tool results whose results stay verbatim
MIN_REDUCE_TOKENS = 64  # smaller results stay verbatim: their facts would save little

#: Reads an archived original back by message id, with its tokens (None when it cannot).
Original = Callable[[str], tuple[BaseMessage, int] | None]


def _recalled(group: LiveGroup, position: int, recall_tool: str | None) -> bool:
    """The recall tool's answer: an original the agent asked for, word for word."""
    return recall_tool is not None and getattr(group.messages[position], "name", None) == (
        recall_tool
    )


def reducible(
    ledger: Ledger, archive: Archive, recall_tool: str | None = None
) -> list[tuple[LiveGroup, int]]:
    """Results beyond the newest few not shown as facts yet, oldest first, as
    (group, position): what the next crossing reduces before anything else."""
    found = []
    for group, position in ledger.tool_results(KEEP_RESULTS):
        message_id = group.ids[position]
        known = archive.inline.get(message_id)
        if (
            group.tokens_each[position] >= MIN_REDUCE_TOKENS
            and not _recalled(group, position, recall_tool)
            and message_id not in archive.unreducible
            and (known is None or known.limit is not None)
        ):
            found.append((group, position))
    return found


def saving(group: LiveGroup, position: int, ratio: float) -> float:
    """Tokens a result is expected to save once shown as its facts."""
    return group.tokens_each[position] * (1.0 - ratio) - NOTE_TOKENS


def reduce_job(
    thread_id: str,
    items: Sequence[tuple[LiveGroup, int]],
    need: float,
    ratio: float,
    view: int,
    round_: int,
) -> Job | None:
    """The oldest of ``items`` expected to save ``need`` tokens once shown as their
    facts; each result is asked of the distiller alone."""
    live: list[LiveGroup] = []
    positions: list[int] = []
    requests: list[Group] = []
    saved = 0.0
    for group, position in items:
        tokens = group.tokens_each[position]
        live.append(group)
        positions.append(position)
        requests.append(
            Group(
                thread_id=thread_id,
                messages=(group.messages[position],),
                message_ids=(group.ids[position],),
                tokens=tokens,
                target_tokens=max(1, int(tokens * TARGET_RATIO)),
            )
        )
        saved += saving(group, position, ratio)
        if saved >= need:
            break
    if not live:
        return None
    return Job(live, requests, view, None, round_, kind="reduce", positions=positions)


def shorten_floor(budget: Budget) -> int:
    """The fewest tokens a result is shortened to when the memory block needs room:
    only a huge result yields, and never below an eighth of the budget (the agent
    has not read the newest ones yet)."""
    return max(budget.budget_tokens // 8, 64)


def water_level(sizes: Sequence[int], need: float, floor: int) -> int:
    """The highest limit at or above ``floor`` that, cutting every size above it to
    it, saves ``need`` tokens (``floor`` when even that saves less)."""
    low, high = floor, max(sizes, default=floor)
    if sum(max(size - low, 0) for size in sizes) < need:
        return floor
    while low < high:
        middle = (low + high + 1) // 2
        if sum(max(size - middle, 0) for size in sizes) >= need:
            low = middle
        else:
            high = middle - 1
    return low


def shorten_job(
    ledger: Ledger,
    archive: Archive,
    need: float,
    floor: int,
    view: int,
    round_: int,
    recall_tool: str | None = None,
) -> Job | None:
    """The newest results, largest first, cut to one limit that saves ``need`` tokens:
    the recent turns yield before the memory block starves (the recall tool's answers
    never do: the agent asked for those words)."""
    found: list[tuple[LiveGroup, int, int]] = []
    for group, position in ledger.tool_results(0):
        known = archive.inline.get(group.ids[position])
        tokens = group.tokens_each[position]
        if _recalled(group, position, recall_tool):
            continue
        if tokens > floor and (known is None or known.limit is not None):
            found.append((group, position, tokens))
    if not found:
        return None
    limit = water_level([tokens for _, _, tokens in found], need, floor)
    chosen = [(group, position) for group, position, tokens in found if tokens > limit]
    if not chosen:
        return None
    return Job(
        [group for group, _ in chosen],
        [],
        view,
        None,
        round_,
        kind="shorten",
        positions=[position for _, position in chosen],
        limits=[limit] * len(chosen),
    )


def plan(
    budget: Budget,
    thread: ThreadState,
    round_: int,
    original: Original | None = None,
    made_ahead: Callable[[Sequence[Group]], list[GroupFacts | None]] | None = None,
    recall_tool: str | None = None,
) -> Job | None:
    """This round's view change, in tiers: older tool results shown as their facts;
    whole groups into the memory block when reductions alone will not do (first, so
    that no result is reduced just before its group goes); the newest results cut
    when nothing else is left. None: the view stays (the memory block refitted).

    ``made_ahead`` (background distillation): once a round has brought the view
    within the budget, later rounds take only facts made ahead. ``recall_tool``: its
    answers are never reduced or shortened."""
    health = thread.health
    ledger, memory = thread.ledger, thread.memory
    waiting = health.turn < health.retry_turn
    need = distill_need(budget, ledger, memory, round_, waiting)
    if need is None:
        return None
    view = ledger.view_tokens(memory.tokens)
    ratio = thread.totals.ratio
    items = reducible(ledger, thread.archive, recall_tool)
    savings: dict[int, float] = {}
    for group, position in items:
        savings[id(group)] = savings.get(id(group), 0.0) + saving(group, position, ratio)
    job = None
    if sum(savings.values()) < need:
        target = budget.target(ledger.pinned_tokens)
        beside = beside_need(budget, ledger)
        job = whole_job(budget, thread, view - target, round_, beside, savings, original)
    job = (
        job
        or reduce_job(thread.thread_id, items, need, ratio, view, round_)
        or shorten_job(
            ledger, thread.archive, need, shorten_floor(budget), view, round_, recall_tool
        )
    )
    if job is not None and made_ahead is not None:
        job = only_ready(budget, job, made_ahead(job.groups))
    if job is None:
        fit_memory(budget, ledger, memory)
    return job


def whole_job(
    budget: Budget,
    thread: ThreadState,
    need: float,
    round_: int,
    beside: float = 0,
    reducible: Mapping[int, float] | None = None,
    original: Original | None = None,
    keep_recent_tokens: int | None = None,
) -> Job | None:
    """Whole groups into the memory block (policy.select), from the thread's anchor.

    A result the view shows cut to its head and tail is distilled from its original
    (``original`` reads it back): the cut copy's facts were cut to fit too.
    ``keep_recent_tokens``: the newest turns left out (the budget's, unless given).
    """
    archive = thread.archive
    if not archive.anchor_ready:
        archive.anchor = advance(archive.anchor, thread.ledger.pinned)
        archive.anchor_ready = True
    job = select(
        thread.thread_id,
        thread.ledger,
        need,
        thread.totals.ratio,
        budget.keep_recent_tokens if keep_recent_tokens is None else keep_recent_tokens,
        archive.anchor,
        archive.distilled,
        thread.ledger.view_tokens(thread.memory.tokens),
        round_,
        beside,
        reducible,
    )
    if job is not None and original is not None:
        for index, (group, request) in enumerate(zip(job.live, job.groups, strict=True)):
            messages, tokens = list(request.messages), request.tokens
            for position, message in enumerate(messages):
                known = archive.inline.get(group.ids[position])
                if marker(message) != REDUCED_MARK or (known is not None and not known.limit):
                    continue  # shown whole, or as its facts (the original's)
                found = original(group.ids[position])
                if found is not None:
                    messages[position] = found[0]
                    tokens += found[1] - group.tokens_each[position]
            job.groups[index] = replace(request, messages=tuple(messages), tokens=tokens)
    return job


def ahead(
    budget: Budget,
    thread: ThreadState,
    original: Original | None = None,
    recall_tool: str | None = None,
) -> list[Group]:
    """What the next crossings may ask the distiller: the older results on their own
    (a crossing reduces those first when that is enough), then every group that may
    be distilled whole (when it is not), the newest turns kept word for word among
    them: one long turn can push them out and cross the budget at once, and the
    crossing then finds their facts made (the newest group and a call still waiting
    for its results are never made ahead)."""
    view = thread.ledger.view_tokens(thread.memory.tokens)
    items = reducible(thread.ledger, thread.archive, recall_tool)
    reduce = reduce_job(thread.thread_id, items, float("inf"), 0.0, view, 0)
    job = whole_job(budget, thread, float("inf"), 0, original=original, keep_recent_tokens=0)
    return (list(reduce.groups) if reduce is not None else []) + (
        list(job.groups) if job is not None else []
    )
