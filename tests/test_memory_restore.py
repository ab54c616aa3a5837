"""A restored memory block parses lazily and still shows what an eager restore shows.

A cold process takes apart only the facts its stored pages show; the rest are parsed
when something needs them. Whatever happens in between (repeated fits that retire
unparsed lines, repeated facts joining lines, new facts, other caps), the lazy block
must show, and hold, exactly what a block parsed in full at restore does.
"""

from __future__ import annotations

import random
from dataclasses import replace
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from context_distill import _memory_held
from context_distill.memory import MemoryBlock
from context_distill.store import StoredFact
from context_distill.tokens import encoding_counter

COUNT = encoding_counter("o200k_base")
CAPS = [60, 120, 200, 400]


def batch(rng: random.Random, first_id: int, n: int, distillation: int) -> list[StoredFact]:
    out = []
    for fact_id in range(first_id, first_id + n):
        k = rng.randrange(3 * n + 4)  # some texts repeat: they join the line they repeat
        text = f"bash(command=cat mod_{k}.py) → defines handler_{k}; parser_{k % 5}; line {k}"
        out.append(StoredFact(fact_id, text, (f"m{fact_id}",), (fact_id + 1,), 20, distillation))
    return out


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 7), st.sampled_from(CAPS)), min_size=2, max_size=7),
    st.integers(0, 3),
    st.sampled_from(CAPS),
    st.integers(0, 2**16),
)
def test_a_lazy_restore_shows_and_holds_what_an_eager_one_does(
    batches: list[tuple[int, int]], refits: int, next_cap: int, seed: int
) -> None:
    rng = random.Random(seed)
    with mock.patch.object(_memory_held, "_HOLD", 6):  # retirement comes early
        live = MemoryBlock(COUNT)
        stored: dict[int, StoredFact] = {}
        next_id = 0
        for distillation, (n, cap) in enumerate(batches, start=1):
            facts = batch(rng, next_id, n, distillation)
            next_id += n
            stored.update((f.fact_id, f) for f in facts)
            live.add(facts)
            live.fit(cap)
            for fact_id in live.take_retired():
                stored[fact_id] = replace(stored[fact_id], retired_at=distillation)
        lazy, eager = MemoryBlock(COUNT), MemoryBlock(COUNT)
        for block in (lazy, eager):
            block.restore(list(stored.values()))
            block.resume(live.pages, "test")
        eager.settle()
        for _ in range(1 + refits):  # fits in a row: lines left out miss, then retire
            lazy.fit(live.cap)
            eager.fit(live.cap)
            assert lazy.message() == eager.message()
            assert lazy.take_retired() == eager.take_retired()
        assert lazy.message() == eager.message() == live.message()
        new = batch(rng, next_id, 3, len(batches) + 1)
        for block in (lazy, eager):
            block.add(new)
            block.fit(next_cap)
        assert not lazy._unparsed
        assert lazy.message() == eager.message()
        assert lazy.tokens == eager.tokens
        assert lazy.held() == eager.held()
        assert lazy._df == eager._df
        assert lazy.take_retired() == eager.take_retired()
