"""The chat-history door: a ``BaseChatMessageHistory`` whose messages stay within budget.

``DistillingChatMessageHistory`` wraps any chat message history (in memory, a
file, a SQL table). ``add_messages`` stores the messages in the wrapped history
and runs the engine, which archives and distills once the budget is crossed;
``messages`` returns the compact view. In ``rewrite`` mode the wrapped history is
itself replaced by the compact view after each distillation, so a file or a table
stays small; the distilled originals are committed to the archive first.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import BaseMessage

from ._doors import Mode, build_engine, check_mode, quiet_runs
from .engine import ContextDistiller, ContextUpdate
from .messages import coerce_messages, derived_id
from .types import check_thread_id

logger = logging.getLogger(__name__)

__all__ = ["DistillingChatMessageHistory"]


def _with_ids(messages: Sequence[BaseMessage]) -> list[BaseMessage]:
    """Give id-less messages the id the engine derives from their position.

    The engine would derive the same ids itself; spelling them out keeps them
    when a rewrite moves the messages to other positions.
    """
    return [
        message if message.id else message.model_copy(update={"id": derived_id(message, index)})
        for index, message in enumerate(messages)
    ]


def _stamped(messages: Sequence[Any]) -> list[BaseMessage]:
    """New messages with an id each (uuid4 where they have none).

    Takes what ``convert_to_messages`` takes (messages, OpenAI dicts, tuples,
    strings); anything else is refused with InvalidMessageError naming its index.
    """
    stamped = []
    for message in coerce_messages(messages):
        stamped.append(
            message if message.id else message.model_copy(update={"id": str(uuid.uuid4())})
        )
    return stamped


class DistillingChatMessageHistory(BaseChatMessageHistory):
    """A chat history that distills its oldest turns once they cross the budget.

    ``DistillingChatMessageHistory(inner, engine, thread_id="session-1")`` with a
    ``ContextDistiller``, or ``(inner, thread_id=..., budget_tokens=..., ...)`` to
    build one. ``mode="view"`` keeps every message in ``inner``; ``mode="rewrite"``
    replaces ``inner``'s content with the compact view after each distillation.
    """

    def __init__(
        self,
        history: BaseChatMessageHistory,
        engine: ContextDistiller | None = None,
        *,
        thread_id: str,
        mode: Mode = "view",
        **options: Any,
    ) -> None:
        if not isinstance(history, BaseChatMessageHistory):
            raise TypeError(
                f"history must be a BaseChatMessageHistory, not {type(history).__name__}"
            )
        check_thread_id(thread_id)
        self.history = history
        self.engine = build_engine(engine, options)
        self.thread_id = thread_id
        self.mode: Mode = check_mode(mode)

    def __repr__(self) -> str:
        return (
            f"DistillingChatMessageHistory({type(self.history).__name__}, "
            f"thread_id={self.thread_id!r}, mode={self.mode!r})"
        )

    # -- the engine pass ---------------------------------------------------------

    def _after(self, update: ContextUpdate) -> bool:
        """Whether the wrapped history should be replaced by the view."""
        if update.stats.over_budget:
            logger.info(
                "thread %s: view of %d tokens over the budget (%s)",
                self.thread_id,
                update.stats.tokens_view,
                update.stats.reason,
            )
        return self.mode == "rewrite" and update.changed

    def _update(self) -> list[BaseMessage]:
        stored = _with_ids(self.history.messages)
        with quiet_runs():
            update = self.engine.update(self.thread_id, stored)
        if self._after(update):
            self.history.clear()
            self.history.add_messages(update.view)
        return list(update.view)

    async def _aupdate(self) -> list[BaseMessage]:
        stored = _with_ids(await self.history.aget_messages())
        with quiet_runs():
            update = await self.engine.aupdate(self.thread_id, stored)
        if self._after(update):
            await self.history.aclear()
            await self.history.aadd_messages(update.view)
        return list(update.view)

    # -- BaseChatMessageHistory ----------------------------------------------------

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        """The compact view: system prompt, task, memory block, recent turns."""
        return self._update()

    async def aget_messages(self) -> list[BaseMessage]:
        return await self._aupdate()

    def add_messages(self, messages: Sequence[Any]) -> None:
        """Store the messages (with ids) and let the engine distill if over budget."""
        self.history.add_messages(_stamped(messages))
        self._update()

    async def aadd_messages(self, messages: Sequence[Any]) -> None:
        await self.history.aadd_messages(_stamped(messages))
        await self._aupdate()

    def clear(self) -> None:
        """Clear the wrapped history and this thread's archive."""
        self.history.clear()
        self.engine.forget(self.thread_id, archive=True)

    async def aclear(self) -> None:
        await self.history.aclear()
        await self.engine.aforget(self.thread_id, archive=True)
