"""What the model-backed distillers share: how a group is shown to a model, how the
answer is read back, and the grounding check with its extractive fallback.

The generative and chat-model distillers use the same prompt and the same parser,
so a fact means the same thing whichever model wrote it; the lingua distiller uses
the same segments (who said what, relative dates already resolved).
"""

from __future__ import annotations

import importlib
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

from langchain_core.messages import AIMessage, ToolMessage

from ..dates import format_date, header_date, message_date, resolve_relative
from ..grounding import SourceIndex
from ..messages import prose_of, role_label, text_of
from ..types import Fact, Group, GroupFacts
from ._telegraph import split_speaker
from .base import Distiller
from .extractive import reduced_facts

logger = logging.getLogger(__name__)

_MAX_RESULT_CHARS = 6_000
_MAX_FACTS = 40
_MAX_FACT_CHARS = 400


@dataclass(frozen=True, slots=True)
class Segment:
    """One piece of a group: who or what (``label``) said ``text``.

    ``verbatim`` segments (session headers, tool calls) are short and carry ids, so
    they are kept as they are; the others are what a distiller condenses.
    """

    message_id: str
    label: str
    text: str
    verbatim: bool = False
    kind: str = "prose"  # prose | header | call | result

    def render(self) -> str:
        if not self.label:
            return self.text
        joiner = " → " if self.kind == "result" else ": "
        return f"{self.label}{joiner}{self.text}"


def _call_text(call: dict[str, object]) -> str:
    args = call.get("args") or {}
    if isinstance(args, dict):
        rendered = ", ".join(
            f"{key}={value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)}"
            for key, value in args.items()
        )
    else:
        rendered = str(args)
    return f"{call.get('name') or 'tool'}({rendered})"


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]} […] {text[-half:]}"


def segments(group: Group, *, summarize_results: bool = False) -> list[Segment]:
    """The group as labelled pieces, in order, relative dates resolved against the anchor.

    ``summarize_results`` passes tool outputs through the extractive distiller's
    structure-aware summary (JSON leaves, log errors and totals) first.
    """
    anchor = group.anchor
    names: dict[str, str] = {}
    out: list[Segment] = []
    for message, message_id in zip(group.messages, group.message_ids, strict=True):
        text = prose_of(message)
        if isinstance(message, ToolMessage):
            label = message.name or names.get(message.tool_call_id, "tool")
            body = text.strip()
            carried = reduced_facts(message)
            if carried is not None:
                body = carried
            elif summarize_results and body:
                body = _summarize(body)
            elif len(body) > _MAX_RESULT_CHARS:
                body = _clip(body, _MAX_RESULT_CHARS)
            if getattr(message, "status", "success") == "error":
                body = f"ERROR {body}"
            out.append(Segment(message_id, label, body or "(empty)", kind="result"))
            continue
        stamp = message_date(message, text)  # a timestamp field, or a dated header
        if stamp is not None:
            anchor = stamp
        if header_date(text) is not None:  # a session header, kept whole
            out.append(Segment(message_id, "", " ".join(text.split()), True, "header"))
        elif text.strip():
            speaker, body = split_speaker(text)
            body = resolve_relative(" ".join(body.split()), anchor)
            out.append(Segment(message_id, speaker or role_label(message), body))
        if isinstance(message, AIMessage):
            for call in message.tool_calls:
                names[call.get("id") or ""] = call.get("name") or "tool"
                out.append(Segment(message_id, "call", _call_text(dict(call)), True, "call"))
    return out


def _summarize(text: str) -> str:
    try:
        structured = importlib.import_module("context_distill.distillers._structured")
        summary: str = structured.summarize_output(text)
        return summary or text
    except Exception:  # the summary is a nicety; the raw text is always correct
        logger.debug("structured summary unavailable", exc_info=True)
        return _clip(text, _MAX_RESULT_CHARS)


def source_text(group: Group) -> str:
    """Everything the group says, as the grounding check reads it."""
    parts = []
    for message in group.messages:
        label = role_label(message)
        tool = getattr(message, "name", None) if isinstance(message, ToolMessage) else None
        parts.append(" ".join(p for p in (label, tool or "", text_of(message)) if p))
    original = "\n".join(parts)
    rendered = "\n".join(segment.render() for segment in segments(group))
    return f"{original}\n{rendered}"


# ---------------------------------------------------------------- the prompt

SYSTEM_PROMPT = (
    "You turn conversation history into memory notes. Write short telegraphic facts, "
    "one per line, each line starting with '- '. Keep names, numbers, dates, ids, file "
    "paths and error messages exactly as written. Leave out greetings and filler. Never "
    "add anything the text does not say. Write only the list."
)

_EXAMPLES: tuple[tuple[str, str], ...] = (
    (
        "Date: 8 May 2023\n\nCaroline: I went to a LGBTQ support group on 7 May 2023 and it "
        "was so powerful. The counselor, Dr. Reyes, said 12 new members joined this month!",
        "- Caroline went to LGBTQ support group 7 May 2023; powerful\n"
        "- Dr. Reyes: 12 new members joined",
    ),
    (
        "call: get_weather(city=Berlin)\nget_weather → "
        '{"location": "Berlin, DE", "temp_c": 7.5, "conditions": "light rain", '
        '"humidity_pct": 86, "request_id": "a81f"}',
        "- get_weather(Berlin): 7.5 C, light rain, humidity 86%",
    ),
)


