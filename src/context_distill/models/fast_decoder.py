"""Llama-family decoding with a static key/value cache, on CUDA replayed as one graph.

With a 135M model, ``generate`` spends most of each step outside the maths: cache
bookkeeping, logits processors, stopping criteria and, on a GPU, hundreds of
kernel launches from Python. For Llama-family models (Llama, Mistral, Qwen2,
Qwen3, SmolLM) this runs its own loop over the model's own modules: a
preallocated key/value cache, a prompt prefix shared by every row computed once
and kept, stopping tests on the device (see :mod:`.stopping`), and on CUDA the
decode step captured once as a CUDA graph and replayed.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from .loading import LoadedModel
    from .stopping import StopTables

logger = logging.getLogger(__name__)

_SUPPORTED = frozenset({"llama", "mistral", "qwen2", "qwen3", "smollm3"})
_SYNC_EVERY = 8  # decode steps between checks whether every row has finished
_MIN_SHARED = 8  # a shorter common prefix is not worth a separate pass
_PREFIX_SLOTS = 4


def prefix_cache(loaded: LoadedModel) -> OrderedDict[tuple[int, ...], Any]:
    """Keys and values of recent shared prompt prefixes, newest last (caller holds the lock)."""
    cache: OrderedDict[tuple[int, ...], Any] = loaded.caches.setdefault(
        "prompt_prefixes", OrderedDict()
    )
    return cache


def common_prefix(prompts: Sequence[Sequence[int]]) -> int:
    """Length of the token prefix all prompts share, leaving each at least one token."""
    first = prompts[0]
    limit = min(len(p) for p in prompts) - 1
    length = 0
    while length < limit and all(p[length] == first[length] for p in prompts):
        length += 1
    return length if length >= _MIN_SHARED else 0


def is_supported(model: Any) -> bool:
    """Whether the fast loop knows this architecture."""
    config = model.config
    if getattr(config, "model_type", None) not in _SUPPORTED:
        return False
    base = getattr(model, model.base_model_prefix, None)
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None)
    rope_type = (rope.get("rope_type") or rope.get("type")) if isinstance(rope, dict) else None
    window = getattr(config, "sliding_window", None) and getattr(
        config, "use_sliding_window", config.model_type == "mistral"
    )
    return (
        base is not None
        and hasattr(base, "rotary_emb")
        and hasattr(base, "layers")
        and rope_type not in ("dynamic", "longrope")
        and not window
    )


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    import torch

    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class FastDecoder:
    """One batch through the model with a static cache; see the module docstring."""

    def __init__(self, loaded: LoadedModel, tables: StopTables) -> None:
        model = loaded.model
        self.loaded = loaded
        self.tables = tables
        self.base = getattr(model, model.base_model_prefix)
        self.head = model.get_output_embeddings()
        config = model.config
        self.heads = int(config.num_attention_heads)
        self.kv_heads = int(getattr(config, "num_key_value_heads", None) or self.heads)
        self.head_dim = int(
            getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        )
        self.groups = self.heads // self.kv_heads
        self.layers = list(self.base.layers)
        self.device = loaded.device
        self.dtype = self.head.weight.dtype

    # -- the model, one layer loop for prefill and decode -----------------------

    def _forward(
        self,
        tokens: torch.Tensor,  # [B, T]
        cos: torch.Tensor,  # [B, T, D]
        sin: torch.Tensor,
        write_at: torch.Tensor,  # [T] cache positions
        mask: torch.Tensor,  # [B, 1, T, S'] bool, True = attend
        kv_len: int | None,
        caches: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        batch, length = tokens.shape
        hidden = self.base.embed_tokens(tokens)
        cos_u, sin_u = cos[:, None], sin[:, None]
        grouped_mask = mask.repeat(1, 1, self.groups, 1) if self.groups > 1 else mask
        k_cache, v_cache = caches if caches is not None else (self.k_cache, self.v_cache)
        for index, layer in enumerate(self.layers):
            attn = layer.self_attn
            x = layer.input_layernorm(hidden)
            q = attn.q_proj(x).view(batch, length, self.heads, self.head_dim)
            k = attn.k_proj(x).view(batch, length, self.kv_heads, self.head_dim)
            v = attn.v_proj(x).view(batch, length, self.kv_heads, self.head_dim)
            if hasattr(attn, "q_norm"):
                q, k = attn.q_norm(q), attn.k_norm(k)
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
            q = q * cos_u + _rotate_half(q) * sin_u
            k = k * cos_u + _rotate_half(k) * sin_u
            k_cache[index].index_copy_(2, write_at, k)
            v_cache[index].index_copy_(2, write_at, v)
            keys = k_cache[index]
            values = v_cache[index]
            if kv_len is not None:
                keys, values = keys[:, :, :kv_len], values[:, :, :kv_len]
            # Queries of one key/value head side by side: no repeated K/V copies.
            q = q.reshape(batch, self.kv_heads, self.groups * length, self.head_dim)
            out = F.scaled_dot_product_attention(
                q, keys, values, attn_mask=grouped_mask, scale=float(attn.scaling)
            )
            out = out.reshape(batch, self.heads, length, self.head_dim).transpose(1, 2)
            hidden = hidden + attn.o_proj(out.reshape(batch, length, -1))
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        last = self.base.norm(hidden[:, -1])
        logits: torch.Tensor = self.head(last)
        return torch.argmax(logits, dim=-1)

    # -- one batch -------------------------------------------------------------

    def run(
        self, prompts: list[list[int]], caps: list[int], *, cuda_graphs: bool
    ) -> list[list[int]]:
        """Greedy tokens for each prompt, at most its cap.

        The prompts' common prefix (the instructions and examples every prompt
        shares) is computed once, cached across calls, and copied into each row;
        only the rest of each prompt is run per row. Cache layout per row:
        [shared prefix][left padding][own suffix][generated tokens].
        """
        import torch

        device = self.device
        batch = len(prompts)
        shared = common_prefix(prompts) if batch > 1 else 0
        suffixes = [p[shared:] for p in prompts]
        suffix_width = max(len(p) for p in suffixes)
        width = shared + suffix_width
        steps = max(caps)
        total = width + steps
        pad = int(self.loaded.tokenizer.pad_token_id or 0)
        cache_shape = (batch, self.kv_heads, total, self.head_dim)
        self.k_cache = [
            torch.zeros(cache_shape, dtype=self.dtype, device=device) for _ in self.layers
        ]
        self.v_cache = [
            torch.zeros(cache_shape, dtype=self.dtype, device=device) for _ in self.layers
        ]
        tables = self.tables
        with torch.inference_mode():
            positions = torch.arange(total, device=device)
            cos_table, sin_table = self.base.rotary_emb(self.k_cache[0], positions[None, :])
            cos_table, sin_table = cos_table[0], sin_table[0]  # [S, D]
            if shared:
                prefix_k, prefix_v = self._prefix(prompts[0][:shared], cos_table, sin_table)
                for index in range(len(self.layers)):
                    self.k_cache[index][:, :, :shared] = prefix_k[index]
                    self.v_cache[index][:, :, :shared] = prefix_v[index]
            lengths = torch.tensor([len(p) for p in prompts], device=device)
            offsets = torch.tensor([suffix_width - len(p) for p in suffixes], device=device)
            tokens = torch.tensor(
                [[pad] * (suffix_width - len(p)) + p for p in suffixes],
                dtype=torch.long,
                device=device,
            )
            slots = positions[None, :]
            valid = (slots < shared) | (
                (slots >= shared + offsets[:, None]) & (slots < width)
            )  # [B, S]
            rel = shared + (positions[None, :suffix_width] - offsets[:, None]).clamp(min=0)
            query_slots = positions[shared:width]
            keys = positions[None, None, None, :width]
            mask = valid[:, None, None, :width] & (keys <= query_slots[None, None, :, None])
            mask |= keys == query_slots[None, None, :, None]  # a pad row sees itself
            first = self._forward(tokens, cos_table[rel], sin_table[rel], query_slots, mask, width)
            state = _DecodeState.create(first, lengths, valid, caps, steps, tables, device)
            if cuda_graphs and device.type == "cuda":
                try:
                    self._decode_graph(state, cos_table, sin_table, steps)
                except Exception as error:  # a capture failure must not fail distillation
                    logger.warning("CUDA graph capture failed (%s); decoding eagerly", error)
                    self._decode_eager(state, cos_table, sin_table, steps, width, full=True)
            else:
                self._decode_eager(state, cos_table, sin_table, steps, width, full=False)
            generated = torch.cat([first[:, None], state.out[:, : steps - 1]], dim=1)
            rows = generated.cpu().tolist()
        return [row[:cap] for row, cap in zip(rows, caps, strict=True)]

    def _prefix(
        self, prefix: list[int], cos_table: torch.Tensor, sin_table: torch.Tensor
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Keys and values of a shared prefix, from the cache or computed once."""
        import torch

        key = tuple(prefix)
        with self.loaded.caches_lock:
            prefixes = prefix_cache(self.loaded)
            hit: tuple[list[torch.Tensor], list[torch.Tensor]] | None = prefixes.get(key)
            if hit is not None:
                prefixes.move_to_end(key)
                return hit
        length = len(prefix)
        shape = (1, self.kv_heads, length, self.head_dim)
        caches = (
            [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in self.layers],
            [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in self.layers],
        )
        slots = torch.arange(length, device=self.device)
        mask = torch.ones(length, length, dtype=torch.bool, device=self.device).tril()[None, None]
        tokens = torch.tensor([prefix], dtype=torch.long, device=self.device)
        self._forward(
            tokens, cos_table[None, :length], sin_table[None, :length], slots, mask, length, caches
        )
        with self.loaded.caches_lock:
            prefixes[key] = caches
            while len(prefixes) > _PREFIX_SLOTS:
                prefixes.popitem(last=False)
        return caches

    def _step(
        self,
        state: _DecodeState,
        cos_table: torch.Tensor,
        sin_table: torch.Tensor,
        kv_len: int | None,
    ) -> None:
        """One decode step, entirely in place on ``state`` (so a CUDA graph can replay it)."""
        import torch

        tables = self.tables
        state.valid.index_fill_(1, state.index, True)
        mask = (
            state.valid[:, None, None, :kv_len]
            if kv_len is not None
            else state.valid[:, None, None, :]
        )
        nxt = self._forward(
            state.token[:, None],
            cos_table[state.position][:, None],
            sin_table[state.position][:, None],
            state.index,
            mask,
            kv_len,
        )
        nxt = torch.where(state.finished, state.filler, nxt)
        state.out.index_copy_(1, state.step, nxt[:, None])
        done = tables.stop[nxt] | (state.has_content & tables.blank[nxt])
        done |= state.has_content & state.previous_newline & tables.starts_newline[nxt]
        done |= state.step + 2 >= state.caps  # the first token came from the prefill
        state.finished |= done
        state.has_content |= tables.content[nxt]
        state.previous_newline.copy_(tables.ends_newline[nxt])
        state.token.copy_(nxt)
        state.position.add_(1)
        state.index.add_(1)
        state.step.add_(1)

    def _decode_eager(
        self,
        state: _DecodeState,
        cos_table: torch.Tensor,
        sin_table: torch.Tensor,
        steps: int,
        width: int,
        *,
        full: bool,
    ) -> None:
        for step in range(steps - 1):
            if bool(state.finished.all()):
                break
            self._step(state, cos_table, sin_table, None if full else width + step + 1)

    def _decode_graph(
        self, state: _DecodeState, cos_table: torch.Tensor, sin_table: torch.Tensor, steps: int
    ) -> None:
        import torch

        if steps <= 1 or bool(state.finished.all()):
            return
        snapshot = state.clone_small()
        stream_type: Any = torch.cuda.Stream
        stream = stream_type()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm up kernels and allocator outside the capture
                self._step(state, cos_table, sin_table, None)
        torch.cuda.current_stream().wait_stream(stream)
        state.restore_small(snapshot)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._step(state, cos_table, sin_table, None)
        state.restore_small(snapshot)  # capture records without running; be safe anyway
        for step in range(steps - 1):
            if step % _SYNC_EVERY == 0 and bool(state.finished.all()):
                break
            graph.replay()


