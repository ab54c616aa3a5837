"""Per-token self-information -log p(token | prefix) from a causal LM, batched and lean.

The plain way (a padded forward pass, a full log-softmax over the vocabulary,
then a gather) spends most of its time and memory on a ``[batch, length, vocab]``
float tensor it then throws away. Here sequences are sorted by length and packed
into batches of similar length, right-padded so that a plain causal mask is exact
(a real token never sees a pad after it, so no attention mask is needed and
fused attention kernels apply); the language-model head is applied only to the
positions whose next token must be scored, in chunks, and each score is a
logsumexp minus the gathered target logit, so no log-softmax copy is made.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from .loading import LoadedModel


def _default_batch_tokens(device: torch.device) -> int:
    return 65_536 if device.type == "cuda" else 4_096


def _head(model: Any) -> tuple[torch.Tensor, torch.Tensor | None, float, float | None]:
    """The output projection (weight, bias), a logit scale and a soft cap, if any."""
    head = model.get_output_embeddings()
    config = model.config
    scale = float(getattr(config, "logit_scale", None) or 1.0)
    cap = getattr(config, "final_logit_softcapping", None)
    return head.weight, getattr(head, "bias", None), scale, (float(cap) if cap else None)


def _base(model: Any) -> Any:
    return getattr(model, model.base_model_prefix)


def surprisal(
    loaded: LoadedModel,
    sequences: Sequence[Sequence[int]],
    *,
    score_from: Sequence[int] | None = None,
    skip: Sequence[Sequence[bool]] | None = None,
    max_batch_tokens: int | None = None,
    head_chunk: int | None = None,
) -> list[list[float]]:
    """Self-information (nats) of each token given the tokens before it.

    ``sequences[i][0]`` is context only (a start token), so its value is ``nan``; so
    are positions before ``score_from[i]`` (context carried over from a previous
    chunk) and positions where ``skip[i][j]`` is true (tokens the caller keeps
    anyway, which need no score). Results come back in input order.
    """
    import torch

    device = loaded.device
    budget = max_batch_tokens or _default_batch_tokens(device)
    chunk = head_chunk or (8_192 if device.type == "cuda" else 512)
    out: list[list[float]] = [[math.nan] * len(seq) for seq in sequences]
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]), reverse=True)
    model = loaded.model
    base = _base(model)
    weight, bias, scale, cap = _head(model)
    pad = int(loaded.tokenizer.pad_token_id or 0)

    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        if len(sequences[index]) < 2:
            continue
        width = len(sequences[current[0]]) if current else len(sequences[index])
        if current and (len(current) + 1) * width > budget:
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)

    with torch.inference_mode():
        for batch in batches:
            width = len(sequences[batch[0]])
            lengths = [len(sequences[index]) for index in batch]
            ids_cpu = torch.tensor(
                [
                    list(sequences[i]) + [pad] * (width - n)
                    for i, n in zip(batch, lengths, strict=True)
                ],
                dtype=torch.long,
            )
            positions = torch.arange(width)[None, :]
            first = torch.tensor(
                [max(1, score_from[i]) if score_from is not None else 1 for i in batch]
            )
            wanted = (positions >= first[:, None]) & (positions < torch.tensor(lengths)[:, None])
            if skip is not None:
                skipped = torch.tensor(
                    [
                        list(skip[i]) + [True] * (width - n)
                        for i, n in zip(batch, lengths, strict=True)
                    ],
                    dtype=torch.bool,
                )
                wanted &= ~skipped
            if not bool(wanted.any()):
                continue
            ids = ids_cpu.to(device, non_blocking=True)
            wanted_d = wanted.to(device, non_blocking=True)
            hidden = base(input_ids=ids, use_cache=False).last_hidden_state
            # The state at position p predicts the token at p + 1.
            picked = hidden[:, :-1][wanted_d[:, 1:]]
            targets = ids[:, 1:][wanted_d[:, 1:]]
            values = _self_information(picked, targets, weight, bias, scale, cap, chunk)
            grid = torch.full((len(batch), width), math.nan, dtype=torch.float32, device=device)
            grid[wanted_d] = values.float()
            grid_rows = grid.cpu().tolist()
            for row, (index, n) in enumerate(zip(batch, lengths, strict=True)):
                out[index] = grid_rows[row][:n]
    return out


def _self_information(
    hidden: torch.Tensor,
    targets: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    scale: float,
    cap: float | None,
    chunk: int,
) -> torch.Tensor:
    """logsumexp(logits) - logit[target], without keeping a [n, vocab] tensor around."""
    import torch

    results = []
    for start in range(0, hidden.shape[0], chunk):
        h = hidden[start : start + chunk]
        t = targets[start : start + chunk]
        logits = h @ weight.T
        if bias is not None:
            logits = logits + bias
        logits = logits.float()
        if scale != 1.0:
            logits = logits * scale
        if cap is not None:
            logits = torch.tanh(logits / cap) * cap
        target = logits.gather(1, t[:, None]).squeeze(1)
        results.append(torch.logsumexp(logits, dim=-1) - target)
    return torch.cat(results) if results else hidden.new_zeros(0)