def words_budget(group: Group) -> int | None:
    """Roughly how many words of facts the policy hopes for (3 words per 4 tokens)."""
    if group.target_tokens is None:
        return None
    return max(4, group.target_tokens * 3 // 4)


def user_prompt(group: Group) -> str:
    """The text to condense, dated when the conversation date is known."""
    lines = [segment.render() for segment in segments(group)]
    head = f"Date: {format_date(group.anchor)}\n\n" if group.anchor is not None else ""
    budget = words_budget(group)
    tail = f"\n\n(at most {budget} words)" if budget is not None else ""
    return head + "\n".join(lines) + tail


def prompt_messages(group: Group, *, examples: bool = True) -> list[tuple[str, str]]:
    """(role, content) pairs: system, few-shot examples, then the group."""
    out = [("system", SYSTEM_PROMPT)]
    if examples:
        for question, answer in _EXAMPLES:
            out.extend((("user", question), ("assistant", answer)))
    out.append(("user", user_prompt(group)))
    return out


# -------------------------------------------------------------- reading back

_BULLET = re.compile(r"^\s*(?:[-*•·]|\d{1,2}[.)])\s+(.*\S)\s*$")


def parse_facts(text: str) -> list[str]:
    """Facts of a model's answer: ``- fact`` lines up to the first blank line after them.

    Lines without a bullet are accepted only when the answer has no bullets at all.
    Duplicates, empty lines and lines without a letter or digit are dropped.
    """
    lines = text.replace("\r", "").split("\n")
    bulleted = [_BULLET.match(line) for line in lines]
    use_bullets = any(bulleted)
    facts: list[str] = []
    seen: set[str] = set()
    started = False
    for line, match in zip(lines, bulleted, strict=True):
        if not line.strip():
            if started:
                break
            continue
        if use_bullets and match is None:
            if started:
                break
            continue
        started = True
        fact = (match.group(1) if match else line).strip().strip('"').strip()
        fact = _unrepeat(fact[:_MAX_FACT_CHARS])
        if not any(ch.isalnum() for ch in fact):
            continue
        key = " ".join(fact.lower().split())
        if key in seen:
            continue
        seen.add(key)
        facts.append(fact)
        if len(facts) >= _MAX_FACTS:
            break
    return facts


_WORD_COUNT = re.compile(r"^\(?(?:at most |about )?\d+ words?\)?\.?$", re.I)


def _unrepeat(fact: str) -> str:
    """Small models loop ("happy; happy; happy; hap") and echo the length hint
    ("18 words"): keep each clause once, and no echo."""
    kept: list[str] = []
    for part in (piece.strip() for piece in fact.split(";")):
        if _WORD_COUNT.match(part):
            continue
        lower = part.lower()
        if part and not any(lower in k.lower() for k in kept):
            kept.append(part)
    return "; ".join(kept)


def _attribute(fact: str, group: Group, texts: Sequence[str]) -> tuple[str, ...]:
    """The messages a fact draws on: those sharing its rarer words; all when unclear."""
    if len(group.message_ids) == 1:
        return group.message_ids
    words = {w for w in re.findall(r"[a-z0-9_./-]{4,}", fact.lower())}
    hits = tuple(
        message_id
        for message_id, text in zip(group.message_ids, texts, strict=True)
        if words & set(re.findall(r"[a-z0-9_./-]{4,}", text.lower()))
    )
    return hits or group.message_ids


def grounded(group: Group, answer: str, *, min_overlap: float = 0.6) -> GroupFacts:
    """Facts of ``answer`` that the group supports; the rest counted in ``dropped``."""
    candidates = parse_facts(answer)
    index = SourceIndex(source_text(group), group.anchor)
    texts = [text_of(message) for message in group.messages]
    # Facts longer than what they distill save nothing (a small model restating a
    # short message at length); the excess is dropped.
    room = sum(len(text) for text in texts)
    facts: list[Fact] = []
    notes: list[str] = []
    dropped = 0
    for candidate in candidates:
        report = index.check(candidate, min_overlap=min_overlap)
        if report.grounded and len(candidate) > room:
            dropped += 1
            notes.append(f"dropped fact longer than its source allows: {candidate[:80]}")
        elif report.grounded:
            room -= len(candidate)
            facts.append(Fact(candidate, _attribute(candidate, group, texts)))
        else:
            dropped += 1
            why = ", ".join(report.missing) or f"word overlap {report.overlap:.2f}"
            notes.append(f"dropped ungrounded fact ({why}): {candidate[:80]}")
    if not candidates:
        notes.append("model answer held no facts")
    return GroupFacts(facts=facts, dropped=dropped, notes=notes)


def resolve_fallback(spec: Distiller | str | None) -> Distiller | None:
    """The distiller that writes facts when a model's are all unusable."""
    if spec is None or isinstance(spec, Distiller):
        return spec
    from . import resolve_distiller

    return resolve_distiller(spec)


def with_fallback(
    groups: Sequence[Group],
    results: list[GroupFacts],
    fallback: Distiller | str | None,
) -> list[GroupFacts]:
    """Groups left without facts get the fallback distiller's facts, recorded as such."""
    empty = [i for i, result in enumerate(results) if not result.facts]
    if not empty:
        return results
    try:
        distiller = resolve_fallback(fallback)
    except Exception as error:  # e.g. the extractive module missing: leave them empty
        logger.warning("fallback distiller unavailable: %s", error)
        distiller = None
    if distiller is None:
        return results
    replacements = distiller.distill([groups[i] for i in empty])
    for i, replacement in zip(empty, replacements, strict=True):
        old = results[i]
        results[i] = GroupFacts(
            facts=list(replacement.facts),
            dropped=old.dropped,
            fallback=distiller.name,
            notes=[*old.notes, f"no grounded facts; {distiller.name} distiller used instead"],
        )
    return results
