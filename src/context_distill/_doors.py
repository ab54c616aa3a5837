"""What the doors share: the engine they wrap, the thread of a run, quiet distillation."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal

from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import var_child_runnable_config
from langgraph.constants import TAG_NOSTREAM

from .engine import ContextDistiller
from .errors import ContextDistillError

Mode = Literal["view", "rewrite"]
MODES: tuple[str, ...] = ("view", "rewrite")


class MissingThreadIdError(ContextDistillError, ValueError):
    """A run without ``configurable.thread_id``: the door cannot tell whose memory it is."""


def build_engine(engine: ContextDistiller | None, options: Mapping[str, Any]) -> ContextDistiller:
    """The engine a door wraps: the one given, or one built from ContextDistiller options."""
    if engine is not None:
        if options:
            raise TypeError(
                "pass either a ContextDistiller or ContextDistiller options "
                f"({', '.join(sorted(options))}), not both"
            )
        if not isinstance(engine, ContextDistiller):
            raise TypeError(f"engine must be a ContextDistiller, not {type(engine).__name__}")
        return engine
    if "budget_tokens" not in options:
        raise TypeError("pass a ContextDistiller, or budget_tokens=... (and other options)")
    return ContextDistiller(**options)


def check_mode(mode: str) -> Mode:
    if mode == "view":
        return "view"
    if mode == "rewrite":
        return "rewrite"
    raise ValueError(f"mode must be 'view' or 'rewrite', not {mode!r}")


def thread_id_from(config: RunnableConfig | Mapping[str, Any] | None) -> str | None:
    """``configurable.thread_id`` of a run config, as a string, or None."""
    if not config:
        return None
    configurable = config.get("configurable") or {}
    value = configurable.get("thread_id")
    if value is None or value == "":
        return None
    return str(value)


def require_thread_id(found: str | None, door: str) -> str:
    if found is None:
        raise MissingThreadIdError(
            f"{door} needs a thread id to know whose memory to use; run the graph with "
            "config={'configurable': {'thread_id': '...'}}"
        )
    return found


def current_config() -> RunnableConfig | None:
    """The config of the LangChain run we are inside, if any."""
    return var_child_runnable_config.get()


@contextmanager
def quiet_runs() -> Iterator[None]:
    """Keep runs nested in distillation (a chat-model distiller) out of the token stream.

    They stay children of the current run for tracing, tagged so that LangGraph's
    ``stream_mode="messages"`` skips them: the user sees the agent's tokens only.
    """
    parent = var_child_runnable_config.get()
    if parent is None:
        yield
        return
    tags = list(parent.get("tags") or [])
    if TAG_NOSTREAM not in tags:
        tags.append(TAG_NOSTREAM)
    token = var_child_runnable_config.set({**parent, "tags": tags})
    try:
        yield
    finally:
        var_child_runnable_config.reset(token)


def messages_of(state: Any) -> list[BaseMessage]:
    """The ``messages`` of a graph state (a dict, a pydantic model or a dataclass)."""
    if isinstance(state, Mapping):
        if "messages" not in state:
            raise KeyError("the state has no 'messages' key")
        value = state["messages"]
    elif hasattr(state, "messages"):
        value = state.messages
    else:
        raise KeyError(f"the state ({type(state).__name__}) has no 'messages'")
    return list(value or [])