@dataclass
class _DecodeState:
    token: torch.Tensor  # [B] last token
    position: torch.Tensor  # [B] its rotary position
    index: torch.Tensor  # [1] cache slot it is written to
    step: torch.Tensor  # [1] decode step
    valid: torch.Tensor  # [B, S] cache slots that hold real tokens
    finished: torch.Tensor
    has_content: torch.Tensor
    previous_newline: torch.Tensor
    caps: torch.Tensor
    out: torch.Tensor  # [B, steps] generated tokens after the first
    filler: torch.Tensor  # a stop token written once a row has finished

    @classmethod
    def create(
        cls,
        first: torch.Tensor,
        lengths: torch.Tensor,
        valid: torch.Tensor,
        caps: list[int],
        steps: int,
        tables: StopTables,
        device: torch.device,
    ) -> _DecodeState:
        import torch

        width = int(valid.shape[1]) - steps
        caps_t = torch.tensor(caps, device=device)
        finished = tables.stop[first] | (caps_t <= 1)
        return cls(
            token=first.clone(),
            position=lengths.clone(),
            index=torch.tensor([width], device=device),
            step=torch.tensor([0], device=device),
            valid=valid.clone(),
            finished=finished,
            has_content=tables.content[first].clone(),
            previous_newline=tables.ends_newline[first].clone(),
            caps=caps_t,
            out=torch.zeros((first.shape[0], max(steps, 1)), dtype=torch.long, device=device),
            filler=torch.nonzero(tables.stop).flatten()[:1].reshape(()).clone()
            if bool(tables.stop.any())
            else torch.tensor(0, device=device),
        )

    def clone_small(self) -> dict[str, torch.Tensor]:
        names = ("token", "position", "index", "step", "valid", "finished", "has_content")
        return {name: getattr(self, name).clone() for name in (*names, "previous_newline")}

    def restore_small(self, snapshot: dict[str, torch.Tensor]) -> None:
        for name, value in snapshot.items():
            getattr(self, name).copy_(value)
