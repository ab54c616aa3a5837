"""A small instruct model writes telegraphic facts; only grounded ones are kept.

Small models write fluent facts and sometimes invent a number, a date or a name.
Each fact is checked against its source (see ``context_distill.grounding``) and
dropped when it states something the source does not; a group left with nothing
falls back to the extractive distiller, and ``GroupFacts`` records both. Groups of
all threads that call at the same moment are generated in one batch (left
padding, greedy, a cap on new tokens, a stop at the first blank line).
"""

from __future__ import annotations

import os
from typing import Any

from ..models.decoding import greedy_generate
from ..models.loading import LoadedModel
from ..types import Group, GroupFacts
from ._local import LocalModelDistiller
from ._prompt import grounded, prompt_messages, with_fallback
from .base import Distiller


class GenerativeDistiller(LocalModelDistiller):
    """Facts written by a local instruct model, checked against their source.

    ``model`` is a Hugging Face id, a folder, a ``.gguf`` file, a
    :class:`LoadedModel` or ``None`` for the offline default (SmolLM2-135M-Instruct).
    ``max_new_tokens`` caps each answer (a group's target size lowers it further);
    prompts longer than ``max_prompt_tokens`` are cut in the middle of the text.
    ``fallback`` (a distiller, a name, or ``None``) writes facts for groups left
    without grounded ones.
    """

    name = "generative"

    def __init__(
        self,
        model: str | os.PathLike[str] | LoadedModel | None = None,
        *,
        device: str | None = "auto",
        dtype: str | None = "auto",
        fallback: Distiller | str | None = "extractive",
        max_new_tokens: int = 160,
        max_prompt_tokens: int = 2048,
        max_batch: int | None = None,
        examples: bool = True,
        min_overlap: float = 0.6,
        cuda_graphs: bool = True,
        batch_window_s: float = 0.002,
    ) -> None:
        super().__init__(model, device, dtype, batch_window_s)
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be positive, not {max_new_tokens}")
        self.fallback = fallback
        self.max_new_tokens = max_new_tokens
        self.max_prompt_tokens = max_prompt_tokens
        self.max_batch = max_batch
        self.examples = examples
        self.min_overlap = min_overlap
        self.cuda_graphs = cuda_graphs

    def answer_cap(self, group: Group) -> int:
        """New tokens allowed for a group: its target size with room for bullets."""
        if group.target_tokens is None:
            return self.max_new_tokens
        return max(24, min(self.max_new_tokens, int(group.target_tokens * 1.5) + 16))

    def prompt_ids(self, group: Group) -> list[int]:
        """The tokenised prompt (chat template when the tokenizer has one).

        Too long a prompt first loses the few-shot examples, then the middle of the
        text to condense; the instructions always stay.
        """
        loaded = self.model
        examples = self.examples
        while True:
            messages = [
                {"role": role, "content": content}
                for role, content in prompt_messages(group, examples=examples)
            ]
            ids = _encode(loaded, messages)
            if len(ids) <= self.max_prompt_tokens or not examples:
                break
            examples = False
        text = messages[-1]["content"]
        for _ in range(8):
            if len(ids) <= self.max_prompt_tokens or len(text) <= 64:
                break
            chars_per_token = max(len(text) / max(len(ids), 1), 1.0)
            over = len(ids) - self.max_prompt_tokens
            keep = max(64, int(len(text) - chars_per_token * over * 1.2) - 32)
            text = f"{text[: keep // 2]}\n[…]\n{text[-(keep - keep // 2) :]}"
            messages[-1]["content"] = text
            ids = _encode(loaded, messages)
        return ids

    def _distill_batch(self, groups: list[Group]) -> list[GroupFacts]:
        loaded = self.model
        prompts = [self.prompt_ids(group) for group in groups]
        caps = [self.answer_cap(group) for group in groups]
        answers = greedy_generate(
            loaded, prompts, caps, max_batch=self.max_batch, cuda_graphs=self.cuda_graphs
        )
        results = [
            grounded(group, answer, min_overlap=self.min_overlap)
            for group, answer in zip(groups, answers, strict=True)
        ]
        return with_fallback(groups, results, self.fallback)


def _encode(loaded: LoadedModel, messages: list[dict[str, str]]) -> list[int]:
    tokenizer: Any = loaded.tokenizer
    with loaded.tokenizer_lock:
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False
            )
        else:
            text = "".join(f"{m['role'].capitalize()}: {m['content']}\n\n" for m in messages)
            text += "Assistant:"
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
