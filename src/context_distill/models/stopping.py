"""When a generated answer ends: lookups the device reads, and the text a row spells.

The stopping rules (end of sequence or another special token, a blank line after
some text) are decided per token from tables built once per vocabulary, so the
decode loop tests them on the device without a round trip to Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from .loading import LoadedModel


@dataclass(frozen=True)
class StopTables:
    """Per-vocabulary lookups that let the device decide when a row is done."""

    stop: torch.Tensor  # ends the answer at once (EOS, special tokens)
    blank: torch.Tensor  # holds a blank line
    starts_newline: torch.Tensor
    ends_newline: torch.Tensor
    content: torch.Tensor  # has a non-space character
    texts: tuple[str, ...]


def stop_tables(loaded: LoadedModel, vocab_size: int) -> StopTables:
    """Built once per tokenizer: decoding 50k single tokens takes a moment."""
    import torch

    with loaded.caches_lock:
        cached: StopTables | None = loaded.caches.get("stop_tables")
        if cached is not None and len(cached.texts) == vocab_size:
            return cached
        tokenizer = loaded.tokenizer
        known = min(vocab_size, len(tokenizer))
        with loaded.tokenizer_lock:
            texts = tuple(tokenizer.batch_decode([[i] for i in range(known)]))
            specials = set(tokenizer.all_special_ids or [])
        texts += ("",) * (vocab_size - known)
        eos = tokenizer.eos_token_id
        ids = [eos] if isinstance(eos, int) else list(eos or [])
        for token in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>"):
            value = tokenizer.get_vocab().get(token)
            if value is not None:
                ids.append(value)
        stop = torch.zeros(vocab_size, dtype=torch.bool)
        for index in {*ids, *specials}:
            if 0 <= index < vocab_size:
                stop[index] = True
        blank = torch.tensor([bool(t.strip(" \t")) and "\n\n" in t for t in texts])
        tables = StopTables(
            stop=stop.to(loaded.device),
            blank=blank.to(loaded.device),
            starts_newline=torch.tensor([t.lstrip(" \t").startswith("\n") for t in texts]).to(
                loaded.device
            ),
            ends_newline=torch.tensor([t.rstrip(" \t").endswith("\n") for t in texts]).to(
                loaded.device
            ),
            content=torch.tensor([bool(t.strip()) for t in texts]).to(loaded.device),
            texts=texts,
        )
        loaded.caches["stop_tables"] = tables
        return tables


def answer_text(loaded: LoadedModel, tokens: Sequence[int], tables: StopTables) -> str:
    """The answer a row of generated tokens spells, up to a stop token or a blank line."""
    kept: list[int] = []
    for token in tokens:
        if bool(tables.stop[token]):
            break
        kept.append(int(token))
    with loaded.tokenizer_lock:
        text: str = loaded.tokenizer.decode(kept, skip_special_tokens=True)
    stripped = text.lstrip()
    cut = stripped.find("\n\n")
    return stripped if cut < 0 else stripped[:cut]
