"""Offline test doubles: a scripted tool-calling chat model and a checker of model input.

``ScriptedChatModel`` lets an agent (a LangGraph graph, a ``create_agent`` agent, a
chat loop) run without a provider: it answers from a script or a function, emits
tool calls (parallel ones too), streams its text word by word, and records what it
was sent. ``check_model_input`` holds a message list to what chat providers accept,
so a test can prove that a compacted view is still a valid request.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolCall,
    ToolMessage,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field, PrivateAttr

from .messages import plain_text

__all__ = [
    "ModelInputError",
    "ScriptExhaustedError",
    "ScriptedChatModel",
    "check_model_input",
    "tool_call",
]

#: What a script step may be: an ``AIMessage``, a text answer, or a list of tool calls
#: (dicts with ``name``, ``args`` and optionally ``id``) to issue in parallel.
Step = AIMessage | str | Sequence[Mapping[str, Any]]


class ScriptExhaustedError(RuntimeError):
    """The model was called more often than its script has steps."""


class ModelInputError(AssertionError):
    """A message list a chat provider would reject; the text lists every problem."""


def tool_call(name: str, /, _id: str | None = None, **args: Any) -> ToolCall:
    """A tool call for a script step, with a fresh unique id unless one is given."""
    return ToolCall(
        name=name, args=args, id=_id or f"call_{uuid.uuid4().hex[:16]}", type="tool_call"
    )


def _as_message(step: Step) -> AIMessage:
    if isinstance(step, AIMessage):
        return step.model_copy()
    if isinstance(step, str):
        return AIMessage(content=step)
    calls: list[ToolCall] = []
    for call in step:
        if not isinstance(call, Mapping) or not isinstance(call.get("name"), str):
            raise TypeError(f"a tool call step needs dicts with a 'name', not {call!r}")
        calls.append(
            ToolCall(
                name=call["name"],
                args=dict(call.get("args") or {}),
                id=call.get("id") or f"call_{uuid.uuid4().hex[:16]}",
                type="tool_call",
            )
        )
    return AIMessage(content="", tool_calls=calls)


class ScriptedChatModel(BaseChatModel):
    """A chat model that answers from a script: deterministic, offline, tool-calling.

    ``script`` steps are used in order; once they run out, ``respond`` (if given)
    computes each answer from the messages sent. ``check`` runs on every input
    before the answer is made (e.g. ``check_model_input``), so a bad request fails
    the run where it happens. ``calls`` records every input. Streaming yields the
    text word by word and each tool call as its own chunk.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    script: list[Any] = Field(default_factory=list)
    respond: Callable[[list[BaseMessage]], Any] | None = None
    check: Callable[[list[BaseMessage]], None] | None = None
    record: bool = True
    calls: list[list[BaseMessage]] = Field(default_factory=list)

    _position: int = PrivateAttr(default=0)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Accept tools as a provider model would; the script decides what is called."""
        schemas = [convert_to_openai_tool(tool) for tool in tools]
        return self.bind(tools=schemas, **kwargs)

    def _next(self, messages: list[BaseMessage]) -> AIMessage:
        if self.check is not None:
            self.check(messages)
        with self._lock:
            if self.record:
                self.calls.append(list(messages))
            position = self._position
            self._position += 1
        if position < len(self.script):
            step = self.script[position]
        elif self.respond is not None:
            step = self.respond(list(messages))
        else:
            raise ScriptExhaustedError(
                f"scripted model called {position + 1} times; the script has "
                f"{len(self.script)} steps and no respond function"
            )
        return _as_message(step)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self._next(messages))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        answer = self._next(messages)
        text = plain_text(answer)
        pieces = text.split(" ")
        sent = False
        for index, piece in enumerate(pieces):
            token = piece if index == len(pieces) - 1 else piece + " "
            if not token:
                continue
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=token))
            if run_manager is not None:
                run_manager.on_llm_new_token(token, chunk=chunk)
            sent = True
            yield chunk
        if not sent and not answer.tool_calls:
            yield ChatGenerationChunk(message=AIMessageChunk(content=""))
        for index, call in enumerate(answer.tool_calls):
            chunk = ChatGenerationChunk(
                message=AIMessageChunk(
                    content="",
                    tool_call_chunks=[
                        {
                            "name": call["name"],
                            "args": json.dumps(call["args"]),
                            "id": call["id"],
                            "index": index,
                            "type": "tool_call_chunk",
                        }
                    ],
                )
            )
            if run_manager is not None:
                run_manager.on_llm_new_token("", chunk=chunk)
            yield chunk


def check_model_input(
    messages: Sequence[BaseMessage],
    *,
    system_prompt: str | None = None,
    task: str | None = None,
) -> None:
    """Raise ModelInputError unless ``messages`` is a request chat providers accept.

    Checks what OpenAI- and Anthropic-style APIs reject: system messages anywhere but
    first, a conversation that does not open with a human message, a tool call not
    answered by exactly one tool result right after it, a tool result without its
    call, and duplicate tool call ids. With ``system_prompt`` the first message must
    be that system prompt; with ``task`` the first human message must be that task.
    """
    problems: list[str] = []
    items = list(messages)
    if not items:
        raise ModelInputError("no messages")
    start = 0
    while start < len(items) and isinstance(items[start], SystemMessage):
        start += 1
    for index, message in enumerate(items[start:], start):
        if isinstance(message, SystemMessage) or message.type == "system":
            problems.append(f"message {index}: system message after the conversation began")
    if system_prompt is not None and (start == 0 or plain_text(items[0]) != system_prompt):
        problems.append("the system prompt is not the first message")
    if start < len(items) and not isinstance(items[start], HumanMessage):
        problems.append(f"the conversation opens with a {items[start].type} message, not human")
    if task is not None:
        humans = [m for m in items if isinstance(m, HumanMessage)]
        if not humans or plain_text(humans[0]) != task:
            problems.append("the task (first human message) is missing or changed")
    seen_ids: set[str] = set()
    index = start
    while index < len(items):
        message = items[index]
        if isinstance(message, ToolMessage):
            problems.append(
                f"message {index}: tool result {message.tool_call_id!r} without its call "
                "right before it"
            )
            index += 1
            continue
        if isinstance(message, AIMessage) and message.tool_calls:
            pending: set[str] = set()
            for call in message.tool_calls:
                call_id = call.get("id")
                if not call_id:
                    problems.append(f"message {index}: tool call without an id")
                    continue
                if call_id in seen_ids:
                    problems.append(f"message {index}: tool call id {call_id!r} used twice")
                seen_ids.add(call_id)
                pending.add(call_id)
            answered: set[str] = set()
            index += 1
            while index < len(items) and isinstance(items[index], ToolMessage):
                result = items[index]
                assert isinstance(result, ToolMessage)
                if result.tool_call_id in answered:
                    problems.append(
                        f"message {index}: second result for tool call {result.tool_call_id!r}"
                    )
                elif result.tool_call_id not in pending:
                    problems.append(
                        f"message {index}: tool result {result.tool_call_id!r} answers no call "
                        "of the assistant message before it"
                    )
                else:
                    answered.add(result.tool_call_id)
                index += 1
            missing = sorted(pending - answered)
            if missing:
                problems.append(f"tool call(s) {', '.join(missing)} not answered")
            continue
        index += 1
    if problems:
        raise ModelInputError("; ".join(problems))
