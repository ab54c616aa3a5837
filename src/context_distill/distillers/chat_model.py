"""Distillation by any LangChain chat model: a remote endpoint or a local server.

This is how distillation scales past one machine: point it at an inference server
(an OpenAI-compatible endpoint such as vLLM batches many sessions). The prompt,
the parser and the grounding check are the generative distiller's, so a larger
model writes better facts under the same rules: a fact whose numbers, dates, ids
or names are not in its source is dropped, and a group left with nothing falls
back to the extractive distiller.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig

from ..messages import plain_text
from ..types import Group, GroupFacts
from ._prompt import grounded, prompt_messages, with_fallback
from .base import Distiller

logger = logging.getLogger(__name__)

_ROLES: dict[str, type[BaseMessage]] = {
    "system": SystemMessage,
    "user": HumanMessage,
    "assistant": AIMessage,
}


def chat_prompt(group: Group, *, examples: bool = True) -> list[BaseMessage]:
    """The shared prompt as LangChain messages."""
    return [
        _ROLES[role](content=content) for role, content in prompt_messages(group, examples=examples)
    ]


def _answer(response: Any) -> str:
    return plain_text(response) if isinstance(response, BaseMessage) else str(response)


class ChatModelDistiller(Distiller):
    """Facts written by ``model`` (any ``BaseChatModel``), checked against their source.

    ``max_concurrency`` caps parallel requests of one batch; ``fallback`` (a
    distiller or a name, ``None`` for none) writes facts for groups the model left
    without grounded ones; ``examples`` toggles the few-shot examples in the prompt.
    """

    name = "chat_model"

    def __init__(
        self,
        model: BaseChatModel,
        *,
        fallback: Distiller | str | None = "extractive",
        max_concurrency: int | None = 8,
        examples: bool = True,
        min_overlap: float = 0.6,
    ) -> None:
        self.model = model
        self.fallback = fallback
        self.max_concurrency = max_concurrency
        self.examples = examples
        self.min_overlap = min_overlap

    def _config(self) -> RunnableConfig:
        config: RunnableConfig = {}
        if self.max_concurrency is not None:
            config["max_concurrency"] = self.max_concurrency
        return config

    def _finish(self, groups: Sequence[Group], answers: Sequence[Any]) -> list[GroupFacts]:
        results: list[GroupFacts] = []
        for group, answer in zip(groups, answers, strict=True):
            if isinstance(answer, BaseException):
                logger.warning("chat model failed on a group of %s: %s", group.thread_id, answer)
                results.append(GroupFacts(facts=[], notes=[f"chat model failed: {answer!r}"[:200]]))
                continue
            results.append(grounded(group, _answer(answer), min_overlap=self.min_overlap))
        return with_fallback(groups, results, self.fallback)

    def distill(self, groups: Sequence[Group]) -> list[GroupFacts]:
        if not groups:
            return []
        prompts: list[LanguageModelInput] = [
            chat_prompt(group, examples=self.examples) for group in groups
        ]
        answers = self.model.batch(prompts, config=self._config(), return_exceptions=True)
        return self._finish(groups, answers)

    async def adistill(self, groups: Sequence[Group]) -> list[GroupFacts]:
        if not groups:
            return []
        prompts: list[LanguageModelInput] = [
            chat_prompt(group, examples=self.examples) for group in groups
        ]
        answers = await self.model.abatch(prompts, config=self._config(), return_exceptions=True)
        return self._finish(groups, answers)
