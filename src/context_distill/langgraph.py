"""The LangGraph door: a node that keeps a graph's context within a token budget.

``DistillNode`` runs before the model node. In ``view`` mode the state keeps every
message and the node writes the compact view to ``llm_input_messages`` for the
model call (as a ``pre_model_hook`` does). In ``rewrite`` mode the state itself
becomes the compact view, so the checkpointer stores a state that stays small.

Both modes write with LangGraph's ``Overwrite`` rather than a list, which replaces
the value just as ``RemoveMessage(REMOVE_ALL_MESSAGES)`` would, and keeps the
memory message out of ``stream_mode="messages"``: distillation never shows up in
the user's token stream.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from langchain_core.messages import AnyMessage, BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig
from langgraph.graph import MessagesState
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
from .errors import ContextDistillError

logger = logging.getLogger(__name__)

__all__ = [
    "LLM_INPUT_KEY",
    "DistillNode",
    "DistillState",
    "InvalidStateError",
    "MissingThreadIdError",
    "replace_messages",
]

#: The state key the view goes to in view mode (the name ``pre_model_hook`` uses).
LLM_INPUT_KEY = "llm_input_messages"


def replace_messages(
    current: Sequence[AnyMessage] | None, new: Sequence[AnyMessage] | None
) -> list[AnyMessage]:
    """Reducer that replaces the value: each turn's view supersedes the last one."""
    return list(new or [])


class InvalidStateError(ContextDistillError, TypeError):
    """A graph state the node cannot write its view to."""


class DistillState(MessagesState):
    """``MessagesState`` plus the view the model should see in view mode.

    ``llm_input_messages`` is empty until the node has run; a model node reads
    ``state["llm_input_messages"] or state["messages"]``. If you declare the key in
    your own state, give it the ``replace_messages`` reducer as here.
    """

    llm_input_messages: Annotated[list[AnyMessage], replace_messages]


class DistillNode(Runnable[Any, dict[str, Any]]):
    """A graph node that distills old turns once the history crosses the budget.

    ``DistillNode(engine, mode="view")`` with a ``ContextDistiller``, or
    ``DistillNode(budget_tokens=..., store=..., distiller=...)`` to build one. The
    thread is the run's ``configurable.thread_id``. Use it as a node (it is a
    runnable, sync and async) or call it: ``node(state, config)``.
    """

    def __init__(
        self,
        engine: ContextDistiller | None = None,
        *,
        mode: Mode = "view",
        **options: Any,
    ) -> None:
        self.engine = build_engine(engine, options)
        self.mode: Mode = check_mode(mode)
        self.name = "DistillNode"

    def __repr__(self) -> str:
        return f"DistillNode(mode={self.mode!r}, budget_tokens={self.engine.budget_tokens})"

    def _thread(self, config: RunnableConfig | None) -> str:
        found = thread_id_from(config) or thread_id_from(current_config())
        return require_thread_id(found, "DistillNode")

    def _check_state(self, state: Any, config: RunnableConfig | None) -> None:
        """In a graph, view mode needs a key for the view; say so instead of dropping it."""
        in_graph = bool(((config or {}).get("metadata") or {}).get("langgraph_node"))
        if self.mode != "view" or not in_graph:
            return
        if isinstance(state, Mapping):
            present, value = LLM_INPUT_KEY in state, state.get(LLM_INPUT_KEY)
        else:
            present, value = hasattr(state, LLM_INPUT_KEY), getattr(state, LLM_INPUT_KEY, None)
        if not present or isinstance(value, Overwrite):
            raise InvalidStateError(
                f"DistillNode in view mode writes the view to {LLM_INPUT_KEY!r}, which this "
                "graph's state lacks or keeps without a reducer: use DistillState, or declare "
                f"{LLM_INPUT_KEY}: Annotated[list[AnyMessage], replace_messages]"
            )

    def _output(self, update: ContextUpdate) -> dict[str, Any]:
        stats = update.stats
        if stats.over_budget:
            logger.info(
                "thread %s: view of %d tokens over the budget of %d (%s)",
                stats.thread_id,
                stats.tokens_view,
                self.engine.budget_tokens,
                stats.reason,
            )
        if self.mode == "view":
            return {LLM_INPUT_KEY: Overwrite(list(update.view))}
        if update.changed:
            return {"messages": Overwrite(list(update.view))}
        return {}

    def invoke(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        thread_id = self._thread(config)
        self._check_state(input, config)
        messages: list[BaseMessage] = messages_of(input)
        with quiet_runs():
            update = self.engine.update(thread_id, messages)
        return self._output(update)

    async def ainvoke(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        thread_id = self._thread(config)
        self._check_state(input, config)
        messages: list[BaseMessage] = messages_of(input)
        with quiet_runs():
            update = await self.engine.aupdate(thread_id, messages)
        return self._output(update)

    def __call__(self, state: Any, config: RunnableConfig | None = None) -> dict[str, Any]:
        return self.invoke(state, config)
