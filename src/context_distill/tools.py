"""The recall tool: lets an agent read back what was distilled out of its view.

The memory block lists facts with archive numbers (``#12``); this tool returns
the originals word for word, by number or by a keyword search over the current
thread's archive (originals and facts). The thread comes from the tool call's run
config, so one tool serves every thread and never reads across them.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel, Field

from ._doors import thread_id_from
from .engine import ContextDistiller
from .memory import format_refs
from .messages import text_of
from .snippets import page, render, snippets
from .store import SearchHit

logger = logging.getLogger(__name__)

__all__ = ["make_recall_tool"]

_REF = re.compile(r"#\s*(\d+)(?:\s*@\s*(\d+)|\s*-\s*#?(\d+))?")
_WORD = re.compile(r"[^\W_][\w.:/@-]*", re.UNICODE)
_MAX_REFS = 24
_MIN_WORD = 3
_MIN_CHARS = 300
_WHOLE_CHARS = 600  # a matching original up to this long is shown whole, not in snippets
_SNIPPET_CHARS = 240
_SNIPPETS = 3

_DESCRIPTION = (
    "Read back earlier parts of this conversation that were distilled out of view. "
    "Keyword queries (names, ids, numbers, error text) return the matching passages of "
    "archived originals, each with its #number and character offset, and distilled "
    "facts. Archive numbers from the memory block return originals word for word: '#12', "
    "'#12-14'; '#12@4000' reads a long original on from character 4000."
)


@dataclass(frozen=True, slots=True)
class _Ref:
    ref: int
    offset: int = 0


@dataclass(frozen=True, slots=True)
class _Section:
    """One part of the answer; ``ref`` and ``offset`` say where its body sits in an original."""

    head: str
    body: str
    ref: int | None = None
    offset: int = 0
    total: int = 0  # characters of the whole original (0: not an original)

    def text(self) -> str:
        return f"{self.head}\n{self.body}" if self.body else self.head


def _parse_refs(query: str) -> tuple[list[_Ref], str]:
    """Archive numbers named in the query (``#12``, ``#12-14``, ``#12@4000``), and the rest."""
    refs: list[_Ref] = []
    for match in _REF.finditer(query):
        first = int(match.group(1))
        if match.group(2) is not None:
            wanted = [_Ref(first, int(match.group(2)))]
        else:
            last = int(match.group(3)) if match.group(3) else first
            if last < first:
                first, last = last, first
            wanted = [_Ref(ref) for ref in range(first, min(last, first + _MAX_REFS - 1) + 1)]
        refs.extend(ref for ref in wanted if ref not in refs)
    rest = _REF.sub(" ", query)
    rest = " ".join(rest.replace(",", " ").split())
    return refs[:_MAX_REFS], rest


def _describe(ref: int, message: BaseMessage, state: str | None = None) -> str:
    parts = [f"#{ref}", message.type]
    name = getattr(message, "name", None)
    if isinstance(message, ToolMessage):
        parts.append(f"{name or 'tool'} result for call {message.tool_call_id}")
    elif name:
        parts.append(str(name))
    if message.id:
        parts.append(f"id={message.id}")
    if state:
        parts.append(state)
    return "[" + " ".join(parts) + "]"


class _RecallArgs(BaseModel):
    query: str = Field(
        description="Keywords (names, ids, numbers, error text), or archive numbers "
        "such as '#12' or '#12-14'."
    )


class _Recall:
    """The tool's body, bound to one engine's archive."""

    def __init__(
        self, engine: ContextDistiller, *, name: str, max_chars: int, max_results: int
    ) -> None:
        self.engine = engine
        self.name = name
        self.max_chars = max_chars
        self.max_results = max_results

    def _own(self, message: BaseMessage) -> bool:
        """This tool's own calls and results: derivative, left out of search results."""
        if isinstance(message, ToolMessage):
            return message.name == self.name
        if isinstance(message, AIMessage) and message.tool_calls:
            return not message.text.strip() and all(
                call["name"] == self.name for call in message.tool_calls
            )
        return False

    def run(self, query: str, config: RunnableConfig) -> str:
        thread_id = thread_id_from(config)
        if thread_id is None:
            return "recall is unavailable: this run has no thread id (configurable.thread_id)."
        query = (query or "").strip()
        if not query:
            return "Give a query: keywords, or an archive number such as '#12'."
        refs, rest = _parse_refs(query)
        sections: list[_Section] = []
        seen_refs: set[int] = set()
        store = self.engine.store
        if refs:
            found = dict(store.get_messages(thread_id, refs=[r.ref for r in refs]))
            for wanted in refs:
                message = found.get(wanted.ref)
                if message is not None:
                    seen_refs.add(wanted.ref)
                    sections.append(self._original(wanted.ref, message, wanted.offset))
            missing = [r.ref for r in refs if r.ref not in found]
            if missing:
                sections.append(
                    _Section(f"(not in this thread's archive: {format_refs(missing)})", "")
                )
        if rest:
            if " " not in rest:
                for ref, message in store.get_messages(thread_id, ids=[rest]):
                    if ref not in seen_refs:
                        seen_refs.add(ref)
                        sections.append(self._original(ref, message, 0))
            shown = 0
            in_view = self.engine.shown_ids(thread_id)  # the model sees these already
            for hit in self._search(thread_id, rest):
                if shown >= self.max_results:
                    break
                if hit.kind == "message" and hit.message_id in in_view:
                    continue
                section = self._section(thread_id, hit, rest, seen_refs)
                if section is not None:
                    sections.append(section)
                    shown += 1
        if not sections:
            return (
                f"Nothing in this conversation's archive matches {query!r}. Memory lines name "
                "archived messages as #n; ask for one by its number, e.g. '#12'."
            )
        return self._fit(sections)

    @staticmethod
    def _original(
        ref: int, message: BaseMessage, offset: int, state: str | None = None
    ) -> _Section:
        """An original word for word, from ``offset`` on."""
        text = text_of(message)
        head = _describe(ref, message, state)
        if offset:
            if offset >= len(text):
                return _Section(f"{head} (has {len(text)} characters; nothing from {offset})", "")
            head = f"{head} from character {offset} of {len(text)}"
        return _Section(head, text[offset:], ref, offset, len(text))

    def _section(
        self, thread_id: str, hit: SearchHit, query: str, seen_refs: set[int]
    ) -> _Section | None:
        store = self.engine.store
        if hit.kind == "message":
            if hit.ref is None or hit.ref in seen_refs:
                return None
            seen_refs.add(hit.ref)
            found = store.get_messages(thread_id, refs=[hit.ref])
            if not found:
                return None
            message = found[0][1]
            if self._own(message):
                return None
            text = text_of(message)
            if len(text) <= _WHOLE_CHARS:
                return self._original(hit.ref, message, 0, hit.state)
            parts = snippets(text, query, width=_SNIPPET_CHARS, limit=_SNIPPETS)
            head = (
                f"{_describe(hit.ref, message, hit.state)} {len(text)} characters; "
                f"passages at their offsets ('#{hit.ref}@{parts[0].start}' reads on from one):"
            )
            body = "\n".join(f"@{part.start}: {render(part)}" for part in parts)
            return _Section(head, body)
        sources = store.get_messages(thread_id, ids=hit.source_ids) if hit.source_ids else []
        if sources and all(self._own(message) for _, message in sources):
            return None
        refs = format_refs(ref for ref, _ in sources)
        return _Section(f"[fact from {refs}] {hit.text}" if refs else f"[fact] {hit.text}", "")

    def _search(self, thread_id: str, text: str) -> list[SearchHit]:
        """Best matches for all words; failing that, for as many of them as possible."""
        store = self.engine.store
        limit = 2 * self.max_results  # room for the tool's own traffic, left out later
        hits = store.search(text, thread_id=thread_id, limit=limit)
        if hits:
            return self._originals_first(hits)
        words = list(dict.fromkeys(w for w in _WORD.findall(text) if len(w) >= _MIN_WORD))
        if len(words) < 2:
            return []
        scores: dict[tuple[str, str], tuple[int, int, SearchHit]] = {}
        order = 0
        for word in words:
            for hit in store.search(word, thread_id=thread_id, limit=limit):
                key = (hit.kind, str(hit.ref) if hit.kind == "message" else hit.text)
                count, first, _ = scores.get(key, (0, order, hit))
                scores[key] = (count + 1, first, hit)
                order += 1
        ranked = sorted(scores.values(), key=lambda item: (-item[0], item[1]))
        return self._originals_first([hit for _, _, hit in ranked[:limit]])

    @staticmethod
    def _originals_first(hits: list[SearchHit]) -> list[SearchHit]:
        """Archived originals before facts (the model asked for what was said)."""
        return [h for h in hits if h.kind == "message"] + [h for h in hits if h.kind != "message"]

    def _fit(self, sections: Sequence[_Section]) -> str:
        """Join sections within ``max_chars``; say what was cut and how to read on."""
        out: list[str] = []
        used = 0
        shown = 0
        for position, section in enumerate(sections):
            text = section.text()
            reserve = 100 if position < len(sections) - 1 else 0  # for the note at the end
            if len(text) <= self.max_chars - used - reserve:
                out.append(text)
                used += len(text) + 2
                shown += 1
                continue
            # Room for the note that says where it was cut, and for the closing note.
            keep = max(self.max_chars - used - 100 - 80, 0)
            if keep >= 200 or not out:
                out.append(self._cut(section, keep))
                shown += 1
            break
        left = len(sections) - shown
        if left > 0:
            out.append(f"({left} more result(s) not shown; narrow the query or ask by #n)")
        return "\n\n".join(out)

    @staticmethod
    def _cut(section: _Section, keep: int) -> str:
        text = section.text()
        if section.ref is None:
            return f"{text[:keep]}\n[… cut at {keep} of {len(text)} characters: the recall limit]"
        room = max(keep - len(section.head) - 1, 1)
        chunk, next_offset = page(section.body, 0, room)
        if next_offset is None:
            return f"{section.head}\n{chunk}"
        at = section.offset + next_offset
        return (
            f"{section.head}\n{chunk}\n[… characters {section.offset}-{at} of {section.total}; "
            f"ask '#{section.ref}@{at}' for the rest]"
        )


def make_recall_tool(
    engine: ContextDistiller,
    *,
    name: str = "recall",
    max_chars: int | None = None,
    max_results: int = 8,
) -> BaseTool:
    """A LangChain tool that searches the current thread's archive of ``engine``.

    The thread is the tool call's ``configurable.thread_id``; results never cross
    threads. Output is at most ``max_chars`` characters; by default two characters
    per token of the engine's ``max_tool_result_tokens``, so the engine never has to
    shorten a recall result (which would defeat it). If the engine's memory block
    does not yet name a recall tool, it is told about this one, so the model learns
    the tool exists (threads already open keep their header until reloaded).
    """
    if not isinstance(engine, ContextDistiller):
        raise TypeError(f"engine must be a ContextDistiller, not {type(engine).__name__}")
    if max_chars is None:
        max_chars = max(_MIN_CHARS, 2 * engine.max_tool_result_tokens)
    if max_chars < _MIN_CHARS:
        raise ValueError(f"max_chars must be at least {_MIN_CHARS}, not {max_chars}")
    if max_results < 1:
        raise ValueError(f"max_results must be positive, not {max_results}")
    if engine.recall_tool is None:
        engine.recall_tool = name
    elif engine.recall_tool != name:
        logger.warning(
            "the memory block names the recall tool %r, but this one is %r",
            engine.recall_tool,
            name,
        )
    body = _Recall(engine, name=name, max_chars=max_chars, max_results=max_results)

    def recall(query: str, config: RunnableConfig) -> str:
        return body.run(query, config)

    async def arecall(query: str, config: RunnableConfig) -> str:
        return await asyncio.to_thread(body.run, query, config)

    return StructuredTool.from_function(
        func=recall,
        coroutine=arecall,
        name=name,
        description=_DESCRIPTION,
        args_schema=_RecallArgs,
    )
