"""Token pruning scored by a small causal LM's self-information, as LLMLingua does.

Words the model finds predictable carry little; words it finds surprising carry
the content. This distiller keeps the most surprising words of each message up to
the group's target size and drops the rest, so it can only remove, never invent.
Unlike LLMLingua it scores every token in one batched forward pass (no iterative
re-scoring), prunes whole words (no half words), and never drops what must
survive word for word: numbers, dates, ids, paths, names, negations and errors.
Session headers and tool calls are kept whole; tool outputs are first reduced to
their informative fields by the extractive distiller's structure-aware summary.
"""

from __future__ import annotations

import bisect
import math
import os
import re
from dataclasses import dataclass, field

from ..dates import written_date_spans
from ..models.loading import LoadedModel
from ..models.surprisal import surprisal
from ..types import Fact, Group, GroupFacts
from ..words import STOPWORDS, is_idlike
from ._local import LocalModelDistiller
from ._prompt import Segment, segments

_WORD = re.compile(r"\S+")
_SENTENCE_END = re.compile(r"[.!?]$")
_ERRORISH = re.compile(
    r"error|exception|fail|fatal|traceback|denied|refused|timeout|invalid|missing|panic", re.I
)
_NEGATION = frozenset("not no never none nobody nothing nowhere cannot without".split())
# Chat filler a language model still finds surprising: reactions, courtesy, intensifiers.
_FILLER = STOPWORDS | frozenset(
    """hey hi hello thanks thank wow oh ah aw yeah yes yep ok okay sure glad sorry congrats
    congratulations haha lol omg bye cheers awesome amazing great cool nice sweet lovely
    wonderful fantastic incredible super totally definitely absolutely honestly literally
    basically seriously truly pretty kinda gonna wanna gotta i'm i've i'll i'd you're you've
    you'll you'd he's she's it's we're we've we'll they're they've that's there's what's
    let's let me myself yourself appreciate appreciated means mean tbh btw""".split()
)
_GREETING = frozenset(
    "hey hi hello thanks thank wow oh yeah yes so well congrats sorry aw ah dear bye".split()
)
_TRIM = "\"'`()[]{}*_,;!?…"


@dataclass(slots=True)
class _Word:
    text: str
    start: int
    end: int
    protected: bool
    filler: bool = False
    tokens: int = 0
    score: float = 0.0
    scored: int = 0


@dataclass(slots=True)
class _Plan:
    """One segment to prune: its words, and its token chunks for the scorer."""

    segment: Segment
    words: list[_Word] = field(default_factory=list)
    chunks: list[tuple[list[int], int, list[int]]] = field(default_factory=list)
    # (token ids, first scored position, word index of each token or -1)


def must_keep(word: str, sentence_start: bool) -> bool:
    """Whether a word has to survive word for word: numbers, ids, paths, names, errors."""
    core = word.strip(_TRIM + ".:")
    if not core:
        return False
    lower = core.lower()
    if any(ch.isdigit() for ch in core) or is_idlike(core):
        return True
    if lower in _NEGATION or lower.endswith("n't") or _ERRORISH.search(core):
        return True
    if "=" in core:  # key=value from a tool output: the value decides
        return must_keep(core.split("=", 1)[1], False)
    # A capital mid-sentence marks a name; at a sentence start it proves nothing.
    return core[0].isupper() and len(core) > 1 and not sentence_start


def _words(text: str) -> list[_Word]:
    out: list[_Word] = []
    sentence_start = True
    previous = ""
    previous_opened = False
    dates = written_date_spans(text)  # resolved relative dates, kept whole
    for match in _WORD.finditer(text):
        word = match.group(0)
        in_date = any(start < match.end() and match.start() < end for start, end in dates)
        keep = in_date or must_keep(word, sentence_start)
        filler = _clean(word).lower().replace("’", "'") in _FILLER
        if keep and not in_date and _is_vocative(word, previous, sentence_start, previous_opened):
            keep = False  # "Hey Mel!", "Thanks, Caroline." address the listener
        out.append(_Word(word, match.start(), match.end(), keep, filler))
        previous_opened = sentence_start
        sentence_start = bool(_SENTENCE_END.search(word.rstrip("\"')")))
        previous = word
    return out


