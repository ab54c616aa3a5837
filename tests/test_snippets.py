"""Snippets around matches, and the recall tool paging through long originals."""

from __future__ import annotations

import re
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage

from context_distill import ContextDistiller, SQLiteMemoryStore
from context_distill.snippets import find_matches, page, query_terms, render, snippets
from context_distill.tools import make_recall_tool


def _log(lines: int, needle_at: int, needle: str) -> str:
    out = [f"line {n}: step ok, nothing to report here at all" for n in range(lines)]
    out[needle_at] = f"line {needle_at}: {needle}"
    return "\n".join(out)


def test_snippet_is_a_window_of_the_original_with_exact_offsets() -> None:
    text = _log(300, 250, "ERROR KeyError: 'token_id' in auth.refresh")
    (snip,) = snippets(text, "KeyError token_id", width=120)
    assert text[snip.start : snip.end] == snip.text
    assert snip.cut_before and snip.cut_after and snip.length == len(text)
    found = [text[s:e] for s, e in snip.matches]
    assert found == ["KeyError", "token_id"]
    shown = render(snip, mark=("[", "]"))
    assert shown.startswith("…") and shown.endswith("…") and "[KeyError]: '[token_id]'" in shown


def test_matches_follow_word_starts_and_stems() -> None:
    assert find_matches("mytoken token_id TOKEN", "token") == [(8, 13), (17, 22)]
    text = "the build failed twice, then passed"
    assert [text[s:e] for s, e in find_matches(text, "failing")] == ["failed"]
    assert query_terms('KeyError "refund policy" keyerror') == ["keyerror", "refund policy"]


def test_more_matches_than_windows_prefers_unseen_terms() -> None:
    text = ("alpha " + "x " * 300) * 5 + "omega " + "y " * 300
    parts = snippets(text, "alpha omega", width=60, limit=2)
    shown = {text[s:e] for p in parts for s, e in p.matches}
    assert shown == {"alpha", "omega"}
    assert [p.start for p in parts] == sorted(p.start for p in parts)


def test_no_match_gives_the_start_and_page_walks_the_text() -> None:
    text = "word " * 1000
    (snip,) = snippets(text, "absent", width=100)
    assert snip.start == 0 and snip.matches == () and len(snip.text) <= 101
    pieces, offset = [], 0
    while True:
        chunk, nxt = page(text, offset, 777)
        pieces.append(chunk)
        if nxt is None:
            break
        assert nxt > offset
        offset = nxt
    assert "".join(pieces) == text
    assert page(text, 10_000, 50) == ("", None)
    with pytest.raises(ValueError):
        page(text, -1, 10)
    with pytest.raises(ValueError):
        snippets(text, "word", width=5)


def _long_session() -> list[BaseMessage]:
    messages: list[BaseMessage] = [
        SystemMessage("You debug services.", id="sys"),
        HumanMessage("Find why auth fails.", id="task"),
    ]
    for n in range(12):
        needle = "FATAL: token_secret rotated by cron-7" if n == 3 else "all fine"
        extra = " token_secret ok" if n == 1 else ""
        messages.append(
            AIMessage(
                "", id=f"ai{n}", tool_calls=[{"name": "logs", "args": {"n": n}, "id": f"c{n}"}]
            )
        )
        body = _log(200, 170, needle) + extra
        messages.append(ToolMessage(body, tool_call_id=f"c{n}", name="logs", id=f"r{n}"))
    messages.append(HumanMessage("And now?", id="last"))
    return messages


def _cfg(thread: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread}}


def test_recall_shows_matches_deep_in_long_results_side_by_side() -> None:
    engine = ContextDistiller(SQLiteMemoryStore(), budget_tokens=3000)
    history = _long_session()
    assert engine.update("t", history).stats.distillations > 0
    tool = make_recall_tool(engine, max_chars=1800)
    out = tool.invoke({"query": "token_secret"}, config=_cfg("t"))
    assert len(out) <= 1800
    # Both long results match; the first one shown does not push the second away.
    assert "FATAL: token_secret rotated by cron-7" in out
    assert "token_secret ok" in out
    offsets = [int(m) for m in re.findall(r"^@(\d+): ", out, re.M)]
    assert offsets, out
    ref = int(re.search(r"\[#(\d+) tool logs result for call c3", out).group(1))  # type: ignore[union-attr]
    original = engine.store.get_messages("t", refs=[ref])[0][1].text
    deep = original.index("FATAL")
    assert any(o <= deep for o in offsets)


def test_recall_pages_through_a_long_original() -> None:
    engine = ContextDistiller(SQLiteMemoryStore(), budget_tokens=3000)
    engine.update("t", _long_session())
    ref, message = engine.store.get_messages("t", ids=["r3"])[0]
    original = message.text
    tool = make_recall_tool(engine, max_chars=2000)
    query, pieces = f"#{ref}", []
    for _ in range(20):
        out = tool.invoke({"query": query}, config=_cfg("t"))
        assert len(out) <= 2000
        body = out.split("\n", 1)[1]
        more = re.search(
            rf"\n\[… characters \d+-(\d+) of {len(original)}; ask '#{ref}@(\d+)'", body
        )
        if more is None:
            pieces.append(body)
            break
        assert more.group(1) == more.group(2)
        pieces.append(body[: more.start()])
        query = f"#{ref}@{more.group(2)}"
    assert "".join(pieces) == original
    past = tool.invoke({"query": f"#{ref}@{len(original) + 5}"}, config=_cfg("t"))
    assert "nothing from" in past
