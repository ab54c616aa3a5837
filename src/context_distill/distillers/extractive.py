"""The default distiller: model-free, deterministic, telegraphic.

Each message becomes one fact line (``Speaker: telegraphic text``); each tool
call becomes one line with its result (``name(args) → informative fields``).
Relative dates are resolved against the group's anchor. It cannot invent: every
word of a fact is a word of its source, except resolved dates.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, ToolCall, ToolMessage

from ..dates import message_date, resolve_relative
from ..messages import MARKER_KEY, REDUCED_MARK, prose_of
from ..tokens import TextCounter
from ..types import Fact, Group, GroupFacts
from ._structured import summarize_output
from ._telegraph import split_speaker, telegraph
from .base import Distiller

_ROLE_LABEL = {"human": "User", "ai": "AI", "system": "System", "tool": "Tool"}
_MAX_ARG_CHARS = 160


def _arg(value: Any) -> str:
    if isinstance(value, str):
        if len(value) <= _MAX_ARG_CHARS:
            return value
        # A script's first line says what it does and to which file (``cat <<EOF > x.py``).
        first, _, rest = value.strip().partition("\n")
        head = first if len(first) <= _MAX_ARG_CHARS else first[: _MAX_ARG_CHARS - 1] + "…"
        body = summarize_output(rest)[:_MAX_ARG_CHARS] if rest.strip() else ""
        return f"{head} <{body}>" if body else head
    text = json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))
    return text if len(text) <= _MAX_ARG_CHARS else text[: _MAX_ARG_CHARS - 1] + "…"


def _call_line(call: ToolCall) -> tuple[str, frozenset[str]]:
    args = call.get("args") or {}
    if isinstance(args, dict):
        rendered = ", ".join(f"{key}={_arg(value)}" for key, value in args.items())
        stated = frozenset(str(v) for v in args.values() if isinstance(v, (str, int, float)))
    else:
        rendered, stated = _arg(args), frozenset()
    return f"{call.get('name') or 'tool'}({rendered})", stated


def _label(message: BaseMessage) -> str:
    name = getattr(message, "name", None)
    return name if isinstance(name, str) and name else _ROLE_LABEL.get(message.type, message.type)


def _tool_summary(result: ToolMessage, stated: frozenset[str]) -> str:
    carried = reduced_facts(result)
    summary = carried if carried is not None else summarize_output(prose_of(result), stated)
    if result.status == "error":
        return f"ERROR {summary}" if summary else "ERROR"
    return summary  # empty: the call succeeded and said nothing


_FENCE = re.compile(r"```[\w+-]*[ \t]*\n(.*?)(?:\n[ \t]*```|\Z)", re.S)


def _prose_parts(body: str, anchor: datetime | None) -> list[str]:
    """Telegraphic clauses of a message; a fenced code block is read as code, not prose."""
    parts: list[str] = []
    position = 0
    for match in _FENCE.finditer(body):
        parts.extend(telegraph(resolve_relative(body[position : match.start()], anchor)))
        summary = summarize_output(match.group(1))
        if summary:
            parts.append(summary)
        position = match.end()
    parts.extend(telegraph(resolve_relative(body[position:], anchor)))
    return parts


def distill_group(group: Group) -> list[Fact]:
    """Facts of one group, in message order."""
    anchor = group.anchor
    results: dict[str, tuple[ToolMessage, str]] = {}
    for message, message_id in zip(group.messages, group.message_ids, strict=True):
        if isinstance(message, ToolMessage):
            results[message.tool_call_id] = (message, message_id)
    facts: list[Fact] = []
    for message, message_id in zip(group.messages, group.message_ids, strict=True):
        if isinstance(message, ToolMessage):
            continue
        text = prose_of(message)
        header = message_date(message, text)
        if header is not None:
            anchor = header
            compact = " ".join(telegraph(text))
            if compact:
                facts.append(Fact(compact, (message_id,)))
        elif text.strip():
            speaker, body = split_speaker(text)
            parts = _prose_parts(body, anchor)
            if parts:
                facts.append(
                    Fact(f"{speaker or _label(message)}: {'; '.join(parts)}", (message_id,))
                )
        if isinstance(message, AIMessage):
            for call in message.tool_calls:
                line, stated = _call_line(call)
                found = results.pop(call.get("id") or "", None)
                if found is None:
                    facts.append(Fact(line, (message_id,)))
                    continue
                result, result_id = found
                summary = _tool_summary(result, stated)
                text = f"{line} → {summary}" if summary else line
                facts.append(Fact(text, (message_id, result_id)))
    for result, result_id in results.values():  # results whose call we could not match
        facts.append(Fact(f"tool result → {_tool_summary(result, frozenset())}", (result_id,)))
    if not facts:
        facts.append(_minimal_fact(group))
    return facts


def _minimal_fact(group: Group) -> Fact:
    """Some words of the group itself, when nothing else carries (pure courtesy)."""
    message = group.messages[0]
    speaker, body = split_speaker(prose_of(message))
    words = body.split()
    snippet = " ".join(words[:8]) + ("…" if len(words) > 8 else "")
    return Fact(f"{speaker or _label(message)}: {snippet or '(no text)'}", (group.message_ids[0],))


class ExtractiveDistiller(Distiller):
    """Model-free telegraphic distiller; the default, always available offline."""

    name = "extractive"

    def distill(self, groups: Sequence[Group]) -> list[GroupFacts]:
        return [GroupFacts(distill_group(group)) for group in groups]


_FACTS_LINE = "\nFacts: "
_HEAD_LINE = "\n--- start ---\n"


def reduce_tool_result(
    message: ToolMessage, message_id: str, tokens: int, max_tokens: int, count: TextCounter
) -> ToolMessage | None:
    """A shortened copy of an oversized tool result: its facts, its head and its tail.

    The copy never exceeds ``max_tokens`` (as ``count`` measures its content) and keeps
    the message's id (``message_id`` when it has none). Its note names no id: ids are
    often random, and what the model reads must depend only on what the messages say.
    """
    text = prose_of(message)
    if not text:
        return None
    note = (
        f"[context-distill: this output had {tokens} tokens; shown shortened, "
        "the original is archived]"
    )
    chars_per_token = max(len(text) / max(tokens, 1), 1.0)
    summary = _fit_chars(summarize_output(text), int(max_tokens / 2 * chars_per_token))
    edge = int(max(max_tokens - count(note) - count(summary) - 24, 0) / 2 * chars_per_token)
    content = note
    for _ in range(8):
        if edge >= 16 and 2 * edge < len(text):
            omitted = len(text) - 2 * edge
            content = (
                f"{note}{_FACTS_LINE}{summary}{_HEAD_LINE}{text[:edge]}\n"
                f"[… {omitted} characters omitted …]\n--- end ---\n{text[-edge:]}"
            )
        else:
            content = f"{note}{_FACTS_LINE}{summary}"
        over = count(content) - max_tokens
        if over <= 0:
            break
        if edge >= 16:
            edge = max(int(edge - (over + 8) * chars_per_token / 2), 0)
        else:
            summary = _fit_chars(summary, int(len(summary) * 0.6))
    else:
        content = note
    return ToolMessage(
        content=content,
        tool_call_id=message.tool_call_id,
        id=message.id or message_id,
        name=message.name,
        status=message.status,
        additional_kwargs={**message.additional_kwargs, MARKER_KEY: REDUCED_MARK},
    )


def reduced_facts(message: BaseMessage) -> str | None:
    """The facts a shortened copy (from :func:`reduce_tool_result`) carries; None otherwise.

    Distilling the copy itself would store its note and a cut head and tail as
    facts; its facts line was made from the whole original.
    """
    if message.additional_kwargs.get(MARKER_KEY) != REDUCED_MARK:
        return None
    text = prose_of(message)
    start = text.find(_FACTS_LINE)
    if start < 0:
        return "long output (archived)"
    body = text[start + len(_FACTS_LINE) :]
    return body.split(_HEAD_LINE, 1)[0].strip() or "long output (archived)"


def _fit_chars(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: max(limit - 1, 0)] + "…"
