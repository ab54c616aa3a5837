"""The policy: when to distill, how far, which groups, and how long to back off.

Pure decisions over a ledger and a memory block: no store, no threads, no clock.
The engine asks, then acts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from ._idset import IdSet
from .dates import advance
from .ledger import Ledger, LiveGroup
from .memory import MemoryBlock
from .types import Group, GroupFacts

MAX_ROUNDS = 6  # reduction and distillation rounds in one turn before the view is returned
TARGET_SHARE = 0.9  # of the budget beside the pinned prompt, where distillation stops
MEMORY_SHARE = 0.8  # of the budget beside the pinned prompt, guaranteed to the memory block
MAX_BACKOFF_TURNS = 32
TARGET_RATIO = 0.35  # facts per source token that budget-aware distillers aim at


@dataclass(frozen=True, slots=True)
class Budget:
    """The token limits of a ``ContextDistiller``, checked once."""

    budget_tokens: int
    target_tokens: int
    target_given: bool
    keep_recent_tokens: int
    max_tool_result_tokens: int
    background_at_tokens: int
    memory_share: float = MEMORY_SHARE

    @classmethod
    def of(
        cls,
        budget_tokens: int,
        target_tokens: int | None,
        keep_recent_tokens: int | None,
        max_tool_result_tokens: int | None,
        background_at: float,
        memory_share: float | None = None,
    ) -> Budget:
        if isinstance(budget_tokens, bool) or not isinstance(budget_tokens, int):
            raise ValueError(f"budget_tokens must be a positive integer, not {budget_tokens!r}")
        if budget_tokens <= 0:
            raise ValueError(f"budget_tokens must be a positive integer, not {budget_tokens!r}")
        target = int(budget_tokens * TARGET_SHARE) if target_tokens is None else target_tokens
        if not 0 < target <= budget_tokens:
            raise ValueError(
                f"target_tokens must be between 1 and budget_tokens ({budget_tokens}), not {target}"
            )
        keep = budget_tokens // 32 if keep_recent_tokens is None else keep_recent_tokens
        if not 0 <= keep <= budget_tokens:
            raise ValueError(
                f"keep_recent_tokens must be between 0 and budget_tokens ({budget_tokens}), "
                f"not {keep}"
            )
        max_result = (
            max(budget_tokens // 4, 64)
            if max_tool_result_tokens is None
            else max_tool_result_tokens
        )
        if max_result <= 0:
            raise ValueError(f"max_tool_result_tokens must be positive, not {max_result}")
        if not 0 < background_at <= 1:
            raise ValueError(f"background_at must be a fraction of the budget, not {background_at}")
        share = MEMORY_SHARE if memory_share is None else memory_share
        if isinstance(share, bool) or not 0 <= share < TARGET_SHARE:
            raise ValueError(
                f"memory_share must be at least 0 and below {TARGET_SHARE}, not {memory_share!r}"
            )
        return cls(
            budget_tokens=budget_tokens,
            target_tokens=target,
            target_given=target_tokens is not None,
            keep_recent_tokens=keep,
            max_tool_result_tokens=max_result,
            background_at_tokens=max(int(budget_tokens * background_at), 1),
            memory_share=share,
        )

    def target(self, pinned_tokens: int) -> int:
        """Where a distillation stops: ``target_tokens`` if given, else the pinned
        prompt plus a share of what the budget leaves beside it.

        The system prompt and task cannot be distilled, so a share of the whole
        budget would leave a long system prompt's thread almost no room for its
        memory and recent turns.
        """
        if self.target_given:
            return self.target_tokens
        share = pinned_tokens + int(max(self.budget_tokens - pinned_tokens, 0) * TARGET_SHARE)
        return max(self.target_tokens, min(share, self.budget_tokens))

    def memory_room(self, pinned_tokens: int) -> int:
        """Tokens the memory block is guaranteed: its share of what the pinned prompt
        leaves, so that the newest verbatim turns cannot push every fact out."""
        return int(max(self.budget_tokens - pinned_tokens, 0) * self.memory_share)


@dataclass(slots=True)
class Job:
    """A view change decided on, and where the view stood.

    ``kind`` "distill": whole groups into the memory block (``live[i]`` asks as
    ``groups[i]``). "reduce": tool results replaced by their facts, each asked alone
    (``groups[i]`` is the result at ``positions[i]`` of ``live[i]``). "shorten": tool
    results cut to ``limits[i]`` tokens, model-free (no ``groups``).
    """

    live: list[LiveGroup]
    groups: list[Group]
    tokens_before: int
    anchor_after: datetime | None
    round: int
    done: list[LiveGroup] = field(default_factory=list)  # distilled before: drop, no facts
    kind: str = "distill"
    positions: list[int] = field(default_factory=list)
    limits: list[int] = field(default_factory=list)


def distill_need(
    budget: Budget, ledger: Ledger, memory: MemoryBlock, round_: int, waiting: bool
) -> int | None:
    """Tokens the messages shown beside the memory block must shed now, or None when
    the view should not change this round.

    They shed until the view is within the target with the memory block holding its
    guaranteed room (once it holds facts). ``waiting``: a failure's back-off has not
    run out (a later round of a turn that already changed the view is not held back).
    """
    view = ledger.view_tokens(memory.tokens)
    if view <= budget.budget_tokens and round_ == 0:
        return None
    if round_ >= MAX_ROUNDS or (round_ == 0 and waiting):
        return None
    pinned = ledger.pinned_tokens
    reserve = budget.memory_room(pinned) if len(memory) else 0
    target = budget.target(pinned)
    need = max(view - target, view - memory.tokens - (target - reserve))
    return need if need > 0 else None


def beside_need(budget: Budget, ledger: Ledger) -> int:
    """Tokens the messages beside the memory block must shed so that the block gets
    its guaranteed room: whole groups moved into it will need that room."""
    pinned = ledger.pinned_tokens
    others = ledger.view_tokens(0)  # everything but the memory block
    return others - (budget.target(pinned) - budget.memory_room(pinned))


def select(
    thread_id: str,
    ledger: Ledger,
    need: float,
    ratio: float,
    keep_recent_tokens: int,
    anchor: datetime | None,
    already: IdSet,
    view: int,
    round_: int,
    beside: float = 0,
    reducible: Mapping[int, float] | None = None,
) -> Job | None:
    """The oldest distillable groups expected to save ``need`` tokens of the view (their
    facts, ``ratio`` of them, join the memory block) and to take ``beside`` tokens out
    of the messages shown beside the block, as requests.

    ``reducible``: what reducing each group's older results would save (by ``id`` of
    the group); the groups that stay are reduced after, so only as many go whole as
    those reductions cannot make up for, and none is reduced just before it goes.

    ``already`` holds ids distilled before (a rewound history shows them again):
    groups made only of those are dropped without asking the distiller.
    """
    candidates = ledger.candidates(keep_recent_tokens)
    if not candidates:
        return None
    chosen: list[LiveGroup] = []
    saved = moved = 0.0
    later = sum(reducible.values()) if reducible else 0.0
    for group in candidates:
        chosen.append(group)
        saved += group.tokens * (1.0 - ratio)
        moved += group.tokens
        later -= reducible.get(id(group), 0.0) if reducible else 0.0
        if saved + later >= need and moved + later >= beside:
            break
    picked = {id(group) for group in chosen}
    done = [g for g in chosen if already and all(i in already for i in g.ids)]
    picked.difference_update(id(group) for group in done)
    requests: list[Group] = []
    ordered: list[LiveGroup] = []
    for group in list(ledger.stale) + list(ledger.groups):
        if len(ordered) == len(picked):
            break
        if id(group) in picked:
            ordered.append(group)
            requests.append(
                Group(
                    thread_id=thread_id,
                    messages=tuple(group.messages),
                    message_ids=tuple(group.ids),
                    tokens=group.tokens,
                    anchor=anchor,
                    target_tokens=max(1, int(group.tokens * TARGET_RATIO)),
                )
            )
        anchor = advance(anchor, group.messages)
    return Job(ordered, requests, view, anchor, round_, done)


def trim_to_ready(
    budget: Budget,
    ledger: Ledger,
    memory_tokens: int,
    job: Job,
    found: list[GroupFacts | None],
    ratio: float,
) -> None:
    """Distill only the groups made ahead, if they bring the view within the budget.

    The crossing turn then commits facts that are ready instead of waiting for a
    model; the rest is made in the background for the next crossing.
    """
    ready = _ready_count(found)
    if ready == 0:
        return
    if _view_after(budget, ledger, memory_tokens, job, ready, ratio) > budget.budget_tokens:
        return
    _keep_first(job, found, ready)


def _view_after(
    budget: Budget, ledger: Ledger, memory_tokens: int, job: Job, ready: int, ratio: float
) -> float:
    """The view's tokens expected once the job's first ``ready`` groups are committed.

    Whole groups leave the view and their facts join the memory block, which is then
    fitted to its room (memory_cap): a block at its room shows the new facts in place
    of others, so the groups save their whole size, not only what their facts don't
    take.
    """
    facts = sum(group.tokens for group in job.groups[:ready]) * ratio
    if job.kind != "distill":
        return job.tokens_before - sum(group.tokens for group in job.groups[:ready]) + facts
    moved = sum(group.tokens for group in job.live[:ready] + job.done)
    others = ledger.view_tokens(0) - moved
    room = _memory_cap(budget, ledger.pinned_tokens, others)
    return others + min(memory_tokens + facts, room)


def only_ready(budget: Budget, job: Job, found: list[GroupFacts | None]) -> Job | None:
    """A later round of a turn whose view is within the budget already: only what was
    made ahead, or nothing (None). Going on to the target is worth a model call in
    the background, not a wait on the turn."""
    if job.round == 0 or job.tokens_before > budget.budget_tokens or not job.groups:
        return job
    ready = _ready_count(found)
    if ready == 0:
        return None
    _keep_first(job, found, ready)
    return job


def _ready_count(found: list[GroupFacts | None]) -> int:
    ready = 0
    while ready < len(found) and found[ready] is not None:
        ready += 1
    return ready


def _keep_first(job: Job, found: list[GroupFacts | None], ready: int) -> None:
    if ready < len(job.groups) and job.kind == "distill":
        job.anchor_after = job.groups[ready].anchor
    del job.live[ready:]
    del job.groups[ready:]
    del job.positions[ready:]
    del found[ready:]


def memory_cap(budget: Budget, ledger: Ledger) -> int:
    """The memory block's room: what the target leaves over, and never less than its
    guaranteed share while the budget has that much left beside the other messages."""
    return _memory_cap(budget, ledger.pinned_tokens, ledger.view_tokens(0))


def _memory_cap(budget: Budget, pinned: int, others: int) -> int:
    leftover = budget.target(pinned) - others
    return max(leftover, min(budget.memory_room(pinned), budget.budget_tokens - others), 0)


def fit_memory(budget: Budget, ledger: Ledger, memory: MemoryBlock) -> None:
    """Give the memory block its room, if it needs more than that."""
    if not len(memory):
        return
    room = memory_cap(budget, ledger)
    cap = room
    for _ in range(4):
        memory.fit(cap)
        excess = memory.tokens - room
        if excess <= 0 or cap <= 0:
            break
        cap = max(cap - excess, 0)


def backoff(failures_in_row: int) -> int:
    """Turns to wait before retrying after ``failures_in_row`` failures (1, 2, 4 … 32)."""
    return int(min(2 ** max(failures_in_row - 1, 0), MAX_BACKOFF_TURNS))


def learned_ratio(ratio: float, fact_tokens: int, source_tokens: int) -> float:
    """Facts per source token, as a moving average over distillations."""
    return 0.7 * ratio + 0.3 * min(1.0, fact_tokens / max(source_tokens, 1))


def over_budget_reason(
    budget: Budget, ledger: Ledger, view_tokens: int, failing: str | None
) -> str | None:
    """Why the view exceeds the budget, or None when it does not."""
    if view_tokens <= budget.budget_tokens:
        return None
    if failing is not None:
        return f"distillation failing: {failing}"
    floor = ledger.pinned_tokens + ledger.head_tokens()
    if floor + (ledger.groups[-1].tokens if ledger.groups else 0) > budget.budget_tokens:
        return "pinned context and the latest turn alone exceed the budget"
    return "the newest turns kept word for word exceed the budget"
