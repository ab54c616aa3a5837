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

from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel, Field

from ._doors import thread_id_from
from .engine import ContextDistiller
from .memory import format_refs
from .messages import text_of
from .store import SearchHit

logger = logging.getLogger(__name__)

__all__ = ["make_recall_tool"]

_REF = re.compile(r"#\s*(\d+)(?:\s*-\s*#?(\d+))?")
_WORD = re.compile(r"[^\W_][\w.:/@-]*", re.UNICODE)
_MAX_REFS = 24
_MIN_WORD = 3
_MIN_CHARS = 300

_DESCRIPTION = (
    "Read back earlier parts of this conversation that were distilled out of view. "
    "Returns archived original messages word for word (each with its #number) and "
    "distilled facts. Query with keywords (names, ids, numbers, error text), or with "
    "archive numbers from the memory block such as '#12' or '#12-14'."
)


def _parse_refs(query: str) -> tuple[list[int], str]:
    """Archive numbers named in the query (``#12``, ``#12-14``), and the rest of it."""
    refs: list[int] = []
    for match in _REF.finditer(query):
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) else first
        if last < first:
            first, last = last, first
        for ref in range(first, min(last, first + _MAX_REFS - 1) + 1):
            if ref not in refs:
                refs.append(ref)
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
        sections: list[str] = []
        seen_refs: set[int] = set()
        store = self.engine.store
        if refs:
            for ref, message in store.get_messages(thread_id, refs=refs):
                seen_refs.add(ref)
                sections.append(f"{_describe(ref, message)}\n{text_of(message)}")
            missing = [ref for ref in refs if ref not in seen_refs]
            if missing:
                sections.append(f"(not in this thread's archive: {format_refs(missing)})")
        if rest:
            if " " not in rest:
                for ref, message in store.get_messages(thread_id, ids=[rest]):
                    if ref not in seen_refs:
                        seen_refs.add(ref)
                        sections.append(f"{_describe(ref, message)}\n{text_of(message)}")
            shown = 0
            in_view = self.engine.shown_ids(thread_id)  # the model sees these already
            for hit in self._search(thread_id, rest):
                if shown >= self.max_results:
                    break
                if hit.kind == "message" and hit.message_id in in_view:
                    continue
                section = self._section(thread_id, hit, seen_refs)
                if section is not None:
                    sections.append(section)
                    shown += 1
        if not sections:
            return (
                f"Nothing in this conversation's archive matches {query!r}. Memory lines name "
                "archived messages as #n; ask for one by its number, e.g. '#12'."
            )
        return self._fit(sections)

    def _section(self, thread_id: str, hit: SearchHit, seen_refs: set[int]) -> str | None:
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
            return f"{_describe(hit.ref, message, hit.state)}\n{text_of(message)}"
        sources = store.get_messages(thread_id, ids=hit.source_ids) if hit.source_ids else []
        if sources and all(self._own(message) for _, message in sources):
            return None
        refs = format_refs(ref for ref, _ in sources)
        return f"[fact from {refs}] {hit.text}" if refs else f"[fact] {hit.text}"

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

    def _fit(self, sections: Sequence[str]) -> str:
        """Join sections within ``max_chars``; say what was cut."""
        out: list[str] = []
        used = 0
        shown = 0
        for position, section in enumerate(sections):
            reserve = 100 if position < len(sections) - 1 else 0  # for the note at the end
            room = self.max_chars - used - reserve
            if len(section) <= room:
                out.append(section)
                used += len(section) + 2
                shown += 1
                continue
            # Room for the note that says where it was cut, and for the closing note.
            keep = max(self.max_chars - used - 100 - 80, 0)
            if keep >= 200 or not out:
                out.append(
                    f"{section[:keep]}\n[… cut at {keep} of {len(section)} characters: "
                    "the recall limit]"
                )
                shown += 1
            break
        left = len(sections) - shown
        if left > 0:
            out.append(f"({left} more result(s) not shown; narrow the query or ask by #n)")
        return "\n\n".join(out)


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