def _is_vocative(word: str, previous: str, sentence_start: bool, opened: bool) -> bool:
    """Whether a capitalised word addresses the listener; ``opened``: ``previous``
    began a sentence."""
    core = word.strip(_TRIM + ".:")
    if not core[:1].isupper() or any(ch.isdigit() for ch in core):
        return False
    after_greeting = previous.strip(_TRIM + ".:").lower() in _GREETING
    # "..., Mel!", "Awesome, Mel!", "..., Mel, ...": a name set off by commas after a
    # lowercase word or a sentence's first word (not "Paris, France").
    ends_clause = word.rstrip("\"')").endswith((",", "!", "?", "."))
    return (
        after_greeting
        or (sentence_start and word.endswith(","))
        or (previous.endswith(",") and (previous[:1].islower() or opened) and ends_clause)
    )


def _prefix(segment: Segment) -> str:
    """The label the scorer sees before a segment's text (context, never pruned)."""
    return f"{segment.label}: " if segment.label else ""


def _clean(word: str) -> str:
    """A kept word without the punctuation that only framed a sentence."""
    stripped = word.strip(_TRIM)
    if stripped.endswith(".") and not re.search(r"\.\w", stripped):
        stripped = stripped.rstrip(".")
    return stripped


class LinguaDistiller(LocalModelDistiller):
    """Keeps each message's most informative words, scored by a causal LM.

    ``model`` is a Hugging Face id, a folder, a ``.gguf`` file, a :class:`LoadedModel`
    or ``None`` for the offline default (SmolLM2-135M-Instruct). Each group is cut
    to ``group.target_tokens`` (as a share of its size), or to ``ratio`` when the
    group names no target; ``max_ratio`` caps the share either way. Long messages
    are scored in chunks of ``chunk_tokens`` with ``context_tokens`` of overlap.
    Concurrent calls from several threads are merged into one batch.
    """

    name = "lingua"

    def __init__(
        self,
        model: str | os.PathLike[str] | LoadedModel | None = None,
        *,
        device: str | None = "auto",
        dtype: str | None = "auto",
        ratio: float = 0.3,
        max_ratio: float | None = None,
        chunk_tokens: int = 512,
        context_tokens: int = 32,
        max_batch_tokens: int | None = None,
        stopword_weight: float = 0.0,
        batch_window_s: float = 0.002,
    ) -> None:
        super().__init__(model, device, dtype, batch_window_s)
        if not 0 < ratio <= 1:
            raise ValueError(f"ratio must be in (0, 1], not {ratio}")
        if chunk_tokens <= context_tokens + 8:
            raise ValueError("chunk_tokens must exceed context_tokens by more than 8")
        self.ratio = ratio
        self.max_ratio = max_ratio
        self.chunk_tokens = chunk_tokens
        self.context_tokens = context_tokens
        self.max_batch_tokens = max_batch_tokens
        self.stopword_weight = stopword_weight

    # -- the batch -------------------------------------------------------------

    def _share(self, group: Group) -> float:
        share = self.ratio
        if group.target_tokens is not None and group.tokens > 0:
            share = group.target_tokens / group.tokens
        if self.max_ratio is not None:
            share = min(share, self.max_ratio)
        return min(max(share, 0.02), 1.0)

    def _distill_batch(self, groups: list[Group]) -> list[GroupFacts]:
        loaded = self.model
        plans = [[_Plan(s) for s in segments(g, summarize_results=True)] for g in groups]
        flat = [plan for group_plans in plans for plan in group_plans]
        todo = [p for p in flat if not p.segment.verbatim and p.segment.text.strip()]
        texts = [_prefix(p.segment) + p.segment.text for p in todo]
        if texts:
            with loaded.tokenizer_lock:  # one call: the fast tokenizer works in parallel
                encoded = loaded.tokenizer(
                    texts, add_special_tokens=False, return_offsets_mapping=True
                )
            for index, plan in enumerate(todo):
                self._chunk(
                    plan, encoded["input_ids"][index], encoded["offset_mapping"][index], loaded
                )
        sequences: list[list[int]] = []
        starts: list[int] = []
        owners: list[tuple[_Plan, list[int]]] = []
        owner_plan_ids: list[int] = []
        # Words kept anyway, or dropped anyway (filler at weight 0), need no score.
        skip_word = [
            [w.protected or (w.filler and self.stopword_weight == 0) for w in plan.words]
            for plan in flat
        ]
        for plan_id, plan in enumerate(flat):
            for ids, first, owner in plan.chunks:
                sequences.append(ids)
                starts.append(first)
                owners.append((plan, owner))
                owner_plan_ids.append(plan_id)
        skip = [
            [
                position < 1 or owner[position] < 0 or skip_word[plan_id][owner[position]]
                for position in range(len(owner))
            ]
            for (plan, owner), plan_id in zip(owners, owner_plan_ids, strict=True)
        ]
        scores = (
            surprisal(
                loaded,
                sequences,
                score_from=starts,
                skip=skip,
                max_batch_tokens=self.max_batch_tokens,
            )
            if sequences
            else []
        )
        for (plan, owner), values, first in zip(owners, scores, starts, strict=True):
            for position in range(first, len(owner)):
                index = owner[position]
                value = values[position]
                if index >= 0 and not math.isnan(value):
                    word = plan.words[index]
                    word.score += value
                    word.scored += 1
        return [
            self._select(group, group_plans)
            for group, group_plans in zip(groups, plans, strict=True)
        ]

    def _chunk(
        self,
        plan: _Plan,
        ids: list[int],
        offsets: list[tuple[int, int]],
        loaded: LoadedModel,
    ) -> None:
        """Map tokens to words and cut the token sequence into overlapping chunks."""
        prefix = len(_prefix(plan.segment))
        plan.words = _words(plan.segment.text)
        starts = [word.start + prefix for word in plan.words]
        owner: list[int] = []
        for _begin, end in offsets:
            last = end - 1  # a token belongs to the word holding its last character
            index = bisect.bisect_right(starts, last) - 1
            if last < prefix or index < 0 or last >= plan.words[index].end + prefix:
                owner.append(-1)
            else:
                owner.append(index)
                plan.words[index].tokens += 1
        start_id = loaded.start_token_id
        step = self.chunk_tokens - self.context_tokens - 1
        position = 0
        while position < len(ids):
            context = max(0, position - self.context_tokens)
            piece = list(ids[context : position + step])
            piece_owner = owner[context : position + step]
            plan.chunks.append(([start_id, *piece], 1 + position - context, [-1, *piece_owner]))
            position += step

    def _select(self, group: Group, plans: list[_Plan]) -> GroupFacts:
        share = self._share(group)
        facts: list[Fact] = []
        candidates: list[tuple[float, int, int]] = []
        budget = 0.0
        kept: list[set[int]] = []
        for plan_index, plan in enumerate(plans):
            chosen: set[int] = set()
            kept.append(chosen)
            total = sum(max(word.tokens, 1) for word in plan.words)
            budget += share * total
            for word_index, word in enumerate(plan.words):
                if word.protected:
                    chosen.add(word_index)
                    budget -= max(word.tokens, 1)
                    continue
                value = word.score / max(word.scored, 1)
                if word.filler:
                    value *= self.stopword_weight
                candidates.append((value, plan_index, word_index))
        candidates.sort(key=lambda item: -item[0])
        for _value, plan_index, word_index in candidates:
            cost = max(plans[plan_index].words[word_index].tokens, 1)
            if budget - cost < -cost / 2:
                continue
            kept[plan_index].add(word_index)
            budget -= cost
        for plan, chosen in zip(plans, kept, strict=True):
            segment = plan.segment
            if segment.verbatim:
                facts.append(Fact(segment.render(), (segment.message_id,)))
                continue
            if not chosen and plan.words:  # keep a message's most surprising word at least
                best = max(range(len(plan.words)), key=lambda i: plan.words[i].score)
                chosen.add(best)
            words = [_clean(plan.words[i].text) for i in sorted(chosen)]
            body = " ".join(word for word in words if word)
            if body:
                facts.append(
                    Fact(
                        Segment(
                            segment.message_id, segment.label, body, kind=segment.kind
                        ).render(),
                        (segment.message_id,),
                    )
                )
        return GroupFacts(facts=facts)
