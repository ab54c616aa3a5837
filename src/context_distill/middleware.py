"""The agent door: middleware for LangChain 1.x ``create_agent``.

In ``view`` mode (the default) the agent state keeps every message and
``wrap_model_call`` hands the model the compact view; nothing in the state
changes. In ``rewrite`` mode ``before_model`` replaces the state with the compact
view when something was distilled, so a checkpointer stores a state that stays
small. The system prompt ``create_agent`` adds is not part of the messages the
engine sees: the budget covers the conversation, the system prompt comes on top.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from langchain.agents.middleware import AgentMiddleware, AgentState, ModelRequest, ModelResponse
from langchain.agents.middleware.types import ModelCallResult
from langchain_core.messages import AnyMessage
from langgraph.runtime import Runtime
from langgraph.types import Overwrite

from ._doors import (
    MissingThreadIdError,
    Mode,
    build_engine,
    check_mode,
    current_config,
    messages_of,
    quiet_runs,
    require_thread_id,
    thread_id_from,
)
from .engine import ContextDistiller, ContextUpdate

logger = logging.getLogger(__name__)

__all__ = ["ContextDistillMiddleware", "MissingThreadIdError"]


def _thread_of(runtime: Runtime[Any] | None) -> str:
    found = thread_id_from(current_config())
    if found is None and runtime is not None and runtime.execution_info is not None:
        found = runtime.execution_info.thread_id
    return require_thread_id(found, "ContextDistillMiddleware")


class ContextDistillMiddleware(AgentMiddleware[AgentState[Any], Any]):
    """Keeps what a ``create_agent`` agent's model sees within a token budget.

    ``ContextDistillMiddleware(engine, mode="view")`` with a ``ContextDistiller``, or
    ``ContextDistillMiddleware(budget_tokens=..., store=..., distiller=...)`` to build
    one. ``recall_tool=True`` also gives the agent the recall tool for this archive.
    The thread is the run's ``configurable.thread_id``.
    """

    def __init__(
        self,
        engine: ContextDistiller | None = None,
        *,
        mode: Mode = "view",
        recall_tool: bool = False,
        **options: Any,
    ) -> None:
        super().__init__()
        self.engine = build_engine(engine, options)
        self.mode: Mode = check_mode(mode)
        self.tools = []
        if recall_tool:
            from .tools import make_recall_tool

            self.tools = [make_recall_tool(self.engine)]

    def _note(self, update: ContextUpdate) -> None:
        stats = update.stats
        if stats.over_budget:
            logger.info(
                "thread %s: view of %d tokens over the budget of %d (%s)",
                stats.thread_id,
                stats.tokens_view,
                self.engine.budget_tokens,
                stats.reason,
            )

    # -- rewrite mode: the state becomes the compact view ------------------------

    def _rewrite(self, update: ContextUpdate) -> dict[str, Any] | None:
        self._note(update)
        if not update.changed:
            return None
        return {"messages": Overwrite(list(update.view))}

    def before_model(self, state: AgentState[Any], runtime: Runtime[Any]) -> dict[str, Any] | None:
        if self.mode != "rewrite":
            return None
        thread_id = _thread_of(runtime)
        with quiet_runs():
            update = self.engine.update(thread_id, messages_of(state))
        return self._rewrite(update)

    async def abefore_model(
        self, state: AgentState[Any], runtime: Runtime[Any]
    ) -> dict[str, Any] | None:
        if self.mode != "rewrite":
            return None
        thread_id = _thread_of(runtime)
        with quiet_runs():
            update = await self.engine.aupdate(thread_id, messages_of(state))
        return self._rewrite(update)

    # -- view mode: only the model call sees the compact view --------------------

    def _viewed(self, request: ModelRequest[Any], update: ContextUpdate) -> ModelRequest[Any]:
        self._note(update)
        view: list[AnyMessage] = list(update.view)  # type: ignore[arg-type]
        return request.override(messages=view)

    def wrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], ModelResponse[Any]],
    ) -> ModelCallResult[Any]:
        if self.mode != "view":
            return handler(request)
        thread_id = _thread_of(request.runtime)
        with quiet_runs():
            update = self.engine.update(thread_id, request.messages)
        return handler(self._viewed(request, update))

    async def awrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse[Any]]],
    ) -> ModelCallResult[Any]:
        if self.mode != "view":
            return await handler(request)
        thread_id = _thread_of(request.runtime)
        with quiet_runs():
            update = await self.engine.aupdate(thread_id, request.messages)
        return await handler(self._viewed(request, update))
