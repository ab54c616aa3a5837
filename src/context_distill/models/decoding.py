"""Batched greedy decoding for short answers, lean enough for a 135M model to be fast.

Prompts are sorted by length and run in batches; each row stops at an end of
sequence or at the first blank line after some text (:mod:`.stopping`).
Llama-family models run through the static-cache loop of :mod:`.fast_decoder`;
other architectures go through ``generate`` with the same inputs and the same
stopping rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .fast_decoder import FastDecoder, is_supported
from .stopping import StopTables, answer_text, stop_tables

if TYPE_CHECKING:
    from .loading import LoadedModel

__all__ = ["StopTables", "answer_text", "greedy_generate", "is_supported", "stop_tables"]


def greedy_generate(
    loaded: LoadedModel,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: Sequence[int],
    *,
    max_batch: int | None = None,
    cuda_graphs: bool = True,
) -> list[str]:
    """Greedy answers to tokenised ``prompts``, each capped at its ``max_new_tokens``.

    Rows stop at an end-of-sequence token or at the first blank line after some
    text. Prompts are sorted by length and run in batches of ``max_batch`` rows
    (64 on CUDA, 16 on CPU).
    """
    if not prompts:
        return []
    model = loaded.model
    vocab = int(model.get_output_embeddings().weight.shape[0])
    tables = stop_tables(loaded, vocab)
    limit = max_batch or (64 if loaded.device.type == "cuda" else 16)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    answers = [""] * len(prompts)
    fast = is_supported(model)
    for start in range(0, len(order), limit):
        batch = order[start : start + limit]
        batch_prompts = [list(prompts[i]) for i in batch]
        caps = [max(1, int(max_new_tokens[i])) for i in batch]
        if fast:
            rows = FastDecoder(loaded, tables).run(batch_prompts, caps, cuda_graphs=cuda_graphs)
        else:
            rows = _generate_fallback(loaded, tables, batch_prompts, caps)
        for index, row in zip(batch, rows, strict=True):
            answers[index] = answer_text(loaded, row, tables)
    return answers


def _generate_fallback(
    loaded: LoadedModel, tables: StopTables, prompts: list[list[int]], caps: list[int]
) -> list[list[int]]:
    import torch

    pad = int(loaded.tokenizer.pad_token_id or 0)
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=loaded.device)
    mask = torch.tensor(
        [[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=loaded.device
    )
    stop_ids = [int(i) for i in torch.nonzero(tables.stop).flatten().tolist()]
    with torch.inference_mode():
        out = loaded.model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max(caps),
            do_sample=False,
            eos_token_id=stop_ids or None,
            pad_token_id=pad,
        )
    return [row[width : width + cap].tolist() for row, cap in zip(out, caps, strict=True)]
